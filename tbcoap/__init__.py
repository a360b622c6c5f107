"""tbcoap: a CoAP server speaking ThingsBoard's device API, on Twisted.

Embedding: ``tbcoap.make_service(["--coap-port", "0"])`` returns a Service
to put under your own MultiService.
"""

__version__ = "0.1.0"


def make_service(args=(), plugins=(), **options):
    """Return the tbcoap Service configured like ``twistd tbcoap ARGS``.

    Keyword arguments are options too (``coap_port=0`` is ``--coap-port 0``);
    ``plugins`` are registered in code, beside the installed ones.
    """
    from tbcoap.service import service_from_args

    return service_from_args(list(args), plugins, **options)
