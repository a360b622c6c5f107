"""Payload typing rules and per-request limits (docs/device-api.md)."""

import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tbcoap.errors import BadRequest
from tbcoap.models import KINDS, Json, kind_of
from tbcoap.services.values import (
    Limits,
    Number,
    parse_attributes,
    parse_json,
    parse_telemetry,
    type_value,
)

NOW = 1_700_000_000_000


def typed(literal: str):
    """The typed value of one JSON value literal, through the attributes path."""
    return parse_attributes(b'{"k":' + literal.encode() + b"}")["k"]


def rejected(payload: bytes, match: str | None = None):
    with pytest.raises(BadRequest, match=match) as info:
        parse_telemetry(payload, NOW)
    message = str(info.value)
    assert message and len(message.encode()) <= 96
    return message


# --- number literals ---------------------------------------------------------


@pytest.mark.parametrize(
    "literal, value, kind",
    [
        ("42", 42, "LONG"),
        ("-7", -7, "LONG"),
        ("0", 0, "LONG"),
        ("-0", 0, "LONG"),
        ("1e2", 100, "LONG"),
        ("1E2", 100, "LONG"),
        ("4.2e1", 42, "LONG"),
        ("1e+2", 100, "LONG"),
        ("4200e-2", 42, "LONG"),
        ("42.0", 42.0, "DOUBLE"),
        ("21.5", 21.5, "DOUBLE"),
        ("-0.5", -0.5, "DOUBLE"),
        ("1.25e1", 12.5, "DOUBLE"),
        ("1e-1", 0.1, "DOUBLE"),
        ("1e-400", 0.0, "DOUBLE"),
        ("9223372036854775807", 2**63 - 1, "LONG"),
        ("-9223372036854775808", -(2**63), "LONG"),
        ("9223372036854775808", "9223372036854775808", "STRING"),
        ("-9223372036854775809", "-9223372036854775809", "STRING"),
        ("1e30", "1e30", "STRING"),
        ("1.5E30", "1.5E30", "STRING"),
        ("9.223372036854775807e18", 2**63 - 1, "LONG"),
        ("9.223372036854775808e18", "9.223372036854775808e18", "STRING"),
        ("1e308", "1e308", "STRING"),
    ],
)
def test_number_literals(literal, value, kind):
    result = typed(literal)
    assert result == value
    assert kind_of(result) == kind
    assert type(result) in (bool, int, float, str)  # no Number leaks out


def test_exponent_integrality_is_decided_exactly_not_by_float():
    # 1.0000000000000001 rounds to 1.0 as a float, but its value is not integral
    result = typed("1.0000000000000001e0")
    assert kind_of(result) == "DOUBLE" and result == 1.0


def test_long_and_double_are_exact():
    assert typed("12345678901234567") == 12345678901234567  # not rounded via float
    assert typed("1.2345678901234567e16") == 12345678901234567


@pytest.mark.parametrize("literal", ["1e400", "-1e400", "1.5e309", "1" + "0" * 400 + ".0"])
def test_numbers_beyond_double_range_rejected(literal):
    assert rejected(b'{"k":' + literal.encode() + b"}", "range")


def test_huge_integer_literals():
    assert rejected(b'{"k":' + b"9" * 400 + b"}", "range")  # beyond double too
    assert rejected(b'{"k":' + b"9" * 5000 + b"}", "range")  # over Python's digit limit
    assert typed("9" * 300) == "9" * 300  # integral, finite, beyond 64 bits


# --- strings -----------------------------------------------------------------


@pytest.mark.parametrize(
    "text, value, kind",
    [
        ("0042", 42, "LONG"),
        ("-0", 0, "LONG"),
        ("-17", -17, "LONG"),
        ("9223372036854775807", 2**63 - 1, "LONG"),
        ("-9223372036854775808", -(2**63), "LONG"),
        ("21.5", 21.5, "DOUBLE"),
        ("-0.25", -0.25, "DOUBLE"),
        ("007.50", 7.5, "DOUBLE"),
        ("99999999999999999999", "99999999999999999999", "STRING"),
        ("9223372036854775808", "9223372036854775808", "STRING"),
        ("1.", "1.", "STRING"),
        (".5", ".5", "STRING"),
        ("+1", "+1", "STRING"),
        ("1e3", "1e3", "STRING"),
        ("-", "-", "STRING"),
        ("1.2.3", "1.2.3", "STRING"),
        ("12\n", "12\n", "STRING"),  # fullmatch, not match-with-$
        (" 12", " 12", "STRING"),
        ("١٢", "١٢", "STRING"),  # Arabic-Indic digits are not [0-9]
        ("", "", "STRING"),
        ("hello", "hello", "STRING"),
        ("true", "true", "STRING"),
    ],
)
def test_strings(text, value, kind):
    result = typed(json.dumps(text))
    assert result == value
    assert kind_of(result) == kind


