"""Values crossing the sandbox boundary, as tagged JSON.

The sandboxed side encodes whatever its functions return; the trusted side decodes with a strict
decoder that can only build plain values of a fixed set of types (or handles to objects that stay
in the sandbox). So a program cannot smuggle an object with a forged `__eq__` into the tests: what
arrives is an `int`, a `list`, ... or a `Remote` handle, whose comparisons with plain values are
always False.

Encoding: JSON scalars (None, bool, int, float, str) stand for themselves; every other value is a
one-key object whose key is its tag, e.g. {"t": [1, 2]} is the tuple (1, 2).
"""

from __future__ import annotations

import collections
import decimal
import fractions
import json
import math
from typing import Any, Callable


_SCALARS = (type(None), bool, int, float, str)
# Builtin types travel by name (a test may pass `int` to the program, as in isinstance checks).
_BUILTIN_TYPES = {
    t.__name__: t
    for t in (bool, bytes, complex, dict, float, frozenset, int, list, object, set, str, tuple, type, range)
}
MAX_DEPTH = 200
# Larger ints travel as hexadecimal text: JSON (and int <-> decimal text) is limited to 4,300 digits
# and quadratic, while hex conversion is linear.
BIG_INT_BITS = 4096
# A larger range stays in the sandbox as a handle: as a value it would let the program hand the
# judge unbounded work (`sum(range(10**13))` runs in C, where no alarm can interrupt it).
MAX_RANGE_LEN = 1_000_000


class DecodeError(ValueError):
    """The sandboxed side sent something that is not a valid encoded value."""


def encode(value: Any, make_handle: Callable[[Any], dict]) -> Any:
    """Tagged-JSON form of `value`; objects that are not plain data become `make_handle(obj)`."""
    return _encode(value, make_handle, 0)


def _encode(value: Any, make_handle: Callable[[Any], dict], depth: int) -> Any:
    kind = type(value)
    if depth > MAX_DEPTH:
        return make_handle(value)
    if kind in _SCALARS:
        if kind is float and not math.isfinite(value):
            return {"nf": repr(value)}
        if kind is int and value.bit_length() > BIG_INT_BITS:
            return {"bi": format(value, "x")}
        return value
    rec = lambda items: [_encode(v, make_handle, depth + 1) for v in items]  # noqa: E731
    if kind is list:
        return {"l": rec(value)}
    if kind is tuple or (isinstance(value, tuple) and hasattr(kind, "_fields")):
        return {"t": rec(value)}  # namedtuples compare equal to tuples
    if kind is dict:
        return {"d": [rec(pair) for pair in value.items()]}
    if kind is set:
        return {"s": rec(value)}
    if kind is frozenset:
        return {"fs": rec(value)}
    if kind is bytes:
        return {"b": value.decode("latin-1")}
    if kind is complex:
        return {"c": [_encode(value.real, make_handle, depth + 1), _encode(value.imag, make_handle, depth + 1)]}
    if kind is collections.OrderedDict:
        return {"od": [rec(pair) for pair in value.items()]}
    if kind is collections.Counter:
        return {"ct": [rec(pair) for pair in value.items()]}
    if kind is collections.defaultdict:
        return {"d": [rec(pair) for pair in value.items()]}  # equal to the dict with the same items
    if kind is collections.deque:
        return {"dq": rec(value)}
    if kind is decimal.Decimal:
        return {"dec": str(value)}
    if kind is fractions.Fraction:
        return {"fr": [value.numerator, value.denominator]}
    if kind is range and _length(value) <= MAX_RANGE_LEN:
        return {"rg": [value.start, value.stop, value.step]}
    if kind is type and _BUILTIN_TYPES.get(getattr(value, "__name__", None)) is value:
        return {"bt": value.__name__}
    return make_handle(value)


def dumps(value: Any, make_handle: Callable[[Any], dict]) -> bytes:
    return json.dumps(encode(value, make_handle), separators=(",", ":")).encode()


