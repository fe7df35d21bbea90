"""Model-signal mode: order status transitions send each lifecycle signal once, never on a save
that leaves the status alone, never raising into the shop's save; and its system checks."""

import logging

import pytest
from django.contrib.auth.models import User
from django.db.models.signals import post_save, pre_save

from django_talonone import model_signals, signals
from django_talonone.checks import check_order_model
from tests.shop.models import Order, OrderLine

BASE = {"BASE_URL": "https://acme.europe-west1.talon.one", "API_KEY": "key-123"}
MAP = {
    "placed": "open",
    "processing": "open",
    "paid": "closed",
    "partially_returned": "partially_returned",
    "returned": "partially_returned",
    "cancelled": "cancelled",
}
LIFECYCLE = ("order_placed", "order_paid", "order_cancelled", "order_returned", "order_reopened")


@pytest.fixture
def mode(settings):
    settings.TALONONE = {**BASE, "ORDER_MODEL": "shop.Order", "ORDER_STATUS_MAP": MAP}
    assert model_signals.connected_model() is Order
    return settings


@pytest.fixture
def sent():
    """The lifecycle signals sent, as (name, kwargs) pairs."""
    calls = []
    for name in LIFECYCLE:

        def record(sender, name=name, **kwargs):
            kwargs.pop("signal")
            calls.append((name, kwargs))

        getattr(signals, name).connect(record, weak=False, dispatch_uid=f"test-{name}")
    yield calls
    for name in LIFECYCLE:
        getattr(signals, name).disconnect(dispatch_uid=f"test-{name}")


def names(calls):
    return [name for name, _ in calls]


def move(order, status):
    order.status = status
    order.save()


pytestmark = pytest.mark.django_db


def test_a_whole_order_life_sends_each_signal_once(mode, sent):
    order = Order.objects.create(status="placed", customer=User.objects.create(username="ann"))
    assert sent == [("order_placed", {"order": order})]
    order.note = "gift wrap"
    order.save()  # no status change
    move(order, "processing")  # open → open: nothing for Talon.One
    move(order, "paid")
    order.save()
    move(order, "shipped")  # not mapped
    move(order, "returned")
    move(order, "cancelled")
    assert names(sent) == ["order_placed", "order_paid", "order_returned", "order_cancelled"]
    assert sent[2] == ("order_returned", {"order": order, "lines": None, "return_id": None})


def test_an_order_created_paid_sends_order_paid_only(mode, sent):
    Order.objects.create(status="paid")
    assert names(sent) == ["order_paid"]


def test_unmapped_statuses_send_nothing_until_a_mapped_one(mode, sent):
    order = Order.objects.create(status="cart")
    assert sent == []
    move(order, "placed")
    assert names(sent) == ["order_placed"]


def test_a_paid_order_set_back_to_placed_is_reopened(mode, sent):
    order = Order.objects.create(status="paid")
    move(order, "placed")
    move(order, "paid")
    assert names(sent) == ["order_paid", "order_reopened", "order_paid"]


def test_a_partial_then_full_return_sends_two_returns(mode, sent):
    order = Order.objects.create(status="paid")
    move(order, "partially_returned")
    move(order, "returned")
    assert names(sent) == ["order_paid", "order_returned", "order_returned"]


def test_moves_talon_one_refuses_are_logged_not_sent(mode, sent, caplog):
    first = Order.objects.create(status="placed")
    second = Order.objects.create(status="paid")
    with caplog.at_level(logging.WARNING, logger="django_talonone.model_signals"):
        move(first, "cancelled")
        move(first, "paid")  # out of cancelled
        move(second, "returned")
        move(second, "cancelled")
        second.status = "returned"
        second.save()  # out of cancelled again
    assert names(sent) == [
        "order_placed",
        "order_paid",
        "order_cancelled",
        "order_returned",
        "order_cancelled",
    ]
    assert "cannot move from cancelled to closed" in caplog.text
    assert "cannot move from cancelled to partially_returned" in caplog.text


