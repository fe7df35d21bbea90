"""Terminal demo: a customer's cart through Talon.One, against the local sandbox.

Starts the sandbox with its demo campaigns, then walks one customer's cart from open to closed
(and one line returned), printing the effects Talon.One answers and the loyalty points at each
step. Run it with ``make demo``; nothing leaves this machine.
"""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from django_talonone.client import IntegrationClient  # noqa: E402
from django_talonone.effects import allocate_discounts, read_effects  # noqa: E402
from django_talonone.sandbox import Sandbox  # noqa: E402

CAMPAIGNS = ROOT / "django_talonone" / "sandbox" / "campaigns" / "demo.json"
PROFILE = "demo-customer"
SESSION = "demo-order-1001"
PROGRAM = 1
CENT = Decimal("0.01")

CART = [
    {"sku": "SKU-TSHIRT", "name": "T-shirt", "quantity": 2, "price": 20, "category": "clothes"},
    {"sku": "SKU-SNEAKER", "name": "Sneakers", "quantity": 1, "price": 80, "category": "shoes"},
    {"sku": "SKU-SOCKS", "name": "Socks", "quantity": 3, "price": 5, "category": "clothes"},
    {"sku": "SKU-CAP", "name": "Cap", "quantity": 1, "price": 15, "category": "accessories"},
    {"sku": "SKU-MUG", "name": "Mug", "quantity": 1, "price": 12, "category": "home"},
]
SHIPPING = {"shipping": {"price": 4.95}}


def main() -> None:
    """Run the walk-through and print what happens at each step."""
    with Sandbox(campaigns=CAMPAIGNS) as sandbox:
        print(f"Talon.One sandbox listening on {sandbox.url} (demo campaigns loaded)\n")
        client = IntegrationClient(sandbox.url, sandbox.api_key)

        step("1. The customer puts two items in the cart")
        state = update(client, {"cartItems": CART[:2]})
        show_effects(state, CART[:2])

        step("2. The whole cart, shipping, and the coupon WELCOME10")
        state = update(
            client, {"cartItems": CART, "additionalCosts": SHIPPING, "couponCodes": ["WELCOME10"]}
        )
        show_effects(state, CART)
        show_points(client, "loyalty before checkout")

        step("3. A code that does not exist")
        state = update(client, {"couponCodes": ["WELCOME10", "NOSUCHCODE"]})
        for coupon in read_effects(state["effects"]).rejected_coupons:
            print(f"   rejected {coupon.code}: {coupon.message} ({coupon.reason})")

        step("4. Payment succeeds: the session is closed")
        state = update(client, {"couponCodes": ["WELCOME10"], "state": "closed"})
        print(f"   session state: {state['customerSession']['state']}")
        show_points(client, "loyalty after closing")

        step("5. The customer returns the mug")
        state = client.return_cart_items(
            SESSION,
            {
                "return": {"returnedCartItems": [{"position": 4, "quantity": 1}]},
                "responseContent": ["customerSession"],
            },
        )
        print(f"   session state: {state['customerSession']['state']}")
        for effect in state["effects"]:
            if effect["effectType"].startswith("rollback"):
                print(f"   {effect['effectType']}: {brief(effect['props'])}")
        show_points(client, "loyalty after the return")
        print(f"\nThe sandbox answered {len(sandbox.requests)} requests. Done.")


def update(client: IntegrationClient, session: dict[str, Any]) -> dict[str, Any]:
    """Send the session for the demo customer and return Talon.One's answer."""
    body = {
        "customerSession": {"profileId": PROFILE, **session},
        "responseContent": ["customerSession", "customerProfile", "loyalty"],
    }
    return client.update_customer_session_v2(SESSION, body)


def show_effects(state: dict[str, Any], cart: list[dict[str, Any]]) -> None:
    """Print the effects of an answer the way a shop would use them."""
    effects = read_effects(state["effects"])
    for coupon in effects.accepted_coupons:
        print(f"   coupon {coupon.code} accepted")
    for line in allocate_discounts(effects, cart):
        item = cart[line.position]
        if line.discount:
            print(f"   line {line.position} {item['name']}: -{line.discount} EUR")
    for name, value in effects.additional_cost_discounts.items():
        print(f"   {name}: -{value} EUR")
    total = sum((Decimal(str(i["price"])) * i["quantity"] for i in cart), Decimal(0))
    discount = effects.cart_and_item_discount_total.quantize(CENT)
    total = total.quantize(CENT)
    print(f"   cart {total} EUR, discounts -{discount} EUR, to pay {total - discount} EUR")
    for points in effects.loyalty_points_earned:
        print(f"   earns {points.value} points in program {points.program_id} (pending)")
    for item in effects.free_items:
        print(f"   free item: {item.sku} {item.name}")
    for note in effects.notifications:
        print(f"   notification: {note.title}: {note.body}")
    for custom in effects.custom_effects:
        print(f"   custom effect {custom.name}: {custom.payload}")


def show_points(client: IntegrationClient, label: str) -> None:
    """Print the customer's balance in the demo program."""
    balance = client.get_loyalty_balances(PROGRAM, PROFILE)["balance"]
    print(
        f"   {label}: {balance.get('activePoints', 0)} active, "
        f"{balance.get('pendingPoints', 0)} pending"
    )


def step(title: str) -> None:
    """Print a step heading."""
    print(f"\n{title}")


def brief(props: dict[str, Any]) -> str:
    """A one-line view of effect props."""
    return ", ".join(f"{k}={v}" for k, v in props.items() if not isinstance(v, (dict, list)))


if __name__ == "__main__":
    main()
