"""The sandbox's campaigns file: parse and check it, and compile rule conditions to functions.

The format is documented in ``docs/sandbox-campaigns.md``; ``campaigns/demo.json`` is an example.
:func:`parse_campaigns` turns the decoded JSON into a :class:`Config` or raises ValueError with a
message that names the offending place (``campaigns[2].rules[0].effects[1].type: ...``).
"""

from __future__ import annotations

import datetime
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .values import parse_time, to_cents, to_hundredths

#: Effect types a rule may list, with their parameter checkers (below).
EFFECT_TYPES = (
    "setDiscount",
    "setDiscountPerItem",
    "setDiscountPerAdditionalCost",
    "addFreeItem",
    "addLoyaltyPoints",
    "deductLoyaltyPoints",
    "showNotification",
    "customEffect",
    "addToAudience",
    "removeFromAudience",
    "awardGiveaway",
    "createCoupon",
)
RULE_TRIGGERS = ("session", "event", "profile")
CAMPAIGN_STATES = ("enabled", "disabled", "archived")
BUDGET_ACTIONS = ("redeemCoupon", "redeemReferral")


@dataclass(slots=True)
class Condition:
    """One compiled rule condition: ``kind`` is ``coupon``, ``referral`` or ``plain``."""

    kind: str
    test: Callable[[Any], bool] | None
    text: str


@dataclass(slots=True)
class EffectSpec:
    """One effect a rule gives, with its parameters already checked and converted."""

    type: str
    params: dict[str, Any]


@dataclass(slots=True)
class Rule:
    """A rule of a campaign: on which evaluations it runs, its conditions and its effects."""

    index: int
    title: str
    on: str
    conditions: list[Condition]
    effects: list[EffectSpec]
    needs_coupon: bool
    needs_referral: bool


@dataclass(slots=True)
class Campaign:
    """A campaign: its schedule, coupons and referral codes, budgets and rules."""

    id: int
    name: str
    description: str
    state: str
    start: datetime.datetime | None
    end: datetime.datetime | None
    ruleset_id: int
    tags: list[str]
    attributes: dict[str, Any]
    limits: dict[str, int]
    coupons: list[dict[str, Any]]
    referrals: list[dict[str, Any]]
    referral_prefix: str
    rules: list[Rule]
    features: list[str]

    def running(self, now: datetime.datetime) -> bool:
        """Whether the campaign is enabled and ``now`` is inside its schedule."""
        if self.state != "enabled":
            return False
        if self.start is not None and now < self.start:
            return False
        return not (self.end is not None and now >= self.end)

    def frontend_state(self, now: datetime.datetime) -> str:
        """The state the Campaign Manager would show (running, scheduled, expired, ...)."""
        if self.state != "enabled":
            return self.state
        if self.start is not None and now < self.start:
            return "scheduled"
        if self.end is not None and now >= self.end:
            return "expired"
        return "running"


@dataclass(slots=True)
class Tier:
    """A loyalty tier, reached at ``min_points`` active points (hundredths)."""

    id: int
    name: str
    min_points: int


@dataclass(slots=True)
class Program:
    """A loyalty program: profile-based, or card-based when ``card_based``."""

    id: int
    name: str
    title: str
    subledgers: list[str]
    tiers: list[Tier]
    card_based: bool
    users_per_card_limit: int
    activation: str  # "close", "action" or "days"
    activation_days: int
    expire_after_days: int | None
    cards: list[dict[str, Any]]


@dataclass(slots=True)
class Achievement:
    """An achievement a campaign offers: progress counted on closed sessions or on events."""

    id: int
    campaign_id: int
    name: str
    title: str
    description: str
    target: float
    on: str  # "sessionClosed" or "event"
    event_type: str | None
    measure: str  # "count" or "cartItemTotal"


@dataclass(slots=True)
class Config:
    """Everything the campaigns file defines, checked and ready for the engine."""

    raw: dict[str, Any]
    application_id: int = 1
    application_name: str = "Sandbox"
    currency: str = "EUR"
    account_id: int = 1
    programs: dict[int, Program] = field(default_factory=dict)
    audiences: list[dict[str, Any]] = field(default_factory=list)
    profiles: list[dict[str, Any]] = field(default_factory=list)
    catalogs: list[dict[str, Any]] = field(default_factory=list)
    pools: dict[int, dict[str, Any]] = field(default_factory=dict)
    achievements: dict[int, Achievement] = field(default_factory=dict)
    best_prior_prices: list[dict[str, Any]] = field(default_factory=list)
    campaigns: list[Campaign] = field(default_factory=list)
    campaigns_by_id: dict[int, Campaign] = field(default_factory=dict)


