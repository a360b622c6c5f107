"""A script as a ThingsBoard user writes it, with ThingsBoard's Python REST client, run against
tbcoap with only the URL and the key changed. A device is played over CoAP with aiocoap.

    pip install tb-rest-client aiocoap
    python examples/thingsboard_client.py --url http://127.0.0.1:8080 --key "$TBCOAP_ADMIN_KEY"

It creates a device, reads its token, lets the device post telemetry, reads the latest values and
an hourly average, sets a shared attribute, calls a two-way RPC the device answers, rotates the
token (the old one is refused at once) and deletes the device. Every step is printed; the exit
code is 0 when all of them did what ThingsBoard would have done.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

from aiocoap import GET, POST, Context, Message
from tb_rest_client.models import Device
from tb_rest_client.rest_client import RestClient


async def coap(context, server, method, path, payload=b"", observe=None):
    request = Message(code=method, uri=f"{server}{path}", payload=payload)
    if observe is not None:
        request.opt.observe = observe
    return await context.request(request).response


async def answer_rpcs(context, server, token, ready):
    """Observe /rpc like a device and answer every request with the device's temperature."""
    request = Message(code=GET, uri=f"{server}/api/v1/{token}/rpc", observe=0)
    observation = context.request(request)
    await observation.response
    ready.set()
    async for notification in observation.observation:
        rpc = json.loads(notification.payload)
        if "id" in rpc:
            reply = json.dumps({"temperature": 21.5, "method": rpc["method"]}).encode()
            await coap(context, server, POST, f"/api/v1/{token}/rpc/{rpc['id']}", reply)


def step(text, ok):
    print(f"{'ok ' if ok else 'FAILED'} {text}")
    if not ok:
        raise SystemExit(1)


async def main(args):
    client = RestClient(args.url)
    client.api_key_login(args.key)
    context = await Context.create_client_context()
    loop = asyncio.get_running_loop()

    device = client.save_device(Device(name=f"thermostat-{uuid.uuid4().hex[:6]}", type="default"))
    step(f"created {device.name} ({device.id.id})", device.id is not None)
    token = client.get_device_credentials_by_device_id(device.id).credentials_id
    step(f"its token is {token}", bool(token))

    now = int(time.time() * 1000)
    points = [{"ts": now - 60_000 * n, "values": {"temperature": 20 + n}} for n in range(3)]
    posted = await coap(context, args.coap, POST, f"/api/v1/{token}/telemetry", json.dumps(points).encode())
    step(f"the device posted telemetry: {posted.code}", posted.code.is_successful())

    latest = client.get_latest_timeseries(device.id, "temperature")
    step(f"latest temperature {latest['temperature'][0].value}", latest["temperature"][0].value == "20")
    hourly = client.get_timeseries(device.id, now - 3_600_000, now + 1, keys="temperature", agg="AVG",
                                   interval=3_600_001, use_strict_data_types=True)
    step(f"hourly average {hourly['temperature'][0].value}", hourly["temperature"][0].value == 21.0)

    client.save_device_attributes(device.id, "SHARED_SCOPE", {"targetTemperature": 22})
    shared = await coap(context, args.coap, GET, f"/api/v1/{token}/attributes?sharedKeys=targetTemperature")
    step(f"the device reads {shared.payload.decode()}", json.loads(shared.payload) == {"shared": {"targetTemperature": 22}})

    ready = asyncio.Event()
    device_task = asyncio.create_task(answer_rpcs(context, args.coap, token, ready))
    await ready.wait()
    reply = await loop.run_in_executor(None, client.handle_two_way_device_rpc_request, device.id,
                                       {"method": "getTemperature", "params": {}, "timeout": 5000})
    step(f"two-way RPC answered {reply}", reply == {"temperature": 21.5, "method": "getTemperature"})
    device_task.cancel()

    credentials = client.get_device_credentials_by_device_id(device.id)
    credentials.credentials_id = f"rotated-{uuid.uuid4().hex}"
    client.update_device_credentials(credentials)
    old = await coap(context, args.coap, POST, f"/api/v1/{token}/telemetry", b'{"temperature":1}')
    new = await coap(context, args.coap, POST, f"/api/v1/{credentials.credentials_id}/telemetry", b'{"temperature":1}')
    step(f"token rotated: old {old.code}, new {new.code}", str(old.code).startswith("4.01")
         and new.code.is_successful())

    client.delete_device(device.id)
    gone = await coap(context, args.coap, POST, f"/api/v1/{credentials.credentials_id}/telemetry", b'{"t":1}')
    step(f"device deleted: its token now gets {gone.code}", str(gone.code).startswith("4.01"))
    await context.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the REST API (default %(default)s)")
    parser.add_argument("--key", required=True, help="the admin key (ThingsBoard: an API key)")
    parser.add_argument("--coap", default="coap://127.0.0.1", help="the CoAP server (default %(default)s)")
    asyncio.run(main(parser.parse_args()))
