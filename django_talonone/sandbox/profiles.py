"""Customer profiles: update one (optionally running the rules) or many, their audiences, their
inventory, and the deletion of their personal data.
"""

from __future__ import annotations

import datetime
from typing import Any

from . import achievements, rewards
from .engine import Context, Outcome, evaluate
from .params import now_of, q_bool, q_silent, response_content
from .state import find_profile, join_audience, leave_audience
from .values import clone, fmt_time
from .views import (
    PROFILE_PARTS,
    campaign_view,
    event_view,
    giveaway_view,
    inventory_coupon_view,
    inventory_referral_view,
    loyalty_view,
    profile_view,
)
from .wire import ApiError, Call


def update_customer_profile_v2(state: Any, call: Call) -> tuple[int, Any]:
    """UpdateCustomerProfileV2: set attributes and audiences; run the rules when asked."""
    integration_id = call.path["integrationId"]
    body = call.body if isinstance(call.body, dict) else {}
    run = q_bool(call, "runRuleEngine")
    dry = q_bool(call, "dry")
    if body.get("responseContent") and not run:
        raise ApiError.bad_field(
            "/responseContent",
            "responseContent is not allowed without runRuleEngine=true",
            "without the rule engine the answer is only the profile",
        )
    if dry and not run:
        raise ApiError.bad_parameter("dry", "dry only works together with runRuleEngine=true")
    parts = response_content(body, PROFILE_PARTS) if run else set()
    attributes = body.get("attributes")
    if attributes is not None and not isinstance(attributes, dict):
        raise ApiError.bad_field("/attributes", "attributes must be an object")
    adds, deletes = _audience_changes(state, body.get("audiencesChanges"))
    now = now_of(call)
    now_s = fmt_time(now)
    profile = state.working_profile(integration_id, now_s, dry=dry)
    if attributes:
        profile["attributes"].update(clone(attributes))
    for aid in adds:
        if not dry:
            join_audience(state, profile, aid)
        elif aid not in profile["audiences"]:  # a dry run's copy: no audience record changes
            profile["audiences"].append(aid)
    for aid in deletes:
        if dry:
            profile["audiences"] = [a for a in profile["audiences"] if a != aid]
        else:
            leave_audience(state, profile, aid)
    profile["lastActivity"] = now_s
    outcome = Outcome()
    created: dict[str, list[Any]] = {"coupons": [], "giveaways": []}
    if run:
        evaluable = None
        if dry and body.get("evaluableCampaignIds") is not None:
            evaluable = set(body["evaluableCampaignIds"])
        ctx = Context(
            state,
            now,
            now_s,
            "profile",
            profile_id=integration_id,
            profile=profile,
            evaluable=evaluable,
        )
        outcome = evaluate(ctx)
        created = (
            rewards.preview(state, outcome)
            if dry
            else rewards.apply_now(state, outcome, profile, now_s, "rule")
        )
    event_id = state.peek_id("event") if dry or not run else state.next_id("event")
    answer = state_answer(
        state,
        outcome,
        created,
        parts or {"customerProfile"},
        profile,
        now_s,
        event=("talon_customer_profile_updated", event_id, profile["attributes"]),
    )
    return 200, answer


def update_customer_profiles_v2(state: Any, call: Call) -> tuple[int, Any]:
    """UpdateCustomerProfilesV2: set the attributes of up to 1000 profiles (no rule engine)."""
    body = call.body if isinstance(call.body, dict) else {}
    silent = q_silent(call)
    items = body.get("customerProfiles")
    if not isinstance(items, list) or not items:
        raise ApiError.bad_field("/customerProfiles", "customerProfiles must be a non-empty list")
    if len(items) > 1000:
        raise ApiError.bad_field(
            "/customerProfiles", "Too many profiles", f"at most 1000 per request, got {len(items)}"
        )
    for index, item in enumerate(items):
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("integrationId"), str)
            or not item["integrationId"]
        ):
            raise ApiError.bad_field(
                f"/customerProfiles/{index}/integrationId", "integrationId is required"
            )
        if item.get("attributes") is not None and not isinstance(item["attributes"], dict):
            raise ApiError.bad_field(
                f"/customerProfiles/{index}/attributes", "attributes must be an object"
            )
    now_s = fmt_time(now_of(call))
    states = []
    for item in items:
        profile = state.ensure_profile(item["integrationId"], now_s)
        profile["attributes"].update(clone(item.get("attributes") or {}))
        profile["lastActivity"] = now_s
        states.append({"customerProfile": profile_view(state, profile)})
    if silent:
        return 204, None
    return 200, {"integrationStates": states}


def update_customer_profile_audiences(state: Any, call: Call) -> tuple[int, Any]:
    """UpdateCustomerProfileAudiences: add profiles to and remove them from audiences."""
    body = call.body if isinstance(call.body, dict) else {}
    items = body.get("data") or []
    if not isinstance(items, list):
        raise ApiError.bad_field("/data", "data must be a list")
    for index, item in enumerate(items):
        where = f"/data/{index}"
        if not isinstance(item, dict):
            raise ApiError.bad_field(where, "an entry must be an object")
        if item.get("action") not in ("add", "delete"):
            raise ApiError.bad_field(f"{where}/action", 'action must be "add" or "delete"')
        if str(item.get("audienceId")) not in state.data["audiences"]:
            raise ApiError.not_found(f"audience {item.get('audienceId')}")
        find_profile(state, item.get("profileIntegrationId"))
    now_s = fmt_time(now_of(call))
    for item in items:
        profile = state.data["profiles"][item["profileIntegrationId"]]
        if item["action"] == "add":
            join_audience(state, profile, item["audienceId"])
        else:
            leave_audience(state, profile, item["audienceId"])
        profile["lastActivity"] = now_s
    return 204, None


