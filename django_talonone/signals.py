"""Signals a shop sends to tell django-talonone about its orders, and the ones the app sends back.

The shop sends the first group from its own code (or lets model-signal mode send them, see
:mod:`django_talonone.model_signals`). Sending one inside the shop's transaction is what you want:
the push it causes is recorded in that transaction and only goes out once it commits.

The app sends the second group after a database commit, so a receiver always reads mirrored rows
that are already visible to other connections.

Every signal is sent with keyword arguments only; the names below are part of the public API.
"""

from __future__ import annotations

from django.dispatch import Signal

__all__ = [
    "APP_SIGNALS",
    "SHOP_SIGNALS",
    "cart_updated",
    "customer_deleted",
    "customer_updated",
    "effects_updated",
    "event_tracked",
    "loyalty_updated",
    "order_cancelled",
    "order_paid",
    "order_placed",
    "order_reopened",
    "order_returned",
    "push_failed",
]

# --- sent by the shop -------------------------------------------------------------------------

#: The cart changed (lines, quantities, coupon codes, shipping, customer).
#: ``sender``: the shop's cart class; ``cart``: the cart or order object.
#: Pushes the session with its state left as it is (a new session starts ``open``).
cart_updated = Signal()

#: An order was placed (checkout finished, payment not yet taken).
#: ``order``: the order object. Pushes the order's cart to its (still open) session.
order_placed = Signal()

#: The order was paid: its session is closed, coupons are redeemed, loyalty points persist.
#: ``order``: the order object.
order_paid = Signal()

#: The order was cancelled: its session is cancelled and Talon.One rolls its effects back.
#: ``order``: the order object.
order_cancelled = Signal()

#: Some or all of a paid order's items came back.
#: ``order``: the order object; ``lines``: the shop's returned lines, read by
#: :meth:`ShopAdapter.returned_items <django_talonone.adapters.ShopAdapter.returned_items>`
#: (``None`` = everything still unreturned); ``return_id``: optional, a stable id of this return
#: (sent as the Idempotency-Key; default from :meth:`ShopAdapter.return_id`).
order_returned = Signal()

#: A closed order was reopened for editing; Talon.One rolls back what closing it did once it is
#: closed again. ``order``: the order object.
order_reopened = Signal()

#: A customer's data changed (or they signed up). ``user``: the shop's user object.
customer_updated = Signal()

#: A customer asked to be forgotten: their Talon.One data is deleted and the local mirror purged.
#: ``user``: the shop's user object, or ``integration_id``: the profile's integration id (str).
customer_deleted = Signal()

#: A custom event happened (Talon.One TrackEventV2).
#: ``event_type``: the event's type (str); ``profile_id``: the customer's integration id (str);
#: ``attributes``: the event's attributes (dict); ``session_id``: a session integration id or None.
event_tracked = Signal()

# --- sent by the app --------------------------------------------------------------------------

#: A session's effects were mirrored from a Talon.One answer (after commit).
#: ``sender``: :class:`~django_talonone.models.CustomerSession`;
#: ``session``: the CustomerSession; ``effects``: list of its current
#: :class:`~django_talonone.models.Effect` rows (the complete set; may be empty).
effects_updated = Signal()

#: A customer's loyalty balances were mirrored (after commit).
#: ``sender``: :class:`~django_talonone.models.CustomerProfile`; ``profile``: the CustomerProfile.
loyalty_updated = Signal()

#: A push failed permanently or was dead-lettered after its last retry.
#: ``sender``: :class:`~django_talonone.models.Push`; ``push``: the Push row.
push_failed = Signal()

#: The signals a shop sends, by name.
SHOP_SIGNALS: dict[str, Signal] = {
    "cart_updated": cart_updated,
    "order_placed": order_placed,
    "order_paid": order_paid,
    "order_cancelled": order_cancelled,
    "order_returned": order_returned,
    "order_reopened": order_reopened,
    "customer_updated": customer_updated,
    "customer_deleted": customer_deleted,
    "event_tracked": event_tracked,
}

#: The signals the app sends, by name.
APP_SIGNALS: dict[str, Signal] = {
    "effects_updated": effects_updated,
    "loyalty_updated": loyalty_updated,
    "push_failed": push_failed,
}
