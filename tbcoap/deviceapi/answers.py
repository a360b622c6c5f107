"""The device API's answers: JSON (Content-Format 50) and error diagnostics (Content-Format 0)."""

from txthings import coap

from tbcoap.coap.codec import response
from tbcoap.models import compact_json

TEXT, LINK_FORMAT, JSON_FORMAT = 0, 40, 50
MAX_DIAGNOSTIC = 96  # amplification: an error answer to an unauthenticated request stays small


def json_answer(body, code=coap.CONTENT) -> coap.Message:
    """A 2.05 (or ``code``) answer carrying ``body`` as compact JSON."""
    return response(code, compact_json(body).encode("utf-8"), JSON_FORMAT)


def error(code, text) -> coap.Message:
    """An error answer with a short UTF-8 diagnostic (Content-Format 0)."""
    payload = text.encode("utf-8")[:MAX_DIAGNOSTIC]
    return response(code, payload.decode("utf-8", "ignore").encode("utf-8"), TEXT)
