"""Customer achievements: progress counted from closed sessions or events, and their endpoints.

Achievements are defined in the campaigns file (``achievements``). Progress grows when a session
of the profile closes (by 1, or by the cart's value) or when a matching event is tracked, while the
achievement's campaign is running; cancelling a closed session takes its progress back.
"""

from __future__ import annotations

import datetime
from typing import Any

from .campaigns import Achievement
from .params import now_of, q_int, q_list, q_time
from .state import find_profile
from .values import fmt_time, money
from .wire import ApiError, Call


def on_close(
    state: Any, profile: dict[str, Any], item_total: int, now_s: str, *, dry: bool
) -> list[dict[str, Any]]:
    """Progress of a profile's ``sessionClosed`` achievements; answers their effects."""
    return _progress(state, profile, now_s, dry, lambda a: a.on == "sessionClosed", item_total)


def on_event(
    state: Any, profile: dict[str, Any], event_type: str, now_s: str, *, dry: bool
) -> list[dict[str, Any]]:
    """Progress of a profile's achievements counted on events of ``event_type``."""
    return _progress(
        state, profile, now_s, dry, lambda a: a.on == "event" and a.event_type == event_type, 0
    )


def rollback_effect(state: Any, session: dict[str, Any], effect: dict[str, Any]) -> dict[str, Any]:
    """The ``rollbackIncreasedAchievementProgress`` effect undoing an increase."""
    props = effect["props"]
    profile = state.data["profiles"].get(session["profileId"]) or {"achievements": {}}
    entry = profile["achievements"].get(str(props["achievementId"]), {})
    current = entry.get("progress", props["value"])
    rolled = {k: effect[k] for k in ("campaignId", "rulesetId", "ruleIndex", "ruleName")}
    rolled["effectType"] = "rollbackIncreasedAchievementProgress"
    rolled["props"] = {
        "achievementId": props["achievementId"],
        "achievementName": props["achievementName"],
        "progressTrackerId": props.get("progressTrackerId", 0),
        "decreaseProgressBy": props["delta"],
        "currentProgress": max(0, current - props["delta"]),
        "target": props["target"],
    }
    return rolled


def apply_rollback(state: Any, session: dict[str, Any], effect: dict[str, Any], now_s: str) -> None:
    """Take back the progress a rollback effect describes."""
    profile = state.data["profiles"].get(session["profileId"])
    if profile is None:
        return
    props = effect["props"]
    entry = profile["achievements"].get(str(props["achievementId"]))
    if entry is None:
        return
    entry["progress"] = max(0, entry["progress"] - props["decreaseProgressBy"])
    if entry["status"] == "completed" and entry["progress"] < props["target"]:
        entry["status"] = "inprogress"
        entry["completionDate"] = None


def get_customer_achievements(state: Any, call: Call) -> tuple[int, Any]:
    """GetCustomerAchievements: the achievements available to a profile, with its progress."""
    profile = _profile(state, call)
    campaign_ids = _ints(call, "campaignIds")
    achievement_ids = _ints(call, "achievementIds")
    statuses = set(q_list(call, "achievementStatus") or ["active"])
    progress_statuses = set(q_list(call, "currentProgressStatus") or [])
    page_size = q_int(call, "pageSize", 1000, minimum=1, maximum=1000)
    skip = q_int(call, "skip", 0, minimum=0)
    now = now_of(call)
    rows = []
    for ach in state.config.achievements.values():
        campaign = state.config.campaigns_by_id[ach.campaign_id]
        status = (
            "active"
            if campaign.running(now)
            else ("scheduled" if campaign.frontend_state(now) == "scheduled" else "inactive")
        )
        if campaign_ids is not None and ach.campaign_id not in campaign_ids:
            continue
        if achievement_ids is not None and ach.id not in achievement_ids:
            continue
        if status not in statuses:
            continue
        progress = _progress_view(profile, ach)
        if progress_statuses and progress["status"] not in progress_statuses:
            continue
        rows.append(
            {
                "id": ach.id,
                "created": state.loaded_at,
                "name": ach.name,
                "title": ach.title,
                "description": ach.description,
                "target": ach.target,
                "recurrencePolicy": "no_recurrence",
                "activationPolicy": "user_action",
                "allowRollbackAfterCompletion": True,
                "campaignId": ach.campaign_id,
                "status": status,
                "currentProgress": progress,
            }
        )
    return 200, {"totalResultSize": len(rows), "data": rows[skip : skip + page_size]}