def decode(data: Any, make_remote: Callable[[dict], Any]) -> Any:
    """Inverse of `encode`; handles become `make_remote(tag_object)`. Raises DecodeError."""
    return _decode(data, make_remote, 0)


def _decode(data: Any, make_remote: Callable[[dict], Any], depth: int) -> Any:
    if depth > MAX_DEPTH + 2:
        raise DecodeError("value nested too deeply")
    kind = type(data)
    if kind in _SCALARS:
        return data
    if kind is not dict or len(data) < 1:
        raise DecodeError(f"unexpected {kind.__name__} in encoded value")
    if "h" in data:
        return make_remote(data)
    if len(data) != 1:
        raise DecodeError("malformed tagged value")
    ((tag, payload),) = data.items()
    rec = lambda items: [_decode(v, make_remote, depth + 1) for v in _as_list(items)]  # noqa: E731
    pairs = lambda items: [tuple(_pair(rec(p))) for p in _as_list(items)]  # noqa: E731
    try:
        if tag == "l":
            return rec(payload)
        if tag == "t":
            return tuple(rec(payload))
        if tag == "d":
            return dict(pairs(payload))
        if tag == "s":
            return set(rec(payload))
        if tag == "fs":
            return frozenset(rec(payload))
        if tag == "b":
            return _as_str(payload).encode("latin-1")
        if tag == "c":
            real, imag = rec(payload)
            return complex(_as_number(real), _as_number(imag))
        if tag == "nf":
            if payload not in ("nan", "inf", "-inf"):
                raise DecodeError("bad non-finite float")
            return float(payload)
        if tag == "od":
            return collections.OrderedDict(pairs(payload))
        if tag == "ct":
            return collections.Counter(dict(pairs(payload)))
        if tag == "dq":
            return collections.deque(rec(payload))
        if tag == "dec":
            return decimal.Decimal(_as_str(payload))
        if tag == "fr":
            num, den = rec(payload)
            return fractions.Fraction(_as_int(num), _as_int(den))
        if tag == "rg":
            start, stop, step = rec(payload)
            value = range(_as_int(start), _as_int(stop), _as_int(step))
            if _length(value) > MAX_RANGE_LEN:
                raise DecodeError(f"range of more than {MAX_RANGE_LEN} items")
            return value
        if tag == "bi":
            return int(_as_str(payload), 16)
        if tag == "bt":
            if payload not in _BUILTIN_TYPES:
                raise DecodeError(f"not a builtin type: {payload!r}")
            return _BUILTIN_TYPES[payload]
    except DecodeError:
        raise
    except (TypeError, ValueError, ArithmeticError, decimal.InvalidOperation) as err:
        raise DecodeError(f"bad {tag!r} value: {err}") from None
    raise DecodeError(f"unknown tag {tag!r}")


def _length(value: range) -> float:
    try:
        return len(value)
    except OverflowError:  # more items than sys.maxsize
        return math.inf


def _as_list(payload: Any) -> list:
    if type(payload) is not list:
        raise DecodeError("expected a list payload")
    return payload


def _pair(items: list) -> list:
    if len(items) != 2:
        raise DecodeError("expected a key/value pair")
    return items


def _as_str(payload: Any) -> str:
    if type(payload) is not str:
        raise DecodeError("expected a string payload")
    return payload


def _as_int(value: Any) -> int:
    if type(value) is not int:
        raise DecodeError("expected an int")
    return value


def _as_number(value: Any) -> float:
    if type(value) not in (int, float):
        raise DecodeError("expected a number")
    return value


def loads(raw: bytes, make_remote: Callable[[dict], Any]) -> Any:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as err:
        raise DecodeError(f"invalid message: {err}") from None
    try:
        return decode(data, make_remote)
    except RecursionError:
        raise DecodeError("value nested too deeply") from None
