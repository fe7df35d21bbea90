"""Mirroring Talon.One answers: sessions, cart lines, effects (replaced, history), profiles,
audiences, loyalty; safe upserts; purge; signals sent after commit only."""

import contextlib
import copy
import logging
from decimal import Decimal
from unittest import mock

import pytest
from django.contrib.auth.models import User
from django.db.models.query import QuerySet

from django_talonone import mirror, signals
from django_talonone.effects import read_effects
from django_talonone.models import (
    Audience,
    AudienceMembership,
    CartItem,
    CustomerProfile,
    CustomerSession,
    Effect,
    LoyaltyBalance,
    LoyaltyMembership,
    Push,
)
from tests.shop.models import Order

pytestmark = pytest.mark.django_db

SID = "shop.order-1001"
PID = "cust-1"


def effect(campaign, effect_type, props, *, coupon=None, rule="rule", index=0):
    found = {
        "campaignId": campaign,
        "rulesetId": campaign * 10,
        "ruleIndex": index,
        "ruleName": rule,
        "effectType": effect_type,
        "props": props,
    }
    if coupon is not None:
        found["triggeredByCoupon"] = coupon
    return found


OPEN_EFFECTS = [
    effect(11, "acceptCoupon", {"value": "SPRING10"}, coupon=501, rule="10 off with SPRING10"),
    effect(11, "setDiscount", {"name": "10 off", "value": 10.0}, coupon=501, index=1),
    effect(
        12, "setDiscountPerItem", {"name": "mug deal", "value": 4.5, "position": 1.0}, rule="mugs"
    ),
    effect(
        13,
        "setDiscountPerAdditionalCost",
        {
            "name": "free-ish shipping",
            "additionalCostId": 1,
            "additionalCost": "shipping",
            "value": 2,
        },
    ),
    effect(
        14,
        "addLoyaltyPoints",
        {
            "name": "1 point per euro",
            "programId": 7,
            "subLedgerId": "",
            "value": 30,
            "recipientIntegrationId": PID,
            "transactionUUID": "7d3e-uuid",
            "cartItemPosition": 0,
        },
    ),
    effect(15, "rejectCoupon", {"value": "BOGUS", "rejectionReason": "CouponNotFound"}),
    effect(
        16, "showNotification", {"notificationType": "info", "title": "Hi", "body": "Free gift"}
    ),
    effect(17, "someBrandNewEffect", {"whatever": [1, 2]}),
]


def session_answer(state="open", *, effects=None, update_count=3, cart=None):
    cart = cart if cart is not None else CART
    return {
        "customerSession": {
            "id": 9001,
            "created": "2026-11-20T10:00:00.123456Z",
            "integrationId": SID,
            "applicationId": 4,
            "profileId": PID,
            "storeIntegrationId": "",
            "couponCodes": ["SPRING10", "BOGUS"],
            "referralCode": "",
            "loyaltyCards": [],
            "state": state,
            "cartItems": cart,
            "additionalCosts": {"shipping": {"price": 4.95}},
            "identifiers": ["device-1"],
            "attributes": {"ShippingCountry": "DE"},
            "firstSession": True,
            "updateCount": update_count,
            "total": 52.93,
            "cartItemTotal": 47.98,
            "additionalCostTotal": 4.95,
            "updated": "2026-11-20T10:05:00Z",
        },
        "customerProfile": {
            "id": 333,
            "created": "2026-01-02T03:04:05Z",
            "integrationId": PID,
            "attributes": {"Name": "Ann Example"},
            "accountId": 1,
            "closedSessions": 2,
            "totalSales": 120.5,
            "loyaltyMemberships": None,
            "audienceMemberships": [{"id": 21, "name": "VIP"}, {"id": 22, "name": "Newsletter"}],
            "lastActivity": "2026-11-20T10:05:00Z",
            "sandbox": False,
        },
        "loyalty": {
            "programs": {
                "7": {
                    "id": 7,
                    "title": "Points",
                    "name": "points",
                    "joinDate": "2026-01-02T03:04:05Z",
                    "ledger": {
                        "currentBalance": 150.0,
                        "pendingBalance": 30.0,
                        "negativeBalance": 0.0,
                        "expiredBalance": 0.0,
                        "spentBalance": 0.0,
                        "tentativeCurrentBalance": 150.0,
                        "tentativePendingBalance": 60.0,
                        "currentTier": {
                            "id": 2,
                            "name": "Silver",
                            "expiryDate": "2027-01-01T00:00:00Z",
                        },
                        "pointsToNextTier": 350.0,
                    },
                    "subLedgers": {
                        "beauty": {
                            "currentBalance": 12.5,
                            "pendingBalance": 0.0,
                            "expiredBalance": 0.0,
                            "spentBalance": 0.0,
                            "tentativeCurrentBalance": 12.5,
                        }
                    },
                }
            }
        },
        "coupons": [
            {
                "id": 501,
                "created": "2026-11-01T00:00:00Z",
                "campaignId": 11,
                "value": "SPRING10",
                "usageCounter": 0,
            }
        ],
        "referral": None,
        "triggeredCampaigns": [],
        "effects": OPEN_EFFECTS if effects is None else effects,
        "createdCoupons": [],
        "createdReferrals": [],
    }