def get_customer_achievement_history(state: Any, call: Call) -> tuple[int, Any]:
    """GetCustomerAchievementHistory: a profile's progress rounds in one achievement."""
    profile = _profile(state, call)
    ach = state.config.achievements.get(call.path["achievementId"])
    if ach is None:
        raise ApiError.not_found(f"achievement {call.path['achievementId']}")
    wanted = set(q_list(call, "progressStatus") or [])
    start = q_time(call, "startDate")
    end = q_time(call, "endDate")
    page_size = q_int(call, "pageSize", 1000, minimum=1, maximum=1000)
    skip = q_int(call, "skip", 0, minimum=0)
    rows = []
    entry = profile["achievements"].get(str(ach.id))
    if entry is not None:
        row = _progress_view(profile, ach)
        began = row.get("startDate")
        if (
            (not wanted or row["status"] in wanted)
            and (start is None or (began and began >= fmt_time(start)))
            and (end is None or (began and began <= fmt_time(end)))
        ):
            rows.append(row)
    return 200, {"totalResultSize": len(rows), "data": rows[skip : skip + page_size]}


def inventory(state: Any, profile: dict[str, Any]) -> list[dict[str, Any]]:
    """The profile's achievements as GetCustomerInventory lists them."""
    rows = []
    for ach in state.config.achievements.values():
        progress = _progress_view(profile, ach)
        row = {
            "status": progress["status"],
            "progress": progress["progress"],
            "achievementId": ach.id,
            "name": ach.name,
            "title": ach.title,
            "description": ach.description,
            "campaignId": ach.campaign_id,
            "target": ach.target,
            "achievementRecurrencePolicy": "no_recurrence",
            "achievementActivationPolicy": "user_action",
            "achievementAllowRollbackAfterCompletion": True,
        }
        for key in ("startDate", "completionDate"):
            if progress.get(key):
                row[key] = progress[key]
        rows.append(row)
    return rows


# -- helpers --------------------------------------------------------------------------------


def _progress(
    state: Any, profile: dict[str, Any], now_s: str, dry: bool, matches: Any, item_total: int
) -> list[dict[str, Any]]:
    if not state.config.achievements:
        return []
    now = datetime.datetime.fromisoformat(now_s[:-1] + "+00:00")
    effects = []
    for ach in state.config.achievements.values():
        if not matches(ach):
            continue
        campaign = state.config.campaigns_by_id[ach.campaign_id]
        if not campaign.running(now):
            continue
        entry = profile["achievements"].get(str(ach.id))
        if entry is not None and entry["status"] == "completed":
            continue  # no recurrence: a completed achievement stays completed
        delta: float = 1 if ach.measure == "count" else money(item_total)
        if delta <= 0:
            continue
        before = entry["progress"] if entry is not None else 0
        value = before + delta
        done = value >= ach.target
        tracker = (
            entry["trackerId"]
            if entry is not None
            else (
                state.peek_id("achievementTracker") if dry else state.next_id("achievementTracker")
            )
        )
        if not dry:
            if entry is None:
                entry = profile["achievements"][str(ach.id)] = {
                    "trackerId": tracker,
                    "progress": 0,
                    "status": "inprogress",
                    "startDate": now_s,
                    "completionDate": None,
                }
            entry["progress"] = value
            if done:
                entry["status"] = "completed"
                entry["completionDate"] = now_s
        effects.append(
            {
                "campaignId": campaign.id,
                "rulesetId": campaign.ruleset_id,
                "ruleIndex": 0,
                "ruleName": f"Achievement: {ach.title}",
                "effectType": "increaseAchievementProgress",
                "props": {
                    "achievementId": ach.id,
                    "achievementName": ach.name,
                    "progressTrackerId": tracker,
                    "delta": delta,
                    "value": value,
                    "target": ach.target,
                    "isJustCompleted": done,
                },
            }
        )
    return effects


def _progress_view(profile: dict[str, Any], ach: Achievement) -> dict[str, Any]:
    entry = profile["achievements"].get(str(ach.id))
    if entry is None:
        return {"status": "not_started", "progress": 0}
    view = {
        "status": entry["status"],
        "progress": entry["progress"],
        "startDate": entry["startDate"],
    }
    if entry["completionDate"]:
        view["completionDate"] = entry["completionDate"]
    return view


def _profile(state: Any, call: Call) -> dict[str, Any]:
    integration_id = call.path["integrationId"]
    profile = find_profile(state, integration_id)
    return profile


def _ints(call: Call, name: str) -> set[int] | None:
    values = q_list(call, name)
    if values is None:
        return None
    try:
        return {int(v) for v in values}
    except ValueError:
        raise ApiError.bad_parameter(name, f"{name} must be a list of integer ids") from None
