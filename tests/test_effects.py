"""django_talonone.effects: reading effects, rejection messages, allocating discounts to lines."""

from __future__ import annotations

import logging
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from django_talonone import effects as fx
from django_talonone.client.schema import EFFECT_PROPS, MODELS
from django_talonone.effects import (
    COUPON_REJECTION_MESSAGES,
    KNOWN_EFFECT_TYPES,
    REFERRAL_REJECTION_MESSAGES,
    Effects,
    allocate_discounts,
    customer_message,
    read_effects,
)

D = Decimal
CENT = D("0.01")


@pytest.fixture(autouse=True)
def _fresh_log_memory():
    # The module logs each unknown/invalid effect type once per process; start every test clean.
    fx._already_logged.clear()
    yield
    fx._already_logged.clear()


def effect(effect_type: str, props: dict, campaign_id: int = 10, **extra) -> dict:
    """An effect as the Integration API sends it."""
    return {
        "campaignId": campaign_id,
        "rulesetId": 3,
        "ruleIndex": 0,
        "ruleName": f"rule of {effect_type}",
        "effectType": effect_type,
        "props": props,
        **extra,
    }


# Realistic props for every effect type, with every field of its ...EffectProps model.
TX = "f2d8a1a4-3b7e-4c1e-9a77-2d1c3b6e5f00"
EXAMPLES: dict[str, dict] = {
    "acceptCoupon": {"value": "SUMMER10"},
    "acceptReferral": {"value": "REF-ANNA-7"},
    "addFreeItem": {"sku": "SKU-GIFT-1", "name": "Free tote bag", "desiredQuantity": 2},
    "addLoyaltyPoints": {
        "name": "10% back in points",
        "programId": 7,
        "subLedgerId": "",
        "value": 12.5,
        "desiredValue": 12.5,
        "recipientIntegrationId": "cust-42",
        "startDate": "2024-05-01T10:00:00Z",
        "expiryDate": "2025-05-01T10:00:00.123456789Z",
        "transactionUUID": TX,
        "cartItemPosition": 1,
        "cartItemSubPosition": 0,
        "cardIdentifier": "CARD-1",
        "bundleIndex": 0,
        "bundleName": "duo",
        "awaitsActivation": False,
        "validityDuration": "30D",
    },
    "addToAudience": {
        "audienceId": 5,
        "audienceName": "VIP",
        "profileIntegrationId": "cust-42",
        "profileId": 900,
    },
    "awardGiveaway": {
        "poolId": 2,
        "poolName": "Gift cards",
        "recipientIntegrationId": "cust-42",
        "giveawayId": 77,
        "code": "GIFT-XYZ",
    },
    "changeLoyaltyTierLevel": {
        "ruleTitle": "Upgrade to gold",
        "programId": 7,
        "subLedgerId": "",
        "previousTierName": "Silver",
        "newTierName": "Gold",
        "expiryDate": "2025-12-31T23:59:59+01:00",
    },
    "couponCreated": {"value": "THANKS-5", "profileId": "cust-42"},
    "customEffect": {
        "effectId": 3,
        "name": "show_banner",
        "cartItemPosition": 0,
        "cartItemSubPosition": 0,
        "bundleIndex": 0,
        "bundleName": "duo",
        "payload": {"banner": "summer", "priority": 2},
    },
    "deductLoyaltyPoints": {
        "ruleTitle": "Pay with points",
        "programId": 7,
        "subLedgerId": "",
        "value": 300,
        "transactionUUID": TX,
        "name": "Redeem points",
        "cardIdentifier": "CARD-1",
    },
    "error": {"message": "Attribute Item.color does not exist"},
    "extendLoyaltyPointsExpiryDate": {
        "programId": 7,
        "subLedgerId": "",
        "extensionDuration": "30D",
        "affectedTransactions": [
            {
                "transactionUUID": TX,
                "previousExpiryDate": "2024-06-01T00:00:00Z",
                "newExpiryDate": "2024-07-01T00:00:00Z",
            }
        ],
    },
    "increaseAchievementProgress": {
        "achievementId": 4,
        "achievementName": "five_orders",
        "progressTrackerId": 11,
        "delta": 1,
        "value": 3,
        "target": 5,
        "isJustCompleted": False,
    },
    "redeemReferral": {"id": 55, "value": "REF-ANNA-7"},
    "referralCreated": {"value": "REF-NEW-1"},
    "rejectCoupon": {
        "value": "OLD2019",
        "rejectionReason": "CouponExpired",
        "conditionIndex": 0,
        "effectIndex": 0,
        "details": "expired on 2019-12-31",
        "campaignExclusionReason": "CampaignGaveLowerDiscount",
    },
    "rejectReferral": {
        "value": "REF-SELF",
        "rejectionReason": "ReferralRecipientIdSameAsAdvocate",
        "conditionIndex": 1,
        "effectIndex": 0,
        "details": "same profile",
        "campaignExclusionReason": "CampaignIsNotFirst",
    },
    "removeFromAudience": {
        "audienceId": 6,
        "audienceName": "Newcomers",
        "profileIntegrationId": "cust-42",
        "profileId": 900,
    },
    "reserveCoupon": {
        "couponValue": "RESERVED-1",
        "profileIntegrationId": "cust-42",
        "isNewReservation": True,
    },
    "rollbackAddedLoyaltyPoints": {
        "programId": 7,
        "subLedgerId": "",
        "value": 12.5,
        "recipientIntegrationId": "cust-42",
        "transactionUUID": TX,
        "cartItemPosition": 1,
        "cartItemSubPosition": 0,
        "cardIdentifier": "CARD-1",
    },
    "rollbackCoupon": {"value": "SUMMER10"},
    "rollbackDeductedLoyaltyPoints": {
        "programId": 7,
        "subLedgerId": "",
        "value": 300,
        "recipientIntegrationId": "cust-42",
        "startDate": "2024-05-01T10:00:00Z",
        "expiryDate": "2025-05-01T10:00:00Z",
        "transactionUUID": TX,
        "cardIdentifier": "CARD-1",
    },
    "rollbackDiscount": {
        "name": "10% off",
        "value": 2.5,
        "cartItemPosition": 0,
        "cartItemSubPosition": 0,
        "additionalCostId": 1,
        "additionalCost": "shipping",
        "scope": "sessionTotal",
    },
    "rollbackIncreasedAchievementProgress": {
        "achievementId": 4,
        "achievementName": "five_orders",
        "progressTrackerId": 11,
        "decreaseProgressBy": 1,
        "currentProgress": 2,
        "target": 5,
    },
    "rollbackReferral": {"value": "REF-ANNA-7"},
    "setDiscount": {"name": "10% off", "value": 2.5, "scope": "sessionTotal", "desiredValue": 2.5},
    "setDiscountPerAdditionalCost": {
        "name": "Free shipping",
        "additionalCostId": 1,
        "additionalCost": "shipping",
        "value": 4.95,
        "desiredValue": 4.95,
    },
    "setDiscountPerAdditionalCostPerItem": {
        "name": "No packaging fee",
        "additionalCostId": 2,
        "value": 0.5,
        "position": 1,
        "subPosition": 0,
        "additionalCost": "packaging",
        "desiredValue": 0.5,
    },
    "setDiscountPerItem": {
        "name": "Discount on item #1",
        "value": 1.5,
        "position": 1,
        "subPosition": 1,
        "desiredValue": 1.5,
        "scope": "price",
        "totalDiscount": 1.5,
        "desiredTotalDiscount": 1.5,
        "bundleIndex": 1,
        "bundleName": "my_bundle",
        "targetedItemPosition": 1,
        "targetedItemSubPosition": 1,
    },
    "setLoyaltyPointsExpiryDate": {
        "programId": 7,
        "subLedgerId": "",
        "newExpiryDate": "2025-01-31T00:00:00Z",
        "affectedTransactions": [{"transactionUUID": TX, "newExpiryDate": "2025-01-31T00:00:00Z"}],
    },
    "showBundleMetadata": {
        "description": "Shirt and trousers",
        "bundleAttributes": ["outfit"],
        "itemsIndices": [0, 2],
    },
    "showNotification": {
        "notificationType": "info",
        "title": "Almost there",
        "body": "Add 5 EUR more for free shipping.",
    },
    "strikethroughSetDiscountPerItem": {"name": "20% off shoes", "value": 19.99},
    "strikethroughSetDiscountPerItemMember": {"name": "Members: 25% off", "value": 17.99},
    "triggerWebhook": {"webhookId": 8, "webhookName": "notify-crm"},
    "updateAttribute": {"path": "Profile.Segment", "value": "gold"},
    "willAwardGiveaway": {
        "poolId": 2,
        "poolName": "Gift cards",
        "recipientIntegrationId": "cust-42",
    },
}