CART = [
    {
        "name": "T-shirt",
        "sku": "TSHIRT-M",
        "quantity": 2,
        "returnedQuantity": 0,
        "remainingQuantity": 2,
        "price": 19.99,
        "category": "apparel",
        "position": 0,
        "attributes": {"engraving": "For Ann"},
    },
    {"sku": "MUG", "quantity": 1, "price": 8.0, "position": 1},
]


@pytest.fixture
def received():
    """Record effects_updated and loyalty_updated."""
    calls = []

    def on_effects(sender, session, effects, **kwargs):
        calls.append(("effects", sender, session, list(effects)))

    def on_loyalty(sender, profile, **kwargs):
        calls.append(("loyalty", sender, profile, None))

    signals.effects_updated.connect(on_effects, dispatch_uid="test-effects")
    signals.loyalty_updated.connect(on_loyalty, dispatch_uid="test-loyalty")
    yield calls
    signals.effects_updated.disconnect(dispatch_uid="test-effects")
    signals.loyalty_updated.disconnect(dispatch_uid="test-loyalty")


def current(session):
    return list(session.effects.filter(is_current=True).order_by("id"))


# ---- sessions --------------------------------------------------------------------------------


def test_a_session_answer_fills_session_cart_effects_profile_and_loyalty():
    session = mirror.mirror_session_answer(SID, session_answer())
    session.refresh_from_db()
    assert session.integration_id == SID
    assert (session.talon_id, session.application_id, session.state) == (9001, 4, "open")
    assert session.profile_integration_id == PID
    assert session.coupon_codes == ["SPRING10", "BOGUS"]
    assert session.identifiers == ["device-1"]
    assert session.attributes == {"ShippingCountry": "DE"}
    assert session.additional_costs == {"shipping": {"price": 4.95}}
    assert session.total == Decimal("52.93")
    assert session.cart_item_total == Decimal("47.98")
    assert session.additional_cost_total == Decimal("4.95")
    assert session.first_session is True and session.update_count == 3
    assert session.talon_created.isoformat() == "2026-11-20T10:00:00.123456+00:00"
    assert session.synced_at is not None
    # The rest of the answer is kept; what has rows of its own is not duplicated.
    assert session.raw["customerSession"]["id"] == 9001
    assert session.raw["coupons"][0]["value"] == "SPRING10"
    assert not {"effects", "customerProfile", "loyalty"} & set(session.raw)

    lines = list(session.cart_items.order_by("position"))
    assert [(c.position, c.sku, c.quantity, c.price) for c in lines] == [
        (0, "TSHIRT-M", 2, Decimal("19.99")),
        (1, "MUG", 1, Decimal("8")),
    ]
    assert lines[0].name == "T-shirt" and lines[0].category == "apparel"
    assert lines[0].remaining_quantity == 2 and lines[1].remaining_quantity is None
    assert lines[0].attributes == {"engraving": "For Ann"}

    rows = current(session)
    assert [r.effect_type for r in rows] == [e["effectType"] for e in OPEN_EFFECTS]
    by_type = {r.effect_type: r for r in rows}
    assert by_type["setDiscount"].coupon_code == "SPRING10"
    assert by_type["setDiscount"].triggered_by_coupon == 501
    assert by_type["acceptCoupon"].coupon_code == "SPRING10"
    assert by_type["rejectCoupon"].coupon_code == "BOGUS"
    assert by_type["setDiscountPerItem"].coupon_code == ""
    assert (by_type["setDiscountPerItem"].position, by_type["addLoyaltyPoints"].position) == (1, 0)
    assert by_type["setDiscount"].position is None
    assert by_type["setDiscount"].rule_index == 1 and by_type["setDiscount"].ruleset_id == 110
    assert by_type["someBrandNewEffect"].props == {"whatever": [1, 2]}
    assert all(r.evaluation == 3 for r in rows)
    # 10 + 4.5 + 2: order, line and shipping discounts.
    assert session.discount_total == Decimal("16.5")

    profile = session.profile
    assert profile.integration_id == PID
    assert (profile.talon_id, profile.account_id, profile.closed_sessions) == (333, 1, 2)
    assert profile.total_sales == Decimal("120.5")
    assert profile.attributes == {"Name": "Ann Example"}
    assert profile.last_activity is not None and profile.synced_at is not None
    assert sorted(
        AudienceMembership.objects.filter(profile=profile).values_list("audience__name", flat=True)
    ) == ["Newsletter", "VIP"]

    main = LoyaltyBalance.objects.get(profile=profile, program_id=7, subledger_id="")
    assert (main.active_points, main.pending_points) == (Decimal("150"), Decimal("30"))
    assert (main.tier_id, main.tier_name) == (2, "Silver")
    assert main.points_to_next_tier == Decimal("350")
    assert main.raw["tentativePendingBalance"] == 60.0
    beauty = LoyaltyBalance.objects.get(profile=profile, program_id=7, subledger_id="beauty")
    assert beauty.active_points == Decimal("12.5") and beauty.tier_name == ""
    membership = LoyaltyMembership.objects.get(profile=profile, program_id=7)
    assert membership.joined.year == 2026 and membership.raw["title"] == "Points"


