"""tbcoap's own behaviour expressed as hook implementations."""

from tbcoap.hookspecs import hookimpl
from tbcoap.models import ACCESS_TOKEN


@hookimpl(trylast=True)
def tbcoap_authenticate(token, store):
    """Access tokens as ThingsBoard has them: looked up in the store."""
    return store.device_by_credentials(ACCESS_TOKEN, token)
