"""Body decoding/encoding and the error table (TRUSS_CONTRACT.md §8-10)."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import sys
import uuid

import numpy as np
import pytest

from swell.modelserver import _codec
from swell.modelserver._errors import (
    ClientGone,
    InputParsingError,
    ModelDefinitionError,
    ModelMethodNotImplemented,
    ModelNotReady,
    UserCodeError,
    error_reply,
)


@pytest.mark.parametrize(
    ("content_type", "binary"),
    [("application/octet-stream", True), ("Application/Octet-Stream; x=1", True),
     ("application/json", False), ("", False), ("text/plain", False)],
)
def test_is_binary(content_type: str, binary: bool) -> None:
    assert _codec.is_binary(content_type) is binary


def test_json_encoding_matches_json_dumps_with_numpy() -> None:
    value = {"a": np.arange(3), "f": np.float64(0.25), "i": np.int32(2), "n": float("nan"), "s": "é"}
    assert _codec.encode_json(value) == b'{"a": [0, 1, 2], "f": 0.25, "i": 2, "n": NaN, "s": "\\u00e9"}'
    with pytest.raises(TypeError, match="not JSON serializable"):
        _codec.encode_json(object())


def test_pydantic_result_is_its_json() -> None:
    import pydantic

    class Out(pydantic.BaseModel):
        a: int

    assert json.loads(_codec.encode_json(Out(a=1))) == {"a": 1}
    assert _codec.decode_msgpack(_codec.encode_msgpack(Out(a=1))) == {"a": 1}


@pytest.mark.parametrize("body", [b'{"a": 1}', b"[1]", b'"s"', b"3", b"null"])
def test_any_json_value_decodes(body: bytes) -> None:
    assert _codec.decode_json(body) == json.loads(body)


@pytest.mark.parametrize(
    "body",
    [b'{"a": [1, 2.5, "\\u00e9", null, true]}', b"{ }\n", b'{"a": 1} x', b'{"a": 1}{"b": 2}', b"{", b'{"a":}',
     b"{\xff}", b'{"a": "\xed\xa0\x80"}', b'{"a": NaN}', "{}".encode("utf-16-le"), "{}".encode("utf-16")],
)
def test_an_object_body_decodes_or_is_refused_as_json_loads_would(body: bytes) -> None:
    try:
        expected: object = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        with pytest.raises(InputParsingError) as refused:
            _codec.decode_json(body)
        assert str(refused.value) == f"Invalid JSON payload: {exc}"
    else:
        assert repr(_codec.decode_json(body)) == repr(expected)


def test_json_encoding_is_json_encoder_s_and_a_failure_leaves_nothing_behind() -> None:
    reference = json.JSONEncoder(default=_codec._numpy_default)
    shared = [1, "é"]
    for value in ({"a": shared, "b": shared}, [{1: 2.5, None: True}, float("inf")], {}, [], "s", 3):
        assert _codec.encode_json(value) == reference.encode(value).encode()
    with pytest.raises(TypeError):
        _codec.encode_json({"ok": shared, "bad": object()})
    assert _codec.encode_json({"again": shared}) == b'{"again": [1, "\\u00e9"]}'  # not taken for a cycle
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference detected"):
        _codec.encode_json(loop)


@pytest.mark.parametrize("body", [b"{bad", b"", b"\xff\xfe\x00"])
def test_invalid_json_is_an_input_parsing_error(body: bytes) -> None:
    with pytest.raises(InputParsingError, match="^Invalid JSON payload: "):
        _codec.decode_json(body)


def test_msgpack_round_trips_truss_types_and_numpy() -> None:
    value = {
        "dt": dt.datetime(2024, 5, 6, 7, 8, 9), "tz": dt.datetime(2024, 5, 6, tzinfo=dt.UTC),
        "d": dt.date(2024, 1, 1), "t": dt.time(1, 2, 3), "td": dt.timedelta(days=1, seconds=2, microseconds=3),
        "dec": decimal.Decimal("3.14"), "u": uuid.UUID(int=42), "b": b"\x00", "l": [1, "x", None],
    }
    assert _codec.decode_msgpack(_codec.encode_msgpack(value)) == value
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.int64(5)}
    back = _codec.decode_msgpack(_codec.encode_msgpack(arrays))
    assert back["a"].dtype == np.float32 and np.array_equal(back["a"], arrays["a"])
    assert back["s"] == 5


def test_tz_datetime_is_written_with_z() -> None:
    import msgpack

    raw = msgpack.unpackb(_codec.encode_msgpack(dt.datetime(2024, 1, 1, tzinfo=dt.UTC)))
    assert raw == {b"__dt_datetime_iso__": True, b"data": "2024-01-01T00:00:00Z"}


def test_bytes_result_is_sent_raw_and_bad_msgpack_is_a_parse_error() -> None:
    assert _codec.encode_msgpack(b"raw") == b"raw"
    with pytest.raises(InputParsingError):
        _codec.decode_msgpack(b"\xc1")
    with pytest.raises(InputParsingError):
        _codec.decode_msgpack(b"\x01\x02")  # extra data


def test_pickled_object_arrays_are_refused() -> None:
    import msgpack

    body = msgpack.packb({b"nd": True, b"kind": b"O", b"type": "|O", b"shape": [1], b"data": b""})
    with pytest.raises(InputParsingError, match="unsupported payload"):
        _codec.decode_msgpack(body)


def test_pydantic_validation_error_text() -> None:
    import pydantic

    class In(pydantic.BaseModel):
        a: int
        items: list[int]

    with pytest.raises(InputParsingError) as info:
        _codec.validate_input(In, b'{"a": "x", "items": [1, "y"]}')
    assert str(info.value).splitlines()[0] == "Input Parsing Errors:"
    assert "  `items[1]`: " in str(info.value)
    assert _codec.validate_input(In, None, {"a": 1, "items": []}) == In(a=1, items=[])


@pytest.mark.parametrize(
    ("exc", "status", "body", "code"),
    [
        (ModelNotReady("model"), 503, {"error": "Model with name model is not ready."}, b"600"),
        (InputParsingError("bad"), 400, {"error": "bad"}, b"700"),
        (UserCodeError("secret"), 500, {"error": "Internal Server Error (in model/chainlet)."}, b"600"),
        (ModelDefinitionError("x"), 412, {"error": "ModelDefinitionError: x"}, b"600"),
        (ModelMethodNotImplemented("nope"), 404, {"error": "nope"}, b"700"),
        (ClientGone("gone"), 499, {"error": "gone"}, b"600"),
        (KeyError("k"), 500, {"error": "Unhandled exception: KeyError: 'k'"}, b"500"),
    ],
)
def test_error_table(exc: Exception, status: int, body: dict, code: bytes) -> None:
    got_status, got_body, headers = error_reply(exc)
    assert (got_status, json.loads(got_body)) == (status, body)
    assert dict(headers) == {b"x-baseten-error-source": b"04", b"x-baseten-error-code": code}
    assert got_body.startswith(b'{"error":')  # compact, as FastAPI's JSONResponse writes it


def test_only_fastapi_http_exception_passes_through() -> None:
    import fastapi
    import starlette.exceptions

    status, body, headers = error_reply(fastapi.HTTPException(status_code=422, detail={"why": "x"}))
    assert (status, json.loads(body), dict(headers)[b"x-baseten-error-code"]) == (422, {"error": {"why": "x"}}, b"600")
    status, _, _ = error_reply(starlette.exceptions.HTTPException(status_code=418))
    assert status == 500


@pytest.mark.parametrize("depth", [2_000, 100_000])
def test_json_nested_too_deep_is_an_input_parsing_error_not_a_recursion_error(depth: int) -> None:
    with pytest.raises(InputParsingError, match="^Invalid JSON payload: nested more than 1000 levels deep$"):
        _codec.decode_json(b"[" * depth + b"]" * depth)


def test_an_object_nested_too_deep_is_an_input_parsing_error_too() -> None:
    with pytest.raises(InputParsingError, match="^Invalid JSON payload: nested more than 1000 levels deep$"):
        _codec.decode_json(b'{"a": ' * 2_000 + b"1" + b"}" * 2_000)


@pytest.mark.parametrize("body", [b"9" * 5000, b'{"a": ' + b"1" * 5000 + b"}", b"[-" + b"7" * 4301 + b"]"])
def test_an_integer_past_pythons_digit_limit_is_a_client_error(body: bytes) -> None:
    # int() refuses more than sys.get_int_max_str_digits() digits with a ValueError:
    # a 400 naming the problem, not a 500 "Unhandled exception".
    with pytest.raises(InputParsingError, match=rf"^Invalid JSON payload: a number has more than {sys.get_int_max_str_digits()} digits$"):
        _codec.decode_json(body)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"\xc1", "not msgpack"),
        (b"\x91" * 100_000 + b"\xc0", "nested too deep"),
        (b"\x01\x02", "extra data"),
        (b"", "incomplete input"),
        (b"\xdd\xff\xff\xff\xff", "exceeds max_array_len"),
    ],
)
def test_bad_msgpack_says_it_is_msgpack_and_what_is_wrong(body: bytes, says: str) -> None:
    with pytest.raises(InputParsingError, match="^Invalid msgpack payload: ") as refused:
        _codec.decode_msgpack(body)
    assert says in str(refused.value)
