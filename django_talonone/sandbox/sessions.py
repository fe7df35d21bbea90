"""Customer sessions: updates and the state machine, reading and reopening.

States and moves (behaviour.md): a session is created ``open`` or ``closed``; ``open`` → ``closed``
or ``cancelled``; ``closed`` → ``cancelled`` (update), ``partially_returned`` (returns only) or
``open`` (reopen only); ``partially_returned`` → ``cancelled``. Anything else is a 400.

While a session is open, its loyalty points are pending in the ledgers and follow each update.
Closing *commits* the session (see :mod:`.commitments`); cancelling rolls back what was committed
and answers the rollback effects; returns are in :mod:`.returns`. Reopening answers the rollback
effects at once, rolls back pending points and the profile's totals, and keeps the rest (budgets,
active points) until the session is closed again or cancelled: then the old commitment is undone
before the new one is made.
"""

from __future__ import annotations

import datetime
from typing import Any

from . import achievements, catalogs, commitments, ledger, rewards
from .engine import Context, Line, Outcome, evaluate
from .params import now_of, q_bool, q_time, response_content
from .values import clone, fmt_time, to_cents
from .views import (
    SESSION_PARTS,
    campaign_view,
    event_view,
    integration_coupon_view,
    inventory_referral_view,
    loyalty_view,
    profile_view,
    session_view,
)
from .wire import ApiError, Call

STATES = ("open", "closed", "partially_returned", "cancelled")
#: Allowed moves through an update, by current state (None: the session does not exist yet).
_UPDATE_MOVES: dict[str | None, tuple[str, ...]] = {
    None: ("open", "closed"),
    "open": ("open", "closed", "cancelled"),
    "closed": ("closed", "cancelled"),
    "partially_returned": ("partially_returned", "cancelled"),
    "cancelled": ("cancelled",),
}


def update_customer_session_v2(state: Any, call: Call) -> tuple[int, Any]:
    """UpdateCustomerSessionV2: create or update a session, run the rules, move its state."""
    sid = call.path["customerSessionId"]
    body = call.body if isinstance(call.body, dict) else {}
    payload = body.get("customerSession")
    if not isinstance(payload, dict):
        raise ApiError.bad_field("/customerSession", "customerSession is required")
    parts = response_content(body, SESSION_PARTS)
    dry = q_bool(call, "dry")
    now = now_of(call)
    later = q_time(call, "now")
    if later is not None:
        if not dry:
            raise ApiError.bad_parameter("now", "now can only be used together with dry=true")
        if later <= now:
            raise ApiError.bad_parameter("now", "now must be a time stamp in the future")
        now = later
    _check_payload(state, payload)
    now_s = fmt_time(now)
    session = state.data["sessions"].get(sid)
    current = session["state"] if session is not None else None
    wanted = payload.get("state") or (current or "open")
    _check_move(current, wanted)
    if current is not None and current != "open" and wanted == current:
        return _unchanged(state, session, payload, parts, dry, now_s)
    if wanted == "cancelled":
        return _cancel(state, session, parts, dry, now_s)
    return _evaluate_and_store(state, sid, session, payload, parts, dry, now, now_s, wanted)


def get_customer_session(state: Any, call: Call) -> tuple[int, Any]:
    """GetCustomerSession: the session and its effects, rolled-back effects netted out."""
    session = find_session(state, call.path["customerSessionId"])
    return 200, {
        "customerSession": session_view(state, session),
        "effects": list(session["effects"]),
    }


def reopen_customer_session(state: Any, call: Call) -> tuple[int, Any]:
    """ReopenCustomerSession: closed → open; answers the effects that are rolled back."""
    session = find_session(state, call.path["customerSessionId"])
    if session["state"] != "closed":
        raise ApiError(
            400,
            f"only a closed session can be reopened; session {session['integrationId']!r} is "
            f"{session['state']}",
            [state_error("reopen")],
        )
    now_s = fmt_time(now_of(call))
    plan = commitments.plan_rollback(state, session, now_s)
    profile = state.data["profiles"].get(session["profileId"]) if session["profileId"] else None
    # Pending points were never spendable: they go at once. Budgets and active points wait for
    # the next close or cancel (behaviour.md).
    for item in plan:
        if item["effect"]["effectType"] == "rollbackAddedLoyaltyPoints":
            tx = commitments.find_tx(state, item)
            if tx is not None and ledger.status_of(tx, now_s) == "pending":
                commitments.execute_item(state, session, item, now_s)
    committed = session["committed"]
    if committed and committed["counted"] and profile is not None:
        commitments.uncount(profile, committed)
    session["rollbackDue"] = plan
    session["state"] = "open"
    session["updated"] = now_s
    session["reopenedAt"] = now_s
    state.next_id("event")  # talon_session_reopened
    return 200, {"effects": [clone(item["effect"]) for item in plan]}