def test_a_second_answer_replaces_the_current_effects_and_the_cart():
    mirror.mirror_session_answer(SID, session_answer())
    later = [effect(12, "setDiscountPerItem", {"name": "mug deal", "value": 4.5, "position": 0})]
    session = mirror.mirror_session_answer(
        SID, session_answer(effects=later, update_count=4, cart=[CART[1]])
    )
    # Open → open: no history of cart-page churn is kept.
    assert Effect.objects.filter(session=session).count() == 1
    (row,) = current(session)
    assert (row.effect_type, row.position, row.evaluation) == ("setDiscountPerItem", 0, 4)
    assert list(session.cart_items.values_list("position", "sku")) == [(0, "MUG")]
    session.refresh_from_db()
    assert session.discount_total == Decimal("4.5")
    assert CustomerSession.objects.count() == 1 and CustomerProfile.objects.count() == 1


def lines(session):
    return list(
        CartItem.objects.filter(session=session)
        .order_by("position")
        .values_list("pk", "position", "sku", "quantity")
    )


SOCKS = {"sku": "SOCKS", "quantity": 3, "price": 2.5, "position": 2}


def test_a_changed_quantity_rewrites_that_line_and_every_line_keeps_its_row():
    before = lines(mirror.mirror_session_answer(SID, session_answer(cart=[*CART, SOCKS])))
    two_mugs = [CART[0], dict(CART[1], quantity=2), SOCKS]
    after = lines(mirror.mirror_session_answer(SID, session_answer(cart=two_mugs)))
    assert [pk for pk, *_ in after] == [pk for pk, *_ in before]
    assert [rest for _pk, *rest in after] == [
        [0, "TSHIRT-M", 2],
        [1, "MUG", 2],
        [2, "SOCKS", 3],
    ]
    line = CartItem.objects.get(session__integration_id=SID, position=1)
    assert (line.raw["quantity"], line.price, line.attributes) == (2, Decimal("8"), {})


@pytest.mark.parametrize(
    ("first", "then"),
    [
        ([*CART, SOCKS], [CART[0]]),  # lines removed from the end
        ([*CART, SOCKS], [SOCKS, CART[0]]),  # lines removed and moved
        ([CART[0]], [*CART, SOCKS]),  # lines added
        ([*CART, SOCKS], []),  # emptied
    ],
)
def test_the_lines_are_the_last_answers_cart_whatever_changed(first, then):
    mirror.mirror_session_answer(SID, session_answer(cart=first))
    session = mirror.mirror_session_answer(SID, session_answer(cart=then))
    found = [(position, sku, quantity) for _pk, position, sku, quantity in lines(session)]
    assert found == [(i, item["sku"], item["quantity"]) for i, item in enumerate(then)]
    assert [line.raw for line in session.cart_items.order_by("position")] == then


def test_a_malformed_line_keeps_its_place_and_the_lines_after_it_stay():
    mirror.mirror_session_answer(SID, session_answer(cart=["bogus", *CART]))
    then = ["bogus", dict(CART[0], quantity=5), CART[1]]
    session = mirror.mirror_session_answer(SID, session_answer(cart=then))
    found = [(position, sku, quantity) for _pk, position, sku, quantity in lines(session)]
    assert found == [(1, "TSHIRT-M", 5), (2, "MUG", 1)]


