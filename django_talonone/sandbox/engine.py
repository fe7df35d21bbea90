"""The sandbox's rule engine: evaluate the campaigns for one session, event or profile update.

:func:`evaluate` reads the state (coupons, referral codes, budgets, ledgers) but never changes it;
it answers an :class:`Outcome`: the effects in the order the API would list them, plus what the
caller must persist if the evaluation is not a dry run (points to book, coupons accepted, audience
changes, giveaways and coupons to hand out). Campaigns run in the order of the campaigns file;
each discount takes what earlier discounts left of the cart, so no discount exceeds the price.
"""

from __future__ import annotations

import datetime
import zlib
from dataclasses import dataclass, field
from typing import Any

from . import ledger
from .campaigns import Campaign, EffectSpec, Rule
from .values import money, percent_of, points, prorate


@dataclass(slots=True)
class Line:
    """A cart item as the engine sees it: prices in cents."""

    position: int
    sku: str
    category: str | None
    quantity: int
    unit: int

    @property
    def total(self) -> int:
        """Price times quantity, in cents."""
        return self.unit * self.quantity


class Context:
    """What one evaluation looks at: the cart, the profile, the codes, the moment."""

    def __init__(
        self,
        state: Any,
        now: datetime.datetime,
        now_s: str,
        kind: str,
        *,
        profile_id: str = "",
        profile: dict[str, Any] | None = None,
        lines: list[Line] | None = None,
        add_costs: dict[str, int] | None = None,
        coupon_codes: list[str] | None = None,
        referral_code: str = "",
        loyalty_cards: list[str] | None = None,
        session_attrs: dict[str, Any] | None = None,
        event_type: str = "",
        event_attrs: dict[str, Any] | None = None,
        first_session: bool = True,
        committed: dict[str, Any] | None = None,
        evaluable: set[int] | None = None,
        closing: bool = False,
    ) -> None:
        self.state = state
        self.now = now
        self.now_s = now_s
        self.kind = kind
        self.profile_id = profile_id
        self.profile = profile
        self.lines = lines or []
        self.add_costs = add_costs or {}
        self.coupon_codes = coupon_codes or []
        self.referral_code = referral_code
        self.loyalty_cards = loyalty_cards or []
        self.session_attrs = session_attrs or {}
        self.event_type = event_type
        self.event_attrs = event_attrs or {}
        self.first_session = first_session
        self.committed = committed
        self.evaluable = evaluable
        self.closing = closing
        self.item_total = sum(line.unit * line.quantity for line in self.lines)
        self.cost_total = sum(self.add_costs.values())
        self.quantity = sum(line.quantity for line in self.lines)
        self.skus = {line.sku for line in self.lines}
        self.categories = {line.category for line in self.lines if line.category}
        if profile is not None:
            self.audiences = set(profile["audiences"])
            self.profile_attrs = profile["attributes"]
            self.closed_sessions = profile["closedSessions"]
            self.total_sales = profile["totalSales"]
        else:
            self.audiences = set()
            self.profile_attrs = {}
            self.closed_sessions = 0
            self.total_sales = 0
        self._points: dict[tuple[int, str], int] = {}

    def card_for(self, program_id: int) -> dict[str, Any] | None:
        """The active loyalty card of the session in a card-based program, if any."""
        if not self.loyalty_cards:
            return None
        entry = self.state.data["loyalty"].get(str(program_id))
        card = entry["cards"].get(self.loyalty_cards[0]) if entry else None
        if card is None or card["status"] != "active":
            return None
        return card

    def active_points(self, program_id: int, subledger: str = "") -> int:
        """Spendable points (hundredths) of the profile, or of the session's card, in a program."""
        key = (program_id, subledger)
        if key in self._points:
            return self._points[key]
        program = self.state.config.programs.get(program_id)
        book = None
        if program is not None and program.card_based:
            card = self.card_for(program_id)
            book = card["ledger"] if card else None
        elif self.profile_id:
            entry = self.state.data["loyalty"].get(str(program_id))
            book = entry["profiles"].get(self.profile_id) if entry else None
        value = ledger.balance(book, self.now_s, subledger).active if book else 0
        self._points[key] = value
        return value