def test_numeric_strings_beyond_limits_stay_strings():
    big = "1" + "0" * 400 + ".5"  # float() is inf
    assert typed(json.dumps(big)) == big
    digits = "0" * 5000 + "1"  # over Python's int digit limit
    assert typed(json.dumps(digits)) == digits


# --- other values ------------------------------------------------------------


def test_booleans():
    assert typed("true") is True
    assert typed("false") is False
    assert kind_of(typed("false")) == "BOOLEAN"


def test_null_is_skipped():
    assert parse_attributes(b'{"a":null,"b":1}') == {"b": 1}
    assert parse_telemetry(b'{"a":null}', NOW) == []
    assert type_value(None) is None


def test_nested_json_is_compact_and_keeps_numbers():
    result = typed('{ "a" : [1, 2.5, "x", null, true], "b" : {"c": 1.0, "d": 1e2} }')
    assert isinstance(result, Json) and kind_of(result) == "JSON"
    assert result == '{"a":[1,2.5,"x",null,true],"b":{"c":1.0,"d":100.0}}'
    assert json.loads(result)["a"][1] == 2.5


def test_nested_json_keeps_unicode_unescaped():
    result = typed('["\\u00e9t\\u00e9", "日本"]')
    assert result == '["été","日本"]'


def test_top_level_array_value_is_json():
    result = typed("[]")
    assert result == "[]" and kind_of(result) == "JSON"


def test_type_value_directly():
    assert type_value(7) == 7
    assert type_value("12") == 12
    assert type_value(2.5) == 2.5  # a plain float, not from parse_json
    assert type_value({"a": 1}) == Json('{"a":1}')
    with pytest.raises(BadRequest):
        type_value(float("nan"))
    with pytest.raises(BadRequest):
        type_value(float("inf"))
    with pytest.raises(TypeError):
        type_value(object())


# --- strict JSON -------------------------------------------------------------


def test_parse_json_floats_remember_literal():
    data = parse_json(b'{"a":4.20e1,"b":[1.50]}')
    assert isinstance(data["a"], Number) and data["a"].literal == "4.20e1"
    assert data["b"][0].literal == "1.50"
    assert json.dumps(data, separators=(",", ":")) == '{"a":42.0,"b":[1.5]}'


@pytest.mark.parametrize(
    "payload",
    [b'{"k":NaN}', b'{"k":Infinity}', b'{"k":-Infinity}', b'{"k":[NaN]}', b'{"k":{"x":Infinity}}'],
)
def test_nan_and_infinity_rejected(payload):
    assert "not allowed" in rejected(payload)


@pytest.mark.parametrize(
    "payload",
    [b'{"a":1,"a":2}', b'{"x":{"a":1,"a":1}}', b'[{"b":1},{"c":[{"a":1,"a":2}]}]'],
)
def test_duplicate_keys_rejected(payload):
    assert rejected(payload) == "duplicate key 'a'"


def test_duplicate_key_message_is_short():
    key = "k" * 200
    message = rejected(json.dumps({key: 1}).encode()[:-1] + b',"' + key.encode() + b'":2}')
    assert message.startswith("duplicate key 'kkk") and len(message) < 80
    wide = "é" * 100
    message = rejected(('{"%s":1,"%s":2}' % (wide, wide)).encode())
    assert message.startswith("duplicate key 'éé") and len(message.encode()) < 80


def test_same_key_in_different_objects_is_fine():
    assert parse_attributes(b'{"a":{"a":1},"b":{"a":2}}') == {"a": '{"a":1}', "b": '{"a":2}'}


