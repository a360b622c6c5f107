"""The REST API's plumbing: routing, keys and roles, JSON in and out, errors, the Site.

Handlers are plain functions ``handler(call, **path_params)`` returning a
JSON-ready value (or a Deferred of one); they raise ``tbcoap.errors`` and
this module turns those into ``{"status": .., "message": ..}``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote

from twisted.internet import defer
from twisted.logger import Logger
from twisted.protocols.basic import FileSender
from twisted.web import http, server
from twisted.web.resource import Resource

from tbcoap.errors import (BadRequest, Forbidden, GatewayTimeout, NotFound, NotSupported, RpcFailed, ShuttingDown,
                           StoreUnavailable, Unauthorized)
from tbcoap.redact import redact_uri
from tbcoap.services.values import parse_json
from tbcoap.rest.auth import bearer_key, known_key, principal_for
from tbcoap.rest.limits import UNAUTHENTICATED_BODY, LimitedChannel, LimitedRequest

log = Logger()
MAX_PAGE_SIZE = 10_000
DEVICE_SORT_PROPERTIES = ("createdTime", "name", "type", "label")




class RawJson(str):
    """JSON text a handler returns to be written as it is."""


@dataclass
class FileDownload:
    """A file a handler returns to be streamed as an attachment; ``done()`` runs once it was sent
    (or the client went away)."""

    path: str
    content_type: bytes
    filename: str
    done: object


@dataclass
class Raw:
    """A body that is not JSON, with its content type."""

    content_type: bytes
    body: bytes


@dataclass
class Answer:
    """A handler's JSON answer with a status other than 200."""

    status: int
    value: object


class MethodNotAllowed(Exception):
    """A known path with another method (405)."""


@dataclass
class Route:
    """One REST call: method, path pattern, handler and the roles allowed to call it."""

    method: str
    pattern: re.Pattern
    handler: object
    roles: tuple = ("admin",)


def route(method, path, handler, roles=("admin",)):
    """A Route from a path like ``/api/device/{id}`` (each ``{name}`` is one segment)."""
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path)
    return Route(method, re.compile(f"^{regex}$"), handler, roles)


class Call:
    """What a handler sees of one HTTP request."""

    def __init__(self, node, request, principal):
        self.node = node
        self.core = node.core
        self.request = request
        self.principal = principal
        raw = request.uri.partition(b"?")[2].decode("latin-1")
        try:
            pairs = parse_qs(raw, keep_blank_values=True, errors="strict")
        except UnicodeDecodeError:
            raise BadRequest("query is not UTF-8") from None
        self.query = {k: v[0] for k, v in pairs.items()}

    def body(self) -> bytes:
        """The raw request body."""
        return self.request.content.read()

    def json_object(self, optional=False) -> dict:
        """The body as a JSON object (strict JSON, as devices get), else BadRequest; with
        ``optional`` an empty body is ``{}``."""
        body = self.body()
        if optional and not body.strip():
            return {}
        value = parse_json(body or b"null")
        if not isinstance(value, dict):
            raise BadRequest("body must be a JSON object")
        return value

    def int_param(self, name, default=None, minimum=0):
        """A query parameter as an integer (400 if malformed or missing without default)."""
        raw = self.query.get(name)
        if raw is None or raw == "":
            if default is None:
                raise BadRequest(f"query parameter {name} is required")
            return default
        try:
            value = int(raw) if len(raw) <= 20 else None
        except ValueError:
            value = None
        if value is None:
            raise BadRequest(f"query parameter {name} must be an integer")
        if value > 2**63 - 1:
            raise BadRequest(f"query parameter {name} is out of range")
        if value < minimum:
            raise BadRequest(f"query parameter {name} must be at least {minimum}")
        return value

    def bool_param(self, name, default):
        """A query parameter ``true``/``false`` in any case (tb-rest-client sends ``True``)."""
        raw = self.query.get(name)
        if raw is None or raw == "":
            return default
        if raw.lower() not in ("true", "false"):
            raise BadRequest(f"query parameter {name} must be true or false")
        return raw.lower() == "true"

    def paging(self, required=False):
        """``(page_size, page)`` from ``pageSize`` (1 to MAX_PAGE_SIZE; 100 unless required) and ``page``."""
        page_size = self.int_param("pageSize", None if required else 100, minimum=1)
        if page_size > MAX_PAGE_SIZE:
            raise BadRequest(f"pageSize must be at most {MAX_PAGE_SIZE}")
        return page_size, self.int_param("page", 0)

    @defer.inlineCallbacks
    def device(self, device_id):
        """The Device, if this caller may see it (a customer: only its own); else NotFound."""
        device = yield self.core.devices.get(device_id)
        if self.principal is not None and self.principal.role == "customer" \
                and device.customer_id != self.principal.customer_id:
            raise NotFound(f"device {device_id} not found")
        return device

    def device_query(self) -> dict:
        """ThingsBoard's ``textSearch``, ``sortProperty`` and ``sortOrder`` as store arguments."""
        sort_property = self.query.get("sortProperty") or "createdTime"
        if sort_property not in DEVICE_SORT_PROPERTIES:
            raise BadRequest(f"sortProperty must be one of {', '.join(DEVICE_SORT_PROPERTIES)}")
        order = (self.query.get("sortOrder") or "ASC").upper()
        if order not in ("ASC", "DESC"):
            raise BadRequest("sortOrder must be ASC or DESC")
        return {"text_search": self.query.get("textSearch") or None, "sort_property": sort_property,
                "descending": order == "DESC"}

    def keys_param(self, name="keys"):
        """A comma-separated list parameter, or None when absent or empty."""
        keys = [k for k in self.query.get(name, "").split(",") if k]
        return keys or None


