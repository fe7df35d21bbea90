"""When Talon.One, the network or the shop's own code fails: retried, failed, dead, reconciled.

Faults are injected into the sandbox; retries are driven by the retry runner
(``manage.py talonone_push``) once their time has come, which the tests bring forward.
"""

from __future__ import annotations

import datetime
import io
import json
from typing import Any

import pytest
from django.core.management import call_command
from django.db import transaction
from django.forms.models import model_to_dict
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.utils import timezone

from django_talonone import signals
from django_talonone.client import BadRequestError
from django_talonone.models import CustomerSession, LoyaltyBalance, Push
from tests.flows.conftest import (
    DEMO_CUSTOMER,
    DEMO_POINTS,
    SEEDED_POINTS,
    FlowAdapter,
    active_points,
    key_of,
    make_order,
    pay,
    sent,
    session_id,
    shop_sends,
    wait_until_idle,
)
from tests.shop.models import Order

pytestmark = pytest.mark.django_db(transaction=True)

UPDATE = "update_customer_session_v2"
#: The client's timeout in the timeout tests, and how long the sandbox keeps the request.
CLIENT_TIMEOUT = 0.2
SANDBOX_STALL = 0.5


def run_retry_runner(sandbox: Any) -> None:
    """Bring every waiting retry forward to now and run ``manage.py talonone_push``."""
    wait_until_idle(sandbox)  # a request the client gave up on still holds its session
    Push.objects.filter(state=Push.State.PENDING).update(next_attempt_at=timezone.now())
    call_command("talonone_push", stdout=io.StringIO())


def statuses(sandbox: Any, order: Order, operation: str = UPDATE) -> list[int | None]:
    return [r["status"] for r in sent(sandbox, operation, key_of(order))]


@pytest.mark.parametrize(
    ("kind", "params", "error_class", "status", "unknown"),
    [
        ("status", {"status": 500}, "ServerError", 500, True),
        ("status", {"status": 502}, "ServerError", 502, True),
        ("status", {"status": 503}, "ServerError", 503, True),
        ("conflict", {}, "ConflictError", 409, False),
        ("rate_limit", {"retry_after": 3}, "RateLimitedError", 429, False),
        ("reset", {}, "ConnectionError", None, True),
        ("timeout", {"seconds": SANDBOX_STALL}, "TimeoutError", None, True),
    ],
    ids=["500", "502", "503", "409", "429", "connection-reset", "timeout"],
)
def test_a_retryable_error_is_retried_until_the_push_is_done(
    sandbox, customer, settings, received, kind, params, error_class, status, unknown
):
    settings.TALONONE = {**settings.TALONONE, "TIMEOUT": CLIENT_TIMEOUT}
    sandbox.faults.add(UPDATE, kind, count=2, **params)
    order = make_order(customer)
    before = timezone.now()

    shop_sends(signals.cart_updated, order)

    push = Push.objects.get(key=key_of(order))
    assert (push.state, push.attempts) == ("pending", 1)
    assert (push.error_class, push.error_status, push.outcome_unknown) == (
        error_class,
        status,
        unknown,
    )
    assert push.last_error
    if kind == "rate_limit":
        # Talon.One said when to come back: the retry is not sooner.
        assert push.next_attempt_at >= before + datetime.timedelta(seconds=3)

    run_retry_runner(sandbox)
    push.refresh_from_db()
    assert (push.state, push.attempts, push.error_class) == ("pending", 2, error_class)

    run_retry_runner(sandbox)
    push.refresh_from_db()
    assert (push.state, push.attempts) == ("done", 3)
    assert (push.last_error, push.error_class, push.outcome_unknown) == ("", "", False)
    assert statuses(sandbox, order) == [status, status, 200]
    session = CustomerSession.objects.get(integration_id=session_id(order))
    assert session.cart_items.count() == 5
    assert session.effects.filter(is_current=True, effect_type="acceptCoupon").exists()
    assert received.of("push_failed") == []