@dataclass(slots=True)
class Grant:
    """Points an ``addLoyaltyPoints`` or ``deductLoyaltyPoints`` effect books when committed."""

    key: str
    program_id: int
    subledger: str
    amount: int
    name: str
    card: str | None
    profile: str
    props: dict[str, Any]
    campaign_id: int
    ruleset_id: int
    rule_name: str
    alloc: dict[int, int] | None = None


@dataclass(slots=True)
class Outcome:
    """What an evaluation produced."""

    effects: list[dict[str, Any]] = field(default_factory=list)
    #: per effect: how its value splits over cart positions (discounts and points), else None
    allocs: list[dict[int, int] | None] = field(default_factory=list)
    triggered: list[int] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    coupons: list[dict[str, Any]] = field(default_factory=list)
    accepted_coupons: list[dict[str, Any]] = field(default_factory=list)
    referral: dict[str, Any] | None = None
    referral_accepted: bool = False
    grants: list[Grant] = field(default_factory=list)
    deductions: list[Grant] = field(default_factory=list)
    audience_changes: list[tuple[str, int]] = field(default_factory=list)
    giveaways: list[dict[str, Any]] = field(default_factory=list)
    new_coupons: list[tuple[dict[str, Any], dict[str, Any], int]] = field(default_factory=list)


def evaluate(ctx: Context) -> Outcome:
    """Run every campaign's rules for ``ctx`` and answer the effects and what they imply."""
    state = ctx.state
    cfg = state.config
    data = state.data
    out = Outcome()
    cart = _Cart(ctx)
    by_campaign: dict[int, list[dict[str, Any]]] = {}
    seen: set[str] = set()
    for code in ctx.coupon_codes:
        if code in seen:
            continue
        seen.add(code)
        coupon = data["coupons"].get(code)
        if coupon is None:
            _reject_coupon(out, None, code, "CouponNotFound", None)
            continue
        out.coupons.append(coupon)
        by_campaign.setdefault(coupon["campaignId"], []).append(coupon)
    referral = None
    if ctx.referral_code:
        referral = data["referrals"].get(ctx.referral_code)
        if referral is None:
            _reject_referral(out, None, ctx.referral_code, "ReferralNotFound")
        else:
            out.referral = referral
    for campaign in cfg.campaigns:
        coupons = by_campaign.pop(campaign.id, [])
        ref = referral if referral is not None and referral["campaignId"] == campaign.id else None
        if ctx.evaluable is not None:
            if campaign.id not in ctx.evaluable:
                for coupon in coupons:
                    _reject_coupon(
                        out, campaign, coupon["value"], "CouponPartOfNotTriggeredCampaign", coupon
                    )
                if ref is not None:
                    _reject_referral(
                        out, campaign, ref["code"], "ReferralPartOfNotTriggeredCampaign"
                    )
                continue
        elif not campaign.running(ctx.now):
            for coupon in coupons:
                _reject_coupon(
                    out, campaign, coupon["value"], "CouponPartOfNotRunningCampaign", coupon
                )
            if ref is not None:
                _reject_referral(out, campaign, ref["code"], "ReferralPartOfNotRunningCampaign")
            continue
        _run_campaign(ctx, out, cart, campaign, coupons, ref)
    for coupons in by_campaign.values():  # codes of campaigns the file no longer has
        for coupon in coupons:
            _reject_coupon(out, None, coupon["value"], "CouponPartOfNotRunningCampaign", coupon)
    if referral is not None and referral["campaignId"] not in cfg.campaigns_by_id:
        _reject_referral(out, None, referral["code"], "ReferralPartOfNotRunningCampaign")
    return out


