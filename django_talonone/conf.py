"""The ``TALONONE`` settings dict: defaults, lazy access, reload on ``setting_changed``.

Nothing here reads Django's settings at import time; the first attribute access does, and
``override_settings`` / pytest-django's ``settings`` fixture take effect at once.
"""

from __future__ import annotations

from typing import Any

from django.core.signals import setting_changed

__all__ = ["DEFAULTS", "TalonOneSettings", "settings"]

#: Every key ``TALONONE`` accepts, with its default.
DEFAULTS: dict[str, Any] = {
    # Your deployment's base URL, e.g. "https://mycompany.europe-west1.talon.one".
    "BASE_URL": "",
    # An Integration API key (Talon.One: Account > Tools > Integration API keys).
    "API_KEY": "",
    # Seconds: one number, or a (connect, read) pair.
    "TIMEOUT": (3.05, 10.0),
    # The Talon.One Application the API key belongs to (informational; shown in admin).
    "APPLICATION_ID": None,
    # User-Agent sent with every request; None = "django-talonone/<version> ...".
    "USER_AGENT": None,
    # How often an idempotent GET is retried on 5xx, 429 and connection errors.
    "GET_RETRIES": 2,
    # --- the push pipeline ---
    # Dotted path of the ShopAdapter subclass that turns the shop's objects into payloads.
    "ADAPTER": "django_talonone.adapters.ShopAdapter",
    # "inline": pushes run in-process right after the shop's transaction commits (no Celery);
    # "celery": a Celery task (django_talonone.push) sends them.
    "DISPATCH": "inline",
    # Extra options for apply_async of the push task (queue, priority, ...).
    "TASK_OPTIONS": {},
    # Pushes a worker claims, sends and mirrors together (heads of distinct keys); 1 = one key at
    # a time.
    "BATCH_SIZE": 200,
    # Requests a worker keeps in flight at once while sending a batch (distinct keys only).
    "SEND_CONCURRENCY": 4,
    # Attempts before a push is dead-lettered; retry delays grow from BASE to MAX (seconds).
    "MAX_ATTEMPTS": 8,
    "RETRY_BASE_DELAY": 2.0,
    "RETRY_MAX_DELAY": 600.0,
    # Requests per second this process may send (None = no limit); keep the sum of all
    # processes under your account's limit.
    "RATE_LIMIT": None,
    # Seconds evaluate_cart() waits for Talon.One before falling back to the mirrored effects.
    "EVALUATE_TIMEOUT": 2.0,
    # PostgreSQL: commit the record of a successful send (the mirrored answer, the row marked
    # done) and evaluate_cart()'s in-flight row of an open cart without waiting for the disk
    # (synchronous_commit off for those transactions only). A database crash can undo the last
    # fraction of a second of them; the sweep and the next update put things right, and no push
    # is lost or sent twice. False: every commit waits. See docs/operations.md.
    "ASYNC_COMMIT": True,
    # Seconds after which an in-flight push whose worker vanished is reclaimed by the sweep.
    "IN_FLIGHT_TIMEOUT": 300.0,
    # Which parts of the answer to ask for on session updates (responseContent).
    "RESPONSE_CONTENT": [
        "customerSession",
        "customerProfile",
        "loyalty",
        "coupons",
        "triggeredCampaigns",
    ],
    # What evaluate_cart() asks for (None: RESPONSE_CONTENT without customerProfile and
    # loyalty, which the outbox's pushes bring). Add them to refresh the profile, its loyalty
    # balances (tentative ones included) and loyalty_updated on every cart-page evaluation.
    "EVALUATE_RESPONSE_CONTENT": None,
    # Loyalty programs whose balances are fetched into LoyaltyBalance after a session closes.
    "LOYALTY_PROGRAM_IDS": [],
    # Model-signal mode: the shop's order model ("shop.Order"), its status field, and a map of
    # status values to session states, e.g. {"placed": "open", "paid": "closed",
    # "cancelled": "cancelled", "returned": "partially_returned"}. Each save that moves an order
    # to a status mapped to a different state sends one signal: open → order_placed (or
    # order_reopened after closed), closed → order_paid, cancelled → order_cancelled,
    # partially_returned → order_returned (everything left). Unmapped statuses send nothing.
    # See docs/integrating.md and django_talonone.model_signals.
    "ORDER_MODEL": None,
    "ORDER_STATUS_FIELD": "status",
    "ORDER_STATUS_MAP": {},
}


class TalonOneSettings:
    """Attribute access to ``settings.TALONONE`` with defaults, e.g. ``settings.TIMEOUT``."""

    def __init__(self, defaults: dict[str, Any] | None = None) -> None:
        self.defaults = defaults or DEFAULTS
        self._cache: dict[str, Any] = {}

    @property
    def user_settings(self) -> dict[str, Any]:
        """The raw ``TALONONE`` dict from Django's settings ({} when absent)."""
        from django.conf import settings as django_settings

        value = getattr(django_settings, "TALONONE", None)
        return value if isinstance(value, dict) else {}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in self.defaults:
            raise AttributeError(f"{name!r} is not a TALONONE setting")
        try:
            return self._cache[name]
        except KeyError:
            pass
        value = self.user_settings.get(name, self.defaults[name])
        if name == "TIMEOUT":
            value = normalise_timeout(value)
        self._cache[name] = value
        return value

    def reload(self) -> None:
        """Forget cached values; the next access reads Django's settings again."""
        self._cache.clear()


def normalise_timeout(value: Any) -> Any:
    """A number becomes a (connect, read) pair; anything else is returned as is for checks."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value), float(value))
    if isinstance(value, list):
        return tuple(value)
    return value


settings = TalonOneSettings()


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting == "TALONONE":
        settings.reload()


setting_changed.connect(_reload)
