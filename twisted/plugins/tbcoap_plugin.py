"""twistd plugin: ``twistd -n tbcoap`` (see tbcoap.service)."""
from twisted.application.service import ServiceMaker

tbcoap = ServiceMaker(
    "tbcoap",
    "tbcoap.service",
    "CoAP server speaking ThingsBoard's device API, with a REST API",
    "tbcoap",
)