@pytest.mark.parametrize(
    "payload",
    [
        b"{'a':1}",
        b"{a:1}",
        b'{"a":1,}',
        b'{"a":01}',
        b'{"a":1} x',
        b"",
        b"   ",
        b'{"a":.5}',
        b'{"a":+1}',
        b'{1:2}',  # keys can only ever be strings
        b'{"a":"\x01"}',  # raw control character in a string
    ],
)
def test_invalid_json_rejected(payload):
    assert rejected(payload).startswith("invalid JSON")


def test_invalid_utf8_rejected():
    assert rejected(b'{"a":"\xff"}') == "payload is not UTF-8"
    assert rejected(b'{"a":"\xc3"}') == "payload is not UTF-8"
    assert rejected('{"a":"x"}'.encode("utf-16")) == "payload is not UTF-8"


def test_valid_utf8_accepted():
    assert parse_attributes('{"clé":"été ✓"}'.encode()) == {"clé": "été ✓"}


def test_lone_surrogate_escape_rejected():
    assert "surrogate" in rejected(b'{"a":"\\ud800"}')
    assert "surrogate" in rejected(b'{"\\uDC00":1}')
    assert parse_attributes(b'{"a":"\\ud83d\\ude00"}') == {"a": "\U0001F600"}  # a valid pair


def test_deep_nesting_rejected():
    assert rejected(b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}") == "JSON nested too deeply"
    deep = b'{"a":' * 5000 + b"1" + b"}" * 5000
    assert rejected(deep) == "JSON nested too deeply"


def test_moderate_nesting_accepted():
    result = typed("[" * 50 + "]" * 50)
    assert result == "[" * 50 + "]" * 50


# --- telemetry shapes --------------------------------------------------------


def test_plain_object_uses_now():
    assert parse_telemetry(b'{"t":21.5,"on":true}', NOW) == [(NOW, "t", 21.5), (NOW, "on", True)]


def test_ts_and_values():
    payload = b'{"ts":1451649600512,"values":{"key1":"value1","key2":"value2"}}'
    assert parse_telemetry(payload, NOW) == [
        (1451649600512, "key1", "value1"),
        (1451649600512, "key2", "value2"),
    ]


def test_ts_and_values_ignores_other_keys():
    payload = b'{"ts":5,"extra":1,"values":{"a":1},"more":{"b":2}}'
    assert parse_telemetry(payload, NOW) == [(5, "a", 1)]


def test_ts_without_values_is_plain_data():
    assert parse_telemetry(b'{"ts":5,"a":1}', NOW) == [(NOW, "ts", 5), (NOW, "a", 1)]
    assert parse_telemetry(b'{"ts":"bad"}', NOW) == [(NOW, "ts", "bad")]


def test_values_without_ts_is_plain_data():
    assert parse_telemetry(b'{"values":{"a":1}}', NOW) == [(NOW, "values", '{"a":1}')]
    assert parse_telemetry(b'{"values":3}', NOW) == [(NOW, "values", 3)]


def test_array_of_objects_mixed():
    payload = b'[{"a":1},{"ts":7,"values":{"b":2.5}},{"ts":8},{"ts":"9","values":{"c":"x"}}]'
    assert parse_telemetry(payload, NOW) == [
        (NOW, "a", 1),
        (7, "b", 2.5),
        (NOW, "ts", 8),
        (9, "c", "x"),
    ]


def test_entries_keep_payload_order_including_repeats():
    payload = b'[{"ts":1,"values":{"a":1}},{"ts":1,"values":{"a":2}}]'
    assert parse_telemetry(payload, NOW) == [(1, "a", 1), (1, "a", 2)]


@pytest.mark.parametrize("payload", [b"[]", b"{}", b"[{}]", b'{"ts":1,"values":{}}', b"[{},{}]"])
def test_empty_stores_nothing(payload):
    assert parse_telemetry(payload, NOW) == []


@pytest.mark.parametrize("payload", [b"1", b'"x"', b"true", b"null", b"2.5"])
def test_telemetry_top_level_must_be_object_or_array(payload):
    assert "object or array" in rejected(payload)


