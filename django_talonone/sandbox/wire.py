"""What the sandbox's HTTP layer and its domain layer hand each other.

The HTTP layer (``app.py``) routes a request to an operation of the reference, checks the API key
and the body's shape, and passes a :class:`Call` to the domain layer (``handlers.handle``), which
answers ``(status, body)`` or raises :class:`ApiError`. Neither side imports Django.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any


class ApiError(Exception):
    """An error answer in the API's envelope: ``{message, errors: [...], StatusCode}``."""

    def __init__(
        self,
        status: int,
        message: str,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or []

    def body(self) -> dict[str, Any]:
        """The JSON body Talon.One sends with this status."""
        return {"message": self.message, "errors": self.errors, "StatusCode": self.status}

    @classmethod
    def bad_field(cls, pointer: str, title: str, details: str = "") -> ApiError:
        """A 400 that names the offending body field by JSON pointer (``/cartItems/0/sku``)."""
        err = {"title": title, "source": {"pointer": pointer}}
        if details:
            err["details"] = details
        return cls(400, title if not details else f"{title}: {details}", [err])

    @classmethod
    def bad_parameter(cls, name: str, title: str) -> ApiError:
        """A 400 that names the offending query or path parameter."""
        return cls(400, title, [{"title": title, "source": {"parameter": name}}])

    @classmethod
    def not_found(cls, what: str) -> ApiError:
        """A 404 for an unknown entity, e.g. ``not_found("customer session 'abc'")``."""
        msg = f"{what} not found"
        return cls(404, msg, [{"title": msg, "source": {"resource": what}}])


@dataclass
class Call:
    """One decoded request for an operation."""

    operation: dict[str, Any]  # the entry of client.schema.OPERATIONS
    path: dict[str, Any]  # path parameters by wire name; ints already converted
    query: dict[str, list[str]]  # raw query values by wire name
    body: Any = None  # decoded JSON body, already checked against the body model
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased names
    received: datetime.datetime = field(
        default_factory=lambda: datetime.datetime.now(datetime.timezone.utc)
    )

    @property
    def name(self) -> str:
        """The operation's snake_case name (``update_customer_session_v2``)."""
        return self.operation["name"]

    def flag(self, wire_name: str, default: bool = False) -> bool:
        """A boolean query parameter (``dry``, ``runRuleEngine``)."""
        values = self.query.get(wire_name)
        if not values:
            return default
        return values[-1].lower() == "true"
