"""X.509 device credentials, identified as ThingsBoard identifies them."""

from __future__ import annotations

import base64
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tbcoap.errors import BadRequest
from tbcoap.models import X509_CERTIFICATE, Credentials

MAX_PEM = 16 << 10  # bytes of one certificate's PEM


def digest(der: bytes) -> str:
    """ThingsBoard's credentialsId of a certificate: the SHA3-256 hex digest of its Base64 DER text
    (the PEM body without header, footer and line breaks)."""
    return hashlib.sha3_256(base64.b64encode(der)).hexdigest()


def certificate_credentials(pem) -> Credentials:
    """``Credentials`` for one PEM certificate (its digest as id, its PEM as value); BadRequest
    for anything else."""
    if not isinstance(pem, str) or not pem.strip():
        raise BadRequest("credentialsValue must be the device's certificate in PEM")
    if len(pem.encode("utf-8", "replace")) > MAX_PEM:
        raise BadRequest(f"credentialsValue must be at most {MAX_PEM} bytes")
    try:
        certificates = x509.load_pem_x509_certificates(pem.encode())
    except ValueError:
        raise BadRequest("credentialsValue is not a PEM certificate") from None
    if len(certificates) != 1:
        raise BadRequest("credentialsValue must hold exactly one certificate (the device's own)")
    certificate = certificates[0]
    text = certificate.public_bytes(Encoding.PEM).decode()
    return Credentials(X509_CERTIFICATE, digest(certificate.public_bytes(Encoding.DER)), text)
