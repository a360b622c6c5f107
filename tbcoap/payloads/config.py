"""A device profile's transport configuration, in ThingsBoard's JSON shape.

ThingsBoard keeps it in ``profileData.transportConfiguration`` (and names its type again in the
profile's ``transportType``)::

    {"type": "COAP",
     "coapDeviceTypeConfiguration": {"coapDeviceType": "DEFAULT",
       "transportPayloadTypeConfiguration": {"transportPayloadType": "JSON" | "PROTOBUF",
         "deviceTelemetryProtoSchema": "..", "deviceAttributesProtoSchema": "..",
         "deviceRpcRequestProtoSchema": "..", "deviceRpcResponseProtoSchema": ".."}},
     "clientSettings": {..}}

``stored_configuration`` checks what a caller sent and gives the compact JSON text a store keeps
(None for a profile without one: a JSON profile, ``transportType`` DEFAULT); PROTOBUF without a
schema takes ThingsBoard's default for it; keys tbcoap does not read are kept as given.
``PayloadSettings.of`` reads the stored text back.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from tbcoap.errors import BadRequest
from tbcoap.models import compact_json
from tbcoap.payloads.power import AWAKE, check_fields, client_settings, effective

JSON, PROTOBUF = "JSON", "PROTOBUF"
PAYLOAD_TYPES = (JSON, PROTOBUF)
MAX_SCHEMA = 65536  # characters of one schema
MAX_CONFIGURATION = 262144  # characters of the whole configuration, as stored

SCHEMA_KEYS = {  # what each schema is for -> its key in transportPayloadTypeConfiguration
    "telemetry": "deviceTelemetryProtoSchema",
    "attributes": "deviceAttributesProtoSchema",
    "rpc_request": "deviceRpcRequestProtoSchema",
    "rpc_response": "deviceRpcResponseProtoSchema",
}

DEFAULT_SCHEMAS = {  # ThingsBoard's defaults, as its profile editor fills them in
    "telemetry": """syntax ="proto3";
package telemetry;

message SensorDataReading {

  optional double temperature = 1;
  optional double humidity = 2;
  InnerObject innerObject = 3;

  message InnerObject {
    optional string key1 = 1;
    optional bool key2 = 2;
    optional double key3 = 3;
    optional int32 key4 = 4;
    optional string key5 = 5;
  }
}
""",
    "attributes": """syntax ="proto3";
package attributes;

message SensorConfiguration {
  optional string firmwareVersion = 1;
  optional string serialNumber = 2;
}""",
    "rpc_request": """syntax ="proto3";
package rpc;

message RpcRequestMsg {
  optional string method = 1;
  optional int32 requestId = 2;
  optional string params = 3;
}""",
    "rpc_response": """syntax ="proto3";
package rpc;

message RpcResponseMsg {
  optional string payload = 1;
}""",
}

DEFAULT_TRANSPORT = {"type": "DEFAULT"}  # what a profile without a configuration answers


@dataclass(frozen=True)
class PayloadSettings:
    """What a profile's devices speak: ``payload_type`` JSON or PROTOBUF, the four ``schemas``
    (``{"telemetry": text, ..}``, empty for JSON) and ``version``, a digest of the stored text;
    ``client_settings``: the profile's power-saving ``clientSettings`` (``power`` for a device that
    has none of its own)."""

    payload_type: str = JSON
    schemas: tuple = ()  # ((purpose, text), ..) in SCHEMA_KEYS order
    version: str = ""
    client_settings: dict | None = field(default=None, compare=False)
    power: object = AWAKE  # the profile's PowerSettings

    def power_of(self, device_text):
        """The PowerSettings of a device of this profile whose own transport configuration is ``device_text``."""
        return effective(device_text, self.client_settings) if device_text else self.power

    @classmethod
    def of(cls, text):
        """The settings of a profile's stored configuration text (None: JSON)."""
        if not text:
            return JSON_SETTINGS
        configuration = json.loads(text)
        payload = _payload_part(configuration)
        version = hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
        settings = client_settings(configuration) or None
        power = effective(None, settings)
        if payload.get("transportPayloadType") != PROTOBUF:
            return PayloadSettings(JSON, (), version, settings, power)
        return PayloadSettings(PROTOBUF, tuple((purpose, payload[key]) for purpose, key in SCHEMA_KEYS.items()),
                               version, settings, power)


