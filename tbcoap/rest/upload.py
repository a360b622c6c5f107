"""A package upload (``POST /api/otaPackage/{id}``, multipart ``file``) streamed to the store.

twisted.web reads a whole body into memory before a resource sees it, and parses multipart bodies
whole.  For this one call, made with the admin key, the body limit is the package limit and the
body never collects: ``LimitedRequest`` hands each piece to an ``UploadSink`` as it arrives, which
parses the multipart stream incrementally (``multipart.PushMultipartParser``) and feeds the file's
bytes to the OTA service's ``Upload`` (chunks written to the store as they fill).  While the store
has more than a few chunks to write, the connection stops being read, so memory stays at a few
chunks whatever the package's size.  Any other request keeps the ordinary, small in-memory body.
"""

from __future__ import annotations

import hmac
import re
from urllib.parse import parse_qs

import multipart
from twisted.internet import defer
from twisted.logger import Logger

from tbcoap.errors import BadRequest

log = Logger()

UPLOAD_PATH = re.compile(rb"^/api/otaPackage/([^/?]+)$")
MULTIPART_OVERHEAD = 1024 * 1024  # bytes a multipart body may add to the package (--max-ota-size)
MAX_PENDING = 4  # chunk writes under way before the connection stops being read
MAX_PARTS = 16  # multipart parts of one upload


def upload_limit(request, node):
    """The body limit of a streamed package upload with ``UploadSink`` set on ``request``, or None if
    ``request`` is not one (not that call, not the admin key, not multipart)."""
    if request.method != b"POST":
        return None
    match = UPLOAD_PATH.match(request.path)
    ctype = request.getHeader(b"content-type") or b""
    if match is None or not ctype.lower().startswith(b"multipart/form-data"):
        return None
    from tbcoap.rest.auth import bearer_key  # (auth imports nothing of this module)
    key = bearer_key(request)
    if key is None or not hmac.compare_digest(key.encode("utf-8"), node.admin_key.encode("utf-8")):
        return None
    if not node.core.ready:
        return None
    request.ota_sink = UploadSink(node.core.ota, request, match.group(1).decode("utf-8", "replace"))
    return node.core.ota.max_size + MULTIPART_OVERHEAD


class UploadSink:
    """Receives an upload's body piece by piece; ``result()`` fires with the stored package (or fails
    with what was wrong) once the body is complete and the data stored."""

    def __init__(self, service, request, package_id, streaming=True):
        self.service, self.request, self.package_id = service, request, package_id
        self.streaming = streaming  # False: the body is in memory already (the connection is left alone)
        self.error = None  # the first thing wrong: the rest of the body is read and dropped
        self.upload = None
        self.parser = None
        self.in_file = False
        self.file_name = self.content_type = None
        self.files = 0
        self.pending = 0
        self.paused = False
        self.complete = False
        self.queue = []  # pieces received while the upload was being started
        self.starting = None
        self._done = defer.Deferred()
        self.ended = False

    # -- the start: boundary, package, checksum --------------------------------------------------------

    def _start(self):
        ctype = (self.request.getHeader(b"content-type") or b"").decode("latin-1")
        boundary = multipart.parse_options_header(ctype)[1].get("boundary")
        if not boundary:
            raise BadRequest("a multipart body needs a boundary")
        self.parser = multipart.PushMultipartParser(boundary, max_segment_count=MAX_PARTS)
        query = parse_qs(self.request.uri.partition(b"?")[2].decode("latin-1"))
        algorithm = (query.get("checksumAlgorithm") or [None])[0]
        checksum = (query.get("checksum") or [None])[0]
        self._pause()
        self.starting = self.service.begin_upload(self.package_id, algorithm, checksum)
        self.starting.addCallbacks(self._started, self._fail)

    def _started(self, upload):
        self.upload = upload
        self.starting = None
        queue, self.queue = self.queue, []
        for data in queue:
            self._parse(data)
        self._resume()
        self._maybe_finish()

    # -- receiving ---------------------------------------------------------------------------------------

    def received(self, data):
        if self.error is not None:
            return
        if self.parser is None:
            try:
                self._start()
            except BadRequest as exc:
                self._fail(exc)
                return
        if self.starting is not None:
            self.queue.append(data)
            return
        self._parse(data)

    def _parse(self, data):
        if self.error is not None:
            return
        try:
            for event in self.parser.parse(data):
                if isinstance(event, multipart.MultipartSegment):
                    self.in_file = event.name == "file"
                    if self.in_file:
                        self.files += 1
                        if self.files > 1:
                            raise BadRequest("send one file")
                        self.file_name = event.filename or "file"
                        self.content_type = event.content_type or "application/octet-stream"
                elif event is None:
                    self.in_file = False
                elif self.in_file:
                    self._feed(event)
        except multipart.MultipartError as exc:
            self._fail(BadRequest(f"malformed multipart body: {exc}"))
        except BadRequest as exc:
            self._fail(exc)

    def _feed(self, data):
        d = self.upload.feed(data)  # BadRequest past the size limit
        if d is None:
            return
        self.pending += 1
        if self.pending >= MAX_PENDING:
            self._pause()
        d.addCallbacks(self._written, self._write_failed)

    def _written(self, _):
        self.pending -= 1
        if self.pending < MAX_PENDING:
            self._resume()
        self._maybe_finish()

    def result(self):
        """Fires with the package once the data is stored (the request has all of its body)."""
        self.complete = True
        if self.parser is None and self.error is None:
            self._fail(BadRequest("the body has no file"))
        self._maybe_finish()
        return self._done

    def _maybe_finish(self):
        if self.ended or not self.complete or self.pending or self.starting is not None:
            return
        if self.error is None:
            try:
                self.parser.close()
            except multipart.MultipartError as exc:
                self._fail(BadRequest(f"malformed multipart body: {exc}"))
        if self.error is None and not self.files:
            self._fail(BadRequest("the multipart body has no part named file"))
        if self.error is not None:
            return self._end_failed()
        self.ended = True
        d = self.upload.finish(self.file_name, self.content_type)
        d.chainDeferred(self._done)

    def _write_failed(self, failure):
        self.pending -= 1
        self._fail(failure)

    def _fail(self, failure):
        if self.error is None:
            self.error = getattr(failure, "value", failure)
        self.starting = None
        self.queue = []
        self._resume()
        self._maybe_finish()

    def _end_failed(self):
        if self.ended:
            return
        self.ended = True
        upload, error = self.upload, self.error
        d = upload.abort() if upload is not None else defer.succeed(None)
        d.addErrback(lambda f: log.failure("removing a failed upload's chunks failed", f))
        d.addCallback(lambda _: self._done.errback(error))

    def abandoned(self):
        """The connection ended before the body did: remove what was stored."""
        if not self.ended:
            self._done.addErrback(lambda _: None)  # nobody waits for the answer
            self.error = self.error or BadRequest("the upload ended early")
            self.complete = True
            self._maybe_finish()

    # -- flow control ------------------------------------------------------------------------------------

    def _pause(self):
        transport = getattr(self.request.channel, "transport", None) if self.streaming else None
        if not self.paused and transport is not None:
            self.paused = True
            transport.pauseProducing()

    def _resume(self):
        transport = getattr(self.request.channel, "transport", None) if self.streaming else None
        if self.paused and transport is not None:
            self.paused = False
            if not self.complete:
                transport.resumeProducing()
