"""Effects, typed: what a session's rule-engine effects mean for the shop.

Every answer to a session update carries the *complete current* set of effects, so a shop
reads the latest set into an :class:`Effects` with :func:`read_effects` and rebuilds its
promotion adjustments from it; :func:`allocate_discounts` spreads the money over the cart lines
so per-line prices add up to the session's discount to the cent. Nothing here imports Django at
module import, so the reading works on plain API answers as well as on mirrored ``Effect`` rows.
"""

from __future__ import annotations

import logging
import math
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from fractions import Fraction
from typing import Any, Literal

__all__ = [
    "COUPON_REJECTION_MESSAGES",
    "KNOWN_EFFECT_TYPES",
    "REFERRAL_REJECTION_MESSAGES",
    "AcceptedCoupon",
    "AcceptedReferral",
    "AchievementProgress",
    "AchievementProgressRollback",
    "AddedLoyaltyPointsRollback",
    "AttributeUpdate",
    "AudienceChange",
    "BundleMetadata",
    "CouponReservation",
    "CouponRollback",
    "CreatedCoupon",
    "CreatedReferral",
    "CustomEffect",
    "DeductedLoyaltyPointsRollback",
    "Discount",
    "DiscountRollback",
    "EffectError",
    "Effects",
    "FreeItem",
    "Giveaway",
    "InvalidEffect",
    "LineAdjustment",
    "LoyaltyExpiryChange",
    "LoyaltyPointsEarned",
    "LoyaltyPointsSpent",
    "Notification",
    "RedeemedReferral",
    "ReferralRollback",
    "RejectedCoupon",
    "RejectedReferral",
    "Rollback",
    "Strikethrough",
    "TierChange",
    "WebhookTriggered",
    "allocate_discounts",
    "customer_message",
    "read_effects",
]

logger = logging.getLogger(__name__)

DiscountScope = Literal["cart", "item", "additional_cost", "additional_cost_item"]
RejectionKind = Literal["coupon", "referral"]


# --------------------------------------------------------------------------- records
# Every record is frozen and keyword-only; ``campaign_id`` and ``rule_name`` say which rule
# produced it, ``effect_type`` which effect (handy when one record type serves two effects).


@dataclass(frozen=True, slots=True, kw_only=True)
class _Record:
    effect_type: str = ""
    campaign_id: int | None = None
    rule_name: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Discount(_Record):
    """A discount effect: ``setDiscount`` (cart), ``setDiscountPerItem`` (item),
    ``setDiscountPerAdditionalCost`` (additional_cost) or ``setDiscountPerAdditionalCostPerItem``
    (additional_cost_item)."""

    name: str
    value: Decimal
    scope: DiscountScope
    position: int | None = None
    sub_position: int | None = None
    additional_cost: str | None = None
    additional_cost_id: int | None = None
    desired_value: Decimal | None = None
    #: Talon.One's own ``scope`` prop (e.g. "sessionTotal", "price", "additionalCosts"), if sent.
    talon_scope: str | None = None
    #: The code of the coupon that triggered it, when known (from the campaign's acceptCoupon).
    coupon_code: str | None = None
    triggered_by_coupon: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AcceptedCoupon(_Record):
    """A coupon code the session accepted (``acceptCoupon``)."""

    code: str


@dataclass(frozen=True, slots=True, kw_only=True)
class _Rejection(_Record):
    code: str
    reason: str
    message: str
    details: str | None = None
    campaign_exclusion_reason: str | None = None
    condition_index: int | None = None
    effect_index: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RejectedCoupon(_Rejection):
    """A coupon code the session rejected, with the reason and words a customer understands."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AcceptedReferral(_Record):
    """The referral code the session accepted (``acceptReferral``)."""

    code: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RejectedReferral(_Rejection):
    """A referral code the session rejected, with the reason and words a customer understands."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RedeemedReferral(_Record):
    """A referral code redeemed in this session (``redeemReferral``)."""

    referral_id: int
    code: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LoyaltyPointsEarned(_Record):
    """Points the session adds (``addLoyaltyPoints``); they persist when the session closes."""

    program_id: int
    subledger_id: str
    value: Decimal
    name: str = ""
    desired_value: Decimal | None = None
    recipient_integration_id: str = ""
    transaction_uuid: str = ""
    start_date: datetime | None = None
    expiry_date: datetime | None = None
    #: True when the points will not be active at once: they await activation or start later.
    pending: bool = False
    awaits_activation: bool = False
    validity_duration: str | None = None
    position: int | None = None
    sub_position: int | None = None
    card_identifier: str | None = None
    bundle_index: int | None = None
    bundle_name: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LoyaltyPointsSpent(_Record):
    """Points the session deducts (``deductLoyaltyPoints``)."""

    program_id: int
    subledger_id: str
    value: Decimal
    name: str = ""
    rule_title: str = ""
    transaction_uuid: str = ""
    card_identifier: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TierChange(_Record):
    """A loyalty tier change (``changeLoyaltyTierLevel``)."""

    program_id: int
    subledger_id: str
    new_tier: str
    previous_tier: str | None = None
    expiry_date: datetime | None = None
    rule_title: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class LoyaltyExpiryChange(_Record):
    """An expiry-date change of points (``extendLoyaltyPointsExpiryDate`` or
    ``setLoyaltyPointsExpiryDate``); ``affected_transactions`` are the raw ledger changes."""

    program_id: int
    subledger_id: str
    extension_duration: str | None = None
    new_expiry_date: datetime | None = None
    affected_transactions: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class FreeItem(_Record):
    """``addFreeItem``: the shop should add this SKU at price 0."""

    sku: str
    name: str = ""
    desired_quantity: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Notification(_Record):
    """A message for the customer (``showNotification``); ``type`` is the notificationType."""

    title: str
    body: str
    type: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CustomEffect(_Record):
    """A campaign's custom effect (``customEffect``, also read as ``custom``): name and payload."""

    name: str
    payload: dict[str, Any]
    effect_id: int | None = None
    position: int | None = None
    sub_position: int | None = None
    bundle_index: int | None = None
    bundle_name: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AudienceChange(_Record):
    """``addToAudience`` or ``removeFromAudience``."""

    audience_id: int | None = None
    audience_name: str | None = None
    profile_integration_id: str | None = None
    profile_id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Giveaway(_Record):
    """A giveaway: announced while the session is open (``willAwardGiveaway``, ``awarded`` False)
    or awarded when it closes (``awardGiveaway``, with the code)."""

    pool_id: int
    pool_name: str = ""
    recipient_integration_id: str = ""
    awarded: bool = False
    code: str | None = None
    giveaway_id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CreatedCoupon(_Record):
    """A coupon created by a rule (``couponCreated``) for a profile integration id."""

    code: str
    profile_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CreatedReferral(_Record):
    """A referral code created by a rule (``referralCreated``)."""

    code: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CouponReservation(_Record):
    """A coupon reserved for a profile (``reserveCoupon``)."""

    code: str
    profile_integration_id: str = ""
    is_new: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class AttributeUpdate(_Record):
    """An attribute set by a rule (``updateAttribute``)."""

    path: str
    value: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookTriggered(_Record):
    """A rule-triggered webhook (``triggerWebhook``); Talon.One calls it, the shop only sees it."""

    webhook_id: int
    name: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class AchievementProgress(_Record):
    """Progress towards an achievement (``increaseAchievementProgress``)."""

    achievement_id: int
    name: str
    delta: Decimal
    value: Decimal
    target: Decimal
    just_completed: bool = False
    progress_tracker_id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BundleMetadata(_Record):
    """A product bundle (``showBundleMetadata``): the cart positions it groups."""

    description: str
    attributes: list[str] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class EffectError(_Record):
    """An ``error`` effect: a rule could not run as written."""

    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Strikethrough(_Record):
    """A strikethrough-price effect (``strikethroughSetDiscountPerItem`` or its ``Member`` form);
    ``value`` is passed through as sent."""

    name: str
    value: Any = None
    member: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class DiscountRollback(_Record):
    """``rollbackDiscount``: a discount taken back (cancel, return, reopen)."""

    name: str
    value: Decimal
    position: int | None = None
    sub_position: int | None = None
    additional_cost: str | None = None
    additional_cost_id: int | None = None
    talon_scope: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CouponRollback(_Record):
    """``rollbackCoupon``: the coupon's redemption was undone; it is usable again."""

    code: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReferralRollback(_Record):
    """``rollbackReferral``: the referral's redemption was undone."""

    code: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AddedLoyaltyPointsRollback(_Record):
    """``rollbackAddedLoyaltyPoints``: earned points taken back."""

    program_id: int
    subledger_id: str
    value: Decimal
    recipient_integration_id: str = ""
    transaction_uuid: str = ""
    position: int | None = None
    sub_position: int | None = None
    card_identifier: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeductedLoyaltyPointsRollback(_Record):
    """``rollbackDeductedLoyaltyPoints``: spent points given back."""

    program_id: int
    subledger_id: str
    value: Decimal
    recipient_integration_id: str = ""
    transaction_uuid: str = ""
    start_date: datetime | None = None
    expiry_date: datetime | None = None
    card_identifier: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AchievementProgressRollback(_Record):
    """``rollbackIncreasedAchievementProgress``: achievement progress taken back."""

    achievement_id: int
    name: str
    decrease_by: Decimal
    current_progress: Decimal
    target: Decimal
    progress_tracker_id: int | None = None


