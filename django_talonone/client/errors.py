"""Errors raised by the Integration API client.

Every error says which operation failed, the HTTP method and path (ids included), the status and
the API's own message, and whether retrying can help (``retryable``). None of them ever holds the
API key: messages are built from the request line and the answer only.
"""

from __future__ import annotations

import datetime
import email.utils
from typing import Any

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "ClientError",
    "ConflictError",
    "ConnectionError",
    "MalformedResponseError",
    "NotFoundError",
    "RateLimitedError",
    "ServerError",
    "TalonOneError",
    "TimeoutError",
]


class TalonOneError(Exception):
    """Base class of every error the client raises."""

    #: Whether sending the same request again later can succeed.
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        operation: str = "",
        method: str = "",
        path: str = "",
        status: int | None = None,
        errors: list[dict[str, Any]] | None = None,
        body: Any = None,
        outcome_unknown: bool = False,
    ) -> None:
        self.message = message
        self.operation = operation
        self.method = method
        self.path = path
        self.status = status
        #: The API's ``errors[]`` list (each ``{title, details, source: {pointer|parameter|...}}``).
        self.errors: list[dict[str, Any]] = errors or []
        #: The decoded error body, or up to 500 characters of it when it was not JSON.
        self.body = body
        #: True when the request may have reached the API and been applied (read timeout,
        #: connection dropped mid-answer, 2xx with an unreadable body).
        self.outcome_unknown = outcome_unknown
        super().__init__(self._describe())

    def _describe(self) -> str:
        where = f"{self.operation} ({self.method} {self.path})" if self.operation else self.path
        status = f" -> {self.status}" if self.status is not None else ""
        text = f"{where}{status}: {self.message}"
        details = "; ".join(_error_line(e) for e in self.errors[:5] if isinstance(e, dict))
        return f"{text} [{details}]" if details else text

    def __reduce__(self) -> tuple[Any, ...]:
        # Celery and multiprocessing pickle exceptions; keep every attribute across the trip.
        return (_rebuild, (type(self), self.message, dict(self.__dict__)))


class ClientError(TalonOneError):
    """A 4xx answer: the request itself is wrong; sending it again will fail again."""


class BadRequestError(ClientError):
    """400: the API rejected the request; ``errors`` says which field or parameter."""


class AuthenticationError(ClientError):
    """401: the API key is missing, wrong or expired."""


class NotFoundError(ClientError):
    """404: the session, profile, program, card, audience or coupon does not exist."""


class ConflictError(TalonOneError):
    """409: another request for the same session or profile was in flight; retry later."""

    retryable = True


class RateLimitedError(TalonOneError):
    """429: too many requests; ``retry_after`` (seconds) says when to try again, if known."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


class ServerError(TalonOneError):
    """5xx: the API failed; the request may be retried."""

    retryable = True


class TimeoutError(TalonOneError):
    """No answer within the timeout. ``outcome_unknown`` is True when the request was sent."""

    retryable = True


class ConnectionError(TalonOneError):
    """The connection could not be made, or broke before an answer arrived."""

    retryable = True


class MalformedResponseError(TalonOneError):
    """The API answered success with a body that is not the JSON the operation returns."""

    retryable = True


def error_for_status(
    status: int,
    *,
    operation: str,
    method: str,
    path: str,
    body: Any,
    retry_after_header: str | None = None,
) -> TalonOneError:
    """Build the error for a non-success answer, reading the API's ``{message, errors}`` body."""
    message, errors = "", []
    if isinstance(body, dict):
        message = str(body.get("message") or "")
        raw = body.get("errors")
        errors = [e for e in raw if isinstance(e, dict)] if isinstance(raw, list) else []
    elif isinstance(body, str):
        message = body[:200]
    kwargs: dict[str, Any] = {
        "operation": operation,
        "method": method,
        "path": path,
        "status": status,
        "errors": errors,
        "body": body,
    }
    cls: type[TalonOneError]
    if status == 400:
        cls = BadRequestError
    elif status == 401:
        cls = AuthenticationError
    elif status == 404:
        cls = NotFoundError
    elif status == 409:
        cls = ConflictError
    elif status == 429:
        return RateLimitedError(
            message or "rate limited",
            retry_after=parse_retry_after(retry_after_header),
            **kwargs,
        )
    elif 500 <= status < 600:
        cls = ServerError
        # A 5xx on a write may have been applied before the failure.
        kwargs["outcome_unknown"] = method != "GET"
    elif 400 <= status < 500:
        cls = ClientError
    else:
        cls = TalonOneError
    return cls(message or f"unexpected status {status}", **kwargs)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds())


def _error_line(err: dict[str, Any]) -> str:
    source = err.get("source") or {}
    where = ""
    if isinstance(source, dict):
        where = next((f"{k}={v}" for k, v in source.items() if v), "")
    text = " - ".join(str(err[k]) for k in ("title", "details") if err.get(k))
    return f"{text} ({where})" if where else text


def _rebuild(cls: type[TalonOneError], message: str, state: dict[str, Any]) -> TalonOneError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    err.args = (err._describe(),)
    return err