def _check_accept_coupon(r: Effects) -> None:
    assert r.accepted_coupons[0].code == "SUMMER10"
    assert r.accepted_coupons[0].campaign_id == 10


def _check_add_loyalty_points(r: Effects) -> None:
    p = r.loyalty_points_earned[0]
    assert (p.program_id, p.subledger_id, p.value) == (7, "", D("12.5"))
    assert p.start_date == datetime(2024, 5, 1, 10, tzinfo=timezone.utc)
    assert p.expiry_date == datetime(2025, 5, 1, 10, 0, 0, 123456, tzinfo=timezone.utc)
    assert (p.position, p.sub_position, p.card_identifier) == (1, 0, "CARD-1")
    assert p.pending is False  # the start date is in the past and nothing awaits activation
    assert r.points_earned() == D("12.5") == r.points_earned(7)
    assert r.points_earned(8) == 0


def _check_set_discount_per_item(r: Effects) -> None:
    d = r.discounts[0]
    assert (d.scope, d.position, d.sub_position, d.value) == ("item", 1, 1, D("1.5"))
    assert d.talon_scope == "price"
    assert r.line_discounts == {1: D("1.5")}
    assert r.item_discount_total == r.discount_total == D("1.5")


# Where each type's record lands, and a spot check of what it holds.
CHECKS = {
    "acceptCoupon": _check_accept_coupon,
    "acceptReferral": lambda r: r.accepted_referral.code == "REF-ANNA-7",
    "addFreeItem": lambda r: (
        (r.free_items[0].sku, r.free_items[0].desired_quantity) == ("SKU-GIFT-1", 2)
    ),
    "addLoyaltyPoints": _check_add_loyalty_points,
    "addToAudience": lambda r: r.audiences_added[0].audience_id == 5,
    "awardGiveaway": lambda r: (r.giveaways[0].awarded, r.giveaways[0].code) == (True, "GIFT-XYZ"),
    "changeLoyaltyTierLevel": lambda r: (
        (r.tier_changes[0].previous_tier, r.tier_changes[0].new_tier) == ("Silver", "Gold")
    ),
    "couponCreated": lambda r: (
        (r.coupons_created[0].code, r.coupons_created[0].profile_id) == ("THANKS-5", "cust-42")
    ),
    "customEffect": lambda r: (
        r.custom_effects[0].payload == {"banner": "summer", "priority": 2}
        and r.custom_effects[0].name == "show_banner"
    ),
    "deductLoyaltyPoints": lambda r: r.loyalty_points_spent[0].value == D(300) == r.points_spent(),
    "error": lambda r: r.errors[0].message.startswith("Attribute"),
    "extendLoyaltyPointsExpiryDate": lambda r: (
        r.loyalty_expiry_changes[0].extension_duration == "30D"
        and len(r.loyalty_expiry_changes[0].affected_transactions) == 1
    ),
    "increaseAchievementProgress": lambda r: (
        (r.achievements[0].value, r.achievements[0].target) == (D(3), D(5))
    ),
    "redeemReferral": lambda r: (
        (r.redeemed_referrals[0].referral_id, r.redeemed_referrals[0].code) == (55, "REF-ANNA-7")
    ),
    "referralCreated": lambda r: r.referrals_created[0].code == "REF-NEW-1",
    "rejectCoupon": lambda r: (
        (r.rejected_coupons[0].reason, r.rejected_coupons[0].message)
        == ("CouponExpired", "This coupon has expired.")
    ),
    "rejectReferral": lambda r: (
        r.rejected_referrals[0].message == "You can't use your own referral code."
    ),
    "removeFromAudience": lambda r: r.audiences_removed[0].audience_name == "Newcomers",
    "reserveCoupon": lambda r: (
        (r.coupon_reservations[0].code, r.coupon_reservations[0].is_new) == ("RESERVED-1", True)
    ),
    "rollbackAddedLoyaltyPoints": lambda r: (
        isinstance(r.rollbacks[0], fx.AddedLoyaltyPointsRollback)
        and r.rollbacks[0].value == D("12.5")
    ),
    "rollbackCoupon": lambda r: (
        r.rollbacks[0]
        == fx.CouponRollback(
            effect_type="rollbackCoupon",
            campaign_id=10,
            rule_name="rule of rollbackCoupon",
            code="SUMMER10",
        )
    ),
    "rollbackDeductedLoyaltyPoints": lambda r: (
        isinstance(r.rollbacks[0], fx.DeductedLoyaltyPointsRollback)
        and r.rollbacks[0].value == D(300)
    ),
    "rollbackDiscount": lambda r: (
        r.rolled_back_discount_total == D("2.5") and r.discount_total == 0
    ),
    "rollbackIncreasedAchievementProgress": lambda r: r.rollbacks[0].decrease_by == D(1),
    "rollbackReferral": lambda r: isinstance(r.rollbacks[0], fx.ReferralRollback),
    "setDiscount": lambda r: (
        r.discounts[0].scope == "cart" and r.cart_discount_total == r.discount_total == D("2.5")
    ),
    "setDiscountPerAdditionalCost": lambda r: (
        r.additional_cost_discounts == {"shipping": D("4.95")}
        and r.discounts[0].scope == "additional_cost"
    ),
    "setDiscountPerAdditionalCostPerItem": lambda r: (
        r.additional_cost_discounts == {"packaging": D("0.5")}
        and (r.discounts[0].scope, r.discounts[0].position) == ("additional_cost_item", 1)
    ),
    "setDiscountPerItem": _check_set_discount_per_item,
    "setLoyaltyPointsExpiryDate": lambda r: (
        r.loyalty_expiry_changes[0].new_expiry_date == datetime(2025, 1, 31, tzinfo=timezone.utc)
    ),
    "showBundleMetadata": lambda r: r.bundles[0].positions == [0, 2],
    "showNotification": lambda r: (
        (r.notifications[0].title, r.notifications[0].type) == ("Almost there", "info")
    ),
    "strikethroughSetDiscountPerItem": lambda r: r.strikethrough[0].member is False,
    "strikethroughSetDiscountPerItemMember": lambda r: r.strikethrough[0].member is True,
    "triggerWebhook": lambda r: (r.webhooks[0].webhook_id, r.webhooks[0].name) == (8, "notify-crm"),
    "updateAttribute": lambda r: (
        (r.attribute_updates[0].path, r.attribute_updates[0].value) == ("Profile.Segment", "gold")
    ),
    "willAwardGiveaway": lambda r: (r.giveaways[0].awarded, r.giveaways[0].code) == (False, None),
}


