"""Client for Talon.One's Integration API.

This package never imports Django, so it can be used (and imported quickly) anywhere;
:func:`from_settings` reads the ``TALONONE`` Django setting only when it is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import errors
from .core import DEFAULT_TIMEOUT, IntegrationClient, rfc3339
from .errors import (
    AuthenticationError,
    BadRequestError,
    ClientError,
    ConflictError,
    ConnectionError,
    MalformedResponseError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    TalonOneError,
    TimeoutError,
)

if TYPE_CHECKING:
    from . import types

__all__ = [
    "DEFAULT_TIMEOUT",
    "AuthenticationError",
    "BadRequestError",
    "ClientError",
    "ConflictError",
    "ConnectionError",
    "IntegrationClient",
    "MalformedResponseError",
    "NotFoundError",
    "RateLimitedError",
    "ServerError",
    "TalonOneError",
    "TimeoutError",
    "errors",
    "from_settings",
    "rfc3339",
    "types",
]


def from_settings(**overrides: Any) -> IntegrationClient:
    """Build a client from the ``TALONONE`` Django setting; keyword arguments override it."""
    from django_talonone.conf import settings  # imported here: the client stays Django-free

    kwargs: dict[str, Any] = {
        "timeout": settings.TIMEOUT,
        "user_agent": settings.USER_AGENT,
        "get_retries": settings.GET_RETRIES,
    }
    kwargs.update(overrides)
    base_url = kwargs.pop("base_url", settings.BASE_URL)
    api_key = kwargs.pop("api_key", settings.API_KEY)
    return IntegrationClient(base_url, api_key, **kwargs)


def __getattr__(name: str) -> Any:
    # `types` (the TypedDicts, only needed by type checkers and IDEs) costs 15-25 ms to import:
    # it is imported on first use, by `from django_talonone.client import types` or
    # `django_talonone.client.types`. Importing a submodule sets it as an attribute of this
    # package, so this runs once.
    if name == "types":
        import importlib

        return importlib.import_module(f"{__name__}.types")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "types"})
