"""What the CoAPS endpoint asks about the credentials its peers present, answered from the
device service: a client certificate's identity, and the key of a PSK identity."""

from __future__ import annotations

from twisted.internet import defer

from tbcoap.models import PSK, X509_CERTIFICATE
from tbcoap.services.certificates import digest
from tbcoap.services.devices import SessionIdentity
from tbcoap.services.psk import key_proof


class SessionCredentials:
    """``DtlsEndpoint``'s ``identify`` (``certificate``) and ``psk`` (this object) for one node."""

    def __init__(self, devices):
        self.devices = devices

    def certificate(self, der: bytes) -> SessionIdentity:
        """The identity of a client certificate (DER): ThingsBoard's digest of it."""
        return SessionIdentity(X509_CERTIFICATE, digest(der))

    def cached_key(self, identity: bytes):
        """The key of a PSK identity the node has in memory, or None."""
        name = _text(identity)
        return self.devices.cached_psk_key(name) if name is not None else None

    def key(self, identity: bytes):
        """Deferred key of a PSK identity (None: no device has it)."""
        name = _text(identity)
        return self.devices.psk_key(name) if name is not None else defer.succeed(None)

    def identity(self, identity: bytes, key: bytes) -> SessionIdentity:
        """What a session made with this PSK identity and key speaks for."""
        return SessionIdentity(PSK, identity.decode("utf-8", "replace"), key_proof(key))


def _text(identity: bytes):
    try:
        return identity.decode("utf-8")
    except UnicodeDecodeError:
        return None
