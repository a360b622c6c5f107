"""What a REST handler sees of one HTTP request: the node's services, who calls (``Principal``),
the query and the body, read with the checks every handler makes the same way."""

from __future__ import annotations

from urllib.parse import parse_qs

from twisted.internet import defer

from tbcoap.errors import BadRequest, NotFound
from tbcoap.models import DEVICE_SORT_PROPERTIES, INT64_MAX
from tbcoap.services.values import parse_json

MAX_PAGE_SIZE = 10_000


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
        if value > INT64_MAX:
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
        if not self.principal.may_act_for(device.customer_id):
            raise NotFound(f"device {device_id} not found")
        return device

    def customer(self, customer_id):
        """Check that this caller may act for the customer (the admin, or that customer's own key);
        NotFound for another customer, as for an id that does not exist."""
        if not self.principal.may_act_for(customer_id):
            raise NotFound(f"customer {customer_id} not found")
        return customer_id

    def device_query(self) -> dict:
        """ThingsBoard's ``textSearch``, ``sortProperty`` and ``sortOrder`` as store arguments."""
        sort_property = self.query.get("sortProperty") or "createdTime"
        if sort_property not in DEVICE_SORT_PROPERTIES:
            raise BadRequest(f"sortProperty must be one of {', '.join(DEVICE_SORT_PROPERTIES)}")
        order = (self.query.get("sortOrder") or "ASC").upper()
        if order not in ("ASC", "DESC"):
            raise BadRequest("sortOrder must be ASC or DESC")
        text = self.query.get("textSearch") or None
        if text is not None and any(ord(c) < 32 for c in text):
            raise BadRequest("textSearch must not contain control characters")
        return {"text_search": text, "sort_property": sort_property,
                "descending": order == "DESC"}

    def keys_param(self, name="keys"):
        """A comma-separated list parameter, or None when absent or empty."""
        keys = [k for k in self.query.get(name, "").split(",") if k]
        return keys or None