#: Any of the rollback records.
Rollback = (
    DiscountRollback
    | CouponRollback
    | ReferralRollback
    | AddedLoyaltyPointsRollback
    | DeductedLoyaltyPointsRollback
    | AchievementProgressRollback
)


@dataclass(frozen=True, slots=True, kw_only=True)
class InvalidEffect:
    """An effect of a known type whose props could not be read; kept so nothing is lost."""

    effect_type: str
    error: str
    effect: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Effects:
    """One session's effects, read. Money and points are exact ``Decimal`` sums of what
    Talon.One sent (not rounded); :func:`allocate_discounts` does the rounding."""

    discounts: list[Discount] = field(default_factory=list)
    #: Cart + item + additional-cost discounts. Rollbacks are not subtracted (see ``rollbacks``).
    discount_total: Decimal = Decimal(0)
    cart_discount_total: Decimal = Decimal(0)
    item_discount_total: Decimal = Decimal(0)
    additional_cost_discount_total: Decimal = Decimal(0)
    #: Item discounts (``setDiscountPerItem`` on the price) summed by cart position.
    line_discounts: dict[int, Decimal] = field(default_factory=dict)
    #: Additional-cost discounts summed by the additional cost's name (e.g. "shipping").
    additional_cost_discounts: dict[str, Decimal] = field(default_factory=dict)
    accepted_coupons: list[AcceptedCoupon] = field(default_factory=list)
    rejected_coupons: list[RejectedCoupon] = field(default_factory=list)
    accepted_referral: AcceptedReferral | None = None
    rejected_referrals: list[RejectedReferral] = field(default_factory=list)
    redeemed_referrals: list[RedeemedReferral] = field(default_factory=list)
    loyalty_points_earned: list[LoyaltyPointsEarned] = field(default_factory=list)
    loyalty_points_spent: list[LoyaltyPointsSpent] = field(default_factory=list)
    tier_changes: list[TierChange] = field(default_factory=list)
    loyalty_expiry_changes: list[LoyaltyExpiryChange] = field(default_factory=list)
    free_items: list[FreeItem] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)
    custom_effects: list[CustomEffect] = field(default_factory=list)
    audiences_added: list[AudienceChange] = field(default_factory=list)
    audiences_removed: list[AudienceChange] = field(default_factory=list)
    giveaways: list[Giveaway] = field(default_factory=list)
    coupons_created: list[CreatedCoupon] = field(default_factory=list)
    referrals_created: list[CreatedReferral] = field(default_factory=list)
    coupon_reservations: list[CouponReservation] = field(default_factory=list)
    attribute_updates: list[AttributeUpdate] = field(default_factory=list)
    webhooks: list[WebhookTriggered] = field(default_factory=list)
    achievements: list[AchievementProgress] = field(default_factory=list)
    bundles: list[BundleMetadata] = field(default_factory=list)
    errors: list[EffectError] = field(default_factory=list)
    rollbacks: list[Rollback] = field(default_factory=list)
    strikethrough: list[Strikethrough] = field(default_factory=list)
    #: Effects of a type this version does not know, as the raw wire dicts.
    unknown: list[dict[str, Any]] = field(default_factory=list)
    invalid: list[InvalidEffect] = field(default_factory=list)

    @property
    def cart_and_item_discount_total(self) -> Decimal:
        """The discount on the goods (cart + item discounts): what allocate_discounts spreads."""
        return self.cart_discount_total + self.item_discount_total

    @property
    def rolled_back_discount_total(self) -> Decimal:
        """The sum of ``rollbackDiscount`` values in this set."""
        return sum((r.value for r in self.rollbacks if isinstance(r, DiscountRollback)), Decimal(0))

    def points_earned(self, program_id: int | None = None) -> Decimal:
        """Points this session adds, for one program or all of them."""
        return sum(
            (p.value for p in self.loyalty_points_earned if program_id in (None, p.program_id)),
            Decimal(0),
        )

    def points_spent(self, program_id: int | None = None) -> Decimal:
        """Points this session deducts, for one program or all of them."""
        return sum(
            (p.value for p in self.loyalty_points_spent if program_id in (None, p.program_id)),
            Decimal(0),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class LineAdjustment:
    """One cart line's share of the session's discount, in whole currency quanta.

    ``discount = item_discount + cart_discount`` and ``total = value - discount`` (never negative).
    """

    position: int
    #: The shop's line object, as passed in.
    line: Any
    #: The line's value before promotions (line_total, or price x quantity).
    value: Decimal
    #: The line's own setDiscountPerItem discounts, rounded (never more than ``discount``).
    item_discount: Decimal
    #: The line's share of the cart-level discounts.
    cart_discount: Decimal
    discount: Decimal
    total: Decimal
    #: The item Discount records for this position, for labels ("2 for 1").
    discounts: list[Discount] = field(default_factory=list)


# --------------------------------------------------------------------------- public functions


def read_effects(effects: Any, *, messages: Mapping[str, str] | None = None) -> Effects:
    """Read a session's effects (wire dicts or mirrored ``Effect`` rows) into an :class:`Effects`.

    Never raises for bad data: unknown types land in ``unknown``, unreadable ones in ``invalid``;
    ``messages`` overrides the rejection messages for this call (reason -> text).
    """
    builder = _Builder(messages)
    for item in _effect_items(effects, builder):
        raw = _normalise(item, builder)
        if raw is not None:
            builder.prepared.append(raw)
    builder.learn_coupon_codes()
    for raw in builder.prepared:
        builder.add(raw)
    return builder.build()


def allocate_discounts(
    effects: Effects | Iterable[Any] | None,
    lines: Sequence[Any],
    *,
    quantum: Decimal = Decimal("0.01"),
    rounding: str = ROUND_HALF_UP,
    line_value: Callable[[Any], Any] | None = None,
) -> list[LineAdjustment]:
    """Spread the session's cart and item discounts over the shop's cart lines, one
    :class:`LineAdjustment` per line, summing exactly to the rounded total (capped at the cart).

    A line is a mapping or object with ``line_total``, or ``price`` (or ``unit_price``) and
    ``quantity`` (default 1), or pass ``line_value``; its position is its ``position`` if it has
    an int one, else its index. See docs/effects.md for the rounding rule.
    """
    read = effects if isinstance(effects, Effects) else read_effects(effects)
    if quantum <= 0:
        raise ValueError("quantum must be positive")
    value_of = line_value or _default_line_value
    positions: list[int] = []
    values: list[Decimal] = []
    seen: set[int] = set()
    for index, line in enumerate(lines):
        position = _line_position(line, index)
        if position in seen:
            raise ValueError(f"two cart lines have position {position}")
        seen.add(position)
        value = _money(value_of(line), f"cart line {position}")
        if value < 0:
            raise ValueError(f"cart line {position} has a negative value ({value})")
        positions.append(position)
        values.append(value)
    item_discounts = [read.line_discounts.get(p, Decimal(0)) for p in positions]
    stray = {p: v for p, v in read.line_discounts.items() if p not in seen and v}
    if stray:
        logger.warning(
            "talonone: item discounts for cart positions %s have no matching line; "
            "they are spread like cart discounts",
            sorted(stray),
        )
    # The cart-level pool: setDiscount plus any item discount that cannot land on its own line
    # (unknown position, or more than the line is worth) so the lines still add up to the total.
    pool = read.cart_discount_total + sum(stray.values(), Decimal(0))
    units = _allocate_units(
        values, item_discounts, pool, read.cart_and_item_discount_total, quantum, rounding
    )
    labels: dict[int | None, list[Discount]] = {}
    for d in read.discounts:
        if d.scope == "item":
            labels.setdefault(d.position, []).append(d)
    result = []
    for position, line, value, own, count in zip(
        positions, lines, values, item_discounts, units, strict=True
    ):
        discount = _units_to_money(count, quantum)
        item = min(_round_to(min(own, value), quantum, rounding), discount)
        result.append(
            LineAdjustment(
                position=position,
                line=line,
                value=value,
                item_discount=item,
                cart_discount=discount - item,
                discount=discount,
                total=value - discount,
                discounts=labels.get(position, []),
            )
        )
    return result


def customer_message(
    reason: str,
    kind: RejectionKind | None = None,
    *,
    messages: Mapping[str, str] | None = None,
) -> str:
    """Words a customer understands for a coupon or referral rejection reason.

    ``kind`` defaults to "referral" for Referral*/AdvocateNotFound reasons, else "coupon";
    ``messages`` (reason -> text) wins over the module tables; unknown reasons get the generic text.
    """
    if kind is None:
        kind = "referral" if reason.startswith(_REFERRAL_PREFIXES) else "coupon"
    table = REFERRAL_REJECTION_MESSAGES if kind == "referral" else COUPON_REJECTION_MESSAGES
    text: Any = None
    if messages is not None:
        text = messages.get(reason)
    if text is None:
        text = table.get(reason)
    if text is None:
        text = table.get("*") or _FALLBACK[kind]
    # str() resolves lazy translation objects a shop may have put in the tables.
    return _translate(str(text))


#: Customer-facing text for each ``rejectCoupon.rejectionReason``; "*" is for any other reason.
#: A shop may replace entries at start-up (values may be gettext_lazy strings).
COUPON_REJECTION_MESSAGES: dict[str, str] = {
    "CampaignLimitReached": "This coupon can no longer be used: the promotion has run out.",
    "CouponExpired": "This coupon has expired.",
    "CouponLimitReached": "This coupon has already been used the maximum number of times.",
    "CouponNotFound": "We don't recognise this coupon code. Please check it and try again.",
    "CouponPartOfNotRunningCampaign": "The promotion for this coupon is not running right now.",
    "CouponRecipientDoesNotMatch": (
        "This coupon belongs to a customer account. Please sign in to the account it was sent to."
    ),
    "CouponRejectedByCondition": "Your order doesn't meet the conditions of this coupon yet.",
    # The API's own example spells it without "By"; treat both the same.
    "CouponRejectedCondition": "Your order doesn't meet the conditions of this coupon yet.",
    "CouponStartDateInFuture": "This coupon isn't valid yet.",
    "EffectCouldNotBeApplied": (
        "This coupon is valid, but its reward can't be applied right now because the promotion "
        "has reached its limit."
    ),
    "ProfileLimitReached": "You've already used this coupon the maximum number of times.",
    "CouponPartOfNotTriggeredCampaign": (
        "This coupon can't be combined with a promotion already applied to your order."
    ),
    "CouponReservationRequired": "This coupon isn't available for your account.",
    "ProfileRequired": "Please sign in to use this coupon.",
    "*": "This coupon can't be used for this order.",
}

#: Customer-facing text for each ``rejectReferral.rejectionReason``; "*" is for any other reason.
REFERRAL_REJECTION_MESSAGES: dict[str, str] = {
    "AdvocateNotFound": "We couldn't find the customer who shared this referral code.",
    "CampaignLimitReached": "This referral code can no longer be used: the promotion has run out.",
    "EffectCouldNotBeApplied": (
        "This referral code is valid, but its reward can't be applied right now because the "
        "promotion has reached its limit."
    ),
    "ProfileLimitReached": "You've already used referral codes the maximum number of times.",
    "ReferralCustomerAlreadyReferred": "You have already been referred by another customer.",
    "ReferralExpired": "This referral code has expired.",
    "ReferralLimitReached": "This referral code has already been used the maximum number of times.",
    "ReferralNotFound": "We don't recognise this referral code. Please check it and try again.",
    "ReferralPartOfNotRunningCampaign": (
        "The promotion for this referral code is not running right now."
    ),
    "ReferralRecipientDoesNotMatch": "This referral code was sent to someone else.",
    "ReferralRecipientIdSameAsAdvocate": "You can't use your own referral code.",
    "ReferralRejectedByCondition": (
        "Your order doesn't meet the conditions of this referral code yet."
    ),
    "ReferralRejectedCondition": (
        "Your order doesn't meet the conditions of this referral code yet."
    ),
    "ReferralStartDateInFuture": "This referral code isn't valid yet.",
    "ReferralPartOfNotTriggeredCampaign": (
        "This referral code can't be combined with a promotion already applied to your order."
    ),
    "*": "This referral code can't be used for this order.",
}


# --------------------------------------------------------------------------- reading, inside

_REFERRAL_PREFIXES = ("Referral", "AdvocateNotFound")
# Used only when a shop deleted the "*" entry from a table.
_FALLBACK = {
    "coupon": "This coupon can't be used for this order.",
    "referral": "This referral code can't be used for this order.",
}
# (effect type, what) pairs already logged at INFO/WARNING: a cart page re-reads the same
# effects on every request, and one line per process is enough to notice a new effect type.
_already_logged: set[tuple[str, str]] = set()


CouponCodes = dict[tuple[int | None, int | None], str]


def coupon_codes(accepted: Iterable[tuple[int | None, int | None, Any]]) -> CouponCodes:
    """The coupon codes of a session's ``acceptCoupon`` effects, each given as (``campaignId``,
    ``triggeredByCoupon``, ``props.value``): by (campaign, coupon id), and by (campaign, None)
    where the campaign accepted one code only.

    Another effect's ``triggeredByCoupon`` is the coupon's numeric id; its code travels only in
    the acceptCoupon of the same campaign, which may come after the effect it unlocked, so the
    codes are learnt from the whole list first. The mirror and :func:`read_effects` share this.
    """
    codes: CouponCodes = {}
    per_campaign: dict[int | None, set[str]] = {}
    for campaign, coupon, value in accepted:
        if not value:
            continue
        code = str(value)
        codes[(campaign, coupon)] = code
        per_campaign.setdefault(campaign, set()).add(code)
    for campaign, found in per_campaign.items():
        if len(found) == 1:  # by campaign alone only when that is unambiguous
            codes.setdefault((campaign, None), next(iter(found)))
    return codes


def coupon_code_of(codes: CouponCodes, campaign: int | None, coupon: int | None) -> str | None:
    """The code of coupon id ``coupon`` that triggered an effect of ``campaign``, if known."""
    if coupon is None:
        return None
    return codes.get((campaign, coupon)) or codes.get((campaign, None))


class _Malformed(ValueError):
    """A prop is missing or of the wrong type."""


@dataclass(slots=True)
class _Raw:
    effect_type: str
    props: Mapping[str, Any]
    campaign_id: int | None
    rule_name: str
    triggered_by_coupon: int | None
    coupon_code: str | None
    wire: dict[str, Any]


def _effect_items(effects: Any, builder: _Builder) -> Iterable[Any]:
    """The effects to read: a list or queryset, one effect, or a whole answer with "effects"."""
    if effects is None:
        return ()
    if isinstance(effects, Mapping):
        if "effectType" in effects or "effect_type" in effects:
            return (effects,)
        if isinstance(effects.get("effects"), list):
            return effects["effects"]
    if isinstance(effects, (str, bytes, Mapping)):
        builder.invalid_effect("?", "not a list of effects", {"value": repr(effects)[:200]})
        return ()
    try:
        return iter(effects)
    except TypeError:
        builder.invalid_effect("?", "not a list of effects", {"value": repr(effects)[:200]})
        return ()


def _normalise(item: Any, builder: _Builder) -> _Raw | None:
    """One effect as a ``_Raw``, or None after recording it as invalid (or skipping history)."""
    if isinstance(item, Mapping):
        if "effectType" in item:
            wire = dict(item)
            coupon_code = None
        elif "effect_type" in item:
            # An Effect row as a dict (``.values()``): history must not count twice either.
            if item.get("is_current", True) is False:
                return None
            wire = _wire_from_snake(item)
            coupon_code = item.get("coupon_code") or None
        else:
            builder.invalid_effect("?", "not an effect: no effectType", dict(item))
            return None
    elif hasattr(item, "effect_type"):
        # An Effect row: earlier evaluations kept as history must not count twice.
        if getattr(item, "is_current", True) is False:
            return None
        wire = _wire_from_snake(item)
        coupon_code = getattr(item, "coupon_code", None) or None
    else:
        builder.invalid_effect("?", f"not an effect: {type(item).__name__}", {"value": repr(item)})
        return None
    effect_type = wire.get("effectType")
    if not isinstance(effect_type, str) or not effect_type:
        builder.invalid_effect("?", "effectType is not a string", wire)
        return None
    props = wire.get("props")
    if props is None:
        props = {}
    if not isinstance(props, Mapping):
        builder.invalid_effect(effect_type, "props is not an object", wire)
        return None
    campaign_id = wire.get("campaignId")
    triggered = wire.get("triggeredByCoupon")
    rule_name = wire.get("ruleName")
    return _Raw(
        effect_type=effect_type,
        props=props,
        campaign_id=campaign_id if _is_int(campaign_id) else None,
        rule_name=rule_name if isinstance(rule_name, str) else "",
        triggered_by_coupon=triggered if _is_int(triggered) else None,
        coupon_code=coupon_code if isinstance(coupon_code, str) else None,
        wire=wire,
    )


def _wire_from_snake(source: Any) -> dict[str, Any]:
    """The wire shape of an Effect row (attributes) or a snake_case dict."""

    def get(name: str) -> Any:
        if isinstance(source, Mapping):
            return source.get(name)
        return getattr(source, name, None)

    raw = get("raw")
    wire: dict[str, Any] = dict(raw) if isinstance(raw, Mapping) else {}
    # The columns are what the mirror decided; they win over the stored raw answer.
    wire.update(
        {
            "effectType": get("effect_type"),
            "props": get("props"),
            "campaignId": get("campaign_id"),
            "ruleName": get("rule_name") or wire.get("ruleName") or "",
        }
    )
    for column, key in (
        ("triggered_by_coupon", "triggeredByCoupon"),
        ("ruleset_id", "rulesetId"),
        ("rule_index", "ruleIndex"),
    ):
        if get(column) is not None:
            wire[key] = get(column)
    return wire


class _Props:
    """Typed access to one effect's props; every getter raises _Malformed on bad data."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    def _get(self, key: str, required: bool) -> Any:
        value = self._data.get(key)
        if value is None and required:
            raise _Malformed(f"{key} is missing")
        return value

    def string(self, key: str, required: bool = True) -> str | None:
        value = self._get(key, required)
        if value is not None and not isinstance(value, str):
            raise _Malformed(f"{key} is not a string")
        return value

    def text(self, key: str) -> str:
        # Descriptive strings the shop only displays: absent means empty, not broken.
        return self.string(key, required=False) or ""

    def integer(self, key: str, required: bool = True) -> int | None:
        value = self._get(key, required)
        return None if value is None else _whole(value, key)

    def position(self, key: str, required: bool = False) -> int | None:
        value = self.integer(key, required)
        if value is not None and value < 0:
            raise _Malformed(f"{key} is negative")
        return value

    def decimal(self, key: str, required: bool = True) -> Decimal | None:
        value = self._get(key, required)
        return None if value is None else _number(value, key)

    def money(self, key: str) -> Decimal:
        value = _number(self._get(key, True), key)
        if value < 0:
            raise _Malformed(f"{key} is negative")
        return value

    def boolean(self, key: str, required: bool = False) -> bool | None:
        value = self._get(key, required)
        if value is not None and not isinstance(value, bool):
            raise _Malformed(f"{key} is not a boolean")
        return value

    def timestamp(self, key: str) -> datetime | None:
        value = self._get(key, False)
        return None if value is None else _timestamp(value, key)

    def mapping(self, key: str) -> dict[str, Any]:
        value = self._get(key, True)
        if not isinstance(value, Mapping):
            raise _Malformed(f"{key} is not an object")
        return dict(value)

    def items(self, key: str, required: bool = True) -> list[Any]:
        value = self._get(key, required)
        if value is None:
            return []
        if not isinstance(value, list):
            raise _Malformed(f"{key} is not a list")
        return value

    def raw(self, key: str) -> Any:
        return self._data.get(key)


class _Builder:
    """Collects records while reading, then freezes them into an Effects."""

    def __init__(self, messages: Mapping[str, str] | None) -> None:
        self.messages = messages
        self.coupon_codes: CouponCodes = {}
        self.prepared: list[_Raw] = []
        self.lists: dict[str, list[Any]] = {}
        self.accepted_referral: AcceptedReferral | None = None

    def append(self, name: str, record: Any) -> None:
        self.lists.setdefault(name, []).append(record)

    def invalid_effect(self, effect_type: str, error: str, wire: dict[str, Any]) -> None:
        self.append("invalid", InvalidEffect(effect_type=effect_type, error=error, effect=wire))
        _log_once(
            logging.WARNING,
            effect_type,
            "invalid",
            "talonone: could not read a %s effect (%s); it is kept in Effects.invalid",
            effect_type,
            error,
        )

    def add(self, raw: _Raw) -> None:
        parser = _PARSERS.get(raw.effect_type)
        if parser is None:
            self.append("unknown", raw.wire)
            _log_once(
                logging.INFO,
                raw.effect_type,
                "unknown",
                "talonone: effect type %r is not known to this version; kept in Effects.unknown",
                raw.effect_type,
            )
            return
        common = {
            "effect_type": raw.effect_type,
            "campaign_id": raw.campaign_id,
            "rule_name": raw.rule_name,
        }
        try:
            parser(self, raw, _Props(raw.props), common)
        except Exception as exc:  # bad data must never break the cart page; keep and log it
            self.invalid_effect(raw.effect_type, str(exc) or type(exc).__name__, raw.wire)

    def learn_coupon_codes(self) -> None:
        self.coupon_codes = coupon_codes(
            (raw.campaign_id, raw.triggered_by_coupon, raw.props.get("value"))
            for raw in self.prepared
            if raw.effect_type == "acceptCoupon"
        )

    def coupon_code_for(self, raw: _Raw) -> str | None:
        if raw.coupon_code:
            return raw.coupon_code
        return coupon_code_of(self.coupon_codes, raw.campaign_id, raw.triggered_by_coupon)

    def build(self) -> Effects:
        lists = self.lists
        discounts: list[Discount] = lists.get("discounts", [])
        totals = dict.fromkeys(
            ("cart", "item", "additional_cost", "additional_cost_item"), Decimal(0)
        )
        line_discounts: dict[int, Decimal] = {}
        cost_discounts: dict[str, Decimal] = {}
        for d in discounts:
            totals[d.scope] += d.value
            if d.scope == "item" and d.position is not None:
                line_discounts[d.position] = line_discounts.get(d.position, Decimal(0)) + d.value
            if d.scope.startswith("additional_cost") and d.additional_cost:
                cost_discounts[d.additional_cost] = (
                    cost_discounts.get(d.additional_cost, Decimal(0)) + d.value
                )
        additional = totals["additional_cost"] + totals["additional_cost_item"]
        names = {f for f in Effects.__dataclass_fields__ if f in lists}
        return Effects(
            discount_total=totals["cart"] + totals["item"] + additional,
            cart_discount_total=totals["cart"],
            item_discount_total=totals["item"],
            additional_cost_discount_total=additional,
            line_discounts=line_discounts,
            additional_cost_discounts=cost_discounts,
            accepted_referral=self.accepted_referral,
            **{name: lists[name] for name in names},
        )


# --------------------------------------------------------------------------- one parser a type
# Each takes (builder, raw effect, props, common record fields) and appends records.

_Parser = Callable[[_Builder, _Raw, _Props, dict[str, Any]], None]
_PARSERS: dict[str, _Parser] = {}


def _parses(*effect_types: str) -> Callable[[_Parser], _Parser]:
    def register(func: _Parser) -> _Parser:
        for effect_type in effect_types:
            _PARSERS[effect_type] = func
        return func

    return register


#: Discount effect type → (its scope, its scope when Talon.One's ``scope`` prop says
#: "additionalCosts" (None: a cost discount, which names its additional cost instead), whether
#: it targets one cart item by position).
_DISCOUNTS: dict[str, tuple[DiscountScope, DiscountScope | None, bool]] = {
    # With cascading discounts a session-wide discount may target the additional costs only.
    "setDiscount": ("cart", "additional_cost", False),
    # scope "additionalCosts" discounts the item's additional costs, not its price.
    "setDiscountPerItem": ("item", "additional_cost_item", True),
    "setDiscountPerAdditionalCost": ("additional_cost", None, False),
    "setDiscountPerAdditionalCostPerItem": ("additional_cost_item", None, True),
}


@_parses(*_DISCOUNTS)
def _set_discount(b: _Builder, raw: _Raw, p: _Props, common: dict[str, Any]) -> None:
    scope, costs_scope, per_item = _DISCOUNTS[raw.effect_type]
    talon_scope = None
    if costs_scope is not None:
        talon_scope = p.string("scope", required=False)
        if talon_scope == "additionalCosts":
            scope = costs_scope
    position = p.position("position", True) if per_item else None
    discount = Discount(
        **common,
        name=p.text("name"),
        value=p.money("value"),
        scope=scope,
        position=position,
        sub_position=p.position("subPosition"),
        additional_cost=p.string("additionalCost", required=costs_scope is None),
        additional_cost_id=p.integer("additionalCostId", required=False),
        desired_value=p.decimal("desiredValue", required=False),
        talon_scope=talon_scope,
        coupon_code=b.coupon_code_for(raw),
        triggered_by_coupon=raw.triggered_by_coupon,
    )
    b.append("discounts", discount)


@_parses("acceptCoupon")
def _accept_coupon(b: _Builder, raw: _Raw, p: _Props, common: dict[str, Any]) -> None:
    b.append("accepted_coupons", AcceptedCoupon(**common, code=p.string("value")))


@_parses("rejectCoupon", "rejectReferral")
def _reject(b: _Builder, raw: _Raw, p: _Props, common: dict[str, Any]) -> None:
    kind: RejectionKind = "coupon" if raw.effect_type == "rejectCoupon" else "referral"
    reason = p.string("rejectionReason") or ""
    fields = {
        **common,
        "code": p.string("value"),
        "reason": reason,
        "message": customer_message(reason, kind, messages=b.messages),
        "details": p.string("details", required=False),
        "campaign_exclusion_reason": p.string("campaignExclusionReason", required=False),
        "condition_index": p.integer("conditionIndex", required=False),
        "effect_index": p.integer("effectIndex", required=False),
    }
    if kind == "coupon":
        b.append("rejected_coupons", RejectedCoupon(**fields))
    else:
        b.append("rejected_referrals", RejectedReferral(**fields))


@_parses("acceptReferral")
def _accept_referral(b: _Builder, raw: _Raw, p: _Props, common: dict[str, Any]) -> None:
    referral = AcceptedReferral(**common, code=p.string("value"))
    # A session has one referral code; several campaigns may each accept it.
    if b.accepted_referral is None:
        b.accepted_referral = referral


@_parses("redeemReferral")
def _redeem_referral(b: _Builder, raw: _Raw, p: _Props, common: dict[str, Any]) -> None:
    b.append(
        "redeemed_referrals",
        RedeemedReferral(**common, referral_id=p.integer("id"), code=p.string("value")),
    )


@_parses("addLoyaltyPoints")
def _add_points(b: _Builder, raw: _Raw, p: _Props, common: dict[str, Any]) -> None:
    start = p.timestamp("startDate")
    awaits = bool(p.boolean("awaitsActivation"))
    b.append(
        "loyalty_points_earned",
        LoyaltyPointsEarned(
            **common,
            program_id=p.integer("programId"),
            subledger_id=p.text("subLedgerId"),
            value=p.decimal("value"),
            name=p.text("name"),
            desired_value=p.decimal("desiredValue", required=False),
            recipient_integration_id=p.text("recipientIntegrationId"),
            transaction_uuid=p.text("transactionUUID"),
            start_date=start,
            expiry_date=p.timestamp("expiryDate"),
            pending=awaits or (start is not None and start > datetime.now(timezone.utc)),
            awaits_activation=awaits,
            validity_duration=p.string("validityDuration", required=False),
            position=p.position("cartItemPosition"),
            sub_position=p.position("cartItemSubPosition"),
            card_identifier=p.string("cardIdentifier", required=False),
            bundle_index=p.integer("bundleIndex", required=False),
            bundle_name=p.string("bundleName", required=False),
        ),
    )


@_parses("deductLoyaltyPoints")
def _deduct_points(b: _Builder, raw: _Raw, p: _Props, common: dict[str, Any]) -> None:
    b.append(
        "loyalty_points_spent",
        LoyaltyPointsSpent(
            **common,
            program_id=p.integer("programId"),
            subledger_id=p.text("subLedgerId"),
            value=p.decimal("value"),
            name=p.text("name"),
            rule_title=p.text("ruleTitle"),
            transaction_uuid=p.text("transactionUUID"),
            card_identifier=p.string("cardIdentifier", required=False),
        ),
    )


@_parses("changeLoyaltyTierLevel")
def _tier(b: _Builder, raw: _Raw, p: _Props, common: dict[str, Any]) -> None:
    b.append(
        "tier_changes",
        TierChange(
            **common,
            program_id=p.integer("programId"),
            subledger_id=p.text("subLedgerId"),
            new_tier=p.string("newTierName"),
            previous_tier=p.string("previousTierName", required=False),
            expiry_date=p.timestamp("expiryDate"),
            rule_title=p.text("ruleTitle"),
        ),
    )


@_parses("extendLoyaltyPointsExpiryDate", "setLoyaltyPointsExpiryDate")
def _expiry(b: _Builder, raw: _Raw, p: _Props, common: dict[str, Any]) -> None:
    extend = raw.effect_type == "extendLoyaltyPointsExpiryDate"
    new_expiry = None if extend else p.timestamp("newExpiryDate")
    if not extend and new_expiry is None:
        raise _Malformed("newExpiryDate is missing")
    b.append(
        "loyalty_expiry_changes",
        LoyaltyExpiryChange(
            **common,
            program_id=p.integer("programId"),
            subledger_id=p.text("subLedgerId"),
            extension_duration=p.string("extensionDuration", required=extend),
            new_expiry_date=new_expiry,
            affected_transactions=[
                dict(t) for t in p.items("affectedTransactions", False) if isinstance(t, Mapping)
            ],
        ),
    )


@_parses("addFreeItem")
def _free_item(b: _Builder, raw: _Raw, p: _Props, common: dict[str, Any]) -> None:
    b.append(
        "free_items",
        FreeItem(
            **common,
            sku=p.string("sku"),
            name=p.text("name"),
            desired_quantity=p.integer("desiredQuantity", required=False),
        ),
    )


@_parses("showNotification")
def _notification(b: _Builder, raw: _Raw, p: _Props, common: dict[str, Any]) -> None:
    b.append(
        "notifications",
        Notification(
            **common, title=p.text("title"), body=p.text("body"), type=p.text("notificationType")
        ),
    )


# openapi/ (newer) and the sandbox call it customEffect; the markdown reference says custom.
@_parses("customEffect", "custom")
def _custom(b: _Builder, raw: _Raw, p: _Props, common: dict[str, Any]) -> None:
    b.append(
        "custom_effects",
        CustomEffect(
            **common,
            name=p.string("name"),
            payload=p.mapping("payload"),
            effect_id=p.integer("effectId", required=False),
            position=p.position("cartItemPosition"),
            sub_position=p.position("cartItemSubPosition"),
            bundle_index=p.integer("bundleIndex", required=False),
            bundle_name=p.string("bundleName", required=False),
        ),
    )


@_parses("addToAudience", "removeFromAudience")
def _audience(b: _Builder, raw: _Raw, p: _Props, common: dict[str, Any]) -> None:
    change = AudienceChange(
        **common,
        audience_id=p.integer("audienceId", required=False),
        audience_name=p.string("audienceName", required=False),
        profile_integration_id=p.string("profileIntegrationId", required=False),
        profile_id=p.integer("profileId", required=False),
    )
    added = raw.effect_type == "addToAudience"
    b.append("audiences_added" if added else "audiences_removed", change)


@_parses("willAwardGiveaway", "awardGiveaway")
def _giveaway(b: _Builder, raw: _Raw, p: _Props, common: dict[str, Any]) -> None:
    awarded = raw.effect_type == "awardGiveaway"
    b.append(
        "giveaways",
        Giveaway(
            **common,
            pool_id=p.integer("poolId"),
            pool_name=p.text("poolName"),
            recipient_integration_id=p.text("recipientIntegrationId"),
            awarded=awarded,
            code=p.string("code", required=awarded),
            giveaway_id=p.integer("giveawayId", required=False),
        ),
    )


@_parses("couponCreated")
def _coupon_created(b: _Builder, raw: _Raw, p: _Props, common: dict[str, Any]) -> None:
    b.append(
        "coupons_created",
        CreatedCoupon(**common, code=p.string("value"), profile_id=p.text("profileId")),
    )


@_parses("referralCreated")
def _referral_created(b: _Builder, raw: _Raw, p: _Props, common: dict[str, Any]) -> None:
    b.append("referrals_created", CreatedReferral(**common, code=p.string("value")))


@_parses("reserveCoupon")
def _reserve_coupon(b: _Builder, raw: _Raw, p: _Props, common: dict[str, Any]) -> None:
    b.append(
        "coupon_reservations",
        CouponReservation(
            **common,
            code=p.string("couponValue"),
            profile_integration_id=p.text("profileIntegrationId"),
            is_new=bool(p.boolean("isNewReservation")),
        ),
    )


@_parses("updateAttribute")
def _update_attribute(b: _Builder, raw: _Raw, p: _Props, common: dict[str, Any]) -> None:
    b.append(
        "attribute_updates", AttributeUpdate(**common, path=p.string("path"), value=p.raw("value"))
    )


@_parses("triggerWebhook")
def _webhook(b: _Builder, raw: _Raw, p: _Props, common: dict[str, Any]) -> None:
    b.append(
        "webhooks",
        WebhookTriggered(**common, webhook_id=p.integer("webhookId"), name=p.text("webhookName")),
    )


@_parses("increaseAchievementProgress")
def _achievement(b: _Builder, raw: _Raw, p: _Props, common: dict[str, Any]) -> None:
    b.append(
        "achievements",
        AchievementProgress(
            **common,
            achievement_id=p.integer("achievementId"),
            name=p.text("achievementName"),
            delta=p.decimal("delta"),
            value=p.decimal("value"),
            target=p.decimal("target"),
            just_completed=bool(p.boolean("isJustCompleted")),
            progress_tracker_id=p.integer("progressTrackerId", required=False),
        ),
    )


@_parses("showBundleMetadata")
def _bundle(b: _Builder, raw: _Raw, p: _Props, common: dict[str, Any]) -> None:
    attributes = p.items("bundleAttributes", False)
    if not all(isinstance(a, str) for a in attributes):
        raise _Malformed("bundleAttributes holds a non-string")
    b.append(
        "bundles",
        BundleMetadata(
            **common,
            description=p.text("description"),
            attributes=list(attributes),
            positions=[_whole(i, "itemsIndices") for i in p.items("itemsIndices")],
        ),
    )


@_parses("error")
def _error(b: _Builder, raw: _Raw, p: _Props, common: dict[str, Any]) -> None:
    b.append("errors", EffectError(**common, message=p.text("message")))
    logger.debug("talonone: error effect from campaign %s: %s", raw.campaign_id, p.raw("message"))


@_parses("strikethroughSetDiscountPerItem", "strikethroughSetDiscountPerItemMember")
def _strikethrough(b: _Builder, raw: _Raw, p: _Props, common: dict[str, Any]) -> None:
    b.append(
        "strikethrough",
        Strikethrough(
            **common,
            name=p.text("name"),
            value=p.raw("value"),
            member=raw.effect_type.endswith("Member"),
        ),
    )


@_parses("rollbackDiscount")
def _rollback_discount(b: _Builder, raw: _Raw, p: _Props, common: dict[str, Any]) -> None:
    b.append(
        "rollbacks",
        DiscountRollback(
            **common,
            name=p.text("name"),
            value=p.money("value"),
            position=p.position("cartItemPosition"),
            sub_position=p.position("cartItemSubPosition"),
            additional_cost=p.string("additionalCost", required=False),
            additional_cost_id=p.integer("additionalCostId", required=False),
            talon_scope=p.string("scope", required=False),
        ),
    )


@_parses("rollbackCoupon")
def _rollback_coupon(b: _Builder, raw: _Raw, p: _Props, common: dict[str, Any]) -> None:
    b.append("rollbacks", CouponRollback(**common, code=p.string("value")))


@_parses("rollbackReferral")
def _rollback_referral(b: _Builder, raw: _Raw, p: _Props, common: dict[str, Any]) -> None:
    b.append("rollbacks", ReferralRollback(**common, code=p.string("value")))


@_parses("rollbackAddedLoyaltyPoints")
def _rollback_added(b: _Builder, raw: _Raw, p: _Props, common: dict[str, Any]) -> None:
    b.append(
        "rollbacks",
        AddedLoyaltyPointsRollback(
            **common,
            program_id=p.integer("programId"),
            subledger_id=p.text("subLedgerId"),
            value=p.decimal("value"),
            recipient_integration_id=p.text("recipientIntegrationId"),
            transaction_uuid=p.text("transactionUUID"),
            position=p.position("cartItemPosition"),
            sub_position=p.position("cartItemSubPosition"),
            card_identifier=p.string("cardIdentifier", required=False),
        ),
    )


@_parses("rollbackDeductedLoyaltyPoints")
def _rollback_deducted(b: _Builder, raw: _Raw, p: _Props, common: dict[str, Any]) -> None:
    b.append(
        "rollbacks",
        DeductedLoyaltyPointsRollback(
            **common,
            program_id=p.integer("programId"),
            subledger_id=p.text("subLedgerId"),
            value=p.decimal("value"),
            recipient_integration_id=p.text("recipientIntegrationId"),
            transaction_uuid=p.text("transactionUUID"),
            start_date=p.timestamp("startDate"),
            expiry_date=p.timestamp("expiryDate"),
            card_identifier=p.string("cardIdentifier", required=False),
        ),
    )


@_parses("rollbackIncreasedAchievementProgress")
def _rollback_achievement(b: _Builder, raw: _Raw, p: _Props, common: dict[str, Any]) -> None:
    b.append(
        "rollbacks",
        AchievementProgressRollback(
            **common,
            achievement_id=p.integer("achievementId"),
            name=p.text("achievementName"),
            decrease_by=p.decimal("decreaseProgressBy"),
            current_progress=p.decimal("currentProgress"),
            target=p.decimal("target"),
            progress_tracker_id=p.integer("progressTrackerId", required=False),
        ),
    )


#: Every effect type read into a typed record; anything else goes to ``Effects.unknown``.
KNOWN_EFFECT_TYPES: frozenset[str] = frozenset(_PARSERS)


# --------------------------------------------------------------------------- small helpers


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any, key: str) -> Decimal:
    """A JSON number as an exact Decimal of its text (0.1 stays 0.1, not a binary fraction)."""
    if isinstance(value, bool):
        raise _Malformed(f"{key} is a boolean, not a number")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, (int, float)):
        # str() of a float is its shortest round-tripping text: the digits the JSON carried.
        result = Decimal(str(value))
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise _Malformed(f"{key} is not a number: {value!r}") from None
    else:
        raise _Malformed(f"{key} is not a number")
    if not result.is_finite():
        raise _Malformed(f"{key} is not a finite number")
    return result


def _whole(value: Any, key: str) -> int:
    """An integer; the spec types positions as "number", so 2.0 is accepted as 2."""
    if _is_int(value):
        return value
    number = _number(value, key)
    if number != number.to_integral_value():
        raise _Malformed(f"{key} is not a whole number")
    return int(number)


_FRACTION = re.compile(r"\.(\d+)")


def _timestamp(value: Any, key: str) -> datetime:
    """An RFC 3339 timestamp; Python 3.10's fromisoformat needs help with "Z" and nanoseconds."""
    if isinstance(value, datetime):
        # Naive means UTC, as for a string without an offset: comparable with aware datetimes.
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if not isinstance(value, str):
        raise _Malformed(f"{key} is not a timestamp")
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    # 3.10 wants exactly 3 or 6 fraction digits; Talon.One may send 1 to 9.
    text = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), text, count=1)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise _Malformed(f"{key} is not an RFC 3339 timestamp: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _log_once(level: int, effect_type: str, what: str, message: str, *args: Any) -> None:
    key = (effect_type, what)
    if key in _already_logged:
        logger.debug(message, *args)
        return
    _already_logged.add(key)
    logger.log(level, message, *args)


def _translate(text: str) -> str:
    """Run text through Django's gettext when the shop runs Django, so its catalogs apply."""
    # Look, don't import: a script reading effects without Django should not pull it in.
    conf = sys.modules.get("django.conf")
    if conf is None or not conf.settings.configured:
        return text
    try:
        from django.utils.translation import gettext

        return gettext(text)
    except Exception:  # apps not ready yet, or no translation machinery: the English text
        return text


# --------------------------------------------------------------------------- allocation, inside


def _default_line_value(line: Any) -> Any:
    get = line.get if isinstance(line, Mapping) else lambda name: getattr(line, name, None)
    total = get("line_total")
    if total is not None:
        return total
    price = get("unit_price")
    if price is None:
        price = get("price")
    if price is None:
        raise ValueError(f"cart line {line!r} has no line_total, unit_price or price")
    quantity = get("quantity")
    return _money(price, "price") * (1 if quantity is None else _money(quantity, "quantity"))


def _line_position(line: Any, index: int) -> int:
    position = (
        line.get("position") if isinstance(line, Mapping) else getattr(line, "position", None)
    )
    return position if _is_int(position) else index


def _money(value: Any, what: str) -> Decimal:
    try:
        return _number(value, what)
    except _Malformed as exc:
        raise ValueError(str(exc)) from None


def _round_to(amount: Decimal, quantum: Decimal, rounding: str) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 100
        # quantize() at the end gives every amount the quantum's exponent: 1.50, not 1.5 or 15E-1.
        units = (amount / quantum).to_integral_value(rounding=rounding)
        return (units * quantum).quantize(quantum)


def _units_to_money(count: int, quantum: Decimal) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 100
        return (count * quantum).quantize(quantum)


def _allocate_units(
    values: list[Decimal],
    item_discounts: list[Decimal],
    pool: Decimal,
    total: Decimal,
    quantum: Decimal,
    rounding: str,
) -> list[int]:
    """Each line's discount as a count of quanta, by the largest-remainder method.

    Exact shares first (Fractions, no rounding): a line's own item discount up to its value,
    then the pool in proportion to what each line has left. The target is the session total
    rounded to the quantum and capped at what the lines can take; each line gets the floor of its
    share, and the quanta still missing go one at a time to the largest remainders (ties: the
    earlier line first), skipping lines already at their value.
    """
    q = Fraction(quantum)
    vals = [Fraction(v) for v in values]
    own = [min(Fraction(i), v) for i, v in zip(item_discounts, vals, strict=True)]
    # An item discount larger than its line is worth spills into the pool (see docs).
    spill = sum((Fraction(i) - o for i, o in zip(item_discounts, own, strict=True)), Fraction(0))
    left = [v - o for v, o in zip(vals, own, strict=True)]
    left_total = sum(left, Fraction(0))
    spread = min(Fraction(pool) + spill, left_total)
    exact = [
        o + (spread * r / left_total if left_total else Fraction(0))
        for o, r in zip(own, left, strict=True)
    ]
    caps = [math.floor(v / q) for v in vals]
    with localcontext() as ctx:
        ctx.prec = 100
        wanted = int((total / quantum).to_integral_value(rounding=rounding))
    target = max(0, min(wanted, sum(caps)))
    units = [math.floor(x / q) for x in exact]
    # Never negative: floor(sum of shares) <= the rounded total, and floors sit under the caps.
    missing = target - sum(units)
    order = sorted(range(len(units)), key=lambda i: (-(exact[i] / q - units[i]), i))
    while missing > 0:
        progressed = False
        for i in order:
            if missing == 0:
                break
            if units[i] < caps[i]:
                units[i] += 1
                missing -= 1
                progressed = True
        if not progressed:  # pragma: no cover - target <= sum(caps) rules this out
            break
    return units