# -- updates --------------------------------------------------------------------------------


def _evaluate_and_store(
    state: Any,
    sid: str,
    session: dict[str, Any] | None,
    payload: dict[str, Any],
    parts: set[str],
    dry: bool,
    now: datetime.datetime,
    now_s: str,
    wanted: str,
) -> tuple[int, Any]:
    base = session if (session is not None and not dry) else None
    merged = _merge(state, base, payload)
    profile_id = merged["profileId"]
    profile = state.data["profiles"].get(profile_id) if profile_id else None
    if profile is None and profile_id and not dry:
        profile = state.ensure_profile(profile_id, now_s)
    if session is not None and not dry:
        first = session["firstSession"]
    else:
        first = profile is None or not profile["sessions"] or profile["sessions"] == [sid]
    evaluable = None
    if dry and payload.get("evaluableCampaignIds") is not None:
        evaluable = set(payload["evaluableCampaignIds"])
    closing = wanted == "closed"
    ctx = Context(
        state,
        now,
        now_s,
        "session",
        profile_id=profile_id,
        profile=profile,
        lines=merged["lines"],
        add_costs=merged["costs"],
        coupon_codes=merged["couponCodes"],
        referral_code=merged["referralCode"],
        loyalty_cards=merged["loyaltyCards"],
        session_attrs=merged["attributes"],
        first_session=first,
        committed=session["committed"] if session is not None and not dry else None,
        evaluable=evaluable,
        closing=closing,
    )
    outcome = evaluate(ctx)
    if dry:
        record = _new_record(state, sid, merged, now_s, first, dry=True)
        if session is not None:
            record["id"] = session["id"]
            record["created"] = session["created"]
            record["updateCount"] = session["updateCount"] + 1
        record["state"] = wanted
        _preview_ids(state, session, outcome)
        created = rewards.preview(state, outcome)
        if closing and profile is not None:
            outcome.effects.extend(
                achievements.on_close(state, profile, merged["itemTotal"], now_s, dry=True)
            )
        event_id = state.peek_id("event")
        return 200, session_answer(
            state,
            record,
            outcome.effects,
            parts,
            now_s,
            outcome=outcome,
            profile=profile,
            event=("talon_session_updated", event_id),
            created=created,
            tentative=_tentative(outcome) if not closing else None,
        )
    if session is None:
        session = _new_record(state, sid, merged, now_s, first)
        state.data["sessions"][sid] = session
    else:
        _apply_merge(session, merged)
        session["updateCount"] += 1
        session["updated"] = now_s
    _link_profile(state, session, profile, now_s)
    rewards.apply_audiences(state, profile, outcome)
    _sync_pending(state, session, outcome, now_s)
    session["state"] = wanted
    created: dict[str, list[Any]] = {"coupons": [], "giveaways": []}
    if closing:
        if session.get("rollbackDue"):
            commitments.finish_rollback(state, session, now_s)
        created = commitments.commit(state, session, outcome, profile, merged["itemTotal"], now_s)
    session["effects"] = outcome.effects
    session["allocs"] = [_keyed(a) for a in outcome.allocs]
    event_id = state.next_id("event")
    return 200, session_answer(
        state,
        session,
        session["effects"],
        parts,
        now_s,
        outcome=outcome,
        profile=profile,
        event=("talon_session_updated", event_id),
        created=created,
        tentative=_tentative(outcome) if not closing else None,
    )


