"""Loyalty endpoints: balances, transactions and unused points of profiles and cards, point
activation and deletion, and loyalty cards (generate, link, unlink).

Lists are paginated with ``pageSize`` and ``skip`` and say ``hasMore``; transaction logs list the
newest transaction first.
"""

from __future__ import annotations

from typing import Any

from . import ledger
from .campaigns import Program
from .params import now_of, q_bool, q_int, q_list, q_str, q_time
from .state import find_profile, new_card
from .values import fmt_time, points
from .views import card_view, tier_of
from .wire import ApiError, Call

_TX_TYPES = ("manual", "session", "import")


def get_loyalty_balances(state: Any, call: Call) -> tuple[int, Any]:
    """GetLoyaltyBalances: active, pending, spent, expired and negative points (and tiers)."""
    program = _program(state, call, card_based=False)
    integration_id = call.path["integrationId"]
    find_profile(state, integration_id)
    at = _at(call, "endDate")
    sub = q_str(call, "subledgerId")
    _check_subledgers(program, [sub] if sub else [])
    book = state.program_data(program.id)["profiles"].get(integration_id)
    tiers = q_bool(call, "includeTiers")
    projected = q_bool(call, "includeProjectedTier")
    if sub:
        one = _balance(program, book, at, sub, tiers=False, projected=False)
        return 200, {"balance": one, "subledgerBalances": {sub: dict(one)}}
    return 200, {
        "balance": _balance(program, book, at, "", tiers=tiers, projected=projected),
        "subledgerBalances": {
            s: _balance(program, book, at, s, tiers=False, projected=False)
            for s in program.subledgers
        },
    }


def get_loyalty_card_balances(state: Any, call: Call) -> tuple[int, Any]:
    """GetLoyaltyCardBalances: a card's balances per (sub)ledger and the profiles linked to it."""
    program, card = _card(state, call)
    at = _at(call, "endDate")
    subs = q_list(call, "subledgerId") or []
    _check_subledgers(program, subs)
    wanted = subs or program.subledgers
    return 200, {
        "balance": _balance(program, card["ledger"], at, "", tiers=False, projected=False),
        "subledgerBalances": {
            s: _balance(program, card["ledger"], at, s, tiers=False, projected=False)
            for s in wanted
        },
        "profiles": [dict(p) for p in card["profiles"]],
    }


def get_loyalty_program_profile_transactions(state: Any, call: Call) -> tuple[int, Any]:
    """GetLoyaltyProgramProfileTransactions: a profile's ledger transactions, newest first."""
    program = _program(state, call, card_based=False)
    integration_id = call.path["integrationId"]
    find_profile(state, integration_id)
    book = state.program_data(program.id)["profiles"].get(integration_id)
    sub = q_str(call, "subledgerId")
    rows = _transactions(call, program, book, [sub] if sub else None, card=None)
    return 200, _page(call, rows, default_size=50)


def get_loyalty_card_transactions(state: Any, call: Call) -> tuple[int, Any]:
    """GetLoyaltyCardTransactions: a card's ledger transactions, newest first."""
    program, card = _card(state, call)
    rows = _transactions(call, program, card["ledger"], q_list(call, "subledgerId"), card=card)
    return 200, _page(call, rows, default_size=50)


def get_loyalty_program_profile_points(state: Any, call: Call) -> tuple[int, Any]:
    """GetLoyaltyProgramProfilePoints: a profile's unused points by status (active by default)."""
    program = _program(state, call, card_based=False)
    integration_id = call.path["integrationId"]
    find_profile(state, integration_id)
    book = state.program_data(program.id)["profiles"].get(integration_id)
    return 200, _page(call, _points(state, call, program, book, card=None), default_size=50)


def get_loyalty_card_points(state: Any, call: Call) -> tuple[int, Any]:
    """GetLoyaltyCardPoints: a card's unused points by status (active by default)."""
    program, card = _card(state, call)
    return 200, _page(
        call, _points(state, call, program, card["ledger"], card=card), default_size=50
    )


