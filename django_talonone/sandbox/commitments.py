"""What closing a customer session commits, and rolling it back (cancel, reopen, returns).

Closing *commits* a session: coupon and referral redemptions and budgets, the session's loyalty
points and deductions, giveaways, created coupons, achievement progress and the profile's totals.
A rollback plan lists, for what the session's (netted) effects committed, the rollback effect the
API answers and what undoing it takes; items are carried out once.
"""

from __future__ import annotations

from typing import Any

from . import achievements, ledger, rewards
from .engine import Outcome
from .values import to_hundredths

#: Effect types a rollbackDiscount undoes.
DISCOUNT_EFFECTS = ("setDiscount", "setDiscountPerItem", "setDiscountPerAdditionalCost")


def commit(
    state: Any,
    session: dict[str, Any],
    outcome: Outcome,
    profile: dict[str, Any] | None,
    item_total: int,
    now_s: str,
) -> dict[str, list[Any]]:
    """Commit a session that closes with ``outcome``; answers the coupons and giveaways handed
    out (Coupon and Giveaway views)."""
    profile_id = session["profileId"]
    for coupon in outcome.accepted_coupons:
        coupon["usageCounter"] += 1
        if profile_id:
            coupon["redemptions"][profile_id] = coupon["redemptions"].get(profile_id, 0) + 1
        rewards.budget(state, coupon["campaignId"], "redeemCoupon", 1)
    referral = outcome.referral if outcome.referral_accepted else None
    if referral is not None:
        referral["usageCounter"] += 1
        if profile_id and profile_id not in referral["referredCustomers"]:
            referral["referredCustomers"].append(profile_id)
        rewards.budget(state, referral["campaignId"], "redeemReferral", 1)
    for grant in outcome.grants:
        rewards.commit_open_grant(state, grant, now_s)
    for grant in outcome.deductions:
        rewards.book_deduction(state, grant, now_s, session["integrationId"])
    session["pending"] = {}
    awarded = rewards.hand_out_giveaways(state, outcome, profile, now_s)
    new_coupons = rewards.create_coupons(state, outcome, now_s)
    if profile is not None:
        progress = achievements.on_close(state, profile, item_total, now_s, dry=False)
        outcome.effects.extend(progress)
        outcome.allocs.extend([None] * len(progress))
        profile["closedSessions"] += 1
        profile["totalSales"] += session["cartItemTotal"] + session["additionalCostTotal"]
        profile["lastActivity"] = now_s
    session["committed"] = {
        "coupons": [c["value"] for c in outcome.accepted_coupons],
        "referral": referral["code"] if referral is not None else None,
        "sales": session["cartItemTotal"] + session["additionalCostTotal"],
        "counted": profile is not None,
        "profile": profile_id,
        "closedAt": now_s,
    }
    session["closedAt"] = now_s
    return {"coupons": new_coupons, "giveaways": awarded}


def plan_rollback(state: Any, session: dict[str, Any], now_s: str) -> list[dict[str, Any]]:
    """The rollback effects for what the session's (netted) effects committed, each with what
    undoing it takes; nothing is changed yet."""
    plan: list[dict[str, Any]] = []
    committed = session.get("committed") or {}
    # the profile that redeemed: a reopened session may have moved to another profile since
    profile_id = committed.get("profile", session["profileId"])
    for effect in session["effects"]:
        etype = effect["effectType"]
        props = effect["props"]
        base = {
            k: effect[k]
            for k in ("campaignId", "rulesetId", "ruleIndex", "ruleName")
            if k in effect
        }
        if "triggeredByCoupon" in effect:
            base["triggeredByCoupon"] = effect["triggeredByCoupon"]
        item: dict[str, Any] | None = None
        if etype in DISCOUNT_EFFECTS:
            rb: dict[str, Any] = {"name": props["name"], "value": props["value"]}
            if etype == "setDiscount":
                rb["scope"] = props.get("scope", "sessionTotal")
            elif etype == "setDiscountPerItem":
                rb["cartItemPosition"] = props["position"]
                if "subPosition" in props:
                    rb["cartItemSubPosition"] = props["subPosition"]
                rb["scope"] = "cartItems"
            else:
                rb["additionalCostId"] = props["additionalCostId"]
                rb["additionalCost"] = props["additionalCost"]
                rb["scope"] = "additionalCosts"
            item = {"effect": rollback_effect(base, "rollbackDiscount", rb)}
        elif etype == "acceptCoupon":
            item = {
                "effect": rollback_effect(base, "rollbackCoupon", {"value": props["value"]}),
                "coupon": props["value"],
            }
        elif etype == "acceptReferral":
            item = {
                "effect": rollback_effect(base, "rollbackReferral", {"value": props["value"]}),
                "referral": props["value"],
            }
        elif etype == "addLoyaltyPoints":
            rb = {
                "programId": props["programId"],
                "subLedgerId": props["subLedgerId"],
                "value": props["value"],
                "recipientIntegrationId": props["recipientIntegrationId"],
                "transactionUUID": state.new_uuid(),
            }
            if "cardIdentifier" in props:
                rb["cardIdentifier"] = props["cardIdentifier"]
            item = {
                "effect": rollback_effect(base, "rollbackAddedLoyaltyPoints", rb),
                "target": props["transactionUUID"],
            }
        elif etype == "deductLoyaltyPoints":
            rb = {
                "programId": props["programId"],
                "subLedgerId": props["subLedgerId"],
                "value": props["value"],
                "recipientIntegrationId": profile_id,
                "transactionUUID": state.new_uuid(),
                "startDate": now_s,
            }
            if "cardIdentifier" in props:
                rb["cardIdentifier"] = props["cardIdentifier"]
            item = {"effect": rollback_effect(base, "rollbackDeductedLoyaltyPoints", rb)}
        elif etype == "increaseAchievementProgress":
            item = {"effect": achievements.rollback_effect(state, session, effect)}
        if item is not None:
            item["done"] = False
            item["profile"] = profile_id
            plan.append(item)
    return plan


