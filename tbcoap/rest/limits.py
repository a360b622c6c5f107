"""HTTP/1.1 with limits a caller without a key cannot get around: twisted.web's channel and
request, refusing with a JSON answer instead of closing the connection or spooling to disk.

- a request line over 8 KiB: 414; request headers over 16 KiB: 431;
- a body over the limit: 413, refused from the headers when Content-Length says so, and while
  it arrives otherwise (chunked).  The limit is ``--max-rest-body`` for a request that carries a
  key known valid from memory (the admin key, a customer key seen before), and 64 KiB for any
  other, so a caller without a valid key never has more than 64 KiB of its body read;
- bodies are kept in memory (they are bounded), never in temporary files.
"""

from __future__ import annotations

import json
from io import BytesIO

from twisted.web import http, server

MAX_URL = 8192
MAX_HEADERS = 16384
UNAUTHENTICATED_BODY = 65536
_REASONS = {413: b"Content Too Large", 414: b"URI Too Long", 431: b"Request Header Fields Too Large"}


class LimitedChannel(http.HTTPChannel):
    """An HTTPChannel that answers 414, 431 and 413 (with JSON) where twisted.web would hang up."""

    MAX_LENGTH = MAX_URL + MAX_HEADERS + 1024  # LineReceiver's cap: beyond it lineLengthExceeded
    totalHeadersSize = MAX_URL + MAX_HEADERS + 1024  # ours below are tighter and answered
    refused = False

    header_bytes = None  # bytes of the current request's header lines; None before its request line

    def lineReceived(self, line):
        if self.refused:
            return
        if self.header_bytes is None:
            if line:  # the request line (an empty line before one is skipped by twisted.web)
                if len(line) > MAX_URL + 16:  # "GET " + URL + " HTTP/1.1"
                    return self.refuse(414, f"request line over {MAX_URL} bytes")
                self.header_bytes = 0
        elif not line:
            self.header_bytes = None  # the headers ended; a body (raw mode) or the next request follows
        else:
            self.header_bytes += len(line)
            if self.header_bytes > MAX_HEADERS:
                return self.refuse(431, f"request headers over {MAX_HEADERS} bytes")
        return super().lineReceived(line)

    def lineLengthExceeded(self, line):
        first = self.header_bytes is None
        self.refuse(414 if first else 431, "request line too long" if first else "request header too long")

    def allHeadersReceived(self):
        request = self.requests[-1]
        # (twisted.web gives the request its method and path only once the body is in: the limit needs them now)
        request.method, request.uri = self._command, self._path
        request.path = self._path.split(b"?", 1)[0]
        request.body_limit = self.site.body_limit(request)
        if self.length is not None and self.length > request.body_limit:
            return self.refuse(413, f"body over {request.body_limit} bytes")
        super().allHeadersReceived()

    def refuse(self, status, message):
        """Answer ``{"status","message"}`` with ``status`` and close the connection."""
        if self.refused:
            return
        self.refused = True
        body = json.dumps({"status": status, "message": message}).encode()
        head = (b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                b"Connection: close\r\n\r\n" % (status, _REASONS[status], len(body)))
        self.transport.write(head + body)
        self.site.refusals[status] = self.site.refusals.get(status, 0) + 1
        self.setRawMode()
        self.rawDataReceived = lambda data: None  # read nothing more of this connection
        self.loseConnection()


class LimitedRequest(server.Request):
    """A Request whose body stays in memory and stops at its limit."""

    body_limit = UNAUTHENTICATED_BODY
    ota_sink = None  # a package upload's body goes there, piece by piece (tbcoap.rest.upload)
    _received = 0

    def gotLength(self, length):
        self.content = BytesIO()

    def handleContentChunk(self, data):
        self._received += len(data)
        if self._received > self.body_limit:
            self.channel.refuse(413, f"body over {self.body_limit} bytes")
            return
        if self.ota_sink is not None:
            self.ota_sink.received(data)
            return
        self.content.write(data)

    def connectionLost(self, reason):
        if self.ota_sink is not None:
            self.ota_sink.abandoned()
        super().connectionLost(reason)