def parse_campaigns(raw: dict[str, Any] | None) -> Config:
    """Check a decoded campaigns file and build its :class:`Config`; ValueError when it is bad."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError("a campaigns file must be a JSON object")
    known = {
        "application",
        "loyaltyPrograms",
        "audiences",
        "profiles",
        "catalogs",
        "giveawayPools",
        "achievements",
        "bestPriorPrices",
        "campaigns",
    }
    for key in raw:
        if key not in known and not key.startswith(("_", "$")):
            raise ValueError(
                f"unknown top-level key {key!r} (expected one of: {', '.join(sorted(known))})"
            )
    cfg = Config(raw=raw)
    _parse_application(cfg, _obj(raw.get("application", {}), "application"))
    for i, item in enumerate(_list(raw.get("loyaltyPrograms", []), "loyaltyPrograms")):
        program = _parse_program(_obj(item, f"loyaltyPrograms[{i}]"), f"loyaltyPrograms[{i}]")
        if program.id in cfg.programs:
            raise ValueError(f"loyaltyPrograms[{i}].id: duplicate program id {program.id}")
        cfg.programs[program.id] = program
    audience_ids: set[int] = set()
    for i, item in enumerate(_list(raw.get("audiences", []), "audiences")):
        where = f"audiences[{i}]"
        item = _obj(item, where)
        aid = _int(item.get("id"), f"{where}.id", minimum=1)
        if aid in audience_ids:
            raise ValueError(f"{where}.id: duplicate audience id {aid}")
        audience_ids.add(aid)
        cfg.audiences.append(
            {
                "id": aid,
                "name": _str(item.get("name"), f"{where}.name"),
                "description": _str(item.get("description", ""), f"{where}.description"),
            }
        )
    for i, item in enumerate(_list(raw.get("giveawayPools", []), "giveawayPools")):
        where = f"giveawayPools[{i}]"
        item = _obj(item, where)
        pid = _int(item.get("id"), f"{where}.id", minimum=1)
        codes = [
            _str(c, f"{where}.codes[{j}]")
            for j, c in enumerate(_list(item.get("codes", []), f"{where}.codes"))
        ]
        cfg.pools[pid] = {
            "id": pid,
            "name": _str(item.get("name"), f"{where}.name"),
            "codes": codes,
        }
    for i, item in enumerate(_list(raw.get("catalogs", []), "catalogs")):
        cfg.catalogs.append(_parse_catalog(_obj(item, f"catalogs[{i}]"), f"catalogs[{i}]"))
    for i, item in enumerate(_list(raw.get("bestPriorPrices", []), "bestPriorPrices")):
        where = f"bestPriorPrices[{i}]"
        item = _obj(item, where)
        cfg.best_prior_prices.append(
            {
                "sku": _str(item.get("sku"), f"{where}.sku"),
                "price": to_cents(_num(item.get("price"), f"{where}.price", minimum=0)),
                "observedAt": _time(item.get("observedAt"), f"{where}.observedAt"),
                "contextIds": [
                    str(c) for c in _list(item.get("contextIds", []), f"{where}.contextIds")
                ],
            }
        )
    for i, item in enumerate(_list(raw.get("campaigns", []), "campaigns")):
        campaign = _parse_campaign(
            cfg, _obj(item, f"campaigns[{i}]"), f"campaigns[{i}]", audience_ids
        )
        if campaign.id in cfg.campaigns_by_id:
            raise ValueError(f"campaigns[{i}].id: duplicate campaign id {campaign.id}")
        cfg.campaigns.append(campaign)
        cfg.campaigns_by_id[campaign.id] = campaign
    _check_unique_codes(cfg)
    for i, item in enumerate(_list(raw.get("achievements", []), "achievements")):
        ach = _parse_achievement(cfg, _obj(item, f"achievements[{i}]"), f"achievements[{i}]")
        if ach.id in cfg.achievements:
            raise ValueError(f"achievements[{i}].id: duplicate achievement id {ach.id}")
        cfg.achievements[ach.id] = ach
    for i, item in enumerate(_list(raw.get("profiles", []), "profiles")):
        cfg.profiles.append(
            _parse_profile(cfg, _obj(item, f"profiles[{i}]"), f"profiles[{i}]", audience_ids)
        )
    return cfg


# -- sections ------------------------------------------------------------------------------


def _parse_application(cfg: Config, app: dict[str, Any]) -> None:
    cfg.application_id = _int(app.get("id", 1), "application.id", minimum=1)
    cfg.application_name = _str(app.get("name", "Sandbox"), "application.name")
    cfg.currency = _str(app.get("currency", "EUR"), "application.currency")
    cfg.account_id = _int(app.get("accountId", 1), "application.accountId", minimum=1)


def _parse_program(item: dict[str, Any], where: str) -> Program:
    pid = _int(item.get("id"), f"{where}.id", minimum=1)
    name = _str(item.get("name"), f"{where}.name")
    subledgers = [
        _str(s, f"{where}.subledgers[{j}]")
        for j, s in enumerate(_list(item.get("subledgers", []), f"{where}.subledgers"))
    ]
    tiers = []
    for j, tier in enumerate(_list(item.get("tiers", []), f"{where}.tiers")):
        tier = _obj(tier, f"{where}.tiers[{j}]")
        tiers.append(
            Tier(
                id=_int(tier.get("id", pid * 100 + j + 1), f"{where}.tiers[{j}].id", minimum=1),
                name=_str(tier.get("name"), f"{where}.tiers[{j}].name"),
                min_points=to_hundredths(
                    _num(tier.get("minPoints", 0), f"{where}.tiers[{j}].minPoints", minimum=0)
                ),
            )
        )
    tiers.sort(key=lambda t: t.min_points)
    activation = item.get("activation", "close")
    days = 0
    if isinstance(activation, dict):
        days = _int(activation.get("days"), f"{where}.activation.days", minimum=1)
        activation = "days"
    elif activation not in ("close", "action"):
        raise ValueError(
            f'{where}.activation: expected "close", "action" or {{"days": N}}, got {activation!r}'
        )
    expire = item.get("pointsExpireAfterDays")
    cards = []
    for j, card in enumerate(_list(item.get("cards", []), f"{where}.cards")):
        cw = f"{where}.cards[{j}]"
        card = _obj(card, cw)
        status = card.get("status", "active")
        if status not in ("active", "inactive"):
            raise ValueError(f'{cw}.status: expected "active" or "inactive", got {status!r}')
        cards.append(
            {
                "identifier": _str(card.get("identifier"), f"{cw}.identifier"),
                "status": status,
                "profiles": [
                    _str(p, f"{cw}.profiles[{k}]")
                    for k, p in enumerate(_list(card.get("profiles", []), f"{cw}.profiles"))
                ],
                "points": to_hundredths(_num(card.get("points", 0), f"{cw}.points", minimum=0)),
            }
        )
    card_based = _bool(item.get("cardBased", False), f"{where}.cardBased")
    if cards and not card_based:
        raise ValueError(f"{where}.cards: only a card-based program (cardBased: true) has cards")
    return Program(
        id=pid,
        name=name,
        title=_str(item.get("title", name), f"{where}.title"),
        subledgers=subledgers,
        tiers=tiers,
        card_based=card_based,
        users_per_card_limit=_int(
            item.get("usersPerCardLimit", 1), f"{where}.usersPerCardLimit", minimum=1
        ),
        activation=activation,
        activation_days=days,
        expire_after_days=None
        if expire is None
        else _int(expire, f"{where}.pointsExpireAfterDays", minimum=1),
        cards=cards,
    )


def _parse_catalog(item: dict[str, Any], where: str) -> dict[str, Any]:
    items = []
    seen: set[str] = set()
    for j, entry in enumerate(_list(item.get("items", []), f"{where}.items")):
        ew = f"{where}.items[{j}]"
        entry = _obj(entry, ew)
        sku = _str(entry.get("sku"), f"{ew}.sku")
        if sku in seen:
            raise ValueError(f"{ew}.sku: duplicate SKU {sku!r}")
        seen.add(sku)
        parsed: dict[str, Any] = {
            "sku": sku,
            "attributes": _obj(entry.get("attributes", {}), f"{ew}.attributes"),
        }
        if "price" in entry:
            parsed["price"] = _num(entry["price"], f"{ew}.price", minimum=0)
        if "product" in entry:
            parsed["product"] = _obj(entry["product"], f"{ew}.product")
        items.append(parsed)
    return {
        "id": _int(item.get("id"), f"{where}.id", minimum=1),
        "name": _str(item.get("name", "Catalog"), f"{where}.name"),
        "description": _str(item.get("description", ""), f"{where}.description"),
        "items": items,
    }


def _parse_profile(
    cfg: Config, item: dict[str, Any], where: str, audience_ids: set[int]
) -> dict[str, Any]:
    audiences = []
    for j, aid in enumerate(_list(item.get("audiences", []), f"{where}.audiences")):
        aid = _int(aid, f"{where}.audiences[{j}]", minimum=1)
        if aid not in audience_ids:
            raise ValueError(f"{where}.audiences[{j}]: no audience with id {aid} in 'audiences'")
        audiences.append(aid)
    loyalty = []
    for j, grant in enumerate(_list(item.get("loyalty", []), f"{where}.loyalty")):
        gw = f"{where}.loyalty[{j}]"
        grant = _obj(grant, gw)
        pid = _int(grant.get("programId"), f"{gw}.programId", minimum=1)
        program = cfg.programs.get(pid)
        if program is None:
            raise ValueError(f"{gw}.programId: no loyalty program with id {pid}")
        if program.card_based:
            raise ValueError(f"{gw}.programId: program {pid} is card-based; seed its cards instead")
        sub = _str(grant.get("subledgerId", ""), f"{gw}.subledgerId", empty=True)
        if sub and sub not in program.subledgers:
            raise ValueError(f"{gw}.subledgerId: program {pid} has no subledger {sub!r}")
        loyalty.append(
            {
                "programId": pid,
                "subledgerId": sub,
                "points": to_hundredths(_num(grant.get("points"), f"{gw}.points", minimum=0)),
                "expiryDate": _time(grant["expiryDate"], f"{gw}.expiryDate")
                if "expiryDate" in grant
                else None,
            }
        )
    return {
        "integrationId": _str(item.get("integrationId"), f"{where}.integrationId"),
        "attributes": _obj(item.get("attributes", {}), f"{where}.attributes"),
        "audiences": audiences,
        "loyalty": loyalty,
    }


def _parse_achievement(cfg: Config, item: dict[str, Any], where: str) -> Achievement:
    cid = _int(item.get("campaignId"), f"{where}.campaignId", minimum=1)
    if cid not in cfg.campaigns_by_id:
        raise ValueError(f"{where}.campaignId: no campaign with id {cid}")
    on = item.get("on", "sessionClosed")
    if on not in ("sessionClosed", "event"):
        raise ValueError(f'{where}.on: expected "sessionClosed" or "event", got {on!r}')
    event_type = None
    if on == "event":
        event_type = _str(item.get("eventType"), f"{where}.eventType")
    measure = item.get("measure", "count")
    if measure not in ("count", "cartItemTotal"):
        raise ValueError(f'{where}.measure: expected "count" or "cartItemTotal", got {measure!r}')
    name = _str(item.get("name"), f"{where}.name")
    return Achievement(
        id=_int(item.get("id"), f"{where}.id", minimum=1),
        campaign_id=cid,
        name=name,
        title=_str(item.get("title", name), f"{where}.title"),
        description=_str(item.get("description", ""), f"{where}.description", empty=True),
        target=float(_num(item.get("target"), f"{where}.target", minimum=0)),
        on=on,
        event_type=event_type,
        measure=measure,
    )


def _parse_campaign(
    cfg: Config, item: dict[str, Any], where: str, audience_ids: set[int]
) -> Campaign:
    cid = _int(item.get("id"), f"{where}.id", minimum=1)
    state = item.get("state", "enabled")
    if state not in CAMPAIGN_STATES:
        raise ValueError(
            f"{where}.state: expected one of {', '.join(CAMPAIGN_STATES)}, got {state!r}"
        )
    limits: dict[str, int] = {}
    for j, limit in enumerate(_list(item.get("limits", []), f"{where}.limits")):
        lw = f"{where}.limits[{j}]"
        limit = _obj(limit, lw)
        action = limit.get("action")
        if action not in BUDGET_ACTIONS:
            raise ValueError(
                f"{lw}.action: expected one of {', '.join(BUDGET_ACTIONS)}, got {action!r}"
            )
        limits[action] = _int(limit.get("limit"), f"{lw}.limit", minimum=0)
    coupons = [
        _parse_coupon(_obj(c, f"{where}.coupons[{j}]"), f"{where}.coupons[{j}]")
        for j, c in enumerate(_list(item.get("coupons", []), f"{where}.coupons"))
    ]
    referrals = [
        _parse_referral(_obj(r, f"{where}.referrals[{j}]"), f"{where}.referrals[{j}]")
        for j, r in enumerate(_list(item.get("referrals", []), f"{where}.referrals"))
    ]
    settings = _obj(item.get("referralSettings", {}), f"{where}.referralSettings")
    rules = []
    for j, rule in enumerate(_list(item.get("rules", []), f"{where}.rules")):
        rules.append(
            _parse_rule(
                cfg, _obj(rule, f"{where}.rules[{j}]"), f"{where}.rules[{j}]", j, audience_ids
            )
        )
    features = []
    if coupons or any(r.needs_coupon for r in rules):
        features.append("coupons")
    if referrals or any(r.needs_referral for r in rules):
        features.append("referrals")
    if any(e.type in ("addLoyaltyPoints", "deductLoyaltyPoints") for r in rules for e in r.effects):
        features.append("loyalty")
    if any(e.type == "awardGiveaway" for r in rules for e in r.effects):
        features.append("giveaways")
    name = _str(item.get("name"), f"{where}.name")
    return Campaign(
        id=cid,
        name=name,
        description=_str(item.get("description", ""), f"{where}.description", empty=True),
        state=state,
        start=_time(item["startTime"], f"{where}.startTime") if item.get("startTime") else None,
        end=_time(item["endTime"], f"{where}.endTime") if item.get("endTime") else None,
        ruleset_id=_int(item.get("rulesetId", 1000 + cid), f"{where}.rulesetId", minimum=1),
        tags=[
            _str(t, f"{where}.tags[{j}]")
            for j, t in enumerate(_list(item.get("tags", []), f"{where}.tags"))
        ],
        attributes=_obj(item.get("attributes", {}), f"{where}.attributes"),
        limits=limits,
        coupons=coupons,
        referrals=referrals,
        referral_prefix=_str(settings.get("prefix", "REF-"), f"{where}.referralSettings.prefix"),
        rules=rules,
        features=features,
    )


def _parse_coupon(item: dict[str, Any], where: str) -> dict[str, Any]:
    value = _str(item.get("value"), f"{where}.value")
    if len(value) > 100:
        raise ValueError(f"{where}.value: a coupon code has at most 100 characters")
    recipient = item.get("recipientIntegrationId")
    return {
        "value": value,
        "usageLimit": _int(item.get("usageLimit", 0), f"{where}.usageLimit", minimum=0),
        "profileLimit": _int(item.get("profileLimit", 0), f"{where}.profileLimit", minimum=0),
        "reservationLimit": _int(
            item.get("reservationLimit", 0), f"{where}.reservationLimit", minimum=0
        ),
        "startDate": _time(item["startDate"], f"{where}.startDate")
        if item.get("startDate")
        else None,
        "expiryDate": _time(item["expiryDate"], f"{where}.expiryDate")
        if item.get("expiryDate")
        else None,
        "recipientIntegrationId": None
        if recipient is None
        else _str(recipient, f"{where}.recipientIntegrationId"),
        "isReservationMandatory": _bool(
            item.get("isReservationMandatory", False), f"{where}.isReservationMandatory"
        ),
        "implicitlyReserved": _bool(
            item.get("implicitlyReserved", False), f"{where}.implicitlyReserved"
        ),
        "attributes": _obj(item.get("attributes", {}), f"{where}.attributes"),
    }


def _parse_referral(item: dict[str, Any], where: str) -> dict[str, Any]:
    friend = item.get("friend")
    return {
        "code": _str(item.get("code"), f"{where}.code"),
        "advocate": _str(item.get("advocate"), f"{where}.advocate"),
        "friend": None if friend is None else _str(friend, f"{where}.friend"),
        "usageLimit": _int(item.get("usageLimit", 0), f"{where}.usageLimit", minimum=0),
        "startDate": _time(item["startDate"], f"{where}.startDate")
        if item.get("startDate")
        else None,
        "expiryDate": _time(item["expiryDate"], f"{where}.expiryDate")
        if item.get("expiryDate")
        else None,
        "attributes": _obj(item.get("attributes", {}), f"{where}.attributes"),
    }


def _check_unique_codes(cfg: Config) -> None:
    """A coupon or referral code names one coupon or referral in the whole file."""
    coupons: dict[str, int] = {}
    referrals: dict[str, int] = {}
    for campaign in cfg.campaigns:
        for coupon in campaign.coupons:
            _claim_code(coupons, "coupon", coupon["value"], campaign.id)
        for referral in campaign.referrals:
            _claim_code(referrals, "referral", referral["code"], campaign.id)


def _claim_code(seen: dict[str, int], kind: str, code: str, campaign_id: int) -> None:
    """Note that ``code`` belongs to ``campaign_id``; a second definition, in the same campaign or
    another, is an error."""
    other = seen.get(code)
    if other is not None:
        raise ValueError(
            f"{kind} code {code!r} is defined twice (campaigns {other} and {campaign_id})"
        )
    seen[code] = campaign_id


# -- rules ---------------------------------------------------------------------------------


def _parse_rule(
    cfg: Config, item: dict[str, Any], where: str, index: int, audience_ids: set[int]
) -> Rule:
    title = _str(item.get("title"), f"{where}.title")
    on = item.get("on", "session")
    if on not in RULE_TRIGGERS:
        raise ValueError(f"{where}.on: expected one of {', '.join(RULE_TRIGGERS)}, got {on!r}")
    conditions = [
        _compile_condition(c, f"{where}.conditions[{j}]")
        for j, c in enumerate(_list(item.get("conditions", []), f"{where}.conditions"))
    ]
    effects = [
        _parse_effect(
            cfg, _obj(e, f"{where}.effects[{j}]"), f"{where}.effects[{j}]", title, audience_ids
        )
        for j, e in enumerate(_list(item.get("effects", []), f"{where}.effects"))
    ]
    return Rule(
        index=index,
        title=title,
        on=on,
        conditions=conditions,
        effects=effects,
        needs_coupon=any(c.kind == "coupon" for c in conditions),
        needs_referral=any(c.kind == "referral" for c in conditions),
    )


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "in": lambda a, b: a in b,
    "notIn": lambda a, b: a not in b,
    "contains": lambda a, b: isinstance(a, (list, str)) and b in a,
}

# subject -> (how the context gives it, unit of constants: "money", "count" or "points")
_SUBJECTS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "cartItemTotal": (lambda ctx: ctx.item_total, "money"),
    "sessionTotal": (lambda ctx: ctx.item_total + ctx.cost_total, "money"),
    "additionalCostTotal": (lambda ctx: ctx.cost_total, "money"),
    "totalSales": (lambda ctx: ctx.total_sales, "money"),
    "itemCount": (lambda ctx: ctx.quantity, "count"),
    "lineCount": (lambda ctx: len(ctx.lines), "count"),
    "closedSessions": (lambda ctx: ctx.closed_sessions, "count"),
}
_MISSING = object()


def _compile_condition(item: Any, where: str) -> Condition:
    item = _obj(item, where)
    if len(item) != 1:
        raise ValueError(
            f"{where}: a condition is an object with exactly one key, got {sorted(item)}"
        )
    ((key, arg),) = item.items()
    text = f"{key} {arg!r}"
    if key in ("coupon", "referral"):
        if arg is not True:
            raise ValueError(f"{where}.{key}: only true is allowed")
        return Condition(key, None, text)
    if key in ("sku", "category"):
        wanted = frozenset(_str_or_list(arg, f"{where}.{key}"))
        attr = "skus" if key == "sku" else "categories"
        return Condition("plain", lambda ctx: not wanted.isdisjoint(getattr(ctx, attr)), text)
    if key in ("audience", "notInAudience"):
        ids = frozenset(_int_or_list(arg, f"{where}.{key}"))
        if key == "audience":
            return Condition("plain", lambda ctx: not ids.isdisjoint(ctx.audiences), text)
        return Condition("plain", lambda ctx: ids.isdisjoint(ctx.audiences), text)
    if key == "eventType":
        types = frozenset(_str_or_list(arg, f"{where}.{key}"))
        return Condition("plain", lambda ctx: ctx.event_type in types, text)
    if key in ("firstSession", "hasProfile", "hasLoyaltyCard"):
        want = _bool(arg, f"{where}.{key}")
        getter = {
            "firstSession": lambda ctx: ctx.first_session,
            "hasProfile": lambda ctx: bool(ctx.profile_id),
            "hasLoyaltyCard": lambda ctx: bool(ctx.loyalty_cards),
        }[key]
        return Condition("plain", lambda ctx: bool(getter(ctx)) is want, text)
    getter, unit = _subject(key, where)
    checks = _compile_ops(_obj(arg, f"{where}.{key}"), f"{where}.{key}", unit)

    def test(ctx: Any) -> bool:
        value = getter(ctx)
        for op, operand in checks:
            if op == "exists":
                if (value is not _MISSING) is not operand:
                    return False
                continue
            if value is _MISSING:
                return False
            try:
                if not _OPS[op](value, operand):
                    return False
            except TypeError:  # e.g. a string attribute compared with a number
                return False
        return True

    return Condition("plain", test, text)


def _subject(key: str, where: str) -> tuple[Callable[[Any], Any], str]:
    if key in _SUBJECTS:
        return _SUBJECTS[key]
    prefix, _, name = key.partition(".")
    if name:
        if prefix == "profile":
            return (lambda ctx: ctx.profile_attrs.get(name, _MISSING)), "raw"
        if prefix == "session":
            return (lambda ctx: ctx.session_attrs.get(name, _MISSING)), "raw"
        if prefix == "event":
            return (lambda ctx: ctx.event_attrs.get(name, _MISSING)), "raw"
        if prefix == "additionalCost":
            return (lambda ctx: ctx.add_costs.get(name, _MISSING)), "money"
        if prefix == "loyaltyPoints" and name.isdigit():
            pid = int(name)
            return (lambda ctx: ctx.active_points(pid)), "points"
    raise ValueError(
        f"{where}: unknown condition {key!r} (see docs/sandbox-campaigns.md for the list)"
    )


def _compile_ops(arg: dict[str, Any], where: str, unit: str) -> list[tuple[str, Any]]:
    if not arg:
        raise ValueError(f'{where}: give at least one comparison, e.g. {{">=": 50}}')
    checks = []
    for op, operand in arg.items():
        if op == "exists":
            checks.append((op, _bool(operand, f"{where}.exists")))
            continue
        if op not in _OPS:
            raise ValueError(
                f"{where}: unknown comparison {op!r} (use one of {', '.join([*_OPS, 'exists'])})"
            )
        if op in ("in", "notIn"):
            values = _list(operand, f"{where}.{op}")
            checks.append((op, frozenset(_convert(v, unit, f"{where}.{op}") for v in values)))
        else:
            checks.append((op, _convert(operand, unit, f"{where}.{op}")))
    return checks


def _convert(value: Any, unit: str, where: str) -> Any:
    if unit == "raw":
        return value
    number = _num(value, where)
    if unit == "money":
        return to_cents(number)
    if unit == "points":
        return to_hundredths(number)
    return number


def _parse_effect(
    cfg: Config, item: dict[str, Any], where: str, title: str, audience_ids: set[int]
) -> EffectSpec:
    etype = item.get("type")
    if etype not in EFFECT_TYPES:
        raise ValueError(
            f"{where}.type: unknown effect type {etype!r} (known: {', '.join(EFFECT_TYPES)})"
        )
    p: dict[str, Any] = {"name": _str(item.get("name", title), f"{where}.name")}
    if etype in ("setDiscount", "setDiscountPerItem", "setDiscountPerAdditionalCost"):
        has_pct, has_amt = "percent" in item, "amount" in item
        if has_pct == has_amt:
            raise ValueError(f"{where}: give exactly one of 'percent' or 'amount'")
        if has_pct:
            pct = _num(item["percent"], f"{where}.percent", minimum=0)
            if pct > 100:
                raise ValueError(f"{where}.percent: at most 100")
            p["basisPoints"] = round(pct * 100)
        else:
            p["amount"] = to_cents(_num(item["amount"], f"{where}.amount", minimum=0))
    if etype == "setDiscount":
        scope = item.get("scope", "cartItems")
        if scope not in ("cartItems", "sessionTotal", "additionalCosts"):
            raise ValueError(f"{where}.scope: expected cartItems, sessionTotal or additionalCosts")
        p["scope"] = scope
    elif etype == "setDiscountPerItem":
        _selector(item, where, p)
        p["perUnit"] = _bool(item.get("perUnit", False), f"{where}.perUnit")
    elif etype == "setDiscountPerAdditionalCost":
        p["additionalCost"] = _str(item.get("additionalCost"), f"{where}.additionalCost")
    elif etype == "addFreeItem":
        p["sku"] = _str(item.get("sku"), f"{where}.sku")
        if "desiredQuantity" in item:
            p["desiredQuantity"] = _int(
                item["desiredQuantity"], f"{where}.desiredQuantity", minimum=1
            )
    elif etype in ("addLoyaltyPoints", "deductLoyaltyPoints"):
        program = _program_ref(cfg, item, where)
        p["programId"] = program.id
        sub = _str(item.get("subledgerId", ""), f"{where}.subledgerId", empty=True)
        if sub and sub not in program.subledgers:
            raise ValueError(f"{where}.subledgerId: program {program.id} has no subledger {sub!r}")
        p["subledgerId"] = sub
        if etype == "deductLoyaltyPoints":
            p["points"] = to_hundredths(_num(item.get("points"), f"{where}.points", minimum=0))
        else:
            has_fixed, has_rate = "points" in item, "perCurrencyUnit" in item
            if has_fixed == has_rate:
                raise ValueError(f"{where}: give exactly one of 'points' or 'perCurrencyUnit'")
            if has_fixed:
                p["points"] = to_hundredths(_num(item["points"], f"{where}.points", minimum=0))
            else:
                p["rate"] = _num(item["perCurrencyUnit"], f"{where}.perCurrencyUnit", minimum=0)
                basis = item.get("basis", "cartItemTotal")
                if basis not in ("cartItemTotal", "discountedCartItemTotal", "sessionTotal"):
                    raise ValueError(
                        f"{where}.basis: expected cartItemTotal, discountedCartItemTotal "
                        "or sessionTotal"
                    )
                p["basis"] = basis
                _selector(item, where, p)
            rounding = item.get("rounding", "down")
            if rounding not in ("down", "none"):
                raise ValueError(f'{where}.rounding: expected "down" or "none"')
            p["rounding"] = rounding
    elif etype == "showNotification":
        p["notificationType"] = _str(
            item.get("notificationType", "info"), f"{where}.notificationType"
        )
        p["title"] = _str(item.get("title"), f"{where}.title")
        p["body"] = _str(item.get("body", ""), f"{where}.body", empty=True)
    elif etype == "customEffect":
        p["effectId"] = _int(item.get("effectId", 1), f"{where}.effectId", minimum=1)
        p["payload"] = _obj(item.get("payload", {}), f"{where}.payload")
    elif etype in ("addToAudience", "removeFromAudience"):
        aid = _int(item.get("audienceId"), f"{where}.audienceId", minimum=1)
        if aid not in audience_ids:
            raise ValueError(f"{where}.audienceId: no audience with id {aid} in 'audiences'")
        p["audienceId"] = aid
    elif etype == "awardGiveaway":
        pid = _int(item.get("poolId"), f"{where}.poolId", minimum=1)
        if pid not in cfg.pools:
            raise ValueError(f"{where}.poolId: no giveaway pool with id {pid} in 'giveawayPools'")
        p["poolId"] = pid
    elif etype == "createCoupon":
        p["prefix"] = _str(item.get("prefix", "GIFT-"), f"{where}.prefix")
        p["usageLimit"] = _int(item.get("usageLimit", 1), f"{where}.usageLimit", minimum=0)
        days = item.get("validDays")
        p["validDays"] = None if days is None else _int(days, f"{where}.validDays", minimum=1)
    return EffectSpec(etype, p)


def _selector(item: dict[str, Any], where: str, p: dict[str, Any]) -> None:
    p["skus"] = frozenset(_str_or_list(item["sku"], f"{where}.sku")) if "sku" in item else None
    p["categories"] = (
        frozenset(_str_or_list(item["category"], f"{where}.category"))
        if "category" in item
        else None
    )


def _program_ref(cfg: Config, item: dict[str, Any], where: str) -> Program:
    pid = _int(item.get("programId"), f"{where}.programId", minimum=1)
    program = cfg.programs.get(pid)
    if program is None:
        raise ValueError(
            f"{where}.programId: no loyalty program with id {pid} in 'loyaltyPrograms'"
        )
    return program


# -- JSON checkers --------------------------------------------------------------------------


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected an object, got {_kind(value)}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list, got {_kind(value)}")
    return value


def _str(value: Any, where: str, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value):
        raise ValueError(f"{where}: expected a non-empty string, got {_kind(value)}")
    return value


def _int(value: Any, where: str, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}: expected an integer, got {_kind(value)}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{where}: must be at least {minimum}, got {value}")
    return value


def _num(value: Any, where: str, *, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: expected a number, got {_kind(value)}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{where}: must be at least {minimum}, got {value}")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{where}: expected true or false, got {_kind(value)}")
    return value


def _time(value: Any, where: str) -> datetime.datetime:
    try:
        return parse_time(value)
    except (ValueError, TypeError):
        raise ValueError(f"{where}: expected an RFC 3339 time stamp, got {value!r}") from None


def _str_or_list(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        return [_str(value, where)]
    return [_str(v, f"{where}[{i}]") for i, v in enumerate(_list(value, where))]


def _int_or_list(value: Any, where: str) -> list[int]:
    if isinstance(value, list):
        return [_int(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return [_int(value, where)]


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {value}"
    if isinstance(value, (int, float)):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {value!r}" if value else "an empty string"
    if isinstance(value, list):
        return "a list"
    return "an object"