def execute_item(state: Any, session: dict[str, Any], item: dict[str, Any], now_s: str) -> None:
    """Undo one commitment of a rollback plan (once)."""
    if item["done"]:
        return
    item["done"] = True
    effect = item["effect"]
    etype = effect["effectType"]
    props = effect["props"]
    profile_id = item.get("profile", session["profileId"])
    if etype == "rollbackCoupon":
        coupon = state.data["coupons"].get(item["coupon"])
        if coupon is not None:
            coupon["usageCounter"] = max(0, coupon["usageCounter"] - 1)
            if profile_id and coupon["redemptions"].get(profile_id):
                coupon["redemptions"][profile_id] -= 1
            rewards.budget(state, coupon["campaignId"], "redeemCoupon", -1)
    elif etype == "rollbackReferral":
        referral = state.data["referrals"].get(item["referral"])
        if referral is not None:
            referral["usageCounter"] = max(0, referral["usageCounter"] - 1)
            if profile_id in referral["referredCustomers"]:
                referral["referredCustomers"].remove(profile_id)
            rewards.budget(state, referral["campaignId"], "redeemReferral", -1)
    elif etype in ("rollbackAddedLoyaltyPoints", "rollbackDeductedLoyaltyPoints"):
        card = props.get("cardIdentifier")
        book = rewards.ledger_of(
            state, props["programId"], card, props["recipientIntegrationId"], now_s
        )
        adding = etype == "rollbackDeductedLoyaltyPoints"
        ledger.add_transaction(
            book,
            tx_id=state.next_id("ledgerEntry"),
            uuid=props["transactionUUID"],
            created=now_s,
            kind="addition" if adding else "subtraction",
            amount=to_hundredths(props["value"]),
            name="Rollback of " + ("deducted" if adding else "added") + " points",
            subledger=props["subLedgerId"],
            session=session["integrationId"],
            reason="reimburse" if adding else "rollback",
            target=item.get("target"),
            ruleset_id=effect.get("rulesetId"),
            rule_name=effect.get("ruleName"),
            card=card,
            profile=props["recipientIntegrationId"] or None,
        )
    elif etype == "rollbackIncreasedAchievementProgress":
        achievements.apply_rollback(state, session, effect, now_s)


def finish_rollback(state: Any, session: dict[str, Any], now_s: str) -> None:
    """Carry out what a reopen planned, before the session commits again or is cancelled."""
    for item in session.get("rollbackDue") or []:
        execute_item(state, session, item, now_s)
    session["rollbackDue"] = None
    session["committed"] = None


def uncount(profile: dict[str, Any], committed: dict[str, Any]) -> None:
    """Take a committed session out of its profile's ``closedSessions`` and ``totalSales``."""
    profile["closedSessions"] = max(0, profile["closedSessions"] - 1)
    profile["totalSales"] = max(0, profile["totalSales"] - committed["sales"])
    committed["counted"] = False


def find_tx(state: Any, item: dict[str, Any]) -> dict[str, Any] | None:
    """The ledger transaction a ``rollbackAddedLoyaltyPoints`` plan item rolls back, if any."""
    props = item["effect"]["props"]
    entry = state.data["loyalty"].get(str(props["programId"]))
    if entry is None:
        return None
    card = props.get("cardIdentifier")
    if card:
        holder = entry["cards"].get(card)
        book = holder["ledger"] if holder else None
    else:
        book = entry["profiles"].get(props["recipientIntegrationId"])
    return book["transactions"].get(item.get("target")) if book else None


def rollback_effect(
    base: dict[str, Any], effect_type: str, props: dict[str, Any]
) -> dict[str, Any]:
    """A rollback effect with the campaign and rule fields (``base``) of the effect it undoes."""
    effect = dict(base)
    effect["effectType"] = effect_type
    effect["props"] = props
    return effect