def delete_customer_data(state: Any, call: Call) -> tuple[int, Any]:
    """DeleteCustomerData: remove a profile's personal data: its attributes and its sessions."""
    integration_id = call.path["integrationId"]
    profile = find_profile(state, integration_id)
    profile["attributes"] = {}
    for sid in profile["sessions"]:
        session = state.data["sessions"].pop(sid, None)
        if session is not None:
            _forget_pending(state, session)
    profile["sessions"] = []
    for referral in state.data["referrals"].values():
        if referral["advocateProfileIntegrationId"] == integration_id:
            referral["attributes"] = {}
    return 204, None


def get_customer_inventory(state: Any, call: Call) -> tuple[int, Any]:
    """GetCustomerInventory: the profile, referral codes, coupons, loyalty, giveaways and
    achievements, each when its query flag is true."""
    integration_id = call.path["integrationId"]
    profile = find_profile(state, integration_id)
    now_s = fmt_time(now_of(call))
    answer: dict[str, Any] = {}
    if q_bool(call, "profile"):
        answer["profile"] = profile_view(state, profile)
    if q_bool(call, "referrals"):
        answer["referrals"] = [
            inventory_referral_view(r)
            for r in state.data["referrals"].values()
            if r["advocateProfileIntegrationId"] == integration_id
        ]
    if q_bool(call, "coupons"):
        answer["coupons"] = [
            inventory_coupon_view(
                c, integration_id, state.config.campaigns_by_id.get(c["campaignId"]), now_s
            )
            for c in state.data["coupons"].values()
            if integration_id in c["reservedBy"]
            or c["recipientIntegrationId"] == integration_id
            or c["redemptions"].get(integration_id)
            or c["implicitlyReserved"]
        ]
    if q_bool(call, "loyalty"):
        cards = [
            identifier
            for entry in state.data["loyalty"].values()
            for identifier, card in entry["cards"].items()
            if any(p["integrationId"] == integration_id for p in card["profiles"])
        ]
        answer["loyalty"] = loyalty_view(state, integration_id, now_s, cards=cards)
    if q_bool(call, "giveaways"):
        views = []
        for pool_id, giveaway_id in profile["giveaways"]:
            pool = state.data["giveaways"].get(str(pool_id), {"codes": []})
            for giveaway in pool["codes"]:
                if giveaway["id"] == giveaway_id:
                    views.append(giveaway_view(giveaway, profile))
        answer["giveaways"] = views
    if q_bool(call, "achievements"):
        answer["achievements"] = achievements.inventory(state, profile)
    return 200, answer


def state_answer(
    state: Any,
    outcome: Outcome,
    created: dict[str, list[Any]],
    parts: set[str],
    profile: dict[str, Any] | None,
    now_s: str,
    *,
    event: tuple[str, int, dict[str, Any]],
    cards: list[str] | None = None,
    session_id: str | None = None,
) -> dict[str, Any]:
    """The answer of a profile update or an event: effects, what was created, and the parts
    ``responseContent`` asked for."""
    answer: dict[str, Any] = {
        "effects": clone(outcome.effects),
        "createdCoupons": created["coupons"],
        "createdReferrals": [],
    }
    if "customerProfile" in parts and profile is not None:
        answer["customerProfile"] = profile_view(state, profile)
    if "event" in parts:
        answer["event"] = event_view(
            state,
            event[1],
            now_s,
            event[0],
            event[2],
            answer["effects"],
            profile_id=profile["integrationId"] if profile else None,
            session_id=session_id,
        )
    if "loyalty" in parts and profile is not None:
        answer["loyalty"] = loyalty_view(state, profile["integrationId"], now_s, cards=cards or [])
    if "triggeredCampaigns" in parts:
        at = datetime.datetime.fromisoformat(now_s[:-1] + "+00:00")
        answer["triggeredCampaigns"] = [
            campaign_view(state, state.config.campaigns_by_id[cid], at) for cid in outcome.triggered
        ]
    if "ruleFailureReasons" in parts:
        answer["ruleFailureReasons"] = clone(outcome.failures)
    if "awardedGiveaways" in parts:
        answer["awardedGiveaways"] = created["giveaways"]
    return answer


# -- helpers --------------------------------------------------------------------------------


def _audience_changes(state: Any, changes: Any) -> tuple[list[int], list[int]]:
    if changes is None:
        return [], []
    if not isinstance(changes, dict):
        raise ApiError.bad_field(
            "/audiencesChanges", "audiencesChanges must be {adds: [...], deletes: [...]}"
        )
    out: list[list[int]] = []
    for key in ("adds", "deletes"):
        ids = changes.get(key) or []
        if not isinstance(ids, list):
            raise ApiError.bad_field(
                f"/audiencesChanges/{key}", f"{key} must be a list of audience ids"
            )
        for index, aid in enumerate(ids):
            if (
                isinstance(aid, bool)
                or not isinstance(aid, int)
                or str(aid) not in state.data["audiences"]
            ):
                raise ApiError.bad_field(
                    f"/audiencesChanges/{key}/{index}", f"no audience with id {aid!r}"
                )
        out.append(ids)
    return out[0], out[1]


def _forget_pending(state: Any, session: dict[str, Any]) -> None:
    """Drop a deleted open session's tentative points from the ledgers."""
    for was in session.get("pending", {}).values():
        program_id, card, profile_id = was["owner"]
        entry = state.data["loyalty"].get(str(program_id))
        if entry is None:
            continue
        holder = entry["cards"].get(card) if card else None
        book = holder["ledger"] if holder else entry["profiles"].get(profile_id or "")
        if book is not None:
            tx = book["transactions"].get(was["uuid"])
            if tx is not None and tx["open"]:
                del book["transactions"][was["uuid"]]