def test_the_same_effects_again_leave_the_rows_alone():
    first = [r.pk for r in current(mirror.mirror_session_answer(SID, session_answer()))]
    session = mirror.mirror_session_answer(SID, session_answer(update_count=5))
    assert [r.pk for r in current(session)] == first
    assert set(session.effects.values_list("evaluation", flat=True)) == {5}


def test_the_same_rules_with_new_values_rewrite_the_rows_in_place():
    first = {r.pk: r for r in current(mirror.mirror_session_answer(SID, session_answer()))}
    # The cart changed: every rule still applies to the same line, with other values.
    changed = copy.deepcopy(OPEN_EFFECTS)
    changed[1]["props"]["value"] = 12.0
    changed[2]["props"]["value"] = 9.0
    changed[2]["ruleName"] = "mugs, two of them"
    session = mirror.mirror_session_answer(SID, session_answer(effects=changed, update_count=6))
    rows = current(session)
    assert [r.pk for r in rows] == list(first)  # the same rows, so their ids stay
    assert [r.raw for r in rows] == [e for e in changed if isinstance(e, dict)]
    assert (rows[1].props["value"], rows[2].props["value"]) == (12.0, 9.0)
    assert rows[2].rule_name == "mugs, two of them"
    assert {r.evaluation for r in rows} == {6}
    assert all(r.created_at == first[r.pk].created_at for r in rows)  # when it first applied
    assert Effect.objects.filter(session=session).count() == len(rows)  # no history while open
    session.refresh_from_db()
    assert session.discount_total == discount_total_of(changed)


def discount_total_of(effects):
    return mirror.discount_total(mirror.effect_rows(CustomerSession(), effects, None))


@pytest.mark.parametrize(
    "change",
    [
        lambda e: e.pop(2),  # a rule stopped applying
        lambda e: e.append(effect(14, "setDiscount", {"name": "new", "value": 1.0})),  # another
        lambda e: e[2]["props"].update(position=0.0),  # the same rule on another line
        lambda e: e.reverse(),  # the same effects in another order
    ],
)
def test_another_set_of_effects_replaces_the_rows(change):
    first = [r.pk for r in current(mirror.mirror_session_answer(SID, session_answer()))]
    effects = copy.deepcopy(OPEN_EFFECTS)
    change(effects)
    session = mirror.mirror_session_answer(SID, session_answer(effects=effects, update_count=6))
    rows = current(session)
    assert not set(first) & {r.pk for r in rows}
    assert [r.raw for r in rows] == [e for e in effects if isinstance(e, dict)]
    assert Effect.objects.filter(session=session).count() == len(rows)


def test_history_is_kept_once_the_session_is_closed_cancelled_or_reopened():
    mirror.mirror_session_answer(SID, session_answer())
    closing = [*OPEN_EFFECTS[:3], OPEN_EFFECTS[4]]
    session = mirror.mirror_session_answer(SID, session_answer("closed", effects=closing))
    assert session.state == "closed"
    assert len(current(session)) == 4
    assert session.effects.filter(is_current=False).count() == len(OPEN_EFFECTS)

    rollbacks = [
        effect(11, "rollbackCoupon", {"value": "SPRING10"}),
        effect(11, "rollbackDiscount", {"name": "10 off", "value": 10.0}),
        effect(12, "rollbackDiscount", {"name": "mug deal", "value": 4.5, "cartItemPosition": 1}),
        effect(
            14,
            "rollbackAddedLoyaltyPoints",
            {
                "programId": 7,
                "subLedgerId": "",
                "value": 30,
                "recipientIntegrationId": PID,
                "transactionUUID": "7d3e-uuid",
            },
        ),
    ]
    session = mirror.mirror_session_answer(SID, session_answer("cancelled", effects=rollbacks))
    session.refresh_from_db()
    assert session.state == "cancelled"
    assert [r.effect_type for r in current(session)] == [e["effectType"] for e in rollbacks]
    assert current(session)[2].position == 1
    assert current(session)[0].coupon_code == "SPRING10"
    # Rollbacks alone: the cancelled order's net discount is zero, never negative.
    assert session.discount_total == Decimal("0")
    assert session.effects.filter(is_current=False).count() == len(OPEN_EFFECTS) + 4