JSON_SETTINGS = PayloadSettings()


def transport_json(text) -> dict:
    """The ``transportConfiguration`` object a profile answers with."""
    return json.loads(text) if text else dict(DEFAULT_TRANSPORT)


def transport_type(text) -> str:
    """The profile's ``transportType``: COAP with a configuration, else DEFAULT."""
    return "COAP" if text else "DEFAULT"


def stored_configuration(body: dict):
    """The compact JSON text to store for a profile body's ``transportType`` and
    ``profileData.transportConfiguration``, or None (a JSON profile); BadRequest for a bad one."""
    declared = body.get("transportType")
    data = body.get("profileData")
    given = data.get("transportConfiguration") if isinstance(data, dict) else None
    if declared is not None and declared not in ("DEFAULT", "COAP"):
        raise BadRequest(f"transportType must be DEFAULT or COAP: tbcoap serves CoAP (got {_shown(declared)})")
    if given is None:
        given = {"type": declared} if declared == "COAP" else None
    if given is None:
        return None
    if not isinstance(given, dict):
        raise BadRequest("profileData.transportConfiguration must be a JSON object")
    kind = given.get("type")
    if kind not in ("DEFAULT", "COAP"):
        raise BadRequest("transportConfiguration type must be DEFAULT or COAP: tbcoap serves CoAP")
    if declared is not None and declared != kind:
        raise BadRequest(f"transportType {declared} does not match transportConfiguration type {kind}")
    if kind == "DEFAULT":
        return None
    configuration = dict(given)
    device_type = _object(configuration, "coapDeviceTypeConfiguration", "transportConfiguration")
    if device_type.setdefault("coapDeviceType", "DEFAULT") != "DEFAULT":
        raise BadRequest(f"coapDeviceType must be DEFAULT (got {_shown(device_type['coapDeviceType'])}): "
                         "Efento devices are not supported")
    payload = _object(device_type, "transportPayloadTypeConfiguration", "coapDeviceTypeConfiguration")
    payload_type = payload.setdefault("transportPayloadType", JSON)
    if payload_type not in PAYLOAD_TYPES:
        raise BadRequest(f"transportPayloadType must be JSON or PROTOBUF (got {_shown(payload_type)})")
    if payload_type == PROTOBUF:
        for purpose, key in SCHEMA_KEYS.items():
            schema = payload.get(key)
            if schema is not None and not isinstance(schema, str):
                raise BadRequest(f"{key} must be text (a proto3 schema)")
            if len(schema or "") > MAX_SCHEMA:
                raise BadRequest(f"{key} is over {MAX_SCHEMA} characters")
            if not (schema or "").strip():
                payload[key] = DEFAULT_SCHEMAS[purpose]
    settings = configuration.get("clientSettings")
    if settings is not None and not isinstance(settings, dict):
        raise BadRequest("clientSettings must be a JSON object")
    if settings is not None:
        check_fields(settings, "clientSettings")
    text = compact_json(configuration)
    if len(text) > MAX_CONFIGURATION:
        raise BadRequest(f"transportConfiguration is over {MAX_CONFIGURATION} characters of JSON")
    return text


def schema_key(purpose) -> str:
    """The JSON key of a schema (``deviceTelemetryProtoSchema`` for "telemetry")."""
    return SCHEMA_KEYS[purpose]


def _object(parent, key, where):
    """``parent[key]`` as a fresh dict (an empty one if absent), put back into ``parent``."""
    value = parent.get(key)
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise BadRequest(f"{where}.{key} must be a JSON object")
    parent[key] = value = dict(value)
    return value


def _payload_part(configuration):
    return (configuration.get("coapDeviceTypeConfiguration") or {}).get("transportPayloadTypeConfiguration") or {}


def _shown(value):
    return repr(value)[:40]
