"""The echo rule: answers a device's client-side RPC with the request it sent.

Enabled by default (``--rules echo``); ``--rules none`` turns every rule off.
"""

from tbcoap.hookspecs import hookimpl

__version__ = "0.1.0"


@hookimpl
def tbcoap_client_rpc(request):
    """The request's JSON, as received (tbcoap re-serializes it compactly)."""
    return request