def additional_cost_id(name: str) -> int:
    """A stable numeric id for an additional cost name (the API numbers them; we hash)."""
    return zlib.crc32(name.encode("utf-8")) & 0x7FFFFFFF


# -- one campaign ---------------------------------------------------------------------------


def _run_campaign(
    ctx: Context,
    out: Outcome,
    cart: _Cart,
    campaign: Campaign,
    coupons: list[dict[str, Any]],
    referral: dict[str, Any] | None,
) -> None:
    valid: list[dict[str, Any]] = []
    for coupon in coupons:
        problem = _coupon_problem(ctx, campaign, coupon)
        if problem:
            _reject_coupon(out, campaign, coupon["value"], problem, coupon)
        else:
            valid.append(coupon)
    valid_referral = None
    if referral is not None:
        problem = _referral_problem(ctx, campaign, referral)
        if problem:
            _reject_referral(out, campaign, referral["code"], problem)
        else:
            valid_referral = referral
    coupon = valid[0] if valid else None
    coupon_accepted = False
    referral_accepted = False
    coupon_failure: tuple[str, int | None, int | None] | None = None
    referral_failure: tuple[str, int | None, int | None] | None = None
    for rule in campaign.rules:
        if rule.on != ctx.kind:
            continue
        if rule.needs_coupon and coupon is None:
            if not coupons:
                _fail(out, campaign, rule, _condition_index(rule, "coupon"), None, "no coupon code")
            continue
        if rule.needs_referral and valid_referral is None:
            continue
        failed = _first_failed_condition(ctx, rule, coupon, valid_referral)
        if failed is not None:
            _fail(
                out,
                campaign,
                rule,
                failed,
                coupon if rule.needs_coupon else None,
                "condition failed",
            )
            if rule.needs_coupon and coupon_failure is None:
                coupon_failure = ("CouponRejectedByCondition", failed, None)
            if rule.needs_referral and referral_failure is None:
                referral_failure = ("ReferralRejectedByCondition", failed, None)
            continue
        base: dict[str, Any] = {
            "campaignId": campaign.id,
            "rulesetId": campaign.ruleset_id,
            "ruleIndex": rule.index,
            "ruleName": rule.title,
        }
        if rule.needs_coupon and coupon is not None:
            base["triggeredByCoupon"] = coupon["id"]
        blocked = _cannot_apply(ctx, out, rule)
        if blocked is not None:
            _fail(
                out,
                campaign,
                rule,
                None,
                coupon if rule.needs_coupon else None,
                blocked[1],
                blocked[0],
            )
            if rule.needs_coupon and coupon_failure is None:
                coupon_failure = ("EffectCouldNotBeApplied", None, blocked[0])
            if rule.needs_referral and referral_failure is None:
                referral_failure = ("EffectCouldNotBeApplied", None, blocked[0])
            continue
        produced: list[tuple[dict[str, Any], dict[int, int] | None]] = []
        for index, spec in enumerate(rule.effects):
            _apply(ctx, out, cart, campaign, rule, index, spec, base, produced)
        if not produced and (rule.needs_coupon or rule.needs_referral):
            if rule.needs_coupon and coupon_failure is None:
                coupon_failure = ("EffectCouldNotBeApplied", None, 0)
            if rule.needs_referral and referral_failure is None:
                referral_failure = ("EffectCouldNotBeApplied", None, 0)
            continue
        if rule.needs_coupon and coupon is not None and not coupon_accepted:
            coupon_accepted = True
            out.accepted_coupons.append(coupon)
            _emit(out, base, "acceptCoupon", {"value": coupon["value"]})
        if rule.needs_referral and valid_referral is not None and not referral_accepted:
            referral_accepted = True
            out.referral_accepted = True
            _emit(out, base, "acceptReferral", {"value": valid_referral["code"]})
        for effect, alloc in produced:
            out.effects.append(effect)
            out.allocs.append(alloc)
        if produced and campaign.id not in out.triggered:
            out.triggered.append(campaign.id)
    for extra in valid[1:]:
        _reject_coupon(
            out,
            campaign,
            extra["value"],
            "CouponRejectedByCondition",
            extra,
            details="only one coupon per campaign can be redeemed in a session",
        )
    if coupon is not None and not coupon_accepted:
        reason, cond, eff = coupon_failure or ("CouponRejectedByCondition", None, None)
        _reject_coupon(out, campaign, coupon["value"], reason, coupon, condition=cond, effect=eff)
    if valid_referral is not None and not referral_accepted:
        reason, cond, eff = referral_failure or ("ReferralRejectedByCondition", None, None)
        _reject_referral(out, campaign, valid_referral["code"], reason, condition=cond, effect=eff)


