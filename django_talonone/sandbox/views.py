"""Render the sandbox's records as the API's wire models (camelCase dicts, JSON numbers).

Each function builds fresh dicts, so an answer never aliases the state it was rendered from.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django_talonone.client.schema import response_content_values

from . import ledger
from .campaigns import Campaign, Program
from .values import clone, money, points

#: Parts ``responseContent`` may ask for, by answer kind (from the OpenAPI files).
SESSION_PARTS = response_content_values("update_customer_session_v2")
RETURN_PARTS = response_content_values("return_cart_items")
PROFILE_PARTS = response_content_values("update_customer_profile_v2")
EVENT_PARTS = PROFILE_PARTS


def profile_view(state: Any, profile: dict[str, Any]) -> dict[str, Any]:
    """A CustomerProfile."""
    audiences = state.data["audiences"]
    return {
        "id": profile["id"],
        "created": profile["created"],
        "integrationId": profile["integrationId"],
        "attributes": clone(profile["attributes"]),
        "accountId": state.config.account_id,
        "closedSessions": profile["closedSessions"],
        "totalSales": money(profile["totalSales"]),
        # deprecated by the API and always null (behaviour.md)
        "loyaltyMemberships": None,
        "audienceMemberships": [
            {"id": aid, "name": audiences[str(aid)]["name"]}
            for aid in profile["audiences"]
            if str(aid) in audiences
        ],
        "lastActivity": profile["lastActivity"],
        "sandbox": True,
    }


def session_view(state: Any, session: dict[str, Any]) -> dict[str, Any]:
    """A CustomerSessionV2."""
    items = []
    for position, item in enumerate(session["cartItems"]):
        # shallow: the HTTP layer encodes the answer under the state's lock
        view = dict(item)
        view["position"] = position
        if "returnedQuantity" in item:
            view["remainingQuantity"] = item["quantity"] - item["returnedQuantity"]
        items.append(view)
    item_total = session["cartItemTotal"]
    cost_total = session["additionalCostTotal"]
    view = {
        "id": session["id"],
        "created": session["created"],
        "integrationId": session["integrationId"],
        "applicationId": state.config.application_id,
        "profileId": session["profileId"],
        "couponCodes": list(session["couponCodes"]),
        "referralCode": session["referralCode"],
        "loyaltyCards": list(session["loyaltyCards"]),
        "state": session["state"],
        "cartItems": items,
        "additionalCosts": clone(session["additionalCosts"]),
        "identifiers": list(session["identifiers"]),
        "attributes": clone(session["attributes"]),
        "firstSession": session["firstSession"],
        "updateCount": session["updateCount"],
        "total": money(item_total + cost_total),
        "cartItemTotal": money(item_total),
        "additionalCostTotal": money(cost_total),
        "updated": session["updated"],
    }
    if session.get("storeIntegrationId"):
        view["storeIntegrationId"] = session["storeIntegrationId"]
    return view


def coupon_view(coupon: dict[str, Any]) -> dict[str, Any]:
    """A Coupon."""
    view: dict[str, Any] = {
        "id": coupon["id"],
        "created": coupon["created"],
        "campaignId": coupon["campaignId"],
        "value": coupon["value"],
        "usageLimit": coupon["usageLimit"],
        "usageCounter": coupon["usageCounter"],
        "reservationLimit": coupon["reservationLimit"],
        "reservationCounter": len(coupon["reservedBy"]),
        "attributes": clone(coupon["attributes"]),
        "reservation": True,
        "isReservationMandatory": coupon["isReservationMandatory"],
        "implicitlyReserved": coupon["implicitlyReserved"],
        "limits": [],
    }
    if coupon["profileLimit"]:
        view["limits"].append(
            {
                "action": "redeemCoupon",
                "limit": coupon["profileLimit"],
                "entities": ["Coupon", "Profile"],
            }
        )
    for key in ("startDate", "expiryDate", "recipientIntegrationId", "referralId"):
        if coupon.get(key) is not None:
            view[key] = coupon[key]
    return view


def integration_coupon_view(coupon: dict[str, Any], profile_id: str) -> dict[str, Any]:
    """An IntegrationCoupon: a Coupon plus how often this profile redeemed it."""
    view = coupon_view(coupon)
    view["profileRedemptionCount"] = coupon["redemptions"].get(profile_id, 0)
    return view


def inventory_coupon_view(
    coupon: dict[str, Any], profile_id: str, campaign: Campaign | None, now: str
) -> dict[str, Any]:
    """An InventoryCoupon: an IntegrationCoupon plus its state for this profile."""
    view = integration_coupon_view(coupon, profile_id)
    if campaign is None or campaign.state != "enabled":
        state = "disabled"
    elif view["profileRedemptionCount"] or (
        coupon["usageLimit"] and coupon["usageCounter"] >= coupon["usageLimit"]
    ):
        state = "used"
    elif coupon["expiryDate"] and coupon["expiryDate"] <= now:
        state = "expired"
    elif coupon["startDate"] and coupon["startDate"] > now:
        state = "pending"
    else:
        state = "active"
    view["state"] = state
    return view


def referral_view(referral: dict[str, Any]) -> dict[str, Any]:
    """A Referral."""
    view = {
        "id": referral["id"],
        "created": referral["created"],
        "campaignId": referral["campaignId"],
        "advocateProfileIntegrationId": referral["advocateProfileIntegrationId"],
        "code": referral["code"],
        "usageCounter": referral["usageCounter"],
        "usageLimit": referral["usageLimit"],
        "attributes": clone(referral["attributes"]),
    }
    for key in ("startDate", "expiryDate", "friendProfileIntegrationId"):
        if referral.get(key) is not None:
            view[key] = referral[key]
    return view


def inventory_referral_view(referral: dict[str, Any]) -> dict[str, Any]:
    """An InventoryReferral: a Referral plus the customers it referred."""
    view = referral_view(referral)
    view["referredCustomers"] = list(referral["referredCustomers"])
    return view


def campaign_view(state: Any, campaign: Campaign, now: Any) -> dict[str, Any]:
    """A Campaign (as ``triggeredCampaigns`` lists it)."""
    budgets = state.data["budgets"].get(str(campaign.id), {})
    view: dict[str, Any] = {
        "id": campaign.id,
        "created": state.loaded_at,
        "applicationId": state.config.application_id,
        "userId": 1,
        "name": campaign.name,
        "description": campaign.description,
        "attributes": clone(campaign.attributes),
        "state": campaign.state,
        "activeRulesetId": campaign.ruleset_id,
        "tags": list(campaign.tags),
        "features": list(campaign.features),
        "limits": [
            {"action": action, "limit": limit, "entities": ["Campaign"]}
            for action, limit in campaign.limits.items()
        ],
        "budgets": [
            {"action": action, "limit": limit, "counter": budgets.get(action, 0)}
            for action, limit in campaign.limits.items()
        ],
        "type": "advanced",
        "frontendState": campaign.frontend_state(now),
        "storesImported": False,
    }
    if campaign.start is not None:
        view["startTime"] = campaign.start.strftime("%Y-%m-%dT%H:%M:%SZ")
    if campaign.end is not None:
        view["endTime"] = campaign.end.strftime("%Y-%m-%dT%H:%M:%SZ")
    return view


def audience_view(state: Any, audience: dict[str, Any]) -> dict[str, Any]:
    """An Audience."""
    view = {
        "accountId": state.config.account_id,
        "id": audience["id"],
        "created": audience["created"],
        "name": audience["name"],
        "sandbox": True,
        "description": audience.get("description", ""),
        "createdIn3rdParty": bool(audience.get("integration")),
    }
    for key in ("integration", "integrationId", "lastUpdate"):
        if audience.get(key):
            view[key] = audience[key]
    return view


def giveaway_view(giveaway: dict[str, Any], profile: dict[str, Any] | None) -> dict[str, Any]:
    """A Giveaway."""
    view = {
        "id": giveaway["id"],
        "created": giveaway["created"],
        "code": giveaway["code"],
        "poolId": giveaway["poolId"],
        "used": giveaway["profileIntegrationId"] is not None,
        "attributes": {},
    }
    if giveaway["profileIntegrationId"] is not None:
        view["profileIntegrationId"] = giveaway["profileIntegrationId"]
        if profile is not None:
            view["profileId"] = profile["id"]
    return view


def event_view(
    state: Any,
    event_id: int,
    created: str,
    event_type: str,
    attributes: dict[str, Any],
    effects: list[dict[str, Any]],
    *,
    profile_id: str | None = None,
    session_id: str | None = None,
    store: str | None = None,
) -> dict[str, Any]:
    """An Event."""
    view: dict[str, Any] = {
        "id": event_id,
        "created": created,
        "applicationId": state.config.application_id,
        "type": event_type,
        "attributes": clone(attributes),
        "effects": clone(effects),
        "ledgerEntries": [],
    }
    if profile_id:
        view["profileId"] = profile_id
    if session_id:
        view["sessionId"] = session_id
    if store:
        view["storeIntegrationId"] = store
    return view


def ledger_info(
    program: Program, book: dict[str, Any] | None, at: str, subledger: str = "", tentative: int = 0
) -> dict[str, Any]:
    """A LedgerInfo: balances of a (sub)ledger, ``tentative`` = points the open session would
    still deduct."""
    bal = ledger.balance(book, at, subledger) if book is not None else ledger.Balance()
    tentative_current = bal.active - tentative
    tentative_negative = bal.negative + max(0, -tentative_current)
    info: dict[str, Any] = {
        "currentBalance": points(bal.active),
        "pendingBalance": points(bal.pending),
        "negativeBalance": points(bal.negative),
        # deprecated by the API and always 0 (behaviour.md)
        "expiredBalance": 0,
        "spentBalance": 0,
        "tentativeCurrentBalance": points(max(0, tentative_current)),
        "tentativePendingBalance": points(bal.pending),
        "tentativeNegativeBalance": points(tentative_negative),
    }
    if subledger == "" and program.tiers:
        tier, following = tier_of(program, bal.active)
        if tier is not None:
            info["currentTier"] = {"id": tier.id, "name": tier.name}
        if following is not None:
            info["pointsToNextTier"] = points(following.min_points - bal.active)
    return info


def program_ledgers_view(
    program: Program, book: dict[str, Any], at: str, tentative: dict[str, int] | None = None
) -> dict[str, Any]:
    """A LoyaltyProgramLedgers: a profile's main ledger and subledgers in one program."""
    tentative = tentative or {}
    return {
        "id": program.id,
        "title": program.title,
        "name": program.name,
        "joinDate": book["joined"],
        "ledger": ledger_info(program, book, at, "", tentative.get("", 0)),
        "subLedgers": {
            sub: ledger_info(program, book, at, sub, tentative.get(sub, 0))
            for sub in program.subledgers
        },
    }


