"""Loyalty ledgers: transactions and the balances computed from them.

A ledger (of a profile in a program, or of a loyalty card) is a JSON-able dict holding its
transactions by UUID. Amounts are integer hundredths of a point. Additions become spendable when
they start (at once, at a later date, or when activated) and stop being so when they expire;
subtractions consume the soonest-expiring spendable additions first, and a subtraction that rolls
back one addition (``target``) consumes that addition first. What cannot be covered is a negative
balance.

An *open* addition belongs to a customer session that is still open: it counts as pending and
is replaced on each session update, but it is not yet a transaction in the ledger's log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Sorts after every real time stamp: "never expires".
_NEVER = "9999-12-31T23:59:59.999999Z"


@dataclass(slots=True)
class Balance:
    """Point totals of one ledger (or one subledger of it) at a moment, in hundredths."""

    active: int = 0
    pending: int = 0
    spent: int = 0
    expired: int = 0
    negative: int = 0
    remaining: dict[str, int] = field(default_factory=dict)


def new_ledger(now: str) -> dict[str, Any]:
    """An empty ledger joined at ``now``."""
    return {"joined": now, "transactions": {}}


def add_transaction(
    ledger: dict[str, Any],
    *,
    tx_id: int,
    uuid: str,
    created: str,
    kind: str,
    amount: int,
    name: str,
    subledger: str = "",
    session: str | None = None,
    start: str | None = None,
    expiry: str | None = None,
    awaits_activation: bool = False,
    is_open: bool = False,
    source: str = "session",
    reason: str = "earn",
    target: str | None = None,
    ruleset_id: int | None = None,
    rule_name: str | None = None,
    card: str | None = None,
    profile: str | None = None,
) -> dict[str, Any]:
    """Record one transaction (``kind`` is ``addition`` or ``subtraction``) and return it."""
    tx = {
        "id": tx_id,
        "uuid": uuid,
        "created": created,
        "type": kind,
        "amount": amount,
        "name": name,
        "subledgerId": subledger,
        "sessionId": session,
        "startDate": start,
        "expiryDate": expiry,
        "awaitsActivation": awaits_activation,
        "activatedAt": None,
        "open": is_open,
        "source": source,
        "reason": reason,
        "target": target,
        "rulesetId": ruleset_id,
        "ruleName": rule_name,
        "card": card,
        "profile": profile,
    }
    ledger["transactions"][uuid] = tx
    return tx


def available_from(tx: dict[str, Any]) -> str | None:
    """When an addition becomes spendable (None: not yet known, e.g. awaiting activation)."""
    if tx["open"]:
        return None
    if tx["awaitsActivation"]:
        return tx["activatedAt"]
    return tx["startDate"] or tx["created"]


def status_of(tx: dict[str, Any], at: str) -> str:
    """``pending``, ``active`` or ``expired`` for an addition at time ``at``."""
    start = available_from(tx)
    if start is None or start > at:
        return "pending"
    if tx["expiryDate"] is not None and tx["expiryDate"] <= at:
        return "expired"
    return "active"


def balance(ledger: dict[str, Any], at: str, subledger: str | None = "") -> Balance:
    """The balance of ``ledger`` at time ``at`` for one subledger (``""`` is the main ledger;
    None sums them all)."""
    adds: list[dict[str, Any]] = []
    subs: list[dict[str, Any]] = []
    result = Balance()
    reimbursed = 0
    for tx in ledger["transactions"].values():
        if tx["created"] > at or (subledger is not None and tx["subledgerId"] != subledger):
            continue
        if tx["type"] == "addition":
            adds.append(tx)
            if tx["reason"] == "reimburse":
                reimbursed += tx["amount"]
        else:
            subs.append(tx)
            if tx["reason"] == "redeem":
                result.spent += tx["amount"]
    remaining = {tx["uuid"]: tx["amount"] for tx in adds}
    negative = 0
    if subs:
        subs.sort(key=lambda tx: (tx["created"], tx["id"]))
        by_expiry = sorted(
            adds, key=lambda tx: (tx["expiryDate"] or _NEVER, tx["created"], tx["id"])
        )
        for sub in subs:
            need = sub["amount"]
            target = sub["target"]
            if target is not None and remaining.get(target):
                take = min(need, remaining[target])
                remaining[target] -= take
                need -= take
            when = sub["created"]
            for tx in by_expiry:
                if not need:
                    break
                left = remaining[tx["uuid"]]
                if not left:
                    continue
                start = available_from(tx)
                if start is None or start > when:
                    continue
                if tx["expiryDate"] is not None and tx["expiryDate"] <= when:
                    continue
                take = min(need, left)
                remaining[tx["uuid"]] = left - take
                need -= take
            negative += need
    for tx in adds:
        left = remaining[tx["uuid"]]
        if not left:
            continue
        status = status_of(tx, at)
        if status == "pending":
            result.pending += left
        elif status == "expired":
            result.expired += left
        else:
            result.active += left
    net = result.active - negative
    result.active, result.negative = (net, 0) if net >= 0 else (0, -net)
    result.spent = max(0, result.spent - reimbursed)
    result.remaining = remaining
    return result


def closed_transactions(ledger: dict[str, Any]) -> list[dict[str, Any]]:
    """The ledger's transaction log (open-session additions are not in it yet), oldest first."""
    txs = [tx for tx in ledger["transactions"].values() if not tx["open"]]
    txs.sort(key=lambda tx: tx["id"])
    return txs


def session_transactions(ledger: dict[str, Any], session_id: str) -> list[dict[str, Any]]:
    """The transactions of one customer session, oldest first."""
    txs = [tx for tx in ledger["transactions"].values() if tx["sessionId"] == session_id]
    txs.sort(key=lambda tx: tx["id"])
    return txs


def activate(tx: dict[str, Any], now: str) -> bool:
    """Activate an addition that awaits activation; False if it was not awaiting it."""
    if tx["type"] != "addition" or tx["open"] or not tx["awaitsActivation"] or tx["activatedAt"]:
        return False
    tx["activatedAt"] = now
    return True
