"""Many cart updates of one session reach Talon.One as few requests, and the last cart wins.

A shop sends ``cart_updated`` on every change. While a push for the session is being sent (or
waits for its retry) the updates behind it are folded into one request of the latest cart.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, transaction

from django_talonone import signals
from django_talonone.models import CustomerSession, Push
from tests.flows.conftest import key_of, make_order, retry_due, sent, session_id
from tests.shop.models import Order

pytestmark = pytest.mark.django_db(transaction=True)

UPDATES = 50


def change_cart(order: Order, step: int) -> None:
    """The shop's cart change number ``step``: quantities, lines and the coupon all move."""
    order.lines.filter(sku="SKU-TSHIRT").update(quantity=step + 1)
    if step == 10:
        order.lines.create(sku="SKU-BELT", name="Belt", quantity=1, price=Decimal("25.50"))
    if step == 30:
        order.lines.filter(sku="SKU-SOCKS").delete()
    order.coupon_code = {20: "NOSUCHCODE", 40: ""}.get(step, order.coupon_code)
    if step == UPDATES - 1:
        order.coupon_code = "WELCOME10"
    order.save(update_fields=["coupon_code"])


def update_in_its_own_transaction(order: Order, step: int) -> None:
    with transaction.atomic():
        change_cart(order, step)
        signals.cart_updated.send(sender=Order, cart=order)


def the_cart(order: Order) -> list[tuple[str, str, int, Decimal, str]]:
    lines = order.lines.order_by("pk")
    return [(i.sku, i.name, i.quantity, i.price, i.category) for i in lines]


def assert_the_last_cart_is_mirrored_and_in_talon_one(sandbox: Any, order: Order) -> None:
    expected = the_cart(order)
    assert expected[0] == ("SKU-TSHIRT", "T-shirt", UPDATES, Decimal(20), "shirts")
    assert [line[0] for line in expected] == [
        "SKU-TSHIRT",
        "SKU-SNEAKER",
        "SKU-CAP",
        "SKU-MUG",
        "SKU-BELT",
    ]
    session = CustomerSession.objects.get(integration_id=session_id(order))
    items = session.cart_items.order_by("position")
    assert [(i.sku, i.name, i.quantity, i.price, i.category) for i in items] == expected
    assert session.coupon_codes == ["WELCOME10"]
    with sandbox.client() as client:
        remote = client.get_customer_session(session_id(order))["customerSession"]
    assert [(i["sku"], i["quantity"], Decimal(str(i["price"]))) for i in remote["cartItems"]] == [
        (sku, quantity, price) for sku, _, quantity, price, _ in expected
    ]
    assert remote["couponCodes"] == ["WELCOME10"]
    # The mirrored effects are those of the last cart: its coupon is accepted.
    codes = [e.props.get("value") for e in session.effects.filter(effect_type="acceptCoupon")]
    assert codes == ["WELCOME10"]


def assert_every_update_was_sent_or_folded(order: Order) -> None:
    rows = list(Push.objects.filter(key=key_of(order)))
    assert len(rows) == UPDATES
    assert {row.state for row in rows} == {"done"}
    carriers = {row.pk for row in rows if not row.claimed_by.startswith("coalesced into #")}
    for row in rows:
        if row.pk not in carriers:
            assert int(row.claimed_by.removeprefix("coalesced into #")) in carriers
    assert sum(1 + row.coalesced for row in rows if row.pk in carriers) == UPDATES


def test_rapid_updates_while_a_push_is_in_flight_go_as_one_request(sandbox, customer):
    """Fifty shop requests, each committing its own update; the first one's push is still
    being answered while the other 49 commit."""
    order = make_order(customer)
    failures: list[BaseException] = []

    def first_request() -> None:
        try:
            update_in_its_own_transaction(Order.objects.get(pk=order.pk), 0)
        except BaseException as exc:
            failures.append(exc)
        finally:
            connection.close()

    # Holding the sandbox's state lock keeps the first request unanswered, however slow the
    # machine, until the other updates are committed.
    thread = threading.Thread(target=first_request)
    try:
        with sandbox.state.lock:
            thread.start()
            wait_for(lambda: key_of(order) in sandbox.counters["in_flight"])
            for step in range(1, UPDATES):
                update_in_its_own_transaction(order, step)
            # Only the first update has reached Talon.One; the others wait behind it.
            assert sandbox.counters["requests"] == {"update_customer_session_v2": 1}
    finally:
        thread.join(timeout=30)
    assert not thread.is_alive() and failures == []

    requests = sent(sandbox, "update_customer_session_v2", key_of(order))
    assert 1 < len(requests) <= 3
    assert [r["status"] for r in requests] == [200] * len(requests)
    counters = sandbox.counters
    assert counters["conflicts"] == {}
    assert counters["max_parallel"][key_of(order)] == 1
    assert_every_update_was_sent_or_folded(order)
    assert_the_last_cart_is_mirrored_and_in_talon_one(sandbox, order)


def test_updates_waiting_for_a_retry_go_as_one_request(sandbox, customer):
    order = make_order(customer)
    # Talon.One asks for a pause (429, Retry-After: 30 s): the first push waits at least that
    # long for its retry, however slow the machine is.
    sandbox.faults.add("update_customer_session_v2", "rate_limit", retry_after=30, count=1)
    for step in range(UPDATES):
        update_in_its_own_transaction(order, step)
    # The first push waits for its retry; the others wait behind it, unsent.
    assert [r["status"] for r in sent(sandbox, "update_customer_session_v2")] == [429]

    retry_due()

    statuses = [r["status"] for r in sent(sandbox, "update_customer_session_v2", key_of(order))]
    assert statuses == [429, 200]
    assert_every_update_was_sent_or_folded(order)
    assert_the_last_cart_is_mirrored_and_in_talon_one(sandbox, order)


def test_updates_in_one_transaction_go_as_one_request(sandbox, customer):
    order = make_order(customer)
    with transaction.atomic():
        for step in range(UPDATES):
            change_cart(order, step)
            signals.cart_updated.send(sender=Order, cart=order)

    (request,) = sent(sandbox, "update_customer_session_v2", key_of(order))
    assert request["status"] == 200
    assert_every_update_was_sent_or_folded(order)
    assert_the_last_cart_is_mirrored_and_in_talon_one(sandbox, order)


def wait_for(condition: Any, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the first push to reach the sandbox")
        time.sleep(0.005)
