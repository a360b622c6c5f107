"""REST API keys and roles: the admin key (given or generated) and who a request is."""

from __future__ import annotations

import hmac
import os
import secrets
from dataclasses import dataclass

from twisted.logger import Logger

from twisted.internet import defer

from tbcoap import datadir
from tbcoap.datadir import key_file
from tbcoap.errors import ShuttingDown, Unauthorized

log = Logger()


@dataclass(frozen=True)
class Principal:
    """Who is calling: role ``admin``, ``customer`` (with its customer id) or ``metrics`` (GET /metrics only)."""

    role: str
    customer_id: str | None = None

    @property
    def caller(self) -> str:
        """Who this is, as one string: ``admin``, ``metrics``, or the customer's id (whose turn a
        history read takes)."""
        return self.customer_id if self.role == "customer" else self.role

    def may_act_for(self, customer_id) -> bool:
        """The one ownership rule: the admin acts for everyone, a customer only for itself (so a
        customer may see a device whose owner is that customer, and not a free one)."""
        return self.role == "admin" or (self.role == "customer" and customer_id is not None
                                        and customer_id == self.customer_id)


def load_admin_key(settings) -> tuple[str, str]:
    """``(key, a log line saying where it comes from)``: ``admin-key`` (option, config file or $TBCOAP_ADMIN_KEY), else
    ``admin-key-file``, else the data dir's key file, created on first start (mode 0600).

    ValueError for an empty key file or both a key and a key file given.
    """
    if settings.get("admin-key") and settings.get("admin-key-file"):
        raise ValueError("give the admin key once: --admin-key (or $TBCOAP_ADMIN_KEY) or --admin-key-file")
    if settings.get("admin-key"):
        return settings["admin-key"], f"REST admin key from {settings.get('admin-key-source') or '--admin-key'}"
    if settings.get("admin-key-file"):
        path = settings["admin-key-file"]
        return _read_key(path), f"REST admin key from {os.path.abspath(path)} (--admin-key-file)"
    path = key_file(settings["data-dir"])
    if os.path.exists(path):
        os.chmod(path, 0o600)
        return _read_key(path), f"REST admin key from {os.path.abspath(path)} (generated on the first start)"
    datadir.ensure(settings["data-dir"])
    key = secrets.token_hex(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(key + "\n")
    return key, f"generated the REST admin key into {os.path.abspath(path)}"


def _read_key(path) -> str:
    with open(path, encoding="utf-8") as f:
        key = f.read().strip()
    if not key:
        raise ValueError(f"{path} is empty")
    return key


KEY_SCHEMES = ("bearer", "apikey")  # ThingsBoard 4's API keys are sent as "ApiKey K" (tb-rest-client)


def bearer_key(request) -> str | None:
    """The key of ``X-Authorization: Bearer K`` or ``ApiKey K`` (or the same in ``Authorization``)."""
    for header in (b"x-authorization", b"authorization"):
        value = request.getHeader(header)
        if value:
            scheme, _, key = value.decode("utf-8", "replace").strip().partition(" ")
            if scheme.lower() in KEY_SCHEMES and key.strip():
                return key.strip()
    return None


def known_key(key, node) -> bool:
    """True if ``key`` is the admin key or a customer key this node has already seen (no I/O)."""
    if hmac.compare_digest(key.encode("utf-8"), node.admin_key.encode("utf-8")):
        return True
    return node.core.customers.known(key)


def principal_for(request, node):
    """Deferred Principal of the caller (admin key or a customer's key), or Unauthorized."""
    key = bearer_key(request)
    if key is None:
        return defer.fail(Unauthorized("missing key: send X-Authorization: Bearer <key> (or ApiKey <key>)"))
    return principal_of(key, node)


@defer.inlineCallbacks
def principal_of(key, node):
    """Deferred Principal whose key ``key`` is (admin, metrics or a customer's), or Unauthorized."""
    if hmac.compare_digest(key.encode("utf-8"), node.admin_key.encode("utf-8")):
        return Principal("admin")
    metrics_key = node.settings.get("metrics-key")
    if metrics_key and hmac.compare_digest(key.encode("utf-8"), metrics_key.encode("utf-8")):
        return Principal("metrics")  # GET /metrics only
    if not node.core.ready:
        raise ShuttingDown("server is not ready or shutting down")
    customer_id = yield node.core.customers.by_key(key)
    if customer_id is None:
        raise Unauthorized("invalid key")
    return Principal("customer", customer_id)
