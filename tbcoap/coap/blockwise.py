"""Block-wise transfers (RFC 7959) of the message layer: Block1 uploads and Block2 answers.

Block1 uploads are reassembled up to the body limit (2.31 Continue for each block but the
last), at most MAX_PEER_UPLOADS from one source address and MAX_UPLOADS in all; a stale
upload is dropped when a new one starts, from the front of an ordered dict (O(1) each).
Answers larger than a block are sent block by block: block 0 with Size2 and an ETag, the
later blocks from a cache of the whole answers (MAX_LARGE_ANSWERS, and bytes charged to the
layer's answer budget).
"""

from __future__ import annotations

import zlib
from collections import OrderedDict

from txthings import coap

from tbcoap.coap.codec import BlockOption, Message, block_size, response
from tbcoap.coap.recent import RecentMap

BLOCK_SZX = 6  # 1024 bytes
MAX_UPLOADS = 1024  # Block1 uploads being reassembled (each up to --max-body)
MAX_PEER_UPLOADS = 16  # of them from one source address
MAX_LARGE_ANSWERS = 4096  # answers over one block kept for their later blocks (bytes: the answer cache)
SNAPSHOT_OVERHEAD = 512  # a kept large answer's options and objects


class _Upload:
    """A Block1 upload being reassembled."""

    __slots__ = ("data", "expires")

    def __init__(self, expires):
        self.data, self.expires = bytearray(), expires


