"""Typed values in the columns ``l, d, b, s, j``: one of them holds the value, the others are NULL."""

from __future__ import annotations

from tbcoap.errors import BadRequest
from tbcoap.models import Json

COLUMNS = "l, d, b, s, j"
_EMPTY = (None, None, None, None, None)


def columns(kind, data):
    """``(l, d, b, s, j)`` of a value that storekit encoded as ``(kind, data)``."""
    if kind == "LONG":
        return data, None, None, None, None
    if kind == "DOUBLE":
        return None, data, None, None, None
    if kind == "BOOLEAN":
        return None, None, bool(data), None, None
    check_text(data)
    if kind == "JSON":
        return None, None, None, None, data
    return None, None, None, data, None


def value(l, d, b, s, j):  # noqa: E741  (the column names)
    """The typed value of a row's five value columns."""
    if l is not None:
        return l
    if d is not None:
        return d
    if b is not None:
        return b
    if s is not None:
        return s
    if j is not None:
        return Json(j)
    raise ValueError("a stored value with no value column set")


def check_text(text):
    """BadRequest for text PostgreSQL cannot keep (a NUL character, a lone surrogate)."""
    if "\x00" in text:
        raise BadRequest("text with a NUL character (\\u0000) cannot be stored")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("text that is not valid Unicode (a lone surrogate) cannot be stored") from None