def test_an_invalid_cart_fails_at_once_with_the_api_message(sandbox, customer, received):
    order = make_order(customer, lines=[("SKU-MUG", "Mug", 0, "12.00", "home")])

    shop_sends(signals.cart_updated, order)

    push = Push.objects.get(key=key_of(order))
    assert (push.state, push.attempts, push.error_status) == ("failed", 1, 400)
    assert push.error_class == "BadRequestError"
    # Exactly what Talon.One answered, so a person can fix the cart.
    with pytest.raises(BadRequestError) as answer, sandbox.client() as client:
        client.update_customer_session_v2("probe", push.payload["body"], dry=True)
    assert answer.value.message in push.last_error
    assert "/customerSession/cartItems/0/quantity" in push.last_error
    (failed,) = received.of("push_failed")
    assert failed["push"] == push and failed["in_transaction"] is False
    # A permanent error is not retried.
    run_retry_runner(sandbox)
    assert statuses(sandbox, order) == [400]
    assert not CustomerSession.objects.filter(integration_id=session_id(order)).exists()


def test_a_push_that_keeps_failing_is_dead_after_max_attempts(
    sandbox, customer, settings, received
):
    settings.TALONONE = {**settings.TALONONE, "MAX_ATTEMPTS": 3}
    fault = sandbox.faults.add(UPDATE, "status", status=503)
    order = make_order(customer)

    shop_sends(signals.cart_updated, order)
    run_retry_runner(sandbox)
    assert received.of("push_failed") == []
    run_retry_runner(sandbox)

    push = Push.objects.get(key=key_of(order))
    assert (push.state, push.attempts, push.error_status) == ("dead", 3, 503)
    assert "Service Unavailable" in push.last_error
    (failed,) = received.of("push_failed")
    assert failed["push"] == push and failed["push"].state == "dead"
    assert failed["in_transaction"] is False
    run_retry_runner(sandbox)
    assert statuses(sandbox, order) == [503, 503, 503]

    # Once Talon.One is back, an operator puts the dead push back in the queue.
    sandbox.faults.remove(fault["id"])
    call_command("talonone_push", "--retry-dead", stdout=io.StringIO())
    run_retry_runner(sandbox)
    push.refresh_from_db()
    assert push.state == "done"
    assert statuses(sandbox, order) == [503, 503, 503, 200]


@pytest.mark.parametrize("applied", [True, False], ids=["applied", "not-applied"])
def test_a_close_whose_answer_was_lost_is_reconciled_and_counts_once(
    sandbox, customer, settings, applied
):
    settings.TALONONE = {**settings.TALONONE, "TIMEOUT": CLIENT_TIMEOUT}
    order = make_order(customer)
    shop_sends(signals.cart_updated, order)
    sandbox.faults.add(UPDATE, "timeout", seconds=SANDBOX_STALL, apply=applied, count=1)

    shop_sends(signals.order_paid, order, status=Order.Status.PAID)

    close = Push.objects.get(key=key_of(order), source="order_paid")
    assert (close.state, close.error_class, close.outcome_unknown) == (
        "pending",
        "TimeoutError",
        True,
    )
    run_retry_runner(sandbox)

    close.refresh_from_db()
    assert close.state == "done"
    # The session was read back before anything was sent again.
    (read,) = sent(sandbox, "get_customer_session")
    assert (read["path"], read["status"]) == (f"/v2/customer_sessions/{session_id(order)}", 200)
    closes = [
        r for r in sent(sandbox, UPDATE, key_of(order)) if r["body"]["customerSession"].get("state")
    ]
    # Applied: never sent again. Not applied: sent again, once, after the read.
    assert [r["status"] for r in closes] == ([None] if applied else [None, 200])
    assert closes[-1]["id"] < read["id"] if applied else closes[-1]["id"] > read["id"]
    assert CustomerSession.objects.get(integration_id=session_id(order)).state == "closed"
    # The points were credited once, in Talon.One and in the mirror.
    assert active_points(sandbox) == SEEDED_POINTS + DEMO_POINTS
    balance = LoyaltyBalance.objects.get(
        profile__integration_id=DEMO_CUSTOMER, program_id=1, subledger_id=""
    )
    assert balance.active_points == SEEDED_POINTS + DEMO_POINTS


