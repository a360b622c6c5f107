"""Device profiles: a device's ``type`` names its profile; provisioning settings are flat."""

from __future__ import annotations

from tbcoap.errors import BadRequest
from tbcoap.models import PROVISION_TYPES, DeviceProfile, new_id

MAX_NAME = 255


class ProfileService:
    """Creates and lists device profiles."""

    def __init__(self, store):
        self.store = store

    def create(self, body: dict):
        """A profile from ``{"name","provisionType","provisionDeviceKey"?,"provisionDeviceSecret"?}``."""
        name = body.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
            raise BadRequest("name must be non-empty text of at most 255 characters")
        kind = body.get("provisionType", "DISABLED")
        if kind not in PROVISION_TYPES:
            raise BadRequest(f"provisionType must be one of {', '.join(PROVISION_TYPES)}")
        key, secret = body.get("provisionDeviceKey"), body.get("provisionDeviceSecret")
        for field, value in (("provisionDeviceKey", key), ("provisionDeviceSecret", secret)):
            if value is not None and (not isinstance(value, str) or len(value) > MAX_NAME):
                raise BadRequest(f"{field} must be text of at most 255 characters")
        if kind != "DISABLED" and not (key and secret):
            raise BadRequest(f"{kind} needs provisionDeviceKey and provisionDeviceSecret")
        profile = DeviceProfile(id=new_id(), name=name, provision_type=kind,
                                provision_key=key or None, provision_secret=secret or None)
        return self.store.add_profile(profile)

    def page(self, page_size, page):
        """Deferred ``(profiles, total)``."""
        return self.store.list_profiles(page_size, page * page_size)
