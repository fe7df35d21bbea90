"""The synchronous path for the cart page: :func:`evaluate_cart`.

The cart page wants the discounts now. ``evaluate_cart`` sends the cart to Talon.One in the
caller's thread with a short timeout (``TALONONE["EVALUATE_TIMEOUT"]``, 2 s by default), mirrors
the answer and returns the effects. It never raises: when Talon.One is slow, down or refuses the
cart, it returns the effects mirrored last time, flagged ``stale``, and leaves the update in the
outbox so it is not lost.

One key at a time holds here too. The update is recorded as a push that is already in flight,
so no worker sends for the session meanwhile. If the session has earlier pushes still waiting
(a cart change a worker has not sent yet, a retry), the update queues behind them instead, and
the page gets a ``dry`` evaluation of the cart (Talon.One computes the effects and stores
nothing): fresh effects, but not mirrored, flagged ``preview``.

It asks Talon.One for what the cart page needs (:func:`evaluate_response_content`): by default
the session and its effects, without the customer's profile and loyalty parts, which come with
the outbox's pushes for the order (placed, paid, cancelled, returned) and the customer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.utils import timezone

from . import outbox
from .adapters import get_adapter
from .client import IntegrationClient
from .conf import settings
from .models import CustomerSession, Effect, Push

__all__ = ["Evaluation", "evaluate_cart", "evaluate_response_content"]

logger = logging.getLogger("django_talonone.services")

#: The parts of an answer that are the customer's, not the cart's: by default evaluate_cart
#: leaves them to the outbox's pushes.
PROFILE_PARTS = frozenset({"customerProfile", "loyalty"})


@dataclass
class Evaluation:
    """What :func:`evaluate_cart` found.

    ``effects`` are :class:`~django_talonone.models.Effect` rows, in the order Talon.One gave
    them. With ``preview`` they are unsaved instances built from a dry run (``pk`` is None);
    otherwise they are the session's current mirrored rows. ``stale`` says they are the last
    mirrored ones because the evaluation failed; ``error`` then says why (no secrets).
    """

    session: CustomerSession | None
    effects: list[Effect] = field(default_factory=list)
    stale: bool = False
    error: str | None = None
    #: The effects come from a dry run and were not mirrored.
    preview: bool = False
    #: The outbox row that carries this update (None for ``dry=True`` or when none was written).
    push: Push | None = None


def evaluate_cart(cart: Any, *, dry: bool = False, timeout: float | None = None) -> Evaluation:
    """Send the cart now (bounded by ``timeout`` seconds) and return its mirrored effects.

    Never raises: on failure the last mirrored effects come back with ``stale=True`` and the
    update stays queued. ``dry=True`` previews the cart's effects and stores nothing anywhere.
    """
    wait = float(timeout if timeout is not None else settings.EVALUATE_TIMEOUT)
    session_id: str | None = None
    try:
        adapter = get_adapter()
        session_id = str(adapter.session_id(cart))
        body = adapter.session_payload(cart)
        content = evaluate_response_content(body.pop("responseContent", None))
        if content:
            body["responseContent"] = content
        order = adapter.order_for_session(cart)
        link = outbox.make_link(order=order)
    except Exception as exc:
        logger.exception("evaluate_cart: the adapter could not describe the cart")
        if not dry:
            key = outbox.session_key(session_id) if session_id else "unknown"
            outbox.record_failure(outbox.UPDATE_SESSION, key, exc, source="evaluate_cart")
        return _stale(session_id, exc)
    try:
        client = outbox.get_client(wait)
        if dry:
            return _preview(client, session_id, body, wait)
        payload = outbox.make_payload(session_id, body=body, link=link)
        attempt = outbox.send_now(
            outbox.UPDATE_SESSION,
            outbox.session_key(session_id),
            payload,
            client=client,
            order=order,
            source="evaluate_cart",
            max_wait=wait,
        )
    except Exception as exc:
        logger.exception("evaluate_cart failed for %s", session_id)
        return _stale(session_id, exc)
    if attempt.outcome == "queued":
        evaluation = _preview(client, session_id, body, wait)
        evaluation.push = attempt.push
        return evaluation
    if not attempt.ok:
        evaluation = _stale(session_id, attempt.error)
        evaluation.push = attempt.push
        return evaluation
    session = attempt.session
    if session is None:
        # Sent, but mirroring the answer failed (the row says why): show what Talon.One said.
        answer = attempt.answer if isinstance(attempt.answer, dict) else {}
        local = _local_session(session_id)
        return Evaluation(
            session=local,
            effects=preview_effects(session_id, answer.get("effects"), session=local),
            preview=True,
            push=attempt.push,
        )
    # The mirror hands over the session's current effects as it wrote (or kept) them.
    effects = getattr(session, "_mirrored_effects", None)
    if effects is None:
        effects = _current_effects(session)
    return Evaluation(session=session, effects=list(effects), push=attempt.push)


def evaluate_response_content(asked: Sequence[str] | None) -> list[str]:
    """The ``responseContent`` :func:`evaluate_cart` asks for, given what the adapter's session
    body asks for (``asked``, normally ``TALONONE["RESPONSE_CONTENT"]``).

    ``TALONONE["EVALUATE_RESPONSE_CONTENT"]`` when it is set; otherwise ``asked`` without
    ``customerProfile`` and ``loyalty``. What a customer has (points, tier, audiences, totals)
    changes when an order is closed, cancelled or returned or the customer is updated, and
    those pushes ask for both parts. A cart change only moves the profile's last activity and
    the tentative balances ("after this order"), which the session's effects tell anyway.
    Leaving them out spares the cart page reading and writing the profile, its loyalty
    memberships and balances: about a quarter of evaluate_cart's own time.
    """
    chosen = settings.EVALUATE_RESPONSE_CONTENT
    if chosen is not None:
        return list(chosen)
    return [part for part in asked or [] if part not in PROFILE_PARTS]


def preview_effects(
    session_id: str, effects: Any, *, session: CustomerSession | None = None
) -> list[Effect]:
    """Unsaved :class:`Effect` instances for the effect dicts of an answer (for dry runs).

    ``session``: the mirrored session, when the caller has read it already.
    """
    # The mirror's own row builder, so a preview reads exactly like a mirrored evaluation.
    from .mirror import effect_rows

    if session is None:
        session = _local_session(session_id)
    if session is None:
        session = CustomerSession(integration_id=session_id)
    return effect_rows(session, list(effects or []), timezone.now())


# --- helpers ------------------------------------------------------------------------------------


def _preview(
    client: IntegrationClient, session_id: str, body: dict[str, Any], wait: float
) -> Evaluation:
    """A dry run of the cart: effects computed by Talon.One, stored nowhere."""
    try:
        outbox._take_token(outbox.UPDATE_SESSION, wait)
        answer = client.update_customer_session_v2(session_id, body, dry=True)
    except Exception as exc:
        logger.warning("evaluate_cart: dry run for %s failed: %s", session_id, exc)
        return _stale(session_id, exc)
    local = _local_session(session_id)
    return Evaluation(
        session=local,
        effects=preview_effects(session_id, (answer or {}).get("effects"), session=local),
        preview=True,
    )


def _stale(session_id: str | None, exc: BaseException | None) -> Evaluation:
    session = _local_session(session_id) if session_id else None
    effects = _current_effects(session) if session is not None else []
    return Evaluation(session=session, effects=effects, stale=True, error=_message(exc))


def _local_session(session_id: str) -> CustomerSession | None:
    try:
        return CustomerSession.objects.filter(integration_id=session_id).first()
    except Exception:  # a broken database connection must not break the cart page either
        logger.exception("evaluate_cart: could not read the mirrored session %s", session_id)
        return None


def _current_effects(session: CustomerSession) -> list[Effect]:
    try:
        return list(session.effects.filter(is_current=True).order_by("id"))
    except Exception:
        logger.exception("evaluate_cart: could not read the mirrored effects")
        return []


def _message(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    return outbox._redact(str(exc) or type(exc).__name__)