def activate_loyalty_points(state: Any, call: Call) -> tuple[int, Any]:
    """ActivateLoyaltyPoints: make pending points that await an action active."""
    program = state.config.programs.get(call.path["loyaltyProgramId"])
    if program is None:
        raise ApiError.not_found(f"loyalty program {call.path['loyaltyProgramId']}")
    body = call.body if isinstance(call.body, dict) else {}
    uuids = body.get("transactionUUIDs")
    session_id = body.get("sessionId")
    if (uuids is None) == (session_id is None):
        raise ApiError.bad_field(
            "/transactionUUIDs", "Give either transactionUUIDs or sessionId", "exactly one of them"
        )
    if uuids is not None and (not isinstance(uuids, list) or not uuids or len(uuids) > 50):
        raise ApiError.bad_field("/transactionUUIDs", "transactionUUIDs holds 1 to 50 UUIDs")
    now_s = fmt_time(now_of(call))
    entry = state.program_data(program.id)
    books = [*entry["profiles"].values(), *(c["ledger"] for c in entry["cards"].values())]
    found = []
    for book in books:
        for tx in book["transactions"].values():
            if tx["type"] != "addition" or tx["open"]:
                continue
            if (uuids is not None and tx["uuid"] in uuids) or (
                session_id is not None and tx["sessionId"] == session_id
            ):
                found.append(tx)
    if uuids is not None:
        missing = set(uuids) - {tx["uuid"] for tx in found}
        if missing:
            raise ApiError.not_found(f"loyalty transaction {sorted(missing)[0]}")
    elif not found:
        raise ApiError.not_found(f"points of customer session {session_id!r}")
    activated = [tx for tx in found if ledger.activate(tx, now_s)]
    cards = entry["cards"]
    return 200, {"ledgerEntries": [_ledger_entry(program, tx, cards) for tx in activated]}


def delete_loyalty_transactions_from_ledgers(state: Any, call: Call) -> tuple[int, Any]:
    """DeleteLoyaltyTransactionsFromLedgers: forget a profile's transactions in (sub)ledgers."""
    program = _program(state, call, card_based=False)
    integration_id = call.path["integrationId"]
    find_profile(state, integration_id)
    body = call.body if isinstance(call.body, dict) else {}
    scope = body.get("scope")
    if scope not in ("AllSubledgers", "SelectedSubledgers"):
        raise ApiError.bad_field("/scope", "scope must be AllSubledgers or SelectedSubledgers")
    subs = body.get("subledgerIds")
    if scope == "SelectedSubledgers":
        if not isinstance(subs, list) or not subs:
            raise ApiError.bad_field("/subledgerIds", "SelectedSubledgers needs subledgerIds")
        for index, sub in enumerate(subs):
            if sub != "" and sub not in program.subledgers:
                raise ApiError.bad_field(
                    f"/subledgerIds/{index}", f"program {program.id} has no subledger {sub!r}"
                )
    book = state.program_data(program.id)["profiles"].get(integration_id)
    if book is not None:
        for uuid, tx in list(book["transactions"].items()):
            if tx["open"]:  # an open session's points are not in the ledger yet
                continue
            if scope == "AllSubledgers" or tx["subledgerId"] in subs:
                del book["transactions"][uuid]
    return 204, None


