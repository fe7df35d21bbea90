"""Receivers: each lifecycle signal becomes a push, then exactly the request Talon.One expects."""
# ruff: noqa: F811  (the fixtures are imported from tests.pipeline_fakes)

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction

from django_talonone import signals
from django_talonone.adapters import ShopAdapter
from django_talonone.conf import DEFAULTS
from django_talonone.models import CustomerProfile, CustomerSession, Push
from tests.pipeline_fakes import failed_pushes, make_order, pipeline, talon  # noqa: F401
from tests.shop.models import Order

pytestmark = pytest.mark.django_db

CONTENT = DEFAULTS["RESPONSE_CONTENT"]


def session_id(order: Order) -> str:
    return f"shop.order-{order.pk}"


@pytest.fixture
def send(django_capture_on_commit_callbacks):
    """Send a shop signal in a transaction that commits; returns the signal's responses."""

    def send(signal_name: str, **kwargs: Any) -> list[Any]:
        with django_capture_on_commit_callbacks(execute=True):
            return getattr(signals, signal_name).send(sender=Order, **kwargs)

    return send


@pytest.fixture
def user():
    return get_user_model().objects.create(username="alice")


def cart_items(*skus: str) -> list[dict[str, Any]]:
    return [{"sku": sku, "quantity": 1, "price": 10} for sku in skus]


# --- sessions ------------------------------------------------------------------------------------


def test_cart_updated_pushes_the_cart(talon, send):
    order = make_order(lines=2, coupon_code="SAVE10")
    send("cart_updated", cart=order)
    (request,) = talon.sent()
    assert (request.method, request.path) == ("PUT", f"/v2/customer_sessions/{session_id(order)}")
    assert request.body == {
        "customerSession": {
            "cartItems": cart_items("SKU-1", "SKU-2"),
            "additionalCosts": {"shipping": {"price": 0}},
            "couponCodes": ["SAVE10"],
        },
        "responseContent": CONTENT,
    }
    push = Push.objects.get()
    assert (push.source, push.state, push.key) == (
        "cart_updated",
        "done",
        f"session:{session_id(order)}",
    )
    session = CustomerSession.objects.get(integration_id=session_id(order))
    assert session.order == order  # linked to the shop's order
    assert push.session == session


def test_the_customer_becomes_the_profile_id(talon, send, user):
    order = make_order(customer=user)
    send("cart_updated", cart=order)
    assert talon.sent()[0].body["customerSession"]["profileId"] == str(user.pk)


def test_order_placed_leaves_the_session_open(talon, send):
    order = make_order()
    send("order_placed", order=order)
    (request,) = talon.sent()
    assert "state" not in request.body["customerSession"]
    assert request.body["customerSession"]["cartItems"] == cart_items("SKU-1")
    assert Push.objects.get().source == "order_placed"


def test_order_paid_closes_the_session(talon, send):
    order = make_order()
    send("order_paid", order=order)
    (request,) = talon.sent()
    assert request.body["customerSession"]["state"] == "closed"
    assert request.body["customerSession"]["cartItems"] == cart_items("SKU-1")
    assert CustomerSession.objects.get().state == "closed"


def test_order_cancelled_cancels_the_session(talon, send):
    order = make_order()
    send("order_paid", order=order)
    send("order_cancelled", order=order)
    assert [r.body["customerSession"]["state"] for r in talon.sent()] == ["closed", "cancelled"]
    assert CustomerSession.objects.get().state == "cancelled"


def test_order_returned_sends_the_return_with_an_idempotency_key(talon, send):
    order = make_order(lines=2)
    send("order_paid", order=order)
    line = order.lines.get(sku="SKU-2")
    send("order_returned", order=order, lines=[(line, 1)], return_id="RMA-7")
    (request,) = talon.sent("return")
    assert (request.method, request.path) == (
        "POST",
        f"/v2/customer_sessions/{session_id(order)}/returns",
    )
    assert request.body == {
        "return": {"returnedCartItems": [{"position": 1, "quantity": 1, "sku": "SKU-2"}]},
        "responseContent": ["customerSession", "customerProfile", "loyalty", "coupons",
                            "triggeredCampaigns"],
    }  # fmt: skip
    assert request.headers["Idempotency-Key"] == "RMA-7"
    assert CustomerSession.objects.get().state == "partially_returned"