def test_a_reopen_answer_opens_the_session_and_keeps_what_the_order_had():
    mirror.mirror_session_answer(SID, session_answer("closed"))
    session = mirror.mirror_reopen_answer(SID, {"effects": OPEN_EFFECTS[1:2]})
    session.refresh_from_db()
    assert session.state == "open"
    assert [r.effect_type for r in current(session)] == ["setDiscount"]
    assert session.effects.filter(is_current=False).count() == len(OPEN_EFFECTS)
    assert session.discount_total == Decimal("10")
    # Unknown session: created, open, effects mirrored.
    other = mirror.mirror_reopen_answer("unknown", {"effects": []})
    assert other.state == "open" and other.effects.count() == 0


def test_without_the_session_in_the_answer_the_sent_payload_is_used():
    sent = {
        "customerSession": {
            "profileId": PID,
            "state": "closed",
            "cartItems": [
                {"sku": "A", "quantity": 2, "price": 10.25},
                {"sku": "B", "quantity": 1, "price": 3},
            ],
            "additionalCosts": {"shipping": {"price": 4.95}},
            "couponCodes": ["SPRING10"],
        },
        "responseContent": [],
    }
    answer = {"effects": OPEN_EFFECTS[:2], "createdCoupons": [], "createdReferrals": []}
    session = mirror.mirror_session_answer(SID, answer, sent_payload=sent)
    session.refresh_from_db()
    assert session.state == "closed"
    assert session.coupon_codes == ["SPRING10"]
    assert list(session.cart_items.values_list("sku", "quantity")) == [("A", 2), ("B", 1)]
    assert session.cart_item_total == Decimal("23.5")
    assert session.total == Decimal("28.45")
    assert session.profile.integration_id == PID
    assert session.discount_total == Decimal("10")
    # A later answer without the session keeps the last one that came (but not its stale cart).
    mirror.mirror_session_answer(SID, session_answer("open"))
    session = mirror.mirror_session_answer(SID, answer, sent_payload=sent)
    assert session.raw["customerSession"]["id"] == 9001
    assert "cartItems" not in session.raw["customerSession"]
    assert list(session.cart_items.values_list("sku", flat=True)) == ["A", "B"]
    # ... so the next answer with the earlier cart rewrites the lines.
    session = mirror.mirror_session_answer(SID, session_answer("closed"))
    assert list(session.cart_items.values_list("sku", flat=True)) == ["TSHIRT-M", "MUG"]


def test_an_unchanged_cart_or_effect_set_costs_no_writes(django_assert_num_queries):
    mirror.mirror_session_answer(SID, session_answer())
    # Savepoint; session, profile, memberships, balances and effects read; profile, balances
    # and session written; release: no cart or effect writes.
    with django_assert_num_queries(10):
        mirror.mirror_session_answer(SID, session_answer())


def test_a_return_answered_without_the_session_counts_returned_units():
    mirror.mirror_session_answer(SID, session_answer("closed"))
    sent = {"return": {"returnedCartItems": [{"position": 0, "quantity": 1, "sku": "TSHIRT-M"}]}}
    session = mirror.mirror_session_answer(SID, {"effects": []}, sent_payload=sent)
    assert session.state == "partially_returned"
    line = CartItem.objects.get(session=session, position=0)
    assert (line.returned_quantity, line.remaining_quantity) == (1, 1)


def test_a_return_answer_with_the_session_is_mirrored_as_is():
    mirror.mirror_session_answer(SID, session_answer("closed"))
    cart = [dict(CART[0], returnedQuantity=2, remainingQuantity=0), CART[1]]
    answer = session_answer("partially_returned", effects=[], cart=cart)
    answer["return"] = {"id": 1, "returnedCartItems": [{"position": 0, "quantity": 2}]}
    session = mirror.mirror_session_answer(SID, answer)
    assert session.state == "partially_returned"
    assert CartItem.objects.get(session=session, position=0).returned_quantity == 2
    assert session.raw["return"]["id"] == 1


def test_the_order_is_linked_and_its_user_linked_to_the_profile():
    ann = User.objects.create(username="ann")
    order = Order.objects.create(customer=ann)
    answer = session_answer()
    answer["customerSession"]["profileId"] = str(ann.pk)
    answer["customerProfile"]["integrationId"] = str(ann.pk)
    session = mirror.mirror_session_answer(SID, answer, order=order)
    session.refresh_from_db()
    assert session.order == order
    assert session.profile.user == ann
    # A profile the adapter does not give to that user is not linked to them.
    bob = User.objects.create(username="bob")
    mirror.mirror_session_answer("s2", session_answer(), order=Order.objects.create(customer=bob))
    assert CustomerProfile.objects.get(integration_id=PID).user is None


