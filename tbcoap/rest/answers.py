"""What a REST handler may return besides a JSON-ready value, and how every answer is written:
JSON, a raw body, a file streamed to the client, or an error as ``{"status","message"}``.

Writing knows whether the client is still there through twisted.web's ``notifyFinish``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from twisted.logger import Logger
from twisted.protocols.basic import FileSender

from tbcoap.errors import (BadRequest, Forbidden, GatewayTimeout, NotFound, NotSupported, RpcFailed, ShuttingDown,
                           StoreUnavailable, Unauthorized)
from tbcoap.redact import redact_uri

log = Logger()


class RawJson(str):
    """JSON text a handler returns to be written as it is."""


@dataclass
class FileDownload:
    """A file a handler returns to be streamed as an attachment; ``done()`` runs once it was sent
    (or the client went away)."""

    path: str
    content_type: bytes
    filename: str
    done: object


@dataclass
class Raw:
    """A body that is not JSON, with its content type."""

    content_type: bytes
    body: bytes


@dataclass
class Answer:
    """A handler's JSON answer with a status other than 200."""

    status: int
    value: object


class MethodNotAllowed(Exception):
    """A known path with another method (405)."""


STATUS_OF = ((BadRequest, 400), (Unauthorized, 401), (Forbidden, 403), (NotFound, 404),
             (MethodNotAllowed, 405), (StoreUnavailable, 503), (ShuttingDown, 503), (RpcFailed, 502),
             (GatewayTimeout, 504), (NotSupported, 501))


class Client:
    """One request's way back to its client: whether it is still connected (``notifyFinish``)."""

    __slots__ = ("request", "gone")

    def __init__(self, request):
        self.request = request
        self.gone = False
        request.notifyFinish().addErrback(self._lost)

    def _lost(self, _):
        self.gone = True

    def write(self, value):
        """Write a handler's answer: a value as JSON, ``Answer``, ``Raw``, ``RawJson`` or ``FileDownload``."""
        if isinstance(value, FileDownload):
            return self._send_file(value)
        if self.gone:
            return None
        request = self.request
        if isinstance(value, Answer):
            request.setResponseCode(value.status)
            value = value.value
        if isinstance(value, Raw):
            request.setHeader(b"content-type", value.content_type)
            body = value.body
        elif value is None:
            body = b""
        elif isinstance(value, RawJson):
            body = value.encode("utf-8")
        else:
            body = json.dumps(value, separators=(",", ":")).encode("utf-8")
        request.write(body)
        request.finish()
        return None

    def _send_file(self, download):
        """Stream ``download`` with FileSender (a producer: the file never sits in memory)."""
        if self.gone:
            download.done()
            return None
        try:
            handle = open(download.path, "rb")
        except OSError:
            download.done()
            raise  # answered 500 by write_failed
        request = self.request
        request.setHeader(b"content-type", download.content_type)
        request.setHeader(b"content-length", str(os.fstat(handle.fileno()).st_size).encode())
        request.setHeader(b"content-disposition", f'attachment; filename="{download.filename}"'.encode())

        def finished(result):
            handle.close()
            download.done()
            if not self.gone:
                request.finish()

        FileSender().beginFileTransfer(handle, request).addBoth(finished)
        return None

    def write_error(self, failure):
        """Write a failure as ``{"status","message"}`` (500s are logged, their message generic)."""
        status = 500
        for kind, code in STATUS_OF:
            if failure.check(kind):
                status = code
        message = failure.getErrorMessage()
        if status == 503:
            message = message or "store unavailable"
        elif status == 500:
            log.failure("REST call {uri} failed", failure, uri=self.uri())
            message = "internal server error"
        if self.gone:
            return
        self.request.setResponseCode(status)
        self.request.write(json.dumps({"status": status, "message": message}).encode("utf-8"))
        self.request.finish()

    def write_failed(self, failure):
        """``write`` itself failed: a 500 if nothing was written yet, else only a log line."""
        request = self.request
        if request.startedWriting or request.finished:
            log.failure("writing the answer to {uri} failed", failure, uri=self.uri())
            return
        self.write_error(failure)

    def uri(self):
        return redact_uri(self.request.uri.decode("latin-1"))