# --------------------------------------------------------------------------- every effect type


def test_every_effect_type_of_the_api_is_known():
    assert set(EFFECT_PROPS) <= KNOWN_EFFECT_TYPES
    assert set(EFFECT_PROPS) == set(EXAMPLES) == set(CHECKS)


@pytest.mark.parametrize("effect_type", sorted(EFFECT_PROPS))
def test_example_props_follow_the_reference(effect_type):
    fields = MODELS[EFFECT_PROPS[effect_type]]
    props = EXAMPLES[effect_type]
    assert set(props) <= set(fields), "an example uses a field the reference does not have"
    assert {name for name, (_, required) in fields.items() if required} <= set(props)


@pytest.mark.parametrize("effect_type", sorted(EFFECT_PROPS))
def test_every_effect_type_parses(effect_type, caplog):
    caplog.set_level(logging.DEBUG, logger="django_talonone.effects")
    result = read_effects([effect(effect_type, EXAMPLES[effect_type])])
    assert result.unknown == []
    assert result.invalid == []
    assert CHECKS[effect_type](result) in (None, True)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("effect_type", sorted(EFFECT_PROPS))
def test_records_carry_the_rule(effect_type):
    result = read_effects([effect(effect_type, EXAMPLES[effect_type], campaign_id=31)])
    records = [
        record
        for name in Effects.__dataclass_fields__
        for record in (
            getattr(result, name)
            if isinstance(getattr(result, name), list)
            else [getattr(result, name)]
        )
        if isinstance(record, fx._Record)
    ]
    assert len(records) == 1
    assert records[0].effect_type == effect_type
    assert records[0].campaign_id == 31
    assert records[0].rule_name == f"rule of {effect_type}"


