"""The REST API's plumbing: dispatch to the routes with keys and roles checked, the Site with its
limits and redacting access log.

Handlers are plain functions ``handler(call, **path_params)`` (``tbcoap.rest.call.Call``) returning
a JSON-ready value, an answer of ``tbcoap.rest.answers`` or a Deferred of one; they raise
``tbcoap.errors`` and ``answers`` turns those into ``{"status": .., "message": ..}``.
"""

from __future__ import annotations

from urllib.parse import unquote

from twisted.internet import defer
from twisted.web import http, server
from twisted.web.resource import Resource

from tbcoap.errors import Forbidden, NotFound, ShuttingDown
from tbcoap.redact import redact_uri
from tbcoap.rest.answers import WRITE_TIMEOUT, Client, MethodNotAllowed
from tbcoap.rest.auth import bearer_key, known_key, principal_for
from tbcoap.rest.call import Call
from tbcoap.rest.limits import UNAUTHENTICATED_BODY, LimitedChannel, LimitedRequest
from tbcoap.rest.routes import ROUTES
from tbcoap.rest.routing import find
from tbcoap.rest.upload import upload_limit
from tbcoap.web import Root


class Api(Resource):
    """Dispatches every request to its Route (JSON 404/405 for the rest)."""

    isLeaf = True

    def __init__(self, node, routes):
        super().__init__()
        self.node = node
        self.routes = routes

    def render(self, request):
        request.setHeader(b"content-type", b"application/json")
        client = Client(request, self.node.reactor, self.node.settings.get("write-timeout", WRITE_TIMEOUT))
        d = defer.maybeDeferred(self._call, request)
        d.addCallbacks(client.write, client.write_error)
        d.addErrback(client.write_failed)  # write itself failed, before anything was written
        return server.NOT_DONE_YET

    @defer.inlineCallbacks
    def _call(self, request):
        path = request.path.decode("utf-8", "replace")
        method = request.method.decode("ascii", "replace")
        the_route, match, known = find(self.routes, method, path)
        principal = None
        if the_route is None or the_route.roles:
            principal = yield principal_for(request, self.node)  # 401 comes before 404 and 405
        if not known:
            raise NotFound(f"no such path {path}")
        if the_route is None:
            raise MethodNotAllowed(f"{method} is not allowed on {path}")
        if principal is not None:
            if principal.role not in the_route.roles:
                raise Forbidden("this key may not make this call")
            if not self.node.core.ready:
                raise ShuttingDown("server is not ready or shutting down")
        call = Call(self.node, request, principal)
        params = {name: unquote(value) for name, value in match.groupdict().items()}
        result = yield the_route.handler(call, **params)
        return result


class _Redacted:
    """A request seen by the access log with its tokens masked."""

    def __init__(self, request):
        self._request = request
        self.uri = redact_uri(request.uri.decode("latin-1")).encode("latin-1")

    def getHeader(self, name):
        value = self._request.getHeader(name)
        key = name.decode("latin-1") if isinstance(name, bytes) else name
        if value and key.lower() in ("referer", "referrer"):
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            value = redact_uri(text).encode("latin-1") if isinstance(value, bytes) else redact_uri(text)
        return value

    def __getattr__(self, name):
        return getattr(self._request, name)


def redacting_log_formatter(timestamp, request):
    """Combined log format, with access tokens masked."""
    return http.combinedLogFormatter(timestamp, _Redacted(request))


class ApiSite(server.Site):
    """The REST API's Site: HTTP with limits (tbcoap.rest.limits) and a redacting access log."""

    protocol = LimitedChannel
    requestFactory = LimitedRequest

    def __init__(self, node, resource):
        super().__init__(resource, logFormatter=redacting_log_formatter)
        self.node = node
        self.refusals = {}  # HTTP status -> requests refused by the limits

    def body_limit(self, request) -> int:
        """How much body this request may send: the full limit with a key known valid from
        memory, 64 KiB otherwise (its key is checked once the body is in)."""
        key = bearer_key(request)
        if key is not None and known_key(key, self.node):
            return upload_limit(request, self.node) or self.node.settings["max-rest-body"]
        return UNAUTHENTICATED_BODY


def make_site(node, sockets=None):
    """The twisted.web Site of the REST API, with the web console at ``/`` and ``sockets`` (path ->
    resource: the node gives ThingsBoard's WebSocket paths, tbcoap.websocket) beside it."""
    return ApiSite(node, Root(Api(node, ROUTES), sockets))