def test_an_anonymous_session_has_no_profile():
    answer = session_answer()
    answer["customerSession"]["profileId"] = ""
    del answer["customerProfile"]
    session = mirror.mirror_session_answer(SID, answer)
    assert session.profile is None and session.profile_integration_id == ""
    assert not LoyaltyBalance.objects.exists()


def test_mirror_customer_session():
    answer = session_answer("closed")
    answer = {"customerSession": answer["customerSession"], "effects": OPEN_EFFECTS[:2]}
    session = mirror.mirror_customer_session(SID, answer)
    assert session.state == "closed" and len(current(session)) == 2
    assert session.profile.integration_id == PID


def test_malformed_parts_are_tolerated():
    answer = session_answer()
    answer["customerSession"]["state"] = "weird"
    answer["customerSession"]["total"] = "NaN"
    answer["effects"] = [*OPEN_EFFECTS[:1], "not an effect", {"effectType": "x", "props": None}]
    session = mirror.mirror_session_answer(SID, answer)
    assert session.state == "open"
    assert session.total == Decimal("0")
    assert [r.effect_type for r in current(session)] == ["acceptCoupon", "x"]


# ---- profiles and loyalty --------------------------------------------------------------------


def test_a_profile_answer_updates_profile_audiences_loyalty_and_user():
    ann = User.objects.create(username="ann")
    mirror.mirror_session_answer(SID, session_answer())
    answer = session_answer()
    answer = {
        "customerProfile": {
            **answer["customerProfile"],
            "audienceMemberships": [{"id": 22, "name": "Newsletter (weekly)"}],
        },
        "loyalty": answer["loyalty"],
        "effects": [],
        "createdCoupons": [],
        "createdReferrals": [],
    }
    answer["loyalty"]["programs"]["7"]["ledger"]["currentBalance"] = 180
    profile = mirror.mirror_profile_answer(PID, answer, user=ann)
    profile.refresh_from_db()
    assert profile.user == ann
    assert list(profile.audience_memberships.values_list("audience__name", flat=True)) == [
        "Newsletter (weekly)"
    ]
    assert Audience.objects.count() == 2  # the audience itself is kept
    main = LoyaltyBalance.objects.get(profile=profile, subledger_id="")
    assert main.active_points == Decimal("180")
    # The user moves to a new profile: the old link goes, the OneToOne stays valid.
    other = mirror.mirror_profile_answer("cust-2", {"effects": []}, user=ann)
    assert other.user == ann
    assert CustomerProfile.objects.get(integration_id=PID).user is None


def test_loyalty_balances_with_tiers():
    answer = {
        "balance": {
            "activePoints": 250.5,
            "pendingPoints": 20,
            "spentPoints": 100,
            "expiredPoints": 5,
            "negativePoints": 0,
            "currentTier": {"id": 3, "name": "Gold", "expiryDate": "2027-06-30T23:59:59Z"},
            "projectedTier": {"projectedActivePoints": 200, "projectedTierName": "Silver"},
            "pointsToNextTier": 750,
            "nextTierName": "Platinum",
        },
        "subledgerBalances": {"beauty": {"activePoints": 12, "pendingPoints": 0}},
    }
    rows = mirror.mirror_loyalty_balances(PID, 7, answer)
    assert [(r.program_id, r.subledger_id) for r in rows] == [(7, ""), (7, "beauty")]
    main = LoyaltyBalance.objects.get(subledger_id="")
    assert (main.active_points, main.pending_points) == (Decimal("250.5"), Decimal("20"))
    assert (main.spent_points, main.expired_points) == (Decimal("100"), Decimal("5"))
    assert (main.tier_name, main.next_tier_name, main.points_to_next_tier) == (
        "Gold",
        "Platinum",
        Decimal("750"),
    )
    assert main.raw["projectedTier"]["projectedTierName"] == "Silver"
    # A later read without tiers updates the points and leaves the tier alone.
    mirror.mirror_loyalty_balances(PID, 7, {"balance": {"activePoints": 10}})
    main.refresh_from_db()
    assert main.active_points == Decimal("10") and main.tier_name == "Gold"
    assert LoyaltyBalance.objects.count() == 2


# ---- concurrency -----------------------------------------------------------------------------


