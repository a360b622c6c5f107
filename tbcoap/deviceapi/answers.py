"""The device API's error answers: a short diagnostic (Content-Format 0).  Answers with a body
are encoded in the device's payload format (tbcoap.payloads)."""

from tbcoap.coap.codec import response

TEXT, LINK_FORMAT, JSON_FORMAT = 0, 40, 50
MAX_DIAGNOSTIC = 96  # amplification: an error answer to an unauthenticated request stays small


def error(code, text):
    """An error answer (a txThings Message) with a short UTF-8 diagnostic (Content-Format 0)."""
    payload = text.encode("utf-8")[:MAX_DIAGNOSTIC]
    return response(code, payload.decode("utf-8", "ignore").encode("utf-8"), TEXT)
