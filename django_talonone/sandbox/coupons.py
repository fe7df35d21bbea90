"""Coupon reservations and referral codes.

Coupons come from the campaigns file (and ``createCoupon`` rules); the API reserves them for
profiles. Referral codes come from the file or are created here for an advocate.
"""

from __future__ import annotations

from typing import Any

from .params import now_of, q_silent
from .values import clone, fmt_time, parse_time
from .views import coupon_view, profile_view, referral_view
from .wire import ApiError, Call


def create_coupon_reservation(state: Any, call: Call) -> tuple[int, Any]:
    """CreateCouponReservation: reserve a coupon for profiles (created when new)."""
    coupon = _coupon(state, call)
    ids = _integration_ids(call)
    now_s = fmt_time(now_of(call))
    for integration_id in ids:
        state.ensure_profile(integration_id, now_s)
        if integration_id not in coupon["reservedBy"]:
            coupon["reservedBy"].append(integration_id)
    return 201, coupon_view(coupon)


def delete_coupon_reservation(state: Any, call: Call) -> tuple[int, Any]:
    """DeleteCouponReservation: drop the reservations of the given profiles."""
    coupon = _coupon(state, call)
    ids = set(_integration_ids(call))
    coupon["reservedBy"] = [i for i in coupon["reservedBy"] if i not in ids]
    return 204, None


def get_reserved_customers(state: Any, call: Call) -> tuple[int, Any]:
    """GetReservedCustomers: the profiles that reserved a coupon."""
    coupon = _coupon(state, call)
    profiles = [
        state.data["profiles"][i] for i in coupon["reservedBy"] if i in state.data["profiles"]
    ]
    return 200, {
        "totalResultSize": len(profiles),
        "data": [profile_view(state, p) for p in profiles],
    }


def create_referral(state: Any, call: Call) -> tuple[int, Any]:
    """CreateReferral: a new referral code of a campaign for an advocate."""
    body = call.body if isinstance(call.body, dict) else {}
    spec = _referral_spec(state, body)
    advocate = body.get("advocateProfileIntegrationId")
    if not isinstance(advocate, str) or not advocate:
        raise ApiError.bad_field(
            "/advocateProfileIntegrationId", "advocateProfileIntegrationId is required"
        )
    friend = body.get("friendProfileIntegrationId")
    if friend is not None and friend == advocate:
        raise ApiError.bad_field("/friendProfileIntegrationId", "The friend cannot be the advocate")
    now_s = fmt_time(now_of(call))
    referral = _new_referral(state, spec, advocate, friend, now_s, None, None)
    return 201, referral_view(referral)


def create_referrals_for_multiple_advocates(state: Any, call: Call) -> tuple[int, Any]:
    """CreateReferralsForMultipleAdvocates: one referral code per advocate."""
    body = call.body if isinstance(call.body, dict) else {}
    silent = q_silent(call)
    spec = _referral_spec(state, body)
    advocates = body.get("advocateProfileIntegrationIds")
    if not isinstance(advocates, list) or not advocates:
        raise ApiError.bad_field(
            "/advocateProfileIntegrationIds",
            "advocateProfileIntegrationIds must be a non-empty list",
        )
    if len(advocates) > 1000:
        raise ApiError.bad_field(
            "/advocateProfileIntegrationIds", "Too many advocates", "at most 1000"
        )
    for index, advocate in enumerate(advocates):
        if not isinstance(advocate, str) or not advocate:
            raise ApiError.bad_field(
                f"/advocateProfileIntegrationIds/{index}", "an advocate id must not be empty"
            )
    pattern = body.get("referralPattern")
    chars = body.get("validCharacters")
    if pattern is not None and (not isinstance(pattern, str) or "#" not in pattern):
        raise ApiError.bad_field("/referralPattern", 'referralPattern needs at least one "#"')
    if chars is not None and (
        not isinstance(chars, list) or not chars or not all(isinstance(c, str) and c for c in chars)
    ):
        raise ApiError.bad_field(
            "/validCharacters", "validCharacters must be a non-empty list of characters"
        )
    now_s = fmt_time(now_of(call))
    created = [
        referral_view(_new_referral(state, spec, advocate, None, now_s, pattern, chars))
        for advocate in advocates
    ]
    if silent:
        return 204, None
    return 201, {"totalResultSize": len(created), "data": created}


