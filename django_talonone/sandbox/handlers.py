"""The sandbox's domain entry point: answer one decoded API call against the state.

The HTTP layer routes a request to an operation, checks the API key and the body's shape, holds
``state.lock`` and calls :func:`handle`; each operation of the reference has one handler here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import (
    achievements,
    audiences,
    catalogs,
    coupons,
    events,
    loyalty,
    profiles,
    returns,
    sessions,
)
from .state import State
from .wire import ApiError, Call

Handler = Callable[[State, Call], "tuple[int, Any]"]

#: operation name (as in client.schema.OPERATIONS) -> handler
HANDLERS: dict[str, Handler] = {
    "activate_loyalty_points": loyalty.activate_loyalty_points,
    "best_prior_price": catalogs.best_prior_price,
    "create_audience_v2": audiences.create_audience_v2,
    "create_coupon_reservation": coupons.create_coupon_reservation,
    "create_referral": coupons.create_referral,
    "create_referrals_for_multiple_advocates": coupons.create_referrals_for_multiple_advocates,
    "delete_audience_memberships_v2": audiences.delete_audience_memberships_v2,
    "delete_audience_v2": audiences.delete_audience_v2,
    "delete_coupon_reservation": coupons.delete_coupon_reservation,
    "delete_customer_data": profiles.delete_customer_data,
    "delete_loyalty_transactions_from_ledgers": loyalty.delete_loyalty_transactions_from_ledgers,
    "generate_loyalty_card": loyalty.generate_loyalty_card,
    "get_customer_achievement_history": achievements.get_customer_achievement_history,
    "get_customer_achievements": achievements.get_customer_achievements,
    "get_customer_inventory": profiles.get_customer_inventory,
    "get_customer_session": sessions.get_customer_session,
    "get_loyalty_balances": loyalty.get_loyalty_balances,
    "get_loyalty_card_balances": loyalty.get_loyalty_card_balances,
    "get_loyalty_card_points": loyalty.get_loyalty_card_points,
    "get_loyalty_card_transactions": loyalty.get_loyalty_card_transactions,
    "get_loyalty_program_profile_points": loyalty.get_loyalty_program_profile_points,
    "get_loyalty_program_profile_transactions": loyalty.get_loyalty_program_profile_transactions,
    "get_reserved_customers": coupons.get_reserved_customers,
    "link_loyalty_card_to_profile": loyalty.link_loyalty_card_to_profile,
    "reopen_customer_session": sessions.reopen_customer_session,
    "return_cart_items": returns.return_cart_items,
    "sync_catalog": catalogs.sync_catalog,
    "track_event": events.track_event,
    "track_event_v2": events.track_event_v2,
    "unlink_loyalty_card_from_profile": loyalty.unlink_loyalty_card_from_profile,
    "update_audience_customers_attributes": audiences.update_audience_customers_attributes,
    "update_audience_v2": audiences.update_audience_v2,
    "update_customer_profile_audiences": profiles.update_customer_profile_audiences,
    "update_customer_profile_v2": profiles.update_customer_profile_v2,
    "update_customer_profiles_v2": profiles.update_customer_profiles_v2,
    "update_customer_session_v2": sessions.update_customer_session_v2,
}


def handle(state: State, call: Call) -> tuple[int, Any]:
    """Answer ``call``: ``(status, JSON body)``, the body None for 204; raises ApiError (400,
    404, 409) for answers in the API's error envelope."""
    handler = HANDLERS.get(call.name)
    if handler is None:
        raise ApiError(404, f"operation {call.name!r} is not served by the sandbox")
    return handler(state, call)
