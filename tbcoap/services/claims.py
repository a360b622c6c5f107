"""Device claiming (docs/rest-api.md): a device asks to be claimed, a customer claims it with the secret."""

from __future__ import annotations

import hmac
import re

from twisted.internet import defer

from tbcoap.errors import BadRequest
from tbcoap.models import ClaimRequest, now_ms
from tbcoap.services.values import parse_json

_WHOLE = re.compile(r"-?[0-9]{1,19}")
DEFAULT_DURATION_MS = 24 * 60 * 60 * 1000
MAX_DURATION_MS = 10 * 365 * DEFAULT_DURATION_MS


def _duration(value) -> int:
    """``durationMs`` as ThingsBoard reads it: a whole number, also written 6e4 or "60000"."""
    if isinstance(value, str) and _WHOLE.fullmatch(value):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise BadRequest("durationMs must be a whole number of milliseconds")
SUCCESS, FAILURE, CLAIMED = "SUCCESS", "FAILURE", "CLAIMED"


class ClaimService:
    """Claim requests live in the store, so any node can take the customer's call."""

    def __init__(self, store, devices, default_duration_ms=DEFAULT_DURATION_MS):
        self.store = store
        self.devices = devices
        self.default_duration_ms = default_duration_ms

    def request(self, device, payload: bytes, read=None):
        """A device's ``POST /api/v1/T/claim``: store its request (first wins until it expires).
        ``read`` turns the body into JSON values (default: JSON, an empty body meaning ``{}``)."""
        body = read(payload) if read is not None else (parse_json(payload) if payload.strip() else {})
        if not isinstance(body, dict):
            raise BadRequest("claim body must be a JSON object")
        secret = body.get("secretKey")
        if secret is None:  # absent or null: no secret, as ThingsBoard's default
            secret = ""
        duration = _duration(body.get("durationMs", 0))
        if not isinstance(secret, str):
            raise BadRequest("secretKey must be a string")
        if duration <= 0:
            duration = self.default_duration_ms
        if duration > MAX_DURATION_MS:
            raise BadRequest("durationMs must be at most 10 years")
        now = now_ms()
        return self.store.put_claim_request(ClaimRequest(device.id, secret, now + duration), now)

    @defer.inlineCallbacks
    def claim(self, customer_id, device_name, secret):
        """A customer claims a device by name: fires ``(result, device)`` with result
        SUCCESS, FAILURE (no or expired request, wrong secret: the request is removed) or CLAIMED."""
        if not isinstance(secret, str):
            raise BadRequest("secretKey must be a string")
        device = yield self.devices.by_name(device_name)
        if device.customer_id is not None:
            return CLAIMED, device
        request = yield self.store.get_claim_request(device.id)
        if request is None:
            return FAILURE, device
        if request.expiration_time <= now_ms() or not hmac.compare_digest(request.secret.encode(), secret.encode()):
            yield self.store.delete_claim_request(device.id)
            return FAILURE, device
        if not (yield self.store.set_device_customer(device.id, customer_id, None)):
            return CLAIMED, device
        yield self.store.delete_claim_request(device.id)
        device = yield self.devices.get(device.id)
        return SUCCESS, device