# -- helpers --------------------------------------------------------------------------------


def _coupon(state: Any, call: Call) -> dict[str, Any]:
    value = call.path["couponValue"]
    coupon = state.data["coupons"].get(value)
    if coupon is None:
        raise ApiError.not_found(f"coupon {value!r}")
    return coupon


def _integration_ids(call: Call) -> list[str]:
    body = call.body if isinstance(call.body, dict) else {}
    ids = body.get("integrationIDs")
    if not isinstance(ids, list) or not ids:
        raise ApiError.bad_field("/integrationIDs", "integrationIDs must be a non-empty list")
    for index, value in enumerate(ids):
        if not isinstance(value, str) or not value:
            raise ApiError.bad_field(
                f"/integrationIDs/{index}", "an integration id must not be empty"
            )
    return list(dict.fromkeys(ids))


def _referral_spec(state: Any, body: dict[str, Any]) -> dict[str, Any]:
    campaign_id = body.get("campaignId")
    campaign = (
        state.config.campaigns_by_id.get(campaign_id) if isinstance(campaign_id, int) else None
    )
    if campaign is None:
        raise ApiError.bad_field(
            "/campaignId", "No such campaign", f"campaign {campaign_id!r} does not exist"
        )
    spec: dict[str, Any] = {"campaign": campaign}
    for key in ("startDate", "expiryDate"):
        value = body.get(key)
        if value is None:
            spec[key] = None
            continue
        try:
            spec[key] = fmt_time(parse_time(value))
        except (ValueError, TypeError):
            raise ApiError.bad_field(f"/{key}", f"{key} must be an RFC 3339 time stamp") from None
    limit = body.get("usageLimit", 0)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ApiError.bad_field("/usageLimit", "usageLimit must be an integer of at least 0")
    spec["usageLimit"] = limit
    attributes = body.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise ApiError.bad_field("/attributes", "attributes must be an object")
    spec["attributes"] = attributes
    return spec


def _new_referral(
    state: Any,
    spec: dict[str, Any],
    advocate: str,
    friend: str | None,
    now_s: str,
    pattern: str | None,
    chars: list[str] | None,
) -> dict[str, Any]:
    state.ensure_profile(advocate, now_s)
    referral_id = state.next_id("referral")
    code = _code(state, spec["campaign"].referral_prefix, referral_id, pattern, chars)
    referral = {
        "id": referral_id,
        "created": now_s,
        "campaignId": spec["campaign"].id,
        "code": code,
        "advocateProfileIntegrationId": advocate,
        "friendProfileIntegrationId": friend,
        "usageLimit": spec["usageLimit"],
        "usageCounter": 0,
        "startDate": spec["startDate"],
        "expiryDate": spec["expiryDate"],
        "attributes": clone(spec["attributes"]),
        "referredCustomers": [],
    }
    state.data["referrals"][code] = referral
    return referral


def _code(
    state: Any, prefix: str, number: int, pattern: str | None, chars: list[str] | None
) -> str:
    """A unique, repeatable referral code: the prefix and a number, or the caller's pattern."""
    attempt = 0
    while True:
        if pattern is None:
            code = f"{prefix}{number:06d}" + (f"-{attempt}" if attempt else "")
        else:
            alphabet = chars or list("ABCDEFGHJKLMNPQRSTUVWXYZ23456789")
            seed = number * 7919 + attempt * 104729
            out = []
            for ch in pattern:
                if ch == "#":
                    out.append(alphabet[seed % len(alphabet)])
                    seed = seed // len(alphabet) + 31 * (len(out) + 1)
                else:
                    out.append(ch)
            code = "".join(out)
        if code not in state.data["referrals"]:
            return code
        attempt += 1
        if attempt > 1000:  # the pattern has too few "#" for this many codes: make room
            pattern = None if pattern is None else pattern + "#"
