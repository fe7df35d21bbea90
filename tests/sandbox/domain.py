"""Drive the sandbox's domain layer (``handlers.handle``) directly, without HTTP.

``Domain`` wraps a fresh :class:`State`; ``call`` answers ``(status, body)`` for every operation
(ApiError answers become their status and error envelope) so that tests read like API calls.
"""

from __future__ import annotations

import copy
import datetime
import json
from pathlib import Path
from typing import Any

from django_talonone.client.schema import OPERATIONS
from django_talonone.sandbox.handlers import handle
from django_talonone.sandbox.state import State
from django_talonone.sandbox.wire import ApiError, Call

OPS = {op["name"]: op for op in OPERATIONS}
DEMO_FILE = Path(__file__).resolve().parents[2] / "django_talonone/sandbox/campaigns/demo.json"
DEMO = json.loads(DEMO_FILE.read_text(encoding="utf-8"))

#: The demo walk-through's 5-line cart (cart item total 162.00).
DEMO_CART = [
    {"sku": "SKU-TSHIRT", "name": "T-shirt", "quantity": 2, "price": 20.0, "category": "shirts"},
    {"sku": "SKU-SNEAKER", "name": "Sneaker", "quantity": 1, "price": 80.0, "category": "shoes"},
    {"sku": "SKU-SOCKS", "name": "Socks", "quantity": 3, "price": 5.0, "category": "socks"},
    {"sku": "SKU-CAP", "name": "Cap", "quantity": 1, "price": 15.0, "category": "hats"},
    {"sku": "SKU-MUG", "name": "Mug", "quantity": 1, "price": 12.0, "category": "home"},
]
SHIPPING = {"shipping": {"price": 4.95}}


class Domain:
    """A sandbox state and a way to call its operations."""

    def __init__(self, campaigns: dict[str, Any] | None = None) -> None:
        self.state = State(copy.deepcopy(DEMO) if campaigns is None else campaigns)
        self.now: datetime.datetime | None = None

    def call(
        self,
        name: str,
        *path_args: Any,
        body: Any = None,
        headers: dict[str, str] | None = None,
        **query: Any,
    ) -> tuple[int, Any]:
        """Call an operation: path parameters in path order, query parameters by wire name."""
        op = OPS[name]
        path = {
            wire: value
            for (wire, _py, _type), value in zip(op["path_params"], path_args, strict=True)
        }
        raw_query: dict[str, list[str]] = {}
        for key, value in query.items():
            values = value if isinstance(value, list) else [value]
            raw_query[key] = [str(v).lower() if isinstance(v, bool) else str(v) for v in values]
        call = Call(
            op,
            path,
            raw_query,
            copy.deepcopy(body),
            {k.lower(): v for k, v in (headers or {}).items()},
        )
        if self.now is not None:
            call.received = self.now
        try:
            status, answer = handle(self.state, call)
        except ApiError as exc:
            return exc.status, exc.body()
        # what the HTTP layer would send: plain JSON
        return status, None if answer is None else json.loads(json.dumps(answer))

    def ok(self, name: str, *path_args: Any, **kwargs: Any) -> Any:
        """Call an operation that must succeed; answers its body."""
        status, answer = self.call(name, *path_args, **kwargs)
        assert status in OPS[name]["success"], (status, answer)
        return answer

    def session(
        self,
        sid: str,
        *,
        profile: str | None = "demo-customer",
        cart: list[dict[str, Any]] | None = None,
        coupons: list[str] | None = None,
        state: str | None = None,
        parts: list[str] | None = None,
        **fields: Any,
    ) -> tuple[int, Any]:
        """UpdateCustomerSessionV2 with the demo cart unless told otherwise."""
        body = session_body(
            profile=profile, cart=cart, coupons=coupons, state=state, parts=parts, **fields
        )
        query = {k: fields.pop(k) for k in ("dry", "now") if k in fields}
        return self.call("update_customer_session_v2", sid, body=body, **query)

    def balance(self, profile: str = "demo-customer", program: int = 1) -> dict[str, Any]:
        """The main ledger balance of a profile (GetLoyaltyBalances)."""
        return self.ok("get_loyalty_balances", program, profile)["balance"]


def session_body(
    *,
    profile: str | None = "demo-customer",
    cart: list[dict[str, Any]] | None = None,
    coupons: list[str] | None = None,
    state: str | None = None,
    parts: list[str] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """An IntegrationRequest body."""
    fields.pop("dry", None)
    fields.pop("now", None)
    cs: dict[str, Any] = {"cartItems": copy.deepcopy(DEMO_CART if cart is None else cart)}
    if profile is not None:
        cs["profileId"] = profile
    if coupons is not None:
        cs["couponCodes"] = coupons
    if state is not None:
        cs["state"] = state
    cs.update(fields)
    body: dict[str, Any] = {"customerSession": cs}
    if parts is not None:
        body["responseContent"] = parts
    return body


def effects_of(answer: dict[str, Any], effect_type: str) -> list[dict[str, Any]]:
    """The effects of one type in an answer."""
    return [e for e in answer["effects"] if e["effectType"] == effect_type]


def one(answer: dict[str, Any], effect_type: str) -> dict[str, Any]:
    """The single effect of a type in an answer."""
    found = effects_of(answer, effect_type)
    assert len(found) == 1, (effect_type, [e["effectType"] for e in answer["effects"]])
    return found[0]


def types_of(answer: dict[str, Any]) -> list[str]:
    """The effect types of an answer, in order."""
    return [e["effectType"] for e in answer["effects"]]
