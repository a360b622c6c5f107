"""What a REST handler may return besides a JSON-ready value, and how every answer is written:
JSON, a raw body, a file or a stream of pieces sent as the client reads them, or an error as
``{"status","message"}``.

Writing knows whether the client is still there through twisted.web's ``notifyFinish``.  A file
or a stream whose client stops reading is ended after the write timeout (60 s without progress),
which frees what it holds (a backup's slot and file, a history read's turn).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from twisted.internet import defer
from twisted.logger import Logger
from twisted.protocols.basic import FileSender

from tbcoap.errors import (BadRequest, Forbidden, GatewayTimeout, NotFound, NotSupported, RpcFailed, ShuttingDown, TooMany,
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
class Stream:
    """A body written piece by piece as the client reads it: ``next()`` fires with bytes, or None
    at the end; ``close()`` runs once, when the body is complete or the client went away."""

    content_type: bytes
    next: object
    close: object


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
             (GatewayTimeout, 504), (NotSupported, 501), (TooMany, 429))


WRITE_TIMEOUT = 60.0


class Client:
    """One request's way back to its client: whether it is still connected (``notifyFinish``), and
    the clock and write timeout for answers sent as the client reads them."""

    __slots__ = ("request", "gone", "clock", "write_timeout")

    def __init__(self, request, clock, write_timeout=WRITE_TIMEOUT):
        self.request = request
        self.gone = False
        self.clock, self.write_timeout = clock, write_timeout
        request.notifyFinish().addErrback(self._lost)

    def _lost(self, _):
        self.gone = True

    def write(self, value):
        """Write a handler's answer: a value as JSON, ``Answer``, ``Raw``, ``RawJson`` or ``FileDownload``."""
        if isinstance(value, FileDownload):
            return self._send_file(value)
        if isinstance(value, Stream):
            return _Streamer(self, value).start()
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

        watch = WriteWatch(self)

        def finished(result):
            watch.stop()
            handle.close()
            download.done()
            if not self.gone:
                request.finish()

        _WatchedFileSender(watch).beginFileTransfer(handle, request).addBoth(finished)
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


class WriteWatch:
    """Ends an answer whose client stopped reading: no progress for the write timeout aborts the
    connection (twisted.web then stops the producer, and the answer's resources are released)."""

    def __init__(self, client):
        self.client = client
        self.last = client.clock.seconds()
        self.timer = client.clock.callLater(client.write_timeout, self._check)

    def progress(self):
        self.last = self.client.clock.seconds()

    def _check(self):
        idle = self.client.clock.seconds() - self.last
        if idle < self.client.write_timeout:
            self.timer = self.client.clock.callLater(self.client.write_timeout - idle, self._check)
            return
        self.timer = None
        log.info("ending {uri}: its client read nothing for {idle:.0f} s", uri=self.client.uri(), idle=idle)
        transport = self.client.request.channel.transport if self.client.request.channel else None
        if transport is not None:
            transport.abortConnection()

    def stop(self):
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


class _WatchedFileSender(FileSender):
    """FileSender that tells its WriteWatch each time the client took more."""

    def __init__(self, watch):
        self.watch = watch

    def resumeProducing(self):
        self.watch.progress()
        return super().resumeProducing()


class _Streamer:
    """Writes a Stream as a push producer: the next piece is asked for only once the last one was
    taken by the transport (pauseProducing/resumeProducing), one reactor turn apart."""

    def __init__(self, client, stream):
        self.client, self.stream = client, stream
        self.paused = self.asking = self.done = False
        self.watch = None

    def start(self):
        request = self.client.request
        request.setHeader(b"content-type", self.stream.content_type)
        if self.client.gone:
            return self._end()
        self.watch = WriteWatch(self.client)
        request.registerProducer(self, True)
        self._ask()
        return None

    def _ask(self):
        if self.paused or self.asking or self.done:
            return
        self.asking = True
        defer.maybeDeferred(self.stream.next).addCallbacks(self._got, self._failed)

    def _got(self, piece):
        self.asking = False
        if self.done or self.client.gone:
            return self._end()
        request = self.client.request
        if piece is None:
            request.unregisterProducer()
            request.finish()
            return self._end()
        request.write(piece)
        self.watch.progress()
        self.client.clock.callLater(0, self._ask)  # devices are served between pieces
        return None

    def _failed(self, failure):
        self.asking = False
        log.failure("streaming {uri} failed; the connection is ended", failure, uri=self.client.uri())
        transport = self.client.request.channel.transport if self.client.request.channel else None
        if transport is not None:
            transport.abortConnection()  # the status line went out: a cut answer, never a wrong one
        self._end()

    def _end(self):
        if not self.done:
            self.done = True
            if self.watch is not None:
                self.watch.stop()
            self.stream.close()

    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False
        if self.watch is not None:
            self.watch.progress()
        self._ask()

    def stopProducing(self):
        self._end()
