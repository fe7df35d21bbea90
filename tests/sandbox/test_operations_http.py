"""Every Integration API operation against a running sandbox, over real HTTP, with our client."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from django_talonone.client import BadRequestError, IntegrationClient, NotFoundError
from django_talonone.client.schema import OPERATIONS
from django_talonone.sandbox import Sandbox

from .domain import DEMO, DEMO_CART, DEMO_FILE, SHIPPING, session_body

KEY = "ops-http-key"


@pytest.fixture(scope="module")
def running() -> Iterator[Sandbox]:
    with Sandbox(campaigns=DEMO_FILE, api_key=KEY) as sandbox:
        yield sandbox


@pytest.fixture
def sandbox(running: Sandbox) -> Sandbox:
    running.reset()
    return running


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[IntegrationClient]:
    with sandbox.client() as api:
        yield api


def types_of(answer: dict[str, Any]) -> list[str]:
    return [e["effectType"] for e in answer["effects"]]


def test_every_operation_is_exercised_here() -> None:
    source = Path(__file__).read_text(encoding="utf-8")
    called = set(re.findall(r"\.([a-z0-9_]+)\(", source))
    missing = sorted(op["name"] for op in OPERATIONS if op["name"] not in called)
    assert missing == []
    assert len(OPERATIONS) == 36


def test_demo_cart_then_close(client: IntegrationClient) -> None:
    body = session_body(coupons=["WELCOME10"], additionalCosts=SHIPPING)
    body["responseContent"] = ["customerSession", "customerProfile", "loyalty"]
    answer = client.update_customer_session_v2("order-1", body)
    assert {
        "setDiscount",
        "setDiscountPerItem",
        "acceptCoupon",
        "addLoyaltyPoints",
        "showNotification",
    } <= set(types_of(answer))
    assert answer["customerSession"]["state"] == "open"
    assert answer["loyalty"]["programs"]["1"]["ledger"]["pendingBalance"] == 162
    assert client.get_loyalty_balances(1, "demo-customer")["balance"]["pendingPoints"] == 162

    closed = client.update_customer_session_v2("order-1", {"customerSession": {"state": "closed"}})
    assert "awardGiveaway" in types_of(closed)
    balance = client.get_loyalty_balances(1, "demo-customer", include_tiers=True)["balance"]
    assert (balance["activePoints"], balance["pendingPoints"]) == (362, 0)

    stored = client.get_customer_session("order-1")
    assert stored["customerSession"]["state"] == "closed"
    assert types_of(stored) == types_of(closed)


def test_dry_run_and_now(client: IntegrationClient) -> None:
    body = session_body(coupons=["WINTER2099"])
    answer = client.update_customer_session_v2("dry-1", body, dry=True, now="2099-12-24T12:00:00Z")
    assert "acceptCoupon" in types_of(answer)
    with pytest.raises(NotFoundError):
        client.get_customer_session("dry-1")
    with pytest.raises(BadRequestError) as info:
        client.update_customer_session_v2("dry-1", body, now="2099-12-24T12:00:00Z")
    assert info.value.errors[0]["source"] == {"parameter": "now"}


def test_reopen_and_returns(sandbox: Sandbox, client: IntegrationClient) -> None:
    client.update_customer_session_v2(
        "order-2", session_body(coupons=["WELCOME10"], state="closed")
    )
    reopened = client.reopen_customer_session("order-2")
    assert "rollbackCoupon" in types_of(reopened)
    client.update_customer_session_v2("order-2", {"customerSession": {"state": "closed"}})

    body = {"return": {"returnedCartItems": [{"position": 1, "quantity": 1, "sku": "SKU-SNEAKER"}]}}
    keyed = client.with_headers({"Idempotency-Key": "return-order-2-1"})
    first = keyed.return_cart_items("order-2", body)
    again = keyed.return_cart_items("order-2", body)
    assert again == first
    assert first["return"]["sessionIntegrationId"] == "order-2"
    assert "rollbackAddedLoyaltyPoints" in types_of(first)
    state = client.get_customer_session("order-2")["customerSession"]
    assert state["state"] == "partially_returned"
    assert state["cartItems"][1]["returnedQuantity"] == 1
    returns = [
        r
        for r in sandbox.requests
        if r.get("operation") in ("return_cart_items", "ReturnCartItems")
    ]
    assert len(returns) == 2
    with pytest.raises(BadRequestError) as info:
        client.return_cart_items("order-2", body)  # nothing of the sneaker is left
    assert info.value.errors[0]["source"]["pointer"] == "/return/returnedCartItems/0/quantity"
    with pytest.raises(BadRequestError):
        client.reopen_customer_session("order-2")


def test_semantic_errors_name_the_field(client: IntegrationClient) -> None:
    cart = copy.deepcopy(DEMO_CART)
    cart[3]["quantity"] = 0
    with pytest.raises(BadRequestError) as info:
        client.update_customer_session_v2("bad-1", session_body(cart=cart))
    assert info.value.errors[0]["source"]["pointer"] == "/customerSession/cartItems/3/quantity"
    with pytest.raises(BadRequestError) as info:
        client.update_customer_session_v2(
            "bad-1", {"customerSession": {"state": "partially_returned"}}
        )
    assert "Invalid session state transition" in info.value.message


def test_profiles(client: IntegrationClient) -> None:
    answer = client.update_customer_profile_v2("p-1", {"attributes": {"Tier": "gold"}})
    assert answer["effects"] == []
    assert answer["customerProfile"]["attributes"] == {"Tier": "gold"}
    answer = client.update_customer_profile_v2(
        "p-1",
        {"audiencesChanges": {"adds": [1], "deletes": []}, "responseContent": ["customerProfile"]},
        run_rule_engine=True,
    )
    assert answer["customerProfile"]["audienceMemberships"] == [{"id": 1, "name": "VIP customers"}]
    bulk = {
        "customerProfiles": [
            {"integrationId": f"bulk-{i}", "attributes": {"n": i}} for i in range(3)
        ]
    }
    assert client.update_customer_profiles_v2(bulk) is None  # silent by default
    answer = client.update_customer_profiles_v2(bulk, silent="no")
    assert [s["customerProfile"]["integrationId"] for s in answer["integrationStates"]] == [
        "bulk-0",
        "bulk-1",
        "bulk-2",
    ]
    with pytest.raises(BadRequestError):
        client.update_customer_profiles_v2({"customerProfiles": [{"integrationId": "x"}] * 1001})

    assert (
        client.update_customer_profile_audiences(
            {"data": [{"action": "add", "profileIntegrationId": "bulk-0", "audienceId": 2}]}
        )
        is None
    )
    with pytest.raises(NotFoundError):
        client.update_customer_profile_audiences(
            {"data": [{"action": "add", "profileIntegrationId": "bulk-0", "audienceId": 99}]}
        )


def test_inventory_and_customer_data(client: IntegrationClient) -> None:
    client.create_coupon_reservation("VIPONLY", {"integrationIDs": ["demo-customer"]})
    client.update_customer_session_v2("inv-1", session_body(coupons=["WELCOME10"], state="closed"))
    inventory = client.get_customer_inventory(
        "demo-customer",
        profile=True,
        referrals=True,
        coupons=True,
        loyalty=True,
        giveaways=True,
        achievements=True,
    )
    assert inventory["profile"]["closedSessions"] == 1
    coupons = {c["value"]: c["state"] for c in inventory["coupons"]}
    assert coupons["VIPONLY"] == "active"
    assert coupons["WELCOME10"] == "used"
    assert inventory["loyalty"]["programs"]["1"]["ledger"]["currentBalance"] == 362
    assert inventory["loyalty"]["cards"][0]["identifier"] == "CARD-0001"
    assert inventory["giveaways"][0]["code"] == "GIFT-0001"
    assert inventory["achievements"][0]["progress"] == 1
    assert client.get_customer_inventory("demo-customer") == {}

    assert client.delete_customer_data("demo-customer") is None
    after = client.get_customer_inventory("demo-customer", profile=True)
    assert after["profile"]["attributes"] == {}
    with pytest.raises(NotFoundError):
        client.get_customer_session("inv-1")
    with pytest.raises(NotFoundError):
        client.delete_customer_data("nobody")


def test_audiences(client: IntegrationClient) -> None:
    audience = client.create_audience_v2(
        {"name": "Birthday club", "integration": "mparticle", "integrationId": "bc-1"}
    )
    assert (audience["name"], audience["accountId"]) == ("Birthday club", 1)
    with pytest.raises(Exception) as info:
        client.create_audience_v2(
            {"name": "Again", "integration": "mparticle", "integrationId": "bc-1"}
        )
    assert getattr(info.value, "status", None) == 409
    renamed = client.update_audience_v2(audience["id"], {"name": "Birthday friends"})
    assert renamed["name"] == "Birthday friends"
    client.update_customer_profile_v2(
        "m-1", {"audiencesChanges": {"adds": [audience["id"]], "deletes": []}}
    )
    assert (
        client.update_audience_customers_attributes(audience["id"], {"Birthday": "05-01"}) is None
    )
    profile = client.update_customer_profile_v2("m-1", {})["customerProfile"]
    assert profile["attributes"] == {"Birthday": "05-01"}
    assert client.delete_audience_memberships_v2(audience["id"]) is None
    assert (
        client.update_customer_profile_v2("m-1", {})["customerProfile"]["audienceMemberships"] == []
    )
    assert client.delete_audience_v2(audience["id"]) is None
    for call in (
        lambda: client.update_audience_v2(audience["id"], {"name": "x"}),
        lambda: client.delete_audience_v2(audience["id"]),
        lambda: client.delete_audience_memberships_v2(audience["id"]),
        lambda: client.update_audience_customers_attributes(audience["id"], {}),
    ):
        with pytest.raises(NotFoundError):
            call()


def test_coupon_reservations(client: IntegrationClient) -> None:
    coupon = client.create_coupon_reservation("WELCOME10", {"integrationIDs": ["r-1", "r-2"]})
    assert (coupon["value"], coupon["reservationCounter"]) == ("WELCOME10", 2)
    reserved = client.get_reserved_customers("WELCOME10")
    assert [p["integrationId"] for p in reserved["data"]] == ["r-1", "r-2"]
    assert client.delete_coupon_reservation("WELCOME10", {"integrationIDs": ["r-1"]}) is None
    assert client.get_reserved_customers("WELCOME10")["totalResultSize"] == 1
    with pytest.raises(NotFoundError):
        client.get_reserved_customers("NOSUCHCODE")


def test_referrals(client: IntegrationClient) -> None:
    referral = client.create_referral(
        {"campaignId": 9, "advocateProfileIntegrationId": "adv-1", "usageLimit": 2}
    )
    assert referral["code"].startswith("REF-")
    answer = client.update_customer_session_v2(
        "ref-1", session_body(profile="friend-1", referralCode=referral["code"])
    )
    assert "acceptReferral" in types_of(answer)
    with pytest.raises(BadRequestError):
        client.create_referral({"campaignId": 999, "advocateProfileIntegrationId": "adv-1"})
    body = {
        "campaignId": 9,
        "advocateProfileIntegrationIds": ["a-1", "a-2"],
        "referralPattern": "FR-####",
    }
    assert client.create_referrals_for_multiple_advocates(body) is None
    made = client.create_referrals_for_multiple_advocates(body, silent="no")
    assert made["totalResultSize"] == 2
    assert all(re.fullmatch(r"FR-[A-Z0-9]{4}", r["code"]) for r in made["data"])


def test_loyalty_ledgers(sandbox: Sandbox, client: IntegrationClient) -> None:
    raw = copy.deepcopy(DEMO)
    raw["loyaltyPrograms"][0]["activation"] = "action"
    sandbox.load_campaigns(raw)
    client.update_customer_session_v2("loy-1", session_body(state="closed"))
    waiting = client.get_loyalty_program_profile_transactions(
        1, "demo-customer", awaits_activation=True
    )
    assert [t["amount"] for t in waiting["data"]] == [162]
    activated = client.activate_loyalty_points(1, {"sessionId": "loy-1"})
    assert activated["ledgerEntries"][0]["amount"] == 162
    page = client.get_loyalty_program_profile_transactions(1, "demo-customer", page_size=1)
    assert page["hasMore"] is True
    points = client.get_loyalty_program_profile_points(1, "demo-customer", status="active")
    assert sorted(p["amount"] for p in points["data"]) == [162, 200]
    assert (
        client.delete_loyalty_transactions_from_ledgers(
            1, "demo-customer", {"scope": "AllSubledgers"}
        )
        is None
    )
    assert client.get_loyalty_balances(1, "demo-customer")["balance"]["activePoints"] == 0
    with pytest.raises(NotFoundError):
        client.get_loyalty_balances(1, "nobody")


def test_loyalty_cards(client: IntegrationClient) -> None:
    card = client.generate_loyalty_card(2, {"cardIdentifier": "CARD-HTTP", "status": "active"})
    assert card["identifier"] == "CARD-HTTP"
    client.update_customer_profile_v2("holder", {})
    linked = client.link_loyalty_card_to_profile(2, "CARD-HTTP", {"integrationId": "holder"})
    assert [p["integrationId"] for p in linked["profiles"]] == ["holder"]
    client.update_customer_session_v2(
        "card-1", session_body(profile="holder", loyaltyCards=["CARD-HTTP"], state="closed")
    )
    balances = client.get_loyalty_card_balances(2, "CARD-HTTP")
    assert balances["balance"]["activePoints"] == 162
    transactions = client.get_loyalty_card_transactions(2, "CARD-HTTP", page_size=10)
    assert [t["amount"] for t in transactions["data"]] == [162]
    points = client.get_loyalty_card_points(2, "CARD-HTTP")
    assert points["data"][0]["customerSessionId"] == "card-1"
    unlinked = client.unlink_loyalty_card_from_profile(2, "CARD-HTTP", {"integrationId": "holder"})
    assert unlinked["profiles"] == []
    with pytest.raises(NotFoundError):
        client.get_loyalty_card_balances(2, "NO-SUCH-CARD")


def test_catalog_sync_and_best_prior_price(client: IntegrationClient) -> None:
    add = {
        "actions": [
            {
                "type": "ADD",
                "payload": {"sku": "SKU-NEW", "price": 30, "attributes": {"color": "red"}},
            }
        ]
    }
    catalog = client.sync_catalog(1, add)
    assert catalog["version"] == 2
    answer = client.update_customer_session_v2(
        "cat-1", session_body(cart=[{"sku": "SKU-NEW", "quantity": 2}], parts=["customerSession"])
    )
    assert answer["customerSession"]["cartItemTotal"] == 60.0
    patch = {
        "actions": [
            {
                "type": "PATCH_MANY",
                "payload": {
                    "price": 25,
                    "filters": [{"attr": "color", "op": "EQ", "value": "red"}],
                },
            }
        ]
    }
    assert client.sync_catalog(1, patch)["version"] == 3
    client.sync_catalog(
        1,
        {"actions": [{"type": "PATCH", "payload": {"sku": "SKU-NEW", "attributes": {"size": 2}}}]},
    )
    client.sync_catalog(1, {"actions": [{"type": "REMOVE", "payload": {"sku": "SKU-NEW"}}]})
    removed = client.sync_catalog(
        1,
        {
            "actions": [
                {
                    "type": "REMOVE_MANY",
                    "payload": {
                        "filters": [{"attr": "category", "op": "IN", "value": "socks,hats"}]
                    },
                }
            ]
        },
    )
    assert removed["version"] == 6
    with pytest.raises(BadRequestError) as info:
        client.sync_catalog(
            1,
            {
                "actions": [
                    {"type": "ADD", "payload": {"sku": "D"}},
                    {"type": "ADD", "payload": {"sku": "D"}},
                ]
            },
        )
    assert info.value.errors[0]["source"]["pointer"] == "/actions/1/payload/sku"
    with pytest.raises(NotFoundError):
        client.sync_catalog(99, add)

    prices = client.best_prior_price(
        {
            "skus": ["SKU-SNEAKER", "SKU-UNKNOWN"],
            "timeframeEndDate": "2025-03-20T00:00:00Z",
            "timeframe": "30",
            "timeframeEndDateType": "strict",
        }
    )
    assert [(p["sku"], p["price"]) for p in prices] == [("SKU-SNEAKER", 72.0)]
    assert prices[0]["contextIds"] == ["SpringSale"]
    # "price": the frame ends where the current price (89 from 15 March) began
    before_current = client.best_prior_price(
        {
            "skus": ["SKU-SNEAKER"],
            "timeframeEndDate": "2025-03-20T00:00:00Z",
            "timeframe": "10",
            "timeframeEndDateType": "price",
        }
    )
    assert [p["price"] for p in before_current] == [72.0]


def test_events_and_achievements(client: IntegrationClient) -> None:
    assert (
        client.track_event_v2({"profileId": "demo-customer", "type": "newsletter_signup"}) is None
    )
    answer = client.track_event_v2(
        {
            "profileId": "ev-1",
            "type": "newsletter_signup",
            "responseContent": ["customerProfile", "event"],
        },
        silent="no",
    )
    assert types_of(answer) == ["addToAudience", "addLoyaltyPoints", "showNotification"]
    assert answer["event"]["type"] == "newsletter_signup"
    with pytest.warns(DeprecationWarning):
        v1 = client.track_event({"type": "page_view", "sessionId": "none-yet", "profileId": "ev-1"})
    assert v1["event"]["sessionId"] == "none-yet"

    client.update_customer_session_v2("ach-1", session_body(state="closed"))
    achievements = client.get_customer_achievements("demo-customer")
    entry = achievements["data"][0]
    assert (entry["name"], entry["currentProgress"]["progress"], entry["target"]) == (
        "five-orders",
        1,
        5,
    )
    history = client.get_customer_achievement_history("demo-customer", 1)
    assert history["data"][0]["status"] == "inprogress"
    with pytest.raises(NotFoundError):
        client.get_customer_achievement_history("demo-customer", 77)
    with pytest.raises(NotFoundError):
        client.get_customer_achievements("nobody")
