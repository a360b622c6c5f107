"""A blocking CoAPS client for tests and benchmarks: pyOpenSSL's DTLS client on memory BIOs over
a plain UDP socket, under the blocking CoAP client of tests/blocking.py."""

from __future__ import annotations

import socket
import time

from cryptography.hazmat.bindings.openssl.binding import Binding
from OpenSSL import SSL

from tbcoap.coap.dtlsrecords import datagrams
from tests.blocking import Coap

MTU = 1232
_binding = Binding()


def use_psk(context, identity: bytes, key: bytes):
    """Make a client ``context`` answer the server with this PSK identity and key (OpenSSL's
    client callback through cryptography's bindings, as the server does); keep the result."""
    ffi, lib = _binding.ffi, _binding.lib

    @ffi.callback("unsigned int(SSL *, const char *, char *, unsigned int, unsigned char *, unsigned int)")
    def callback(ssl, hint, identity_out, max_identity, psk_out, max_psk):
        ffi.memmove(identity_out, identity + b"\0", len(identity) + 1)
        ffi.memmove(psk_out, key, len(key))
        return len(key)

    lib.SSL_CTX_set_psk_client_callback(context._context, callback)
    return callback


class DtlsSocket:
    """What ``Coap`` needs of a socket (sendto, recvfrom, settimeout, close), over one DTLS session."""

    def __init__(self, address, cert=None, key=None, ca=None, source=None, psk=None, ciphers=None, port=0):
        """``psk``: ``(identity, key)`` as bytes, offering only the PSK suites (``ciphers`` chooses
        others); ``source``/``port``: the local address to send from."""
        self.address = address
        context = SSL.Context(SSL.DTLS_CLIENT_METHOD)
        if psk is not None:
            self._psk = use_psk(context, *psk)
            ciphers = ciphers or "PSK-AES128-GCM-SHA256:PSK-AES128-CCM8:@SECLEVEL=0"
        if ciphers:
            context.set_cipher_list(ciphers.encode())
        if cert:
            context.use_certificate_file(cert)
            context.use_privatekey_file(key)
        if ca:
            context.load_verify_locations(ca)
            context.set_verify(SSL.VERIFY_PEER, lambda conn, cert, errnum, depth, ok: bool(ok))
        self.conn = SSL.Connection(context, None)
        self.conn.set_connect_state()
        self.conn.set_ciphertext_mtu(MTU)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if source or port:
            self.udp.bind((source or "127.0.0.1", port))  # another address or port: another peer to the server
        self.timeout = None
        self.established = False

    def handshake(self, timeout=10.0):
        """Complete the handshake (OpenSSL's timers retransmit lost flights); SSL.Error if refused."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.conn.do_handshake()
                self.established = True
                self._flush()
                return self
            except SSL.WantReadError:
                self._flush()
            wait = self.conn.DTLSv1_get_timeout() or 0.5
            self.udp.settimeout(max(0.01, min(wait, deadline - time.monotonic())))
            try:
                data, _ = self.udp.recvfrom(65536)
                self.conn.bio_write(data)
            except socket.timeout:
                if time.monotonic() >= deadline:
                    raise TimeoutError("DTLS handshake got no answer") from None
                self.conn.DTLSv1_handle_timeout()

    def _flush(self):
        chunks = []
        while True:
            try:
                chunks.append(self.conn.bio_read(65536))
            except SSL.WantReadError:
                break
        pending = b"".join(chunks)
        for datagram in datagrams(pending, MTU) if pending else ():
            self.udp.sendto(datagram, self.address)

    # -- the socket interface Coap uses ----------------------------------------------

    def sendto(self, data, address):
        self.conn.send(data)
        self._flush()

    def settimeout(self, timeout):
        self.timeout = timeout

    def recvfrom(self, size):
        """The next decrypted datagram; socket.timeout when none comes in time."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            try:
                return self.conn.recv(size), self.address
            except SSL.WantReadError:
                pass
            except SSL.ZeroReturnError:
                self.established = False
                raise ConnectionResetError("the server closed the DTLS session") from None
            self.udp.settimeout(None if deadline is None else max(0.001, deadline - time.monotonic()))
            data, _ = self.udp.recvfrom(65536)  # raises socket.timeout
            self.conn.bio_write(data)

    def drop(self):
        """Go away without a close_notify, as a device that loses power does."""
        self.established = False
        self.udp.close()

    def close(self):
        if self.established:
            try:
                self.conn.shutdown()
            except SSL.Error:
                pass
            self._flush()
        self.udp.close()


class DtlsCoap(Coap):
    """``Coap`` (request, exchange, receive...) over CoAPS."""

    def __init__(self, address, cert=None, key=None, ca=None, handshake=True, **options):
        super().__init__(address)
        self.sock.close()
        self.sock = DtlsSocket(address, cert, key, ca, **options)
        if handshake:
            self.sock.handshake()