def test_order_returned_without_a_return_id_asks_the_adapter(talon, send):
    order = make_order()
    send("order_paid", order=order)
    send("order_returned", order=order, lines=None)
    expected = ShopAdapter().return_id(order, None)
    assert talon.sent("return")[-1].headers["Idempotency-Key"] == expected


def test_an_overlong_return_id_is_hashed(talon, send):
    order = make_order()
    send("order_paid", order=order)
    long_id = "R" * 300
    send("order_returned", order=order, lines=None, return_id=long_id)
    key = talon.sent("return")[-1].headers["Idempotency-Key"]
    assert key == "sha256-" + hashlib.sha256(long_id.encode()).hexdigest()
    assert len(key) <= 255


def test_order_reopened_reopens_the_session(talon, send):
    order = make_order()
    send("order_paid", order=order)
    send("order_reopened", order=order)
    request = talon.sent()[-1]
    assert (request.method, request.path, request.body) == (
        "PUT",
        f"/v2/customer_sessions/{session_id(order)}/reopen",
        None,
    )
    assert CustomerSession.objects.get().state == "open"


def test_a_whole_order_in_one_transaction_goes_out_in_order(
    talon, send, django_capture_on_commit_callbacks
):
    order = make_order(lines=2)
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        for _ in range(5):
            signals.cart_updated.send(sender=Order, cart=order)
        signals.order_placed.send(sender=Order, order=order)
        signals.order_paid.send(sender=Order, order=order)
    send("order_returned", order=order, lines=[(order.lines.first(), 1)], return_id="r1")
    assert [(r.route, (r.body or {}).get("customerSession", {}).get("state")) for r in
            talon.sent()] == [("update", None), ("update", "closed"), ("return", None),
                              ("get", None)]  # fmt: skip
    first = Push.objects.order_by("id").filter(state="done").exclude(coalesced=0).get()
    assert first.coalesced == 5  # five cart updates folded into the order_placed push


# --- profiles and events ------------------------------------------------------------------------


def test_customer_updated_updates_the_profile_and_links_the_user(talon, send, user):
    user_attributes = {"Name": "Alice"}
    user.talonone_attributes = user_attributes
    send("customer_updated", user=user)
    (request,) = talon.sent()
    assert (request.method, request.path) == ("PUT", f"/v2/customer_profiles/{user.pk}")
    assert request.query == {"runRuleEngine": ["true"]}
    assert request.body == {
        "attributes": user_attributes,
        "responseContent": ["customerProfile", "loyalty", "triggeredCampaigns"],
    }
    profile = CustomerProfile.objects.get(integration_id=str(user.pk))
    assert profile.user == user
    assert profile.attributes == user_attributes


def test_customer_deleted_deletes_remotely_then_purges_locally(talon, send, user):
    send("customer_updated", user=user)
    assert CustomerProfile.objects.filter(integration_id=str(user.pk)).exists()
    send("customer_deleted", user=user)
    request = talon.sent()[-1]
    assert (request.method, request.path) == ("DELETE", f"/v1/customer_data/{user.pk}")
    assert not CustomerProfile.objects.exists()
    assert Push.objects.get(operation="delete_customer_data").state == "done"


def test_customer_deleted_by_integration_id(talon, send):
    send("customer_deleted", integration_id="legacy-42")
    assert talon.sent()[-1].path == "/v1/customer_data/legacy-42"
    assert Push.objects.get().key == "profile:legacy-42"


def test_event_tracked_tracks_the_event_on_the_profile(talon, send):
    send(
        "event_tracked",
        event_type="wishlist_added",
        profile_id="alice",
        attributes={"sku": "SKU-1"},
        session_id="cart-9",
    )
    (request,) = talon.sent()
    assert (request.method, request.path, request.query) == (
        "POST",
        "/v2/events",
        {"silent": ["no"]},
    )
    assert request.body == {
        "profileId": "alice",
        "type": "wishlist_added",
        "attributes": {"sku": "SKU-1"},
        "responseContent": ["customerProfile", "loyalty", "triggeredCampaigns"],
    }
    push = Push.objects.get()
    assert (push.key, push.payload["link"]) == ("profile:alice", {"session": "cart-9"})
    assert CustomerProfile.objects.filter(integration_id="alice").exists()


