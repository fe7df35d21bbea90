"""Read a call's query parameters and shared body fields, answering the API's 400 when bad.

Query values arrive raw (lists of strings by wire name); these helpers convert them and name the
offending parameter in the error, as Talon.One does.
"""

from __future__ import annotations

import datetime
from typing import Any

from .values import parse_time
from .wire import ApiError, Call


def q_str(call: Call, name: str, default: str | None = None) -> str | None:
    """The last value of a string parameter, or ``default``."""
    values = call.query.get(name)
    return values[-1] if values else default


def q_bool(call: Call, name: str, default: bool = False) -> bool:
    """A boolean parameter (``true``/``false``; anything else is a 400)."""
    values = call.query.get(name)
    if not values:
        return default
    text = values[-1].lower()
    if text not in ("true", "false"):
        raise ApiError.bad_parameter(name, f"{name} must be true or false, got {values[-1]!r}")
    return text == "true"


def q_int(
    call: Call, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """An integer parameter within bounds."""
    values = call.query.get(name)
    if not values:
        return default
    try:
        value = int(values[-1])
    except ValueError:
        raise ApiError.bad_parameter(
            name, f"{name} must be an integer, got {values[-1]!r}"
        ) from None
    if minimum is not None and value < minimum:
        raise ApiError.bad_parameter(name, f"{name} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ApiError.bad_parameter(name, f"{name} must be at most {maximum}")
    return value


def q_time(call: Call, name: str) -> datetime.datetime | None:
    """An RFC 3339 time stamp parameter, or None when absent."""
    values = call.query.get(name)
    if not values:
        return None
    try:
        return parse_time(values[-1])
    except ValueError:
        raise ApiError.bad_parameter(
            name, f"{name} must be an RFC 3339 time stamp, got {values[-1]!r}"
        ) from None


def q_list(call: Call, name: str) -> list[str] | None:
    """A list parameter: repeated (``?a=1&a=2``) or comma-separated (``?a=1,2``); None if absent."""
    values = call.query.get(name)
    if not values:
        return None
    out: list[str] = []
    for value in values:
        out.extend(part for part in value.split(",") if part)
    return out


def q_silent(call: Call) -> bool:
    """The ``silent`` parameter: ``yes`` (the default: answer 204) or ``no``."""
    value = (q_str(call, "silent", "yes") or "yes").lower()
    if value not in ("yes", "no"):
        raise ApiError.bad_parameter("silent", f'silent must be "yes" or "no", got {value!r}')
    return value == "yes"


def response_content(
    body: Any, allowed: frozenset[str], pointer: str = "/responseContent"
) -> set[str]:
    """The parts ``responseContent`` asks for; a 400 naming the entry that is not allowed."""
    parts = body.get("responseContent") if isinstance(body, dict) else None
    if not parts:
        return set()
    for index, part in enumerate(parts):
        if part not in allowed:
            raise ApiError.bad_field(
                f"{pointer}/{index}",
                "Invalid responseContent value",
                f"{part!r} is not one of: {', '.join(sorted(allowed))}",
            )
    return set(parts)


def now_of(call: Call) -> datetime.datetime:
    """The moment the call was received, in UTC."""
    received = call.received
    if received.tzinfo is None:
        return received.replace(tzinfo=datetime.timezone.utc)
    return received
