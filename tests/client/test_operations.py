"""Every Integration API operation: the exact request on the wire and the decoded answer.

The expectations below were written by hand from the shared API reference
(``talonone-integration-api.md``: method, path, body and query parameters of each operation) and
the OpenAPI path files (wire names of query parameters, whether an array is exploded into repeated
parameters or comma-joined, success status). They are deliberately *not* read from the generated
``schema.py``, so a generator mistake shows up here as a failing test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import inspect
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
import requests

import django_talonone
from django_talonone.client import IntegrationClient

from .conftest import ANY_URL, API_KEY, BASE_URL, sent_json

UTC = datetime.timezone.utc
CET = datetime.timezone(datetime.timedelta(hours=1))
T_UTC = datetime.datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
T_UTC_WIRE = "2026-11-23T10:00:00Z"
T_CET = datetime.datetime(2026, 11, 23, 11, 30, 0, tzinfo=CET)
T_CET_WIRE = "2026-11-23T11:30:00+01:00"
U1 = "0b8b2b1e-2c3d-4e5f-8a9b-0c1d2e3f4a5b"
U2 = "1c9c3c2f-3d4e-4f60-9bac-1d2e3f4a5b6c"

EFFECT = {
    "campaignId": 3,
    "rulesetId": 11,
    "ruleIndex": 0,
    "ruleName": "10% off",
    "effectType": "setDiscount",
    "props": {"name": "10% off", "value": 12.5},
}
STATE_V2 = {
    "customerSession": {"integrationId": "sess-1", "state": "open", "total": 125.0},
    "effects": [EFFECT],
    "createdCoupons": [],
    "createdReferrals": [],
}
LOYALTY_CARD = {"id": 5, "identifier": "CARD-1", "programID": 42, "status": "active"}


@dataclasses.dataclass
class Case:
    name: str  # the SDK's snake_case method name
    title: str  # the reference's PascalCase operation name
    method: str
    template: str  # the path as the reference writes it
    args: tuple[Any, ...]
    path: str  # the path that must be requested, ids filled in
    body: Any = None
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    query: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    status: int = 200
    answer: Any = dataclasses.field(default_factory=lambda: {"id": 1})
    deprecated: bool = False

    def __str__(self) -> str:
        return self.name


CASES: list[Case] = [
    # ---- the 27 operations of the seed IntegrationApi document --------------------------
    Case(
        "create_audience_v2", "CreateAudienceV2", "POST", "/v2/audiences", (), "/v2/audiences",
        body={"name": "VIP", "integration": "mparticle", "integrationId": "aud-1"},
        status=201,
        answer={"id": 7, "accountId": 1, "name": "VIP", "created": "2026-11-23T10:00:00Z"},
    ),
    Case(
        "create_coupon_reservation", "CreateCouponReservation",
        "POST", "/v1/coupon_reservations/{couponValue}",
        ("SUMMER10",), "/v1/coupon_reservations/SUMMER10",
        body={"integrationIDs": ["cust-1", "cust-2"]},
        status=201,
        answer={"id": 5, "value": "SUMMER10", "campaignId": 3, "usageLimit": 1},
    ),
    Case(
        "create_referral", "CreateReferral", "POST", "/v1/referrals", (), "/v1/referrals",
        body={"campaignId": 3, "advocateProfileIntegrationId": "cust-1", "usageLimit": 2},
        status=201,
        answer={"id": 8, "code": "REF-XYZ", "campaignId": 3},
    ),
    Case(
        "create_referrals_for_multiple_advocates", "CreateReferralsForMultipleAdvocates",
        "POST", "/v1/referrals_for_multiple_advocates", (), "/v1/referrals_for_multiple_advocates",
        body={"campaignId": 3, "advocateProfileIntegrationIds": ["cust-1", "cust-2"]},
        kwargs={"silent": "no"},
        query=[("silent", "no")],
        status=201,
        answer={"totalResultSize": 2, "data": [{"code": "R1"}, {"code": "R2"}]},
    ),
    Case(
        "delete_audience_memberships_v2", "DeleteAudienceMembershipsV2",
        "DELETE", "/v2/audiences/{audienceId}/memberships",
        (7,), "/v2/audiences/7/memberships",
        status=204, answer=None,
    ),
    Case(
        "delete_audience_v2", "DeleteAudienceV2", "DELETE", "/v2/audiences/{audienceId}",
        (7,), "/v2/audiences/7",
        status=204, answer=None,
    ),
    Case(
        "delete_coupon_reservation", "DeleteCouponReservation",
        "DELETE", "/v1/coupon_reservations/{couponValue}",
        ("SUMMER10",), "/v1/coupon_reservations/SUMMER10",
        body={"integrationIDs": ["cust-1"]},
        status=204, answer=None,
    ),
    Case(
        "delete_customer_data", "DeleteCustomerData", "DELETE", "/v1/customer_data/{integrationId}",
        ("cust-1",), "/v1/customer_data/cust-1",
        status=204, answer=None,
    ),
    Case(
        "get_customer_inventory", "GetCustomerInventory",
        "GET", "/v1/customer_profiles/{integrationId}/inventory",
        ("cust-1",), "/v1/customer_profiles/cust-1/inventory",
        kwargs={
            "profile": True, "referrals": False, "coupons": True,
            "loyalty": True, "giveaways": False, "achievements": True,
        },
        query=[
            ("profile", "true"), ("referrals", "false"), ("coupons", "true"),
            ("loyalty", "true"), ("giveaways", "false"), ("achievements", "true"),
        ],
        answer={"profile": {"integrationId": "cust-1"}, "coupons": [], "loyalty": {}},
    ),
    Case(
        "get_customer_session", "GetCustomerSession",
        "GET", "/v2/customer_sessions/{customerSessionId}",
        ("sess-1",), "/v2/customer_sessions/sess-1",
        answer={"customerSession": {"integrationId": "sess-1"}, "effects": [EFFECT]},
    ),
    Case(
        "get_loyalty_balances", "GetLoyaltyBalances",
        "GET", "/v1/loyalty_programs/{loyaltyProgramId}/profile/{integrationId}/balances",
        (42, "cust-1"), "/v1/loyalty_programs/42/profile/cust-1/balances",
        kwargs={
            "end_date": T_CET, "subledger_id": "eu",
            "include_tiers": True, "include_projected_tier": False,
        },
        query=[
            ("endDate", T_CET_WIRE), ("subledgerId", "eu"),
            ("includeTiers", "true"), ("includeProjectedTier", "false"),
        ],
        answer={"balance": {"activePoints": 120.5}, "subledgerBalances": {}},
    ),
    Case(
        "get_loyalty_card_balances", "GetLoyaltyCardBalances",
        "GET", "/v1/loyalty_programs/{loyaltyProgramId}/cards/{loyaltyCardId}/balances",
        (42, "CARD-1"), "/v1/loyalty_programs/42/cards/CARD-1/balances",
        kwargs={"end_date": T_UTC, "subledger_id": ["main", "eu"]},
        # subledgerId: style form, explode true -> repeated.
        query=[("endDate", T_UTC_WIRE), ("subledgerId", "main"), ("subledgerId", "eu")],
        answer={"balance": {"activePoints": 10}, "profiles": []},
    ),
    Case(
        "get_loyalty_card_transactions", "GetLoyaltyCardTransactions",
        "GET", "/v1/loyalty_programs/{loyaltyProgramId}/cards/{loyaltyCardId}/transactions",
        (42, "CARD-1"), "/v1/loyalty_programs/42/cards/CARD-1/transactions",
        kwargs={
            "subledger_id": ["main", "eu"], "loyalty_transaction_type": "manual",
            "start_date": T_UTC, "end_date": T_CET,
            "customer_session_ids": ["s1", "s2"], "transaction_uuids": [U1, U2],
            "page_size": 50, "skip": 100, "awaits_activation": False,
        },
        query=[
            ("subledgerId", "main"), ("subledgerId", "eu"),
            ("loyaltyTransactionType", "manual"),
            ("startDate", T_UTC_WIRE), ("endDate", T_CET_WIRE),
            # No style/explode in the OpenAPI file: the default (form, explode) -> repeated.
            ("customerSessionIDs", "s1"), ("customerSessionIDs", "s2"),
            ("transactionUUIDs", U1), ("transactionUUIDs", U2),
            ("pageSize", "50"), ("skip", "100"), ("awaitsActivation", "false"),
        ],
        answer={"hasMore": False, "data": [{"id": 1, "amount": 5}]},
    ),
    Case(
        "get_loyalty_program_profile_transactions", "GetLoyaltyProgramProfileTransactions",
        "GET", "/v1/loyalty_programs/{loyaltyProgramId}/profile/{integrationId}/transactions",
        (42, "cust-1"), "/v1/loyalty_programs/42/profile/cust-1/transactions",
        kwargs={
            "customer_session_ids": ["s1", "s2"], "transaction_uuids": [U1, U2],
            "subledger_id": "main", "loyalty_transaction_type": "session",
            "start_date": T_UTC, "end_date": T_CET,
            "page_size": 10, "skip": 0, "awaits_activation": True,
        },
        query=[
            ("customerSessionIDs", "s1"), ("customerSessionIDs", "s2"),
            ("transactionUUIDs", U1), ("transactionUUIDs", U2),
            ("subledgerId", "main"), ("loyaltyTransactionType", "session"),
            ("startDate", T_UTC_WIRE), ("endDate", T_CET_WIRE),
            # skip=0 is a value, not "absent".
            ("pageSize", "10"), ("skip", "0"), ("awaitsActivation", "true"),
        ],
        answer={"hasMore": True, "data": []},
    ),
    Case(
        "get_reserved_customers", "GetReservedCustomers",
        "GET", "/v1/coupon_reservations/customerprofiles/{couponValue}",
        ("SUMMER10",), "/v1/coupon_reservations/customerprofiles/SUMMER10",
        answer={"totalResultSize": 1, "data": [{"integrationId": "cust-1"}]},
    ),
    Case(
        "link_loyalty_card_to_profile", "LinkLoyaltyCardToProfile",
        "POST", "/v2/loyalty_programs/{loyaltyProgramId}/cards/{loyaltyCardId}/link_profile",
        (42, "CARD-1"), "/v2/loyalty_programs/42/cards/CARD-1/link_profile",
        body={"integrationId": "cust-1"},
        answer=LOYALTY_CARD,
    ),
    Case(
        "reopen_customer_session", "ReopenCustomerSession",
        "PUT", "/v2/customer_sessions/{customerSessionId}/reopen",
        ("sess-1",), "/v2/customer_sessions/sess-1/reopen",
        answer={"effects": [EFFECT]},
    ),
    Case(
        "return_cart_items", "ReturnCartItems",
        "POST", "/v2/customer_sessions/{customerSessionId}/returns",
        ("sess-1",), "/v2/customer_sessions/sess-1/returns",
        body={"return": {"returnedCartItems": [{"position": 0, "quantity": 1}]}},
        # The reference lists `dry`; the OpenAPI file adds runRuleEngine.
        kwargs={"dry": True, "run_rule_engine": False},
        query=[("dry", "true"), ("runRuleEngine", "false")],
        answer=STATE_V2,
    ),
    Case(
        "sync_catalog", "SyncCatalog", "PUT", "/v1/catalogs/{catalogId}/sync",
        (3,), "/v1/catalogs/3/sync",
        body={"actions": [{"type": "ADD", "payload": {"sku": "SKU1", "price": 99.99}}]},
        answer={"id": 3, "name": "main", "version": 12},
    ),
    Case(
        "track_event", "TrackEvent", "POST", "/v1/events", (), "/v1/events",
        body={"type": "viewed_product", "sessionId": "sess-1", "attributes": {"sku": "SKU1"}},
        kwargs={"dry": False},
        query=[("dry", "false")],
        status=201,
        answer={"session": {}, "profile": {}, "event": {"id": 1, "type": "viewed_product"}},
        deprecated=True,
    ),
    Case(
        "track_event_v2", "TrackEventV2", "POST", "/v2/events", (), "/v2/events",
        body={"type": "viewed_product", "profileId": "cust-1", "attributes": {"sku": "SKU1"}},
        kwargs={"silent": "no", "dry": True, "force_complete_evaluation": False},
        query=[("silent", "no"), ("dry", "true"), ("forceCompleteEvaluation", "false")],
        answer={"effects": [EFFECT], "createdCoupons": [], "createdReferrals": []},
    ),
    Case(
        "update_audience_customers_attributes", "UpdateAudienceCustomersAttributes",
        "PUT", "/v2/audience_customers/{audienceId}/attributes",
        (7,), "/v2/audience_customers/7/attributes",
        body={"tier": "gold", "newsletter": True},
        status=204, answer=None,
    ),
    Case(
        "update_audience_v2", "UpdateAudienceV2", "PUT", "/v2/audiences/{audienceId}",
        (7,), "/v2/audiences/7",
        body={"name": "VIP 2"},
        answer={"id": 7, "name": "VIP 2", "accountId": 1, "created": "2026-11-23T10:00:00Z"},
    ),
    Case(
        "update_customer_profile_audiences", "UpdateCustomerProfileAudiences",
        "POST", "/v2/customer_audiences", (), "/v2/customer_audiences",
        body={"data": [{"action": "add", "profileIntegrationId": "cust-1", "audienceId": 7}]},
        status=204, answer=None,
    ),
    Case(
        "update_customer_profile_v2", "UpdateCustomerProfileV2",
        "PUT", "/v2/customer_profiles/{integrationId}",
        ("cust-1",), "/v2/customer_profiles/cust-1",
        body={"attributes": {"Name": "Ann"}, "responseContent": ["customerProfile"]},
        kwargs={"run_rule_engine": True, "dry": False},
        query=[("runRuleEngine", "true"), ("dry", "false")],
        answer={"customerProfile": {"integrationId": "cust-1"}, "effects": []},
    ),
    Case(
        "update_customer_profiles_v2", "UpdateCustomerProfilesV2",
        "PUT", "/v2/customer_profiles", (), "/v2/customer_profiles",
        body={"customerProfiles": [{"integrationId": "cust-1", "attributes": {"Name": "Ann"}}]},
        kwargs={"silent": "no"},
        query=[("silent", "no")],
        answer={"integrationStates": [{"effects": []}]},
    ),
    Case(
        "update_customer_session_v2", "UpdateCustomerSessionV2",
        "PUT", "/v2/customer_sessions/{customerSessionId}",
        ("sess-1",), "/v2/customer_sessions/sess-1",
        body={
            "customerSession": {
                "profileId": "cust-1",
                "state": "open",
                "cartItems": [{"sku": "SKU1", "quantity": 2, "price": 62.5}],
                "couponCodes": ["SUMMER10"],
            },
            "responseContent": ["customerSession", "triggeredCampaigns"],
        },
        kwargs={"dry": True, "now": T_CET},
        query=[("dry", "true"), ("now", T_CET_WIRE)],
        answer=STATE_V2,
    ),
    # ---- the 9 newer operations (SDK 26.2) ----------------------------------------------
    Case(
        "activate_loyalty_points", "ActivateLoyaltyPoints",
        "POST", "/v1/loyalty_programs/{loyaltyProgramId}/activate_points",
        (42,), "/v1/loyalty_programs/42/activate_points",
        body={"transactionUUIDs": [U1, U2]},
        answer={"ledgerEntries": [{"id": 1, "amount": 10.5}]},
    ),
    Case(
        "best_prior_price", "BestPriorPrice", "POST", "/v1/best_prior_price",
        (), "/v1/best_prior_price",
        body={
            "skus": ["SKU1", "SKU2"],
            "timeframe": "30",
            "timeframeEndDate": T_UTC_WIRE,
            "strictEndDate": True,
        },
        answer=[{"sku": "SKU1", "price": 99.99, "observedAt": T_UTC_WIRE, "metadata": {}}],
    ),
    Case(
        "delete_loyalty_transactions_from_ledgers", "DeleteLoyaltyTransactionsFromLedgers",
        "POST",
        "/v1/loyalty_programs/{loyaltyProgramId}/profile/{integrationId}/delete_transactions",
        (42, "cust-1"), "/v1/loyalty_programs/42/profile/cust-1/delete_transactions",
        body={"scope": "SelectedSubledgers", "subledgerIds": ["main"]},
        status=204, answer=None,
    ),
    Case(
        "generate_loyalty_card", "GenerateLoyaltyCard",
        "POST", "/v1/loyalty_programs/{loyaltyProgramId}/cards",
        (42,), "/v1/loyalty_programs/42/cards",
        body={"status": "active", "customerProfileIds": ["cust-1"]},
        answer=LOYALTY_CARD,
    ),
    Case(
        "get_customer_achievement_history", "GetCustomerAchievementHistory",
        "GET", "/v1/customer_profiles/{integrationId}/achievements/{achievementId}",
        ("cust-1", 9), "/v1/customer_profiles/cust-1/achievements/9",
        kwargs={
            "progress_status": ["inprogress", "completed"],
            "start_date": T_UTC, "end_date": T_CET, "page_size": 20, "skip": 40,
        },
        query=[
            # progressStatus: style form, explode false -> one comma-joined value.
            ("progressStatus", "inprogress,completed"),
            ("startDate", T_UTC_WIRE), ("endDate", T_CET_WIRE),
            ("pageSize", "20"), ("skip", "40"),
        ],
        answer={"hasMore": False, "data": [{"achievementId": 9, "progress": 3}]},
    ),
    Case(
        "get_customer_achievements", "GetCustomerAchievements",
        "GET", "/v1/customer_profiles/{integrationId}/achievements",
        ("cust-1",), "/v1/customer_profiles/cust-1/achievements",
        kwargs={
            "campaign_ids": ["3", "4"], "achievement_ids": ["9", "10"],
            "achievement_status": ["active", "scheduled"],
            "current_progress_status": ["inprogress", "not_started"],
            "page_size": 5, "skip": 0,
        },
        query=[
            # All four arrays: style form, explode false -> comma-joined.
            ("campaignIds", "3,4"), ("achievementIds", "9,10"),
            ("achievementStatus", "active,scheduled"),
            ("currentProgressStatus", "inprogress,not_started"),
            ("pageSize", "5"), ("skip", "0"),
        ],
        answer={"hasMore": False, "data": [{"id": 9, "name": "coffee", "target": 5}]},
    ),
    Case(
        "get_loyalty_card_points", "GetLoyaltyCardPoints",
        "GET", "/v1/loyalty_programs/{loyaltyProgramId}/cards/{loyaltyCardId}/points",
        (42, "CARD-1"), "/v1/loyalty_programs/42/cards/CARD-1/points",
        kwargs={
            "status": "expired", "subledger_id": ["main", "eu"],
            "customer_session_ids": ["s1", "s2"], "transaction_uuids": [U1, U2],
            "page_size": 50, "skip": 10, "sort": "expiryDate",
        },
        query=[
            ("status", "expired"),
            ("subledgerId", "main"), ("subledgerId", "eu"),
            ("customerSessionIDs", "s1"), ("customerSessionIDs", "s2"),
            ("transactionUUIDs", U1), ("transactionUUIDs", U2),
            ("pageSize", "50"), ("skip", "10"), ("sort", "expiryDate"),
        ],
        answer={"hasMore": False, "data": [{"id": 1, "amount": 5}]},
    ),
    Case(
        "get_loyalty_program_profile_points", "GetLoyaltyProgramProfilePoints",
        "GET", "/v1/loyalty_programs/{loyaltyProgramId}/profile/{integrationId}/points",
        (42, "cust-1"), "/v1/loyalty_programs/42/profile/cust-1/points",
        kwargs={
            "status": "pending", "subledger_id": ["main", "eu"],
            "customer_session_ids": ["s1", "s2"], "transaction_uuids": [U1, U2],
            "page_size": 25, "skip": 5, "sort": "-created",
        },
        query=[
            ("status", "pending"),
            # An array without style/explode: OpenAPI's default (form, explode) -> repeated.
            ("subledgerId", "main"), ("subledgerId", "eu"),
            ("customerSessionIDs", "s1"), ("customerSessionIDs", "s2"),
            ("transactionUUIDs", U1), ("transactionUUIDs", U2),
            ("pageSize", "25"), ("skip", "5"), ("sort", "-created"),
        ],
        answer={"hasMore": True, "data": []},
    ),
    Case(
        "unlink_loyalty_card_from_profile", "UnlinkLoyaltyCardFromProfile",
        "POST", "/v2/loyalty_programs/{loyaltyProgramId}/cards/{loyaltyCardId}/unlink_profile",
        (42, "CARD-1"), "/v2/loyalty_programs/42/cards/CARD-1/unlink_profile",
        body={"integrationId": "cust-1"},
        answer=LOYALTY_CARD,
    ),
]  # fmt: skip

BY_NAME = {case.name: case for case in CASES}

#: Operations whose answer is 204 No Content (the method returns None).
NO_CONTENT = {c.name for c in CASES if c.status == 204}
#: Operations that answer 200/201 with a body, or 204 (e.g. with ``silent`` left at "yes").
MAYBE_NO_CONTENT = {
    "create_referrals_for_multiple_advocates",
    "track_event_v2",
    "update_customer_profiles_v2",
}


def call(client: IntegrationClient, case: Case, **kwargs: Any) -> Any:
    """Call the case's method as a shop would: path ids positional, body, keyword query params."""
    args = case.args + ((case.body,) if case.body is not None else ())
    method = getattr(client, case.name)
    ctx = pytest.warns(DeprecationWarning) if case.deprecated else contextlib.nullcontext()
    with ctx:
        return method(*args, **kwargs)