def _unchanged(
    state: Any,
    session: dict[str, Any],
    payload: dict[str, Any],
    parts: set[str],
    dry: bool,
    now_s: str,
) -> tuple[int, Any]:
    """An update that keeps a closed, returned or cancelled session in its state: it may change
    attributes (a retried close succeeds), not what the rules saw."""
    name = session["state"].replace("_", " ")
    if "cartItems" in payload and _fingerprint(payload["cartItems"]) != session["fingerprint"]:
        raise ApiError.bad_field(
            "/customerSession/cartItems",
            f"The cart of a {name} session cannot change",
            "reopen the session first (PUT …/reopen) or create a new session",
        )
    for field_name, stored in (
        ("couponCodes", session["couponCodes"]),
        ("referralCode", session["referralCode"]),
    ):
        if field_name in payload and payload[field_name] != stored:
            raise ApiError.bad_field(
                f"/customerSession/{field_name}",
                f"The {field_name} of a {name} session cannot change",
            )
    work = session if not dry else clone(session)
    if isinstance(payload.get("attributes"), dict):
        work["attributes"].update(clone(payload["attributes"]))
    work["updateCount"] += 1
    work["updated"] = now_s
    profile = state.data["profiles"].get(session["profileId"]) if session["profileId"] else None
    event_id = state.next_id("event") if not dry else state.peek_id("event")
    return 200, session_answer(
        state,
        work,
        work["effects"],
        parts,
        now_s,
        profile=profile,
        event=("talon_session_updated", event_id),
    )


def _cancel(
    state: Any, session: dict[str, Any] | None, parts: set[str], dry: bool, now_s: str
) -> tuple[int, Any]:
    assert session is not None  # _check_move refuses to create a cancelled session
    work = session if not dry else clone(session)
    profile = state.data["profiles"].get(session["profileId"]) if session["profileId"] else None
    effects: list[dict[str, Any]] = []
    if session["state"] == "open":
        if not dry:
            _sync_pending(state, work, Outcome(), now_s)  # the open session's points go
            if work.get("rollbackDue"):
                commitments.finish_rollback(state, work, now_s)
    else:
        plan = commitments.plan_rollback(state, work, now_s)
        effects = [item["effect"] for item in plan]
        if not dry:
            for item in plan:
                commitments.execute_item(state, work, item, now_s)
            committed = work["committed"]
            if committed and committed["counted"] and profile is not None:
                commitments.uncount(profile, committed)
            work["committed"] = None
    work["effects"] = []
    work["allocs"] = []
    work["state"] = "cancelled"
    work["updateCount"] += 1
    work["updated"] = now_s
    event_id = state.next_id("event") if not dry else state.peek_id("event")
    return 200, session_answer(
        state,
        work,
        clone(effects),
        parts,
        now_s,
        profile=profile,
        event=("talon_session_updated", event_id),
    )


# -- payload, merging and records ------------------------------------------------------------


def _check_payload(state: Any, cs: dict[str, Any]) -> None:
    """The API's semantic limits on a session payload (the HTTP layer checked its shape)."""
    where = "/customerSession"
    if "state" in cs and cs["state"] not in STATES:
        raise ApiError.bad_field(
            f"{where}/state", "Invalid session state", f"expected one of: {', '.join(STATES)}"
        )
    items = cs.get("cartItems")
    if items is not None:
        if not isinstance(items, list):
            raise ApiError.bad_field(f"{where}/cartItems", "cartItems must be a list")
        if len(items) > 1000:
            raise ApiError.bad_field(
                f"{where}/cartItems", "Too many cart items", f"at most 1000 items, got {len(items)}"
            )
        total = 0
        for index, item in enumerate(items):
            iw = f"{where}/cartItems/{index}"
            if not isinstance(item, dict):
                raise ApiError.bad_field(iw, "A cart item must be an object")
            sku = item.get("sku")
            if not isinstance(sku, str) or not sku:
                raise ApiError.bad_field(f"{iw}/sku", "sku is required and must not be empty")
            qty = item.get("quantity")
            if isinstance(qty, bool) or not isinstance(qty, int):
                raise ApiError.bad_field(
                    f"{iw}/quantity", "quantity is required and must be an integer"
                )
            if qty < 1:
                raise ApiError.bad_field(
                    f"{iw}/quantity", "quantity must be at least 1", f"got {qty}"
                )
            total += qty
            price = item.get("price")
            if price is None:
                if catalogs.find_item(state, sku) is None:
                    raise ApiError.bad_field(
                        f"{iw}/price", "price is required", f"SKU {sku!r} is not in a catalog"
                    )
            elif isinstance(price, bool) or not isinstance(price, (int, float)) or price < 0:
                raise ApiError.bad_field(f"{iw}/price", "price must be a number of at least 0")
        if total > 10000:
            raise ApiError.bad_field(
                f"{where}/cartItems",
                "Total quantity too large",
                f"the quantities of all cart items add up to at most 10000, got {total}",
            )
    codes = cs.get("couponCodes")
    if codes is not None:
        for index, code in enumerate(codes):
            if not isinstance(code, str) or len(code) > 100:
                raise ApiError.bad_field(
                    f"{where}/couponCodes/{index}", "Coupon code too long", "at most 100 characters"
                )
    referral = cs.get("referralCode")
    if isinstance(referral, str) and len(referral) > 100:
        raise ApiError.bad_field(
            f"{where}/referralCode", "Referral code too long", "at most 100 characters"
        )
    cards = cs.get("loyaltyCards")
    if isinstance(cards, list) and len(cards) > 1:
        raise ApiError.bad_field(
            f"{where}/loyaltyCards", "Too many loyalty cards", "at most 1 card"
        )
    identifiers = cs.get("identifiers")
    if isinstance(identifiers, list) and len(identifiers) > 5:
        raise ApiError.bad_field(
            f"{where}/identifiers", "Too many identifiers", "at most 5 identifiers"
        )
    costs = cs.get("additionalCosts")
    if isinstance(costs, dict):
        for name, cost in costs.items():
            price = cost.get("price") if isinstance(cost, dict) else None
            if isinstance(price, bool) or not isinstance(price, (int, float)) or price < 0:
                raise ApiError.bad_field(
                    f"{where}/additionalCosts/{name}/price", "price must be a number of at least 0"
                )