def generate_loyalty_card(state: Any, call: Call) -> tuple[int, Any]:
    """GenerateLoyaltyCard: a new card in a card-based program, optionally linked to profiles."""
    program = state.config.programs.get(call.path["loyaltyProgramId"])
    if program is None or not program.card_based:
        what = "no loyalty program" if program is None else "not a card-based loyalty program"
        raise ApiError.bad_parameter(
            "loyaltyProgramId", f"{call.path['loyaltyProgramId']} is {what}"
        )
    body = call.body if isinstance(call.body, dict) else {}
    status = body.get("status", "active")
    if status not in ("active", "inactive"):
        raise ApiError.bad_field("/status", "status must be active or inactive")
    cards = state.program_data(program.id)["cards"]
    identifier = body.get("cardIdentifier")
    if identifier is not None:
        if not isinstance(identifier, str) or not identifier or len(identifier) > 108:
            raise ApiError.bad_field(
                "/cardIdentifier", "cardIdentifier must be 1 to 108 characters"
            )
        if identifier in cards:
            raise ApiError.bad_field(
                "/cardIdentifier", "Card identifier already in use", identifier
            )
    profiles = body.get("customerProfileIds") or []
    if len(profiles) > program.users_per_card_limit:
        raise ApiError.bad_field(
            "/customerProfileIds",
            "Too many profiles for one card",
            f"the program allows {program.users_per_card_limit} profile(s) per card",
        )
    now_s = fmt_time(now_of(call))
    card_id = state.next_id("loyaltyCard")
    if identifier is None:
        identifier = f"CARD-{program.id:02d}-{card_id:08d}"
    card = new_card(card_id, identifier, now_s, status)
    for integration_id in dict.fromkeys(profiles):
        state.ensure_profile(integration_id, now_s)
        card["profiles"].append({"integrationId": integration_id, "timestamp": now_s})
    cards[identifier] = card
    return 200, card_view(state, program, card, now_s)


def link_loyalty_card_to_profile(state: Any, call: Call) -> tuple[int, Any]:
    """LinkLoyaltyCardToProfile: register a profile on a card (up to the program's limit)."""
    program, card = _card(state, call)
    integration_id = _registration(call)
    find_profile(state, integration_id)
    now_s = fmt_time(now_of(call))
    if not any(p["integrationId"] == integration_id for p in card["profiles"]):
        if len(card["profiles"]) >= program.users_per_card_limit:
            raise ApiError.bad_field(
                "/integrationId",
                "The card has as many profiles as it can have",
                f"the program allows {program.users_per_card_limit} profile(s) per card",
            )
        card["profiles"].append({"integrationId": integration_id, "timestamp": now_s})
        card["modified"] = now_s
    return 200, card_view(state, program, card, now_s)


def unlink_loyalty_card_from_profile(state: Any, call: Call) -> tuple[int, Any]:
    """UnlinkLoyaltyCardFromProfile: remove a profile from a card."""
    program, card = _card(state, call)
    integration_id = _registration(call)
    find_profile(state, integration_id)
    kept = [p for p in card["profiles"] if p["integrationId"] != integration_id]
    if len(kept) == len(card["profiles"]):
        raise ApiError.bad_field(
            "/integrationId", "The profile is not linked to this card", integration_id
        )
    now_s = fmt_time(now_of(call))
    card["profiles"] = kept
    card["modified"] = now_s
    return 200, card_view(state, program, card, now_s)


# -- helpers --------------------------------------------------------------------------------


def _program(state: Any, call: Call, *, card_based: bool) -> Program:
    pid = call.path["loyaltyProgramId"]
    program = state.config.programs.get(pid)
    if program is None:
        raise ApiError.not_found(f"loyalty program {pid}")
    if program.card_based != card_based:
        kind = "card-based" if program.card_based else "profile-based"
        raise ApiError.bad_parameter("loyaltyProgramId", f"loyalty program {pid} is {kind}")
    return program


def _card(state: Any, call: Call) -> tuple[Program, dict[str, Any]]:
    program = state.config.programs.get(call.path["loyaltyProgramId"])
    if program is None:
        raise ApiError.not_found(f"loyalty program {call.path['loyaltyProgramId']}")
    card = state.program_data(program.id)["cards"].get(call.path["loyaltyCardId"])
    if card is None:
        raise ApiError.not_found(f"loyalty card {call.path['loyaltyCardId']!r}")
    return program, card


def _registration(call: Call) -> str:
    body = call.body if isinstance(call.body, dict) else {}
    integration_id = body.get("integrationId")
    if not isinstance(integration_id, str) or not integration_id:
        raise ApiError.bad_field("/integrationId", "integrationId is required")
    return integration_id