def raw_query(url: str) -> str:
    return urlsplit(url).query


# ---------------------------------------------------------------------------------------------


def test_the_table_has_36_distinct_operations() -> None:
    assert len(CASES) == 36
    assert len(BY_NAME) == 36
    assert len({(c.method, c.template) for c in CASES}) == 36


def test_client_has_exactly_these_public_operation_methods() -> None:
    public = {
        name
        for name, member in inspect.getmembers(IntegrationClient, inspect.isfunction)
        if not name.startswith("_")
    }
    # Everything public that is not an operation, listed explicitly.
    assert public - {"close", "with_headers"} == set(BY_NAME)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_expected_path_is_the_template_with_ids(case: Case) -> None:
    # Guards the hand-written table itself: path == template with the ids substituted.
    names = re.findall(r"\{(\w+)\}", case.template)
    assert len(names) == len(case.args)
    filled = case.template
    for name, value in zip(names, case.args, strict=True):
        filled = filled.replace("{" + name + "}", str(value))
    assert filled == case.path


@pytest.mark.parametrize("case", CASES, ids=str)
def test_operation_request_on_the_wire_and_decoded_answer(
    rsps: Any, client: IntegrationClient, case: Case
) -> None:
    if case.answer is None:
        rsps.add(case.method, ANY_URL, status=case.status)
    else:
        rsps.add(case.method, ANY_URL, json=case.answer, status=case.status)

    result = call(client, case, **case.kwargs)

    assert len(rsps.calls) == 1
    request = rsps.calls[0].request
    assert request.method == case.method
    parts = urlsplit(request.url)
    assert f"{parts.scheme}://{parts.netloc}" == BASE_URL
    assert parts.path == case.path
    # Same parameters, same values, same raw encoding (e.g. "+01:00" as "%2B01%3A00", the comma
    # of a joined array as "%2C"); the order of distinct parameters does not matter.
    assert sorted(parse_qsl(parts.query, keep_blank_values=True)) == sorted(case.query)
    assert sorted(parts.query.split("&")) == sorted(urlencode(case.query).split("&"))
    # Headers.
    headers = request.headers
    assert headers["Authorization"] == f"ApiKey-v1 {API_KEY}"
    assert headers["Accept"] == "application/json"
    assert headers["User-Agent"].startswith(f"django-talonone/{django_talonone.__version__} ")
    if case.body is None:
        assert "Content-Type" not in headers
        assert not request.body
    else:
        assert headers["Content-Type"] == "application/json"
        assert sent_json(rsps.calls[0]) == case.body
    # The decoded answer.
    assert result == case.answer
    if case.answer is None:
        assert result is None