def _first_failed_condition(
    ctx: Context, rule: Rule, coupon: dict[str, Any] | None, referral: dict[str, Any] | None
) -> int | None:
    for index, cond in enumerate(rule.conditions):
        if cond.kind == "coupon":
            ok = coupon is not None
        elif cond.kind == "referral":
            ok = referral is not None
        else:
            ok = cond.test(ctx)
        if not ok:
            return index
    return None


def _cannot_apply(ctx: Context, out: Outcome, rule: Rule) -> tuple[int, str] | None:
    """Effects that need what is missing make the whole rule fail (nothing half-applied)."""
    # Points already taken by earlier rules, per (program, subledger): the balances are per
    # subledger, so a deduction from one never makes another subledger short.
    deducted: dict[tuple[int, str], int] = {}
    for grant in out.deductions:
        taken = (grant.program_id, grant.subledger)
        deducted[taken] = deducted.get(taken, 0) + grant.amount
    for index, spec in enumerate(rule.effects):
        p = spec.params
        if spec.type in ("addLoyaltyPoints", "deductLoyaltyPoints"):
            program = ctx.state.config.programs[p["programId"]]
            if program.card_based:
                if ctx.card_for(program.id) is None:
                    return index, "an active loyalty card of the program is required"
            elif not ctx.profile_id:
                return index, "a customer profile is required"
            if spec.type == "deductLoyaltyPoints":
                taken = (program.id, p["subledgerId"])
                have = ctx.active_points(*taken) - deducted.get(taken, 0)
                if have < p["points"]:
                    return index, "not enough loyalty points"
                deducted[taken] = deducted.get(taken, 0) + p["points"]
        elif (
            spec.type in ("addToAudience", "removeFromAudience", "awardGiveaway", "createCoupon")
            and not ctx.profile_id
        ):
            return index, "a customer profile is required"
    return None


# -- effects --------------------------------------------------------------------------------