def _at(call: Call, name: str) -> str:
    when = q_time(call, name)
    return fmt_time(when if when is not None else now_of(call))


def _check_subledgers(program: Program, subs: list[str]) -> None:
    for sub in subs:
        if sub and sub not in program.subledgers:
            raise ApiError.bad_parameter(
                "subledgerId", f"loyalty program {program.id} has no subledger {sub!r}"
            )


def _balance(
    program: Program,
    book: dict[str, Any] | None,
    at: str,
    sub: str,
    *,
    tiers: bool,
    projected: bool,
) -> dict[str, Any]:
    bal = ledger.balance(book, at, sub) if book is not None else ledger.Balance()
    view: dict[str, Any] = {
        "activePoints": points(bal.active),
        "pendingPoints": points(bal.pending),
        "spentPoints": points(bal.spent),
        "expiredPoints": points(bal.expired),
        "negativePoints": points(bal.negative),
    }
    if (tiers or projected) and program.tiers:
        current, following = tier_of(program, bal.active)
        if tiers:
            if current is not None:
                view["currentTier"] = {"id": current.id, "name": current.name}
            if following is not None:
                view["pointsToNextTier"] = points(following.min_points - bal.active)
                view["nextTierName"] = following.name
        if projected:
            view["projectedTier"] = {
                "projectedActivePoints": points(bal.active),
                "stayInTierPoints": 0,
            }
            if current is not None:
                view["projectedTier"]["projectedTierName"] = current.name
    return view


