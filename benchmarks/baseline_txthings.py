"""The baseline: txThings 0.3.0 as it comes, with a do-nothing resource answering 2.01.

    python benchmarks/baseline_txthings.py PORT

Prints ``listening PORT`` once bound.  Used by benchmarks/run.py.
"""

import sys

from twisted.internet import defer, reactor
from twisted.python import log
from txthings import coap, resource


class DoNothing(resource.CoAPResource):
    """Answers every POST with 2.01 Created, whatever the path below it."""

    isLeaf = True

    def render_POST(self, request):
        return defer.succeed(coap.Message(code=coap.CREATED, payload=b""))


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    log.startLogging(open("/dev/null", "w"), setStdout=False)  # txThings logs every datagram
    protocol = coap.Coap(resource.Endpoint(DoNothing()))
    listening = reactor.listenUDP(port, protocol, interface="127.0.0.1")
    print(f"listening {listening.getHost().port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
