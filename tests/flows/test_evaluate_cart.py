"""evaluate_cart against the sandbox: fresh effects for the cart page, or the last ones, stale."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from django_talonone import evaluate_cart
from django_talonone.client import NotFoundError
from django_talonone.effects import read_effects
from django_talonone.models import (
    CartItem,
    CustomerProfile,
    CustomerSession,
    Effect,
    LoyaltyBalance,
    Push,
)
from tests.flows.conftest import (
    DEMO_CUSTOMER,
    DEMO_POINTS,
    active_points,
    key_of,
    make_order,
    pay,
    retry_due,
    sent,
    session_id,
    wait_until_idle,
)
from tests.shop.models import Order

pytestmark = pytest.mark.django_db(transaction=True)

UPDATE = "update_customer_session_v2"


def add_belt(order: Order) -> None:
    order.lines.create(sku="SKU-BELT", name="Belt", quantity=1, price=Decimal("30.00"))


def current_pks(order: Order) -> list[int]:
    session = CustomerSession.objects.get(integration_id=session_id(order))
    return list(session.effects.filter(is_current=True).order_by("id").values_list("pk", flat=True))


def local_rows() -> dict[str, list[Any]]:
    """Everything django-talonone stores about sessions, to compare before and after."""
    return {
        "sessions": list(CustomerSession.objects.order_by("pk").values()),
        "items": list(CartItem.objects.order_by("pk").values()),
        "effects": list(Effect.objects.order_by("pk").values()),
        "pushes": list(Push.objects.order_by("pk").values()),
    }


def remote_session(sandbox: Any, order: Order) -> dict[str, Any]:
    with sandbox.client() as client:
        return client.get_customer_session(session_id(order))


def test_the_cart_is_evaluated_now_and_its_mirrored_effects_come_back(sandbox, customer):
    order = make_order(customer)

    result = evaluate_cart(order)

    assert (result.stale, result.preview, result.error) == (False, False, None)
    assert result.session == CustomerSession.objects.get(integration_id=session_id(order))
    assert result.session.order == order
    assert [e.pk for e in result.effects] == current_pks(order)
    read = read_effects(result.effects)
    assert read.line_discounts == {1: Decimal(16)}
    assert [c.code for c in read.accepted_coupons] == ["WELCOME10"]
    assert read.points_earned(1) == DEMO_POINTS
    assert (result.push.state, result.push.source) == ("done", "evaluate_cart")
    (request,) = sent(sandbox, UPDATE, key_of(order))
    assert (request["status"], request["query"]) == (200, {})


def test_with_talon_one_down_the_last_effects_come_back_stale(sandbox, customer, settings):
    order = make_order(customer)
    fresh = evaluate_cart(order)
    up = settings.TALONONE
    settings.TALONONE = {**up, "BASE_URL": "http://127.0.0.1:9"}  # nothing listens there
    add_belt(order)

    result = evaluate_cart(order)

    assert (result.stale, result.preview) == (True, False)
    assert result.error and "ConnectionError" in result.error
    assert [e.pk for e in result.effects] == [e.pk for e in fresh.effects]
    assert result.session == fresh.session
    # The update is not lost: it waits in the outbox and goes out once Talon.One is back.
    assert (result.push.state, result.push.source) == ("pending", "evaluate_cart")
    settings.TALONONE = up
    retry_due()
    result.push.refresh_from_db()
    assert result.push.state == "done"
    assert "SKU-BELT" in [
        i["sku"] for i in remote_session(sandbox, order)["customerSession"]["cartItems"]
    ]
    assert CartItem.objects.filter(session=fresh.session, sku="SKU-BELT").exists()


def test_on_a_timeout_the_last_effects_come_back_stale_and_the_update_waits(sandbox, customer):
    order = make_order(customer)
    fresh = evaluate_cart(order)
    sandbox.faults.add(UPDATE, "timeout", seconds=0.5, count=1)
    add_belt(order)

    result = evaluate_cart(order, timeout=0.2)

    assert (result.stale, result.preview) == (True, False)
    assert result.error and "timed out" in result.error.lower()
    assert [e.pk for e in result.effects] == [e.pk for e in fresh.effects]
    assert (result.push.state, result.push.outcome_unknown) == ("pending", True)
    wait_until_idle(sandbox)

    # The next cart page must not overtake the waiting push: it gets a dry run of its cart.
    order.lines.filter(sku="SKU-MUG").delete()
    preview = evaluate_cart(order)
    assert (preview.stale, preview.preview) == (False, True)
    assert all(e.pk is None for e in preview.effects)
    # 1 point per EUR of 162 + 30 (belt) - 12 (mug).
    assert read_effects(preview.effects).points_earned(1) == Decimal(180)
    assert [e.pk for e in preview.session.effects.filter(is_current=True).order_by("id")] == [
        e.pk for e in fresh.effects
    ]
    assert sent(sandbox, UPDATE, key_of(order))[-1]["query"] == {"dry": ["true"]}

    # The retry sends both waiting updates as one, and the mirror gets the latest cart.
    retry_due()
    assert set(Push.objects.values_list("state", flat=True)) == {"done"}
    real = [r["status"] for r in sent(sandbox, UPDATE, key_of(order)) if not r["query"]]
    assert real == [200, None, 200]  # the fresh one, the timed-out one, the folded retry
    session = CustomerSession.objects.get(integration_id=session_id(order))
    assert [i.sku for i in session.cart_items.order_by("position")] == [
        "SKU-TSHIRT",
        "SKU-SNEAKER",
        "SKU-SOCKS",
        "SKU-CAP",
        "SKU-BELT",
    ]
    earned = read_effects(session.effects.filter(is_current=True)).points_earned(1)
    assert earned == Decimal(180)


def test_a_dry_evaluation_stores_nothing_here_or_in_talon_one(sandbox, customer):
    order = make_order(customer)
    evaluate_cart(order)
    before_here, before_there = local_rows(), remote_session(sandbox, order)
    order.coupon_code = ""
    order.save()
    add_belt(order)

    result = evaluate_cart(order, dry=True)

    assert (result.stale, result.preview, result.push) == (False, True, None)
    assert all(e.pk is None for e in result.effects)
    read = read_effects(result.effects)
    assert read.accepted_coupons == []
    assert read.points_earned(1) == DEMO_POINTS + 30
    assert local_rows() == before_here
    assert remote_session(sandbox, order) == before_there
    assert sent(sandbox, UPDATE, key_of(order))[-1]["query"] == {"dry": ["true"]}


def test_a_dry_evaluation_of_a_new_cart_creates_no_session(sandbox, customer):
    order = make_order(customer)

    result = evaluate_cart(order, dry=True)

    assert [c.code for c in read_effects(result.effects).accepted_coupons] == ["WELCOME10"]
    assert result.session is None
    assert local_rows() == {"sessions": [], "items": [], "effects": [], "pushes": []}
    with pytest.raises(NotFoundError):
        remote_session(sandbox, order)


def test_the_cart_page_leaves_the_customers_profile_and_loyalty_to_the_orders_pushes(
    sandbox, customer, received
):
    order = make_order(customer)

    result = evaluate_cart(order)

    (request,) = sent(sandbox, UPDATE, key_of(order))
    asked = request["body"]["responseContent"]
    assert asked == ["customerSession", "coupons", "triggeredCampaigns"]
    # The session hangs on the customer's profile, whose own parts were not asked for.
    assert result.session.profile.integration_id == DEMO_CUSTOMER
    assert result.session.profile.raw == {}
    assert not LoyaltyBalance.objects.exists()
    assert received.of("loyalty_updated") == []
    assert received.of("effects_updated")  # the cart page's own part is mirrored

    pay(order)  # the order's pushes ask for everything and bring the rest

    closing = sent(sandbox, UPDATE, key_of(order))[-1]
    assert {"customerProfile", "loyalty"} <= set(closing["body"]["responseContent"])
    profile = CustomerProfile.objects.get(integration_id=DEMO_CUSTOMER)
    assert profile.raw["integrationId"] == DEMO_CUSTOMER
    ledger = LoyaltyBalance.objects.get(profile=profile, program_id=1, subledger_id="")
    assert ledger.active_points == active_points(sandbox)
    assert received.of("loyalty_updated")


def test_asked_for_them_the_cart_page_mirrors_profile_and_loyalty_too(
    sandbox, customer, received, settings
):
    every_part = ["customerSession", "customerProfile", "loyalty"]
    settings.TALONONE = {**settings.TALONONE, "EVALUATE_RESPONSE_CONTENT": every_part}
    order = make_order(customer)

    evaluate_cart(order)

    (request,) = sent(sandbox, UPDATE, key_of(order))
    assert request["body"]["responseContent"] == every_part
    ledger = LoyaltyBalance.objects.get(
        profile__integration_id=DEMO_CUSTOMER, program_id=1, subledger_id=""
    )
    assert ledger.pending_points == DEMO_POINTS  # the open session's points, pending
    assert len(received.of("loyalty_updated")) == 1
