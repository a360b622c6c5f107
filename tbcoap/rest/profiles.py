"""REST calls for device profiles."""

from __future__ import annotations

from twisted.internet import defer

from tbcoap.payloads.config import transport_json, transport_type
from tbcoap.rest.views import page_json


def profile_json(profile, default_id=None) -> dict:
    """A device profile as ThingsBoard shows it (provisioning and the transport configuration nested
    in ``profileData``), with the provisioning fields flat too; ``default`` when its id is ``default_id``."""
    return {"id": {"entityType": "DEVICE_PROFILE", "id": profile.id}, "name": profile.name,
            "type": "DEFAULT", "transportType": transport_type(profile.transport_configuration),
            "provisionType": profile.provision_type, "provisionDeviceKey": profile.provision_key,
            "provisionDeviceSecret": profile.provision_secret, "createdTime": profile.created_time,
            "default": profile.id == default_id,
            "profileData": {"configuration": {"type": "DEFAULT"},
                            "transportConfiguration": transport_json(profile.transport_configuration),
                            "provisionConfiguration": {"type": profile.provision_type,
                                                       "provisionDeviceSecret": profile.provision_secret}}}


@defer.inlineCallbacks
def _default_id(call):
    default = yield call.core.profiles.default()
    return default.id if default is not None else None


@defer.inlineCallbacks
def create_profile(call):
    """POST /api/deviceProfile {"name","provisionType",..}; with ``"id": {"id": ..}`` it changes that profile."""
    profile = yield call.core.profiles.save(call.json_object())
    return profile_json(profile, (yield _default_id(call)))


@defer.inlineCallbacks
def list_profiles(call):
    """GET /api/deviceProfiles?pageSize&page."""
    page_size, page = call.paging()
    profiles, total = yield call.core.profiles.page(page_size, page)
    default_id = yield _default_id(call)
    return page_json([profile_json(p, default_id) for p in profiles], total, page_size, page)


@defer.inlineCallbacks
def get_profile(call, profile_id):
    """GET /api/deviceProfile/{id}."""
    profile = yield call.core.profiles.get(profile_id)
    return profile_json(profile, (yield _default_id(call)))


@defer.inlineCallbacks
def delete_profile(call, profile_id):
    """DELETE /api/deviceProfile/{id}: 400 while devices use it, and for the default profile."""
    yield call.core.profiles.delete(profile_id)


@defer.inlineCallbacks
def set_default(call, profile_id):
    """POST /api/deviceProfile/{id}/default: devices created without a type get this profile."""
    profile = yield call.core.profiles.set_default(profile_id)
    return profile_json(profile, profile.id)