def test_a_rolled_back_shop_transaction_pushes_nothing(sandbox, customer):
    order = make_order(customer)
    with pytest.raises(RuntimeError), transaction.atomic():
        signals.cart_updated.send(sender=Order, cart=order)
        signals.order_paid.send(sender=Order, order=order)
        raise RuntimeError("payment declined")
    assert Push.objects.count() == 0

    # A rolled-back savepoint takes its push with it; the rest of the transaction goes out.
    other = make_order(customer, coupon_code="")
    with transaction.atomic():
        try:
            with transaction.atomic():
                signals.order_paid.send(sender=Order, order=order)
                raise RuntimeError("stock check failed")
        except RuntimeError:
            pass
        signals.cart_updated.send(sender=Order, cart=other)

    assert [r["key"] for r in sandbox.requests if r["key"]] == [key_of(other)]
    assert list(Push.objects.values_list("key", "state")) == [(key_of(other), "done")]


class MisconfiguredAdapter(FlowAdapter):
    """An adapter with a bug: it cannot price one of the lines."""

    def cart_item(self, line: Any) -> dict[str, Any]:
        if line.sku == "SKU-MUG":
            raise LookupError(f"no price list entry for {line.sku}")
        return super().cart_item(line)


def checkout(request: HttpRequest, pk: int) -> HttpResponse:
    """A shop view: confirm the order and tell Talon.One, in one transaction."""
    with transaction.atomic():
        order = Order.objects.get(pk=pk)
        signals.order_placed.send(sender=Order, order=order)
        order.status = Order.Status.PLACED
        order.note = "confirmed"
        order.save()
    return HttpResponse(f"order {order.pk} placed")


urlpatterns = [path("checkout/<int:pk>/", checkout)]


@pytest.mark.urls(__name__)
def test_an_adapter_that_raises_fails_the_push_and_the_shop_carries_on(
    sandbox, customer, settings, received, client
):
    settings.TALONONE = {**settings.TALONONE, "ADAPTER": f"{__name__}.MisconfiguredAdapter"}
    order = make_order(customer)

    response = client.post(f"/checkout/{order.pk}/")

    assert response.status_code == 200
    order.refresh_from_db()
    assert (order.status, order.note) == ("placed", "confirmed")
    push = Push.objects.get()
    assert (push.key, push.state, push.source) == (key_of(order), "failed", "order_placed")
    assert push.error_class == "LookupError"
    assert "no price list entry for SKU-MUG" in push.last_error
    (failed,) = received.of("push_failed")
    assert failed["push"] == push
    assert sandbox.requests == []


class LeakyAdapter(FlowAdapter):
    """Shop code whose error message quotes the settings, API key included."""

    def session_attributes(self, obj: Any) -> dict[str, Any]:
        from django.conf import settings

        raise ValueError(f"bad configuration: {json.dumps(settings.TALONONE)}")


def test_the_api_key_never_lands_in_the_outbox(sandbox, customer, settings):
    secret = sandbox.api_key
    settings.TALONONE = {**settings.TALONONE, "MAX_ATTEMPTS": 1}
    pay(make_order(customer))  # done rows, with answers mirrored
    shop_sends(signals.cart_updated, make_order(customer, lines=[("SKU-MUG", "", 0, "1", "")]))
    sandbox.faults.add(UPDATE, "status", status=500, count=1)
    shop_sends(signals.cart_updated, make_order(customer))  # dead after its only attempt
    shop_sends(signals.customer_updated, customer)
    shop_sends(signals.customer_deleted, customer)
    settings.TALONONE = {**settings.TALONONE, "ADAPTER": f"{__name__}.LeakyAdapter"}
    shop_sends(signals.cart_updated, make_order(customer))  # the adapter raises, quoting it
    wrong = "wrong-key-9c1f0e7d"
    settings.TALONONE = {**settings.TALONONE, "API_KEY": wrong, "ADAPTER": FlowAdapter}
    shop_sends(signals.cart_updated, make_order(customer))  # 401
    settings.TALONONE = {**settings.TALONONE, "ADAPTER": f"{__name__}.LeakyAdapter"}
    shop_sends(signals.cart_updated, make_order(customer))

    rows = list(Push.objects.all())
    assert {row.state for row in rows} == {"done", "failed", "dead"}
    assert {row.error_status for row in rows} >= {400, 401, 500}
    assert sum("bad configuration" in row.last_error for row in rows) == 2
    for row in rows:
        text = json.dumps(model_to_dict(row), default=str)
        assert secret not in text, row
        assert wrong not in text, row