def test_custom_effects_also_read_under_the_props_model_stem():
    # The wire name is "customEffect"; "custom" (the stem of CustomEffectProps) is read too.
    r = read_effects([effect("custom", EXAMPLES["customEffect"])])
    assert r.unknown == [] and r.invalid == []
    assert r.custom_effects[0].name == "show_banner"
    assert r.custom_effects[0].effect_type == "custom"


def test_a_whole_session_reads_into_totals():
    answer = {
        "customerSession": {"id": 1},
        "effects": [
            effect("setDiscount", {"name": "5 off", "value": 5}, campaign_id=1),
            effect("setDiscountPerItem", {"name": "a", "value": 1.1, "position": 0}, campaign_id=2),
            effect(
                "setDiscountPerItem",
                {"name": "b", "value": 0.9, "position": 0, "subPosition": 1},
                campaign_id=2,
            ),
            effect("setDiscountPerItem", {"name": "c", "value": 2, "position": 2}, campaign_id=3),
            effect(
                "setDiscountPerAdditionalCost",
                {
                    "name": "ship",
                    "value": 4.95,
                    "additionalCost": "shipping",
                    "additionalCostId": 1,
                },
            ),
            effect(
                "setDiscountPerAdditionalCostPerItem",
                {
                    "name": "ship item",
                    "value": 0.05,
                    "additionalCost": "shipping",
                    "additionalCostId": 1,
                    "position": 2,
                },
            ),
            effect("rollbackDiscount", {"name": "old", "value": 3}),
        ],
    }
    r = read_effects(answer)
    assert r.cart_discount_total == D(5)
    assert r.item_discount_total == D("4.0")
    assert r.line_discounts == {0: D("2.0"), 2: D(2)}
    assert r.additional_cost_discounts == {"shipping": D("5.00")}
    assert r.additional_cost_discount_total == D("5.00")
    assert r.discount_total == D("14.00")  # rollbacks are not subtracted
    assert r.cart_and_item_discount_total == D("9.0")
    assert r.rolled_back_discount_total == D(3)


def test_numbers_are_read_from_their_text():
    r = read_effects(
        [
            effect("setDiscount", {"name": "a", "value": 0.1}),
            effect("setDiscount", {"name": "b", "value": 0.2}),
            effect("setDiscount", {"name": "c", "value": "19.99"}),
        ]
    )
    assert [d.value for d in r.discounts] == [D("0.1"), D("0.2"), D("19.99")]
    assert r.discount_total == D("20.29")  # a float sum would be 20.290000000000003


def test_cascading_scopes_of_additional_costs_are_not_cart_or_item_discounts():
    r = read_effects(
        [
            effect("setDiscount", {"name": "a", "value": 3, "scope": "additionalCosts"}),
            effect(
                "setDiscountPerItem",
                {"name": "b", "value": 1, "position": 0, "scope": "additionalCosts"},
            ),
            effect(
                "setDiscountPerItem", {"name": "c", "value": 2, "position": 0, "scope": "itemTotal"}
            ),
        ]
    )
    assert [d.scope for d in r.discounts] == ["additional_cost", "additional_cost_item", "item"]
    assert r.additional_cost_discount_total == D(4)
    assert r.additional_cost_discounts == {}  # no cost name was given
    assert r.line_discounts == {0: D(2)}
    assert r.cart_and_item_discount_total == D(2)


def test_coupon_code_of_a_discount_comes_from_the_campaigns_accept_coupon():
    r = read_effects(
        [
            effect("setDiscount", {"name": "a", "value": 5}, campaign_id=4, triggeredByCoupon=901),
            effect("setDiscount", {"name": "b", "value": 1}, campaign_id=5),
            effect("acceptCoupon", {"value": "SAVE5"}, campaign_id=4),
        ]
    )
    assert [(d.coupon_code, d.triggered_by_coupon) for d in r.discounts] == [
        ("SAVE5", 901),
        (None, None),
    ]


def test_coupon_codes_by_coupon_id_and_never_a_guess():
    r = read_effects(
        [
            effect("setDiscount", {"name": "a", "value": 1}, campaign_id=4, triggeredByCoupon=1),
            effect("setDiscount", {"name": "b", "value": 1}, campaign_id=4, triggeredByCoupon=2),
            effect("setDiscount", {"name": "c", "value": 1}, campaign_id=4, triggeredByCoupon=3),
            effect("acceptCoupon", {"value": "ONE"}, campaign_id=4, triggeredByCoupon=1),
            effect("acceptCoupon", {"value": "TWO"}, campaign_id=4, triggeredByCoupon=2),
        ]
    )
    # Coupon 3's code is not known and two codes were accepted in the campaign: no guess.
    assert [d.coupon_code for d in r.discounts] == ["ONE", "TWO", None]


