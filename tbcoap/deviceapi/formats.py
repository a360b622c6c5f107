"""How one request's body is read and its answers are written (docs/device-api.md, Payload formats).

A device of a JSON profile sends JSON (Content-Format none, 0 or 50) or CBOR (60) and gets JSON
answers, or CBOR ones when it asks with Accept 60: four ``JsonCodec``s, one per pairing. A device
of a PROTOBUF profile sends its profile's messages whatever the Content-Format and gets
ThingsBoard's messages or its profile's RPC request message (Content-Format 42): a
``ProtobufCodec`` of the profile's compiled schemas. Every codec reads the bodies into the JSON
values the services take and writes the answers of each feature; an observation keeps the codec
it was registered with.
"""

from __future__ import annotations

from tbcoap.models import compact_json, plain
from tbcoap.payloads import cbor, tbmessages
from tbcoap.payloads.protojson import fill
from tbcoap.services.values import parse_json

TEXT, LINK_FORMAT, OCTET_STREAM, JSON_FORMAT, CBOR_FORMAT = 0, 40, 42, 50, 60


def _json_bytes(value) -> bytes:
    return compact_json(value).encode("utf-8")


class JsonCodec:
    """Bodies of the JSON data model, read as JSON or CBOR (``read``) and written as JSON or CBOR
    (``write``, Content-Format ``content_format``)."""

    __slots__ = ("read", "write", "content_format", "telemetry", "attributes", "client_rpc", "provision",
                 "rpc_registration", "_empty_body")

    def __init__(self, read, write, content_format, empty_body):
        self.read, self.write, self.content_format = read, write, content_format
        self.telemetry = self.attributes = self.client_rpc = self.provision = read
        self.rpc_registration = write({})
        self._empty_body = empty_body  # a claim body with nothing in it (JSON: whitespace too)

    def claim(self, payload: bytes):
        """The claim body: ``{}`` when empty."""
        return {} if self._empty_body(payload) else self.read(payload)

    def rpc_reply(self, payload: bytes) -> str:
        """A reply to a server-side RPC as compact JSON text (any JSON value)."""
        return compact_json(self.read(payload))

    def attributes_answer(self, found: dict, multiple: bool) -> bytes:
        """``{"client": {..}, "shared": {..}}`` of ``{section: {key: (value, ts)}}``."""
        return self.write({section: {key: plain(value) for key, (value, _ts) in values.items()}
                           for section, values in found.items()})

    def shared_snapshot(self, found: dict) -> bytes:
        """An attribute observation's first answer: every shared attribute, flat."""
        return self.write({key: plain(value) for key, (value, _ts) in found.items()})

    def changes(self, changed: dict, deleted: list, combined=False) -> list:
        """The notifications of merged shared-attribute changes: the written keys, then
        ``{"deleted": [..]}``; ``combined``: one notification with both (ThingsBoard's JSON of an
        update with deletions, what a sleeping device gets when it wakes)."""
        if combined and deleted:
            body = {key: plain(value) for key, (value, _ts) in changed.items()}
            body["deleted"] = deleted
            return [self.write(body)]
        out = []
        if changed:
            out.append(self.write({key: plain(value) for key, (value, _ts) in changed.items()}))
        if deleted:
            out.append(self.write({"deleted": deleted}))
        return out

    def rpc_request(self, notice) -> bytes:
        """A server-side RPC's notification ``{"id","method","params"}`` (made once per format)."""
        write = self.write
        return notice.form(write, lambda n: write(n.body()))

    def client_rpc_answer(self, answer) -> bytes:
        """A rule's answer to a client-side RPC."""
        return self.write(answer)

    def provision_answer(self, body: dict) -> bytes:
        """A provisioning answer (success or failure)."""
        return self.write(body)


def _no_bytes(payload):
    return not payload


def _blank(payload):
    return not payload.strip()


class ProtobufCodec:
    """A PROTOBUF profile version's devices (``schemas``: its ProtobufSchemas): telemetry and client
    attributes as the profile's messages, RPC replies as its RPC response message, the rest as
    ThingsBoard's messages; answers in Protobuf (Content-Format 42). Without ``schemas``, only
    provisioning (which knows no profile)."""

    __slots__ = ("schemas", "telemetry", "attributes")
    content_format = OCTET_STREAM
    rpc_registration = b""  # no RPC yet: an empty message

    def __init__(self, schemas=None):
        self.schemas = schemas
        if schemas is not None:
            self.telemetry, self.attributes = schemas.telemetry, schemas.attributes

    @staticmethod
    def claim(payload: bytes) -> dict:
        return tbmessages.read_claim(payload)

    @staticmethod
    def client_rpc(payload: bytes) -> dict:
        return tbmessages.read_client_rpc(payload, parse_json)

    @staticmethod
    def provision(payload: bytes) -> dict:
        return tbmessages.read_provision(payload)

    def rpc_reply(self, payload: bytes) -> str:
        """The profile's RPC response message as compact JSON text (what the REST caller gets)."""
        return compact_json(self.schemas.rpc_response(payload))

    @staticmethod
    def attributes_answer(found: dict, multiple: bool) -> bytes:
        return tbmessages.attributes_answer(found, multiple)

    @staticmethod
    def shared_snapshot(found: dict) -> bytes:
        return tbmessages.attribute_notification(found)

    @staticmethod
    def changes(changed: dict, deleted: list, combined=True) -> list:
        """One ``AttributeUpdateNotificationMsg`` with the written keys and the deleted ones."""
        return [tbmessages.attribute_notification(changed, deleted)]

    def rpc_request(self, notice) -> bytes:
        """The profile's RPC request message filled from ``{"method","requestId","params"}`` (made
        once per message type); BadRequest when the params do not fit it."""
        message = self.schemas.rpc_request
        return notice.form(message, lambda n: fill(message, {"method": n.method, "requestId": n.request_id,
                                                             "params": n.params}).SerializeToString())

    @staticmethod
    def client_rpc_answer(answer) -> bytes:
        return tbmessages.client_rpc_answer(compact_json(answer))

    @staticmethod
    def provision_answer(body: dict) -> bytes:
        return tbmessages.provision_answer(body)


JSON_IN_JSON = JsonCodec(parse_json, _json_bytes, JSON_FORMAT, _blank)
JSON_IN_CBOR = JsonCodec(parse_json, cbor.write, CBOR_FORMAT, _blank)
CBOR_IN_JSON = JsonCodec(cbor.read, _json_bytes, JSON_FORMAT, _no_bytes)
CBOR_IN_CBOR = JsonCodec(cbor.read, cbor.write, CBOR_FORMAT, _no_bytes)
PROVISION_PROTOBUF = ProtobufCodec()

READS_CBOR = {None: False, TEXT: False, JSON_FORMAT: False, CBOR_FORMAT: True}  # request Content-Format
WRITES_CBOR = {None: False, JSON_FORMAT: False, CBOR_FORMAT: True}  # Accept
JSON_CODECS = {(False, False): JSON_IN_JSON, (False, True): JSON_IN_CBOR, (True, False): CBOR_IN_JSON,
               (True, True): CBOR_IN_CBOR}
PROTOBUF_ACCEPT = (None, OCTET_STREAM)
PROVISION_ACCEPT = (None, JSON_FORMAT, CBOR_FORMAT, OCTET_STREAM)
