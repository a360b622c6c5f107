"""ThingsBoard's device-facing Protobuf messages (``proto/transport.proto``, ``proto/transportapi.proto``
of this package, compiled by protoc once per process): reading a Protobuf device's claim, client-side
RPC and provisioning requests into the JSON bodies the services take, and writing attribute answers
and notifications, client-side RPC answers and provisioning answers.

Typed values (bool, int, float, str, Json) become ``KeyValueProto``s of their ThingsBoard type.
"""

from __future__ import annotations

import os

from google.protobuf import message_factory

from tbcoap.errors import BadRequest
from tbcoap.models import kind_of
from tbcoap.payloads.protoc import compile_file
from tbcoap.payloads.protojson import MessageReader

_HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "proto")
_VALUE_FIELD = {"BOOLEAN": "bool_v", "LONG": "long_v", "DOUBLE": "double_v", "STRING": "string_v", "JSON": "json_v"}
_loaded = None


class ThingsBoardMessages:
    """The message classes of both files, by their names (``self.TsKvProto``, ..)."""

    def __init__(self):
        for filename in ("transport.proto", "transportapi.proto"):
            compiled = compile_file(os.path.join(_HERE, filename))
            for name, descriptor in compiled.file.message_types_by_name.items():
                setattr(self, name, message_factory.GetMessageClass(descriptor))
        self.claim = MessageReader(self.ClaimDevice)
        self.client_rpc = MessageReader(self.RpcRequest)
        self.provision = MessageReader(self.ProvisionDeviceRequestMsg)


def messages() -> ThingsBoardMessages:
    """The messages, compiled on the first call."""
    global _loaded
    if _loaded is None:
        _loaded = ThingsBoardMessages()
    return _loaded


def read_claim(payload: bytes) -> dict:
    """A ``transportapi.ClaimDevice`` as the claim body ``{"secretKey","durationMs"}``."""
    message = messages().claim.decode(payload)
    return {"secretKey": message.secretKey, "durationMs": message.durationMs}


def read_client_rpc(payload: bytes, parse_json) -> dict:
    """A ``transportapi.RpcRequest`` as ``{"method","params"}``: params read as JSON when they are
    JSON text, else kept as text (none when empty)."""
    message = messages().client_rpc.decode(payload)
    params = None
    if message.params:
        try:
            params = parse_json(message.params.encode("utf-8"))
        except BadRequest:
            params = message.params
    return {"method": message.method, "params": params}


def read_provision(payload: bytes) -> dict:
    """A ``transport.ProvisionDeviceRequestMsg`` as the provisioning body of JSON devices."""
    message = messages().provision.decode(payload)
    credentials = message.provisionDeviceCredentialsMsg
    body = {"deviceName": message.deviceName or None,
            "provisionDeviceKey": credentials.provisionDeviceKey,
            "provisionDeviceSecret": credentials.provisionDeviceSecret,
            "credentialsType": _credentials_types().get(message.credentialsType, str(message.credentialsType)),
            "gateway": message.gateway}
    token = message.credentialsDataProto.validateDeviceTokenRequestMsg.token
    if token:
        body["token"] = token
    return body


def _credentials_types():
    enum = messages().ProvisionDeviceRequestMsg.DESCRIPTOR.fields_by_name["credentialsType"].enum_type
    return {value.number: value.name for value in enum.values}


def provision_answer(body: dict) -> bytes:
    """A provisioning answer (success or failure, as the JSON body has it) as a
    ``transport.ProvisionDeviceResponseMsg``."""
    answer = messages().ProvisionDeviceResponseMsg(status=body["status"])
    if body.get("credentialsValue"):
        answer.credentialsType = body["credentialsType"]
        answer.credentialsValue = body["credentialsValue"]
    return answer.SerializeToString()


def ts_kv_list(values: dict) -> list:
    """``TsKvProto``s of ``{key: (typed value, ts)}``."""
    m = messages()
    out = []
    for key, (value, ts) in values.items():
        kind = kind_of(value)
        kv = m.KeyValueProto(key=key, type=f"{kind}_V")
        setattr(kv, _VALUE_FIELD[kind], value)
        out.append(m.TsKvProto(ts=ts, kv=kv))
    return out


def attributes_answer(found: dict, multiple: bool) -> bytes:
    """A ``GetAttributeResponseMsg`` (requestId 0, as ThingsBoard sends it) of
    ``{"client": {key: (value, ts)}, "shared": {..}}``."""
    answer = messages().GetAttributeResponseMsg(
        requestId=0, isMultipleAttributesRequest=multiple,
        clientAttributeList=ts_kv_list(found.get("client", {})),
        sharedAttributeList=ts_kv_list(found.get("shared", {})))
    return answer.SerializeToString()


def attribute_notification(updated: dict, deleted=()) -> bytes:
    """An ``AttributeUpdateNotificationMsg`` of ``{key: (value, ts)}`` written and keys deleted."""
    return messages().AttributeUpdateNotificationMsg(sharedUpdated=ts_kv_list(updated),
                                                     sharedDeleted=list(deleted)).SerializeToString()


def client_rpc_answer(payload_json: str) -> bytes:
    """A ``ToServerRpcResponseMsg`` (requestId 0) carrying a rule's answer as JSON text."""
    return messages().ToServerRpcResponseMsg(requestId=0, payload=payload_json).SerializeToString()
