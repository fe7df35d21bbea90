"""Receivers: each lifecycle signal the shop sends becomes a push in the outbox.

They run inside the shop's transaction, ask the shop adapter for ids and payloads, and call
:func:`~django_talonone.outbox.enqueue`; the push goes out once the shop's transaction commits.
A receiver never raises into the shop: when the adapter (or anything else) fails, the push is
recorded as ``failed`` with the error, ``push_failed`` is sent, and the shop's code carries on.

Decisions worth knowing:

- ``order_placed`` pushes the order's cart with the state left out: the session stays ``open``
  until ``order_paid`` closes it.
- ``customer_updated`` runs the rule engine (``runRuleEngine=true``), so that one call brings
  back the profile, its audiences and its loyalty to mirror, and campaigns that react to profile
  changes fire, as they do for Talon.One's own connectors.
- ``event_tracked`` sends TrackEventV2, keyed on the profile. V2 events carry no session id; a
  ``session_id`` given with the signal is kept on the row (``payload["link"]``) for the admin.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from django.db import transaction
from django.dispatch import receiver

from . import outbox, signals
from .adapters import get_adapter
from .client.schema import response_content_values
from .conf import settings
from .outbox import make_link, make_payload, profile_key, session_key

__all__ = [
    "on_cart_updated",
    "on_customer_deleted",
    "on_customer_updated",
    "on_event_tracked",
    "on_order_cancelled",
    "on_order_paid",
    "on_order_placed",
    "on_order_reopened",
    "on_order_returned",
]

logger = logging.getLogger("django_talonone.receivers")

#: responseContent values each operation accepts (from Talon.One's OpenAPI files).
RETURN_CONTENT = response_content_values(outbox.RETURN_ITEMS)
PROFILE_CONTENT = response_content_values(outbox.UPDATE_PROFILE)
#: Talon.One keeps an Idempotency-Key of at most 255 characters.
MAX_IDEMPOTENCY_KEY = 255


@receiver(signals.cart_updated, dispatch_uid="talonone.cart_updated")
def on_cart_updated(sender: Any, cart: Any = None, **kwargs: Any) -> None:
    """Push the cart to its session, state left as it is."""
    _push("cart_updated", outbox.UPDATE_SESSION, partial(_session_update, obj=cart, state=None))


@receiver(signals.order_placed, dispatch_uid="talonone.order_placed")
def on_order_placed(sender: Any, order: Any = None, **kwargs: Any) -> None:
    """Push the order's cart to its session; it stays open until the order is paid."""
    _push("order_placed", outbox.UPDATE_SESSION, partial(_session_update, obj=order, state=None))


@receiver(signals.order_paid, dispatch_uid="talonone.order_paid")
def on_order_paid(sender: Any, order: Any = None, **kwargs: Any) -> None:
    """Close the order's session (coupons redeemed, loyalty points persist)."""
    _push("order_paid", outbox.UPDATE_SESSION, partial(_session_update, obj=order, state="closed"))


@receiver(signals.order_cancelled, dispatch_uid="talonone.order_cancelled")
def on_order_cancelled(sender: Any, order: Any = None, **kwargs: Any) -> None:
    """Cancel the order's session (Talon.One rolls its effects back)."""
    _push(
        "order_cancelled",
        outbox.UPDATE_SESSION,
        partial(_session_update, obj=order, state="cancelled"),
    )


@receiver(signals.order_returned, dispatch_uid="talonone.order_returned")
def on_order_returned(
    sender: Any,
    order: Any = None,
    lines: Any = None,
    return_id: str | None = None,
    **kwargs: Any,
) -> None:
    """Return items of the order's closed session, with an Idempotency-Key from the return id."""
    _push(
        "order_returned",
        outbox.RETURN_ITEMS,
        partial(_return, order=order, lines=lines, return_id=return_id),
    )


@receiver(signals.order_reopened, dispatch_uid="talonone.order_reopened")
def on_order_reopened(sender: Any, order: Any = None, **kwargs: Any) -> None:
    """Reopen the order's closed session."""

    def build(known: dict[str, str]) -> tuple[str, dict[str, Any]]:
        adapter = get_adapter()
        session_id = _keyed(adapter.session_id(_required(order, "order")), "session id")
        known["key"] = session_key(session_id)
        return session_key(session_id), make_payload(
            session_id, link=make_link(order=adapter.order_for_session(order))
        )

    _push("order_reopened", outbox.REOPEN_SESSION, build)


@receiver(signals.customer_updated, dispatch_uid="talonone.customer_updated")
def on_customer_updated(sender: Any, user: Any = None, **kwargs: Any) -> None:
    """Update the customer's profile (attributes, audiences) and mirror the answer."""

    def build(known: dict[str, str]) -> tuple[str, dict[str, Any]]:
        adapter = get_adapter()
        profile_id = _keyed(adapter.profile_id_for_user(_required(user, "user")), "profile id")
        known["key"] = profile_key(profile_id)
        body = dict(adapter.profile_payload(user))
        body.setdefault("responseContent", _content(PROFILE_CONTENT, "customerProfile"))
        payload = make_payload(
            profile_id,
            body=body,
            query={"run_rule_engine": True},
            link=make_link(user=user),
        )
        return profile_key(profile_id), payload

    _push("customer_updated", outbox.UPDATE_PROFILE, build)


