"""JSON for the hot paths: orjson when it is installed (it is a dependency on CPython), else the
standard library, with the same results.

Reading and writing JSON was a quarter of a push worker's CPU time: the answer's 5 kB, the mirror's
rows read back (a session's raw answer, its effects) and the documents it writes. orjson does the
same work several times faster. Where the two libraries differ, the standard library's answer is
the one given: :func:`loads` leaves to it any text with a run of 19 digits or more (orjson reads
integers beyond 64 bits as floats, losing digits) and anything orjson refuses (``NaN``), and
:func:`dumps` writes keys that are not strings as ``json.dumps`` does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

try:  # pragma: no cover - which branch runs depends on the environment
    import orjson
except ImportError:  # pragma: no cover
    orjson = None  # type: ignore[assignment]

#: Whether orjson is in use (the benches print it).
FAST = orjson is not None

# A run of 19 ASCII digits: a number that may not fit 64 bits (or a long digit string inside a
# JSON string, which costs only the fast path). Found by mapping every digit byte to 1 and the
# rest to 0 and searching for 19 ones: both steps run in C over the whole text at memory speed,
# some twenty times faster than a regular expression that looks at every position.
_DIGIT_BYTES = bytes(1 if 48 <= byte <= 57 else 0 for byte in range(256))
_LONG_RUN = b"\x01" * 19


def _has_long_number(data: str | bytes) -> bool:
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
    return raw.translate(_DIGIT_BYTES).find(_LONG_RUN) != -1


def loads(data: str | bytes) -> Any:
    """``json.loads(data)``; ValueError (``json.JSONDecodeError``) for what is not JSON."""
    if orjson is not None:
        try:
            if not _has_long_number(data):
                return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # not JSON, or JSON orjson does not take: the standard library decides
    return json.loads(data)


def dumps(value: Any, default: Callable[[Any], Any] | None = None) -> str:
    """``json.dumps(value, default=default, ensure_ascii=False, separators=(",", ":"))``."""
    if orjson is not None:
        try:
            return orjson.dumps(value, default=default, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:
            pass  # e.g. an int beyond 64 bits: the standard library decides
    return json.dumps(value, default=default, ensure_ascii=False, separators=(",", ":"))