def _apply(
    ctx: Context,
    out: Outcome,
    cart: _Cart,
    campaign: Campaign,
    rule: Rule,
    index: int,
    spec: EffectSpec,
    base: dict[str, Any],
    produced: list[tuple[dict[str, Any], dict[int, int] | None]],
) -> None:
    p = spec.params
    etype = spec.type
    if etype == "setDiscount":
        scope = p["scope"]
        if scope == "cartItems":
            room = cart.items_left()
        elif scope == "additionalCosts":
            room = cart.costs_left()
        else:
            room = cart.items_left() + cart.costs_left()
        desired = percent_of(room, p["basisPoints"]) if "basisPoints" in p else p["amount"]
        value = min(desired, room)
        if value <= 0:
            return
        alloc = cart.take(value, scope)
        props: dict[str, Any] = {"name": p["name"], "value": money(value), "scope": scope}
        if desired != value:
            props["desiredValue"] = money(desired)
        produced.append((_effect(base, "setDiscount", props), alloc))
    elif etype == "setDiscountPerItem":
        for line in cart.matching(p):
            left = cart.line_left[line.position]
            if left <= 0:
                continue
            if p["perUnit"] and line.quantity > 1:
                for sub, unit_left in enumerate(_split(left, line.quantity)):
                    desired = (
                        percent_of(unit_left, p["basisPoints"])
                        if "basisPoints" in p
                        else p["amount"]
                    )
                    value = min(desired, unit_left)
                    if value <= 0:
                        continue
                    cart.line_left[line.position] -= value
                    props = {
                        "name": p["name"],
                        "value": money(value),
                        "position": line.position,
                        "subPosition": sub,
                    }
                    if desired != value:
                        props["desiredValue"] = money(desired)
                    produced.append(
                        (_effect(base, "setDiscountPerItem", props), {line.position: value})
                    )
                continue
            if "basisPoints" in p:
                desired = percent_of(left, p["basisPoints"])
            else:
                desired = p["amount"] * line.quantity
            value = min(desired, left)
            if value <= 0:
                continue
            cart.line_left[line.position] -= value
            props = {"name": p["name"], "value": money(value), "position": line.position}
            if desired != value:
                props["desiredValue"] = money(desired)
            produced.append((_effect(base, "setDiscountPerItem", props), {line.position: value}))
    elif etype == "setDiscountPerAdditionalCost":
        name = p["additionalCost"]
        left = cart.cost_left.get(name, 0)
        if left <= 0:
            return
        desired = percent_of(left, p["basisPoints"]) if "basisPoints" in p else p["amount"]
        value = min(desired, left)
        if value <= 0:
            return
        cart.cost_left[name] = left - value
        props = {
            "name": p["name"],
            "additionalCostId": additional_cost_id(name),
            "additionalCost": name,
            "value": money(value),
        }
        if desired != value:
            props["desiredValue"] = money(desired)
        produced.append((_effect(base, "setDiscountPerAdditionalCost", props), None))
    elif etype == "addFreeItem":
        props = {"sku": p["sku"], "name": p["name"]}
        if "desiredQuantity" in p:
            props["desiredQuantity"] = p["desiredQuantity"]
        produced.append((_effect(base, "addFreeItem", props), None))
    elif etype == "addLoyaltyPoints":
        _add_points(ctx, out, cart, campaign, rule, index, p, base, produced)
    elif etype == "deductLoyaltyPoints":
        program_id = p["programId"]
        card = ctx.card_for(program_id)
        props = {
            "ruleTitle": rule.title,
            "programId": program_id,
            "subLedgerId": p["subledgerId"],
            "value": points(p["points"]),
            "transactionUUID": "",
            "name": p["name"],
        }
        if card is not None:
            props["cardIdentifier"] = card["identifier"]
        out.deductions.append(
            Grant(
                key=f"{campaign.id}:{rule.index}:{index}",
                program_id=program_id,
                subledger=p["subledgerId"],
                amount=p["points"],
                name=p["name"],
                card=card["identifier"] if card is not None else None,
                profile=ctx.profile_id,
                props=props,
                campaign_id=campaign.id,
                ruleset_id=campaign.ruleset_id,
                rule_name=rule.title,
            )
        )
        produced.append((_effect(base, "deductLoyaltyPoints", props), None))
    elif etype == "showNotification":
        props = {"notificationType": p["notificationType"], "title": p["title"], "body": p["body"]}
        produced.append((_effect(base, "showNotification", props), None))
    elif etype == "customEffect":
        props = {"effectId": p["effectId"], "name": p["name"], "payload": p["payload"]}
        produced.append((_effect(base, "customEffect", props), None))
    elif etype in ("addToAudience", "removeFromAudience"):
        audience = ctx.state.data["audiences"].get(str(p["audienceId"]))
        if audience is None:  # deleted through the API since the file was loaded
            return
        props = {
            "audienceId": audience["id"],
            "audienceName": audience["name"],
            "profileIntegrationId": ctx.profile_id,
        }
        if ctx.profile is not None:
            props["profileId"] = ctx.profile["id"]
        out.audience_changes.append(
            ("add" if etype == "addToAudience" else "remove", audience["id"])
        )
        produced.append((_effect(base, etype, props), None))
    elif etype == "awardGiveaway":
        pool = ctx.state.config.pools[p["poolId"]]
        props = {
            "poolId": pool["id"],
            "poolName": pool["name"],
            "recipientIntegrationId": ctx.profile_id,
        }
        if ctx.kind == "session" and not ctx.closing:
            produced.append((_effect(base, "willAwardGiveaway", props), None))
            return
        effect = _effect(base, "awardGiveaway", props)
        out.giveaways.append(effect)
        produced.append((effect, None))
    elif etype == "createCoupon":
        if ctx.kind == "session" and not ctx.closing:
            return
        props = {"value": "", "profileId": ctx.profile_id}
        effect = _effect(base, "couponCreated", props)
        out.new_coupons.append((effect, p, campaign.id))
        produced.append((effect, None))