@pytest.mark.parametrize("case", CASES, ids=str)
def test_operation_without_optional_parameters_sends_no_query(
    rsps: Any, client: IntegrationClient, case: Case
) -> None:
    rsps.add(case.method, ANY_URL, json=case.answer, status=case.status)
    call(client, case)
    url = rsps.calls[0].request.url
    assert url == BASE_URL + case.path  # no "?" at all


@pytest.mark.parametrize("case", [c for c in CASES if c.kwargs], ids=str)
def test_none_query_values_are_left_out(rsps: Any, client: IntegrationClient, case: Case) -> None:
    rsps.add(case.method, ANY_URL, json=case.answer, status=case.status)
    call(client, case, **dict.fromkeys(case.kwargs))
    assert raw_query(rsps.calls[0].request.url) == ""


@pytest.mark.parametrize("name", sorted(MAYBE_NO_CONTENT))
def test_operations_that_may_answer_204_return_none(
    rsps: Any, client: IntegrationClient, name: str
) -> None:
    case = BY_NAME[name]
    rsps.add(case.method, ANY_URL, status=204)
    assert call(client, case) is None


@pytest.mark.parametrize("name", sorted(NO_CONTENT))
def test_no_content_operations_accept_an_empty_200(
    rsps: Any, client: IntegrationClient, name: str
) -> None:
    case = BY_NAME[name]
    rsps.add(case.method, ANY_URL, status=200, body=b"")
    assert call(client, case) is None


