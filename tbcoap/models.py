"""Plain data objects passed between services, stores and the APIs."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
"""The range of a LONG value, a timestamp and a number in a path."""

DEVICE_SORT_PROPERTIES = ("createdTime", "name", "type", "label")
"""What a device list may be sorted by (ThingsBoard's ``sortProperty``)."""

DEVICE_API_FEATURES = frozenset({"telemetry", "attributes", "rpc", "claim", "provision"})
"""The feature segments of the device API's paths (``/api/v1/{token}/{feature}``); no token may be one."""


def now_ms() -> int:
    """The current time in milliseconds since the epoch."""
    return int(time.time() * 1000)


def new_id() -> str:
    """A new random UUID as text, the form of every entity id."""
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class Device:
    """A device; ``type`` names its device profile."""

    id: str
    name: str
    type: str = "default"
    label: str | None = None
    created_time: int = field(default_factory=now_ms)
    customer_id: str | None = None
    additional_info: str | None = None  # compact JSON text of an object (ThingsBoard's additionalInfo)
    transport_configuration: str | None = None  # compact JSON text of deviceData.transportConfiguration
    # (a COAP one: its power-saving settings), or None (ThingsBoard's DEFAULT: the profile's settings)


ACCESS_TOKEN, X509_CERTIFICATE, PSK = "ACCESS_TOKEN", "X509_CERTIFICATE", "PSK"
CREDENTIALS_TYPES = (ACCESS_TOKEN, X509_CERTIFICATE, PSK)


@dataclass(frozen=True, slots=True)
class Credentials:
    """A device's credential, as ThingsBoard has it: an access token (``id`` is the token), an X.509
    certificate (``id`` is its digest, ``value`` its PEM), or a DTLS pre-shared key (``id`` is the
    PSK identity, ``value`` the key as lowercase hex). Ids are unique across all types."""

    type: str
    id: str
    value: str | None = None


PROVISION_TYPES = ("DISABLED", "ALLOW_CREATE_NEW_DEVICES", "CHECK_PRE_PROVISIONED_DEVICES")


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    """A device profile; provisioning fields are flat (ThingsBoard nests them; both forms are accepted).

    ``transport_configuration`` is ThingsBoard's ``profileData.transportConfiguration`` (payload type,
    Protobuf schemas, client settings) as compact JSON text, or None for a profile without one (its
    devices speak JSON); stores keep it as given."""

    id: str
    name: str
    provision_type: str = "DISABLED"
    provision_key: str | None = None
    provision_secret: str | None = None
    created_time: int = field(default_factory=now_ms)
    transport_configuration: str | None = None


SCOPES = ("CLIENT_SCOPE", "SHARED_SCOPE", "SERVER_SCOPE")
OPERATOR_SCOPES = ("SHARED_SCOPE", "SERVER_SCOPE")  # the scopes an operator writes (a device writes CLIENT_SCOPE)


class Json(str):
    """A JSON object or array value, held as its compact text."""

    __slots__ = ()


KINDS = ("BOOLEAN", "LONG", "DOUBLE", "STRING", "JSON")


def kind_of(value) -> str:
    """The ThingsBoard data type of a typed value (bool, int, float, str, Json)."""
    if value is True or value is False:
        return "BOOLEAN"
    if isinstance(value, int):
        return "LONG"
    if isinstance(value, float):
        return "DOUBLE"
    if isinstance(value, Json):
        return "JSON"
    if isinstance(value, str):
        return "STRING"
    raise TypeError(f"not a typed value: {type(value).__name__}")


def from_kind(kind: str, data):
    """Rebuild a typed value from its kind and a stored int, float or str."""
    if kind == "BOOLEAN":
        return bool(int(data))
    if kind == "LONG":
        return int(data)
    if kind == "DOUBLE":
        return float(data)
    if kind == "JSON":
        return Json(data)
    if kind == "STRING":
        return str(data)
    raise ValueError(f"unknown kind {kind!r}")


def plain(value):
    """A typed value as a JSON-ready Python value (Json text parsed back)."""
    if isinstance(value, Json):
        return json.loads(value)
    return value


RPC_STATUSES = ("QUEUED", "SENT", "DELIVERED", "SUCCESSFUL", "TIMEOUT", "EXPIRED", "FAILED")
RPC_FINAL = frozenset({"SUCCESSFUL", "TIMEOUT", "EXPIRED", "FAILED"})


@dataclass(frozen=True, slots=True)
class Rpc:
    """A server-side RPC: ``request_id`` is the per-device integer the device sees.

    ``params_json`` is compact JSON text (``"null"`` when none); ``response_json``
    is the device's reply as compact JSON text, or None before a reply.
    """

    id: str
    device_id: str
    request_id: int
    method: str
    params_json: str = "null"
    oneway: bool = False
    persistent: bool = False
    expiration_time: int = 0
    created_time: int = field(default_factory=now_ms)
    status: str = "QUEUED"
    response_json: str | None = None


@dataclass(frozen=True, slots=True)
class Customer:
    """A customer: owns devices, calls the REST API with its own key (role customer)."""

    id: str
    title: str
    created_time: int = field(default_factory=now_ms)


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """A device's request to be claimed: the secret and when the request expires (ms)."""

    device_id: str
    secret: str
    expiration_time: int


def compact_json(value) -> str:
    """``value`` as compact JSON text (no spaces, UTF-8 kept), as tbcoap writes JSON everywhere."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


OTA_TYPES = ("FIRMWARE", "SOFTWARE")
OTA_CHUNK = 65536
"""Bytes in each stored chunk of an OTA package's data (the last chunk may be shorter)."""


@dataclass(frozen=True, slots=True)
class OtaPackage:
    """A firmware or software package (ThingsBoard's OtaPackageInfo).  Its data is kept by the store
    in chunks of ``OTA_CHUNK`` bytes under ``data_id``, None until the data was uploaded."""

    id: str
    title: str
    version: str
    type: str
    device_profile_id: str
    tag: str | None = None
    created_time: int = field(default_factory=now_ms)
    file_name: str | None = None
    content_type: str | None = None
    data_size: int | None = None
    checksum_algorithm: str | None = None
    checksum: str | None = None
    data_id: str | None = None

    @property
    def has_data(self) -> bool:
        return self.data_id is not None