def _add_points(
    ctx: Context,
    out: Outcome,
    cart: _Cart,
    campaign: Campaign,
    rule: Rule,
    index: int,
    p: dict[str, Any],
    base: dict[str, Any],
    produced: list[tuple[dict[str, Any], dict[int, int] | None]],
) -> None:
    program = ctx.state.config.programs[p["programId"]]
    alloc: dict[int, int] | None = None
    if "points" in p:
        amount = p["points"]
    else:
        basis = p["basis"]
        weights: dict[int, int] = {}
        for line in cart.matching(p):
            weight = (
                line.total if basis != "discountedCartItemTotal" else cart.line_left[line.position]
            )
            if weight > 0:
                weights[line.position] = weight
        cents = sum(weights.values())
        if basis == "sessionTotal" and p["skus"] is None and p["categories"] is None:
            cents += ctx.cost_total
        amount = round(cents * p["rate"])
        if p["rounding"] == "down":
            amount -= amount % 100
        if weights:
            alloc = _spread(amount, weights)
    if amount <= 0:
        return
    card = ctx.card_for(program.id) if program.card_based else None
    props: dict[str, Any] = {
        "name": p["name"],
        "programId": program.id,
        "subLedgerId": p["subledgerId"],
        "value": points(amount),
        "recipientIntegrationId": ctx.profile_id,
        "transactionUUID": "",
    }
    if card is not None:
        props["cardIdentifier"] = card["identifier"]
    if program.activation == "action":
        props["awaitsActivation"] = True
    out.grants.append(
        Grant(
            key=f"{campaign.id}:{rule.index}:{index}",
            program_id=program.id,
            subledger=p["subledgerId"],
            amount=amount,
            name=p["name"],
            card=card["identifier"] if card is not None else None,
            profile=ctx.profile_id,
            props=props,
            campaign_id=campaign.id,
            ruleset_id=campaign.ruleset_id,
            rule_name=rule.title,
            alloc=alloc,
        )
    )
    produced.append((_effect(base, "addLoyaltyPoints", props), alloc))


def _effect(base: dict[str, Any], effect_type: str, props: dict[str, Any]) -> dict[str, Any]:
    effect = dict(base)
    effect["effectType"] = effect_type
    effect["props"] = props
    return effect


def _emit(out: Outcome, base: dict[str, Any], effect_type: str, props: dict[str, Any]) -> None:
    out.effects.append(_effect(base, effect_type, props))
    out.allocs.append(None)


# -- coupons and referral codes ---------------------------------------------------------------