def test_track_event_v1_is_deprecated(rsps: Any, client: IntegrationClient) -> None:
    rsps.add("POST", ANY_URL, json={"event": {"id": 1}}, status=201)
    with pytest.warns(DeprecationWarning, match=r"TrackEvent.*deprecated") as record:
        client.track_event({"type": "viewed", "sessionId": "sess-1"})
    # The warning points at the caller's line, not into the client.
    assert record[0].filename == __file__


def test_other_operations_do_not_warn(rsps: Any, client: IntegrationClient) -> None:
    rsps.add("POST", ANY_URL, json={"effects": []})
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        client.track_event_v2({"type": "viewed"})


def test_single_string_for_an_array_parameter_is_one_value(
    rsps: Any, client: IntegrationClient
) -> None:
    rsps.add("GET", ANY_URL, json={"balance": {}})
    client.get_loyalty_card_balances(42, "CARD-1", subledger_id="main")
    assert raw_query(rsps.calls[0].request.url) == "subledgerId=main"


def test_tuple_and_generator_for_array_parameters(rsps: Any, client: IntegrationClient) -> None:
    rsps.add("GET", ANY_URL, json={"data": []})
    client.get_customer_achievements(
        "cust-1", campaign_ids=(3, 4), achievement_status=(s for s in ["active"])
    )
    assert sorted(parse_qsl(raw_query(rsps.calls[0].request.url))) == [
        ("achievementStatus", "active"),
        ("campaignIds", "3,4"),
    ]


