"""Package downloads: ``GET /fw/{token}`` and ``GET /sw/{token}`` (``/fw`` and ``/sw`` without a token
for a CoAPS device known by its certificate or pre-shared key), as ThingsBoard serves them.

Each answer is one block of the package read from the store by range: with Block2 the block the
device asks for, at its block size (16 to 1024 bytes; any block, in any order, so a download
resumes where it stopped), with Size2 and the package's ETag; with ``size=S&chunk=N`` the N-th chunk of
S bytes (ThingsBoard's form for devices without Block2).  The answer carries its Block2 option, so
the message layer sends it as it is (and keeps it for a duplicate like any answer) instead of
cutting and caching the whole payload.
"""

from __future__ import annotations

from twisted.internet import defer
from txthings import coap

from tbcoap.coap.codec import BlockOption, response
from tbcoap.deviceapi.answers import error
from tbcoap.errors import BadRequest
from tbcoap.services.ota import etag_of

OTA_PATHS = {"fw": "FIRMWARE", "sw": "SOFTWARE"}
OCTET_STREAM = 42
MAX_CHUNK = 1024  # bytes of a size=S&chunk=N answer: one datagram, as a block
DEFAULT_SZX = 6


def query_of(request):
    """``{name: value}`` of the request's query (BadRequest if not UTF-8)."""
    found = {}
    for segment in request.opt.uri_query:
        try:
            text = segment.decode("utf-8") if isinstance(segment, bytes) else segment
        except UnicodeDecodeError:
            raise BadRequest("query is not UTF-8") from None
        name, _, value = text.partition("=")
        found[name] = value
    return found


def _int(query, name):
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
        raise BadRequest(f"{name} must be a non-negative integer")
    return int(raw)


class OtaDownloads:
    """The device API's handler of /fw and /sw (after the device was identified and rate-limited)."""

    def __init__(self, core):
        self.core = core

    def __call__(self, device, feature, request):
        if request.code != coap.GET:
            return error(coap.METHOD_NOT_ALLOWED, f"/{feature} takes GET only")
        if request.opt.observe is not None and request.opt.observe != 1:
            return error(coap.BAD_REQUEST, "a package cannot be observed")
        try:
            query = query_of(request)
            size, chunk = _int(query, "size"), _int(query, "chunk")
        except BadRequest as exc:
            return error(coap.BAD_REQUEST, str(exc))
        found = self.core.ota.package_for(device, OTA_PATHS[feature])
        if isinstance(found, defer.Deferred):
            return found.addCallback(self._answer, feature, request, query, size, chunk)
        return self._answer(found, feature, request, query, size, chunk)

    def _answer(self, package, feature, request, query, size, chunk):
        if package is None:
            return error(coap.NOT_FOUND, f"no {OTA_PATHS[feature].lower()} assigned")
        for name, value in (("title", package.title), ("version", package.version)):
            if query.get(name) is not None and query[name] != value:
                return error(coap.BAD_REQUEST, f"{name} does not match the assigned package")
        total = package.data_size
        block2 = request.opt.block2
        if size is not None and block2 is None:
            if size == 0 or size > MAX_CHUNK:
                return error(coap.BAD_REQUEST, f"size must be 1 to {MAX_CHUNK}")
            offset = size * (chunk or 0)
            d = self.core.ota.read(package, offset, size)
            return d.addCallback(lambda data: response(coap.CONTENT, data, OCTET_STREAM))
        szx = DEFAULT_SZX
        if block2 is not None:
            if block2.size_exponent == 7:
                return error(coap.BAD_REQUEST, "block size exponent 7 is reserved")
            szx = block2.size_exponent
        blocks = getattr(request.protocol, "blocks", None)
        if blocks is not None:
            szx = min(szx, blocks.block_szx)
        length = 1 << (szx + 4)
        number = block2.block_number if block2 is not None else 0
        offset = number * length
        if offset >= total and (number or total):
            return error(coap.BAD_OPTION, f"block {number} is past the end")
        if block2 is None and total <= length:
            d = self.core.ota.read(package, 0, total)
            return d.addCallback(self._whole, package)
        d = self.core.ota.read(package, offset, length)
        return d.addCallback(self._block, package, number, offset, szx)

    @staticmethod
    def _whole(data, package):
        answer = response(coap.CONTENT, data, OCTET_STREAM)
        answer.opt.addOption(coap.OpaqueOption(coap.ETAG, etag_of(package)))
        return answer

    @staticmethod
    def _block(data, package, number, offset, szx):
        answer = response(coap.CONTENT, data, OCTET_STREAM)
        answer.opt.addOption(coap.OpaqueOption(coap.ETAG, etag_of(package)))
        answer.opt.addOption(coap.UintOption(coap.SIZE2, package.data_size))
        more = offset + len(data) < package.data_size
        answer.opt.addOption(BlockOption(coap.BLOCK2, (number, more, szx)))
        return answer
