"""ThingsBoard's CoAP device API (docs/device-api.md): routing, order of checks, codes.

``DeviceApi`` is the message layer's request handler.  Checks run in the
documented order: path (4.04, 4.00 for an unknown feature), method (4.05), token
(4.01), size (4.13), Content-Format (4.15), payload (4.00).  Domain errors
become CoAP codes here and nowhere else.  The device's profile says how its bodies
are read and its answers written (``formats``): JSON or CBOR, or the profile's Protobuf.
"""

from __future__ import annotations

import math
import time

from twisted.internet import defer
from twisted.logger import Logger
from txthings import coap

from tbcoap.coap.codec import code_text, response
from tbcoap.deviceapi.answers import LINK_FORMAT, error
from tbcoap.deviceapi.ota import OTA_PATHS, OtaDownloads
from tbcoap.deviceapi.formats import (CBOR_FORMAT, CBOR_IN_JSON, JSON_CODECS, JSON_IN_JSON, OCTET_STREAM,
                                      PROTOBUF_ACCEPT, PROVISION_ACCEPT, PROVISION_PROTOBUF, READS_CBOR, WRITES_CBOR,
                                      ProtobufCodec)
from tbcoap.errors import (BadRequest, NoRule, NotFound, RuleTimeout, ShuttingDown, StoreUnavailable, TooManyKeys,
                           Unauthorized)
from tbcoap.models import DEVICE_API_FEATURES, INT64_MAX
from tbcoap.redact import mask_token
from tbcoap.services.values import parse_json

log = Logger()

TOO_MANY_REQUESTS = (4 << 5) | 29
OBSERVE_RETRY = 60  # Max-Age (s) of a registration refused for want of room
MAX_KEPT_ROUTES = 8192  # routes of recent paths kept (about 3 MB); past it they start again
GET, POST = coap.GET, coap.POST
WELL_KNOWN = (
    b'</api/v1>;title="ThingsBoard device API: /api/v1/{token}/'
    b'(telemetry|attributes|rpc)";obs,</api/v1/provision>;ct=50'
)


class Feature:
    """A device-API feature (``/api/v1/{token}/{feature}``): its handler per method, and whether it
    takes an id after it (``/rpc/{id}``)."""

    __slots__ = ("name", "methods", "takes_id")

    def __init__(self, name, methods, takes_id=False):
        assert name in DEVICE_API_FEATURES, name
        self.name, self.methods, self.takes_id = name, methods, takes_id


class Routed:
    """Where one request goes, found once from its path and used by every later check:
    ``feature`` (a Feature's name, "provision" or "well-known"), the path's ``token`` (None on a
    tokenless path of a device known by its CoAPS session), the ``handler`` and the RPC ``rpc_id`` of a reply."""

    __slots__ = ("feature", "token", "handler", "rpc_id")

    def __init__(self, feature, token=None, handler=None, rpc_id=None):
        self.feature, self.token, self.handler, self.rpc_id = feature, token, handler, rpc_id

    def answers_with_body(self, code) -> bool:
        """True when this request's success answer has a body: where Accept matters (it must name a
        format the device's answers come in: 50 or 60 on a JSON profile, 42 on a PROTOBUF one)."""
        return code == GET or self.feature == "provision" or (self.feature == "rpc" and self.rpc_id is None)


WELL_KNOWN_ROUTE, PROVISION_ROUTE = Routed("well-known"), Routed("provision")


