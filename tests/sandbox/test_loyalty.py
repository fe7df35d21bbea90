"""Loyalty in the sandbox's domain layer: pending → active, rollbacks, ledgers, cards, pages."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest

from django_talonone.sandbox.values import parse_time

from .domain import DEMO, Domain, effects_of, one, session_body


@pytest.fixture
def dom() -> Domain:
    return Domain()


def close(dom: Domain, sid: str) -> dict[str, Any]:
    return dom.ok("update_customer_session_v2", sid, body={"customerSession": {"state": "closed"}})


def program_file(**program: Any) -> dict[str, Any]:
    """The demo file with program 1 changed."""
    raw = copy.deepcopy(DEMO)
    raw["loyaltyPrograms"][0].update(program)
    return raw


def test_points_are_pending_while_open_and_active_after_close(dom: Domain) -> None:
    assert dom.balance() == {
        "activePoints": 200,
        "pendingPoints": 0,
        "spentPoints": 0,
        "expiredPoints": 0,
        "negativePoints": 0,
    }
    answer = dom.session("s1")[1]
    uuid = one(answer, "addLoyaltyPoints")["props"]["transactionUUID"]
    assert (dom.balance()["activePoints"], dom.balance()["pendingPoints"]) == (200, 162)
    # an update of the open session replaces its pending points, with the same transaction
    smaller = dom.session("s1", cart=[{"sku": "SKU-MUG", "quantity": 1, "price": 12.0}])[1]
    assert one(smaller, "addLoyaltyPoints")["props"]["transactionUUID"] == uuid
    assert dom.balance()["pendingPoints"] == 12
    close(dom, "s1")
    assert (dom.balance()["activePoints"], dom.balance()["pendingPoints"]) == (212, 0)
    # the open session's points were not in the transaction log; the closed session's are
    log = dom.ok("get_loyalty_program_profile_transactions", 1, "demo-customer")["data"]
    newest = log[0]
    assert (newest["transactionUUID"], newest["amount"], newest["type"]) == (
        uuid,
        12,
        "addition",
    )
    assert log[0]["customerSessionId"] == "s1"


def test_cancel_rolls_back_added_and_deducted_points(dom: Domain) -> None:
    dom.session("s1", coupons=["POINTS100"])
    close(dom, "s1")
    assert dom.balance()["activePoints"] == 200 - 100 + 162
    answer = dom.ok(
        "update_customer_session_v2", "s1", body={"customerSession": {"state": "cancelled"}}
    )
    added = one(answer, "rollbackAddedLoyaltyPoints")["props"]
    deducted = one(answer, "rollbackDeductedLoyaltyPoints")["props"]
    assert (added["value"], added["programId"], added["recipientIntegrationId"]) == (
        162,
        1,
        "demo-customer",
    )
    assert deducted["value"] == 100
    balance = dom.balance()
    assert (balance["activePoints"], balance["spentPoints"]) == (200, 0)
    log = dom.ok("get_loyalty_program_profile_transactions", 1, "demo-customer")["data"]
    uuids = {t["transactionUUID"]: t for t in log}
    assert uuids[added["transactionUUID"]]["type"] == "subtraction"
    assert uuids[deducted["transactionUUID"]]["type"] == "addition"


def test_loyalty_part_of_a_session_answer(dom: Domain) -> None:
    answer = dom.session("s1", parts=["loyalty"], loyaltyCards=["CARD-0001"])[1]
    program = answer["loyalty"]["programs"]["1"]
    assert (program["id"], program["name"], program["title"]) == (
        1,
        "demo-points",
        "Demo shop points",
    )
    ledger = program["ledger"]
    assert (ledger["currentBalance"], ledger["pendingBalance"]) == (200, 162)
    assert (ledger["expiredBalance"], ledger["spentBalance"]) == (0, 0)
    assert ledger["currentTier"]["name"] == "Bronze"
    assert ledger["pointsToNextTier"] == 300
    assert set(program["subLedgers"]) == {"bonus"}
    card = answer["loyalty"]["cards"][0]
    assert (card["identifier"], card["programID"]) == ("CARD-0001", 2)
    assert card["ledger"]["pendingBalance"] == 162  # card points of campaign 12
    card_points = [
        e for e in effects_of(answer, "addLoyaltyPoints") if e["props"]["programId"] == 2
    ]
    assert card_points[0]["props"]["cardIdentifier"] == "CARD-0001"


def test_tiers_and_projected_tier(dom: Domain) -> None:
    dom.session("s1", cart=[{"sku": "SKU-SNEAKER", "quantity": 5, "price": 80.0}], state="closed")
    answer = dom.ok(
        "get_loyalty_balances", 1, "demo-customer", includeTiers=True, includeProjectedTier=True
    )
    balance = answer["balance"]
    assert balance["activePoints"] == 600
    assert balance["currentTier"]["name"] == "Silver"
    assert (balance["nextTierName"], balance["pointsToNextTier"]) == ("Gold", 1400)
    assert balance["projectedTier"]["projectedTierName"] == "Silver"


def test_balances_need_known_program_and_profile(dom: Domain) -> None:
    assert dom.call("get_loyalty_balances", 9, "demo-customer")[0] == 404
    assert dom.call("get_loyalty_balances", 1, "nobody")[0] == 404
    assert dom.call("get_loyalty_balances", 2, "demo-customer")[0] == 400  # card-based
    assert dom.call("get_loyalty_balances", 1, "demo-customer", subledgerId="nope")[0] == 400
    answer = dom.ok("get_loyalty_balances", 1, "demo-customer", subledgerId="bonus")
    assert list(answer["subledgerBalances"]) == ["bonus"]


def test_balances_at_an_end_date(dom: Domain) -> None:
    answer = dom.ok("get_loyalty_balances", 1, "demo-customer", endDate="2001-01-01T00:00:00Z")
    assert answer["balance"]["activePoints"] == 0


def test_transactions_pages(dom: Domain) -> None:
    for i in range(5):
        dom.session(
            f"s{i}", cart=[{"sku": "SKU-MUG", "quantity": 1, "price": 10.0 + i}], state="closed"
        )
    page = dom.ok("get_loyalty_program_profile_transactions", 1, "demo-customer", pageSize=2)
    assert page["hasMore"] is True
    assert [t["amount"] for t in page["data"]] == [14, 13]  # newest first
    page = dom.ok(
        "get_loyalty_program_profile_transactions", 1, "demo-customer", pageSize=2, skip=4
    )
    assert page["hasMore"] is False
    assert [t["amount"] for t in page["data"]] == [10, 200]
    page = dom.ok(
        "get_loyalty_program_profile_transactions", 1, "demo-customer", pageSize=2, skip=6
    )
    assert page == {"hasMore": False, "data": []}
    only = dom.ok(
        "get_loyalty_program_profile_transactions",
        1,
        "demo-customer",
        customerSessionIDs=["s2", "s3"],
    )["data"]
    assert sorted(t["customerSessionId"] for t in only) == ["s2", "s3"]
    imported = dom.ok(
        "get_loyalty_program_profile_transactions",
        1,
        "demo-customer",
        loyaltyTransactionType="import",
    )["data"]
    assert [t["amount"] for t in imported] == [200]
    for bad in (
        {"pageSize": 0},
        {"pageSize": 1001},
        {"awaitsActivation": False},
        {"loyaltyTransactionType": "x"},
    ):
        assert (
            dom.call("get_loyalty_program_profile_transactions", 1, "demo-customer", **bad)[0]
            == 400
        )


def test_points_by_status_with_expiry() -> None:
    raw = copy.deepcopy(DEMO)
    raw["profiles"][0]["loyalty"].append(
        {"programId": 1, "points": 40, "expiryDate": "2020-01-01T00:00:00Z"}
    )
    dom = Domain(raw)
    dom.session("s1")
    active = dom.ok("get_loyalty_program_profile_points", 1, "demo-customer")["data"]
    assert [p["amount"] for p in active] == [200]
    assert active[0]["expiryDate"] == "unlimited"
    pending = dom.ok("get_loyalty_program_profile_points", 1, "demo-customer", status="pending")[
        "data"
    ]
    assert [(p["amount"], p["customerSessionId"]) for p in pending] == [(162, "s1")]
    expired = dom.ok("get_loyalty_program_profile_points", 1, "demo-customer", status="expired")[
        "data"
    ]
    assert [p["amount"] for p in expired] == [40]
    assert dom.balance()["expiredPoints"] == 40
    assert (
        dom.call("get_loyalty_program_profile_points", 1, "demo-customer", status="spent")[0] == 400
    )


def test_spending_uses_the_soonest_expiring_points_first() -> None:
    raw = copy.deepcopy(DEMO)
    raw["profiles"][0]["loyalty"] = [
        {"programId": 1, "points": 100},
        {"programId": 1, "points": 80, "expiryDate": "2099-01-01T00:00:00Z"},
    ]
    dom = Domain(raw)
    dom.session(
        "s1",
        coupons=["POINTS100"],
        cart=[{"sku": "SKU-MUG", "quantity": 1, "price": 0}],
        state="closed",
    )
    unused = dom.ok("get_loyalty_program_profile_points", 1, "demo-customer")["data"]
    assert sorted(p["amount"] for p in unused) == [80]


def test_points_awaiting_activation() -> None:
    dom = Domain(program_file(activation="action"))
    answer = dom.session("s1", state="closed")[1]
    assert one(answer, "addLoyaltyPoints")["props"]["awaitsActivation"] is True
    assert (dom.balance()["activePoints"], dom.balance()["pendingPoints"]) == (200, 162)
    waiting = dom.ok(
        "get_loyalty_program_profile_transactions", 1, "demo-customer", awaitsActivation=True
    )["data"]
    assert [(t["amount"], t["startDate"]) for t in waiting] == [(162, "on_action")]
    answer = dom.ok("activate_loyalty_points", 1, body={"sessionId": "s1"})
    entry = answer["ledgerEntries"][0]
    assert (entry["amount"], entry["customerSessionID"], entry["type"]) == (162, "s1", "addition")
    assert (dom.balance()["activePoints"], dom.balance()["pendingPoints"]) == (362, 0)
    uuid = waiting[0]["transactionUUID"]
    assert dom.ok("activate_loyalty_points", 1, body={"transactionUUIDs": [uuid]}) == {
        "ledgerEntries": []
    }
    assert (
        dom.call(
            "activate_loyalty_points",
            1,
            body={"transactionUUIDs": ["00000000-0000-4000-8000-000000000000"]},
        )[0]
        == 404
    )
    assert dom.call("activate_loyalty_points", 1, body={})[0] == 400
    assert dom.call("activate_loyalty_points", 9, body={"sessionId": "s1"})[0] == 404


def test_points_pending_for_days_after_close() -> None:
    dom = Domain(program_file(activation={"days": 14}, pointsExpireAfterDays=365))
    answer = dom.session("s1", state="closed")[1]
    props = one(answer, "addLoyaltyPoints")["props"]
    closed = parse_time(dom.ok("get_customer_session", "s1")["customerSession"]["updated"])
    start, expiry = parse_time(props["startDate"]), parse_time(props["expiryDate"])
    assert (start - closed, expiry - start) == (timedelta(days=14), timedelta(days=365))
    assert (dom.balance()["activePoints"], dom.balance()["pendingPoints"]) == (200, 162)


def test_delete_transactions(dom: Domain) -> None:
    dom.session("s1", state="closed")
    dom.session("s2")  # open: its pending points are not in the ledger's log and stay
    status, _ = dom.call(
        "delete_loyalty_transactions_from_ledgers",
        1,
        "demo-customer",
        body={"scope": "SelectedSubledgers"},
    )
    assert status == 400
    assert dom.call(
        "delete_loyalty_transactions_from_ledgers",
        1,
        "demo-customer",
        body={"scope": "AllSubledgers"},
    ) == (204, None)
    assert dom.balance()["activePoints"] == 0
    assert dom.balance()["pendingPoints"] == 162
    assert dom.ok("get_loyalty_program_profile_transactions", 1, "demo-customer")["data"] == []
    assert (
        dom.call(
            "delete_loyalty_transactions_from_ledgers", 1, "nobody", body={"scope": "AllSubledgers"}
        )[0]
        == 404
    )


def test_loyalty_cards(dom: Domain) -> None:
    card = dom.ok("generate_loyalty_card", 2, body={"customerProfileIds": ["demo-customer"]})
    identifier = card["identifier"]
    assert card["programID"] == 2
    assert card["usersPerCardLimit"] == 2
    assert [p["integrationId"] for p in card["profiles"]] == ["demo-customer"]
    assert dom.call("generate_loyalty_card", 1, body={})[0] == 400  # profile-based program
    assert dom.call("generate_loyalty_card", 2, body={"cardIdentifier": identifier})[0] == 400
    assert (
        dom.call("generate_loyalty_card", 2, body={"customerProfileIds": ["a", "b", "c"]})[0] == 400
    )

    assert (
        dom.call("link_loyalty_card_to_profile", 2, identifier, body={"integrationId": "nobody"})[0]
        == 404
    )
    dom.ok("update_customer_profile_v2", "anna", body={})
    linked = dom.ok("link_loyalty_card_to_profile", 2, identifier, body={"integrationId": "anna"})
    assert sorted(p["integrationId"] for p in linked["profiles"]) == ["anna", "demo-customer"]
    status, error = dom.call(
        "link_loyalty_card_to_profile", 2, identifier, body={"integrationId": "demo-advocate"}
    )
    assert status == 400
    assert error["errors"][0]["source"] == {"pointer": "/integrationId"}
    unlinked = dom.ok(
        "unlink_loyalty_card_from_profile", 2, identifier, body={"integrationId": "anna"}
    )
    assert [p["integrationId"] for p in unlinked["profiles"]] == ["demo-customer"]
    assert (
        dom.call("unlink_loyalty_card_from_profile", 2, identifier, body={"integrationId": "anna"})[
            0
        ]
        == 400
    )
    assert (
        dom.call("link_loyalty_card_to_profile", 2, "NO-CARD", body={"integrationId": "anna"})[0]
        == 404
    )


def test_card_points_balances_and_transactions(dom: Domain) -> None:
    dom.session("s1", loyaltyCards=["CARD-0001"], state="closed")
    balances = dom.ok("get_loyalty_card_balances", 2, "CARD-0001")
    assert balances["balance"]["activePoints"] == 30 + 162
    assert balances["profiles"][0]["integrationId"] == "demo-customer"
    log = dom.ok("get_loyalty_card_transactions", 2, "CARD-0001")
    assert [(t["amount"], t["cardIdentifier"]) for t in log["data"]] == [
        (162, "CARD-0001"),
        (30, "CARD-0001"),
    ]
    points = dom.ok("get_loyalty_card_points", 2, "CARD-0001", sort="-startDate")["data"]
    assert sorted(p["amount"] for p in points) == [30, 162]
    assert dom.call("get_loyalty_card_balances", 2, "NOPE")[0] == 404
    assert dom.call("get_loyalty_card_points", 9, "CARD-0001")[0] == 404


def test_inactive_cards_earn_nothing(dom: Domain) -> None:
    card = dom.ok(
        "generate_loyalty_card", 2, body={"status": "inactive", "cardIdentifier": "SLEEPY"}
    )
    assert card["status"] == "inactive"
    answer = dom.session("s1", loyaltyCards=["SLEEPY"])[1]
    assert [e["props"]["programId"] for e in effects_of(answer, "addLoyaltyPoints")] == [1]


def test_returns_roll_back_points_in_proportion(dom: Domain) -> None:
    dom.session("s1", state="closed")
    body = {"return": {"returnedCartItems": [{"position": 2, "quantity": 2}]}}  # 2 of 3 socks
    answer = dom.ok("return_cart_items", "s1", body=body)
    assert one(answer, "rollbackAddedLoyaltyPoints")["props"]["value"] == 10
    body = {"return": {"returnedCartItems": [{"position": 2, "quantity": 1}]}}
    answer = dom.ok("return_cart_items", "s1", body=body)
    assert one(answer, "rollbackAddedLoyaltyPoints")["props"]["value"] == 5
    assert dom.balance()["activePoints"] == 200 + 162 - 15


def test_session_body_helper_is_a_plain_request() -> None:
    body = session_body(coupons=["X"], state="open")
    assert body["customerSession"]["couponCodes"] == ["X"]
