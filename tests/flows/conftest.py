"""Whole-flow fixtures: the real signals, adapter and outbox against the sandbox over real HTTP.

The tests run on the test database with ``transaction=True``: inline dispatch sends a push when
the shop's transaction commits, so the commits must be real ones.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.dispatch import Signal
from django.utils import timezone

from django_talonone import outbox, signals
from django_talonone.adapters import ShopAdapter
from django_talonone.models import Push
from django_talonone.sandbox import Sandbox
from tests.shop.models import Order

DEMO_CAMPAIGNS = Path(__file__).resolve().parents[2] / "django_talonone/sandbox/campaigns/demo.json"
DEMO_CUSTOMER = "demo-customer"
#: Program 1 points demo-customer has before any order (demo.json seeds them).
SEEDED_POINTS = Decimal(200)

#: The cart of demo.json's "_walkthrough": (sku, name, quantity, unit price, category).
#: With WELCOME10 and 4.95 shipping it gets 16.00 off the sneakers, 14.60 off the cart, free
#: shipping and 162 points (1 per EUR of the 162.00 cart item total).
DEMO_LINES = [
    ("SKU-TSHIRT", "T-shirt", 2, "20.00", "shirts"),
    ("SKU-SNEAKER", "Sneakers", 1, "80.00", "shoes"),
    ("SKU-SOCKS", "Socks", 3, "5.00", "socks"),
    ("SKU-CAP", "Cap", 1, "15.00", "hats"),
    ("SKU-MUG", "Mug", 1, "12.00", "home"),
]
DEMO_POINTS = Decimal(162)


class FlowAdapter(ShopAdapter):
    """The test shop's adapter: a customer's profile integration id is their username, and
    their name is sent as the profile's ``Name`` attribute."""

    def profile_id_for_user(self, user: Any) -> str:
        return user.username

    def profile_attributes(self, user: Any) -> dict[str, Any]:
        name = user.get_full_name()
        return {"Name": name} if name else {}


@pytest.fixture
def sandbox(talonone_sandbox: Sandbox, settings: Any) -> Iterator[Sandbox]:
    """The sandbox with the demo campaigns; TALONONE points at it with inline dispatch."""
    talonone_sandbox.load_campaigns(DEMO_CAMPAIGNS)
    settings.TALONONE = {
        **settings.TALONONE,
        "ADAPTER": "tests.flows.conftest.FlowAdapter",
        "DISPATCH": "inline",
        "LOYALTY_PROGRAM_IDS": [1],
        "RATE_LIMIT": None,
    }
    yield talonone_sandbox
    # A request the client gave up on may still be sleeping in the sandbox: let it end before
    # the next test resets the sandbox.
    wait_until_idle(talonone_sandbox)


@pytest.fixture
def customer(transactional_db: None) -> Any:
    """The shop user whose profile is demo.json's ``demo-customer`` (audience 1, 200 points)."""
    return get_user_model().objects.create_user(DEMO_CUSTOMER, "demo@example.com")


@dataclass
class Received:
    """The app's signals (effects_updated, loyalty_updated, push_failed) as receivers saw them."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def of(self, name: str) -> list[dict[str, Any]]:
        return [kwargs for signal, kwargs in self.calls if signal == name]

    def clear(self) -> None:
        self.calls.clear()


@pytest.fixture
def received() -> Iterator[Received]:
    """Records each app signal with its arguments and whether a transaction was still open."""
    record = Received()
    connected: list[tuple[Signal, Any]] = []
    for name, signal in signals.APP_SIGNALS.items():

        def receiver(sender: Any, _name: str = name, **kwargs: Any) -> None:
            kwargs.pop("signal", None)
            kwargs["sender"] = sender
            kwargs["in_transaction"] = connection.in_atomic_block
            record.calls.append((_name, kwargs))

        signal.connect(receiver, weak=False)
        connected.append((signal, receiver))
    yield record
    for signal, receiver in connected:
        signal.disconnect(receiver)


# --- the shop -------------------------------------------------------------------------------


def make_order(customer: Any = None, *, lines: Any = DEMO_LINES, **fields: Any) -> Order:
    """An order of the test shop: the demo cart with WELCOME10 and 4.95 shipping by default."""
    fields.setdefault("coupon_code", "WELCOME10")
    fields.setdefault("shipping_cost", Decimal("4.95"))
    order = Order.objects.create(customer=customer, **fields)
    for sku, name, quantity, price, category in lines:
        order.lines.create(
            sku=sku, name=name, quantity=quantity, price=Decimal(price), category=category
        )
    return order


def shop_sends(signal: Signal, obj: Any, status: str | None = None, **kwargs: Any) -> None:
    """What a shop view does: change the order (or user) and send the signal, in one
    transaction."""
    with transaction.atomic():
        if status is not None:
            obj.status = status
            obj.save(update_fields=["status"])
        if signal is signals.cart_updated:
            argument = "cart"
        elif signal in (signals.customer_updated, signals.customer_deleted):
            argument = "user"
        else:
            argument = "order"
        signal.send(sender=type(obj), **{argument: obj}, **kwargs)


def pay(order: Order) -> None:
    """The demo order's cart goes to Talon.One, then the order is paid (session closed)."""
    shop_sends(signals.cart_updated, order)
    shop_sends(signals.order_paid, order, status=Order.Status.PAID)


# --- Talon.One's side -----------------------------------------------------------------------


def session_id(order: Order) -> str:
    return f"shop.order-{order.pk}"


def key_of(order: Order) -> str:
    return outbox.session_key(session_id(order))


def sent(sandbox: Sandbox, operation: str, key: str | None = None) -> list[dict[str, Any]]:
    """The sandbox's log entries of ``operation`` (for one session or profile key), oldest first."""
    return [
        r
        for r in sandbox.requests
        if r["operation"] == operation and (key is None or r["key"] == key)
    ]


def active_points(sandbox: Sandbox, profile_id: str = DEMO_CUSTOMER) -> Decimal:
    """Program 1's active points of a profile, as Talon.One's GetLoyaltyBalances says."""
    with sandbox.client() as client:
        balances = client.get_loyalty_balances(1, profile_id)
    return Decimal(str(balances["balance"]["activePoints"]))


def retry_due() -> int:
    """Make every waiting retry due now and send it, as the retry runner would."""
    Push.objects.filter(state=Push.State.PENDING).update(next_attempt_at=timezone.now())
    return outbox.process_due()


def wait_until_idle(sandbox: Sandbox, limit: float = 10.0) -> None:
    """Wait until the sandbox has no request in progress (one the client gave up on)."""
    deadline = time.monotonic() + limit
    while sandbox.counters["in_flight"]:
        if time.monotonic() > deadline:
            raise AssertionError(f"the sandbox is still busy: {sandbox.counters['in_flight']}")
        time.sleep(0.01)