def test_the_previous_status_comes_from_the_database_not_the_instance(mode, sent):
    order = Order.objects.create(status="placed")
    stale = Order.objects.get(pk=order.pk)
    move(order, "paid")
    stale.save()  # a stale copy writes "placed" back: that is a real transition (a reopen)
    assert names(sent) == ["order_placed", "order_paid", "order_reopened"]
    # A copy built by hand with the same pk is compared with what is stored.
    Order(pk=order.pk, status="placed").save()
    assert len(sent) == 3


def test_update_fields_without_the_status_skips_the_lookup(mode, sent, django_assert_num_queries):
    order = Order.objects.create(status="placed")
    order.status = "paid"  # changed in memory but not saved below
    with django_assert_num_queries(1):  # the UPDATE only
        order.save(update_fields=["note"])
    order.save(update_fields=["status"])
    assert names(sent) == ["order_placed", "order_paid"]


def test_raw_saves_from_fixtures_send_nothing(mode, sent):
    order = Order(status="paid")
    order.save_base(raw=True)
    assert sent == []


def test_queryset_update_bypasses_save_and_sends_nothing(mode, sent):
    order = Order.objects.create(status="placed")
    Order.objects.filter(pk=order.pk).update(status="paid")
    assert names(sent) == ["order_placed"]


def test_a_failing_receiver_never_breaks_the_shops_save(mode, sent, caplog):
    def broken(sender, order, **kwargs):
        # Its own write goes, with it, back to the savepoint.
        OrderLine.objects.create(order=order, sku="GHOST", price=1)
        raise RuntimeError("receiver bug")

    signals.order_paid.connect(broken, dispatch_uid="test-broken")
    try:
        with caplog.at_level(logging.ERROR, logger="django_talonone.model_signals"):
            order = Order.objects.create(status="placed")
            move(order, "paid")
    finally:
        signals.order_paid.disconnect(dispatch_uid="test-broken")
    assert Order.objects.get(pk=order.pk).status == "paid"
    assert not OrderLine.objects.filter(sku="GHOST").exists()
    assert "receiver bug" in caplog.text


def test_a_broken_status_lookup_is_logged_and_the_save_goes_on(mode, sent, caplog, monkeypatch):
    monkeypatch.setattr(model_signals, "_status_attname", lambda model: 1 / 0)
    with caplog.at_level(logging.ERROR, logger="django_talonone.model_signals"):
        order = Order.objects.create(status="paid")
    assert Order.objects.filter(pk=order.pk).exists()
    assert sent == []
    assert "ZeroDivisionError" in caplog.text


def test_the_mode_is_off_without_order_model_and_follows_settings(settings, sent):
    settings.TALONONE = BASE
    assert model_signals.connected_model() is None
    Order.objects.create(status="paid")
    assert sent == []
    settings.TALONONE = {**BASE, "ORDER_MODEL": "shop.Order", "ORDER_STATUS_MAP": MAP}
    Order.objects.create(status="paid")
    assert names(sent) == ["order_paid"]
    # Connecting twice connects once.
    model_signals.connect()
    model_signals.connect()
    assert [key[0] for key, *_ in pre_save.receivers].count(model_signals.PRE_SAVE_UID) == 1
    Order.objects.create(status="paid")
    assert names(sent) == ["order_paid", "order_paid"]


def test_an_unknown_order_model_is_logged_not_raised(settings, caplog):
    with caplog.at_level(logging.WARNING, logger="django_talonone.model_signals"):
        settings.TALONONE = {**BASE, "ORDER_MODEL": "shop.Nope", "ORDER_STATUS_MAP": MAP}
    assert model_signals.connected_model() is None
    assert "shop.Nope" in caplog.text
    assert model_signals.POST_SAVE_UID not in [key[0] for key, *_ in post_save.receivers]


def test_integer_statuses_match_string_keys(mode):
    assert model_signals._state_for("paid") == "closed"
    mode.TALONONE = {**mode.TALONONE, "ORDER_STATUS_MAP": {"3": "closed", 4: "cancelled"}}
    assert model_signals._state_for(3) == "closed"
    assert model_signals._state_for(4) == "cancelled"
    assert model_signals._state_for(["unhashable"]) is None
    assert model_signals._state_for(None) is None


