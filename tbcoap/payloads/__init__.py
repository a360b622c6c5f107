"""Device payload formats beside JSON (docs/device-api.md, Payload formats): plain Python, no CoAP.

- ``config``: a device profile's transport configuration in ThingsBoard's JSON shape (payload type,
  the four Protobuf schemas, client settings), checked, filled with defaults and kept as text;
- ``protoc``: schemas compiled by protoc (grpcio-tools) into descriptors, with ThingsBoard's rules;
- ``protojson``: Protobuf messages to the values a JSON payload gives, and JSON into messages;
- ``tbmessages``: ThingsBoard's device-facing messages (``transport.proto`` of this package);
- ``cbor``: CBOR read with the JSON data model, and written.
"""