def _check_move(current: str | None, wanted: str) -> None:
    if wanted in _UPDATE_MOVES[current]:
        return
    if current is None:
        msg = f"a session can only be created as open or closed, not {wanted}"
    elif wanted == "partially_returned":
        msg = f"a session moves from {current} to partially_returned only through POST …/returns"
    elif current == "closed" and wanted == "open":
        msg = "a closed session is reopened only through PUT …/reopen"
    elif current == "cancelled":
        msg = "a cancelled session cannot change state"
    else:
        msg = f"a session cannot move from {current} to {wanted}"
    raise ApiError(
        400,
        f"Invalid session state transition: {msg}",
        [
            {
                "title": "Invalid session state transition",
                "details": msg,
                "source": {"pointer": "/customerSession/state"},
            }
        ],
    )


def _merge(state: Any, session: dict[str, Any] | None, cs: dict[str, Any]) -> dict[str, Any]:
    """The session as this update leaves it: fields sent replace, fields left out keep their
    value (attributes merge); with no stored session, only the payload counts."""
    prev = session or {}
    items_sent = "cartItems" in cs and cs["cartItems"] is not None
    if items_sent:
        items = []
        for raw in cs["cartItems"]:
            item = clone(raw)
            for computed in ("position", "returnedQuantity", "remainingQuantity"):
                item.pop(computed, None)
            if item.get("price") is None:
                entry = catalogs.find_item(state, item["sku"])
                item["price"] = entry["price"] if entry["price"] is not None else 0
                item["catalogItemID"] = entry["id"]
            items.append(item)
    else:
        items = prev.get("cartItems", [])
    costs = (
        cs["additionalCosts"]
        if cs.get("additionalCosts") is not None
        else prev.get("additionalCosts", {})
    )
    lines = []
    line_totals = []
    for position, item in enumerate(items):
        unit = to_cents(item["price"])
        line_totals.append(unit * item["quantity"])
        lines.append(Line(position, item["sku"], item.get("category"), item["quantity"], unit))
    item_total = sum(line_totals)
    cost_cents = {name: to_cents(cost["price"]) for name, cost in costs.items()}
    attributes = dict(prev.get("attributes", {}))
    if isinstance(cs.get("attributes"), dict):
        attributes.update(clone(cs["attributes"]))
    referral = (
        cs["referralCode"] if cs.get("referralCode") is not None else prev.get("referralCode", "")
    )
    return {
        "profileId": cs["profileId"]
        if cs.get("profileId") is not None
        else prev.get("profileId", ""),
        "storeIntegrationId": cs.get("storeIntegrationId", prev.get("storeIntegrationId")),
        "couponCodes": list(cs["couponCodes"])
        if cs.get("couponCodes") is not None
        else list(prev.get("couponCodes", [])),
        "referralCode": referral,
        "loyaltyCards": list(cs["loyaltyCards"])
        if cs.get("loyaltyCards") is not None
        else list(prev.get("loyaltyCards", [])),
        "identifiers": list(cs["identifiers"])
        if cs.get("identifiers") is not None
        else list(prev.get("identifiers", [])),
        "cartItems": items,
        "additionalCosts": clone(costs) if cs.get("additionalCosts") is not None else costs,
        "attributes": attributes,
        "fingerprint": _fingerprint(cs["cartItems"]) if items_sent else prev.get("fingerprint", []),
        "lines": lines,
        "lineTotals": line_totals,
        "costs": cost_cents,
        "itemTotal": item_total,
        "costTotal": sum(cost_cents.values()),
    }


