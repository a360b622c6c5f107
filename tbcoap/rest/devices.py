"""REST calls on devices and their credentials."""

from __future__ import annotations

from twisted.internet import defer

from tbcoap.errors import BadRequest
from tbcoap.models import ACCESS_TOKEN, CREDENTIALS_TYPES, PSK, X509_CERTIFICATE, Credentials
from tbcoap.rest.views import device_json, page_json
from tbcoap.services.certificates import certificate_credentials
from tbcoap.services.psk import psk_credentials


@defer.inlineCallbacks
def create_device(call):
    """POST /api/device {"name","type"?,"label"?,"additionalInfo"?,"deviceData"?} (?accessToken=T chooses the token);
    with ``"id": {"id": ..}`` it updates that device (ThingsBoard's save)."""
    body = call.json_object()
    fields = (body.get("name"), body.get("type"), body.get("label"), body.get("additionalInfo"), body.get("deviceData"))
    ref = body.get("id")
    if ref is not None:
        device_id = ref.get("id") if isinstance(ref, dict) else None
        if not isinstance(device_id, str):
            raise BadRequest('id must be {"id": "<device id>"} (or null to create)')
        device = yield call.core.devices.update(device_id, *fields)
        return device_json(device)
    device, _token = yield call.core.devices.create(*fields[:3], call.query.get("accessToken") or None, *fields[3:])
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
    certificate; a pre-shared key's value is never shown (``null``)."""
    answer = {"deviceId": {"entityType": "DEVICE", "id": device_id}, "credentialsType": credentials.type,
              "credentialsId": credentials.id}
    if credentials.type == PSK:
        answer["credentialsValue"] = None
    elif credentials.value is not None:
        answer["credentialsValue"] = credentials.value
    return answer


@defer.inlineCallbacks
def get_credentials(call, device_id):
    """GET /api/device/{id}/credentials."""
    credentials = yield call.core.devices.credentials(device_id)
    return credentials_json(device_id, credentials)


@defer.inlineCallbacks
def set_credentials(call):
    """POST /api/device/credentials: a new access token (``credentialsId``), an X.509 certificate
    (``"credentialsType":"X509_CERTIFICATE"``, the PEM in ``credentialsValue``) or a pre-shared key
    (``"credentialsType":"PSK"``, the identity in ``credentialsId``, the key in hex in ``credentialsValue``)."""
    body = call.json_object()
    device_ref = body.get("deviceId")
    device_id = device_ref.get("id") if isinstance(device_ref, dict) else None
    if not isinstance(device_id, str):
        raise BadRequest('deviceId must be {"id": "<device id>"}')
    kind = body.get("credentialsType") or ACCESS_TOKEN
    if kind == X509_CERTIFICATE:
        credentials = certificate_credentials(body.get("credentialsValue"))
    elif kind == PSK:
        credentials = psk_credentials(body.get("credentialsId"), body.get("credentialsValue"))
    elif kind == ACCESS_TOKEN:
        credentials = Credentials(ACCESS_TOKEN, body.get("credentialsId"))
    else:
        raise BadRequest(f"credentialsType must be one of {', '.join(CREDENTIALS_TYPES)}")
    yield call.core.devices.get(device_id)
    yield call.core.devices.set_credentials(device_id, credentials)
    return credentials_json(device_id, credentials)


MAX_INFO_PAGE = 1000  # device infos read each device's activity: a page of them is bounded lower


@defer.inlineCallbacks
def device_infos(call, devices):
    """``device_json`` of each device with ThingsBoard's ``active`` and ``customerTitle`` (null for a
    free device) and tbcoap's ``lastActivityTime`` (ms, null if never heard from), read as the
    SERVER_SCOPE attributes are, and ``powerMode`` (PSM, DRX, E_DRX: its own or its profile's, null
    for none)."""
    found = yield _all([call.core.attributes.get(d.id, "SERVER_SCOPE", ["active", "lastActivityTime"], device=d)
                        for d in devices])
    power = yield _all([call.core.power.settings_of(d) for d in devices])
    owners = sorted({d.customer_id for d in devices if d.customer_id})
    customers = yield _all([call.core.customers.get(c) for c in owners])
    titles = {customer.id: customer.title for customer in customers}
    out = []
    for device, attributes, settings in zip(devices, found, power):
        info = device_json(device)
        info["powerMode"] = settings.mode
        info["active"] = bool(attributes.get("active", (False, 0))[0])
        info["lastActivityTime"] = attributes.get("lastActivityTime", (None, 0))[0]
        info["customerTitle"] = titles.get(device.customer_id)
        out.append(info)
    return out


def _all(deferreds):
    """gatherResults that fails with the first error itself (a 503 stays a 503)."""
    return defer.gatherResults(deferreds, consumeErrors=True).addErrback(lambda f: f.value.subFailure)


def info_paging(call):
    page_size, page = call.paging(required=True)
    if page_size > MAX_INFO_PAGE:
        raise BadRequest(f"pageSize must be at most {MAX_INFO_PAGE} for device infos")
    return page_size, page


@defer.inlineCallbacks
def tenant_device_infos(call):
    """GET /api/tenant/deviceInfos?pageSize=N&page=P[&textSearch=..]: devices with their activity."""
    page_size, page = info_paging(call)
    devices, total = yield call.core.devices.page(page_size, page, **call.device_query())
    return page_json((yield device_infos(call, devices)), total, page_size, page)


@defer.inlineCallbacks
def tenant_devices(call):
    """GET /api/tenant/devices?pageSize=N&page=P, or ?deviceName=NAME for one device."""
    if "deviceName" in call.query:
        device = yield call.core.devices.by_name(call.query["deviceName"])
        return device_json(device)
    page_size, page = call.paging(required=True)  # required, as in ThingsBoard
    devices, total = yield call.core.devices.page(page_size, page, **call.device_query())
    return page_json([device_json(d) for d in devices], total, page_size, page)