def card_view(
    state: Any, program: Program, card: dict[str, Any], at: str, *, balances: bool = True
) -> dict[str, Any]:
    """A LoyaltyCard (with its balances unless ``balances`` is False)."""
    view: dict[str, Any] = {
        "id": card["id"],
        "created": card["created"],
        "programID": program.id,
        "programName": program.name,
        "programTitle": program.title,
        "status": card["status"],
        "identifier": card["identifier"],
        "usersPerCardLimit": program.users_per_card_limit,
        "profiles": [dict(p) for p in card["profiles"]],
        "modified": card["modified"],
    }
    if balances:
        view["ledger"] = ledger_info(program, card["ledger"], at)
        view["subledgers"] = {
            sub: ledger_info(program, card["ledger"], at, sub) for sub in program.subledgers
        }
    return view


def loyalty_view(
    state: Any,
    profile_id: str,
    at: str,
    *,
    cards: Iterable[str] = (),
    tentative: dict[int, dict[str, int]] | None = None,
) -> dict[str, Any]:
    """A Loyalty: the profile's ledgers per program, and the given loyalty cards."""
    tentative = tentative or {}
    programs: dict[str, Any] = {}
    card_views: list[dict[str, Any]] = []
    for program in state.config.programs.values():
        entry = state.data["loyalty"].get(str(program.id))
        if entry is None:
            continue
        if program.card_based:
            for identifier in cards:
                card = entry["cards"].get(identifier)
                if card is not None:
                    card_views.append(card_view(state, program, card, at))
            continue
        book = entry["profiles"].get(profile_id) if profile_id else None
        if book is not None:
            programs[str(program.id)] = program_ledgers_view(
                program, book, at, tentative.get(program.id)
            )
    view: dict[str, Any] = {"programs": programs}
    if card_views:
        view["cards"] = card_views
    return view


def tier_of(program: Program, active: int) -> tuple[Any, Any]:
    """The tier reached with ``active`` points (hundredths) and the next one (or None)."""
    current = None
    following = None
    for tier in program.tiers:
        if tier.min_points <= active:
            current = tier
        else:
            following = tier
            break
    return current, following