def test_one_accepted_referral_even_if_several_campaigns_accept_it():
    r = read_effects(
        [
            effect("acceptReferral", {"value": "REF-1"}, campaign_id=1),
            effect("acceptReferral", {"value": "REF-1"}, campaign_id=2),
        ]
    )
    assert r.accepted_referral.code == "REF-1"
    assert r.accepted_referral.campaign_id == 1


def test_loyalty_points_pending():
    future = (datetime.now(timezone.utc) + timedelta(days=14)).isoformat()
    base = EXAMPLES["addLoyaltyPoints"]
    r = read_effects(
        [
            effect("addLoyaltyPoints", {**base, "startDate": future}),
            effect("addLoyaltyPoints", {**base, "awaitsActivation": True}),
            effect("addLoyaltyPoints", {k: v for k, v in base.items() if k != "startDate"}),
        ]
    )
    assert [p.pending for p in r.loyalty_points_earned] == [True, True, False]
    assert r.points_earned() == D("37.5")


def test_loyalty_points_with_a_naive_start_datetime_read_it_as_utc():
    base = EXAMPLES["addLoyaltyPoints"]
    later = datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(days=3)
    row = {"effect_type": "addLoyaltyPoints", "props": {**base, "startDate": later}}
    r = read_effects([row])
    assert r.invalid == []
    assert [p.pending for p in r.loyalty_points_earned] == [True]


# --------------------------------------------------------------------------- kinds of input


def test_effect_rows_are_read_like_wire_dicts():
    row = SimpleNamespace(
        effect_type="setDiscountPerItem",
        props={"name": "x", "value": 2.5, "position": 0},
        campaign_id=12,
        rule_name="Shoes",
        position=0,
        sub_position=None,
        triggered_by_coupon=77,
        coupon_code="SHOES",
        is_current=True,
    )
    old = SimpleNamespace(**{**vars(row), "is_current": False})
    r = read_effects([row, old])
    assert len(r.discounts) == 1  # history rows (is_current=False) do not count
    d = r.discounts[0]
    assert (d.campaign_id, d.rule_name, d.coupon_code, d.triggered_by_coupon) == (
        12,
        "Shoes",
        "SHOES",
        77,
    )
    assert r.line_discounts == {0: D("2.5")}


def test_effect_rows_as_dicts_skip_history_too():
    current = {"effect_type": "setDiscount", "props": {"name": "x", "value": 1}, "is_current": True}
    past = {**current, "is_current": False}
    r = read_effects([current, past])
    assert r.discount_total == D("1")


def test_mirrored_effect_model_instances():
    from django_talonone.models import Effect

    row = Effect(
        campaign_id=8,
        ruleset_id=2,
        rule_index=0,
        rule_name="Summer",
        effect_type="setDiscount",
        props={"name": "Summer", "value": 7.5},
        coupon_code="SUMMER",
        triggered_by_coupon=5,
    )
    r = read_effects([row, Effect(campaign_id=8, effect_type="setDiscount", is_current=False)])
    assert r.invalid == []
    assert r.discount_total == D("7.5")
    assert (r.discounts[0].coupon_code, r.discounts[0].rule_name) == ("SUMMER", "Summer")


def test_snake_case_dicts_and_single_effects_are_accepted():
    snake = {"effect_type": "setDiscount", "props": {"name": "a", "value": 1}, "campaign_id": 3}
    assert read_effects([snake]).discount_total == D(1)
    assert read_effects(snake).discount_total == D(1)
    assert read_effects(effect("setDiscount", {"name": "a", "value": 2})).discount_total == D(2)
    assert read_effects(None) == Effects()
    assert read_effects([]) == Effects()


def test_reading_needs_no_django():
    code = (
        "import sys, django_talonone.effects as e;"
        "r = e.read_effects([{'effectType': 'rejectCoupon', 'campaignId': 1,"
        " 'props': {'value': 'X', 'rejectionReason': 'CouponExpired'}}]);"
        "assert r.rejected_coupons[0].message == 'This coupon has expired.';"
        "assert 'django.conf' not in sys.modules, sorted(m for m in sys.modules if 'django' in m)"
    )
    root = str(Path(__file__).resolve().parents[1])
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env={"PYTHONPATH": root})


# --------------------------------------------------------------------------- unknown, malformed


def test_unknown_effect_types_are_kept_and_logged_once(caplog):
    caplog.set_level(logging.DEBUG, logger="django_talonone.effects")
    future = effect("awardTimeMachine", {"years": 3})
    r = read_effects([future, effect("setDiscount", {"name": "a", "value": 1})])
    assert r.unknown == [future]
    assert r.discount_total == D(1)
    infos = [x for x in caplog.records if x.levelno == logging.INFO]
    assert len(infos) == 1
    assert "awardTimeMachine" in infos[0].getMessage()
    caplog.clear()
    assert read_effects([future]).unknown == [future]
    assert not [x for x in caplog.records if x.levelno >= logging.INFO]