# --- failures never reach the shop ---------------------------------------------------------------


class BrokenAdapter(ShopAdapter):
    def session_payload(self, obj: Any, state: str | None = None) -> dict[str, Any]:
        raise LookupError("the product of line 3 was deleted")


class NoIdAdapter(ShopAdapter):
    def session_id(self, obj: Any) -> str:
        raise AttributeError("carts of this shop have no id yet")


@pytest.mark.django_db(transaction=True)
def test_an_adapter_that_raises_gives_a_failed_push_and_the_shop_carries_on(
    talon, settings, failed_pushes
):
    settings.TALONONE = {**settings.TALONONE, "ADAPTER": "tests.test_receivers.BrokenAdapter"}
    order = make_order()
    with transaction.atomic():
        responses = signals.order_paid.send(sender=Order, order=order)
        order.status = "paid"
        order.save()  # the shop's own work in the same transaction
    assert [result for _, result in responses] == [None]
    order.refresh_from_db()
    assert order.status == "paid"
    push = Push.objects.get()
    assert (push.state, push.operation, push.source) == (
        "failed",
        "update_customer_session_v2",
        "order_paid",
    )
    assert push.key == f"session:{session_id(order)}"
    assert push.error_class == "LookupError"
    assert push.last_error == "LookupError: the product of line 3 was deleted"
    assert [p.pk for p in failed_pushes] == [push.pk]
    assert talon.sent() == []


def test_a_failed_push_without_a_key_is_keyed_unknown(talon, settings, send, failed_pushes):
    settings.TALONONE = {**settings.TALONONE, "ADAPTER": "tests.test_receivers.NoIdAdapter"}
    send("cart_updated", cart=make_order())
    push = Push.objects.get()
    assert (push.key, push.state) == ("unknown", "failed")
    assert "carts of this shop have no id yet" in push.last_error
    assert len(failed_pushes) == 1


def test_bad_signal_arguments_give_a_failed_push(talon, send):
    send("customer_deleted")  # neither user nor integration_id
    send("event_tracked", event_type="", profile_id="alice")
    send("order_paid")  # no order at all
    send("customer_updated", user=None)
    assert list(Push.objects.values_list("state", "operation", "key")) == [
        ("failed", "delete_customer_data", "unknown"),
        ("failed", "track_event_v2", "unknown"),
        ("failed", "update_customer_session_v2", "unknown"),
        ("failed", "update_customer_profile_v2", "unknown"),
    ]
    assert Push.objects.filter(last_error__contains="was sent without").count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_shop_transaction_pushes_nothing(talon):
    order = make_order()
    with pytest.raises(RuntimeError), transaction.atomic():
        signals.order_paid.send(sender=Order, order=order)
        raise RuntimeError("payment capture failed")
    assert Push.objects.count() == 0
    assert talon.sent() == []


def test_each_signal_is_received_once(talon, send):
    order = make_order()
    send("cart_updated", cart=order)
    assert Push.objects.count() == 1
    assert len(talon.sent()) == 1


class QueryingAdapter(ShopAdapter):
    def session_payload(self, obj: Any, state: str | None = None) -> dict[str, Any]:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table")
        raise AssertionError("unreachable")


@pytest.mark.django_db(transaction=True)
def test_a_database_error_in_the_adapter_leaves_the_shop_transaction_usable(talon, settings):
    settings.TALONONE = {**settings.TALONONE, "ADAPTER": "tests.test_receivers.QueryingAdapter"}
    order = make_order()
    with transaction.atomic():
        signals.order_paid.send(sender=Order, order=order)
        order.status = "paid"
        order.save()  # would raise TransactionManagementError if the error had poisoned it
    order.refresh_from_db()
    assert order.status == "paid"
    push = Push.objects.get()
    assert push.state == "failed"
    assert push.error_class in ("OperationalError", "ProgrammingError")  # SQLite, PostgreSQL
    assert "no_such_table" in push.last_error
