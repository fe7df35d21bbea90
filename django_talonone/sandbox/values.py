"""Small value conversions the sandbox's domain layer shares: time stamps, money and points.

Money is kept as integer cents and loyalty points as integer hundredths of a point, so that sums
and roll-backs are exact; they become JSON numbers (2 decimals) only when an answer is rendered.
"""

from __future__ import annotations

import datetime
import math
from functools import lru_cache
from typing import Any

UTC = datetime.timezone.utc
#: The far future used for "never expires" comparisons.
FOREVER = datetime.datetime(9999, 12, 31, tzinfo=UTC)


def fmt_time(value: datetime.datetime) -> str:
    """RFC 3339 in UTC with microseconds and a ``Z`` (``2024-05-01T10:00:00.000000Z``).

    One fixed width, so stored time stamps also sort correctly as strings.
    """
    if value.tzinfo is not None and value.utcoffset():
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@lru_cache(maxsize=4096)
def parse_time(text: str) -> datetime.datetime:
    """Parse an RFC 3339 time stamp (``Z`` or an offset; a bare date means midnight UTC).

    Raises ValueError on anything else.
    """
    if not isinstance(text, str) or len(text) < 10:
        raise ValueError(f"not an RFC 3339 time stamp: {text!r}")
    raw = text.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    if len(raw) == 10:
        raw += "T00:00:00+00:00"
    value = datetime.datetime.fromisoformat(raw)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def clone(value: Any) -> Any:
    """A deep copy of plain JSON data (dicts, lists, scalars); many times faster than
    ``copy.deepcopy``, which the hot path cannot afford."""
    kind = type(value)
    if kind is dict:
        return {k: clone(v) for k, v in value.items()}
    if kind is list:
        return [clone(v) for v in value]
    return value


def to_cents(amount: Any) -> int:
    """A JSON number of currency units as integer cents (half away from zero)."""
    value = float(amount)
    # the small nudge absorbs binary noise such as 19.99 * 100 == 1998.9999999999998
    cents = math.floor(abs(value) * 100 + 0.5 + 1e-7)
    return -cents if value < 0 else cents


def money(cents: int) -> float:
    """Integer cents as the JSON number the API sends (``1999`` -> ``19.99``)."""
    return cents / 100


def points(hundredths: int) -> int | float:
    """Integer hundredths of a point as a JSON number: whole points stay integers."""
    whole, rest = divmod(hundredths, 100)
    return whole if rest == 0 else hundredths / 100


def to_hundredths(value: Any) -> int:
    """A JSON number of points as integer hundredths."""
    return to_cents(value)


def percent_of(cents: int, basis_points: int) -> int:
    """``basis_points`` / 100 percent of ``cents``, rounded half up to a cent."""
    return (cents * basis_points + 5000) // 10000


def prorate(total: int, part: int, whole: int) -> int:
    """The share of ``total`` that ``part`` of ``whole`` carries, rounded half up."""
    if whole <= 0:
        return 0
    return (total * part * 2 + whole) // (whole * 2)
