"""Request decoding and response encoding, as the Truss server does (TRUSS_CONTRACT.md §8-9).

numpy, msgpack and pydantic are never imported here unless a payload needs them:
a value can only be a numpy array if the model already imported numpy.
"""

from __future__ import annotations

import json
import json.decoder
import json.encoder
import sys
import textwrap
import uuid
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, cast

from swell.modelserver._errors import InputParsingError


def is_binary(content_type: str) -> bool:
    """``application/octet-stream`` (parameters ignored) means msgpack in and out."""
    return content_type.partition(";")[0].strip().lower() == "application/octet-stream"


# ---------------------------------------------------------------- JSON


def _numpy_default(obj: Any) -> Any:
    np = sys.modules.get("numpy")
    if np is not None:
        if isinstance(obj, np.integer):
            return int(obj)
        if isinstance(obj, np.floating):
            return float(obj)
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


# Same output as json.dumps(result, cls=DeepNumpyEncoder): default separators, NaN allowed.
_ENCODER = json.JSONEncoder(default=_numpy_default)
# _ENCODER's own C encoder, made once rather than per call (JSONEncoder.iterencode
# makes one each time): the same arguments, and its circular-reference markers
# emptied after a failed call (a successful one leaves them empty).
_MARKERS: dict[int, Any] = {}
_MAKE_ENCODER = cast(Any, json.encoder).c_make_encoder  # None where _json's C part is missing
_C_ENCODE = (
    _MAKE_ENCODER(
        _MARKERS, _ENCODER.default, json.encoder.encode_basestring_ascii, None,
        _ENCODER.key_separator, _ENCODER.item_separator, False, False, True,
    )
    if _MAKE_ENCODER is not None
    else None
)
_CONTAINERS = (dict, list)


def encode_json(result: Any) -> bytes:
    if type(result) in _CONTAINERS and _C_ENCODE is not None:  # the usual answer: _ENCODER.encode's own steps
        try:
            chunks = _C_ENCODE(result, 0)
        except BaseException:
            _MARKERS.clear()
            raise
        return "".join(chunks).encode()
    if is_pydantic_instance(result):
        # Truss calls ``result.json()``; in pydantic v2 that is a deprecated alias of this.
        dump = getattr(result, "model_dump_json", None) or result.json
        return cast(bytes, dump().encode())
    return _ENCODER.encode(result).encode()


# Python's JSON parser recurses once per level and stops near the interpreter's
# recursion limit (1,000): past it a body is refused as a client error.
MAX_JSON_DEPTH = 1000


_DECODER = json.JSONDecoder()  # json.loads's own (no arguments)
_SCAN = cast(Any, _DECODER).scan_once
_SPACE = cast(Any, json.decoder).WHITESPACE.match


def _loads_object(text: str) -> Any:
    """``json.loads`` of a text that starts with ``{``: its decode and raw_decode, inline."""
    try:
        value, end = _SCAN(text, 0)
    except StopIteration as err:
        raise json.JSONDecodeError("Expecting value", text, err.value) from None
    end = _SPACE(text, end).end()
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return value


def decode_json(body: bytes) -> Any:
    try:
        if body[:1] == b"{" and body[1:2] != b"\x00":
            # json.loads would find UTF-8 here (json.detect_encoding) and decode the same way
            return _loads_object(body.decode("utf-8", "surrogatepass"))
        return json.loads(body)
    except json.JSONDecodeError as e:
        raise InputParsingError(f"Invalid JSON payload: {e}") from e
    except RecursionError as e:
        raise InputParsingError(f"Invalid JSON payload: nested more than {MAX_JSON_DEPTH} levels deep") from e
    except UnicodeDecodeError as e:
        raise InputParsingError(f"Invalid JSON payload: {e}") from e
    except ValueError as e:  # an integer past Python's int_max_str_digits
        raise InputParsingError(f"Invalid JSON payload: {_too_many_digits(e)}") from e


def _too_many_digits(error: ValueError) -> str:
    limit = sys.get_int_max_str_digits()
    if "integer string conversion" in str(error) and limit:
        return f"a number has more than {limit} digits"
    return str(error)


# ---------------------------------------------------------------- pydantic


def is_pydantic_instance(obj: Any) -> bool:
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(obj, pydantic.BaseModel)


def format_validation_error(exc: Any) -> str:
    parts = ["Input Parsing Error:" if exc.error_count() == 1 else "Input Parsing Errors:"]
    try:
        for error in exc.errors(include_url=False, include_input=False):
            loc = "".join(
                (("." if i > 0 else "") + x) if isinstance(x, str) else f"[{x}]"
                for i, x in enumerate(error["loc"])
            )
            msg = error["msg"] or str({k: v for k, v in error.items() if k != "loc"})
            parts.append(textwrap.indent(f"`{loc}`: {msg}.", "  "))
    except Exception:
        return f"Input Parsing Error, {exc}"
    return "\n".join(parts)