@pytest.mark.parametrize(
    ("before", "after", "created", "expected"),
    [
        (None, "open", True, "order_placed"),
        (None, "closed", True, "order_paid"),
        (None, "cancelled", True, None),
        (None, "partially_returned", True, None),
        ("open", "open", False, None),
        (None, "open", False, "order_placed"),
        ("closed", "open", False, "order_reopened"),
        ("partially_returned", "open", False, "order_reopened"),
        ("open", "closed", False, "order_paid"),
        (None, "closed", False, "order_paid"),
        ("partially_returned", "closed", False, None),
        ("open", "cancelled", False, "order_cancelled"),
        ("closed", "cancelled", False, "order_cancelled"),
        ("cancelled", "open", False, None),
        ("closed", "partially_returned", False, "order_returned"),
        ("partially_returned", "partially_returned", False, "order_returned"),
        ("open", "partially_returned", False, None),
        ("closed", None, False, None),
    ],
)
def test_transition_table(before, after, created, expected):
    signal = model_signals.transition_signal(before, after, created=created)
    assert signal is (getattr(signals, expected) if expected else None)


# ---- system checks ---------------------------------------------------------------------------


def ids(settings, **extra):
    settings.TALONONE = {**BASE, **extra}
    return [m.id for m in check_order_model()]


def test_checks_pass_for_a_good_configuration_and_when_the_mode_is_off(settings):
    assert ids(settings) == []
    assert ids(settings, ORDER_MODEL="shop.Order", ORDER_STATUS_MAP=MAP) == []
    assert ids(settings, ORDER_MODEL="shop.OrderLine", ORDER_STATUS_FIELD="sku",
               ORDER_STATUS_MAP={"X": "closed"}) == []  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"ORDER_MODEL": "shop.Nope", "ORDER_STATUS_MAP": MAP}, ["talonone.E020"]),
        ({"ORDER_MODEL": "Order", "ORDER_STATUS_MAP": MAP}, ["talonone.E020"]),
        ({"ORDER_MODEL": 5, "ORDER_STATUS_MAP": MAP}, ["talonone.E020"]),
        (
            {"ORDER_MODEL": "shop.Order", "ORDER_STATUS_FIELD": "state", "ORDER_STATUS_MAP": MAP},
            ["talonone.E021"],
        ),
        (
            {"ORDER_MODEL": "shop.Order", "ORDER_STATUS_FIELD": "lines", "ORDER_STATUS_MAP": MAP},
            ["talonone.E021"],
        ),
        ({"ORDER_MODEL": "shop.Order", "ORDER_STATUS_MAP": ["paid"]}, ["talonone.E022"]),
        (
            {"ORDER_MODEL": "shop.Order", "ORDER_STATUS_MAP": {"paid": "done"}},
            ["talonone.E023"],
        ),
        ({"ORDER_MODEL": "shop.Order"}, ["talonone.E026"]),
        ({"ORDER_STATUS_MAP": MAP}, ["talonone.E027"]),
        (
            {"ORDER_MODEL": "shop.Order", "ORDER_STATUS_MAP": {"payed": "closed"}},
            ["talonone.E028"],
        ),
    ],
)
def test_checks_catch_each_mistake(settings, extra, expected):
    settings.TALONONE = {**BASE, **extra}
    found = check_order_model()
    assert [m.id for m in found] == expected
    assert all(m.hint for m in found)


def test_check_messages_name_the_problem(settings):
    settings.TALONONE = {**BASE, "ORDER_MODEL": "shop.Order", "ORDER_STATUS_FIELD": "state",
                         "ORDER_STATUS_MAP": MAP}  # fmt: skip
    (message,) = check_order_model()
    assert "'state'" in message.msg and "shop.Order" in message.msg
    assert "status" in message.hint  # lists the model's fields
    settings.TALONONE = {**BASE, "ORDER_MODEL": "shop.Order", "ORDER_STATUS_MAP": {"paid": "x"}}
    (message,) = check_order_model()
    assert "'x'" in message.msg and "partially_returned" in message.hint


def test_the_checks_are_registered(settings):
    from django.core import checks

    settings.TALONONE = {
        **BASE,
        "ORDER_MODEL": "shop.Nope",
        "ORDER_STATUS_MAP": MAP,
        "ADAPTER": "x",
    }
    found = {m.id for m in checks.run_checks(tags=["talonone"])}
    assert {"talonone.E020", "talonone.E024"} <= found
