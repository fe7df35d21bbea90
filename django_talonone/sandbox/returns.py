"""ReturnCartItems: return units of a closed session and roll back the effects they carried.

The body wraps the items: ``{"return": {"returnedCartItems": [{position, quantity, sku}]}}``.
A return moves the session from closed to partially_returned, rolls back the per-item discounts of
the returned units and their share of cart discounts and of per-currency-unit points, and nets that
out of the session's effects. The ``Idempotency-Key`` header makes a return happen once: the same
key on the same session answers the first answer again for 24 hours.
"""

from __future__ import annotations

import datetime
from typing import Any

from . import commitments, sessions
from .params import now_of, q_bool, response_content
from .values import clone, fmt_time, money, points, prorate, to_cents, to_hundredths
from .views import RETURN_PARTS
from .wire import ApiError, Call

#: How long an answer is kept for its Idempotency-Key.
IDEMPOTENCY_TTL = datetime.timedelta(hours=24)


def return_cart_items(state: Any, call: Call) -> tuple[int, Any]:
    """ReturnCartItems: roll back the effects of returned units; closed → partially_returned."""
    sid = call.path["customerSessionId"]
    key = call.headers.get("idempotency-key")
    dry = q_bool(call, "dry")
    now = now_of(call)
    if key is not None:
        if len(key) > 255:
            raise ApiError.bad_parameter(
                "Idempotency-Key", "Idempotency-Key is at most 255 characters"
            )
        stored = _remembered(state, sid, key, now)
        if stored is not None:
            return stored["status"], clone(stored["body"])
    body = call.body if isinstance(call.body, dict) else {}
    parts = response_content(body, RETURN_PARTS)
    session = sessions.find_session(state, sid)
    if session["state"] not in ("closed", "partially_returned"):
        raise ApiError(
            400,
            f"only a closed or partially returned session accepts returns; session {sid!r} is "
            f"{session['state']}",
            [sessions.state_error("return")],
        )
    wrapper = body.get("return")
    if not isinstance(wrapper, dict) or not isinstance(wrapper.get("returnedCartItems"), list):
        raise ApiError.bad_field(
            "/return/returnedCartItems", "return.returnedCartItems is required"
        )
    returned = _check_returns(session, wrapper["returnedCartItems"])
    now_s = fmt_time(now)
    work = session if not dry else clone(session)
    effects = _apply_return(state, work, returned, now_s, dry)
    profile = state.data["profiles"].get(session["profileId"]) if session["profileId"] else None
    event_id = state.next_id("event") if not dry else state.peek_id("event")
    record = {
        "id": state.next_id("return") if not dry else state.peek_id("return"),
        "created": now_s,
        "applicationId": state.config.application_id,
        "accountId": state.config.account_id,
        "returnedCartItems": [
            {"position": pos, "quantity": qty, "sku": work["cartItems"][pos]["sku"]}
            for pos, qty in returned
        ],
        "eventId": event_id,
        "sessionId": session["id"],
        "sessionIntegrationId": sid,
    }
    if profile is not None:
        record["profileId"] = profile["id"]
        record["profileIntegrationId"] = profile["integrationId"]
    previous = [clone(state.data["returns"][str(r)]) for r in session["returns"]]
    if not dry:
        state.data["returns"][str(record["id"])] = record
        session["returns"].append(record["id"])
        session["updated"] = now_s
    answer = sessions.session_answer(
        state,
        work,
        effects,
        parts,
        now_s,
        event=("talon_return_created" if "event" in parts else None, event_id),
        profile=profile,
    )
    answer["return"] = clone(record)
    if "previousReturns" in parts:
        answer["previousReturns"] = previous
    if key is not None and not dry:
        state.data["idempotency"][f"{sid}\n{key}"] = {
            "created": now_s,
            "status": 200,
            "body": clone(answer),
        }
    return 200, answer


def _check_returns(session: dict[str, Any], entries: list[Any]) -> list[tuple[int, int]]:
    """Resolve ``returnedCartItems`` to (position, quantity) pairs; a 400 naming the bad one."""
    items = session["cartItems"]
    left = [item["quantity"] - item.get("returnedQuantity", 0) for item in items]
    out: list[tuple[int, int]] = []
    if not entries:
        raise ApiError.bad_field(
            "/return/returnedCartItems", "Nothing to return", "the list is empty"
        )
    for index, entry in enumerate(entries):
        where = f"/return/returnedCartItems/{index}"
        if not isinstance(entry, dict):
            raise ApiError.bad_field(where, "A returned cart item must be an object")
        pos = entry.get("position")
        sku = entry.get("sku")
        if pos is None and sku is None:
            raise ApiError.bad_field(where, "Give the position or the SKU of the returned item")
        if pos is not None:
            if isinstance(pos, bool) or not isinstance(pos, int) or not 0 <= pos < len(items):
                raise ApiError.bad_field(
                    f"{where}/position",
                    "No such cart item",
                    f"the session has {len(items)} cart items",
                )
            if sku is not None and items[pos]["sku"] != sku:
                raise ApiError.bad_field(
                    f"{where}/sku",
                    "SKU does not match",
                    f"cart item {pos} has SKU {items[pos]['sku']!r}",
                )
        else:
            pos = next(
                (i for i, item in enumerate(items) if item["sku"] == sku and left[i] > 0), None
            )
            if pos is None:
                raise ApiError.bad_field(f"{where}/sku", "No returnable cart item with this SKU")
        qty = entry.get("quantity", left[pos])
        if isinstance(qty, bool) or not isinstance(qty, int) or qty < 1:
            raise ApiError.bad_field(f"{where}/quantity", "quantity must be at least 1")
        if qty > left[pos]:
            raise ApiError.bad_field(
                f"{where}/quantity",
                "Return quantity exceeds what remains",
                f"cart item {pos} has {left[pos]} unit(s) left to return",
            )
        left[pos] -= qty
        out.append((pos, qty))
    return out


