"""The push pipeline on PostgreSQL + Redis with real Celery worker processes and the sandbox.

Everything goes the way it goes in production: the shop's transaction sends a signal, the
receiver writes a Push row, the commit publishes ``django_talonone.push`` on the broker, a
``celery worker`` process claims the row and sends it to the sandbox, and mirrors the answer.
"""

from __future__ import annotations

import datetime
import logging
import random
import threading
import time
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from django_talonone import outbox, signals, tasks
from django_talonone.models import CartItem, CustomerSession, Effect, LoyaltyBalance, Push
from tests.shop.models import Order, OrderLine

from .conftest import QUEUE, queued_messages, wait_for

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.worker,
    pytest.mark.django_db(transaction=True),
]

UPDATE = outbox.UPDATE_SESSION
#: Seconds to wait for the workers to drain the outbox (generous: a slow CI machine).
DRAIN_TIMEOUT = 60.0


# --- the shop side ------------------------------------------------------------------------------


def make_order(username: str, lines: list[tuple[str, ...]], coupon: str = "") -> Order:
    """A customer's order with lines ``(sku, quantity, price[, category])``."""
    customer = get_user_model().objects.create_user(username=username)
    order = Order.objects.create(number=username, customer=customer, coupon_code=coupon)
    for sku, quantity, price, *category in lines:
        OrderLine.objects.create(
            order=order,
            sku=sku,
            quantity=int(quantity),
            price=Decimal(price),
            category="".join(category),
        )
    return order


def session_id(order: Order) -> str:
    return f"shop.order-{order.pk}"


def profile_id(order: Order) -> str:
    return str(order.customer_id)


def shop_event(order: Order, event: str, **kwargs: Any) -> Order:
    """One shop transaction: lock the order, set its status, send the lifecycle signal."""
    status = {
        "cart_updated": None,
        "order_placed": Order.Status.PLACED,
        "order_paid": Order.Status.PAID,
        "order_returned": Order.Status.PARTIALLY_RETURNED,
    }[event]
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order.pk)
        if status is not None:
            order.status = status
            order.save(update_fields=["status"])
        signal = getattr(signals, event)
        if event == "cart_updated":
            signal.send(sender=Order, cart=order, **kwargs)
        else:
            signal.send(sender=Order, order=order, **kwargs)
    return order


# --- what the outbox, the mirror and the sandbox hold -------------------------------------------


def describe_pushes() -> str:
    rows = Push.objects.order_by("id").values_list(
        "id", "key", "operation", "state", "attempts", "claimed_by", "last_error"
    )
    return "pushes:\n" + "\n".join(f"  {row}" for row in rows)


def wait_until_drained(timeout: float = DRAIN_TIMEOUT) -> None:
    """Every push finished (done, failed or dead): nothing pending or in flight."""
    wait_for(
        lambda: not Push.objects.filter(state__in=outbox.UNFINISHED).exists(),
        timeout=timeout,
        message=lambda: "the workers did not finish the pushes; " + describe_pushes(),
    )


def assert_all_done() -> None:
    """Every push done, and mirrored without an error."""
    wait_until_drained()
    unfinished = Push.objects.exclude(state=Push.State.DONE)
    assert not unfinished.exists(), describe_pushes()
    assert not Push.objects.exclude(last_error="").exists(), describe_pushes()


def session_requests(log: Any, sid: str, operation: str = UPDATE) -> list[dict[str, Any]]:
    """The sandbox's log (or a snapshot of it) of one operation on one session, in order."""
    entries = log.requests if hasattr(log, "requests") else log
    return [r for r in entries if r["key"] == f"session:{sid}" and r["operation"] == operation]


def mirrored_cart(sid: str) -> list[tuple[str, int, Decimal]]:
    items = CartItem.objects.filter(session__integration_id=sid).order_by("position")
    return [(i.sku, i.quantity, i.price) for i in items]


def wire_cart(items: list[dict[str, Any]]) -> list[tuple[str, int, Decimal]]:
    return [(i["sku"], int(i["quantity"]), Decimal(str(i["price"]))) for i in items]


def balance(talon: Any, pid: str) -> dict[str, Any]:
    return talon.client().get_loyalty_balances(1, pid)["balance"]


def mirrored_balance(pid: str) -> LoyaltyBalance:
    return LoyaltyBalance.objects.get(profile__integration_id=pid, program_id=1, subledger_id="")


# --- one key at a time ----------------------------------------------------------------------------

SESSIONS = 3
SHOPPERS = 4
WORKERS = 4
UPDATES_PER_SESSION = 30


