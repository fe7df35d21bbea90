"""Carry out what an evaluation hands out: giveaways, created coupons, audience changes, points.

Sessions do this when they close; events and profile updates (which have no session to close)
do it at once through :func:`apply_now`.
"""

from __future__ import annotations

import datetime
from typing import Any

from . import ledger
from .engine import Grant, Outcome
from .state import join_audience, leave_audience
from .values import fmt_time
from .views import coupon_view, giveaway_view


def apply_now(
    state: Any, outcome: Outcome, profile: dict[str, Any] | None, now_s: str, source: str
) -> dict[str, list[Any]]:
    """Book an event's or profile update's effects at once; answers what was created."""
    apply_audiences(state, profile, outcome)
    for grant in outcome.grants:
        tx = book_grant(state, grant, now_s, source=source)
        grant.props["transactionUUID"] = tx["uuid"]
    for grant in outcome.deductions:
        grant.props["transactionUUID"] = state.new_uuid()
        book_deduction(state, grant, now_s, None)
    return {
        "giveaways": hand_out_giveaways(state, outcome, profile, now_s),
        "coupons": create_coupons(state, outcome, now_s),
    }


def preview(state: Any, outcome: Outcome) -> dict[str, list[Any]]:
    """What a dry run would hand out, shown in its effects but not handed out."""
    for grant in [*outcome.grants, *outcome.deductions]:
        if not grant.props["transactionUUID"]:
            grant.props["transactionUUID"] = state.new_uuid()
    for effect in outcome.giveaways:
        pool = state.data["giveaways"].get(str(effect["props"]["poolId"]), {"codes": []})
        free = next((g for g in pool["codes"] if g["profileIntegrationId"] is None), None)
        if free is not None:
            effect["props"]["giveawayId"] = free["id"]
            effect["props"]["code"] = free["code"]
    drop_unawarded(outcome)
    for effect, spec, _campaign_id in outcome.new_coupons:
        effect["props"]["value"] = f"{spec['prefix']}{state.peek_id('coupon'):06d}"
    return {"coupons": [], "giveaways": []}


def apply_audiences(state: Any, profile: dict[str, Any] | None, outcome: Outcome) -> None:
    """Make the audience changes of ``addToAudience``/``removeFromAudience`` effects."""
    if profile is None:
        return
    for action, audience_id in outcome.audience_changes:
        if action == "add":
            join_audience(state, profile, audience_id)
        else:
            leave_audience(state, profile, audience_id)


def ledger_of(
    state: Any, program_id: int, card: str | None, profile: str | None, now_s: str
) -> dict[str, Any]:
    """The ledger points go to: the card's when given, else the profile's."""
    if card:
        entry = state.program_data(program_id)["cards"].get(card)
        if entry is not None:
            return entry["ledger"]
    return state.profile_ledger(program_id, profile or "", now_s)


def book_grant(
    state: Any, grant: Grant, now_s: str, *, source: str, session: str | None = None
) -> dict[str, Any]:
    """Book the points of an ``addLoyaltyPoints`` effect as a (closed) addition."""
    program = state.config.programs[grant.program_id]
    book = ledger_of(state, grant.program_id, grant.card, grant.profile, now_s)
    start, expiry = _schedule(program, now_s, grant)
    return ledger.add_transaction(
        book,
        tx_id=state.next_id("ledgerEntry"),
        uuid=state.new_uuid(),
        created=now_s,
        kind="addition",
        amount=grant.amount,
        name=grant.name,
        subledger=grant.subledger,
        session=session,
        start=start,
        expiry=expiry,
        awaits_activation=program.activation == "action",
        source=source,
        ruleset_id=grant.ruleset_id,
        rule_name=grant.rule_name,
        card=grant.card,
        profile=grant.profile or None,
    )


def commit_open_grant(state: Any, grant: Grant, now_s: str) -> None:
    """Turn an open session's tentative addition into a real one (the session closed)."""
    book = ledger_of(state, grant.program_id, grant.card, grant.profile, now_s)
    tx = book["transactions"].get(grant.props["transactionUUID"])
    if tx is None:
        return
    program = state.config.programs[grant.program_id]
    tx["open"] = False
    tx["created"] = now_s
    if program.activation == "action":
        tx["awaitsActivation"] = True
    tx["startDate"], expiry = _schedule(program, now_s, grant)
    if expiry is not None:
        tx["expiryDate"] = expiry


