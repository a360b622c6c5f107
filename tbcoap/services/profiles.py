"""Device profiles: a device's ``type`` names its profile; provisioning settings flat or nested;
the transport configuration (payload type, Protobuf schemas) in ThingsBoard's shape."""

from __future__ import annotations

from twisted.internet import defer

from tbcoap.errors import BadRequest, NotFound
from tbcoap.events import ProfileChanged
from tbcoap.models import PROVISION_TYPES, DeviceProfile, new_id
from tbcoap.payloads.config import PROTOBUF, PayloadSettings, stored_configuration

MAX_NAME = 255


class ProfileService:
    """Creates, changes and lists device profiles."""

    def __init__(self, store, payloads, bus):
        self.store = store
        self.payloads = payloads  # the PayloadService: compiles a PROTOBUF profile's schemas
        self.bus = bus

    @defer.inlineCallbacks
    def save(self, body: dict):
        """Create a profile, or change the one ``body["id"]["id"]`` names (ThingsBoard's save: the
        body replaces the profile).

        Provisioning comes flat (``provisionType``, ``provisionDeviceKey``, ``provisionDeviceSecret``)
        or as ThingsBoard nests it (``profileData.provisionConfiguration.{type, provisionDeviceSecret}``).
        A PROTOBUF profile's schemas are compiled first: SchemaError (400) names the one refused.
        """
        profile = _profile(body)
        settings = PayloadSettings.of(profile.transport_configuration)
        if settings.payload_type == PROTOBUF:
            yield self.payloads.schemas(settings)
        if body.get("id") is None:
            return (yield self.store.add_profile(profile))
        ref = body["id"]
        profile_id = ref.get("id") if isinstance(ref, dict) else None
        if not isinstance(profile_id, str):
            raise BadRequest('id must be {"id": "<profile id>"} (or null to create)')
        holder = yield self.store.profile_by_name(profile.name)
        saved = yield self.store.update_profile(DeviceProfile(
            id=profile_id, name=profile.name, provision_type=profile.provision_type,
            provision_key=profile.provision_key, provision_secret=profile.provision_secret,
            transport_configuration=profile.transport_configuration))
        self.bus.publish(ProfileChanged(saved.id, saved.name, renamed=holder is None or holder.id != saved.id))
        return saved

    def page(self, page_size, page):
        """Deferred ``(profiles, total)``."""
        return self.store.list_profiles(page_size, page * page_size)

    @defer.inlineCallbacks
    def get(self, profile_id):
        """The DeviceProfile, or NotFound."""
        profile = yield self.store.get_profile(profile_id)
        if profile is None:
            raise NotFound(f"device profile {profile_id} not found")
        return profile

    def default(self):
        """Deferred default DeviceProfile (a device created without a type gets it)."""
        return self.store.default_profile()

    def set_default(self, profile_id):
        """Make the profile the default; fires it.  NotFound if unknown."""
        return self.store.set_default_profile(profile_id)

    @defer.inlineCallbacks
    def delete(self, profile_id):
        """Delete a profile; NotFound if unknown, BadRequest for the default or one devices use.
        Nodes forget what they kept of it (``ProfileChanged``)."""
        profile = yield self.get(profile_id)
        if not (yield self.store.delete_profile(profile_id)):
            raise NotFound(f"device profile {profile_id} not found")
        self.bus.publish(ProfileChanged(profile.id, profile.name))


def _profile(body):
    name = body.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise BadRequest("name must be non-empty text of at most 255 characters")
    nested = (body.get("profileData") or {}).get("provisionConfiguration") if isinstance(
        body.get("profileData"), dict) else None
    nested = nested if isinstance(nested, dict) else {}
    kind = body.get("provisionType") or nested.get("type") or "DISABLED"
    if kind not in PROVISION_TYPES:
        raise BadRequest(f"provisionType must be one of {', '.join(PROVISION_TYPES)}")
    key = body.get("provisionDeviceKey")
    secret = body.get("provisionDeviceSecret")
    secret = nested.get("provisionDeviceSecret") if secret is None else secret
    for field, value in (("provisionDeviceKey", key), ("provisionDeviceSecret", secret)):
        if value is not None and (not isinstance(value, str) or len(value) > MAX_NAME):
            raise BadRequest(f"{field} must be text of at most 255 characters")
    if kind != "DISABLED" and not (key and secret):
        raise BadRequest(f"{kind} needs provisionDeviceKey and provisionDeviceSecret")
    return DeviceProfile(id=new_id(), name=name, provision_type=kind, provision_key=key or None,
                         provision_secret=secret or None, transport_configuration=stored_configuration(body))
