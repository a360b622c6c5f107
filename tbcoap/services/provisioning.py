"""Device provisioning (docs/rest-api.md, docs/device-api.md): a device without a token asks for one with its profile's key and secret."""

from __future__ import annotations

import hmac
import secrets

from twisted.internet import defer

from tbcoap.errors import BadRequest
from tbcoap.models import ACCESS_TOKEN

NOT_FOUND = {"errorMsg": "Provision data was not found!", "status": "NOT_FOUND"}
FAILURE = {"errorMsg": "Failed to provision device!", "status": "FAILURE"}


def success(token):
    """The answer to a provisioned device."""
    return {"credentialsValue": token, "credentialsType": "ACCESS_TOKEN", "status": "SUCCESS"}


class ProvisionService:
    """Answers ``POST /api/v1/provision``: ``(ok, body)`` with ThingsBoard's exact bodies."""

    def __init__(self, store, devices):
        self.store = store
        self.devices = devices
        self.created = None  # called with each device provisioning created (OTA gives it its attributes)

    @defer.inlineCallbacks
    def provision(self, body):
        """Provision for a request's body (JSON values: ``{"deviceName", "provisionDeviceKey", ..}``).
        Fires ``(True, success body)`` or ``(False, NOT_FOUND or FAILURE body)``; BadRequest for a
        body that is not a JSON object of strings."""
        if not isinstance(body, dict):
            raise BadRequest("provision body must be a JSON object")
        for field in ("deviceName", "provisionDeviceKey", "provisionDeviceSecret", "credentialsType", "token"):
            if body.get(field) is not None and not isinstance(body[field], str):
                raise BadRequest(f"{field} must be a string")
        if body.get("gateway") is not None and not isinstance(body["gateway"], bool):
            raise BadRequest("gateway must be true or false")
        key, secret = body.get("provisionDeviceKey"), body.get("provisionDeviceSecret") or ""
        profile = (yield self.store.profile_by_provision_key(key)) if key else None
        if (profile is None or profile.provision_type == "DISABLED"
                or not hmac.compare_digest((profile.provision_secret or "").encode(), secret.encode())):
            return False, NOT_FOUND
        name = body.get("deviceName") or None
        if profile.provision_type == "ALLOW_CREATE_NEW_DEVICES":
            return (yield self._create(profile, name, body))
        return (yield self._pre_provisioned(profile, name))

    @defer.inlineCallbacks
    def _create(self, profile, name, body):
        if body.get("credentialsType", "ACCESS_TOKEN") != "ACCESS_TOKEN":
            return False, FAILURE
        name = name or f"{profile.name}-{secrets.token_hex(6)}"
        try:  # the same checks as any device creation: name, token, profile
            device, token = yield self.devices.create(name, profile.name, token=body.get("token") or None,
                                                      additional_info={"gateway": True} if body.get("gateway")
                                                      else None)
        except BadRequest:  # also a taken name or token
            return False, FAILURE
        yield self.store.mark_provisioned(device.id)
        if self.created is not None:
            yield self.created(device)
        return True, success(token)

    @defer.inlineCallbacks
    def _pre_provisioned(self, profile, name):
        device = (yield self.store.device_by_name(name)) if name else None
        if device is None or device.type != profile.name:
            return False, FAILURE
        credentials = yield self.store.get_credentials(device.id)
        if credentials is None or credentials.type != ACCESS_TOKEN:
            return False, FAILURE  # a device with a certificate has no token to give
        if not (yield self.store.mark_provisioned(device.id)):
            return False, FAILURE
        return True, success(credentials.id)