@pytest.mark.parametrize(
    "payload", [b"[1]", b'[{"a":1},"x"]', b"[[]]", b"[null]", b'[{"a":1},[{"b":2}]]']
)
def test_array_items_must_be_objects(payload):
    assert "items must be objects" in rejected(payload)


@pytest.mark.parametrize(
    "values", [b"1", b"[]", b'[{"a":1}]', b'"x"', b"null", b"true"]
)
def test_values_must_be_an_object(values):
    assert "'values'" in rejected(b'{"ts":1,"values":' + values + b"}")


@pytest.mark.parametrize(
    "ts, expected",
    [
        (b"0", 0),
        (b"1451649600512", 1451649600512),
        (b'"123"', 123),
        (b'"000123"', 123),
        (b"9223372036854775807", 2**63 - 1),
    ],
)
def test_valid_ts(ts, expected):
    assert parse_telemetry(b'{"ts":' + ts + b',"values":{"a":1}}', NOW) == [(expected, "a", 1)]


@pytest.mark.parametrize(
    "ts",
    [
        b"-1",
        b"1.5",
        b"1.0",
        b"1e3",
        b'"abc"',
        b'""',
        b'"-1"',
        b'"1.5"',
        b'" 1"',
        b'"\xd9\xa1"',  # Arabic-Indic digit one
        b"null",
        b"true",
        b"false",
        b"[1]",
        b'{"a":1}',
        b"9223372036854775808",
        b'"9223372036854775808"',
        b'"' + b"9" * 5000 + b'"',
    ],
)
def test_invalid_ts_rejected(ts):
    assert "'ts'" in rejected(b'{"ts":' + ts + b',"values":{"a":1}}')


def test_bad_ts_in_array_rejects_whole_request():
    assert "'ts'" in rejected(b'[{"a":1},{"ts":-5,"values":{"b":1}}]')


# --- keys and limits ---------------------------------------------------------


def test_empty_key_rejected():
    assert rejected(b'{"":1}') == "empty key"
    assert rejected(b'{"ts":1,"values":{"":1}}') == "empty key"
    with pytest.raises(BadRequest, match="empty key"):
        parse_attributes(b'{"":1}')


def test_key_length():
    assert parse_telemetry(json.dumps({"k" * 255: 1}).encode(), NOW) == [(NOW, "k" * 255, 1)]
    assert parse_attributes(json.dumps({"é" * 255: 1}).encode()) == {"é" * 255: 1}  # characters
    assert "255 characters" in rejected(json.dumps({"k" * 256: 1}).encode())
    with pytest.raises(BadRequest, match="255 characters"):
        parse_attributes(json.dumps({"k" * 256: 1}).encode())


def test_key_length_is_configurable():
    limits = Limits(max_key_length=3)
    assert parse_attributes(b'{"abc":1}', limits) == {"abc": 1}
    with pytest.raises(BadRequest, match="over 3 characters"):
        parse_attributes(b'{"abcd":1}', limits)


def test_max_keys_counts_all_entries_across_the_array():
    limits = Limits(max_keys=3)
    ok = b'[{"ts":1,"values":{"a":1,"b":2}},{"ts":2,"values":{"a":3}}]'
    assert len(parse_telemetry(ok, NOW, limits)) == 3
    too_many = b'[{"ts":1,"values":{"a":1,"b":2}},{"ts":2,"values":{"a":3,"b":4}}]'
    with pytest.raises(BadRequest, match="over 3 keys"):
        parse_telemetry(too_many, NOW, limits)


def test_max_keys_default_is_1000():
    assert Limits().max_keys == 1000
    ok = json.dumps({f"k{i}": i for i in range(1000)}).encode()
    assert len(parse_telemetry(ok, NOW)) == 1000
    assert len(parse_attributes(ok)) == 1000
    too_many = json.dumps({f"k{i}": i for i in range(1001)}).encode()
    assert "over 1000 keys" in rejected(too_many)
    with pytest.raises(BadRequest, match="over 1000 keys"):
        parse_attributes(too_many)