class DeviceApi:
    """Answers CoAP requests for /api/v1/... and /.well-known/core."""

    def __init__(self, core, observers, max_body=65536, device_limiter=None, peer_limiter=None,
                 provision_limiter=None):
        self.core = core
        self.observers = observers
        self.max_body = max_body
        self.device_limiter = device_limiter
        self.peer_limiter = peer_limiter
        self.provision_limiter = provision_limiter  # per source IP address, whatever the port
        self._cached_payloads = core.payloads.cached  # profile name -> its payload settings, or None
        self._routes = {}  # (path segments, method) -> Routed, at most MAX_KEPT_ROUTES
        self.features = {feature.name: feature for feature in (
            Feature("telemetry", {POST: self.post_telemetry}),
            Feature("attributes", {GET: self.get_attributes, POST: self.post_attributes}),
            Feature("rpc", {GET: self.get_rpc, POST: self.post_rpc}, takes_id=True),
            Feature("claim", {POST: self.post_claim}),
        )}
        self.ota = OtaDownloads(core)  # /fw and /sw (deviceapi/ota.py)

    def limiters(self):
        """``{name: RateLimiter}`` of the limits in force (device, peer, provision)."""
        named = (("device", self.device_limiter), ("peer", self.peer_limiter), ("provision", self.provision_limiter))
        return {name: limiter for name, limiter in named if limiter is not None}

    def __call__(self, request):
        routed = self._route(request)
        if isinstance(routed, coap.Message):
            return routed
        if routed is WELL_KNOWN_ROUTE:
            return self.well_known(request)
        if routed is PROVISION_ROUTE:
            return self.provision(request)
        who = self._who(request, routed.token)
        if type(who) is tuple:  # the usual: a device known on this node (cheaper than isinstance of Deferred)
            return self._identified(who, routed, request)
        who.addCallback(self._identified, routed, request)
        return who.addErrback(self._failed, request, routed)

    def _who(self, request, token):
        """``(device or None, rate-limit key)``, or a Deferred of it: over CoAPS the device whose
        certificate or pre-shared key the client's session was made with, if it is a device's; else
        the device of the path's token."""
        identify = getattr(request.protocol, "identify", None)
        identity = identify(request.remote) if identify is not None else None
        if identity is not None:
            device = self.core.devices.cached_session(identity)
            if device is not None:
                return device, identity.id
            d = self.core.devices.authenticate_session(identity)
            return d.addCallback(lambda found: (found, identity.id) if found is not None else self._by_token(token))
        return self._by_token(token)

    def _by_token(self, token):
        if token is None:
            return None, None
        device = self.core.devices.cached(token)
        if device is not None:
            return device, token
        return self.core.devices.authenticate(token).addCallback(lambda found: (found, token))

    @staticmethod
    def _unknown(token):
        if token is None:
            return error(coap.UNAUTHORIZED, "no device credential: a path without a token needs a CoAPS "
                                             "certificate or pre-shared key")
        return error(coap.UNAUTHORIZED, "unknown access token")

    def _identified(self, who, routed, request):
        device, key = who
        if device is None:
            return self._unknown(routed.token)
        return self._authorized(device, key, routed, request)

    def _route(self, request):
        """The path and method checks: an error answer, or the request's Routed (kept for the next
        request of the same path and method: a device sends the same few again and again)."""
        if not self.core.ready:
            return error(coap.SERVICE_UNAVAILABLE, "store not ready, retry later")
        key = (tuple(request.opt.uri_path), request.code)
        routes = self._routes
        routed = routes.get(key)
        if routed is None:
            routed = self._find_route(key[0], request.code)
            if isinstance(routed, Routed):
                if len(routes) >= MAX_KEPT_ROUTES:
                    routes.clear()
                routes[key] = routed
        return routed

    def _find_route(self, segments, code):
        try:
            path = [segment.decode("utf-8") for segment in segments]
        except UnicodeDecodeError:
            return error(coap.BAD_REQUEST, "path is not UTF-8")
        if path == [".well-known", "core"]:
            return WELL_KNOWN_ROUTE
        if len(path) < 2 or path[0] != "api" or path[1] != "v1":
            if path and path[0] in OTA_PATHS and len(path) <= 2:  # /fw/{token}, /sw/{token} (deviceapi/ota.py)
                return Routed(path[0], path[1] if len(path) == 2 else None, self.ota)
            return error(coap.NOT_FOUND, "not found")
        if (len(path) == 3 and path[2] == "provision") or (len(path) == 4 and path[3].lower() == "provision"):
            return PROVISION_ROUTE  # ThingsBoard reads /api/v1/{anything}/provision as provisioning too
        first = path[2].lower() if len(path) > 2 else ""
        if first in self.features and (len(path) == 3 or (len(path) == 4 and first == "rpc")):
            token, name, extra = None, first, path[3:]  # a CoAPS session's device: no token
        elif len(path) < 4:
            return error(coap.BAD_REQUEST, "expected /api/v1/{token}/{feature}")
        else:
            token, name, extra = path[2], path[3].lower(), path[4:]
        feature = self.features.get(name)
        if feature is None or len(extra) > feature.takes_id:
            return error(coap.BAD_REQUEST, f"unknown feature /{'/'.join(path[3:])}"[:60])
        rpc_id = None
        if extra:
            if not (extra[0].isascii() and extra[0].isdigit()):
                return error(coap.BAD_REQUEST, "rpc id must be an integer")
            digits = extra[0].lstrip("0") or "0"  # zero-padded ids are fine; int() of 5,000 digits is not
            if len(digits) > 19 or int(digits) > INT64_MAX:
                return error(coap.BAD_REQUEST, "rpc id out of range")
            rpc_id = int(digits)
        handler = feature.methods.get(code)
        if handler is None or (rpc_id is not None and code != POST):
            return error(coap.METHOD_NOT_ALLOWED, f"{name} does not take {_method(code)}")
        return Routed(name, token, handler, rpc_id)

    def precheck(self, request):
        """The checks that come before the size check (path, method, token), for the first
        block of a Block1 upload: None when they pass, else the answer (or a Deferred of either)."""
        routed = self._route(request)
        if isinstance(routed, coap.Message):
            return routed
        if routed is WELL_KNOWN_ROUTE:
            return error(coap.METHOD_NOT_ALLOWED, "only GET") if request.code != GET else None
        if routed is PROVISION_ROUTE:
            if request.code != POST:
                return error(coap.METHOD_NOT_ALLOWED, "provision takes POST only")
            return self._rate_limited(request, count=False, provisioning=True)
        who = self._who(request, routed.token)
        if isinstance(who, defer.Deferred):
            return who.addCallback(self._prechecked, request, routed).addErrback(self._failed, request, routed)
        return self._prechecked(who, request, routed)

    def _prechecked(self, who, request, routed):
        device, key = who
        return self._unknown(routed.token) if device is None else self._rate_limited(request, key, count=False)

    def _authorized(self, device, key, routed, request):
        self.core.activity.touch(device.id)
        answer = self._rate_limited(request, key)
        if answer is not None:
            return answer
        if routed.handler is self.ota:
            answer = self.ota(device, routed.feature, request)
            if isinstance(answer, defer.Deferred):
                answer.addErrback(self._failed, request, routed, device)
            return answer
        payloads = self._cached_payloads(device.type)
        if payloads is None:  # the profile's first request on this node (or since it changed)
            d = self.core.payloads.lookup(device.type)
            d.addCallback(self._serve, device, routed, request)
            return d.addErrback(self._failed, request, routed, device)
        return self._serve(payloads, device, routed, request)

    def _serve(self, payloads, device, routed, request):
        codec = self._check_body(request, routed, payloads.schemas)
        if isinstance(codec, coap.Message):
            return codec
        try:
            result = routed.handler(device, request, codec) if routed.rpc_id is None \
                else routed.handler(device, request, codec, routed.rpc_id)
        except Exception as failure:
            return self._error_answer(failure, request, routed, device)
        if isinstance(result, defer.Deferred):
            return result.addErrback(self._failed, request, routed, device)
        return result

    def _rate_limited(self, request, token=None, count=True, provisioning=False):
        """4.29 with Max-Age when the device token, the source address and port, or (provisioning)
        the source IP address is over its limit (``count`` False: only look, as for the first
        block of an upload)."""
        now = time.monotonic()
        checks = []
        if token is not None and self.device_limiter is not None:
            checks.append((self.device_limiter, token))
        if self.peer_limiter is not None:
            checks.append((self.peer_limiter, (request.remote[0], request.remote[1])))
        if provisioning and self.provision_limiter is not None:
            checks.append((self.provision_limiter, request.remote[0]))
        if not checks:
            return None
        wait = max(limiter.wait(key, now) for limiter, key in checks)
        if not wait:
            for limiter, key in checks:
                if count:
                    limiter.take(key, now)
            return None
        for limiter, _ in checks:
            limiter.refuse()
        answer = error(TOO_MANY_REQUESTS, "rate limit exceeded, retry after Max-Age seconds")
        answer.opt.addOption(coap.UintOption(coap.MAX_AGE, max(1, math.ceil(wait))))
        return answer

    def _check_body(self, request, routed, schemas):
        """Size (4.13), Content-Format (4.15), Observe (4.00) and Accept (4.06) checks for a device of
        a JSON profile (``schemas`` None) or a PROTOBUF one: the request's codec, or the error answer.
        A PROTOBUF device's Content-Format is not looked at (ThingsBoard ignores it)."""
        post = request.code == POST
        if post and len(request.payload) > self.max_body:
            answer = error(coap.REQUEST_ENTITY_TOO_LARGE, f"body over {self.max_body} bytes")
            answer.opt.addOption(coap.UintOption(coap.SIZE1, self.max_body))
            return answer
        opt = request.opt
        reads_cbor = READS_CBOR.get(opt.content_format) if post and schemas is None else False
        if reads_cbor is None:
            return error(coap.UNSUPPORTED_CONTENT_FORMAT, "send JSON or CBOR (Content-Format 50, 60, 0 or none)")
        if opt.observe is not None and request.code != GET:
            return error(coap.BAD_REQUEST, "Observe is only for GET")
        accept = opt.accept
        if accept is None and schemas is None:  # the usual request: JSON (or CBOR) in, JSON out
            return CBOR_IN_JSON if reads_cbor else JSON_IN_JSON
        if schemas is not None:
            if accept not in PROTOBUF_ACCEPT and routed.answers_with_body(request.code):
                return error(coap.NOT_ACCEPTABLE, "answers are Protobuf (Accept: 42)")
            return ProtobufCodec(schemas)
        writes_cbor = WRITES_CBOR.get(accept, False)
        if accept not in WRITES_CBOR and routed.answers_with_body(request.code):
            return error(coap.NOT_ACCEPTABLE, "answers are JSON or CBOR (Accept: 50 or 60)")
        return JSON_CODECS[reads_cbor, writes_cbor]

    def _failed(self, failure, request, routed=PROVISION_ROUTE, device=None):
        return self._error_answer(failure.value, request, routed, device, failure)

    def _error_answer(self, exc, request, routed=PROVISION_ROUTE, device=None, failure=None):
        if isinstance(exc, BadRequest):
            code = coap.REQUEST_ENTITY_TOO_LARGE if isinstance(exc, TooManyKeys) else coap.BAD_REQUEST
            return error(code, str(exc))
        if isinstance(exc, Unauthorized):
            return error(coap.UNAUTHORIZED, str(exc) or "unauthorized")
        if isinstance(exc, NotFound):
            return error(coap.NOT_FOUND, str(exc))
        if isinstance(exc, StoreUnavailable):
            return error(coap.SERVICE_UNAVAILABLE, "storage unavailable, retry later")
        if isinstance(exc, (RuleTimeout, ShuttingDown)):
            return error(coap.SERVICE_UNAVAILABLE, str(exc))
        if isinstance(exc, NoRule):
            return error(coap.NOT_IMPLEMENTED, str(exc))
        who = f"device {device.id}" if device is not None else f"token {mask_token(routed.token)}"
        log.failure("error answering {method} {feature} for {who}", failure,
                    method=_method(request.code), feature=routed.feature, who=who)
        return error(coap.INTERNAL_SERVER_ERROR, "internal server error")

    # -- features -------------------------------------------------------------

    def well_known(self, request):
        """GET /.well-known/core: the link format of the resources."""
        if request.code != GET:
            return error(coap.METHOD_NOT_ALLOWED, "only GET")
        if request.opt.observe is not None:
            return error(coap.BAD_REQUEST, "not observable")
        if request.opt.accept not in (None, LINK_FORMAT):
            return error(coap.NOT_ACCEPTABLE, "the resource list is link format (Accept: 40)")
        return response(coap.CONTENT, WELL_KNOWN, LINK_FORMAT)

    def provision(self, request):
        """POST /api/v1/provision (no token): 2.01 with the credentials, or 4.00 with the failure, in
        the request's format: JSON (or CBOR: Content-Format 60), else Protobuf (ThingsBoard's
        ProvisionDeviceRequestMsg: Content-Format 42, or a body that is not JSON)."""
        if request.code != POST:
            return error(coap.METHOD_NOT_ALLOWED, "provision takes POST only")
        answer = self._rate_limited(request, provisioning=True) or self._check_provision(request)
        if answer is not None:
            return answer
        try:
            codec, body = _provision_body(request)
            d = self.core.provisioning.provision(body)
        except Exception as failure:
            return self._error_answer(failure, request, PROVISION_ROUTE)
        d.addCallback(lambda result: response(coap.CREATED if result[0] else coap.BAD_REQUEST,
                                              codec.provision_answer(result[1]), codec.content_format))
        return d.addErrback(self._failed, request)

    def _check_provision(self, request):
        """Size, Content-Format, Observe and Accept of a provisioning request: None when fine."""
        if len(request.payload) > self.max_body:
            answer = error(coap.REQUEST_ENTITY_TOO_LARGE, f"body over {self.max_body} bytes")
            answer.opt.addOption(coap.UintOption(coap.SIZE1, self.max_body))
            return answer
        if request.opt.content_format not in READS_CBOR and request.opt.content_format != OCTET_STREAM:
            return error(coap.UNSUPPORTED_CONTENT_FORMAT, "send JSON, CBOR or Protobuf (Content-Format 50, 60, 42)")
        if request.opt.observe is not None:
            return error(coap.BAD_REQUEST, "Observe is only for GET")
        if request.opt.accept not in PROVISION_ACCEPT:
            return error(coap.NOT_ACCEPTABLE, "answers are JSON, CBOR or Protobuf (Accept: 50, 60 or 42)")
        return None

    def post_claim(self, device, request, codec):
        """POST /api/v1/T/claim {"secretKey"?,"durationMs"?}: 2.01 (first request wins until it expires)."""
        return _created(self.core.claims.request(device, request.payload, codec.claim))

    def post_telemetry(self, device, request, codec):
        """POST /api/v1/T/telemetry: 2.01 once committed."""
        return _created(self.core.telemetry.upload(device, request.payload, codec.telemetry))

    def post_attributes(self, device, request, codec):
        """POST /api/v1/T/attributes (client-side attributes): 2.01 once committed."""
        return _created(self.core.attributes.upload_client(device, request.payload, codec.attributes))

    def get_attributes(self, device, request, codec):
        """GET /api/v1/T/attributes?clientKeys=..&sharedKeys=..: 2.05, 4.04 if nothing found.

        With Observe=0: the full shared set, flat, then a notification per change.
        """
        if request.opt.observe == 0:
            observation = request.protocol.observe(request)
            if observation is None:
                return _too_many_observations()
            self.observers.add_attributes(device, observation, codec)
            d = self.core.attributes.shared_with_times(device)
            return d.addCallback(lambda found: response(coap.CONTENT, codec.shared_snapshot(found),
                                                        codec.content_format))
        client_keys, shared_keys = _attribute_query(request)
        multiple = len(client_keys or ()) + len(shared_keys or ()) > 1
        d = self.core.attributes.for_device(device, client_keys, shared_keys)
        return d.addCallback(_attributes_answer, codec, multiple)

    def get_rpc(self, device, request, codec):
        """GET /api/v1/T/rpc with Observe=0: 2.05 ``{}`` (an empty message in Protobuf), then one
        notification per RPC."""
        if request.opt.observe is None:
            return error(coap.BAD_REQUEST, "observe /rpc (Observe: 0) to receive RPCs")
        if request.opt.observe == 0:
            observation = request.protocol.observe(request)
            if observation is None:
                return _too_many_observations()
            self.observers.add_rpc(device, observation, codec)
        return response(coap.CONTENT, codec.rpc_registration, codec.content_format)

    def post_rpc(self, device, request, codec, request_id=None):
        """POST /api/v1/T/rpc/{id}: a reply (2.01); POST /api/v1/T/rpc: client-side RPC (2.05)."""
        if request_id is not None:
            return _created(self.core.rpc.reply(device, request_id, codec.rpc_reply(request.payload)))
        body = codec.client_rpc(request.payload)
        if not isinstance(body, dict) or not isinstance(body.get("method"), str) or not body["method"]:
            raise BadRequest('client RPC needs {"method": "..."}')
        d = self.core.rules.client_rpc(device, body)
        return d.addCallback(lambda answer: response(coap.CONTENT, codec.client_rpc_answer(answer),
                                                     codec.content_format))


