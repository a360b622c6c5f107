"""An in-memory DTLS client for the endpoint's tests: a pyOpenSSL client connection wired to a
``DtlsEndpoint`` through a fake UDP transport (``Wire``)."""

from __future__ import annotations

from OpenSSL import SSL

from tests.dtlsclient import use_psk


class Wire:
    """The endpoint's UDP transport: what it sends, by address."""

    def __init__(self):
        self.sent = []

    def write(self, data, address):
        self.sent.append((data, address))

    def take(self, address):
        out = [data for data, to in self.sent if to == address]
        self.sent = [(data, to) for data, to in self.sent if to != address]
        return out


class Peer:
    """A DTLS client at ``address`` talking to ``endpoint`` through ``wire``."""

    def __init__(self, endpoint, wire, address, cert=None, key=None, psk=None, ciphers=None):
        self.endpoint, self.wire, self.address = endpoint, wire, address
        context = SSL.Context(SSL.DTLS_CLIENT_METHOD)
        if psk is not None:
            self._psk = use_psk(context, *psk)
            ciphers = ciphers or "PSK-AES128-GCM-SHA256"
        if ciphers:
            context.set_cipher_list(ciphers.encode())
        if cert:
            context.use_certificate_file(cert)
            context.use_privatekey_file(key)
        self.conn = SSL.Connection(context, None)
        self.conn.set_connect_state()
        self.conn.set_ciphertext_mtu(1232)

    def out(self):
        chunks = []
        while True:
            try:
                chunks.append(self.conn.bio_read(65536))
            except SSL.WantReadError:
                return b"".join(chunks)

    def step(self, deliver=True):
        """One round: our pending flight to the endpoint (if ``deliver``), its answers back to us."""
        try:
            self.conn.do_handshake()
        except SSL.WantReadError:
            pass
        data = self.out()
        if data and deliver:
            self.endpoint.datagramReceived(data, self.address)
        for answer in self.wire.take(self.address):
            self.conn.bio_write(answer)

    def connect(self):
        for _ in range(6):
            self.step()
        self.conn.do_handshake()
        return self

    def send(self, plaintext, address=None):
        self.conn.send(plaintext)
        self.endpoint.datagramReceived(self.out(), address or self.address)

    def receive(self):
        for answer in self.wire.take(self.address):
            self.conn.bio_write(answer)
        return self.conn.recv(65536)