def _apply_return(
    state: Any, session: dict[str, Any], returned: list[tuple[int, int]], now_s: str, dry: bool
) -> list[dict[str, Any]]:
    """Roll back the effects tied to the returned units: answer the rollback effects and net
    them out of the session's effects."""
    items = session["cartItems"]
    rollbacks: list[dict[str, Any]] = []
    returned_value = 0
    for pos, qty in returned:
        item = items[pos]
        before = item.get("returnedQuantity", 0)
        remaining = item["quantity"] - before
        returned_value += prorate(session["lineTotals"][pos], qty, item["quantity"])
        keep_effects: list[dict[str, Any]] = []
        keep_allocs: list[dict[str, int] | None] = []
        for effect, alloc in zip(session["effects"], session["allocs"], strict=True):
            share = alloc.get(str(pos)) if alloc else None
            if not share:
                keep_effects.append(effect)
                keep_allocs.append(alloc)
                continue
            props = effect["props"]
            if "subPosition" in props:
                part = share if before <= props["subPosition"] < before + qty else 0
            else:
                part = share if qty >= remaining else prorate(share, qty, remaining)
            if part:
                rollbacks.append(_return_rollback(state, session, effect, pos, part, now_s, dry))
                alloc[str(pos)] = share - part
                _reduce(effect, part)
            if _amount(effect) > 0:
                keep_effects.append(effect)
                keep_allocs.append(alloc)
        session["effects"] = keep_effects
        session["allocs"] = keep_allocs
        item["returnedQuantity"] = before + qty
    session["state"] = "partially_returned"
    committed = session["committed"]
    if committed is not None:
        committed["sales"] = max(0, committed["sales"] - returned_value)
        if committed["counted"] and not dry:
            profile = state.data["profiles"].get(session["profileId"])
            if profile is not None:
                profile["totalSales"] = max(0, profile["totalSales"] - returned_value)
    return rollbacks


def _return_rollback(
    state: Any,
    session: dict[str, Any],
    effect: dict[str, Any],
    pos: int,
    part: int,
    now_s: str,
    dry: bool,
) -> dict[str, Any]:
    base = {
        k: effect[k] for k in ("campaignId", "rulesetId", "ruleIndex", "ruleName") if k in effect
    }
    if "triggeredByCoupon" in effect:
        base["triggeredByCoupon"] = effect["triggeredByCoupon"]
    props = effect["props"]
    if effect["effectType"] == "addLoyaltyPoints":
        uuid = state.new_uuid()
        rb = {
            "programId": props["programId"],
            "subLedgerId": props["subLedgerId"],
            "value": points(part),
            "recipientIntegrationId": props["recipientIntegrationId"],
            "transactionUUID": uuid,
            "cartItemPosition": pos,
        }
        if "cardIdentifier" in props:
            rb["cardIdentifier"] = props["cardIdentifier"]
        item = {
            "effect": commitments.rollback_effect(base, "rollbackAddedLoyaltyPoints", rb),
            "target": props["transactionUUID"],
            "done": False,
        }
        if not dry:
            commitments.execute_item(state, session, item, now_s)
        return item["effect"]
    rb = {
        "name": props["name"],
        "value": money(part),
        "cartItemPosition": pos,
        "scope": "cartItems",
    }
    if "subPosition" in props:
        rb["cartItemSubPosition"] = props["subPosition"]
    return commitments.rollback_effect(base, "rollbackDiscount", rb)


def _amount(effect: dict[str, Any]) -> int:
    value = effect["props"]["value"]
    return to_hundredths(value) if effect["effectType"] == "addLoyaltyPoints" else to_cents(value)


def _reduce(effect: dict[str, Any], part: int) -> None:
    props = effect["props"]
    left = _amount(effect) - part
    props["value"] = points(left) if effect["effectType"] == "addLoyaltyPoints" else money(left)


def _remembered(state: Any, sid: str, key: str, now: datetime.datetime) -> dict[str, Any] | None:
    store = state.data["idempotency"]
    entry = store.get(f"{sid}\n{key}")
    if entry is None:
        return None
    created = datetime.datetime.fromisoformat(entry["created"][:-1] + "+00:00")
    if now - created > IDEMPOTENCY_TTL:
        del store[f"{sid}\n{key}"]
        return None
    return entry