MALFORMED = [
    effect("setDiscount", {"name": "a"}),  # no value
    effect("setDiscount", {"name": "a", "value": "lots"}),
    effect("setDiscount", {"name": "a", "value": True}),
    effect("setDiscount", {"name": "a", "value": float("nan")}),
    effect("setDiscount", {"name": "a", "value": -5}),
    effect("setDiscount", {"name": "a", "value": {"amount": 1}}),
    effect("setDiscountPerItem", {"name": "a", "value": 1}),  # no position
    effect("setDiscountPerItem", {"name": "a", "value": 1, "position": 1.5}),
    effect("setDiscountPerItem", {"name": "a", "value": 1, "position": -1}),
    effect("setDiscountPerAdditionalCost", {"name": "a", "value": 1}),  # no cost name
    effect("acceptCoupon", {"value": 12345}),
    effect("rejectCoupon", {"value": "X"}),  # no reason
    effect("addLoyaltyPoints", {"programId": "seven", "value": 1}),
    effect("addLoyaltyPoints", {**EXAMPLES["addLoyaltyPoints"], "expiryDate": "next tuesday"}),
    effect("addFreeItem", {"name": "gift"}),  # no sku
    effect("addFreeItem", {"sku": "S", "desiredQuantity": "two"}),
    effect("customEffect", {"name": "x", "payload": "not an object"}),
    effect("showBundleMetadata", {"description": "d", "bundleAttributes": [1], "itemsIndices": []}),
    effect("setLoyaltyPointsExpiryDate", {"programId": 1, "subLedgerId": ""}),
    effect("setDiscount", ["not", "a", "dict"]),
    {"effectType": 42, "props": {}},
    {"campaignId": 1, "props": {}},
    None,
    7,
    "setDiscount",
]


