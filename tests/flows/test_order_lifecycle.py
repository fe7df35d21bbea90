"""An order's life against the sandbox: cart, paid, cancelled, returned, reopened.

Each step is what a shop does (change the order, send the signal, commit) and each check is what
the shop then relies on: the mirrored session, its effects and loyalty balances, the signals the
app sends, and what Talon.One itself now says.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from django_talonone import signals
from django_talonone.effects import read_effects
from django_talonone.models import (
    CartItem,
    CustomerProfile,
    CustomerSession,
    Effect,
    LoyaltyBalance,
)
from tests.flows.conftest import (
    DEMO_CUSTOMER,
    DEMO_POINTS,
    SEEDED_POINTS,
    active_points,
    key_of,
    make_order,
    pay,
    sent,
    session_id,
    shop_sends,
)
from tests.shop.models import Order

pytestmark = pytest.mark.django_db(transaction=True)


def mirrored(order: Order) -> CustomerSession:
    return CustomerSession.objects.get(integration_id=session_id(order))


def current(order: Order) -> list[Effect]:
    return list(mirrored(order).effects.filter(is_current=True).order_by("id"))


def history(order: Order) -> list[Effect]:
    return list(mirrored(order).effects.filter(is_current=False).order_by("id"))


def balance() -> LoyaltyBalance:
    """The mirrored main ledger of program 1 for demo-customer."""
    return LoyaltyBalance.objects.get(
        profile__integration_id=DEMO_CUSTOMER, program_id=1, subledger_id=""
    )


def types(effects: list[Effect]) -> list[str]:
    return [effect.effect_type for effect in effects]


def test_a_cart_becomes_an_open_session_with_its_effects(sandbox, customer, received):
    order = make_order(customer)
    shop_sends(signals.cart_updated, order)

    session = mirrored(order)
    assert session.state == "open"
    assert session.order == order
    assert session.profile.integration_id == DEMO_CUSTOMER
    assert session.coupon_codes == ["WELCOME10"]
    assert [(i.position, i.sku, i.quantity, i.price) for i in session.cart_items.all()] == [
        (0, "SKU-TSHIRT", 2, Decimal(20)),
        (1, "SKU-SNEAKER", 1, Decimal(80)),
        (2, "SKU-SOCKS", 3, Decimal(5)),
        (3, "SKU-CAP", 1, Decimal(15)),
        (4, "SKU-MUG", 1, Decimal(12)),
    ]
    effects = current(order)
    assert types(effects) == [
        "setDiscountPerItem",
        "acceptCoupon",
        "setDiscount",
        "showNotification",
        "addLoyaltyPoints",
        "addFreeItem",
        "setDiscountPerAdditionalCost",
        "customEffect",
        "willAwardGiveaway",
    ]
    # What the cart page shows, read from the mirror.
    read = read_effects(effects)
    assert read.line_discounts == {1: Decimal(16)}
    assert read.cart_discount_total == Decimal("14.6")
    assert read.additional_cost_discounts == {"shipping": Decimal("4.95")}
    assert [c.code for c in read.accepted_coupons] == ["WELCOME10"]
    assert read.points_earned(1) == DEMO_POINTS
    assert [n.title for n in read.notifications] == ["Welcome!"]
    assert session.discount_total == Decimal("35.55")
    # The coupon's discount and notification know which code brought them.
    assert {e.effect_type: e.coupon_code for e in effects if e.coupon_code} == {
        "acceptCoupon": "WELCOME10",
        "setDiscount": "WELCOME10",
        "showNotification": "WELCOME10",
    }
    # The points are pending while the session is open.
    assert (balance().active_points, balance().pending_points) == (SEEDED_POINTS, DEMO_POINTS)
    assert active_points(sandbox) == SEEDED_POINTS

    # effects_updated came after the commit, with the session and its complete current set.
    (update,) = received.of("effects_updated")
    assert update["in_transaction"] is False
    assert update["sender"] is CustomerSession
    assert update["session"] == session
    assert [e.pk for e in update["effects"]] == [e.pk for e in effects]
    (loyalty,) = received.of("loyalty_updated")
    assert loyalty["profile"] == CustomerProfile.objects.get(integration_id=DEMO_CUSTOMER)
    assert loyalty["in_transaction"] is False
    assert received.of("push_failed") == []


def test_paying_closes_the_session_and_makes_the_points_active(sandbox, customer, received):
    order = make_order(customer)
    shop_sends(signals.cart_updated, order)
    open_effects = current(order)
    received.clear()

    shop_sends(signals.order_paid, order, status=Order.Status.PAID)

    session = mirrored(order)
    assert session.state == "closed"
    (close,) = sent(sandbox, "update_customer_session_v2", key_of(order))[1:]
    assert close["body"]["customerSession"]["state"] == "closed"
    # Active in Talon.One, and in the mirror (read back with GetLoyaltyBalances).
    assert active_points(sandbox) == SEEDED_POINTS + DEMO_POINTS
    assert (balance().active_points, balance().pending_points) == (
        SEEDED_POINTS + DEMO_POINTS,
        Decimal(0),
    )
    assert sent(sandbox, "get_loyalty_balances")[-1]["path"].endswith(
        "/v1/loyalty_programs/1/profile/demo-customer/balances"
    )
    # The closed session's effects are current; the open session's are kept as history.
    closed_effects = current(order)
    assert "awardGiveaway" in types(closed_effects)
    assert "willAwardGiveaway" not in types(closed_effects)
    assert [e.pk for e in history(order)] == [e.pk for e in open_effects]

    (update,) = received.of("effects_updated")
    assert update["session"] == session and update["in_transaction"] is False
    assert [e.pk for e in update["effects"]] == [e.pk for e in closed_effects]
    profiles = {call["profile"].integration_id for call in received.of("loyalty_updated")}
    assert profiles == {DEMO_CUSTOMER}
    assert all(call["in_transaction"] is False for call in received.of("loyalty_updated"))
    (refreshed,) = {call["profile"].pk for call in received.of("loyalty_updated")}
    assert refreshed == balance().profile_id


def test_cancelling_a_paid_order_rolls_its_points_and_coupon_back(sandbox, customer, received):
    welcomed = make_order(customer)
    pay(welcomed)
    paid_effects = current(welcomed)
    other = make_order(customer, coupon_code="")
    pay(other)
    other_effects = current(other)
    assert active_points(sandbox) == SEEDED_POINTS + 2 * DEMO_POINTS
    # WELCOME10 is once per customer: a new cart cannot have it while the first order stands.
    again = make_order(customer)
    shop_sends(signals.cart_updated, again)
    (rejected,) = [e for e in current(again) if e.effect_type == "rejectCoupon"]
    assert (rejected.coupon_code, rejected.props["rejectionReason"]) == (
        "WELCOME10",
        "ProfileLimitReached",
    )
    received.clear()

    shop_sends(signals.order_cancelled, welcomed, status=Order.Status.CANCELLED)

    assert mirrored(welcomed).state == "cancelled"
    assert active_points(sandbox) == SEEDED_POINTS + DEMO_POINTS
    assert balance().active_points == SEEDED_POINTS + DEMO_POINTS
    # The rollbacks are the current effects; what the paid order got is kept as history.
    rollbacks = current(welcomed)
    assert all(t.startswith("rollback") for t in types(rollbacks))
    (points,) = [e for e in rollbacks if e.effect_type == "rollbackAddedLoyaltyPoints"]
    assert Decimal(str(points.props["value"])) == DEMO_POINTS
    assert [e.coupon_code for e in rollbacks if e.effect_type == "rollbackCoupon"] == ["WELCOME10"]
    assert [e.pk for e in history(welcomed)][-len(paid_effects) :] == [e.pk for e in paid_effects]
    assert mirrored(welcomed).discount_total == Decimal(0)
    # The other order is untouched.
    assert mirrored(other).state == "closed"
    assert [e.pk for e in current(other)] == [e.pk for e in other_effects]
    (update,) = received.of("effects_updated")
    assert update["session"] == mirrored(welcomed) and update["in_transaction"] is False
    assert [e.pk for e in update["effects"]] == [e.pk for e in rollbacks]
    assert received.of("loyalty_updated")

    # The coupon is usable again now that its order is cancelled.
    shop_sends(signals.cart_updated, again)
    assert [e.coupon_code for e in current(again) if e.effect_type == "acceptCoupon"] == [
        "WELCOME10"
    ]


def test_a_returned_line_rolls_back_its_points_once(sandbox, customer, received):
    order = make_order(customer)
    pay(order)
    sneakers = order.lines.get(sku="SKU-SNEAKER")
    received.clear()

    shop_sends(signals.order_returned, order, lines=[sneakers], return_id="RMA-1")

    session = mirrored(order)
    assert session.state == "partially_returned"
    returned = CartItem.objects.get(session=session, position=1)
    assert (returned.sku, returned.returned_quantity, returned.remaining_quantity) == (
        "SKU-SNEAKER",
        1,
        0,
    )
    assert CartItem.objects.filter(session=session, returned_quantity__gt=0).count() == 1
    # 1 point per EUR: the sneakers' 80 points go, the rest of the order's stay.
    assert active_points(sandbox) == SEEDED_POINTS + DEMO_POINTS - 80
    assert balance().active_points == SEEDED_POINTS + DEMO_POINTS - 80
    # The return's rollbacks are history; the current set is what the session still has.
    (rollback,) = [e for e in history(order) if e.effect_type == "rollbackAddedLoyaltyPoints"]
    assert (rollback.position, Decimal(str(rollback.props["value"]))) == (1, Decimal(80))
    assert not [e for e in current(order) if e.effect_type.startswith("rollback")]
    with sandbox.client() as client:
        netted = client.get_customer_session(session_id(order))["effects"]
    assert [e.raw for e in current(order)] == netted
    (request,) = sent(sandbox, "return_cart_items", key_of(order))
    assert request["headers"]["idempotency-key"] == "RMA-1"
    assert request["body"]["return"]["returnedCartItems"] == [
        {"position": 1, "quantity": 1, "sku": "SKU-SNEAKER"}
    ]
    (update,) = received.of("effects_updated")
    assert update["session"] == session and update["in_transaction"] is False

    # The same return signalled again (a double click, a replayed webhook) counts once.
    shop_sends(signals.order_returned, order, lines=[sneakers], return_id="RMA-1")
    assert [r["status"] for r in sent(sandbox, "return_cart_items")] == [200, 200]
    assert active_points(sandbox) == SEEDED_POINTS + DEMO_POINTS - 80
    assert balance().active_points == SEEDED_POINTS + DEMO_POINTS - 80
    assert [e.pk for e in history(order) if e.effect_type == "rollbackAddedLoyaltyPoints"] == [
        rollback.pk
    ]


def test_a_reopened_order_is_open_again_and_its_points_count_once(sandbox, customer, received):
    order = make_order(customer)
    pay(order)
    received.clear()

    shop_sends(signals.order_reopened, order, status=Order.Status.PROCESSING)

    assert mirrored(order).state == "open"
    (reopen,) = sent(sandbox, "reopen_customer_session", key_of(order))
    assert reopen["status"] == 200
    with sandbox.client() as client:
        assert client.get_customer_session(session_id(order))["customerSession"]["state"] == "open"
    (update,) = received.of("effects_updated")
    assert update["session"] == mirrored(order) and update["in_transaction"] is False

    # The customer edits the order and pays again: the first close is rolled back, the second
    # counts, so the points are credited once.
    order.lines.filter(sku="SKU-MUG").delete()
    shop_sends(signals.cart_updated, order)
    shop_sends(signals.order_paid, order, status=Order.Status.PAID)
    assert mirrored(order).state == "closed"
    assert active_points(sandbox) == SEEDED_POINTS + DEMO_POINTS - 12
    assert balance().active_points == SEEDED_POINTS + DEMO_POINTS - 12
    assert [i.sku for i in mirrored(order).cart_items.all()] == [
        "SKU-TSHIRT",
        "SKU-SNEAKER",
        "SKU-SOCKS",
        "SKU-CAP",
    ]


def test_a_partial_return_keeps_the_discount_of_the_lines_kept(sandbox, customer):
    order = make_order(customer)
    pay(order)

    shop_sends(signals.order_returned, order, lines=[order.lines.get(sku="SKU-SNEAKER")])

    # Talon.One nets the returned sneakers' 16.00 + 6.40 out of the order's 35.55.
    with sandbox.client() as client:
        netted = client.get_customer_session(session_id(order))["effects"]
    assert read_effects(netted).discount_total == Decimal("13.15")
    assert mirrored(order).discount_total == Decimal("13.15")
