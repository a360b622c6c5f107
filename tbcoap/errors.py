"""Domain errors shared by the device API, REST, services and stores.

Each carries a message meant for the caller; the device API and REST map
them to CoAP codes and HTTP statuses in one place each.
"""


class TbcoapError(Exception):
    """Base class of the errors tbcoap turns into answers."""


class BadRequest(TbcoapError):
    """Input that is not of the accepted shape (4.00 / 400)."""


class TooManyKeys(BadRequest):
    """A write that would take a device past its cap of distinct keys (4.13 / 400)."""


class NotFound(TbcoapError):
    """An unknown id, name or key (4.04 / 404)."""


class DuplicateName(BadRequest):
    """A name that must be unique is taken (400)."""


class DuplicateToken(BadRequest):
    """An access token that must be unique is taken (400)."""


class Unauthorized(TbcoapError):
    """Missing or unknown credentials (4.01 / 401)."""


class Forbidden(TbcoapError):
    """Credentials of the wrong role (403)."""


class StoreUnavailable(TbcoapError):
    """The store cannot take the request now; nothing was stored (5.03 / 503)."""


class ShuttingDown(TbcoapError):
    """The node is stopping; the caller may retry elsewhere (503)."""


class NotSupported(TbcoapError):
    """Something this store (or build) does not do; the message says what to do instead (501)."""


class GatewayTimeout(TbcoapError):
    """An RPC expired or timed out before it was answered (504)."""


class NoRule(TbcoapError):
    """No enabled rule answers client-side RPC (5.01)."""


class RuleTimeout(TbcoapError):
    """A rule took longer than the rule timeout (5.03)."""


class RpcFailed(TbcoapError):
    """The device (or a plugin) failed an RPC (502)."""


class TooMany(TbcoapError):
    """A per-device bound is reached (RPCs waiting for it): retry later (429)."""