class Blockwise:
    """One layer's Block1 uploads and its cache of answers sent block by block."""

    def __init__(self, clock, counters, answer_budget, *, max_body, block_szx=BLOCK_SZX):
        self.clock, self.counters = clock, counters
        self.max_body, self.block_szx = max_body, block_szx
        self._uploads = OrderedDict()  # Block1 uploads being reassembled, least recently continued first
        self._peer_uploads = {}  # host -> how many of them it has
        self._large = RecentMap(coap.MAX_TRANSMIT_WAIT, MAX_LARGE_ANSWERS, answer_budget, _snapshot_cost)

    def __len__(self):
        """Answers kept for their later blocks."""
        return len(self._large)

    def szx_for(self, request) -> int:
        """The block size exponent of answers to ``request``: ours, or the client's smaller one."""
        block2 = request.opt.block2
        return min(self.block_szx, block2.size_exponent) if block2 is not None else self.block_szx

    def later_block(self, request):
        """The whole answer of an earlier request for Block2 block N > 0, if it is still kept."""
        cached = self._large.get(_large_key(request))
        return _rebuild(cached) if cached is not None else None

    def shape(self, request, answer):
        """``answer`` as it goes to ``request``: its Block1 acknowledged, the Block2 block asked
        for (kept whole for the later ones when it is block 0 of several), or 4.02 out of range."""
        opt = request.opt
        block1 = opt.block1
        if block1 is not None:
            answer.opt.addOption(BlockOption(coap.BLOCK1, (block1.block_number, False, block1.size_exponent)))
        block2 = opt.block2
        szx = min(self.block_szx, block2.size_exponent) if block2 is not None else self.block_szx
        size = 1 << (szx + 4)
        payload = answer.payload
        number = block2.block_number if block2 is not None else 0
        if len(payload) <= size and not number:
            return answer
        if answer.opt.block2 is not None:
            return answer  # a block the handler cut itself (a package download)
        start = number * size
        if start >= len(payload):
            return response(coap.BAD_OPTION, b"block %d out of range" % number, 0)
        if number == 0:
            self._large.put(_large_key(request), _snapshot(answer), self.clock.seconds())
            answer.opt.addOption(coap.UintOption(coap.SIZE2, len(payload)))
        answer.opt.addOption(_etag(payload))  # a block of a recomputed, different answer shows it
        answer.payload = payload[start:start + size]
        answer.opt.addOption(BlockOption(coap.BLOCK2, (number, start + size < len(payload), szx)))
        return answer

    def first_block(self, remote, path, szx, answer):
        """A notification larger than a block of ``szx`` goes out as block 0 with Size2; the client
        fetches the rest with GETs of ``path`` (path, query), answered from the cache."""
        size = block_size(szx)
        payload = answer.payload
        if len(payload) <= size:
            return answer
        path, query = path
        self._large.put((remote[0], remote[1], coap.GET, path, query), _snapshot(answer), self.clock.seconds())
        answer.opt.addOption(coap.UintOption(coap.SIZE2, len(payload)))
        answer.opt.addOption(_etag(payload))
        answer.payload = payload[:size]
        answer.opt.addOption(BlockOption(coap.BLOCK2, (0, True, szx)))
        return answer

    def assemble(self, request, block1):
        """Add a Block1 block of ``request``: None when the upload is complete (the request then
        carries the whole body), else the answer to send (2.31 Continue or an error; the
        request's Block1 option is then removed, ``shape`` adds the right one)."""
        number, more, szx = block1
        size = block_size(szx)
        ukey = _large_key(request)
        now = self.clock.seconds()
        upload = self._new_upload(ukey, now) if number == 0 else self._uploads.get(ukey)
        fail = None
        max_body = self.max_body
        if number == 0 and upload is None:
            fail = response(coap.SERVICE_UNAVAILABLE, b"too many uploads from this address", 0)
            fail.opt.addOption(coap.UintOption(coap.MAX_AGE, int(coap.MAX_TRANSMIT_WAIT)))
        elif szx == 7:
            fail = response(coap.BAD_REQUEST, b"block size exponent 7 is reserved", 0)
        elif upload is None or len(upload.data) != number * size:
            fail = response(coap.REQUEST_ENTITY_INCOMPLETE, b"block %d out of sequence" % number, 0)
        elif more and len(request.payload) != size:
            fail = response(coap.BAD_REQUEST, b"block payload does not match block size", 0)
        elif len(upload.data) + len(request.payload) > max_body or _size1(request) > max_body:
            fail = response(coap.REQUEST_ENTITY_TOO_LARGE, b"body over %d bytes" % max_body, 0)
            fail.opt.addOption(coap.UintOption(coap.SIZE1, max_body))
        if fail is not None:
            self._end_upload(ukey)
            request.opt.deleteOption(coap.BLOCK1)
            return fail
        upload.data += request.payload
        if more:
            upload.expires = now + coap.MAX_TRANSMIT_WAIT
            self._uploads.move_to_end(ukey)  # least recently continued first: expiry pops from the front
            request.opt.deleteOption(coap.BLOCK1)
            cont = response(coap.CONTINUE)
            cont.opt.addOption(BlockOption(coap.BLOCK1, (number, True, szx)))
            return cont
        self._end_upload(ukey)
        request.payload = bytes(upload.data)
        return None

    def _new_upload(self, ukey, now):
        """A fresh Block1 upload for ``ukey``, or None when its address has as many as it may.

        Stale uploads go first (from the front, O(1) each), then the oldest if all are in use.
        """
        uploads = self._uploads
        self._end_upload(ukey)
        while uploads and next(iter(uploads.values())).expires < now:
            self._end_upload(next(iter(uploads)))
        host = ukey[0]
        if self._peer_uploads.get(host, 0) >= MAX_PEER_UPLOADS:
            self.counters["uploadsRefused"] += 1
            return None
        while len(uploads) >= MAX_UPLOADS:
            self._end_upload(next(iter(uploads)))
            self.counters["uploadEvictions"] += 1
        upload = uploads[ukey] = _Upload(now + coap.MAX_TRANSMIT_WAIT)
        self._peer_uploads[host] = self._peer_uploads.get(host, 0) + 1
        return upload

    def _end_upload(self, ukey):
        if self._uploads.pop(ukey, None) is not None:
            host = ukey[0]
            left = self._peer_uploads[host] - 1
            if left:
                self._peer_uploads[host] = left
            else:
                del self._peer_uploads[host]


def _large_key(request):
    remote = request.remote
    return (remote[0], remote[1], request.code, tuple(request.opt.uri_path), tuple(request.opt.uri_query))


def _size1(request):
    option = request.opt.getOption(coap.SIZE1)
    return option[0].value if option else 0


def _etag(payload):
    """An ETag for the blocks of one answer (RFC 7959 §2.4): its CRC-32."""
    return coap.OpaqueOption(coap.ETAG, zlib.crc32(payload).to_bytes(4, "big"))


def _snapshot_cost(snapshot):
    return len(snapshot[1]) + SNAPSHOT_OVERHEAD


def _snapshot(answer):
    """What is needed to rebuild a large answer for its later blocks."""
    options = [o for o in answer.opt.optionList() if o.number not in (coap.BLOCK1, coap.BLOCK2, coap.SIZE2,
                                                                      coap.ETAG)]
    return answer.code, answer.payload, options


def _rebuild(snapshot):
    code, payload, options = snapshot
    message = Message(code=code, payload=payload)
    for option in options:
        message.opt.addOption(option)
    return message