def _schedule(program: Any, now_s: str, grant: Grant) -> tuple[str, str | None]:
    """When points booked at ``now_s`` become active and when they expire, by the program's
    rules; the dates that differ from the defaults are also written into the effect's props."""
    start = now_s
    if program.activation == "days":
        start = fmt_time(_at(now_s) + datetime.timedelta(days=program.activation_days))
        grant.props["startDate"] = start
    expiry = None
    if program.expire_after_days:
        expiry = fmt_time(_at(start) + datetime.timedelta(days=program.expire_after_days))
        grant.props["expiryDate"] = expiry
    return start, expiry


def book_deduction(state: Any, grant: Grant, now_s: str, session: str | None) -> None:
    """Book the points a ``deductLoyaltyPoints`` effect spends."""
    book = ledger_of(state, grant.program_id, grant.card, grant.profile, now_s)
    ledger.add_transaction(
        book,
        tx_id=state.next_id("ledgerEntry"),
        uuid=grant.props["transactionUUID"],
        created=now_s,
        kind="subtraction",
        amount=grant.amount,
        name=grant.name,
        subledger=grant.subledger,
        session=session,
        source="session" if session else "rule",
        reason="redeem",
        ruleset_id=grant.ruleset_id,
        rule_name=grant.rule_name,
        card=grant.card,
        profile=grant.profile or None,
    )


def hand_out_giveaways(
    state: Any, outcome: Outcome, profile: dict[str, Any] | None, now_s: str
) -> list[dict[str, Any]]:
    """Give each ``awardGiveaway`` effect a code from its pool; answers the Giveaways."""
    awarded = []
    for effect in outcome.giveaways:
        pool = state.data["giveaways"].get(str(effect["props"]["poolId"]), {"codes": []})
        free = next((g for g in pool["codes"] if g["profileIntegrationId"] is None), None)
        if free is None or profile is None:
            continue
        free["profileIntegrationId"] = profile["integrationId"]
        free["awarded"] = now_s
        profile["giveaways"].append([effect["props"]["poolId"], free["id"]])
        effect["props"]["giveawayId"] = free["id"]
        effect["props"]["code"] = free["code"]
        awarded.append(giveaway_view(free, profile))
    drop_unawarded(outcome)
    return awarded


def drop_unawarded(outcome: Outcome) -> None:
    """An empty giveaway pool awards nothing: its effect is dropped, as the API does."""
    kept = [
        (e, a)
        for e, a in zip(outcome.effects, outcome.allocs, strict=True)
        if e["effectType"] != "awardGiveaway" or "code" in e["props"]
    ]
    outcome.effects[:] = [e for e, _ in kept]
    outcome.allocs[:] = [a for _, a in kept]


def create_coupons(state: Any, outcome: Outcome, now_s: str) -> list[dict[str, Any]]:
    """Create the coupons of ``createCoupon`` rules; answers them as Coupons."""
    created = []
    for effect, spec, campaign_id in outcome.new_coupons:
        coupon_id = state.next_id("coupon")
        value = f"{spec['prefix']}{coupon_id:06d}"
        expiry = None
        if spec["validDays"]:
            expiry = fmt_time(_at(now_s) + datetime.timedelta(days=spec["validDays"]))
        coupon = {
            "id": coupon_id,
            "created": now_s,
            "campaignId": campaign_id,
            "value": value,
            "usageLimit": spec["usageLimit"],
            "usageCounter": 0,
            "profileLimit": 0,
            "reservationLimit": 0,
            "startDate": None,
            "expiryDate": expiry,
            "recipientIntegrationId": effect["props"]["profileId"] or None,
            "isReservationMandatory": False,
            "implicitlyReserved": False,
            "attributes": {},
            "reservedBy": [],
            "redemptions": {},
            "referralId": None,
        }
        state.data["coupons"][value] = coupon
        effect["props"]["value"] = value
        created.append(coupon_view(coupon))
    return created


def budget(state: Any, campaign_id: int, action: str, delta: int) -> None:
    """Count (or, with a negative delta, un-count) a campaign budget."""
    budgets = state.data["budgets"].setdefault(str(campaign_id), {})
    budgets[action] = max(0, budgets.get(action, 0) + delta)


def _at(stamp: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(stamp[:-1] + "+00:00")