def test_string_value_size_in_utf8_bytes():
    limits = Limits(max_string_bytes=8)
    assert parse_attributes(json.dumps({"a": "x" * 8}).encode(), limits) == {"a": "x" * 8}
    assert parse_attributes(json.dumps({"a": "éé"}).encode(), limits) == {"a": "éé"}
    with pytest.raises(BadRequest, match="over 8 bytes"):
        parse_attributes(json.dumps({"a": "x" * 9}).encode(), limits)
    with pytest.raises(BadRequest, match="over 8 bytes"):  # 5 characters, 10 bytes
        parse_attributes(json.dumps({"a": "ééééé"}, ensure_ascii=False).encode(), limits)
    with pytest.raises(BadRequest, match="over 8 bytes"):
        parse_telemetry(json.dumps({"a": "x" * 9}).encode(), NOW, limits)


def test_json_value_size_counts_compact_text():
    limits = Limits(max_string_bytes=9)
    assert parse_attributes(b'{"a": [ 1 , 2 , 3 , 4 ] }', limits) == {"a": "[1,2,3,4]"}
    with pytest.raises(BadRequest, match="over 9 bytes"):
        parse_attributes(b'{"a":[1,2,3,4,5]}', limits)


def test_default_string_limit():
    ok = "x" * 65536
    assert parse_attributes(json.dumps({"a": ok}).encode()) == {"a": ok}
    with pytest.raises(BadRequest, match="over 65536 bytes"):
        parse_attributes(json.dumps({"a": "€" * 21846}, ensure_ascii=False).encode())


def test_numeric_string_is_not_limited_as_a_string():
    assert parse_attributes(b'{"a":"00000000042"}', Limits(max_string_bytes=4)) == {"a": 42}


# --- attributes --------------------------------------------------------------


def test_attributes_typed():
    payload = b'{"fw":"1.2.3","count":"0042","ratio":0.5,"on":false,"cfg":{"x":1},"gone":null}'
    assert parse_attributes(payload) == {
        "fw": "1.2.3",
        "count": 42,
        "ratio": 0.5,
        "on": False,
        "cfg": '{"x":1}',
    }


@pytest.mark.parametrize("payload", [b"[]", b'[{"a":1}]', b"1", b'"x"', b"null", b"true"])
def test_attributes_must_be_an_object(payload):
    with pytest.raises(BadRequest, match="attributes must be a JSON object"):
        parse_attributes(payload)


def test_attributes_ts_values_is_not_special():
    result = parse_attributes(b'{"ts":1,"values":{"a":1}}')
    assert result == {"ts": 1, "values": '{"a":1}'}


def test_attributes_empty():
    assert parse_attributes(b"{}") == {}


# --- properties --------------------------------------------------------------

scalars = (
    st.floats(allow_nan=False, allow_infinity=False)
    | st.integers()
    | st.text(max_size=30)
    | st.from_regex(r"-?[0-9]{1,25}(\.[0-9]{1,5})?", fullmatch=True)
    | st.booleans()
    | st.none()
)
documents = st.dictionaries(
    st.text(max_size=12), scalars | st.lists(scalars, max_size=3), max_size=8
)


@given(documents)
def test_attributes_never_fail_unexpectedly(document):
    payload = json.dumps(document).encode()
    try:
        result = parse_attributes(payload)
    except BadRequest:
        return
    assert set(result) == {k for k, v in document.items() if v is not None}
    for key, value in result.items():
        assert kind_of(value) in KINDS
        original = document[key]
        if isinstance(original, bool):
            assert value is original
        elif isinstance(original, (int, float)) and kind_of(value) == "LONG":
            # exactly the literal's value: 5.05901510490523e+16 is LONG 50590151049052300
            assert value == Decimal(json.dumps(original))
        elif isinstance(original, (int, float)) and kind_of(value) == "DOUBLE":
            assert value == original
        elif isinstance(original, list):
            assert json.loads(value) == original


@given(st.lists(documents, max_size=4), st.integers(min_value=0, max_value=2**63 - 1))
def test_telemetry_never_fails_unexpectedly(documents, ts):
    payload = json.dumps([{"ts": ts, "values": d} for d in documents]).encode()
    try:
        entries = parse_telemetry(payload, NOW)
    except BadRequest:
        return
    assert len(entries) == sum(1 for d in documents for v in d.values() if v is not None)
    assert all(t == ts and kind_of(v) in KINDS for t, _, v in entries)
