"""REST calls for server-side RPC (ThingsBoard's /api/rpc)."""

from __future__ import annotations

import json

from twisted.internet import defer

from tbcoap.rest.answers import RawJson
from tbcoap.rest.views import page_json

def rpc_json(rpc) -> dict:
    """A persistent RPC as ``GET /api/rpc/persistent/{id}`` shows it."""
    out = {
        "id": {"entityType": "RPC", "id": rpc.id},
        "deviceId": {"entityType": "DEVICE", "id": rpc.device_id},
        "request": {"id": rpc.request_id, "method": rpc.method, "params": json.loads(rpc.params_json),
                    "oneway": rpc.oneway},
        "status": rpc.status,
        "expirationTime": rpc.expiration_time,
        "createdTime": rpc.created_time,
        "persistent": rpc.persistent,
    }
    if rpc.response_json is not None:
        out["response"] = json.loads(rpc.response_json)
    return out


@defer.inlineCallbacks
def _send(call, device_id, oneway):
    yield call.core.devices.get(device_id)
    body = call.json_object()
    result = yield call.core.rpc.submit(device_id, body, oneway)
    if isinstance(result, dict):  # persistent: {"rpcId": ..}
        return result
    if oneway:
        return None
    return RawJson(result.response_json)


def oneway(call, device_id):
    """POST /api/rpc/oneway/{deviceId}: 200 once delivered, 504 if it expires first."""
    return _send(call, device_id, True)


def twoway(call, device_id):
    """POST /api/rpc/twoway/{deviceId}: 200 with the device's reply, 504 on timeout."""
    return _send(call, device_id, False)


@defer.inlineCallbacks
def get_persistent(call, rpc_id):
    """GET /api/rpc/persistent/{rpcId}."""
    rpc = yield call.core.rpc.get(rpc_id)
    return rpc_json(rpc)


@defer.inlineCallbacks
def delete_persistent(call, rpc_id):
    """DELETE /api/rpc/persistent/{rpcId}."""
    yield call.core.rpc.delete(rpc_id)


@defer.inlineCallbacks
def device_rpcs(call, device_id):
    """GET /api/rpc/persistent/device/{deviceId}?pageSize&page: newest first."""
    yield call.core.devices.get(device_id)
    page_size, page = call.paging()
    rpcs, total = yield call.core.rpc.page(device_id, page_size, page)
    return page_json([rpc_json(r) for r in rpcs], total, page_size, page)
