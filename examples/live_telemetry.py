"""Print a device's telemetry as it is stored, with ThingsBoard's WebSocket commands (4.x form).

    python examples/live_telemetry.py --url http://127.0.0.1:8080 --key ADMIN_KEY --device DEVICE_ID
    python examples/live_telemetry.py ... --keys temperature,humidity --count 5

Signs in with an ``authCmd``, subscribes with one ``TIMESERIES`` command, and prints one line per
update: ``KEY TS VALUE`` (the current values first, then each new point, as ThingsBoard sends them).
``--count N`` stops after N updates; a refused key or a subscription error ends it with status 1.
Any node of a shared store will do: updates reach every node's subscribers.  Uses autobahn, which
tbcoap itself uses for its WebSocket API; nothing here is tbcoap's own code.
"""

import argparse
import json
import sys

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet import defer, task


class Subscriber(WebSocketClientProtocol):
    def onOpen(self):
        args = self.factory.args
        command = {"type": "TIMESERIES", "cmdId": 1, "entityType": "DEVICE", "entityId": args.device}
        if args.keys:
            command["keys"] = args.keys
        self.sendMessage(json.dumps({"authCmd": {"cmdId": 0, "token": args.key}, "cmds": [command]}).encode())

    def onMessage(self, payload, isBinary):
        update = json.loads(payload)
        if update.get("errorCode"):
            self.factory.finish(f"error {update['errorCode']}: {update.get('errorMsg')}")
            return
        for key, points in sorted((update.get("data") or {}).items()):
            for ts, value in points:
                print(key, ts, value, flush=True)
        self.factory.updates += 1
        if self.factory.args.count and self.factory.updates >= self.factory.args.count:
            self.sendClose(1000)

    def onClose(self, wasClean, code, reason):
        self.factory.finish(None if code == 1000 else f"closed: {code} {reason}")


class Factory(WebSocketClientFactory):
    protocol = Subscriber

    def __init__(self, url, args):
        super().__init__(url)
        self.args, self.updates, self.done = args, 0, defer.Deferred()

    def finish(self, problem):
        if not self.done.called:
            self.done.callback(problem)

    def clientConnectionFailed(self, connector, reason):
        self.finish(f"cannot connect: {reason.getErrorMessage()}")


def main(reactor):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the node's REST address")
    parser.add_argument("--key", required=True, help="an admin or customer API key")
    parser.add_argument("--device", required=True, help="the device's id")
    parser.add_argument("--keys", help="telemetry keys, comma-separated (default: every key)")
    parser.add_argument("--count", type=int, default=0, help="stop after this many updates")
    args = parser.parse_args()
    factory = Factory(args.url.replace("http", "ws", 1).rstrip("/") + "/api/ws", args)
    connectWS(factory)

    def ended(problem):
        if problem:
            print(problem, file=sys.stderr)
            raise SystemExit(1)

    return factory.done.addCallback(ended)


if __name__ == "__main__":
    task.react(main)