def _coupon_problem(ctx: Context, campaign: Campaign, coupon: dict[str, Any]) -> str | None:
    now = ctx.now_s
    profile_id = ctx.profile_id
    recipient = coupon["recipientIntegrationId"]
    if recipient and recipient != profile_id:
        return "CouponRecipientDoesNotMatch"
    if coupon["startDate"] and coupon["startDate"] > now:
        return "CouponStartDateInFuture"
    if coupon["expiryDate"] and coupon["expiryDate"] <= now:
        return "CouponExpired"
    if coupon["isReservationMandatory"]:
        if not profile_id:
            return "ProfileRequired"
        if profile_id not in coupon["reservedBy"]:
            return "CouponReservationRequired"
    mine = 1 if ctx.committed and coupon["value"] in ctx.committed.get("coupons", ()) else 0
    if coupon["usageLimit"] and coupon["usageCounter"] - mine >= coupon["usageLimit"]:
        return "CouponLimitReached"
    if coupon["profileLimit"]:
        if not profile_id:
            return "ProfileRequired"
        if coupon["redemptions"].get(profile_id, 0) - mine >= coupon["profileLimit"]:
            return "ProfileLimitReached"
    limit = campaign.limits.get("redeemCoupon")
    if limit is not None:
        used = ctx.state.data["budgets"].get(str(campaign.id), {}).get("redeemCoupon", 0)
        if used - mine >= limit:
            return "CampaignLimitReached"
    return None


def _referral_problem(ctx: Context, campaign: Campaign, referral: dict[str, Any]) -> str | None:
    now = ctx.now_s
    profile_id = ctx.profile_id
    if not profile_id:
        return "ProfileRequired"
    if referral["advocateProfileIntegrationId"] == profile_id:
        return "ReferralRecipientIdSameAsAdvocate"
    friend = referral["friendProfileIntegrationId"]
    if friend and friend != profile_id:
        return "ReferralRecipientDoesNotMatch"
    if referral["startDate"] and referral["startDate"] > now:
        return "ReferralStartDateInFuture"
    if referral["expiryDate"] and referral["expiryDate"] <= now:
        return "ReferralExpired"
    mine = 1 if ctx.committed and ctx.committed.get("referral") == referral["code"] else 0
    if referral["usageLimit"] and referral["usageCounter"] - mine >= referral["usageLimit"]:
        return "ReferralLimitReached"
    limit = campaign.limits.get("redeemReferral")
    if limit is not None:
        used = ctx.state.data["budgets"].get(str(campaign.id), {}).get("redeemReferral", 0)
        if used - mine >= limit:
            return "CampaignLimitReached"
    return None


def _reject_coupon(
    out: Outcome,
    campaign: Campaign | None,
    code: str,
    reason: str,
    coupon: dict[str, Any] | None,
    *,
    condition: int | None = None,
    effect: int | None = None,
    details: str | None = None,
) -> None:
    rule = _coupon_rule(campaign)
    base = _reject_base(campaign, rule)
    if coupon is not None:
        base["triggeredByCoupon"] = coupon["id"]
    props: dict[str, Any] = {"value": code, "rejectionReason": reason}
    if condition is not None:
        props["conditionIndex"] = condition
    if effect is not None:
        props["effectIndex"] = effect
    if details:
        props["details"] = details
    _emit(out, base, "rejectCoupon", props)


def _reject_referral(
    out: Outcome,
    campaign: Campaign | None,
    code: str,
    reason: str,
    *,
    condition: int | None = None,
    effect: int | None = None,
) -> None:
    rule = None
    if campaign is not None:
        rule = next((r for r in campaign.rules if r.needs_referral), None)
    props: dict[str, Any] = {"value": code, "rejectionReason": reason}
    if condition is not None:
        props["conditionIndex"] = condition
    if effect is not None:
        props["effectIndex"] = effect
    _emit(out, _reject_base(campaign, rule), "rejectReferral", props)


def _coupon_rule(campaign: Campaign | None) -> Rule | None:
    if campaign is None:
        return None
    return next((r for r in campaign.rules if r.needs_coupon), None)