def _provision_body(request):
    """``(codec, body)`` of a provisioning request: JSON tried first, then Protobuf, as ThingsBoard
    does (CBOR and Protobuf when the Content-Format says so); BadRequest when neither decodes."""
    content_format, payload = request.opt.content_format, request.payload
    if content_format == OCTET_STREAM:
        return PROVISION_PROTOBUF, PROVISION_PROTOBUF.provision(payload)
    codec = JSON_CODECS[content_format == CBOR_FORMAT, request.opt.accept == CBOR_FORMAT]
    if content_format == CBOR_FORMAT:
        return codec, codec.provision(payload)
    try:
        return codec, parse_json(payload)
    except BadRequest as not_json:
        try:
            return PROVISION_PROTOBUF, PROVISION_PROTOBUF.provision(payload)
        except BadRequest as not_protobuf:
            raise BadRequest(f"neither JSON ({not_json}) nor a ProvisionDeviceRequestMsg") from not_protobuf


def _too_many_observations():
    """5.03 with Max-Age: this address (or the node) has as many observations as it may hold."""
    answer = error(coap.SERVICE_UNAVAILABLE, "too many observations, retry after Max-Age seconds")
    answer.opt.addOption(coap.UintOption(coap.MAX_AGE, OBSERVE_RETRY))
    return answer


def _attributes_answer(found, codec, multiple):
    if not found:
        return error(coap.NOT_FOUND, "no such attributes")
    return response(coap.CONTENT, codec.attributes_answer(found, multiple), codec.content_format)


def _attribute_query(request):
    """``(client_keys, shared_keys)``: lists, or None where absent or empty."""
    lists = {}
    for segment in request.opt.uri_query:
        try:
            name, _, value = segment.decode("utf-8").partition("=")
        except UnicodeDecodeError:
            raise BadRequest("query is not UTF-8") from None
        if name in ("clientKeys", "sharedKeys"):
            keys = [key for key in value.split(",") if key]
            lists[name] = keys or None
    return lists.get("clientKeys"), lists.get("sharedKeys")


def _created(result):
    if result is None:
        return response(coap.CREATED)
    return result.addCallback(lambda _: response(coap.CREATED))


def _method(code):
    return coap.requests.get(code, f"method {code_text(code)}")
