"""Custom events: TrackEventV2 and the deprecated V1 TrackEvent.

An event runs the rules marked ``"on": "event"`` (usually with an ``eventType`` condition) and
counts event achievements. Unlike a session's, its effects take hold at once: points are active
(or pending, by the program's activation), audiences change, giveaways and coupons are handed out.
"""

from __future__ import annotations

from typing import Any

from . import achievements, rewards
from .engine import Context, evaluate
from .params import now_of, q_bool, q_silent, response_content
from .profiles import state_answer
from .values import fmt_time
from .views import EVENT_PARTS, event_view, loyalty_view, profile_view, session_view
from .wire import ApiError, Call


def track_event_v2(state: Any, call: Call) -> tuple[int, Any]:
    """TrackEventV2: record a custom event for a profile and run the event rules."""
    body = call.body if isinstance(call.body, dict) else {}
    silent = q_silent(call)
    dry = q_bool(call, "dry")
    if q_bool(call, "forceCompleteEvaluation") and not dry:
        raise ApiError.bad_parameter(
            "forceCompleteEvaluation", "forceCompleteEvaluation needs dry=true"
        )
    profile_id = body.get("profileId")
    if not isinstance(profile_id, str) or not profile_id:
        # required although the schema does not say so (behaviour.md)
        raise ApiError.bad_field("/profileId", "profileId is required")
    event_type = body.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise ApiError.bad_field("/type", "type is required")
    cards = body.get("loyaltyCards") or []
    if len(cards) > 1:
        raise ApiError.bad_field("/loyaltyCards", "Too many loyalty cards", "at most 1 card")
    parts = response_content(body, EVENT_PARTS)
    attributes = body.get("attributes") if isinstance(body.get("attributes"), dict) else {}
    evaluable = (
        set(body["evaluableCampaignIds"])
        if dry and body.get("evaluableCampaignIds") is not None
        else None
    )
    outcome, created, profile, event_id, now_s = _run(
        state, call, profile_id, event_type, attributes, cards, dry, evaluable
    )
    if silent:
        return 204, None
    return 200, state_answer(
        state,
        outcome,
        created,
        parts or {"customerProfile"},
        profile,
        now_s,
        event=(event_type, event_id, attributes),
        cards=cards,
    )


def track_event(state: Any, call: Call) -> tuple[int, Any]:
    """TrackEvent (V1, deprecated): like V2 for a session id; answers an IntegrationState."""
    body = call.body if isinstance(call.body, dict) else {}
    dry = q_bool(call, "dry")
    event_type = body.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise ApiError.bad_field("/type", "type is required")
    session_id = body.get("sessionId")
    if not isinstance(session_id, str) or not session_id:
        raise ApiError.bad_field("/sessionId", "sessionId is required")
    profile_id = body.get("profileId") or ""
    session = state.data["sessions"].get(session_id)
    if not profile_id and session is not None:
        profile_id = session["profileId"]
    attributes = body.get("attributes") if isinstance(body.get("attributes"), dict) else {}
    outcome, _created, profile, event_id, now_s = _run(
        state, call, profile_id, event_type, attributes, [], dry, None
    )
    answer: dict[str, Any] = {
        "event": event_view(
            state,
            event_id,
            now_s,
            event_type,
            attributes,
            outcome.effects,
            profile_id=profile_id or None,
            session_id=session_id,
            store=body.get("storeIntegrationId"),
        )
    }
    if profile is not None:
        answer["profile"] = profile_view(state, profile)
        answer["loyalty"] = loyalty_view(state, profile_id, now_s)
    if session is not None:
        answer["session"] = session_view(state, session)
    return 201, answer


def _run(
    state: Any,
    call: Call,
    profile_id: str,
    event_type: str,
    attributes: dict[str, Any],
    cards: list[str],
    dry: bool,
    evaluable: set[int] | None,
) -> tuple[Any, dict[str, list[Any]], dict[str, Any] | None, int, str]:
    now = now_of(call)
    now_s = fmt_time(now)
    profile = None
    if profile_id:
        profile = state.working_profile(profile_id, now_s, dry=dry)
        profile["lastActivity"] = now_s
    ctx = Context(
        state,
        now,
        now_s,
        "event",
        profile_id=profile_id,
        profile=profile,
        loyalty_cards=cards,
        event_type=event_type,
        event_attrs=attributes,
        evaluable=evaluable,
    )
    outcome = evaluate(ctx)
    if dry:
        created = rewards.preview(state, outcome)
    else:
        created = rewards.apply_now(state, outcome, profile, now_s, "rule")
    if profile is not None:
        progress = achievements.on_event(state, profile, event_type, now_s, dry=dry)
        outcome.effects.extend(progress)
        outcome.allocs.extend([None] * len(progress))
    event_id = state.peek_id("event") if dry else state.next_id("event")
    return outcome, created, profile, event_id, now_s
