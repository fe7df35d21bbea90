"""Audiences: create, rename, delete, empty, and set attributes on all their members."""

from __future__ import annotations

from typing import Any

from .params import now_of
from .state import leave_audience
from .values import clone, fmt_time
from .views import audience_view
from .wire import ApiError, Call


def create_audience_v2(state: Any, call: Call) -> tuple[int, Any]:
    """CreateAudienceV2: a new audience (409 if a 3rd-party audience with this id exists)."""
    body = call.body if isinstance(call.body, dict) else {}
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise ApiError.bad_field("/name", "name is required")
    integration = body.get("integration")
    integration_id = body.get("integrationId")
    if integration_id:
        for other in state.data["audiences"].values():
            if (
                other.get("integrationId") == integration_id
                and other.get("integration") == integration
            ):
                raise ApiError(
                    409,
                    f"an audience with integrationId {integration_id!r} already exists",
                    [{"title": "Audience already exists", "source": {"pointer": "/integrationId"}}],
                )
    now_s = fmt_time(now_of(call))
    audience = {
        "id": state.next_id("audience"),
        "created": now_s,
        "name": name,
        "description": body.get("description", ""),
        "integration": integration,
        "integrationId": integration_id,
        "lastUpdate": body.get("lastUpdate"),
        "members": [],
    }
    state.data["audiences"][str(audience["id"])] = audience
    return 201, audience_view(state, audience)


def update_audience_v2(state: Any, call: Call) -> tuple[int, Any]:
    """UpdateAudienceV2: rename an audience."""
    audience = _audience(state, call)
    body = call.body if isinstance(call.body, dict) else {}
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise ApiError.bad_field("/name", "name is required")
    audience["name"] = name
    audience["lastUpdate"] = fmt_time(now_of(call))
    return 200, audience_view(state, audience)


def delete_audience_v2(state: Any, call: Call) -> tuple[int, Any]:
    """DeleteAudienceV2: delete an audience and its memberships."""
    audience = _audience(state, call)
    _empty(state, audience)
    del state.data["audiences"][str(audience["id"])]
    return 204, None


def delete_audience_memberships_v2(state: Any, call: Call) -> tuple[int, Any]:
    """DeleteAudienceMembershipsV2: remove every profile from an audience."""
    audience = _audience(state, call)
    _empty(state, audience)
    audience["lastUpdate"] = fmt_time(now_of(call))
    return 204, None


def update_audience_customers_attributes(state: Any, call: Call) -> tuple[int, Any]:
    """UpdateAudienceCustomersAttributes: set attributes on every member of an audience."""
    audience = _audience(state, call)
    if not isinstance(call.body, dict):
        raise ApiError.bad_field("", "the body must be an object of attributes")
    now_s = fmt_time(now_of(call))
    for integration_id in audience["members"]:
        profile = state.data["profiles"].get(integration_id)
        if profile is not None:
            profile["attributes"].update(clone(call.body))
            profile["lastActivity"] = now_s
    return 204, None


def _audience(state: Any, call: Call) -> dict[str, Any]:
    audience = state.data["audiences"].get(str(call.path["audienceId"]))
    if audience is None:
        raise ApiError.not_found(f"audience {call.path['audienceId']}")
    return audience


def _empty(state: Any, audience: dict[str, Any]) -> None:
    for integration_id in list(audience["members"]):
        profile = state.data["profiles"].get(integration_id)
        if profile is not None:
            leave_audience(state, profile, audience["id"])
    audience["members"] = []
