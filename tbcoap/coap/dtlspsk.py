"""Pre-shared keys on the CoAPS port (RFC 4279 suites), through ``cryptography``'s OpenSSL bindings.

pyOpenSSL has no PSK API. The OpenSSL it drives is the one ``cryptography`` ships, whose bindings
export ``SSL_CTX_set_psk_server_callback``: this module calls that one function on a context's
``SSL_CTX`` (pyOpenSSL keeps its pointer as ``Context._context``) and patches nothing. Why this
route and not a wrapper package: docs/decisions.md.

OpenSSL's callback is synchronous, so the key must be at hand when it runs: the endpoint reads
the identity from the ClientKeyExchange first (it travels in the clear) and looks it up before
it lets OpenSSL read that message (``dtlsrecords.psk_identity``).

TLS_PSK_WITH_AES_128_CCM_8, RFC 7252's mandatory suite, has a 64-bit tag that OpenSSL ranks
below its default security level. A ClientHello that offers it and no other suite of the main
context is answered from a context of its own (``ccm8_context``) that lowers the level but can
negotiate nothing else, so no other suite, certificate or group is weakened.
"""

from __future__ import annotations

from cryptography.hazmat.bindings.openssl.binding import Binding
from OpenSSL import SSL
from twisted.logger import Logger

from tbcoap.coap.dtlscipher import MAIN_NUMBERS, PSK_CCM8

log = Logger()

_binding = Binding()
_ffi, _lib = _binding.ffi, _binding.lib
_SERVER_CALLBACK = "unsigned int(SSL *, const char *, unsigned char *, unsigned int)"
DTLS1_2_VERSION = 0xFEFD  # OpenSSL's number for DTLS 1.2 (pyOpenSSL names only the TLS versions)


def available() -> bool:
    """True when this OpenSSL has PSK and pyOpenSSL still keeps the SSL_CTX where we look for it."""
    return bool(getattr(_lib, "Cryptography_HAS_PSK", False)) and hasattr(SSL.Context(SSL.DTLS_METHOD), "_context")


def serve_psk(context: SSL.Context, find_key):
    """Let ``context`` complete PSK handshakes: ``find_key(identity)`` (bytes) gives the key (bytes),
    or None for an identity it does not know, which fails the handshake. Returns the callback,
    which must be kept alive as long as the context is."""

    @_ffi.callback(_SERVER_CALLBACK)
    def callback(ssl, identity, psk, max_psk_len):
        try:
            key = find_key(_ffi.string(identity) if identity != _ffi.NULL else b"")
        except Exception:
            log.failure("PSK lookup failed")
            return 0
        if not key or len(key) > max_psk_len:
            return 0
        _ffi.memmove(psk, key, len(key))
        return len(key)

    _lib.SSL_CTX_set_psk_server_callback(context._context, callback)
    return callback


def dtls_context(ciphers: str) -> SSL.Context:
    """A DTLS 1.2 server context offering ``ciphers`` (OpenSSL's cipher string)."""
    context = SSL.Context(SSL.DTLS_SERVER_METHOD)
    context.set_min_proto_version(DTLS1_2_VERSION)
    context.set_max_proto_version(DTLS1_2_VERSION)  # the records of a session are protected as DTLS 1.2's
    context.set_mode(SSL.MODE_RELEASE_BUFFERS)
    context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    context.set_options(SSL.OP_NO_TICKET)
    context.set_cipher_list(ciphers.encode())
    return context


def ccm8_context() -> SSL.Context:
    """The context of ClientHellos that only CCM_8 can serve: that suite alone, at security level 0."""
    return dtls_context(f"{PSK_CCM8.name}:@SECLEVEL=0")


def wants_ccm8(suites) -> bool:
    """True for a ClientHello whose suites include TLS_PSK_WITH_AES_128_CCM_8 and none the main
    context serves."""
    return PSK_CCM8.number in suites and not suites & MAIN_NUMBERS
