"""Mirror Talon.One's answers into the local models.

Each public function runs in one transaction: it finds or creates the rows it needs (safely under
concurrency: create in a savepoint, and on IntegrityError re-read what the other writer made),
writes what the answer says, and sends ``effects_updated`` / ``loyalty_updated`` once the
transaction has committed.

What goes where:

- ``customerSession`` → :class:`CustomerSession` columns, its cart → :class:`CartItem` rows
  (position = index in ``cartItems``); the rest of the answer (coupons, referral, triggered
  campaigns, created coupons, return, ...) is kept in ``CustomerSession.raw``.
- ``effects`` → :class:`Effect` rows. Every answer carries the complete current set, so it replaces
  the session's current rows. While a session stays open the old set is deleted; once a session is
  (or was) closed, cancelled or returned the old set is kept with ``is_current=False`` as history.
- ``customerProfile`` → :class:`CustomerProfile` and its audience memberships; ``loyalty`` ledgers
  → :class:`LoyaltyBalance` and :class:`LoyaltyMembership` rows.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.db import IntegrityError, connection, models, transaction
from django.db.models import Q
from django.dispatch import Signal
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from . import _db, signals
from .effects import CouponCodes, coupon_code_of, coupon_codes
from .models import (
    Audience,
    AudienceMembership,
    CartItem,
    CustomerProfile,
    CustomerSession,
    Effect,
    LoyaltyBalance,
    LoyaltyMembership,
    Push,
)
from .outbox import profile_key, session_key

__all__ = [
    "DISCOUNT_EFFECTS",
    "Prefetched",
    "SessionAnswer",
    "discount_total",
    "mirror_customer_session",
    "mirror_loyalty_balances",
    "mirror_profile_answer",
    "mirror_reopen_answer",
    "mirror_session_answer",
    "mirror_session_answers",
    "prefetch_session",
    "purge_profile",
]

logger = logging.getLogger(__name__)

#: Effect types whose ``props.value`` is money taken off the session.
DISCOUNT_EFFECTS = frozenset(
    {
        "setDiscount",
        "setDiscountPerItem",
        "setDiscountPerAdditionalCost",
        "setDiscountPerAdditionalCostPerItem",
    }
)
# Effect types whose props.value is the coupon code they concern.
COUPON_EFFECTS = frozenset({"acceptCoupon", "rejectCoupon", "rollbackCoupon"})
# Parts of an answer that get rows of their own; everything else is kept in CustomerSession.raw.
MIRRORED_ELSEWHERE = frozenset({"effects", "customerProfile", "loyalty"})
# Keys under which effects name a customer; purge_profile blanks them.
PERSONAL_KEYS = frozenset(
    {
        "recipientIntegrationId",
        "profileIntegrationId",
        "profileId",
        "advocateProfileIntegrationId",
        "friendProfileIntegrationId",
        "cardIdentifier",
        "integrationId",
    }
)
TERMINAL_PUSH_STATES = (Push.State.DONE, Push.State.FAILED, Push.State.DEAD)

M = TypeVar("M", bound=models.Model)
_EFFECT_SESSION = Effect._meta.get_field("session")


def mirror_session_answer(
    session_id: str,
    answer: Mapping[str, Any],
    *,
    order: models.Model | None = None,
    sent_payload: Mapping[str, Any] | None = None,
    savepoint: bool = True,
    settled: Mapping[str, Any] | None = None,
    also: Callable[[list[CustomerSession]], None] | None = None,
    prefetched: Prefetched | None = None,
) -> CustomerSession:
    """Mirror an IntegrationStateV2 (a session update or a return) and return the session.

    Without ``customerSession`` in the answer (not asked for in ``responseContent``), the cart,
    codes and state come from ``sent_payload``, the request body that produced the answer.
    ``settled``: for a return, the session read back afterwards (GetCustomerSession, effects
    netted of the rollbacks). A return answers only its rollback effects; they are kept as
    history and the read-back effects become the current set.
    ``savepoint=False`` saves two round trips when the caller's own transaction wraps the call
    and is rolled back as a whole if it raises (as the outbox's is). ``also``: as for
    :func:`mirror_session_answers`. ``prefetched``: the session's rows as
    :func:`prefetch_session` read them, used instead of reading them again where they fit.
    """
    item = SessionAnswer(session_id, answer, sent=sent_payload, order=order, settled=settled)
    return mirror_session_answers([item], savepoint=savepoint, also=also, prefetched=prefetched)[0]


@dataclass
class SessionAnswer:
    """One answer for :func:`mirror_session_answers`: the arguments of
    :func:`mirror_session_answer` for one session."""

    session_id: str
    answer: Mapping[str, Any]
    sent: Mapping[str, Any] | None = None
    order: models.Model | None = None
    settled: Mapping[str, Any] | None = None


def mirror_session_answers(
    items: Sequence[SessionAnswer],
    *,
    savepoint: bool = False,
    also: Callable[[list[CustomerSession]], None] | None = None,
    prefetched: Prefetched | None = None,
) -> list[CustomerSession]:
    """Mirror the answers of many sessions at once; returns the sessions in the order given.

    The rows come out as mirroring the answers one after the other would leave them (two
    sessions of one customer: the later answer's profile wins), but each table is read and
    written in one or two statements for the whole batch. :func:`mirror_session_answer` is this
    with a batch of one.

    Runs in one transaction: the caller's if there is one, else its own. With ``savepoint`` an
    error rolls back only this call's work; without, the caller's transaction must be rolled back
    as a whole. One answer per session.

    ``also(sessions)`` is called with the sessions (saved, in the order given) among the
    mirror's own writes, to add statements of the caller's that go with them (the outbox marks
    its rows done there): run through :func:`_db.execute`, they cost no extra wait on PostgreSQL.
    """
    ids = [item.session_id for item in items]
    if len(set(ids)) != len(ids):
        raise ValueError("mirror_session_answers() takes one answer per session")
    if not items:
        return []
    with transaction.atomic(savepoint=savepoint):
        return _mirror_sessions(items, ids, also, prefetched)


def _mirror_sessions(
    items: Sequence[SessionAnswer],
    ids: list[str],
    also: Callable[[list[CustomerSession]], None] | None,
    prefetched: Prefetched | None = None,
) -> list[CustomerSession]:
    now = timezone.now()
    programs_of: dict[str, dict[int, Mapping[str, Any]]] = {}
    for item in items:
        programs = _loyalty_programs(item.answer.get("loyalty"))
        if programs:
            programs_of[item.session_id] = programs
    found = None
    if prefetched is not None and not programs_of:
        found = prefetched.rows_for(items)
    if found is None:
        found = _read_rows(items, ids, set(programs_of))
    sessions, profiles, profile_of = found.sessions, found.profiles, found.profile_of
    previous = {sid: sessions[sid].state for sid in ids}
    carts: dict[int, tuple[list[dict[str, Any]], int | None]] = {}
    for item in items:
        session = sessions[item.session_id]
        before = _last_cart(session)  # read before the answer replaces session.raw
        cart = _apply_answer(session, item.answer, item.sent or {}, now)
        if cart is not None:
            carts[session.pk] = _cart_changes(session, cart, before)

    fresh = set(found.fresh)
    dirty_profiles: dict[int, CustomerProfile] = {}
    audiences: dict[int, tuple[CustomerProfile, list[Any], bool]] = {}
    for item in items:
        session, profile_id = sessions[item.session_id], profile_of[item.session_id]
        if not profile_id:
            session.profile = None
            continue
        profile = profiles[profile_id]
        # Created here: no memberships to read for the first answer; later ones must look.
        first = profile_id in fresh
        fresh.discard(profile_id)
        if _update_profile(
            session, profile, item.answer, item.order, now, fresh=first, audiences=audiences
        ):
            dirty_profiles[profile.pk] = profile

    balances_of: dict[str, list[LoyaltyBalance]] = {}
    changed_members: dict[int, LoyaltyMembership] = {}
    dirty_balances: dict[int, LoyaltyBalance] = {}
    new_members: list[LoyaltyMembership] = []
    new_balances: list[LoyaltyBalance] = []
    for sid, programs in programs_of.items():
        if not profile_of[sid]:
            continue  # an anonymous session: no loyalty to mirror
        profile = profiles[profile_of[sid]]
        members = found.members.setdefault(profile.pk, {})
        for member in _apply_memberships(profile, programs, members, new_members):
            changed_members[member.pk] = member
        rows, dirty = _apply_balances(
            profile,
            _ledgers_wanted(programs, now),
            found.ledgers.setdefault(profile.pk, {}),
            new_balances,
        )
        dirty_balances.update((balance.pk, balance) for balance, _fields in dirty)
        balances_of[sid] = rows

    plans = {}
    for item in items:
        session = sessions[item.session_id]
        _link_order(session, item.order)
        plans[item.session_id] = _plan_effects(
            session,
            found.effects.get(session.pk, []),
            _current_effects(item),
            previous[item.session_id],
            now,
        )

    _replace_audiences_many(audiences, now)  # reads first: before the pipeline
    for item in items:
        _set_mirrored(sessions[item.session_id], item.answer, plans[item.session_id].current, now)
    by_old: dict[str, list[int]] = {"delete": [], "retire": []}
    for sid, plan in plans.items():
        if plan.old:
            by_old[plan.old].append(sessions[sid].pk)
    reevaluate = [sessions[sid].pk for sid, plan in plans.items() if plan.reevaluate]
    # Nothing below needs an answer before the end: on PostgreSQL, one wait for all of it. Unless
    # a return's history follows, these are the mirror's last statements (see _db.together).
    settles = [item for item in items if _settles(item)]
    with _db.together(last=not settles):
        if carts:
            ends = [(pk, end) for pk, (_rows, end) in carts.items() if end is not None]
            if ends:
                _delete_lines_from(ends)
            lines = [row for rows, _end in carts.values() for row in rows]
            _db.insert(CartItem, lines, conflict=["session", "position"])
        _db.upsert(CustomerProfile, dirty_profiles.values(), ["integration_id"])
        _db.insert(LoyaltyMembership, new_members)
        _db.upsert(LoyaltyMembership, changed_members.values(), ["profile", "program_id"])
        _db.insert(LoyaltyBalance, new_balances, returning=True)
        _db.upsert(
            LoyaltyBalance, dirty_balances.values(), ["profile", "program_id", "subledger_id"]
        )
        if by_old["delete"]:
            _delete_current(by_old["delete"])
        if by_old["retire"]:
            _retire_current(by_old["retire"])
        _db.insert(Effect, [row for plan in plans.values() for row in plan.new], returning=True)
        _db.update_many(
            Effect, [row for plan in plans.values() for row in plan.rewrite], _REWRITTEN
        )
        _db.upsert(CustomerSession, [sessions[sid] for sid in ids], ["integration_id"])
        if reevaluate:
            _reevaluate(reevaluate)
        if also is not None:
            also([sessions[sid] for sid in ids])
    for item in settles:
        # A return: what the session still has is current; the rollbacks are history.
        _add_history(sessions[item.session_id], item.answer.get("effects") or [], now)
    # One commit callback for the batch sends every signal, in the order given.
    announcements = [
        (
            sessions[sid],
            plans[sid].current,
            profiles[profile_of[sid]] if balances_of.get(sid) else None,
        )
        for sid in ids
    ]
    transaction.on_commit(lambda: _announce_now(announcements))
    return [sessions[sid] for sid in ids]


def mirror_reopen_answer(session_id: str, answer: Mapping[str, Any]) -> CustomerSession:
    """Mirror a ReopenSessionResponse (``{effects}``): the session is open again."""
    now = timezone.now()
    with transaction.atomic():
        session, _ = _get_or_create(CustomerSession, {"integration_id": session_id}, lock=True)
        previous_state = session.state
        session.state = CustomerSession.State.OPEN
        effects = _replace_effects(session, answer.get("effects") or [], previous_state, now)
        session.discount_total = discount_total(effects)
        session.synced_at = now
        session.save()
        session._mirrored_effects = effects
        _send_on_commit(signals.effects_updated, CustomerSession, session=session, effects=effects)
    return session


def mirror_customer_session(session_id: str, answer: Mapping[str, Any]) -> CustomerSession:
    """Mirror a GetCustomerSession answer (``{customerSession, effects}``), e.g. to reconcile."""
    return mirror_session_answer(session_id, answer)


def mirror_profile_answer(
    integration_id: str, answer: Mapping[str, Any], *, user: Any = None, savepoint: bool = True
) -> CustomerProfile:
    """Mirror a CustomerProfileIntegrationResponseV2 and link the profile to ``user`` if given.

    The profile's own effects (from ``runRuleEngine``) have no session to hang on and are not
    stored; their outcome shows in the profile, audience and loyalty parts mirrored here.
    ``savepoint``: as for :func:`mirror_session_answer`.
    """
    now = timezone.now()
    with transaction.atomic(savepoint=savepoint):
        profile, created = _get_or_create(
            CustomerProfile, {"integration_id": integration_id}, lock=True
        )
        data = answer.get("customerProfile")
        if isinstance(data, Mapping):
            _apply_profile(profile, data, now, fresh=created)
        if user is not None:
            _link_user(profile, user)
        balances = _mirror_loyalty(profile, answer.get("loyalty"), now, fresh=created)
        profile.synced_at = now
        profile.save()
        if balances:
            _send_on_commit(signals.loyalty_updated, CustomerProfile, profile=profile)
    return profile


def mirror_loyalty_balances(
    integration_id: str, program_id: int, answer: Mapping[str, Any]
) -> list[LoyaltyBalance]:
    """Mirror a LoyaltyBalancesWithTiers answer (``{balance, subledgerBalances}``) of one program.

    Tier fields are only written when the answer carries them (ask with ``include_tiers``).
    """
    now = timezone.now()
    ledgers: dict[str, Any] = {}
    if isinstance(answer.get("balance"), Mapping):
        ledgers[""] = answer["balance"]
    for subledger, balance in (answer.get("subledgerBalances") or {}).items():
        if isinstance(balance, Mapping):
            ledgers[str(subledger)] = balance
    with transaction.atomic():
        profile, _ = _get_or_create(CustomerProfile, {"integration_id": integration_id})
        wanted = {
            (int(program_id), subledger): _balance_fields(data, now)
            for subledger, data in ledgers.items()
        }
        rows = _upsert_balances(profile, wanted)
        if rows:
            _send_on_commit(signals.loyalty_updated, CustomerProfile, profile=profile)
    return rows


def purge_profile(integration_id: str) -> None:
    """Remove a customer's personal data from the mirror after Talon.One deleted it.

    Deleted: the profile row with its attributes, raw payload, user link, audience memberships,
    loyalty memberships and balances. Blanked on the customer's sessions: the profile id,
    attributes, identifiers, loyalty cards and raw payloads; on their cart lines: attributes and
    raw payloads; in their effects: every key naming a customer; finished pushes: their payload.
    Kept, as anonymous aggregates: each session's state, totals, cart SKUs, quantities and prices,
    coupon and referral codes, effects, and its link to the shop's order (the shop's own order
    data is the shop's to erase).
    """
    with transaction.atomic():
        profile = CustomerProfile.objects.filter(integration_id=integration_id).first()
        owned = Q(profile_integration_id=integration_id)
        if profile is not None:
            owned |= Q(profile=profile)
        sessions = list(
            CustomerSession.objects.select_for_update()
            .filter(owned)
            .values_list("pk", "integration_id")
        )
        session_pks = [pk for pk, _ in sessions]
        CustomerSession.objects.filter(pk__in=session_pks).update(
            profile=None,
            profile_integration_id="",
            attributes={},
            identifiers=[],
            loyalty_cards=[],
            raw={},
        )
        CartItem.objects.filter(session_id__in=session_pks).update(attributes={}, raw={})
        effects = list(Effect.objects.filter(session_id__in=session_pks))
        for effect in effects:
            effect.props = _scrub(effect.props, integration_id)
            effect.raw = _scrub(effect.raw, integration_id)
        Effect.objects.bulk_update(effects, ["props", "raw"], batch_size=500)
        pushes = Q(key=profile_key(integration_id)) | Q(session_id__in=session_pks)
        pushes |= Q(key__in=[session_key(sid) for _, sid in sessions])
        if profile is not None:
            pushes |= Q(profile=profile)
        Push.objects.filter(pushes, state__in=TERMINAL_PUSH_STATES).update(payload={})
        if profile is not None:
            profile.delete()
    logger.info("purged the local data of a deleted customer profile (%d sessions)", len(sessions))


def discount_total(effects: list[Effect]) -> Decimal:
    """The net discount of a set of effect rows: discounts minus rolled-back discounts, ≥ 0.

    A cancellation answers with the rollbacks alone, so the floor at zero is the order's net
    discount once it has been cancelled.
    """
    total = Decimal(0)
    for effect in effects:
        if effect.effect_type in DISCOUNT_EFFECTS:
            total += _decimal(effect.props.get("value"))
        elif effect.effect_type == "rollbackDiscount":
            total -= _decimal(effect.props.get("value"))
    return max(total, Decimal(0))


# ---- sessions --------------------------------------------------------------------------------


def _apply_answer(
    session: CustomerSession, answer: Mapping[str, Any], sent: Mapping[str, Any], now: Any
) -> list[Any] | None:
    """Copy what an answer (or, without ``customerSession`` in it, the request) says of the
    session onto the row; returns the cart lines to write (None: the cart is unchanged)."""
    data = answer.get("customerSession")
    if isinstance(data, Mapping) and data:
        return _apply_session(session, data, now)
    if isinstance(sent.get("customerSession"), Mapping):
        return _apply_sent_session(session, sent["customerSession"], now)
    if isinstance(sent.get("return"), Mapping):
        _apply_sent_return(session, sent["return"])
    return None


def _link_order(session: CustomerSession, order: Any) -> None:
    if isinstance(order, models.Model) and order.pk is not None:
        session.order_type = ContentType.objects.get_for_model(order)
        session.order_id = str(order.pk)


def _set_mirrored(
    session: CustomerSession, answer: Mapping[str, Any], effects: list[Effect], now: Any
) -> None:
    """The session's fields that follow from its new current effects and the whole answer."""
    session.discount_total = discount_total(effects)
    session.raw = _session_raw(session.raw, answer)
    session.synced_at = now
    # The current effects, in id order, for a caller that returns them (evaluate_cart).
    session._mirrored_effects = effects


def _announce(
    session: CustomerSession, effects: list[Effect], profile: CustomerProfile | None
) -> None:
    """Send effects_updated (and loyalty_updated for ``profile``) once the transaction commits."""
    _send_on_commit(signals.effects_updated, CustomerSession, session=session, effects=effects)
    if profile is not None:
        _send_on_commit(signals.loyalty_updated, CustomerProfile, profile=profile)


def _announce_now(
    announcements: list[tuple[CustomerSession, list[Effect], CustomerProfile | None]],
) -> None:
    for session, effects, profile in announcements:
        _send(signals.effects_updated, CustomerSession, session=session, effects=effects)
        if profile is not None:
            _send(signals.loyalty_updated, CustomerProfile, profile=profile)


def _apply_session(session: CustomerSession, data: Mapping[str, Any], now: Any) -> list[Any] | None:
    """Copy a CustomerSessionV2 onto the row; returns the cart lines to write (None: unchanged)."""
    cart = None
    session.talon_id = _int(data.get("id")) or session.talon_id
    session.application_id = _int(data.get("applicationId")) or session.application_id
    if "profileId" in data:
        session.profile_integration_id = str(data.get("profileId") or "")
    if "storeIntegrationId" in data:
        session.store_integration_id = str(data.get("storeIntegrationId") or "")
    _set_state(session, data.get("state"))
    _copy_codes(session, data)
    for key, field in (("loyaltyCards", "loyalty_cards"), ("identifiers", "identifiers")):
        if key in data:
            setattr(session, field, list(data.get(key) or []))
    if "attributes" in data:
        session.attributes = dict(data.get("attributes") or {})
    if "additionalCosts" in data:
        session.additional_costs = dict(data.get("additionalCosts") or {})
    if "cartItems" in data:
        last = session.raw.get("customerSession") if isinstance(session.raw, Mapping) else None
        # The last answer's cart is at hand: an unchanged cart costs no queries.
        if not isinstance(last, Mapping) or last.get("cartItems") != data.get("cartItems"):
            cart = list(data.get("cartItems") or [])
    for key, field in (
        ("total", "total"),
        ("cartItemTotal", "cart_item_total"),
        ("additionalCostTotal", "additional_cost_total"),
    ):
        if key in data:
            setattr(session, field, _decimal(data.get(key)))
    if "firstSession" in data:
        session.first_session = bool(data.get("firstSession"))
    if "updateCount" in data:
        session.update_count = _int(data.get("updateCount")) or 0
    session.talon_created = _datetime(data.get("created")) or session.talon_created
    session.talon_updated = _datetime(data.get("updated")) or session.talon_updated
    return cart


def _apply_sent_session(
    session: CustomerSession, sent: Mapping[str, Any], now: Any
) -> list[Any] | None:
    """Take the cart, codes and state from the request that was answered (a NewCustomerSessionV2);
    returns the cart lines to write (None: the request left the cart alone).

    Totals are computed locally, as Talon.One would: before any discount.
    """
    cart = None
    if "profileId" in sent:
        session.profile_integration_id = str(sent.get("profileId") or "")
    _set_state(session, sent.get("state"))
    _copy_codes(session, sent)
    if "attributes" in sent:
        session.attributes = {**session.attributes, **dict(sent.get("attributes") or {})}
    if "additionalCosts" in sent:
        session.additional_costs = dict(sent.get("additionalCosts") or {})
        session.additional_cost_total = sum(
            (_decimal(cost.get("price")) for cost in session.additional_costs.values()),
            Decimal(0),
        )
    if "cartItems" in sent:
        cart = list(sent.get("cartItems") or [])
        session.cart_item_total = sum(
            (_decimal(item.get("price")) * _decimal(item.get("quantity")) for item in cart),
            Decimal(0),
        )
    session.total = session.cart_item_total + session.additional_cost_total
    return cart


def _apply_sent_return(session: CustomerSession, sent: Mapping[str, Any]) -> None:
    """Record a return that was answered without the session: count the returned units locally."""
    lines = {item.position: item for item in session.cart_items.all()}
    for returned in sent.get("returnedCartItems") or []:
        line = lines.get(_int(returned.get("position")))
        if line is None:
            continue
        line.returned_quantity += _int(returned.get("quantity")) or 0
        line.remaining_quantity = max(line.quantity - line.returned_quantity, 0)
        line.save(update_fields=["returned_quantity", "remaining_quantity"])
    session.state = CustomerSession.State.PARTIALLY_RETURNED


def _set_state(session: CustomerSession, state: Any) -> None:
    if state in CustomerSession.State.values:
        session.state = state
    elif state:
        logger.warning("session %s: unknown state %r ignored", session.integration_id, state)


def _copy_codes(session: CustomerSession, data: Mapping[str, Any]) -> None:
    if "couponCodes" in data:
        session.coupon_codes = [str(code) for code in data.get("couponCodes") or []]
    if "referralCode" in data:
        session.referral_code = str(data.get("referralCode") or "")[:100]


def _cart_rows(
    session: CustomerSession, items: list[Any], positions: set[int] | None = None
) -> list[dict[str, Any]]:
    """:class:`CartItem` column values (by attname) for the ``cartItems`` of a session
    (position = index), only those at ``positions`` if given; plain dicts, as nothing reads the
    rows back as models."""
    return [
        {
            "session_id": session.pk,
            "position": position,
            "sku": str(item.get("sku") or "")[:255],
            "name": str(item.get("name") or "")[:500],
            "quantity": _int(item.get("quantity")) or 0,
            "returned_quantity": _int(item.get("returnedQuantity")) or 0,
            "remaining_quantity": _int(item.get("remainingQuantity")),
            "price": None if item.get("price") is None else _decimal(item.get("price")),
            "category": str(item.get("category") or "")[:255],
            "attributes": dict(item.get("attributes") or {}),
            "raw": dict(item),
        }
        for position, item in enumerate(items)
        if isinstance(item, Mapping) and (positions is None or position in positions)
    ]


def _last_cart(session: CustomerSession) -> list[Any] | None:
    """The ``cartItems`` the session's CartItem rows were written from (the last answer's), or
    None when that is not known (a new session, or the last answer came without the cart)."""
    last = session.raw.get("customerSession") if isinstance(session.raw, Mapping) else None
    items = last.get("cartItems") if isinstance(last, Mapping) else None
    return items if isinstance(items, list) else None


def _cart_changes(
    session: CustomerSession, items: list[Any], before: list[Any] | None
) -> tuple[list[dict[str, Any]], int | None]:
    """The CartItem rows to write for the session's new ``items``, and the position from which
    its rows are to go (None: none go).

    With the lines the rows hold (``before``) at hand, only lines that differ are written, by
    (session, position), and rows go only past the new end: a cart page changing one quantity
    rewrites one row, and the other rows keep their ids. Without it, every line is written and
    every row past the new end goes.
    """
    if before is None:
        return _cart_rows(session, items), len(items)
    changed = {
        position
        for position, item in enumerate(items)
        if position >= len(before) or before[position] != item
    }
    return _cart_rows(session, items, changed), (len(items) if len(items) < len(before) else None)


def _session_raw(previous: Mapping[str, Any], answer: Mapping[str, Any]) -> dict[str, Any]:
    raw = {key: value for key, value in answer.items() if key not in MIRRORED_ELSEWHERE}
    # An answer without the session (not asked for) must not make us forget the last one seen.
    kept = previous.get("customerSession") if isinstance(previous, Mapping) else None
    if not raw.get("customerSession") and kept:
        # Its cart is stale now (the request changed it, or a return did): leave the cart out,
        # which also makes the next answer rewrite the CartItem rows.
        raw["customerSession"] = {k: v for k, v in kept.items() if k != "cartItems"}
    return raw


def _update_profile(
    session: CustomerSession,
    profile: CustomerProfile,
    answer: Mapping[str, Any],
    order: Any,
    now: Any,
    *,
    fresh: bool,
    audiences: dict[int, tuple[CustomerProfile, list[Any], bool]] | None = None,
) -> bool:
    """Attach ``profile`` to the session and copy the answer's profile part onto it; True when
    the profile row needs saving. ``audiences``: as for :func:`_apply_profile`."""
    data = answer.get("customerProfile")
    changed = False
    if isinstance(data, Mapping) and data:
        _apply_profile(profile, data, now, fresh=fresh, audiences=audiences)
        profile.synced_at = now
        changed = True
    if order is not None and profile.user_id is None:
        changed = _link_order_user(profile, order) or changed
    session.profile = profile
    session.profile_integration_id = profile.integration_id
    return changed


# ---- effects ---------------------------------------------------------------------------------


def _replace_effects(
    session: CustomerSession,
    answered: list[Any],
    previous_state: str,
    now: Any,
    *,
    fresh: bool = False,
) -> list[Effect]:
    """Make ``answered`` the session's current effects; returns the current rows.

    ``fresh``: the session row was created in this transaction, so it has no effects yet.
    """
    if fresh:
        answered = [effect for effect in answered if isinstance(effect, Mapping)]
        return _db.insert(Effect, effect_rows(session, answered, now), returning=True)
    current = list(session.effects.filter(is_current=True).order_by("id"))
    plan = _plan_effects(session, current, answered, previous_state, now)
    if plan.reevaluate:
        session.effects.filter(is_current=True).update(evaluation=session.update_count)
    if plan.old == "retire":
        session.effects.filter(is_current=True).update(is_current=False)
    elif plan.old == "delete":
        session.effects.filter(is_current=True).delete()
    _db.update_many(Effect, plan.rewrite, _REWRITTEN)
    if plan.new:
        return _db.insert(Effect, plan.new, returning=True)
    return plan.current


def _current_effects(item: SessionAnswer) -> list[Any]:
    """The effects that become the session's current set: for a return with its session read
    back (``settled``), the read-back ones, netted of the rollbacks; else the answer's."""
    if _settles(item):
        return item.settled["effects"]  # type: ignore[index]
    return item.answer.get("effects") or []


def _settles(item: SessionAnswer) -> bool:
    return item.settled is not None and isinstance(item.settled.get("effects"), list)


@dataclass
class _EffectsPlan:
    """What mirroring an effect set does to a session's current rows.

    ``old``: what happens to the current rows: "" (nothing: the same set again, or there are
    none), "delete" (an open session's superseded set) or "retire" (kept as history: the session
    is or was closed); ``new``: unsaved rows to insert;
    ``current``: the rows current afterwards (``new`` once inserted); ``reevaluate``: the kept
    rows need the session's new update count; ``rewrite``: current rows taking new values in
    place (their :data:`_REWRITTEN` columns).
    """

    old: str
    new: list[Effect]
    current: list[Effect]
    reevaluate: bool = False
    rewrite: list[Effect] = dataclasses.field(default_factory=list)


#: What an effect row rewritten in place takes from the new answer; the rest is its identity
#: (see :func:`_identity`), its session, ``is_current`` and ``created_at`` (when it first applied).
_REWRITTEN = ("rule_name", "props", "coupon_code", "evaluation", "raw")


def _identity(row: Effect) -> tuple[Any, ...]:
    """What makes an effect the same effect in the next answer: its rule, type and target."""
    return (
        row.campaign_id,
        row.ruleset_id,
        row.rule_index,
        row.effect_type,
        row.position,
        row.sub_position,
        row.triggered_by_coupon,
    )


def _plan_effects(
    session: CustomerSession,
    current: list[Any],
    answered: list[Any],
    previous_state: str,
    now: Any,
) -> _EffectsPlan:
    """Decide how ``answered`` replaces ``current`` (the session's current rows, in id order:
    effects, or anything with their ``raw`` and ``evaluation``)."""
    answered = [effect for effect in answered if isinstance(effect, Mapping)]
    if [row.raw for row in current] == answered:
        # The same set again (a reconciling read, an unchanged cart): no churn, no extra history.
        stale = any(row.evaluation != session.update_count for row in current)
        for row in current:
            row.evaluation = session.update_count
        return _EffectsPlan("", [], current, reevaluate=stale)
    open_ = CustomerSession.State.OPEN
    old = "delete" if previous_state == open_ and session.state == open_ else "retire"
    new = effect_rows(session, answered, now)
    if (
        old == "delete"
        and current
        and len(current) == len(new)
        and all(_identity(a) == _identity(b) for a, b in zip(current, new, strict=True))
    ):
        # An open cart changed and the same rules apply to the same lines, with new values (a
        # quantity changed, say): each row takes its new values in place, keeping its id. One
        # UPDATE of columns no index holds, instead of deleting and inserting every row.
        for row, fresh in zip(current, new, strict=True):
            for name in _REWRITTEN:
                setattr(row, name, getattr(fresh, name))
        return _EffectsPlan("", [], list(current), rewrite=list(current))
    return _EffectsPlan(old if current else "", new, new)


def effect_rows(session: CustomerSession, answered: list[Any], now: Any) -> list[Effect]:
    """Unsaved current :class:`Effect` rows of ``session`` for the effect dicts of an answer (in
    their order), coupon codes filled in from the answer's acceptCoupon effects."""
    answered = [effect for effect in answered if isinstance(effect, Mapping)]
    codes = _accepted_codes(answered)
    return [_effect_row(session, effect, codes, now) for effect in answered]


def _add_history(session: CustomerSession, answered: list[Any], now: Any) -> None:
    """Record ``answered`` (a return's rollbacks) as past effects of the session, once: the same
    answer again (a replayed return: Talon.One repeats the first answer) adds nothing."""
    answered = [effect for effect in answered if isinstance(effect, Mapping)]
    if not answered:
        return
    types = {str(effect.get("effectType") or "")[:100] for effect in answered}
    recorded = list(
        session.effects.filter(is_current=False, effect_type__in=types).values_list(
            "raw", flat=True
        )
    )
    if all(effect in recorded for effect in answered):
        return
    rows = effect_rows(session, answered, now)
    for row in rows:
        row.is_current = False
    Effect.objects.bulk_create(rows)


def _effect_row(
    session: CustomerSession,
    effect: Mapping[str, Any],
    codes: dict[tuple[int | None, int | None], str],
    now: Any,
) -> Effect:
    props = effect.get("props")
    props = dict(props) if isinstance(props, Mapping) else {}
    position = props.get("position", props.get("cartItemPosition"))
    sub_position = props.get("subPosition", props.get("cartItemSubPosition"))
    effect_type = str(effect.get("effectType") or "")
    row = _db.make(
        Effect,
        {
            "id": None,
            "session_id": session.pk,
            "campaign_id": _int(effect.get("campaignId")) or 0,
            "ruleset_id": _int(effect.get("rulesetId")),
            "rule_index": _int(effect.get("ruleIndex")),
            "rule_name": str(effect.get("ruleName") or "")[:500],
            "effect_type": effect_type[:100],
            "props": props,
            "position": _int(position),
            "sub_position": _int(sub_position),
            "triggered_by_coupon": _int(effect.get("triggeredByCoupon")),
            "coupon_code": _coupon_code(effect, effect_type, props, codes)[:100],
            "evaluation": session.update_count,
            "is_current": True,
            "raw": dict(effect),
            "created_at": now,
        },
    )
    _EFFECT_SESSION.set_cached_value(row, session)
    return row


def _accepted_codes(effects: list[Mapping[str, Any]]) -> CouponCodes:
    """Coupon codes of the answer's acceptCoupon effects (see :func:`effects.coupon_codes`)."""
    accepted = []
    for effect in effects:
        if effect.get("effectType") != "acceptCoupon":
            continue
        props = effect.get("props")
        value = props.get("value") if isinstance(props, Mapping) else None
        campaign, coupon = _int(effect.get("campaignId")), _int(effect.get("triggeredByCoupon"))
        accepted.append((campaign, coupon, value))
    return coupon_codes(accepted)


def _coupon_code(
    effect: Mapping[str, Any],
    effect_type: str,
    props: Mapping[str, Any],
    codes: CouponCodes,
) -> str:
    if effect_type in COUPON_EFFECTS:
        return str(props.get("value") or "")
    campaign, coupon = _int(effect.get("campaignId")), _int(effect.get("triggeredByCoupon"))
    return coupon_code_of(codes, campaign, coupon) or ""


# ---- profiles, audiences, loyalty ------------------------------------------------------------


def _apply_profile(
    profile: CustomerProfile,
    data: Mapping[str, Any],
    now: Any,
    *,
    fresh: bool = False,
    audiences: dict[int, tuple[CustomerProfile, list[Any], bool]] | None = None,
) -> None:
    """Copy a CustomerProfile / AudienceCustomer payload onto the row and its audiences.

    ``fresh``: the row was created in this transaction, so it has no memberships yet.
    ``audiences``: collect the membership change here (by profile pk) instead of writing it.
    """
    profile.talon_id = _int(data.get("id")) or profile.talon_id
    profile.account_id = _int(data.get("accountId")) or profile.account_id
    if "attributes" in data:
        profile.attributes = dict(data.get("attributes") or {})
    if "closedSessions" in data:
        profile.closed_sessions = _int(data.get("closedSessions")) or 0
    if "totalSales" in data:
        profile.total_sales = _decimal(data.get("totalSales"))
    profile.last_activity = _datetime(data.get("lastActivity")) or profile.last_activity
    if "sandbox" in data:
        profile.sandbox = bool(data.get("sandbox"))
    if "advocateIntegrationId" in data:
        profile.advocate_integration_id = str(data.get("advocateIntegrationId") or "")
    if "connectedApplicationsIds" in data:
        profile.connected_application_ids = list(data.get("connectedApplicationsIds") or [])
    if "connectedAudiences" in data:
        profile.connected_audience_ids = list(data.get("connectedAudiences") or [])
    profile.talon_created = _datetime(data.get("created")) or profile.talon_created
    previous = profile.raw.get("audienceMemberships") if isinstance(profile.raw, Mapping) else None
    profile.raw = dict(data)
    memberships = data.get("audienceMemberships")
    # Only the mirror writes memberships, so an unchanged list needs no queries.
    if isinstance(memberships, list) and memberships != previous and (memberships or not fresh):
        if audiences is None:
            _replace_audiences(profile, memberships, now, fresh=fresh)
        else:
            earlier = audiences.get(profile.pk)
            audiences[profile.pk] = (profile, memberships, earlier[2] if earlier else fresh)


def _replace_audiences(
    profile: CustomerProfile, memberships: list[Any], now: Any, *, fresh: bool = False
) -> None:
    wanted = _wanted_audiences(memberships)
    present: set[int] = set()
    if not fresh:
        profile.audience_memberships.exclude(audience__talon_id__in=list(wanted)).delete()
        present = set(profile.audience_memberships.values_list("audience__talon_id", flat=True))
    for talon_id, name in wanted.items():
        audience, created = _get_or_create(Audience, {"talon_id": talon_id}, {"name": name})
        if not created and name and audience.name != name:
            audience.name = name
            audience.save(update_fields=["name"])
        if talon_id not in present:
            _get_or_create(
                AudienceMembership, {"profile": profile, "audience": audience}, {"synced_at": now}
            )


def _wanted_audiences(memberships: list[Any]) -> dict[int, str]:
    """Audience names by Talon.One audience id, from an ``audienceMemberships`` list."""
    wanted: dict[int, str] = {}
    for membership in memberships:
        if isinstance(membership, Mapping) and _int(membership.get("id")) is not None:
            wanted[_int(membership["id"])] = str(membership.get("name") or "")[:500]
    return wanted


def _replace_audiences_many(
    changes: dict[int, tuple[CustomerProfile, list[Any], bool]], now: Any
) -> None:
    """:func:`_replace_audiences` for many profiles at once (profile pk → (profile, memberships,
    fresh)), in a fixed number of statements."""
    if not changes:
        return
    if not _db.writes_sets():
        for profile, memberships, fresh in changes.values():
            _replace_audiences(profile, memberships, now, fresh=fresh)
        return
    wanted = {pk: _wanted_audiences(memberships) for pk, (_p, memberships, _f) in changes.items()}
    names: dict[int, str] = {}
    for found in wanted.values():
        names.update(found)
    audiences = {a.talon_id: a for a in Audience.objects.filter(talon_id__in=list(names))}
    missing = [Audience(talon_id=t, name=names[t]) for t in names if t not in audiences]
    if missing:
        _db.insert(Audience, missing, conflict=["talon_id"], ignore=True)
        audiences.update(
            (a.talon_id, a)
            for a in Audience.objects.filter(talon_id__in=[a.talon_id for a in missing])
        )
    renamed = []
    for talon_id, name in names.items():
        audience = audiences[talon_id]
        if name and audience.name != name:
            audience.name = name
            renamed.append(audience)
    _db.upsert(Audience, renamed, ["talon_id"])
    known = [pk for pk, (_p, _m, fresh) in changes.items() if not fresh]
    present: set[tuple[int, int]] = set()
    if known:
        stale = Q()
        for pk in known:
            keep = [audiences[t].pk for t in wanted[pk]]
            stale |= Q(profile_id=pk) & ~Q(audience_id__in=keep)
        AudienceMembership.objects.filter(stale).delete()
        present = set(
            AudienceMembership.objects.filter(profile_id__in=known).values_list(
                "profile_id", "audience_id"
            )
        )
    joining = [
        AudienceMembership(profile_id=pk, audience_id=audiences[t].pk, synced_at=now)
        for pk, found in wanted.items()
        for t in found
        if (pk, audiences[t].pk) not in present
    ]
    _db.insert(AudienceMembership, joining, conflict=["profile", "audience"], ignore=True)


def _link_user(profile: CustomerProfile, user: Any) -> None:
    """Link the profile to the shop's user, taking the link from any other profile that had it."""
    if not _is_saved_user(user) or profile.user_id == user.pk:
        return
    CustomerProfile.objects.filter(user=user).exclude(pk=profile.pk).update(user=None)
    profile.user = user


def _link_order_user(profile: CustomerProfile, order: Any) -> bool:
    """Link an unlinked profile to the order's user when the adapter says it is theirs."""
    from .adapters import get_adapter  # adapters import nothing from here; keep the import lazy

    adapter = get_adapter()
    try:
        user = adapter.user(order)
        if not _is_saved_user(user) or adapter.profile_id_for_user(user) != profile.integration_id:
            return False
    except Exception:  # the adapter is shop code; a bad hook must not stop the mirror
        logger.exception("adapter could not tell the user of %r", type(order).__name__)
        return False
    # Never steal a link: that user may already own another profile.
    if CustomerProfile.objects.filter(user=user).exists():
        return False
    profile.user = user
    return True


def _is_saved_user(user: Any) -> bool:
    return isinstance(user, get_user_model()) and user.pk is not None


def _mirror_loyalty(
    profile: CustomerProfile | None, loyalty: Any, now: Any, *, fresh: bool = False
) -> list[LoyaltyBalance]:
    """Upsert the profile ledgers of a Loyalty answer part; card ledgers are not mirrored.

    The caller holds the profile's row lock. ``fresh``: the profile was created in this
    transaction, so it has no loyalty rows yet: they are inserted in one query per table.
    """
    programs = _loyalty_programs(loyalty) if profile is not None else {}
    if profile is None or not programs:
        return []
    if fresh:
        LoyaltyMembership.objects.bulk_create(
            [
                LoyaltyMembership(profile=profile, program_id=program_id, **fields)
                for program_id, fields in _membership_fields(programs).items()
            ]
        )
        return _upsert_balances(profile, _ledgers_wanted(programs, now), fresh=True)
    members = {
        member.program_id: member
        for member in LoyaltyMembership.objects.filter(profile=profile, program_id__in=programs)
    }
    for member in _apply_memberships(profile, programs, members):
        member.save(update_fields=["joined", "raw"])
    return _upsert_balances(profile, _ledgers_wanted(programs, now))


def _loyalty_programs(loyalty: Any) -> dict[int, Mapping[str, Any]]:
    """The programs of a Loyalty answer part, by program id."""
    if not isinstance(loyalty, Mapping):
        return {}
    programs: dict[int, Mapping[str, Any]] = {}
    for key, program in (loyalty.get("programs") or {}).items():
        program_id = _int(program.get("id")) or _int(key) if isinstance(program, Mapping) else None
        if program_id is None:
            logger.warning("loyalty program without an id in an answer: %r", key)
            continue
        programs[program_id] = program
    return programs


def _membership_fields(programs: dict[int, Mapping[str, Any]]) -> dict[int, dict[str, Any]]:
    """LoyaltyMembership fields (``joined``, ``raw``) per program."""
    return {
        program_id: {
            "joined": _datetime(program.get("joinDate")),
            "raw": {k: v for k, v in program.items() if k not in ("ledger", "subLedgers")},
        }
        for program_id, program in programs.items()
    }


def _apply_memberships(
    profile: CustomerProfile,
    programs: dict[int, Mapping[str, Any]],
    members: dict[int, LoyaltyMembership],
    new: list[LoyaltyMembership] | None = None,
) -> list[LoyaltyMembership]:
    """Bring the profile's memberships (``members``, by program) in line with ``programs``:
    a missing one is created at once (or, given ``new``, left unsaved there for the caller to
    insert); returns the saved ones whose ``joined`` or ``raw`` changed."""
    changed = []
    for program_id, fields in _membership_fields(programs).items():
        joined, raw = fields["joined"], fields["raw"]
        member = members.get(program_id)
        if member is None and new is not None:
            member = LoyaltyMembership(profile=profile, program_id=program_id, **fields)
            new.append(member)
        elif member is None:
            lookup = {"profile": profile, "program_id": program_id}
            member, _created = _get_or_create(LoyaltyMembership, lookup, fields)
        members[program_id] = member
        if (member.joined, member.raw) != (joined or member.joined, raw):
            member.joined, member.raw = joined or member.joined, raw
            if member.pk is not None:
                changed.append(member)
    return changed


def _ledgers_wanted(
    programs: dict[int, Mapping[str, Any]], now: Any
) -> dict[tuple[int, str], dict[str, Any]]:
    """LoyaltyBalance fields per (program, subledger) from the programs' ledgers."""
    wanted: dict[tuple[int, str], dict[str, Any]] = {}
    for program_id, program in programs.items():
        ledgers = {"": program.get("ledger"), **(program.get("subLedgers") or {})}
        for subledger, info in ledgers.items():
            if isinstance(info, Mapping):
                wanted[(program_id, str(subledger))] = _ledger_fields(info, now)
    return wanted


def _ledger_fields(info: Mapping[str, Any], now: Any) -> dict[str, Any]:
    """LedgerInfo → LoyaltyBalance fields; spent/expired are deprecated there (always 0)."""
    fields: dict[str, Any] = {
        "active_points": _decimal(info.get("currentBalance")),
        "pending_points": _decimal(info.get("pendingBalance")),
        "raw": dict(info),
        "fetched_at": now,
    }
    if "negativeBalance" in info:
        fields["negative_points"] = _decimal(info.get("negativeBalance"))
    fields.update(_tier_fields(info))
    return fields


def _balance_fields(info: Mapping[str, Any], now: Any) -> dict[str, Any]:
    """LoyaltyBalanceWithTier → LoyaltyBalance fields."""
    fields: dict[str, Any] = {
        "active_points": _decimal(info.get("activePoints")),
        "pending_points": _decimal(info.get("pendingPoints")),
        "spent_points": _decimal(info.get("spentPoints")),
        "expired_points": _decimal(info.get("expiredPoints")),
        "negative_points": _decimal(info.get("negativePoints")),
        "raw": dict(info),
        "fetched_at": now,
    }
    fields.update(_tier_fields(info))
    if "nextTierName" in info:
        fields["next_tier_name"] = str(info.get("nextTierName") or "")[:255]
    return fields


def _tier_fields(info: Mapping[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    tier = info.get("currentTier")
    if isinstance(tier, Mapping):
        fields["tier_id"] = _int(tier.get("id"))
        fields["tier_name"] = str(tier.get("name") or "")[:255]
        fields["tier_expiry"] = _datetime(tier.get("expiryDate"))
    if "pointsToNextTier" in info:
        value = info.get("pointsToNextTier")
        fields["points_to_next_tier"] = None if value is None else _decimal(value)
    return fields


def _upsert_balances(
    profile: CustomerProfile,
    wanted: dict[tuple[int, str], dict[str, Any]],
    *,
    fresh: bool = False,
) -> list[LoyaltyBalance]:
    """Write each (program, subledger) → fields, reading the existing rows in one query.

    ``fresh``: the profile was created in this transaction; every row is new (one INSERT).
    """
    if fresh:
        return LoyaltyBalance.objects.bulk_create(
            [
                LoyaltyBalance(
                    profile=profile, program_id=program_id, subledger_id=subledger_id, **fields
                )
                for (program_id, subledger_id), fields in wanted.items()
            ]
        )
    programs = {program_id for program_id, _ in wanted}
    existing = {
        (balance.program_id, balance.subledger_id): balance
        for balance in LoyaltyBalance.objects.select_for_update().filter(
            profile=profile, program_id__in=programs
        )
    }
    rows, dirty = _apply_balances(profile, wanted, existing)
    for balance, fields in dirty:
        # One UPDATE per ledger: cheaper than bulk_update's CASE expressions for a handful of rows.
        balance.save(update_fields=fields)
    return rows


def _apply_balances(
    profile: CustomerProfile,
    wanted: dict[tuple[int, str], dict[str, Any]],
    existing: dict[tuple[int, str], LoyaltyBalance],
    new: list[LoyaltyBalance] | None = None,
) -> tuple[list[LoyaltyBalance], list[tuple[LoyaltyBalance, list[str]]]]:
    """Set ``wanted`` on the profile's ``existing`` balances (by program and subledger); a
    missing one is created at once (or, given ``new``, left unsaved there for the caller to
    insert). Returns every balance written and the saved ones still to save, with the fields that
    were set."""
    rows = []
    dirty = []
    for (program_id, subledger_id), fields in wanted.items():
        balance = existing.get((program_id, subledger_id))
        if balance is None and new is not None:
            balance = LoyaltyBalance(
                profile=profile, program_id=program_id, subledger_id=subledger_id, **fields
            )
            existing[(program_id, subledger_id)] = balance
            new.append(balance)
            rows.append(balance)
            continue
        if balance is None:
            lookup = {"profile": profile, "program_id": program_id, "subledger_id": subledger_id}
            balance, created = _get_or_create(LoyaltyBalance, lookup, fields, lock=True)
            existing[(program_id, subledger_id)] = balance
            if created:
                rows.append(balance)
                continue
        for name, value in fields.items():
            setattr(balance, name, value)
        if balance.pk is not None:
            dirty.append((balance, list(fields)))
        rows.append(balance)
    return rows, dirty


# ---- plumbing --------------------------------------------------------------------------------


@dataclass
class _Rows:
    """What the batch writer reads before deciding anything.

    ``profile_of``: the profile integration id of each session ("" for none); ``fresh``: the
    profiles this transaction created; ``members``, ``ledgers``: loyalty memberships (by program)
    and balances (by program and subledger) of the profiles of answers with loyalty, by profile
    pk; ``effects``: each session's current effect rows in id order, by session pk.
    """

    sessions: dict[str, CustomerSession]
    profile_of: dict[str, str]
    profiles: dict[str, CustomerProfile]
    fresh: set[str]
    members: dict[int, dict[int, LoyaltyMembership]]
    ledgers: dict[int, dict[tuple[int, str], LoyaltyBalance]]
    effects: dict[int, list[Effect]]


@dataclass
class Prefetched:
    """One session's rows (the session, its profile, its current effects) read without locks
    by :func:`prefetch_session`, for the mirror of an answer that is still on its way."""

    session_id: str
    profile_id: str
    sessions: dict[str, CustomerSession] = dataclasses.field(default_factory=dict)
    profiles: dict[str, CustomerProfile] = dataclasses.field(default_factory=dict)
    effects: dict[int, list[Effect]] = dataclasses.field(default_factory=dict)

    def rows_for(self, items: Sequence[SessionAnswer]) -> _Rows | None:
        """The rows as :func:`_read_rows` would find them, when they are all the answer needs
        (one session, both rows there, the profile the one the answer names); else None."""
        if len(items) != 1 or items[0].session_id != self.session_id or items[0].settled:
            return None
        session = self.sessions.get(self.session_id)
        if session is None or _named_profile(items[0]) != self.profile_id:
            return None
        if self.profile_id and self.profile_id not in self.profiles:
            return None
        return _Rows(
            sessions={self.session_id: session},
            profile_of={self.session_id: self.profile_id},
            profiles=dict(self.profiles),
            fresh=set(),
            members={},
            ledgers={},
            effects=dict(self.effects),
        )


def prefetch_session(session_id: str, profile_id: str) -> Prefetched:
    """Read a session's mirrored rows without locking them: the session, the profile
    ``profile_id`` ("" for none) and the session's current effects. Inside
    :func:`_db.together` the reads are only queued, and the rows are there when the block ends.

    For a caller that holds the session's key in the outbox (its push row in flight), so that no
    other push of the session is mirrored until it is done: its own mirror then needs no locks
    to see the rows as they will be when it writes. The evaluate_cart path sends these reads
    before the request, and the database answers them while Talon.One works on the cart.
    """
    found = Prefetched(session_id, profile_id)
    _read(CustomerSession, [session_id], found.sessions, lock=False)
    if profile_id:
        _read(CustomerProfile, [profile_id], found.profiles, lock=False)
    _read_current_effects([session_id], found.sessions, found.effects)
    return found


def _read_rows(items: Sequence[SessionAnswer], ids: list[str], loyal: set[str]) -> _Rows:
    """Lock and read every row the answers touch, in a fixed order (sessions, profiles,
    loyalty balances) and, where the answers name their profiles, in one round trip; rows
    missing are then created (``loyal``: the sessions whose answers carry loyalty)."""
    named = {item.session_id: _named_profile(item) for item in items}
    found = _Rows({}, {}, {}, set(), {}, {}, {})

    if all(name is not None for name in named.values()):
        found.profile_of = {sid: name or "" for sid, name in named.items()}
        with _db.together():
            _locked(CustomerSession, ids, found.sessions)
            _read_dependents(found, ids, loyal)
    else:
        _locked(CustomerSession, ids, found.sessions)
        for sid in ids:
            session = found.sessions.get(sid)
            known = session.profile_integration_id if session else ""
            found.profile_of[sid] = known if named[sid] is None else named[sid] or ""
        with _db.together():
            _read_dependents(found, ids, loyal)
    missing = [sid for sid in ids if sid not in found.sessions]
    raced = False
    if missing:
        made, created = _create_missing(CustomerSession, missing)
        found.sessions.update(made)
        raced = len(created) < len(missing)
        for sid in missing:
            if named[sid] is None:
                found.profile_of[sid] = made[sid].profile_integration_id
    wanted = sorted({p for p in found.profile_of.values() if p})
    absent = [p for p in wanted if p not in found.profiles]
    if absent:
        made, found.fresh = _create_missing(CustomerProfile, absent)
        found.profiles.update(made)
        raced = raced or len(found.fresh) < len(absent)
    if raced:
        # Another transaction created one of them meanwhile: it may have written rows that
        # hang on it, which the first read could not see.
        found.members, found.ledgers, found.effects = {}, {}, {}
        _read_dependents(found, ids, loyal, profiles=False)
    return found


def _read_dependents(
    found: _Rows, ids: list[str], loyal: set[str], *, profiles: bool = True
) -> None:
    """Queue the reads of the profiles (locked), their loyalty rows (balances locked) and the
    sessions' current effects, by integration id; the results land in ``found``."""
    if profiles:
        _locked(
            CustomerProfile, sorted({p for p in found.profile_of.values() if p}), found.profiles
        )
    members_of = sorted({found.profile_of[sid] for sid in loyal if found.profile_of.get(sid)})
    if members_of:

        def members(cursor: Any) -> None:
            for member in _db.instances(LoyaltyMembership)(cursor):
                found.members.setdefault(member.profile_id, {})[member.program_id] = member

        def ledgers(cursor: Any) -> None:
            for balance in _db.instances(LoyaltyBalance)(cursor):
                key = (balance.program_id, balance.subledger_id)
                found.ledgers.setdefault(balance.profile_id, {})[key] = balance

        count = len(members_of)
        _db.execute(_db.statement(_owned_sql, LoyaltyMembership, count), members_of, members)
        _db.execute(_db.statement(_owned_sql, LoyaltyBalance, count), members_of, ledgers)

    _read_current_effects(ids, found.sessions, found.effects)


def _read_current_effects(
    ids: list[str], sessions: dict[str, CustomerSession], into: dict[int, list[Effect]]
) -> None:
    """Queue the read of these sessions' current effects (by integration id, in id order): they
    land in ``into`` by session pk, each hung on its session from ``sessions``, which the
    statements queued before it fill."""

    def then(cursor: Any) -> None:
        by_pk = {session.pk: session for session in sessions.values()}
        for effect in _db.instances(Effect)(cursor):
            effect.session = by_pk[effect.session_id]
            into.setdefault(effect.session_id, []).append(effect)

    _db.execute(_db.statement(_current_effects_sql, len(ids)), [True, *ids], then)


def _named_profile(item: SessionAnswer) -> str | None:
    """The profile integration id the session will have once the answer is applied ("": none),
    as far as the answer and the request tell; None when only the session row knows."""
    data = item.answer.get("customerProfile")
    if isinstance(data, Mapping) and data.get("integrationId"):
        return str(data["integrationId"])
    # Where _apply_answer takes the session's profile from, in the same order.
    session = item.answer.get("customerSession")
    if not (isinstance(session, Mapping) and session):
        session = (item.sent or {}).get("customerSession")
        if not isinstance(session, Mapping):
            return None
    return str(session.get("profileId") or "") if "profileId" in session else None


def _locked_sql(model: type[models.Model], count: int, lock: bool = True) -> str:
    column = connection.ops.quote_name(model._meta.get_field("integration_id").column)
    table = connection.ops.quote_name(model._meta.db_table)
    where = f"{table}.{column} IN ({_db.marks(count)})"
    return _db.select_sql(model, where, f"{table}.{column}", lock=lock)


def _pks_sql(model: type[models.Model], count: int) -> str:
    """The pks of ``model``'s rows of ``count`` integration ids (a subquery)."""
    qn = connection.ops.quote_name
    opts = model._meta
    return (
        f"SELECT {qn(opts.pk.column)} FROM {qn(opts.db_table)}"  # noqa: S608
        f" WHERE {qn(opts.get_field('integration_id').column)} IN ({_db.marks(count)})"
    )


def _owned_sql(model: type[models.Model], count: int) -> str:
    """The rows of ``model`` owned by the profiles of ``count`` integration ids (locked when
    they are balances), in id order."""
    qn = connection.ops.quote_name
    table = qn(model._meta.db_table)
    owner = qn(model._meta.get_field("profile").column)
    ids = _pks_sql(CustomerProfile, count)
    order = f"{table}.{qn(model._meta.pk.column)}"
    where = f"{table}.{owner} {_in(count)} ({ids})"
    return _db.select_sql(model, where, order, lock=model is LoyaltyBalance)


def _in(count: int) -> str:
    """How a column is matched to the pks of ``count`` integration ids: for one, ``=`` (an
    integration id is unique), which PostgreSQL plans in less time than ``IN``."""
    return "=" if count == 1 else "IN"


def _current_effects_sql(count: int) -> str:
    qn = connection.ops.quote_name
    opts = Effect._meta
    table = qn(opts.db_table)
    ids = _pks_sql(CustomerSession, count)
    where = (
        f"{table}.{qn(opts.get_field('is_current').column)} = %s"
        f" AND {table}.{qn(opts.get_field('session').column)} {_in(count)} ({ids})"
    )
    return _db.select_sql(Effect, where, f"{table}.{qn(opts.pk.column)}", lock=False)


def _delete_current(session_pks: list[int]) -> None:
    """DELETE these sessions' current effects (history stays)."""
    _db.execute(_db.statement(_delete_current_sql, len(session_pks)), [True, *session_pks])


def _delete_current_sql(count: int) -> str:
    qn = connection.ops.quote_name
    opts = Effect._meta
    return (
        f"DELETE FROM {qn(opts.db_table)} WHERE {qn(opts.get_field('is_current').column)} = %s"  # noqa: S608
        f" AND {qn(opts.get_field('session').column)} IN ({_db.marks(count)})"
    )


def _delete_lines_from(ends: list[tuple[int, int]]) -> None:
    """DELETE the cart lines of each (session pk, position) at or past that position."""
    sql = _db.statement(_lines_from_sql, len(ends))
    _db.execute(sql, [value for pair in ends for value in pair])


def _lines_from_sql(count: int) -> str:
    qn = connection.ops.quote_name
    opts = CartItem._meta
    one = (
        f"({qn(opts.get_field('session').column)} = %s"
        f" AND {qn(opts.get_field('position').column)} >= %s)"
    )
    return f"DELETE FROM {qn(opts.db_table)} WHERE " + " OR ".join([one] * count)  # noqa: S608


def _retire_current(session_pks: list[int]) -> None:
    """Keep these sessions' current effects as history."""
    _db.execute(_db.statement(_retire_sql, len(session_pks)), [False, True, *session_pks])


def _retire_sql(count: int) -> str:
    qn = connection.ops.quote_name
    opts = Effect._meta
    current = qn(opts.get_field("is_current").column)
    return (
        f"UPDATE {qn(opts.db_table)} SET {current} = %s WHERE {current} = %s"  # noqa: S608
        f" AND {qn(opts.get_field('session').column)} IN ({_db.marks(count)})"
    )


def _reevaluate(session_pks: list[int]) -> None:
    """Stamp these sessions' (kept) current effects with the sessions' update counts."""
    _db.execute(_db.statement(_reevaluate_sql, len(session_pks)), [True, *session_pks])


def _reevaluate_sql(count: int) -> str:
    qn = connection.ops.quote_name
    opts, session = Effect._meta, CustomerSession._meta
    table = qn(opts.db_table)
    owner = qn(opts.get_field("session").column)
    count_of = (
        f"SELECT s.{qn(session.get_field('update_count').column)}"  # noqa: S608
        f" FROM {qn(session.db_table)} s WHERE s.{qn(session.pk.column)} = {table}.{owner}"
    )
    return (
        f"UPDATE {table} SET {qn(opts.get_field('evaluation').column)} = ({count_of})"  # noqa: S608
        f" WHERE {qn(opts.get_field('is_current').column)} = %s AND {owner} IN ({_db.marks(count)})"
    )


def _create_missing(
    model: type[M], integration_ids: Sequence[str]
) -> tuple[dict[str, M], set[str]]:
    """Create the rows of these integration ids, which a locked read just did not find; returns
    them, locked, and the ids whose rows this transaction created (a row another transaction
    inserted meanwhile is left alone, and not counted)."""
    rows: dict[str, M] = {}
    if not _db.writes_sets():
        created = set()
        for integration_id in integration_ids:
            rows[integration_id], made = _get_or_create(
                model, {"integration_id": integration_id}, lock=True
            )
            if made:
                created.add(integration_id)
        return rows, created
    new = [model(integration_id=integration_id) for integration_id in integration_ids]
    created = set(_db.insert(model, new, conflict=["integration_id"], ignore=True))
    _locked(model, list(integration_ids), rows)
    return rows, created


def _locked(model: type[M], integration_ids: list[str], into: dict[str, M]) -> None:
    """``SELECT ... WHERE integration_id IN (...) ORDER BY integration_id FOR UPDATE``, written
    out once: the rows land in ``into`` by integration id (at once, or at the end of the
    enclosing :func:`_db.together` block)."""
    _read(model, integration_ids, into, lock=True)


def _read(model: type[M], integration_ids: list[str], into: dict[str, M], *, lock: bool) -> None:
    """:func:`_locked`, or the same read without the lock."""
    if not integration_ids:
        return
    sql = _db.statement(_locked_sql, model, len(integration_ids), lock)

    def then(cursor: Any) -> None:
        into.update((row.integration_id, row) for row in _db.instances(model)(cursor))

    _db.execute(sql, integration_ids, then)


def _get_or_create(
    model: type[M],
    lookup: dict[str, Any],
    defaults: dict[str, Any] | None = None,
    *,
    lock: bool = False,
) -> tuple[M, bool]:
    """Fetch or create one row, surviving a concurrent insert of the same row.

    The create runs in a savepoint: when another transaction inserted the row first, the unique
    constraint fails only the savepoint and we re-read the winner's row. ``lock`` takes a row lock
    (PostgreSQL) so that two mirrors of one session or profile apply one after the other.
    """
    manager = model._default_manager
    queryset = manager.select_for_update() if lock else manager.all()
    try:
        return queryset.get(**lookup), False
    except model.DoesNotExist:
        pass
    try:
        with transaction.atomic():
            return manager.create(**lookup, **(defaults or {})), True
    except IntegrityError:
        return queryset.get(**lookup), False


def _send_on_commit(signal: Signal, sender: type[models.Model], **kwargs: Any) -> None:
    transaction.on_commit(lambda: _send(signal, sender, **kwargs))


def _send(signal: Signal, sender: type[models.Model], **kwargs: Any) -> None:
    # A shop's receiver that raises must not break the push that mirrored the answer.
    for receiver, result in signal.send_robust(sender=sender, **kwargs):
        if isinstance(result, Exception):
            logger.error(
                "receiver %r of a django-talonone signal raised",
                receiver,
                exc_info=(type(result), result, result.__traceback__),
            )


def _scrub(value: Any, integration_id: str) -> Any:
    if isinstance(value, Mapping):
        return {
            key: ("" if key in PERSONAL_KEYS else _scrub(item, integration_id))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_scrub(item, integration_id) for item in value]
    return "" if value == integration_id else value


def _int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        try:
            return int(Decimal(str(value)))
        except (InvalidOperation, ValueError, OverflowError):
            return None


def _decimal(value: Any) -> Decimal:
    if value is None or isinstance(value, bool):
        return Decimal(0)
    try:
        result = Decimal(str(value))
    except InvalidOperation:
        return Decimal(0)
    return result if result.is_finite() else Decimal(0)


def _datetime(value: Any) -> Any:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = parse_datetime(value)
    except ValueError:
        return None
    if parsed is not None and timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, datetime.timezone.utc)
    return parsed