def test_custom_user_agent(rsps: Any) -> None:
    rsps.add("GET", ANY_URL, json={"effects": []})
    c = IntegrationClient(BASE_URL, API_KEY, user_agent="my-shop/2.0")
    c.get_customer_session("sess-1")
    assert rsps.calls[0].request.headers["User-Agent"] == "my-shop/2.0"


def test_timeout_is_passed_to_requests(rsps: Any) -> None:
    rsps.add("GET", ANY_URL, json={"effects": []})
    c = IntegrationClient(BASE_URL, API_KEY, timeout=(1.5, 4))
    c.get_customer_session("sess-1")
    assert rsps.calls[0].request.req_kwargs["timeout"] == (1.5, 4.0)


def test_a_redirect_is_not_followed_and_raises(rsps: Any, client: IntegrationClient) -> None:
    from django_talonone.client import TalonOneError

    rsps.add("GET", ANY_URL, status=302, headers={"Location": "https://evil.example/steal"})
    with pytest.raises(TalonOneError) as info:
        client.get_customer_session("sess-1")
    assert info.value.status == 302
    assert len(rsps.calls) == 1  # the Authorization header never went to the Location


def test_one_pooled_session_for_all_calls(rsps: Any, client: IntegrationClient) -> None:
    rsps.add("GET", ANY_URL, json={"effects": []})
    rsps.add("GET", ANY_URL, json={"effects": []})
    session = client.session
    assert isinstance(session, requests.Session)
    client.get_customer_session("a")
    client.get_customer_session("b")
    assert client.session is session
    assert len(rsps.calls) == 2