_STORED = (
    "profileId",
    "storeIntegrationId",
    "couponCodes",
    "referralCode",
    "loyaltyCards",
    "identifiers",
    "cartItems",
    "additionalCosts",
    "attributes",
    "fingerprint",
    "lineTotals",
)


def _apply_merge(session: dict[str, Any], merged: dict[str, Any]) -> None:
    for key in _STORED:
        session[key] = merged[key]
    session["cartItemTotal"] = merged["itemTotal"]
    session["additionalCostTotal"] = merged["costTotal"]


def _new_record(
    state: Any, sid: str, merged: dict[str, Any], now_s: str, first: bool, *, dry: bool = False
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": state.peek_id("session") if dry else state.next_id("session"),
        "integrationId": sid,
        "created": now_s,
        "updated": now_s,
        "state": "open",
        "updateCount": 1,
        "firstSession": first,
        "effects": [],
        "allocs": [],
        "pending": {},
        "committed": None,
        "rollbackDue": None,
        "returns": [],
    }
    _apply_merge(record, merged)
    return record


def _fingerprint(items: Any) -> list[list[Any]]:
    """What identifies a cart for "did it change?" checks: SKU, quantity and price per line."""
    if not isinstance(items, list):
        return []
    return [[i.get("sku"), i.get("quantity"), i.get("price")] for i in items if isinstance(i, dict)]


def _link_profile(
    state: Any, session: dict[str, Any], profile: dict[str, Any] | None, now_s: str
) -> None:
    """Keep ``profile["sessions"]`` in step with the session's profileId (it may change once an
    anonymous cart logs in)."""
    sid = session["integrationId"]
    linked = session.get("linkedProfile") or ""
    if linked != session["profileId"]:
        old = state.data["profiles"].get(linked) if linked else None
        if old is not None and sid in old["sessions"]:
            old["sessions"].remove(sid)
        if profile is not None:
            profile["sessions"].append(sid)
        session["linkedProfile"] = session["profileId"]
    if profile is not None:
        profile["lastActivity"] = now_s


def _sync_pending(state: Any, session: dict[str, Any], outcome: Outcome, now_s: str) -> None:
    """Keep the open session's tentative points in the ledgers in step with its effects, reusing
    transaction UUIDs for the same effect so that they stay stable across updates."""
    old = session["pending"]
    new: dict[str, Any] = {}
    for grant in outcome.grants:
        owner = [grant.program_id, grant.card, grant.profile]
        was = old.pop("add:" + grant.key, None)
        book = rewards.ledger_of(state, grant.program_id, grant.card, grant.profile, now_s)
        tx = None
        if was is not None:
            if was["owner"] == owner:
                tx = book["transactions"].get(was["uuid"])
            else:
                _drop_pending(state, was, now_s)
        if tx is not None and tx["open"]:
            tx["amount"] = grant.amount
            tx["name"] = grant.name
            tx["subledgerId"] = grant.subledger
        else:
            tx = ledger.add_transaction(
                book,
                tx_id=state.next_id("ledgerEntry"),
                uuid=state.new_uuid(),
                created=now_s,
                kind="addition",
                amount=grant.amount,
                name=grant.name,
                subledger=grant.subledger,
                session=session["integrationId"],
                is_open=True,
                ruleset_id=grant.ruleset_id,
                rule_name=grant.rule_name,
                card=grant.card,
                profile=grant.profile or None,
            )
        grant.props["transactionUUID"] = tx["uuid"]
        new["add:" + grant.key] = {"uuid": tx["uuid"], "owner": owner}
    for grant in outcome.deductions:
        was = old.pop("deduct:" + grant.key, None)
        uuid = was["uuid"] if was is not None else state.new_uuid()
        grant.props["transactionUUID"] = uuid
        new["deduct:" + grant.key] = {
            "uuid": uuid,
            "owner": [grant.program_id, grant.card, grant.profile],
        }
    for was in old.values():
        _drop_pending(state, was, now_s)
    session["pending"] = new


def _drop_pending(state: Any, was: dict[str, Any], now_s: str) -> None:
    program_id, card, profile = was["owner"]
    book = rewards.ledger_of(state, program_id, card, profile, now_s)
    tx = book["transactions"].get(was["uuid"])
    if tx is not None and tx["open"]:
        del book["transactions"][was["uuid"]]