@receiver(signals.customer_deleted, dispatch_uid="talonone.customer_deleted")
def on_customer_deleted(
    sender: Any, user: Any = None, integration_id: str | None = None, **kwargs: Any
) -> None:
    """Delete the customer's data in Talon.One, then purge the local mirror."""

    def build(known: dict[str, str]) -> tuple[str, dict[str, Any]]:
        profile_id = integration_id
        if not profile_id:
            if user is None:
                raise ValueError("customer_deleted needs user= or integration_id=")
            profile_id = get_adapter().profile_id_for_user(user)
        profile_id = _keyed(profile_id, "profile id")
        known["key"] = profile_key(profile_id)
        return profile_key(profile_id), make_payload(profile_id)

    _push("customer_deleted", outbox.DELETE_CUSTOMER, build)


@receiver(signals.event_tracked, dispatch_uid="talonone.event_tracked")
def on_event_tracked(
    sender: Any,
    event_type: str | None = None,
    profile_id: str | None = None,
    attributes: dict[str, Any] | None = None,
    session_id: str | None = None,
    **kwargs: Any,
) -> None:
    """Track a custom event on the customer's profile (TrackEventV2)."""

    def build(known: dict[str, str]) -> tuple[str, dict[str, Any]]:
        if not event_type:
            raise ValueError("event_tracked needs a non-empty event_type")
        pid = _keyed(profile_id, "profile id")
        known["key"] = profile_key(pid)
        body = {
            "profileId": pid,
            "type": str(event_type),
            "attributes": dict(attributes or {}),
            "responseContent": _content(PROFILE_CONTENT, "customerProfile"),
        }
        # silent="no": without it Talon.One answers 204 and there is nothing to mirror.
        payload = make_payload(
            body=body, query={"silent": "no"}, link=make_link(session=session_id)
        )
        return profile_key(pid), payload

    _push("event_tracked", outbox.TRACK_EVENT, build)


# --- helpers ------------------------------------------------------------------------------------


def _push(
    source: str,
    operation: str,
    build: Callable[[dict[str, str]], tuple[str, dict[str, Any]]],
) -> None:
    """Build (key, payload) and enqueue; any failure becomes a failed push, never an exception.

    ``build`` notes the key in ``known`` as soon as it has it, so that a failure further on is
    still recorded on the right session or profile.
    """
    known = {"key": "unknown"}
    try:
        # A savepoint: should the adapter (shop code) hit a database error, only the savepoint is
        # rolled back and the shop's own transaction stays usable.
        with transaction.atomic():
            key, payload = build(known)
            outbox.enqueue(operation, key, payload, source=source)
    except Exception as exc:
        logger.exception("%s: could not record the %s push", source, operation)
        outbox.record_failure(operation, known["key"], exc, source=source)


def _session_update(
    known: dict[str, str], obj: Any, state: str | None
) -> tuple[str, dict[str, Any]]:
    adapter = get_adapter()
    session_id = _keyed(adapter.session_id(_required(obj, "cart or order")), "session id")
    known["key"] = session_key(session_id)
    body = adapter.session_payload(obj, state=state)
    if not isinstance(body, dict) or not isinstance(body.get("customerSession"), dict):
        raise TypeError(
            f"{type(adapter).__name__}.session_payload() must return a dict with a "
            f"customerSession dict, got {type(body).__name__}"
        )
    payload = make_payload(
        session_id, body=body, link=make_link(order=adapter.order_for_session(obj))
    )
    return session_key(session_id), payload


def _return(
    known: dict[str, str], order: Any, lines: Any, return_id: str | None
) -> tuple[str, dict[str, Any]]:
    adapter = get_adapter()
    session_id = _keyed(adapter.session_id(_required(order, "order")), "session id")
    known["key"] = session_key(session_id)
    items = adapter.returned_items(order, lines)
    ident = str(return_id or adapter.return_id(order, lines))
    body = {
        "return": {"returnedCartItems": items},
        "responseContent": _content(RETURN_CONTENT, "customerSession"),
    }
    payload = make_payload(
        session_id,
        body=body,
        headers={"Idempotency-Key": _idempotency_key(ident)},
        link=make_link(order=adapter.order_for_session(order)),
    )
    return session_key(session_id), payload


def _required(value: Any, name: str) -> Any:
    if value is None:
        raise TypeError(f"the signal was sent without {name}=")
    return value


def _keyed(ident: Any, what: str) -> str:
    """The id as a string; an empty one is an error here rather than a 404 later."""
    text = "" if ident is None else str(ident)
    if not text:
        raise ValueError(f"the adapter gave an empty {what}")
    return text


def _content(allowed: frozenset[str], needed: str) -> list[str]:
    """RESPONSE_CONTENT narrowed to what the operation accepts, always with what we mirror."""
    chosen = [v for v in settings.RESPONSE_CONTENT or [] if v in allowed]
    return chosen if needed in chosen else [needed, *chosen]


def _idempotency_key(ident: str) -> str:
    if len(ident) <= MAX_IDEMPOTENCY_KEY:
        return ident
    # Too long for Talon.One: a digest is just as stable.
    return "sha256-" + hashlib.sha256(ident.encode()).hexdigest()