def racing_reads(*models):
    """Patch the mirror so that, for each model, the first row it finds missing is inserted by
    another worker just before the mirror inserts it: at QuerySet.get (one row at a time), or
    where the session writer creates the sessions and profiles its reads did not find. Our
    insert then meets the unique constraint (or ON CONFLICT)."""
    real_get = QuerySet.get
    real_create_missing = mirror._create_missing
    raced = []

    def get(self, *args, **kwargs):
        if self.model in models and self.model not in raced:
            try:
                return real_get(self, *args, **kwargs)
            except self.model.DoesNotExist:
                raced.append(self.model)
                self.model.objects.bulk_create([self.model(**kwargs)])  # the other worker
                raise
        return real_get(self, *args, **kwargs)

    def create_missing(model, integration_ids):
        if model in models and model not in raced:
            have = set(
                model.objects.filter(integration_id__in=integration_ids).values_list(
                    "integration_id", flat=True
                )
            )
            lacking = [i for i in integration_ids if i not in have]
            if lacking:
                raced.append(model)
                model.objects.bulk_create([model(integration_id=i) for i in lacking])
        return real_create_missing(model, integration_ids)

    patches = contextlib.ExitStack()
    patches.enter_context(mock.patch.object(QuerySet, "get", get))
    patches.enter_context(mock.patch.object(mirror, "_create_missing", create_missing))
    return patches, raced


def test_a_concurrent_insert_of_the_same_row_is_survived():
    patch, raced = racing_reads(CustomerSession)
    with patch:
        session = mirror.mirror_session_answer(SID, session_answer())
    assert raced == [CustomerSession]
    assert CustomerSession.objects.filter(integration_id=SID).count() == 1
    assert session.pk == CustomerSession.objects.get().pk
    assert len(current(session)) == len(OPEN_EFFECTS)


def test_rows_another_worker_hung_on_a_session_it_created_first_are_seen():
    """The session is missing when read; another worker creates it, with a current effect,
    before our insert: that effect is read after all, and replaced like any current set."""
    real_create_missing = mirror._create_missing

    def create_missing(model, integration_ids):
        if model is CustomerSession and not CustomerSession.objects.exists():
            other = CustomerSession.objects.create(integration_id=SID)  # the other worker
            Effect.objects.create(session=other, campaign_id=9, raw={"other": 1})
        return real_create_missing(model, integration_ids)

    with mock.patch.object(mirror, "_create_missing", create_missing):
        session = mirror.mirror_session_answer(SID, session_answer())
    assert [e.raw for e in current(session)] == OPEN_EFFECTS
    assert not Effect.objects.filter(raw={"other": 1}).exists()  # an open session's old set


def test_concurrent_inserts_of_profiles_and_balances_are_survived():
    patch, raced = racing_reads(CustomerProfile, LoyaltyBalance)
    with patch:
        mirror.mirror_loyalty_balances(PID, 7, {"balance": {"activePoints": 5}})
    assert raced == [CustomerProfile, LoyaltyBalance]
    assert CustomerProfile.objects.count() == 1
    assert LoyaltyBalance.objects.get().active_points == Decimal("5")


# ---- signals after commit --------------------------------------------------------------------


