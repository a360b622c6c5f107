"""REST calls on devices and their credentials."""

from __future__ import annotations

from twisted.internet import defer

from tbcoap.errors import BadRequest
from tbcoap.models import ACCESS_TOKEN, X509_CERTIFICATE, Credentials
from tbcoap.rest.views import device_json, page_json
from tbcoap.services.certificates import certificate_credentials


@defer.inlineCallbacks
def create_device(call):
    """POST /api/device {"name","type"?,"label"?,"additionalInfo"?} (?accessToken=T chooses the token);
    with ``"id": {"id": ..}`` it updates that device (ThingsBoard's save)."""
    body = call.json_object()
    fields = (body.get("name"), body.get("type"), body.get("label"), body.get("additionalInfo"))
    ref = body.get("id")
    if ref is not None:
        device_id = ref.get("id") if isinstance(ref, dict) else None
        if not isinstance(device_id, str):
            raise BadRequest('id must be {"id": "<device id>"} (or null to create)')
        device = yield call.core.devices.update(device_id, *fields)
        return device_json(device)
    device, _token = yield call.core.devices.create(*fields[:3], call.query.get("accessToken") or None, fields[3])
    return device_json(device)


@defer.inlineCallbacks
def get_device(call, device_id):
    """GET /api/device/{id}."""
    device = yield call.device(device_id)
    return device_json(device)


@defer.inlineCallbacks
def delete_device(call, device_id):
    """DELETE /api/device/{id}: the device and everything it owns."""
    yield call.core.delete_device(device_id)


def credentials_json(device_id, credentials) -> dict:
    """``{"deviceId","credentialsType","credentialsId"}``, with ``credentialsValue`` (the PEM) for a
    certificate."""
    answer = {"deviceId": {"entityType": "DEVICE", "id": device_id}, "credentialsType": credentials.type,
              "credentialsId": credentials.id}
    if credentials.value is not None:
        answer["credentialsValue"] = credentials.value
    return answer


@defer.inlineCallbacks
def get_credentials(call, device_id):
    """GET /api/device/{id}/credentials."""
    credentials = yield call.core.devices.credentials(device_id)
    return credentials_json(device_id, credentials)


@defer.inlineCallbacks
def set_credentials(call):
    """POST /api/device/credentials: a new access token (``credentialsId``), or an X.509 certificate
    (``"credentialsType":"X509_CERTIFICATE"``, the PEM in ``credentialsValue``)."""
    body = call.json_object()
    device_ref = body.get("deviceId")
    device_id = device_ref.get("id") if isinstance(device_ref, dict) else None
    if not isinstance(device_id, str):
        raise BadRequest('deviceId must be {"id": "<device id>"}')
    kind = body.get("credentialsType") or ACCESS_TOKEN
    if kind == X509_CERTIFICATE:
        credentials = certificate_credentials(body.get("credentialsValue"))
    elif kind == ACCESS_TOKEN:
        credentials = Credentials(ACCESS_TOKEN, body.get("credentialsId"))
    else:
        raise BadRequest(f"credentialsType must be {ACCESS_TOKEN} or {X509_CERTIFICATE}")
    yield call.core.devices.get(device_id)
    yield call.core.devices.set_credentials(device_id, credentials)
    return credentials_json(device_id, credentials)


@defer.inlineCallbacks
def tenant_devices(call):
    """GET /api/tenant/devices?pageSize=N&page=P, or ?deviceName=NAME for one device."""
    if "deviceName" in call.query:
        device = yield call.core.devices.by_name(call.query["deviceName"])
        return device_json(device)
    page_size, page = call.paging(required=True)  # required, as in ThingsBoard
    devices, total = yield call.core.devices.page(page_size, page, **call.device_query())
    return page_json([device_json(d) for d in devices], total, page_size, page)