# ---- the table checked against the shared reference (when the reference is at hand) -------


def _shared_dir() -> Path | None:
    env = os.environ.get("TALONONE_SHARED_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[3] / "shared")
    for path in candidates:
        if (path / "reference" / "talonone-integration-api.md").is_file():
            return path
    return None


SHARED = _shared_dir()
needs_reference = pytest.mark.skipif(
    SHARED is None, reason="the shared API reference (../shared/reference) is not checked out"
)


def _reference_rows() -> dict[str, tuple[str, str, list[str]]]:
    """Operation name -> (method, path, query params as the reference lists them)."""
    assert SHARED is not None
    text = (SHARED / "reference" / "talonone-integration-api.md").read_text()
    table = text.split("## Operations", 1)[1].split("## Models", 1)[0]
    rows: dict[str, tuple[str, str, list[str]]] = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 5 or cells[0] in ("operation", "sdk method") or set(cells[0]) <= {"-"}:
            continue
        params = [p.strip() for p in cells[3].split(",") if p.strip()]
        if cells[1] == "?":
            # TrackEvent V1: its shape is given in prose under the table.
            m = re.search(r"\b(POST|GET|PUT|DELETE) (/v1/events)\b", table)
            assert m, "the reference no longer describes TrackEvent V1"
            rows[cells[0]] = (m.group(1), m.group(2), ["dry"])
            continue
        method, path = cells[1].split(" ", 1)
        rows[cells[0]] = (method, path, params)
    return rows


@needs_reference
def test_every_operation_of_the_reference_is_in_the_table() -> None:
    rows = _reference_rows()
    assert len(rows) == 36
    mine = {}
    for case in CASES:
        key = case.title if case.title in rows else case.name
        mine[key] = (case.method, case.template)
    assert {k: (m, p) for k, (m, p, _) in rows.items()} == mine


@needs_reference
def test_query_parameters_of_the_reference_are_in_the_table() -> None:
    rows = _reference_rows()
    for case in CASES:
        if case.title in rows:  # seed table: snake_case names
            listed = rows[case.title][2]
            assert set(listed) <= set(case.kwargs), case.name
        else:  # newer table: wire names
            listed = rows[case.name][2]
            assert set(listed) == {wire for wire, _ in case.query}, case.name


@needs_reference
def test_table_matches_the_openapi_files() -> None:
    yaml = pytest.importorskip("yaml")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    assert SHARED is not None
    found: dict[str, tuple[str, str, dict[str, Any], list[int]]] = {}
    for f in (SHARED / "reference" / "openapi" / "integration-api" / "paths").glob("*.yaml"):
        text = f.read_text()
        path = text.splitlines()[0].split("path: ", 1)[1].strip()
        for method, op in yaml.load(text, Loader=loader).items():
            found[op["operationId"].lower()] = (method.upper(), path, op, list(op["responses"]))
    for case in CASES:
        if case.deprecated:
            continue  # TrackEvent V1 has no OpenAPI file
        method, path, op, codes = found[case.title.lower()]
        assert (method, path) == (case.method, case.template), case.name
        assert str(case.status) in codes, case.name
        params = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "query"}
        # Every query parameter is exercised by the table, under its wire name ...
        assert set(params) == {wire for wire, _ in case.query}, case.name
        # ... and arrays are exploded or comma-joined as the file says (default: explode).
        for wire, p in params.items():
            if p.get("schema", {}).get("type") != "array":
                continue
            values = [v for w, v in case.query if w == wire]
            explode = p.get("explode", p.get("style", "form") == "form")
            if explode:
                assert len(values) >= 2, (case.name, wire)
            else:
                assert len(values) == 1 and "," in values[0], (case.name, wire)
        assert ("requestBody" in op) == (case.body is not None), case.name