@pytest.mark.parametrize("bad", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_effects_do_not_raise(bad, caplog):
    good = effect("setDiscount", {"name": "ok", "value": 1})
    r = read_effects([bad, good])
    assert r.discount_total == D(1)
    assert len(r.invalid) == 1
    assert r.invalid[0].error
    assert r.unknown == []
    assert [x for x in caplog.records if x.levelno == logging.WARNING]


@pytest.mark.parametrize("bad", [7, "effects", b"x", {"no": "effects"}, object()])
def test_a_non_list_does_not_raise(bad):
    r = read_effects(bad)
    assert len(r.invalid) == 1
    assert r.discount_total == 0


def test_invalid_effects_are_logged_once_per_type(caplog):
    caplog.set_level(logging.DEBUG, logger="django_talonone.effects")
    bad = effect("setDiscount", {"name": "a"})
    read_effects([bad, bad])
    warnings = [x for x in caplog.records if x.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "setDiscount" in warnings[0].getMessage()


def test_timestamps_in_every_rfc3339_spelling():
    base = EXAMPLES["rollbackDeductedLoyaltyPoints"]
    spellings = [
        "2024-05-01T10:00:00Z",
        "2024-05-01T10:00:00.5Z",
        "2024-05-01T10:00:00.123456789+00:00",
        "2024-05-01T12:00:00+02:00",
        "2024-05-01T10:00:00",
    ]
    r = read_effects(
        [effect("rollbackDeductedLoyaltyPoints", {**base, "startDate": s}) for s in spellings]
    )
    assert r.invalid == []
    starts = [x.start_date.replace(microsecond=0) for x in r.rollbacks]
    assert set(starts) == {datetime(2024, 5, 1, 10, tzinfo=timezone.utc)}


# --------------------------------------------------------------------------- rejection messages

COUPON_REASONS = [
    "CampaignLimitReached",
    "CouponExpired",
    "CouponLimitReached",
    "CouponNotFound",
    "CouponPartOfNotRunningCampaign",
    "CouponRecipientDoesNotMatch",
    "CouponRejectedByCondition",
    "CouponStartDateInFuture",
    "EffectCouldNotBeApplied",
    "ProfileLimitReached",
    "CouponPartOfNotTriggeredCampaign",
    "CouponReservationRequired",
    "ProfileRequired",
]
REFERRAL_REASONS = [
    "AdvocateNotFound",
    "CampaignLimitReached",
    "EffectCouldNotBeApplied",
    "ProfileLimitReached",
    "ReferralCustomerAlreadyReferred",
    "ReferralExpired",
    "ReferralLimitReached",
    "ReferralNotFound",
    "ReferralPartOfNotRunningCampaign",
    "ReferralRecipientDoesNotMatch",
    "ReferralRecipientIdSameAsAdvocate",
    "ReferralRejectedByCondition",
    "ReferralStartDateInFuture",
    "ReferralPartOfNotTriggeredCampaign",
]


@pytest.mark.parametrize("reason", COUPON_REASONS)
def test_every_coupon_rejection_has_its_own_words(reason):
    message = customer_message(reason, "coupon")
    assert message == COUPON_REJECTION_MESSAGES[reason]
    assert message != COUPON_REJECTION_MESSAGES["*"]
    assert reason not in message
    r = read_effects([effect("rejectCoupon", {"value": "C", "rejectionReason": reason})])
    assert r.rejected_coupons[0].message == message


@pytest.mark.parametrize("reason", REFERRAL_REASONS)
def test_every_referral_rejection_has_its_own_words(reason):
    message = customer_message(reason, "referral")
    assert message == REFERRAL_REJECTION_MESSAGES[reason]
    assert message != REFERRAL_REJECTION_MESSAGES["*"]
    assert "referral" in message.lower() or "advocate" in reason.lower() or "referred" in message
    r = read_effects([effect("rejectReferral", {"value": "R", "rejectionReason": reason})])
    assert r.rejected_referrals[0].message == message


def test_rejection_messages():
    assert customer_message("CouponExpired") == "This coupon has expired."
    assert customer_message("ReferralExpired") == "This referral code has expired."  # kind inferred
    assert customer_message("CouponRejectedCondition") == customer_message(
        "CouponRejectedByCondition"
    )
    assert customer_message("SomethingNew") == "This coupon can't be used for this order."
    assert (
        customer_message("SomethingNew", "referral")
        == "This referral code can't be used for this order."
    )
    assert customer_message("CampaignLimitReached") != customer_message(
        "CampaignLimitReached", "referral"
    )


def test_rejection_messages_can_be_overridden(monkeypatch):
    custom = {"CouponExpired": "Sorry, too late!"}
    assert customer_message("CouponExpired", messages=custom) == "Sorry, too late!"
    assert customer_message("CouponNotFound", messages=custom) == customer_message("CouponNotFound")
    reject = effect("rejectCoupon", {"value": "C", "rejectionReason": "CouponExpired"})
    assert read_effects([reject], messages=custom).rejected_coupons[0].message == "Sorry, too late!"

    monkeypatch.setitem(COUPON_REJECTION_MESSAGES, "CouponExpired", "Expired, alas.")
    monkeypatch.setitem(COUPON_REJECTION_MESSAGES, "*", "Nope.")
    assert read_effects([reject]).rejected_coupons[0].message == "Expired, alas."
    assert customer_message("Whatever") == "Nope."
    monkeypatch.delitem(COUPON_REJECTION_MESSAGES, "*")
    assert customer_message("Whatever") == "This coupon can't be used for this order."


def test_lazy_translation_strings_are_resolved(monkeypatch):
    class Lazy:
        def __str__(self) -> str:
            return "Abgelaufen."

    monkeypatch.setitem(COUPON_REJECTION_MESSAGES, "CouponExpired", Lazy())
    assert customer_message("CouponExpired") == "Abgelaufen."


# --------------------------------------------------------------------------- allocation


def cart(*prices, quantity: int = 1) -> list[dict]:
    return [{"price": D(p), "quantity": quantity} for p in prices]


def discounts(*, cart_off=None, items=None) -> list[dict]:
    out = []
    if cart_off is not None:
        out.append(effect("setDiscount", {"name": "cart", "value": cart_off}))
    for position, value in (items or {}).items():
        out.append(
            effect("setDiscountPerItem", {"name": "i", "value": value, "position": position})
        )
    return out


def amounts(adjustments, attr="discount") -> list[Decimal]:
    return [getattr(a, attr) for a in adjustments]


def test_ten_over_three_equal_lines():
    result = allocate_discounts(discounts(cart_off=10), cart("10.00", "10.00", "10.00"))
    assert amounts(result) == [D("3.34"), D("3.33"), D("3.33")]
    assert amounts(result, "total") == [D("6.66"), D("6.67"), D("6.67")]
    assert [a.position for a in result] == [0, 1, 2]
    assert all(str(a.discount) == f"{a.discount:.2f}" for a in result)


def test_largest_remainder_not_first_line():
    # Shares 1.666.., 3.333.., 5.0: the remainders decide, not the order.
    result = allocate_discounts(discounts(cart_off=10), cart("5", "10", "15"))
    assert amounts(result) == [D("1.67"), D("3.33"), D("5.00")]
    assert sum(amounts(result)) == D(10)


def test_item_and_cart_discounts_combined():
    effects = discounts(cart_off=6, items={1: "4.00"})
    result = allocate_discounts(effects, cart("10.00", "14.00", "10.00"))
    # Line 1 keeps its own 4.00; the cart's 6.00 is spread over 10 / 10 / 10 left.
    assert amounts(result, "item_discount") == [D("0.00"), D("4.00"), D("0.00")]
    assert amounts(result, "cart_discount") == [D("2.00"), D("2.00"), D("2.00")]
    assert amounts(result) == [D("2.00"), D("6.00"), D("2.00")]
    assert [len(a.discounts) for a in result] == [0, 1, 0]
    assert sum(amounts(result)) == D(10)


def test_zero_value_lines_get_nothing():
    result = allocate_discounts(discounts(cart_off=5), cart("0", "20.00", "0.00", "30.00"))
    assert amounts(result) == [D("0.00"), D("2.00"), D("0.00"), D("3.00")]


def test_a_discount_bigger_than_the_cart_is_capped():
    result = allocate_discounts(discounts(cart_off=100), cart("10.00", "5.50"))
    assert amounts(result) == [D("10.00"), D("5.50")]
    assert amounts(result, "total") == [D("0.00"), D("0.00")]


def test_an_item_discount_bigger_than_its_line_spills_over():
    result = allocate_discounts(discounts(items={0: 15}), cart("10.00", "10.00"))
    assert amounts(result) == [D("10.00"), D("5.00")]
    assert amounts(result, "item_discount") == [D("10.00"), D("0.00")]
    assert min(amounts(result, "total")) >= 0


def test_item_discounts_for_missing_lines_are_spread(caplog):
    result = allocate_discounts(discounts(items={5: 3}), cart("10.00", "20.00"))
    assert amounts(result) == [D("1.00"), D("2.00")]
    assert "5" in caplog.text


def test_the_total_is_rounded_once():
    # Talon.One may send more decimals than the currency has: 3 x 1.005 = 3.015 -> 3.02.
    effects = discounts(items={0: "1.005", 1: "1.005", 2: "1.005"})
    result = allocate_discounts(effects, cart("10", "10", "10"))
    assert sum(amounts(result)) == D("3.02")
    assert sorted(amounts(result)) == [D("1.00"), D("1.01"), D("1.01")]


def test_other_quanta_and_rounding():
    result = allocate_discounts(
        discounts(cart_off=1000), cart("1000", "1000", "1000"), quantum=D(1)
    )
    assert amounts(result) == [D(334), D(333), D(333)]
    result = allocate_discounts(
        discounts(cart_off="1.00"), cart("1.00", "1.00", "1.00"), quantum=D("0.05")
    )
    assert sum(amounts(result)) == D("1.00")
    assert all(a % D("0.05") == 0 for a in amounts(result))
    down = allocate_discounts(discounts(cart_off="0.999"), cart("1"), rounding="ROUND_DOWN")
    assert amounts(down) == [D("0.99")]


def test_lines_of_every_kind():
    class Line:
        def __init__(self, position, price, quantity):
            self.position, self.price, self.quantity = position, price, quantity

    effects = read_effects(discounts(cart_off=3, items={1: 2}))
    as_objects = allocate_discounts(effects, [Line(0, D("5.00"), 2), Line(1, 9.99, 1)])
    as_totals = allocate_discounts(effects, [{"line_total": "10.00"}, {"line_total": "9.99"}])
    as_units = allocate_discounts(
        effects, [{"unit_price": "10.00"}, {"unit_price": "3.33", "quantity": 3}]
    )
    custom = allocate_discounts(
        effects, [("a", "10.00"), ("b", "9.99")], line_value=lambda line: line[1]
    )
    for result in (as_objects, as_totals, as_units, custom):
        assert [a.value for a in result] == [D("10.00"), D("9.99")]
        assert sum(amounts(result)) == D(5)
    assert as_objects[1].line.price == 9.99


def test_lines_with_their_own_positions():
    lines = [{"position": 1, "price": "10"}, {"position": 0, "price": "20"}]
    result = allocate_discounts(discounts(items={0: 5}), lines)
    assert [(a.position, a.discount) for a in result] == [(1, D("0.00")), (0, D("5.00"))]


def test_bad_lines_are_the_shops_error():
    with pytest.raises(ValueError, match="position 0"):
        allocate_discounts([], [{"position": 0, "price": 1}, {"position": 0, "price": 1}])
    with pytest.raises(ValueError, match="negative"):
        allocate_discounts([], [{"price": -1}])
    with pytest.raises(ValueError, match="price"):
        allocate_discounts([], [{"sku": "no price"}])
    with pytest.raises(ValueError, match="quantum"):
        allocate_discounts([], [], quantum=D(0))


def test_no_discounts_and_no_lines():
    assert allocate_discounts([], []) == []
    assert amounts(allocate_discounts(None, cart("4.20"))) == [D("0.00")]
    result = allocate_discounts(Effects(), cart("4.20"))
    assert amounts(result, "total") == [D("4.20")]


def test_additional_cost_discounts_are_not_allocated():
    effects = [
        effect(
            "setDiscountPerAdditionalCost",
            {"name": "ship", "value": 4.95, "additionalCost": "shipping", "additionalCostId": 1},
        ),
        *discounts(cart_off=1),
    ]
    result = allocate_discounts(effects, cart("10", "10"))
    assert sum(amounts(result)) == D(1)


cents = st.integers(min_value=0, max_value=200_000).map(lambda c: D(c) / 100)
# Talon.One's own values can carry more decimals than the currency.
fine = st.integers(min_value=0, max_value=20_000_000).map(lambda c: D(c) / 10_000)


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(st.one_of(st.just(D("0.00")), cents), min_size=1, max_size=12),
    cart_off=st.one_of(st.none(), cents, fine),
    items=st.dictionaries(st.integers(0, 14), st.one_of(cents, fine), max_size=6),
)
def test_allocation_always_sums_to_the_capped_total(values, cart_off, items):
    lines = [{"line_total": v} for v in values]
    effects = read_effects(discounts(cart_off=cart_off, items=items))
    result = allocate_discounts(effects, lines)
    total = (cart_off or 0) + sum(items.values(), D(0))
    expected = min(total.quantize(CENT, rounding=ROUND_HALF_UP), sum(values))
    assert sum(amounts(result)) == expected
    for adj, value in zip(result, values, strict=True):
        assert D(0) <= adj.discount <= value
        assert adj.total == value - adj.discount >= 0
        assert adj.item_discount + adj.cart_discount == adj.discount
        assert adj.item_discount >= 0 and adj.cart_discount >= 0
        assert adj.discount == adj.discount.quantize(CENT)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(cents.filter(lambda v: v > 0), min_size=1, max_size=10),
    share=st.fractions(min_value=0, max_value=1),
)
def test_cart_discounts_are_proportional_within_one_cent(values, share):
    cart_value = sum(values)
    cart_off = (cart_value * D(share.numerator) / D(share.denominator)).quantize(CENT)
    result = allocate_discounts(discounts(cart_off=cart_off), [{"line_total": v} for v in values])
    assert sum(amounts(result)) == cart_off
    for adj, value in zip(result, values, strict=True):
        exact = cart_off * value / cart_value
        assert abs(adj.discount - exact) < CENT