def _preview_ids(state: Any, session: dict[str, Any] | None, outcome: Outcome) -> None:
    """Transaction UUIDs for a dry run: the session's current ones where they exist."""
    pending = session["pending"] if session is not None else {}
    for prefix, grants in (("add:", outcome.grants), ("deduct:", outcome.deductions)):
        for grant in grants:
            was = pending.get(prefix + grant.key)
            grant.props["transactionUUID"] = was["uuid"] if was else state.new_uuid()


def _tentative(outcome: Outcome) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = {}
    for grant in outcome.deductions:
        by_sub = out.setdefault(grant.program_id, {})
        by_sub[grant.subledger] = by_sub.get(grant.subledger, 0) + grant.amount
    return out


def _keyed(alloc: dict[int, int] | None) -> dict[str, int] | None:
    return None if alloc is None else {str(k): v for k, v in alloc.items()}


def find_session(state: Any, sid: str) -> dict[str, Any]:
    """The stored session with this integration id, or the API's 404."""
    session = state.data["sessions"].get(sid)
    if session is None:
        # The reference lists no 404 for the session endpoints; an unknown id is still "not
        # found" here, as everywhere else, so that callers can tell it from a bad request.
        raise ApiError.not_found(f"customer session {sid!r}")
    return session


def state_error(action: str) -> dict[str, Any]:
    """The error entry of a 400 for an action the session's state does not allow."""
    return {
        "title": "Invalid session state transition",
        "details": f"the session's state does not allow a {action}",
        "source": {"parameter": "customerSessionId"},
    }


# -- the answer -----------------------------------------------------------------------------


def session_answer(
    state: Any,
    session: dict[str, Any],
    effects: list[dict[str, Any]],
    parts: set[str],
    now_s: str,
    *,
    outcome: Outcome | None = None,
    profile: dict[str, Any] | None = None,
    event: tuple[str | None, int] | None = None,
    created: dict[str, list[Any]] | None = None,
    tentative: dict[int, dict[str, int]] | None = None,
) -> dict[str, Any]:
    """An IntegrationStateV2 with the parts ``responseContent`` asked for."""
    created = created or {"coupons": [], "giveaways": []}
    answer: dict[str, Any] = {
        # shared with the state: the HTTP layer encodes the answer under the state's lock
        "effects": list(effects),
        "createdCoupons": created["coupons"],
        "createdReferrals": [],
    }
    if not parts:
        return answer
    if "customerSession" in parts:
        answer["customerSession"] = session_view(state, session)
    if "customerProfile" in parts and profile is not None:
        answer["customerProfile"] = profile_view(state, profile)
    if "event" in parts and event is not None and event[0] is not None:
        answer["event"] = event_view(
            state,
            event[1],
            now_s,
            event[0],
            session["attributes"],
            answer["effects"],
            profile_id=session["profileId"],
            session_id=session["integrationId"],
            store=session.get("storeIntegrationId"),
        )
    if "loyalty" in parts and (session["profileId"] or session["loyaltyCards"]):
        answer["loyalty"] = loyalty_view(
            state, session["profileId"], now_s, cards=session["loyaltyCards"], tentative=tentative
        )
    if "coupons" in parts:
        coupons = (
            outcome.coupons
            if outcome is not None
            else [
                state.data["coupons"][c]
                for c in session["couponCodes"]
                if c in state.data["coupons"]
            ]
        )
        answer["coupons"] = [integration_coupon_view(c, session["profileId"]) for c in coupons]
    if "triggeredCampaigns" in parts:
        at = datetime.datetime.fromisoformat(now_s[:-1] + "+00:00")
        ids = outcome.triggered if outcome is not None else []
        answer["triggeredCampaigns"] = [
            campaign_view(state, state.config.campaigns_by_id[cid], at) for cid in ids
        ]
    if "referral" in parts and session["referralCode"]:
        referral = state.data["referrals"].get(session["referralCode"])
        if referral is not None:
            answer["referral"] = inventory_referral_view(referral)
    if "awardedGiveaways" in parts:
        answer["awardedGiveaways"] = created["giveaways"]
    if "ruleFailureReasons" in parts:
        answer["ruleFailureReasons"] = clone(outcome.failures) if outcome is not None else []
    if "previousReturns" in parts:
        answer["previousReturns"] = [
            clone(state.data["returns"][str(r)]) for r in session.get("returns", [])
        ]
    return answer