def test_signals_are_sent_after_commit_only(received, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        session = mirror.mirror_session_answer(SID, session_answer())
    assert received == []  # nothing before the commit
    for callback in callbacks:
        callback()
    assert [c[0] for c in received] == ["effects", "loyalty"]
    _, sender, sent_session, effects = received[0]
    assert sender is CustomerSession and sent_session == session
    assert [e.effect_type for e in effects] == [e["effectType"] for e in OPEN_EFFECTS]
    assert all(isinstance(e, Effect) and e.pk for e in effects)
    assert received[1][1] is CustomerProfile and received[1][2] == session.profile


def test_each_mirror_sends_its_signals(received, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        mirror.mirror_reopen_answer(SID, {"effects": []})
        mirror.mirror_profile_answer(PID, {"effects": []})  # no loyalty: no signal
        mirror.mirror_profile_answer(PID, {"loyalty": session_answer()["loyalty"], "effects": []})
        mirror.mirror_loyalty_balances(PID, 7, {"balance": {"activePoints": 1}})
    assert [c[0] for c in received] == ["effects", "loyalty", "loyalty"]


def test_a_rolled_back_mirror_sends_nothing(received, django_capture_on_commit_callbacks):
    from django.db import transaction

    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        mirror.mirror_session_answer(SID, session_answer())
        raise RuntimeError("the push's transaction failed later")
    assert callbacks == [] and received == []
    assert not CustomerSession.objects.exists()


def test_a_failing_receiver_is_logged_not_raised(django_capture_on_commit_callbacks, caplog):
    def broken(**kwargs):
        raise ValueError("shop bug")

    signals.effects_updated.connect(broken, dispatch_uid="test-broken")
    try:
        with caplog.at_level(logging.ERROR), django_capture_on_commit_callbacks(execute=True):
            mirror.mirror_session_answer(SID, session_answer())
    finally:
        signals.effects_updated.disconnect(dispatch_uid="test-broken")
    assert "raised" in caplog.text and "shop bug" in caplog.text


# ---- purge -----------------------------------------------------------------------------------


def test_purge_removes_personal_data_and_keeps_anonymous_aggregates():
    ann = User.objects.create(username="ann")
    order = Order.objects.create(customer=ann)
    session = mirror.mirror_session_answer(SID, session_answer("closed"), order=order)
    mirror.mirror_profile_answer(PID, {"effects": []}, user=ann)
    other = mirror.mirror_session_answer("other-session", copy.deepcopy(session_answer()))
    CustomerSession.objects.filter(pk=other.pk).update(profile=None, profile_integration_id="x")
    done = Push.objects.create(
        key=f"profile:{PID}",
        operation="update_customer_profile_v2",
        payload={"body": {"attributes": {"Name": "Ann Example"}}},
        state=Push.State.DONE,
    )
    sent = Push.objects.create(
        key=f"session:{SID}",
        operation="update_customer_session_v2",
        payload={"a": 1},
        state=Push.State.DEAD,
        session=session,
    )
    pending = Push.objects.create(
        key=f"profile:{PID}", operation="delete_customer_data", payload={"args": [PID]}
    )

    mirror.purge_profile(PID)

    assert not CustomerProfile.objects.filter(integration_id=PID).exists()
    assert not LoyaltyBalance.objects.exists() and not LoyaltyMembership.objects.exists()
    assert not AudienceMembership.objects.exists()
    assert Audience.objects.count() == 2
    session.refresh_from_db()
    assert session.profile is None and session.profile_integration_id == ""
    assert session.attributes == {} and session.raw == {} and session.identifiers == []
    # Anonymous aggregates stay.
    assert session.state == "closed" and session.total == Decimal("52.93")
    assert session.discount_total == Decimal("16.5") and session.order == order
    assert list(session.cart_items.values_list("sku", flat=True)) == ["TSHIRT-M", "MUG"]
    assert all(c.attributes == {} and c.raw == {} for c in session.cart_items.all())
    points = session.effects.get(effect_type="addLoyaltyPoints", is_current=True)
    assert points.props["recipientIntegrationId"] == "" and points.props["value"] == 30
    assert PID not in str(points.raw)
    assert session.effects.count() == len(OPEN_EFFECTS)
    # Finished pushes lose their payload; the pending one (the deletion itself) is untouched.
    done.refresh_from_db()
    sent.refresh_from_db()
    pending.refresh_from_db()
    assert done.payload == {} and sent.payload == {}
    assert pending.payload == {"args": [PID]}
    # Other customers' sessions are not touched; the shop's user is not ours to delete.
    other.refresh_from_db()
    assert other.attributes == {"ShippingCountry": "DE"}
    assert User.objects.filter(pk=ann.pk).exists()


def test_purging_an_unknown_profile_is_harmless():
    mirror.purge_profile("nobody")
    CustomerSession.objects.create(
        integration_id="s", profile_integration_id="ghost", attributes={"a": 1}
    )
    mirror.purge_profile("ghost")
    assert CustomerSession.objects.get().attributes == {}


@pytest.mark.parametrize(
    "effects",
    [
        pytest.param(
            [
                effect(4, "setDiscount", {"name": "a", "value": 5}, coupon=901),
                effect(5, "setDiscount", {"name": "b", "value": 1}),
                effect(4, "acceptCoupon", {"value": "SAVE5"}),  # after the discount it unlocked
            ],
            id="learnt-from-a-later-accept",
        ),
        pytest.param(
            [
                effect(4, "setDiscount", {"name": "a", "value": 1}, coupon=1),
                effect(4, "setDiscount", {"name": "b", "value": 1}, coupon=2),
                effect(4, "setDiscount", {"name": "c", "value": 1}, coupon=3),
                effect(4, "acceptCoupon", {"value": "ONE"}, coupon=1),
                effect(4, "acceptCoupon", {"value": "TWO"}, coupon=2),
            ],
            id="two-codes-in-a-campaign-no-guess",
        ),
    ],
)
def test_mirrored_rows_and_read_effects_name_the_same_coupon_codes(effects):
    session = mirror.mirror_session_answer(SID, session_answer(effects=effects))
    rows = [r.coupon_code or None for r in current(session) if r.effect_type == "setDiscount"]
    typed = [d.coupon_code for d in read_effects(effects).discounts]
    assert rows == typed
    assert typed[0] in ("SAVE5", "ONE") and typed[-1] is None
