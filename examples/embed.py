"""Embedding tbcoap in your own Twisted application, beside your own services.

    .venv/bin/python examples/embed.py        # CoAP on udp 5683, REST on 127.0.0.1:8080

A plugin object registered in code (here a rule that answers client-side RPC
"getTime") is enabled by naming it in --rules before the bundled echo rule.
"""

import sys
import time

from twisted.application.service import MultiService
from twisted.internet import reactor
from twisted.logger import globalLogBeginner, textFileLogObserver

import tbcoap
from tbcoap.hookspecs import hookimpl


class ClockRule:
    """Answers client-side RPC ``getTime``; anything else is left to the next rule."""

    name = "clock"

    @hookimpl
    def tbcoap_client_rpc(self, device, request):
        if request["method"] == "getTime":
            return {"time": int(time.time() * 1000), "device": device.name}
        return None


def main():
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])  # shows the "listening on" lines
    application = MultiService()
    node = tbcoap.make_service(["--data-dir", "./tbcoap-data", "--rules", "clock,echo"], plugins=[ClockRule()])
    node.setServiceParent(application)
    application.startService()
    reactor.addSystemEventTrigger("before", "shutdown", application.stopService)
    reactor.run()


if __name__ == "__main__":
    main()