def validate_input(input_type: Any, body: bytes | None, value: Any = None) -> Any:
    """Validate a JSON body (or an already-decoded msgpack value) into ``input_type``."""
    import pydantic

    try:
        if body is not None:
            return input_type.model_validate_json(body)
        return input_type.model_validate(value)
    except pydantic.ValidationError as e:
        raise InputParsingError(format_validation_error(e)) from e


# ---------------------------------------------------------------- msgpack


def _np_encode(obj: Any) -> Any:
    np = sys.modules.get("numpy")
    if np is not None:
        if isinstance(obj, np.ndarray):
            if obj.dtype.kind == "V":
                kind, descr = b"V", obj.dtype.descr
            else:
                kind, descr = b"", obj.dtype.str
            data = obj.data if obj.flags["C_CONTIGUOUS"] else obj.tobytes()
            return {b"nd": True, b"type": descr, b"kind": kind, b"shape": obj.shape, b"data": data}
        if isinstance(obj, (np.bool_, np.number)):
            return {b"nd": False, b"type": obj.dtype.str, b"data": obj.data}
    if isinstance(obj, complex):
        return {b"complex": True, b"data": repr(obj)}
    return obj


def _np_decode(obj: dict[Any, Any]) -> Any:
    try:
        if b"nd" in obj:
            import numpy as np

            if obj[b"nd"] is True:
                if obj.get(b"kind") == b"V":
                    descr = [tuple(t.decode() if isinstance(t, bytes) else t for t in d) for d in obj[b"type"]]
                else:
                    descr = obj[b"type"]
                return np.ndarray(buffer=obj[b"data"], dtype=np.dtype(descr), shape=obj[b"shape"])
            return np.frombuffer(obj[b"data"], dtype=np.dtype(obj[b"type"]))[0]
        if b"complex" in obj:
            data = obj[b"data"]
            return complex(data.decode() if isinstance(data, bytes) else data)
    except KeyError:
        pass
    return obj


def _msgpack_numpy() -> tuple[Any, Any]:
    try:
        import msgpack_numpy  # type: ignore[import-not-found]

        return msgpack_numpy.encode, msgpack_numpy.decode
    except ImportError:
        return _np_encode, _np_decode


def _truss_encode(obj: Any) -> Any:
    if isinstance(obj, datetime):
        r = obj.isoformat()
        if r.endswith("+00:00"):
            r = r[:-6] + "Z"
        return {b"__dt_datetime_iso__": True, b"data": r}
    if isinstance(obj, date):
        return {b"__dt_date_iso__": True, b"data": obj.isoformat()}
    if isinstance(obj, time):
        if obj.utcoffset() is not None:
            raise ValueError("Cannot represent timezone-aware times.")
        return {b"__dt_time_iso__": True, b"data": obj.isoformat()}
    if isinstance(obj, timedelta):
        return {b"__dt_timedelta__": True, b"data": (obj.days, obj.seconds, obj.microseconds)}
    if isinstance(obj, Decimal):
        return {b"__decimal__": True, b"data": str(obj)}
    if isinstance(obj, uuid.UUID):
        return {b"__uuid__": True, b"data": str(obj)}
    return _msgpack_numpy()[0](obj)


def _truss_decode(obj: dict[Any, Any]) -> Any:
    if obj.get(b"nd") is True and obj.get(b"kind") == b"O":
        raise ValueError("unsupported payload")  # a pickled object array: refused
    try:
        if b"__dt_datetime_iso__" in obj:
            return datetime.fromisoformat(obj[b"data"])
        if b"__dt_date_iso__" in obj:
            return date.fromisoformat(obj[b"data"])
        if b"__dt_time_iso__" in obj:
            return time.fromisoformat(obj[b"data"])
        if b"__dt_timedelta__" in obj:
            days, seconds, microseconds = obj[b"data"]
            return timedelta(days=days, seconds=seconds, microseconds=microseconds)
        if b"__decimal__" in obj:
            return Decimal(obj[b"data"])
        if b"__uuid__" in obj:
            return uuid.UUID(obj[b"data"])
    except KeyError:
        pass
    return _msgpack_numpy()[1](obj)


def decode_msgpack(body: bytes) -> Any:
    try:
        import msgpack  # type: ignore[import-untyped]
    except ImportError as e:  # not a Swell dependency; the Truss image always has it
        raise InputParsingError("msgpack bodies need the `msgpack` package in the replica's environment") from e
    try:
        return msgpack.unpackb(body, object_hook=_truss_decode)
    except Exception as e:
        raise InputParsingError(f"Invalid msgpack payload: {_msgpack_problem(e)}") from e


# msgpack's errors that say nothing but their class name.
_MSGPACK_PROBLEMS = {
    "FormatError": "not msgpack (a byte no msgpack value starts with)",
    "StackError": "nested too deep",
}


def _msgpack_problem(error: Exception) -> str:
    return str(error) or _MSGPACK_PROBLEMS.get(type(error).__name__, type(error).__name__)


def encode_msgpack(result: Any) -> bytes:
    if is_pydantic_instance(result):
        result = result.model_dump(mode="python")
    if isinstance(result, bytes):
        return result
    import msgpack

    return cast(bytes, msgpack.packb(result, default=_truss_encode))