def test_workers_never_send_for_one_key_at_once(workers, talon):
    """Four shop threads hammer three carts (and close them, and update their customers'
    profiles) while four workers push.

    Every push ends done; the sandbox never saw two requests for one session or profile at once
    (no 409, peak parallelism 1); each session's requests arrived in the order of its pushes; each
    session's final cart, in the sandbox and in the mirror, is the last one the shop sent.
    """
    # Every update takes 60 ms in the sandbox: long enough for any overlap to show.
    talon.faults.add(UPDATE, "latency", seconds=0.06)
    talon.faults.add(outbox.UPDATE_PROFILE, "latency", seconds=0.06)
    workers.start(WORKERS)
    orders = [
        make_order(f"shopper-{i}", [("SKU-TSHIRT", 1, "20.00"), ("SKU-SOCKS", 1, "5.00")])
        for i in range(SESSIONS)
    ]
    # The version of a session's cart is the quantity of its socks: it starts at 1, each cart
    # update raises it (2, 3, ... UPDATES_PER_SESSION), then the close carries the last version
    # again. Every fourth version adds or drops a cap.
    closed: set[int] = set()
    lock = threading.Lock()
    errors: list[BaseException] = []

    def shopper(seed: int) -> None:
        rnd = random.Random(seed)
        try:
            for _ in range(10 * SESSIONS * UPDATES_PER_SESSION):  # bounded
                with lock:
                    left = [o.pk for o in orders if o.pk not in closed]
                if not left:
                    return
                pk = rnd.choice(left)
                with transaction.atomic():
                    # The shop serialises changes to one cart (a row lock): push ids then follow
                    # the order of the shop's commits for each session.
                    order = Order.objects.select_for_update().get(pk=pk)
                    if order.status == Order.Status.PAID:
                        continue
                    socks = order.lines.get(sku="SKU-SOCKS")
                    if socks.quantity >= UPDATES_PER_SESSION:
                        order.status = Order.Status.PAID
                        order.save(update_fields=["status"])
                        signals.order_paid.send(sender=Order, order=order)
                        with lock:
                            closed.add(pk)
                        continue
                    socks.quantity += 1
                    socks.save(update_fields=["quantity"])
                    if socks.quantity % 4 == 0:
                        cap = order.lines.filter(sku="SKU-CAP")
                        if cap.exists():
                            cap.delete()
                        else:
                            OrderLine.objects.create(
                                order=order, sku="SKU-CAP", quantity=1, price=Decimal("15.00")
                            )
                    signals.cart_updated.send(sender=Order, cart=order)
                    if socks.quantity % 3 == 0:
                        # The customer's profile changes too: another key, the same rule.
                        signals.customer_updated.send(sender=Order, user=order.customer)
                # Shoppers click, they do not loop: updates keep arriving while keys are busy,
                # so idle workers get woken for keys another worker is sending for.
                time.sleep(rnd.uniform(0.01, 0.04))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()  # this thread's own database connection

    threads = [threading.Thread(target=shopper, args=(n,)) for n in range(SHOPPERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=DRAIN_TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a shop thread hung"
    assert not errors, errors
    assert closed == {o.pk for o in orders}

    assert_all_done()
    counters = talon.counters
    assert counters["conflicts"] == {}, counters
    keys = {f"session:{session_id(o)}" for o in orders} | {
        f"profile:{profile_id(o)}" for o in orders
    }
    assert {k: v for k, v in counters["max_parallel"].items() if k in keys} == dict.fromkeys(
        keys, 1
    )
    assert set(counters["statuses"]) == {"200"}, counters

    pushes = Push.objects.filter(operation=UPDATE).count()
    assert pushes == SESSIONS * UPDATES_PER_SESSION  # (UPDATES - 1) cart updates + the close
    sent = 0
    for order in orders:
        sid = session_id(order)
        requests = session_requests(talon, sid)
        sent += len(requests)
        # In push order: the socks' count (the cart's version) only grows, and the close, with
        # the last version, comes last.
        versions = [
            next(
                i["quantity"]
                for i in r["body"]["customerSession"]["cartItems"]
                if i["sku"] == "SKU-SOCKS"
            )
            for r in requests
        ]
        states = [r["body"]["customerSession"].get("state") for r in requests]
        assert states[-1] == "closed" and "closed" not in states[:-1], states
        assert versions[-1] == UPDATES_PER_SESSION, versions
        assert versions[:-1] == sorted(set(versions[:-1])), versions
        # The final cart is the one the shop sent last, in the sandbox and in the mirror.
        close = Push.objects.get(key=f"session:{sid}", source="order_paid")
        expected = wire_cart(close.payload["body"]["customerSession"]["cartItems"])
        assert expected[1] == ("SKU-SOCKS", UPDATES_PER_SESSION, Decimal("5"))
        remote = talon.client().get_customer_session(sid)["customerSession"]
        assert remote["state"] == "closed"
        assert wire_cart(remote["cartItems"]) == expected
        assert CustomerSession.objects.get(integration_id=sid).state == "closed"
        assert mirrored_cart(sid) == expected
    # Cart updates that piled up behind a busy key were folded, never sent twice.
    assert sent <= pushes


# --- a worker dies mid-request --------------------------------------------------------------------


@pytest.mark.parametrize("applied", [True, False], ids=["close-applied", "close-lost"])
def test_a_worker_killed_mid_push_loses_nothing(workers, talon, applied):
    """SIGKILL the worker sending a close; the sweep takes the push back after IN_FLIGHT_TIMEOUT
    and the other worker finishes it: the session is closed once, its points credited once.

    ``close-applied``: Talon.One applied the close but the answer never came (the push is read
    back, found closed, and not sent again). ``close-lost``: the request never took effect (the
    push is read back, found open, and sent again).
    """
    pool = workers.start(2)
    order = make_order("victim", [("SKU-TSHIRT", 2, "20.00"), ("SKU-MUG", 1, "12.00")])
    sid, pid = session_id(order), profile_id(order)
    shop_event(order, "cart_updated")
    assert_all_done()
    assert balance(talon, pid)["pendingPoints"] == 52

    # The close's request hangs in the sandbox (applied first, or not at all) until the worker
    # sending it is killed.
    talon.faults.add(UPDATE, "timeout", count=1, seconds=2.5, apply=applied)
    shop_event(order, "order_paid")
    close = Push.objects.get(key=f"session:{sid}", source="order_paid")

    def close_in_flight_at_sandbox() -> bool:
        close.refresh_from_db()
        busy = talon.counters["in_flight"].get(f"session:{sid}")
        return close.state == Push.State.IN_FLIGHT and bool(busy)

    wait_for(close_in_flight_at_sandbox, timeout=30, message=describe_pushes)
    token = close.claimed_by
    victim = workers.holding(token)
    workers.kill(victim)
    survivor = next(w for w in pool if w is not victim)
    assert survivor.alive()

    close.refresh_from_db()
    assert (close.state, close.claimed_by) == (Push.State.IN_FLIGHT, token), describe_pushes()
    # Let the sandbox drop the orphaned request, as Talon.One would finish or abandon it.
    wait_for(lambda: not talon.counters["in_flight"], timeout=10, message="sandbox still busy")

    # The sweep: nothing to take back until the lease (IN_FLIGHT_TIMEOUT, 3 s) runs out, then the
    # push goes back to pending, outcome unknown, and its key is woken. One variant runs it as
    # beat does (the sweep task, on a worker), the other from this process.
    def sweep_until_reclaimed() -> bool:
        if applied:
            tasks.sweep.apply_async(queue=QUEUE)
        else:
            outbox.sweep()
        close.refresh_from_db()
        return close.state != Push.State.IN_FLIGHT or close.claimed_by != token

    wait_for(sweep_until_reclaimed, timeout=20, interval=0.25, message=describe_pushes)
    assert_all_done()
    log = talon.requests  # what the pipeline sent (before this test's own reads below)

    close.refresh_from_db()
    assert close.attempts == 2
    assert not close.outcome_unknown and close.last_error == ""
    assert workers.holding(close.claimed_by) is survivor

    # The session is closed once and its points credited once, in the sandbox and the mirror.
    remote = talon.client().get_customer_session(sid)["customerSession"]
    assert remote["state"] == "closed"
    points = balance(talon, pid)
    assert (points["activePoints"], points["pendingPoints"]) == (52, 0)
    mirrored = mirrored_balance(pid)
    assert (mirrored.active_points, mirrored.pending_points) == (52, 0)
    session = CustomerSession.objects.get(integration_id=sid)
    assert session.state == "closed"
    assert mirrored_cart(sid) == wire_cart(remote["cartItems"])

    closes = [
        r
        for r in session_requests(log, sid)
        if r["body"]["customerSession"].get("state") == "closed"
    ]
    reads = [r for r in log if r["operation"] == "get_customer_session"]
    if applied:
        # Read back, found closed: not sent a second time.
        assert [r["status"] for r in closes] == [None]
    else:
        # Read back, found open: sent again, applied once.
        assert [r["status"] for r in closes] == [None, 200]
    assert [r["status"] for r in reads] == [200]
    assert talon.counters["conflicts"] == {}


# --- the broker is down when the shop commits -----------------------------------------------------


def test_broker_down_at_commit_the_sweep_sends_later(
    workers, talon, pipeline, settings, broker_url, caplog
):
    """The wake-up call cannot be published: the shop's commit goes through, the row waits
    pending, and the sweep (once the broker is back) gets it sent."""
    from kombu import Connection

    workers.start(1)
    order = make_order("broker-down", [("SKU-CAP", 2, "15.00")])
    sid = session_id(order)

    # This process publishes to a broker nobody listens on (TASK_OPTIONS go to apply_async).
    with Connection("redis://127.0.0.1:1/0", connect_timeout=0.5) as unreachable:
        settings.TALONONE = {
            **pipeline,
            "TASK_OPTIONS": {**pipeline["TASK_OPTIONS"], "connection": unreachable},
        }
        with caplog.at_level(logging.ERROR, logger="django_talonone.outbox"):
            shop_event(order, "cart_updated")
    assert f"could not queue the push task for session:{sid}" in caplog.text
    push = Push.objects.get(key=f"session:{sid}")
    assert (push.state, push.attempts) == (Push.State.PENDING, 0)
    assert queued_messages(broker_url) == 0
    assert talon.requests == []

    # The broker is back. Beat's sweep re-wakes a key once its row has been due for the grace.
    settings.TALONONE = pipeline
    later = timezone.now() + datetime.timedelta(seconds=outbox.SWEEP_GRACE + 1)
    assert outbox.sweep(now=later) == {"reclaimed": 0, "dead": 0, "woken": 1}
    assert_all_done()
    push.refresh_from_db()
    assert push.attempts == 1
    [request] = session_requests(talon, sid)
    assert request["status"] == 200
    assert mirrored_cart(sid) == [("SKU-CAP", 2, Decimal("15"))]


# --- a whole order through the workers -----------------------------------------------------------


def test_whole_order_flow_through_the_workers(workers, talon):
    """cart → open with effects → placed → paid (closed, points active) → returned (points rolled
    back), every step a signal in a shop transaction, sent by a worker process."""
    workers.start(2)
    order = make_order(
        "flow",
        [("SKU-TSHIRT", 2, "20.00"), ("SKU-SNEAKER", 1, "80.00", "shoes"), ("SKU-MUG", 1, "12.00")],
        coupon="WELCOME10",
    )
    sid, pid = session_id(order), profile_id(order)

    # The cart: an open session with the demo campaigns' effects.
    shop_event(order, "cart_updated")
    assert_all_done()
    session = CustomerSession.objects.get(integration_id=sid)
    assert session.state == "open"
    assert session.profile_integration_id == pid
    assert session.coupon_codes == ["WELCOME10"]
    assert session.order == order
    effects = set(
        Effect.objects.filter(session=session, is_current=True).values_list(
            "effect_type", flat=True
        )
    )
    assert {
        "setDiscountPerItem",
        "acceptCoupon",
        "setDiscount",
        "addLoyaltyPoints",
        "addFreeItem",
    } <= effects
    assert session.discount_total > 0
    assert balance(talon, pid)["pendingPoints"] == 132

    # Placed: the same session, still open.
    shop_event(order, "order_placed")
    assert_all_done()
    assert CustomerSession.objects.get(integration_id=sid).state == "open"

    # Paid: closed, the points become active, here and in the mirror.
    shop_event(order, "order_paid")
    assert_all_done()
    assert CustomerSession.objects.get(integration_id=sid).state == "closed"
    points = balance(talon, pid)
    assert (points["activePoints"], points["pendingPoints"]) == (132, 0)
    mirrored = mirrored_balance(pid)
    assert (mirrored.active_points, mirrored.pending_points) == (132, 0)

    # The mug comes back: its 12 points are rolled back.
    mug = order.lines.get(sku="SKU-MUG")
    shop_event(order, "order_returned", lines=[mug], return_id=f"RMA-{order.pk}")
    assert_all_done()
    session = CustomerSession.objects.get(integration_id=sid)
    assert session.state == "partially_returned"
    returned = CartItem.objects.get(session=session, sku="SKU-MUG")
    assert returned.returned_quantity == 1
    points = balance(talon, pid)
    assert (points["activePoints"], points["pendingPoints"]) == (120, 0)
    mirrored = mirrored_balance(pid)
    assert mirrored.active_points == 120

    # Each step went out once, in order, one at a time.
    updates = session_requests(talon, sid)
    assert [r["body"]["customerSession"].get("state") for r in updates] == [None, None, "closed"]
    [ret] = session_requests(talon, sid, outbox.RETURN_ITEMS)
    assert ret["headers"]["idempotency-key"] == f"RMA-{order.pk}"
    assert all(r["status"] == 200 for r in [*updates, ret])
    assert talon.counters["conflicts"] == {}
    assert Push.objects.filter(key=f"session:{sid}").count() == 4