def _transactions(
    call: Call,
    program: Program,
    book: dict[str, Any] | None,
    subs: list[str] | None,
    *,
    card: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    if subs:
        _check_subledgers(program, subs)
    kind = q_str(call, "loyaltyTransactionType")
    if kind is not None and kind not in _TX_TYPES:
        raise ApiError.bad_parameter(
            "loyaltyTransactionType",
            f"loyaltyTransactionType must be one of: {', '.join(_TX_TYPES)}",
        )
    awaits = call.query.get("awaitsActivation")
    if awaits and not q_bool(call, "awaitsActivation"):
        raise ApiError.bad_parameter("awaitsActivation", "awaitsActivation can only be true")
    sessions = q_list(call, "customerSessionIDs")
    uuids = q_list(call, "transactionUUIDs")
    start = q_time(call, "startDate")
    end = q_time(call, "endDate")
    start_s = fmt_time(start) if start else None
    end_s = fmt_time(end) if end else None
    rows: list[dict[str, Any]] = []
    if book is None:
        return rows
    for tx in reversed(ledger.closed_transactions(book)):
        if subs and tx["subledgerId"] not in subs:
            continue
        if kind is not None and _tx_type(tx) != kind:
            continue
        if sessions is not None and tx["sessionId"] not in sessions:
            continue
        if uuids is not None and tx["uuid"] not in uuids:
            continue
        if start_s and tx["created"] < start_s:
            continue
        if end_s and tx["created"] > end_s:
            continue
        if awaits and not (tx["awaitsActivation"] and not tx["activatedAt"]):
            continue
        row = {
            "transactionUUID": tx["uuid"],
            "created": tx["created"],
            "programId": program.id,
            "type": tx["type"],
            "name": tx["name"],
            "startDate": _start_text(tx),
            "expiryDate": tx["expiryDate"] or "unlimited",
            "subledgerId": tx["subledgerId"],
            "amount": points(tx["amount"]),
            "id": tx["id"],
        }
        if tx["sessionId"]:
            row["customerSessionId"] = tx["sessionId"]
        if tx["rulesetId"] is not None:
            row["rulesetId"] = tx["rulesetId"]
        if tx["ruleName"]:
            row["ruleName"] = tx["ruleName"]
        if card is not None:
            row["cardIdentifier"] = card["identifier"]
        elif tx["type"] == "subtraction":
            row["flags"] = {"createsNegativeBalance": False}
        rows.append(row)
    return rows


def _points(
    state: Any,
    call: Call,
    program: Program,
    book: dict[str, Any] | None,
    *,
    card: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    status = q_str(call, "status", "active")
    if status not in ("active", "pending", "expired"):
        raise ApiError.bad_parameter("status", "status must be active, pending or expired")
    subs = q_list(call, "subledgerId")
    if subs:
        _check_subledgers(program, subs)
    sessions = q_list(call, "customerSessionIDs")
    uuids = q_list(call, "transactionUUIDs")
    sort = q_str(call, "sort")
    if sort is not None and sort.lstrip("-") not in ("startDate", "expiryDate"):
        raise ApiError.bad_parameter(
            "sort", "sort must be startDate or expiryDate (optionally with -)"
        )
    if book is None:
        return []
    now_s = fmt_time(now_of(call))
    remaining = ledger.balance(book, now_s, None).remaining
    rows = []
    for tx in sorted(book["transactions"].values(), key=lambda t: t["id"]):
        if tx["type"] != "addition" or not remaining.get(tx["uuid"]):
            continue
        if ledger.status_of(tx, now_s) != status:
            continue
        if subs and tx["subledgerId"] not in subs:
            continue
        if sessions is not None and tx["sessionId"] not in sessions:
            continue
        if uuids is not None and tx["uuid"] not in uuids:
            continue
        row = {
            "id": tx["id"],
            "transactionUUID": tx["uuid"],
            "created": tx["created"],
            "programId": program.id,
            "name": tx["name"],
            "startDate": _start_text(tx),
            "expiryDate": tx["expiryDate"] or "unlimited",
            "subledgerId": tx["subledgerId"],
            "amount": points(remaining[tx["uuid"]]),
        }
        if tx["sessionId"]:
            row["customerSessionId"] = tx["sessionId"]
        if card is not None and card["profiles"]:
            row["customerProfileID"] = tx.get("profile") or card["profiles"][0]["integrationId"]
        rows.append(row)
    if sort:
        key = sort.lstrip("-")
        rows.sort(
            key=lambda r: r[key] if r[key][0].isdigit() else "9999", reverse=sort.startswith("-")
        )
    return rows


def _page(call: Call, rows: list[dict[str, Any]], *, default_size: int) -> dict[str, Any]:
    size = q_int(call, "pageSize", default_size, minimum=1, maximum=1000)
    skip = q_int(call, "skip", 0, minimum=0)
    return {"hasMore": skip + size < len(rows), "data": rows[skip : skip + size]}


def _tx_type(tx: dict[str, Any]) -> str:
    source = tx["source"]
    if source == "import":
        return "import"
    if source == "session":
        return "session"
    return "manual"


def _start_text(tx: dict[str, Any]) -> str:
    if tx["awaitsActivation"] and not tx["activatedAt"]:
        return "on_action"
    if tx["open"]:
        return "on_close"
    if tx["awaitsActivation"]:
        return tx["activatedAt"]
    start = tx["startDate"]
    if start is None or start <= tx["created"]:
        return "immediate"
    return start


def _ledger_entry(program: Program, tx: dict[str, Any], cards: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "created": tx["created"],
        "programID": program.id,
        "type": tx["type"],
        "amount": points(tx["amount"]),
        "startDate": tx["activatedAt"] or tx["startDate"] or tx["created"],
        "name": tx["name"],
        "subLedgerID": tx["subledgerId"],
        "archived": False,
    }
    if tx["expiryDate"]:
        entry["expiryDate"] = tx["expiryDate"]
    if tx.get("profile"):
        entry["customerProfileID"] = tx["profile"]
    if tx.get("card") and tx["card"] in cards:
        entry["cardID"] = cards[tx["card"]]["id"]
    if tx["sessionId"]:
        entry["customerSessionID"] = tx["sessionId"]
    return entry