class Api(Resource):
    """Dispatches every request to its Route (JSON 404/405 for the rest)."""

    isLeaf = True

    def __init__(self, node, routes):
        super().__init__()
        self.node = node
        self.routes = routes

    def render(self, request):
        request.setHeader(b"content-type", b"application/json")
        d = defer.maybeDeferred(self._call, request)
        d.addCallbacks(_write_json, _write_error, callbackArgs=(request,), errbackArgs=(request,))
        d.addErrback(_write_failed, request)  # _write_json itself failed, before anything was written
        return server.NOT_DONE_YET

    @defer.inlineCallbacks
    def _call(self, request):
        path = request.path.decode("utf-8", "replace")
        method = request.method.decode("ascii", "replace")
        matches = [(r, m) for r in self.routes if (m := r.pattern.match(path))]
        found = [(r, m) for r, m in matches if r.method == method]
        the_route, match = found[0] if found else (None, None)
        principal = None
        if the_route is None or the_route.roles:
            principal = yield principal_for(request, self.node)  # 401 comes before 404 and 405
        if not matches:
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


def _write_json(value, request):
    if isinstance(value, FileDownload):
        _send_file(value, request)
        return
    if request._disconnected:
        return
    if isinstance(value, Answer):
        request.setResponseCode(value.status)
        value = value.value
    if isinstance(value, Raw):
        request.setHeader(b"content-type", value.content_type)
        body = value.body
    elif value is None:
        body = b""
    elif isinstance(value, RawJson):
        body = value.encode("utf-8")
    else:
        body = json.dumps(value, separators=(",", ":")).encode("utf-8")
    request.write(body)
    request.finish()


def _send_file(download, request):
    """Stream ``download`` with FileSender (a producer: the file never sits in memory)."""
    if request._disconnected:
        download.done()
        return
    try:
        handle = open(download.path, "rb")
    except OSError:
        download.done()
        raise  # answered 500 by _write_json's caller
    request.setHeader(b"content-type", download.content_type)
    request.setHeader(b"content-length", str(os.fstat(handle.fileno()).st_size).encode())
    request.setHeader(b"content-disposition", f'attachment; filename="{download.filename}"'.encode())

    def finished(result):
        handle.close()
        download.done()
        if not request._disconnected:
            request.finish()

    FileSender().beginFileTransfer(handle, request).addBoth(finished)


STATUS_OF = ((BadRequest, 400), (Unauthorized, 401), (Forbidden, 403), (NotFound, 404),
             (MethodNotAllowed, 405), (StoreUnavailable, 503), (ShuttingDown, 503), (RpcFailed, 502), (GatewayTimeout, 504),
             (NotSupported, 501))


def _write_failed(failure, request):
    if request.startedWriting or request.finished:
        log.failure("writing the answer to {uri} failed", failure, uri=redact_uri(request.uri.decode("latin-1")))
        return None
    return _write_error(failure, request)


def _write_error(failure, request):
    status = 500
    for kind, code in STATUS_OF:
        if failure.check(kind):
            status = code
    message = failure.getErrorMessage()
    if status == 503:
        message = message or "store unavailable"
    elif status == 500:
        log.failure("REST call {uri} failed", failure, uri=redact_uri(request.uri.decode("latin-1")))
        message = "internal server error"
    if request._disconnected:
        return
    request.write(_error_body(request, status, message))
    request.finish()


def _error_body(request, status, message):
    request.setResponseCode(status)
    return json.dumps({"status": status, "message": message}).encode("utf-8")


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
            return self.node.settings["max-rest-body"]
        return UNAUTHENTICATED_BODY


def make_site(node):
    """The twisted.web Site of the REST API, with the web console at ``/``."""
    from tbcoap.rest.routes import ROUTES

    from tbcoap.web import Root

    return ApiSite(node, Root(Api(node, ROUTES)))