def _reject_base(campaign: Campaign | None, rule: Rule | None) -> dict[str, Any]:
    # An unknown code belongs to no campaign: the API then reports zero ids and no rule name.
    return {
        "campaignId": campaign.id if campaign else 0,
        "rulesetId": campaign.ruleset_id if campaign else 0,
        "ruleIndex": rule.index if rule else 0,
        "ruleName": rule.title if rule else "",
    }


def _fail(
    out: Outcome,
    campaign: Campaign,
    rule: Rule,
    condition: int | None,
    coupon: dict[str, Any] | None,
    details: str,
    effect: int | None = None,
) -> None:
    reason: dict[str, Any] = {
        "campaignID": campaign.id,
        "campaignName": campaign.name,
        "rulesetID": campaign.ruleset_id,
        "ruleIndex": rule.index,
        "ruleName": rule.title,
        "details": details,
    }
    if condition is not None:
        reason["conditionIndex"] = condition
    if effect is not None:
        reason["effectIndex"] = effect
    if coupon is not None:
        reason["couponID"] = coupon["id"]
        reason["couponValue"] = coupon["value"]
    out.failures.append(reason)


def _condition_index(rule: Rule, kind: str) -> int | None:
    return next((i for i, c in enumerate(rule.conditions) if c.kind == kind), None)


# -- what is left of the cart -----------------------------------------------------------------


class _Cart:
    """What earlier discounts of this evaluation left of each line and additional cost."""

    __slots__ = ("cost_left", "line_left", "lines")

    def __init__(self, ctx: Context) -> None:
        self.lines = ctx.lines
        self.line_left = [line.unit * line.quantity for line in ctx.lines]
        self.cost_left = dict(ctx.add_costs)

    def items_left(self) -> int:
        return sum(self.line_left)

    def costs_left(self) -> int:
        return sum(self.cost_left.values())

    def matching(self, p: dict[str, Any]) -> list[Line]:
        skus = p.get("skus")
        categories = p.get("categories")
        if skus is None and categories is None:
            return self.lines
        return [
            line
            for line in self.lines
            if (skus is not None and line.sku in skus)
            or (categories is not None and line.category in categories)
        ]

    def take(self, value: int, scope: str) -> dict[int, int]:
        """Take ``value`` cents, spread over lines (and costs) in proportion to what is left;
        answers the part each cart position gave."""
        items = self.items_left()
        costs = self.costs_left()
        if scope == "cartItems":
            from_items = value
        elif scope == "additionalCosts":
            from_items = 0
        else:
            from_items = prorate(value, items, items + costs)
        alloc: dict[int, int] = {}
        if from_items:
            alloc = _spread(from_items, dict(enumerate(self.line_left)))
            for pos, part in alloc.items():
                self.line_left[pos] -= part
        rest = value - from_items
        if rest:
            for name, part in _spread(rest, self.cost_left).items():
                self.cost_left[name] -= part
        return alloc


def _spread(value: int, weights: dict[Any, int]) -> dict[Any, int]:
    """Split ``value`` over keys in proportion to ``weights`` (exactly, never above a weight)."""
    total = sum(w for w in weights.values() if w > 0)
    if total <= 0:
        return {}
    parts: dict[Any, int] = {}
    given = 0
    for key, weight in weights.items():
        if weight > 0:
            share = value * weight // total
            parts[key] = share
            given += share
    left = value - given
    for key, weight in weights.items():
        if not left:
            break
        if weight > 0 and parts[key] < weight:
            parts[key] += 1
            left -= 1
    if left:  # points can exceed the basis (rate > 1): the first line takes the rest
        first = next(iter(parts))
        parts[first] += left
    return {k: v for k, v in parts.items() if v}


def _split(amount: int, count: int) -> list[int]:
    """Split an amount into ``count`` near-equal parts, the first ones a cent larger."""
    whole, extra = divmod(amount, count)
    return [whole + (1 if i < extra else 0) for i in range(count)]
