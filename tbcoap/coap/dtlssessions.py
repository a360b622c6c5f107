"""What the CoAPS endpoint keeps per peer: a ``Handshake`` (an OpenSSL connection on memory BIOs,
while the handshake runs) or a ``Session`` (once it completed: the record protection, the peer's
identity, its activity and its datagram allowance), and the tables that bound them."""

from __future__ import annotations

from collections import OrderedDict

from OpenSSL import SSL

from tbcoap.coap.dtlsrecords import each_record

READ_SIZE = 65536


class Handshake:
    """A peer's handshake in progress. ``sent``/``received``: the highest epoch-1 sequence numbers
    seen leaving and arriving (OpenSSL's Finished messages), where the session's own numbering
    starts (``sent_clear``: the same in epoch 0); ``strikes``: flights with the peer's Finished that did not
    complete the handshake (a wrong key: its Finished does not decrypt, and DTLS drops it silently)."""

    __slots__ = ("conn", "address", "started", "timer", "random", "sent", "sent_clear", "received", "strikes",
                 "psk_identity", "psk_key", "psk_asked", "held")

    def __init__(self, conn, address, now, random):
        self.conn, self.address, self.started, self.timer, self.random = conn, address, now, None, random
        self.sent = self.sent_clear = self.received = self.strikes = 0
        self.psk_identity = self.psk_key = self.held = None
        self.psk_asked = False

    def pending(self) -> bytes:
        """What OpenSSL wrote since the last call (its epoch-1 sequence numbers noted)."""
        data = drain(self.conn)
        for _, epoch, seq, _ in each_record(data) if data else ():
            if epoch == 1:
                self.sent = max(self.sent, seq)
            elif epoch == 0:
                self.sent_clear = max(self.sent_clear, seq)
        return data

    def alert(self, description: int) -> bytes:
        """A fatal alert in the clear (epoch 0: the peer reads nothing else before our Finished)."""
        self.sent_clear += 1
        return b"\x15\xfe\xfd\x00\x00" + self.sent_clear.to_bytes(6, "big") + b"\x00\x02\x02" + bytes((description,))

    def note_received(self, datagram):
        """Note the epoch-1 records of a datagram given to OpenSSL; True if it had the peer's Finished
        after its ChangeCipherSpec (a whole final flight)."""
        finished = cipher_changed = False
        for kind, epoch, seq, _ in each_record(datagram):
            if epoch == 1:
                self.received = max(self.received, seq)
                finished = finished or kind == 22
            cipher_changed = cipher_changed or (kind == 20 and epoch == 0)
        return finished, cipher_changed


class Session:
    """An established session: ``cipher`` protects its records; ``identity`` is what the peer's
    certificate or pre-shared key makes it (None: neither is a device's); ``final_flight`` is sent
    again while the peer shows it missed it; ``allowance``/``stamp``: its datagram budget."""

    __slots__ = ("address", "cipher", "identity", "last_seen", "final_flight", "allowance", "stamp")

    def __init__(self, address, cipher, identity, now, final_flight, allowance):
        self.address, self.cipher, self.identity, self.last_seen = address, cipher, identity, now
        self.final_flight, self.allowance, self.stamp = final_flight, allowance, now


def drain(conn) -> bytes:
    """Everything an OpenSSL connection has written to its memory BIO."""
    chunks = []
    while True:
        try:
            chunks.append(conn.bio_read(READ_SIZE))
        except SSL.WantReadError:
            return b"".join(chunks)


class Table:
    """Peers by address in order (oldest or least recently active first), counted per host, at most
    ``cap``: adding, removing and taking the first are O(1)."""

    def __init__(self, cap):
        self.cap = cap
        self.entries = OrderedDict()
        self.per_host = {}

    def __len__(self):
        return len(self.entries)

    def get(self, address):
        return self.entries.get(address)

    def add(self, entry):
        self.entries[entry.address] = entry
        host = entry.address[0]
        self.per_host[host] = self.per_host.get(host, 0) + 1

    def remove(self, entry) -> bool:
        """Forget ``entry``; False if it was not (or no longer) the one kept for its address."""
        address = entry.address
        if self.entries.get(address) is not entry:
            return False
        del self.entries[address]
        left = self.per_host[address[0]] - 1
        if left:
            self.per_host[address[0]] = left
        else:
            del self.per_host[address[0]]
        return True

    def first(self):
        return next(iter(self.entries.values())) if self.entries else None

    def touch(self, entry):
        self.entries.move_to_end(entry.address)

    def full(self) -> bool:
        return len(self.entries) >= self.cap

    def of_host(self, host) -> int:
        return self.per_host.get(host, 0)


class FairTable(Table):
    """A ``Table`` whose ``victim`` is the least recently active entry of the least recently active
    host among those holding the most entries: for peers each on an address of their own that is
    the least recently active one, and a flood of completed handshakes from a few addresses pushes
    out its own sessions first. Hosts are kept in buckets by their number of entries, each bucket
    in the order of activity, so finding the victim is O(1)."""

    def __init__(self, cap):
        super().__init__(cap)
        self.of = {}  # host -> its entries, least recently active first
        self.buckets = {}  # number of entries -> hosts with that many
        self.top = 0

    def _move(self, host, before, after):
        if before:
            bucket = self.buckets[before]
            del bucket[host]
            if not bucket:
                del self.buckets[before]
                if self.top == before:
                    self.top = after  # a host just went from the top count to the one below
        if after:
            self.buckets.setdefault(after, {})[host] = None
            self.top = max(self.top, after)

    def add(self, entry):
        super().add(entry)
        host = entry.address[0]
        mine = self.of.setdefault(host, OrderedDict())
        mine[entry.address] = entry
        self._move(host, len(mine) - 1, len(mine))

    def remove(self, entry) -> bool:
        if not super().remove(entry):
            return False
        host = entry.address[0]
        mine = self.of[host]
        del mine[entry.address]
        self._move(host, len(mine) + 1, len(mine))
        if not mine:
            del self.of[host]
        return True

    def touch(self, entry):
        super().touch(entry)
        host = entry.address[0]
        mine = self.of[host]
        mine.move_to_end(entry.address)
        bucket = self.buckets[len(mine)]  # hosts of one bucket in the order of their last activity
        del bucket[host]
        bucket[host] = None

    def victim(self):
        """The entry to end when full."""
        host = next(iter(self.buckets[self.top]))
        return next(iter(self.of[host].values()))
