"""REST calls for device profiles."""

from __future__ import annotations

from twisted.internet import defer

from tbcoap.payloads.config import transport_json, transport_type
from tbcoap.rest.views import page_json


def profile_json(profile) -> dict:
    """A device profile as ThingsBoard shows it (provisioning and the transport configuration nested
    in ``profileData``), with the provisioning fields flat too."""
    return {"id": {"entityType": "DEVICE_PROFILE", "id": profile.id}, "name": profile.name,
            "type": "DEFAULT", "transportType": transport_type(profile.transport_configuration),
            "provisionType": profile.provision_type, "provisionDeviceKey": profile.provision_key,
            "provisionDeviceSecret": profile.provision_secret, "createdTime": profile.created_time,
            "default": profile.name == "default",
            "profileData": {"configuration": {"type": "DEFAULT"},
                            "transportConfiguration": transport_json(profile.transport_configuration),
                            "provisionConfiguration": {"type": profile.provision_type,
                                                       "provisionDeviceSecret": profile.provision_secret}}}


@defer.inlineCallbacks
def create_profile(call):
    """POST /api/deviceProfile {"name","provisionType",..}; with ``"id": {"id": ..}`` it changes that profile."""
    profile = yield call.core.profiles.save(call.json_object())
    return profile_json(profile)


@defer.inlineCallbacks
def list_profiles(call):
    """GET /api/deviceProfiles?pageSize&page."""
    page_size, page = call.paging()
    profiles, total = yield call.core.profiles.page(page_size, page)
    return page_json([profile_json(p) for p in profiles], total, page_size, page)
