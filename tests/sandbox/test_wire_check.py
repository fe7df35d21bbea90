"""The wire check: a tour of all 36 operations against the sandbox, each answer checked against the
reference's response model (required fields and JSON types, recursively; effect props by type).

The model tables are ``django_talonone.client.schema`` (generated from the reference by
scripts/generate_client.py); the checker is ``tests/wirecheck.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from django_talonone.client import IntegrationClient
from django_talonone.client.schema import MODELS, OPERATIONS
from django_talonone.sandbox import Sandbox
from tests.wirecheck import check, check_effect_types

from .domain import DEMO_FILE, SHIPPING, session_body

OPS = {op["name"]: op for op in OPERATIONS}
ALL_SESSION_PARTS = [
    "customerSession",
    "customerProfile",
    "coupons",
    "triggeredCampaigns",
    "referral",
    "loyalty",
    "event",
    "awardedGiveaways",
    "ruleFailureReasons",
    "previousReturns",
]
PROFILE_PARTS = [
    "customerProfile",
    "triggeredCampaigns",
    "loyalty",
    "event",
    "awardedGiveaways",
    "ruleFailureReasons",
]


@pytest.fixture(scope="module")
def toured() -> Iterator[tuple[list[tuple[str, Any]], list[dict[str, Any]]]]:
    with Sandbox(campaigns=DEMO_FILE, api_key="wire-check") as sandbox, sandbox.client() as client:
        answers = tour(client)
        yield answers, sandbox.requests


def tour(api: IntegrationClient) -> list[tuple[str, Any]]:
    """Call every operation at least once, in states that fill the optional parts."""
    seen: list[tuple[str, Any]] = []

    def run(name: str, *args: Any, **kwargs: Any) -> Any:
        answer = getattr(api, name)(*args, **kwargs)
        seen.append((name, answer))
        return answer

    # sessions: open with everything, close, return, reopen, cancel
    body = session_body(
        coupons=["WELCOME10", "NOSUCHCODE"],
        referralCode="FRIEND-DEMO",
        loyaltyCards=["CARD-0001"],
        additionalCosts=SHIPPING,
        attributes={"channel": "web"},
        parts=ALL_SESSION_PARTS,
    )
    run("update_customer_session_v2", "w-1", body)
    closing = {"customerSession": {"state": "closed"}, "responseContent": ALL_SESSION_PARTS}
    run("update_customer_session_v2", "w-1", closing)
    run("get_customer_session", "w-1")
    returned = {
        "return": {"returnedCartItems": [{"position": 1, "quantity": 1}]},
        "responseContent": [
            "customerSession",
            "customerProfile",
            "coupons",
            "triggeredCampaigns",
            "referral",
            "loyalty",
            "event",
            "previousReturns",
        ],
    }
    run("return_cart_items", "w-1", returned)
    run("get_customer_session", "w-1")
    run(
        "update_customer_session_v2",
        "w-1",
        {"customerSession": {"state": "cancelled"}, "responseContent": ALL_SESSION_PARTS},
    )
    run(
        "update_customer_session_v2",
        "w-2",
        session_body(coupons=["POINTS100"], state="closed", parts=ALL_SESSION_PARTS),
    )
    run("reopen_customer_session", "w-2")
    run(
        "update_customer_session_v2",
        "w-2",
        session_body(cart=[{"sku": "SKU-SNEAKER", "quantity": 1}], parts=ALL_SESSION_PARTS),
    )

    # profiles, audiences, events
    run("update_customer_profile_v2", "w-p", {"attributes": {"Tier": "gold"}})
    run(
        "update_customer_profile_v2",
        "w-p",
        {"audiencesChanges": {"adds": [1], "deletes": []}, "responseContent": PROFILE_PARTS},
        run_rule_engine=True,
    )
    run(
        "update_customer_profiles_v2",
        {"customerProfiles": [{"integrationId": "w-b1", "attributes": {"a": 1}}]},
        silent="no",
    )
    run("update_customer_profiles_v2", {"customerProfiles": [{"integrationId": "w-b2"}]})
    audience = run("create_audience_v2", {"name": "Wire audience", "description": "tour"})
    run("update_audience_v2", audience["id"], {"name": "Wire audience 2"})
    run(
        "update_customer_profile_audiences",
        {"data": [{"action": "add", "profileIntegrationId": "w-p", "audienceId": audience["id"]}]},
    )
    run("update_audience_customers_attributes", audience["id"], {"Segment": "wire"})
    run("delete_audience_memberships_v2", audience["id"])
    run("delete_audience_v2", audience["id"])
    run(
        "track_event_v2",
        {
            "profileId": "demo-customer",
            "type": "newsletter_signup",
            "responseContent": PROFILE_PARTS,
        },
        silent="no",
    )
    run("track_event_v2", {"profileId": "w-p", "type": "newsletter_signup"})
    with pytest.warns(DeprecationWarning):
        run(
            "track_event",
            {"type": "newsletter_signup", "sessionId": "w-2", "profileId": "demo-customer"},
        )

    # coupons and referrals
    run("create_coupon_reservation", "VIPONLY", {"integrationIDs": ["demo-customer", "w-p"]})
    run("get_reserved_customers", "VIPONLY")
    run("delete_coupon_reservation", "VIPONLY", {"integrationIDs": ["w-p"]})
    run(
        "create_referral",
        {
            "campaignId": 9,
            "advocateProfileIntegrationId": "w-p",
            "friendProfileIntegrationId": "w-f",
            "startDate": "2024-01-01T00:00:00Z",
            "expiryDate": "2099-01-01T00:00:00Z",
            "usageLimit": 3,
        },
    )
    run(
        "create_referrals_for_multiple_advocates",
        {"campaignId": 9, "advocateProfileIntegrationIds": ["w-a1", "w-a2"]},
        silent="no",
    )
    run(
        "create_referrals_for_multiple_advocates",
        {"campaignId": 9, "advocateProfileIntegrationIds": ["w-a3"]},
    )

    # inventory, achievements
    run(
        "get_customer_inventory",
        "demo-customer",
        profile=True,
        referrals=True,
        coupons=True,
        loyalty=True,
        giveaways=True,
        achievements=True,
    )
    run("get_customer_inventory", "demo-advocate", referrals=True)
    run("get_customer_achievements", "demo-customer")
    run("get_customer_achievement_history", "demo-customer", 1)

    # loyalty of profiles
    run("get_loyalty_balances", 1, "demo-customer", include_tiers=True, include_projected_tier=True)
    run("get_loyalty_program_profile_transactions", 1, "demo-customer", page_size=50)
    run("get_loyalty_program_profile_points", 1, "demo-customer")
    run("get_loyalty_program_profile_points", 1, "demo-customer", status="pending")
    pending = [
        t
        for t in api.get_loyalty_program_profile_transactions(1, "demo-customer")["data"]
        if t["type"] == "addition"
    ]
    run("activate_loyalty_points", 1, {"transactionUUIDs": [pending[0]["transactionUUID"]]})
    run("delete_loyalty_transactions_from_ledgers", 1, "w-p", {"scope": "AllSubledgers"})

    # loyalty cards
    card = run("generate_loyalty_card", 2, {"customerProfileIds": ["w-p"]})
    run("link_loyalty_card_to_profile", 2, card["identifier"], {"integrationId": "demo-customer"})
    run("unlink_loyalty_card_from_profile", 2, card["identifier"], {"integrationId": "w-p"})
    run("get_loyalty_card_balances", 2, "CARD-0001")
    run("get_loyalty_card_transactions", 2, "CARD-0001")
    run("get_loyalty_card_points", 2, "CARD-0001")

    # catalogs
    run(
        "sync_catalog",
        1,
        {
            "actions": [
                {
                    "type": "ADD",
                    "payload": {"sku": "SKU-WIRE", "price": 3.5, "attributes": {"k": "v"}},
                }
            ]
        },
    )
    run(
        "best_prior_price",
        {
            "skus": ["SKU-SNEAKER", "SKU-WIRE"],
            "timeframeEndDate": "2025-03-20T00:00:00Z",
            "timeframe": "90",
            "timeframeEndDateType": "strict",
        },
    )

    # personal data last: it removes the profile's sessions
    run("delete_customer_data", "w-p")
    return seen


def test_the_tour_calls_all_36_operations(toured: Any) -> None:
    answers, _log = toured
    assert len(OPERATIONS) == 36
    assert {name for name, _ in answers} == set(OPS)


def test_every_answer_has_the_documented_status(toured: Any) -> None:
    _answers, log = toured
    by_title = {op["title"]: op for op in OPERATIONS}
    checked = set()
    for entry in log:
        op = OPS.get(entry["operation"]) or by_title.get(entry["operation"])
        assert op is not None, entry
        assert entry["status"] in op["success"], (op["name"], entry["status"])
        checked.add(op["name"])
    assert checked == set(OPS)


@pytest.mark.parametrize("name", sorted(OPS))
def test_answers_match_the_response_model(toured: Any, name: str) -> None:
    answers, _log = toured
    op = OPS[name]
    got = [answer for called, answer in answers if called == name]
    assert got
    for answer in got:
        if op["response"] is None:
            assert answer is None
            continue
        if answer is None:  # silent: 204 where the reference allows it
            assert 204 in op["success"]
            continue
        assert check(answer, op["response"]) == [], name


def test_the_tour_fills_the_optional_parts(toured: Any) -> None:
    answers, _log = toured
    states = [a for n, a in answers if n == "update_customer_session_v2" and a]
    parts = set().union(*(a.keys() for a in states))
    assert {
        "customerSession",
        "customerProfile",
        "coupons",
        "triggeredCampaigns",
        "referral",
        "loyalty",
        "event",
        "awardedGiveaways",
        "ruleFailureReasons",
        "previousReturns",
    } <= parts
    inventory = next(a for n, a in answers if n == "get_customer_inventory")
    assert set(inventory) == set(MODELS["CustomerInventory"])
    assert all(inventory[k] for k in ("profile", "coupons", "giveaways", "achievements", "loyalty"))
    advocate = [a for n, a in answers if n == "get_customer_inventory"][1]
    assert advocate["referrals"][0]["code"] == "FRIEND-DEMO"


def test_every_effect_type_is_a_reference_type(toured: Any) -> None:
    answers, _log = toured
    effects = []
    for _name, answer in answers:
        if isinstance(answer, dict) and isinstance(answer.get("effects"), list):
            effects.extend(answer["effects"])
    assert check_effect_types(effects) == []
    kinds = {e["effectType"] for e in effects}
    assert {
        "setDiscount",
        "setDiscountPerItem",
        "setDiscountPerAdditionalCost",
        "acceptCoupon",
        "rejectCoupon",
        "acceptReferral",
        "addFreeItem",
        "addLoyaltyPoints",
        "deductLoyaltyPoints",
        "showNotification",
        "customEffect",
        "addToAudience",
        "willAwardGiveaway",
        "awardGiveaway",
        "couponCreated",
        "increaseAchievementProgress",
        "rollbackDiscount",
        "rollbackCoupon",
        "rollbackReferral",
        "rollbackAddedLoyaltyPoints",
        "rollbackDeductedLoyaltyPoints",
        "rollbackIncreasedAchievementProgress",
    } <= kinds


def test_the_checker_catches_what_it_should() -> None:
    good = {"effects": [], "createdCoupons": [], "createdReferrals": []}
    assert check(good, "IntegrationStateV2") == []
    assert check({"effects": []}, "IntegrationStateV2") == [
        "$.createdCoupons: required by IntegrationStateV2 but missing",
        "$.createdReferrals: required by IntegrationStateV2 but missing",
    ]
    effect = {
        "campaignId": 1,
        "rulesetId": 1,
        "ruleIndex": 0,
        "ruleName": "r",
        "effectType": "setDiscount",
        "props": {"name": "x", "value": "10"},
    }
    assert check([effect], "list[Effect]") == ["$[0].props.value: expected number, got str"]
    assert "$.id: expected int, got bool" in check({"id": True}, "Audience")
    problems = check({"created": "yesterday"}, "Audience")
    assert "$.accountId: required by Audience but missing" in problems
    assert "$.created: expected datetime, got str" in problems
    assert (
        "expected datetime"
        in check({"accountId": 1, "id": 1, "name": "a", "created": "2024-01-01"}, "Audience")[0]
    )
