"""Customer sessions in the sandbox's domain layer: states, moves, updates, dry runs, returns."""

from __future__ import annotations

import datetime
import random
from typing import Any

import pytest

from .domain import DEMO_CART, SHIPPING, Domain, effects_of, one, session_body, types_of

STATES = ("open", "closed", "partially_returned", "cancelled")
ALLOWED = {
    None: {"open", "closed"},
    "open": {"open", "closed", "cancelled"},
    "closed": {"closed", "cancelled"},
    "partially_returned": {"partially_returned", "cancelled"},
    "cancelled": {"cancelled"},
}


@pytest.fixture
def dom() -> Domain:
    return Domain()


def reach(dom: Domain, sid: str, state: str | None) -> None:
    """Bring session ``sid`` into ``state`` (None: leave it unknown)."""
    if state is None:
        return
    dom.ok("update_customer_session_v2", sid, body=session_body(coupons=["WELCOME10"]))
    if state in ("closed", "partially_returned"):
        dom.ok("update_customer_session_v2", sid, body={"customerSession": {"state": "closed"}})
    if state == "partially_returned":
        body = {"return": {"returnedCartItems": [{"position": 0, "quantity": 1}]}}
        dom.ok("return_cart_items", sid, body=body)
    if state == "cancelled":
        dom.ok("update_customer_session_v2", sid, body={"customerSession": {"state": "cancelled"}})
    assert dom.ok("get_customer_session", sid)["customerSession"]["state"] == state


@pytest.mark.parametrize("current", [None, *STATES])
@pytest.mark.parametrize("wanted", STATES)
def test_every_update_move(dom: Domain, current: str | None, wanted: str) -> None:
    reach(dom, "s1", current)
    status, answer = dom.call(
        "update_customer_session_v2", "s1", body={"customerSession": {"state": wanted}}
    )
    if wanted in ALLOWED[current]:
        assert status == 200, answer
        assert dom.ok("get_customer_session", "s1")["customerSession"]["state"] == wanted
    else:
        assert status == 400, answer
        assert "Invalid session state transition" in answer["message"]
        assert answer["errors"][0]["source"] == {"pointer": "/customerSession/state"}
        after = dom.call("get_customer_session", "s1")
        assert after[0] == (404 if current is None else 200)


@pytest.mark.parametrize(
    ("current", "hint"),
    [
        ("closed", "reopen"),
        ("partially_returned", "returns"),
    ],
)
def test_invalid_move_messages_say_which_endpoint(dom: Domain, current: str, hint: str) -> None:
    reach(dom, "s1", current)
    wanted = "open" if current == "closed" else "closed"
    status, answer = dom.call(
        "update_customer_session_v2", "s1", body={"customerSession": {"state": wanted}}
    )
    assert status == 400
    if current == "closed":
        assert "reopen" in answer["message"]
    else:
        assert "partially_returned" in answer["message"] or "cannot move" in answer["message"]


def test_only_returns_make_a_session_partially_returned(dom: Domain) -> None:
    reach(dom, "s1", "closed")
    status, answer = dom.call(
        "update_customer_session_v2",
        "s1",
        body={"customerSession": {"state": "partially_returned"}},
    )
    assert status == 400
    assert "returns" in answer["message"]


def test_a_session_can_be_created_closed(dom: Domain) -> None:
    before = dom.balance()["activePoints"]
    answer = dom.ok(
        "update_customer_session_v2",
        "legacy-1",
        body=session_body(coupons=["WELCOME10"], state="closed", parts=["customerSession"]),
    )
    assert answer["customerSession"]["state"] == "closed"
    assert one(answer, "acceptCoupon")["props"]["value"] == "WELCOME10"
    assert one(answer, "awardGiveaway")["props"]["code"] == "GIFT-0001"
    # committed at once: the points are active and the coupon is used
    assert dom.balance()["activePoints"] == before + 162
    assert dom.state.data["coupons"]["WELCOME10"]["usageCounter"] == 1


@pytest.mark.parametrize("current", [None, "open", "partially_returned", "cancelled"])
def test_reopen_only_from_closed(dom: Domain, current: str | None) -> None:
    reach(dom, "s1", current)
    status, answer = dom.call("reopen_customer_session", "s1")
    if current is None:
        assert status == 404
    else:
        assert status == 400
        assert "only a closed session can be reopened" in answer["message"]


def test_reopen_answers_rollbacks_and_the_next_close_commits_once(dom: Domain) -> None:
    before = dom.balance()["activePoints"]
    reach(dom, "s1", "closed")
    profile = dom.state.data["profiles"]["demo-customer"]
    assert profile["closedSessions"] == 1
    assert dom.balance()["activePoints"] == before + 162

    answer = dom.ok("reopen_customer_session", "s1")
    rolled = types_of(answer)
    assert "rollbackDiscount" in rolled
    assert "rollbackCoupon" in rolled
    assert "rollbackAddedLoyaltyPoints" in rolled
    # free items, giveaways, custom effects and created coupons are not rolled back
    assert not {"addFreeItem", "awardGiveaway", "customEffect", "couponCreated"} & set(rolled)
    assert dom.ok("get_customer_session", "s1")["customerSession"]["state"] == "open"
    # reopened sessions do not count as closed; budgets wait for the next close or cancel
    assert profile["closedSessions"] == 0
    assert dom.state.data["coupons"]["WELCOME10"]["usageCounter"] == 1

    # the reopened session may still use its own coupon although its profile limit is 1
    again = dom.ok("update_customer_session_v2", "s1", body=session_body(coupons=["WELCOME10"]))
    assert one(again, "acceptCoupon")["props"]["value"] == "WELCOME10"
    dom.ok("update_customer_session_v2", "s1", body={"customerSession": {"state": "closed"}})
    assert dom.state.data["coupons"]["WELCOME10"]["usageCounter"] == 1
    assert profile["closedSessions"] == 1
    assert dom.balance()["activePoints"] == before + 162


def test_cancelling_a_reopened_session_releases_what_it_committed(dom: Domain) -> None:
    before = dom.balance()["activePoints"]
    reach(dom, "s1", "closed")
    dom.ok("reopen_customer_session", "s1")
    answer = dom.ok(
        "update_customer_session_v2", "s1", body={"customerSession": {"state": "cancelled"}}
    )
    assert answer["effects"] == []  # the rollbacks were answered by the reopen
    assert dom.state.data["coupons"]["WELCOME10"]["usageCounter"] == 0
    assert dom.balance()["activePoints"] == before


def test_cancelling_a_closed_session_rolls_back_and_nets_out(dom: Domain) -> None:
    before = dom.balance()["activePoints"]
    reach(dom, "s1", "closed")
    answer = dom.ok(
        "update_customer_session_v2", "s1", body={"customerSession": {"state": "cancelled"}}
    )
    assert sorted(set(types_of(answer))) == [
        "rollbackAddedLoyaltyPoints",
        "rollbackCoupon",
        "rollbackDiscount",
        "rollbackIncreasedAchievementProgress",
    ]
    discounts = {
        e["props"]["name"]: e["props"]["value"] for e in effects_of(answer, "rollbackDiscount")
    }
    assert discounts == {"20% off shoes": 16.0, "Welcome discount 10%": 14.6}
    assert dom.ok("get_customer_session", "s1")["effects"] == []
    assert dom.state.data["coupons"]["WELCOME10"]["usageCounter"] == 0
    assert dom.balance()["activePoints"] == before
    assert dom.state.data["profiles"]["demo-customer"]["closedSessions"] == 0


def test_cancelling_an_open_session_answers_no_effects(dom: Domain) -> None:
    reach(dom, "s1", "open")
    assert dom.balance()["pendingPoints"] == 162
    answer = dom.ok(
        "update_customer_session_v2", "s1", body={"customerSession": {"state": "cancelled"}}
    )
    assert answer["effects"] == []
    assert dom.balance()["pendingPoints"] == 0


def test_retrying_a_close_commits_once(dom: Domain) -> None:
    before = dom.balance()["activePoints"]
    reach(dom, "s1", "closed")
    first = dom.ok("get_customer_session", "s1")
    body = session_body(coupons=["WELCOME10"], state="closed")
    retry = dom.ok("update_customer_session_v2", "s1", body=body)
    assert retry["effects"] == first["effects"]
    assert dom.balance()["activePoints"] == before + 162
    assert dom.state.data["coupons"]["WELCOME10"]["usageCounter"] == 1
    assert dom.state.data["profiles"]["demo-customer"]["closedSessions"] == 1


def test_a_closed_sessions_cart_cannot_change(dom: Domain) -> None:
    reach(dom, "s1", "closed")
    status, answer = dom.call(
        "update_customer_session_v2", "s1", body=session_body(cart=DEMO_CART[:2], state="closed")
    )
    assert status == 400
    assert answer["errors"][0]["source"] == {"pointer": "/customerSession/cartItems"}
    status, answer = dom.call(
        "update_customer_session_v2",
        "s1",
        body={"customerSession": {"state": "closed", "couponCodes": ["POINTS100"]}},
    )
    assert status == 400
    assert answer["errors"][0]["source"] == {"pointer": "/customerSession/couponCodes"}


def test_updates_build_on_the_previous_state(dom: Domain) -> None:
    dom.ok(
        "update_customer_session_v2",
        "s1",
        body=session_body(coupons=["WELCOME10"], referralCode="FRIEND-DEMO", attributes={"a": 1}),
    )
    answer = dom.ok(
        "update_customer_session_v2",
        "s1",
        body={"customerSession": {"attributes": {"b": 2}}, "responseContent": ["customerSession"]},
    )
    session = answer["customerSession"]
    assert session["couponCodes"] == ["WELCOME10"]  # left out: kept
    assert len(session["cartItems"]) == 5
    assert session["attributes"] == {"a": 1, "b": 2}
    assert session["updateCount"] == 2
    answer = dom.ok(
        "update_customer_session_v2",
        "s1",
        body={
            "customerSession": {"couponCodes": [], "referralCode": ""},
            "responseContent": ["customerSession"],
        },
    )
    assert answer["customerSession"]["couponCodes"] == []  # [] drops the coupons
    assert answer["customerSession"]["referralCode"] == ""
    assert not effects_of(answer, "acceptCoupon")


def test_session_totals_positions_and_first_session(dom: Domain) -> None:
    answer = dom.ok(
        "update_customer_session_v2",
        "s1",
        body=session_body(additionalCosts=SHIPPING, parts=["customerSession"]),
    )
    session = answer["customerSession"]
    assert session["cartItemTotal"] == 162.0
    assert session["additionalCostTotal"] == 4.95
    assert session["total"] == 166.95
    assert [item["position"] for item in session["cartItems"]] == [0, 1, 2, 3, 4]
    assert session["firstSession"] is True
    assert session["applicationId"] == 1
    second = dom.ok(
        "update_customer_session_v2", "s2", body=session_body(parts=["customerSession"])
    )
    assert second["customerSession"]["firstSession"] is False
    assert second["customerSession"]["id"] != session["id"]


def test_catalog_items_may_leave_out_their_price(dom: Domain) -> None:
    cart = [{"sku": "SKU-SNEAKER", "quantity": 2}]
    answer = dom.ok(
        "update_customer_session_v2", "s1", body=session_body(cart=cart, parts=["customerSession"])
    )
    item = answer["customerSession"]["cartItems"][0]
    assert item["price"] == 80.0
    assert isinstance(item["catalogItemID"], int)
    assert answer["customerSession"]["cartItemTotal"] == 160.0


@pytest.mark.parametrize(
    ("fields", "pointer"),
    [
        (
            {"cartItems": [{"sku": "X", "quantity": 1, "price": 1}] * 1001},
            "/customerSession/cartItems",
        ),
        (
            {"cartItems": [{"sku": "X", "quantity": 10001, "price": 1}]},
            "/customerSession/cartItems",
        ),
        (
            {"cartItems": [{"sku": "X", "quantity": 0, "price": 1}]},
            "/customerSession/cartItems/0/quantity",
        ),
        (
            {"cartItems": [{"sku": "NOT-IN-CATALOG", "quantity": 1}]},
            "/customerSession/cartItems/0/price",
        ),
        (
            {"cartItems": [{"sku": "", "quantity": 1, "price": 1}]},
            "/customerSession/cartItems/0/sku",
        ),
        ({"couponCodes": ["OK", "X" * 101]}, "/customerSession/couponCodes/1"),
        ({"referralCode": "R" * 101}, "/customerSession/referralCode"),
        ({"loyaltyCards": ["a", "b"]}, "/customerSession/loyaltyCards"),
        ({"identifiers": ["1", "2", "3", "4", "5", "6"]}, "/customerSession/identifiers"),
        ({"state": "paid"}, "/customerSession/state"),
    ],
)
def test_semantic_limits_name_the_field(dom: Domain, fields: dict[str, Any], pointer: str) -> None:
    status, answer = dom.call("update_customer_session_v2", "s1", body={"customerSession": fields})
    assert status == 400, answer
    assert answer["errors"][0]["source"]["pointer"] == pointer
    assert dom.call("get_customer_session", "s1")[0] == 404


def test_dry_runs_persist_nothing(dom: Domain) -> None:
    answer = dom.ok(
        "update_customer_session_v2",
        "s1",
        body=session_body(coupons=["WELCOME10"], state="closed", parts=["customerSession"]),
        dry=True,
    )
    assert one(answer, "acceptCoupon")
    assert answer["customerSession"]["state"] == "closed"
    assert dom.call("get_customer_session", "s1")[0] == 404
    assert dom.state.data["coupons"]["WELCOME10"]["usageCounter"] == 0
    assert dom.balance() == {
        "activePoints": 200,
        "pendingPoints": 0,
        "spentPoints": 0,
        "expiredPoints": 0,
        "negativePoints": 0,
    }
    assert dom.state.data["giveaways"]["1"]["codes"][0]["profileIntegrationId"] is None


def test_dry_runs_count_only_the_payload(dom: Domain) -> None:
    dom.ok("update_customer_session_v2", "s1", body=session_body(coupons=["WELCOME10"]))
    answer = dom.ok(
        "update_customer_session_v2",
        "s1",
        body={"customerSession": {"profileId": "demo-customer", "cartItems": DEMO_CART[:1]}},
        dry=True,
    )
    assert not effects_of(answer, "acceptCoupon")  # the stored coupon does not count
    stored = dom.ok("get_customer_session", "s1")
    assert stored["customerSession"]["couponCodes"] == ["WELCOME10"]
    assert stored["customerSession"]["updateCount"] == 1


def test_now_only_with_dry_and_in_the_future(dom: Domain) -> None:
    future = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)).isoformat()
    status, answer = dom.call("update_customer_session_v2", "s1", body=session_body(), now=future)
    assert status == 400
    assert answer["errors"][0]["source"] == {"parameter": "now"}
    status, answer = dom.call(
        "update_customer_session_v2",
        "s1",
        body=session_body(),
        now="2001-01-01T00:00:00Z",
        dry=True,
    )
    assert status == 400
    assert (
        dom.call("update_customer_session_v2", "s1", body=session_body(), now=future, dry=True)[0]
        == 200
    )


def test_now_lets_a_dry_run_see_a_scheduled_campaign(dom: Domain) -> None:
    _, answer = dom.session("s1", coupons=["WINTER2099"])
    assert (
        one(answer, "rejectCoupon")["props"]["rejectionReason"] == "CouponPartOfNotRunningCampaign"
    )
    answer = dom.ok(
        "update_customer_session_v2",
        "s1",
        body=session_body(coupons=["WINTER2099"]),
        dry=True,
        now="2099-12-24T00:00:00Z",
    )
    assert one(answer, "acceptCoupon")["props"]["value"] == "WINTER2099"


# -- returns --------------------------------------------------------------------------------


def test_returns_roll_back_the_returned_units(dom: Domain) -> None:
    reach(dom, "s1", "closed")
    before = dom.balance()["activePoints"]
    body = {"return": {"returnedCartItems": [{"position": 1, "quantity": 1, "sku": "SKU-SNEAKER"}]}}
    answer = dom.ok("return_cart_items", "s1", body=body)
    assert answer["return"]["returnedCartItems"] == [
        {"position": 1, "quantity": 1, "sku": "SKU-SNEAKER"}
    ]
    per_item = [
        e for e in effects_of(answer, "rollbackDiscount") if e["props"]["name"] == "20% off shoes"
    ]
    assert per_item[0]["props"]["value"] == 16.0
    assert per_item[0]["props"]["cartItemPosition"] == 1
    points = one(answer, "rollbackAddedLoyaltyPoints")["props"]
    assert points["value"] == 80  # the sneaker's share of 162 points
    assert dom.balance()["activePoints"] == before - 80
    stored = dom.ok("get_customer_session", "s1")
    assert stored["customerSession"]["state"] == "partially_returned"
    item = stored["customerSession"]["cartItems"][1]
    assert (item["returnedQuantity"], item["remainingQuantity"]) == (1, 0)
    # the per-item discount of the returned sneaker is netted out of the session's effects
    assert not [e for e in effects_of(stored, "setDiscountPerItem") if e["props"]["position"] == 1]
    assert one(stored, "addLoyaltyPoints")["props"]["value"] == 82


def test_return_quantities_cannot_exceed_what_remains(dom: Domain) -> None:
    reach(dom, "s1", "closed")
    body = {"return": {"returnedCartItems": [{"position": 2, "quantity": 2}]}}
    dom.ok("return_cart_items", "s1", body=body)
    status, answer = dom.call("return_cart_items", "s1", body=body)
    assert status == 400
    assert answer["errors"][0]["source"]["pointer"] == "/return/returnedCartItems/0/quantity"
    for bad, pointer in [
        ({"position": 9, "quantity": 1}, "/return/returnedCartItems/0/position"),
        ({"position": 0, "sku": "SKU-MUG"}, "/return/returnedCartItems/0/sku"),
        ({"position": 0, "quantity": 0}, "/return/returnedCartItems/0/quantity"),
    ]:
        status, answer = dom.call(
            "return_cart_items", "s1", body={"return": {"returnedCartItems": [bad]}}
        )
        assert status == 400
        assert answer["errors"][0]["source"]["pointer"] == pointer


def test_returns_need_a_closed_session_and_the_return_wrapper(dom: Domain) -> None:
    reach(dom, "s1", "open")
    body = {"return": {"returnedCartItems": [{"position": 0, "quantity": 1}]}}
    assert dom.call("return_cart_items", "s1", body=body)[0] == 400
    assert dom.call("return_cart_items", "nope", body=body)[0] == 404
    reach(dom, "s2", "closed")
    status, answer = dom.call(
        "return_cart_items", "s2", body={"returnedCartItems": [{"position": 0}]}
    )
    assert status == 400
    assert answer["errors"][0]["source"]["pointer"] == "/return/returnedCartItems"


def test_returns_honour_the_idempotency_key(dom: Domain) -> None:
    reach(dom, "s1", "closed")
    before = dom.balance()["activePoints"]
    body = {"return": {"returnedCartItems": [{"position": 0, "quantity": 1}]}}
    key = {"Idempotency-Key": "return-42"}
    first = dom.ok("return_cart_items", "s1", body=body, headers=key)
    second = dom.ok("return_cart_items", "s1", body=body, headers=key)
    assert second == first
    assert dom.state.data["sessions"]["s1"]["cartItems"][0]["returnedQuantity"] == 1
    assert dom.balance()["activePoints"] == before - 20
    third = dom.ok("return_cart_items", "s1", body=body, headers={"Idempotency-Key": "return-43"})
    assert third["return"]["id"] != first["return"]["id"]
    assert dom.state.data["sessions"]["s1"]["cartItems"][0]["returnedQuantity"] == 2
    status, _ = dom.call(
        "return_cart_items", "s1", body=body, headers={"Idempotency-Key": "k" * 256}
    )
    assert status == 400


def test_dry_returns_change_nothing(dom: Domain) -> None:
    reach(dom, "s1", "closed")
    before = dom.balance()["activePoints"]
    body = {"return": {"returnedCartItems": [{"position": 1, "quantity": 1}]}}
    answer = dom.ok("return_cart_items", "s1", body=body, dry=True)
    assert one(answer, "rollbackAddedLoyaltyPoints")["props"]["value"] == 80
    assert dom.balance()["activePoints"] == before
    assert dom.ok("get_customer_session", "s1")["customerSession"]["state"] == "closed"


def test_cancelling_a_partially_returned_session_rolls_back_the_rest(dom: Domain) -> None:
    before = dom.balance()["activePoints"]
    reach(dom, "s1", "partially_returned")  # one T-shirt (20 EUR, 20 points) returned
    answer = dom.ok(
        "update_customer_session_v2", "s1", body={"customerSession": {"state": "cancelled"}}
    )
    assert one(answer, "rollbackAddedLoyaltyPoints")["props"]["value"] == 142
    assert one(answer, "rollbackCoupon")["props"]["value"] == "WELCOME10"
    assert dom.balance()["activePoints"] == before
    profile = dom.state.data["profiles"]["demo-customer"]
    assert (profile["closedSessions"], profile["totalSales"]) == (0, 0)


def test_previous_returns_and_return_event(dom: Domain) -> None:
    reach(dom, "s1", "closed")
    body = {"return": {"returnedCartItems": [{"position": 0, "quantity": 1}]}}
    first = dom.ok("return_cart_items", "s1", body=body)
    body["responseContent"] = ["previousReturns", "customerSession", "event"]
    second = dom.ok("return_cart_items", "s1", body=body)
    assert [r["id"] for r in second["previousReturns"]] == [first["return"]["id"]]
    assert second["customerSession"]["state"] == "partially_returned"
    assert second["event"]["type"] == "talon_return_created"


# -- random walks ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(40))
def test_random_walks_never_fail_and_cancelling_restores_everything(seed: int) -> None:
    """Any sequence of updates, closes, reopens, returns and cancels answers the API's statuses
    only; cancelling every session afterwards gives back every budget, point and total."""
    rng = random.Random(seed)
    dom = Domain()
    sids = ["a", "b", "c"]
    for _ in range(25):
        sid = rng.choice(sids)
        roll = rng.random()
        if roll < 0.45:
            extra: dict[str, Any] = {}
            if rng.random() < 0.3:
                extra["referralCode"] = "FRIEND-DEMO"
            if rng.random() < 0.3:
                extra["loyaltyCards"] = ["CARD-0001"]
            body = session_body(
                profile=rng.choice(["demo-customer", "anna", "", "walker"]),
                cart=rng.sample(DEMO_CART, rng.randint(1, 5)),
                coupons=rng.sample(
                    ["WELCOME10", "POINTS100", "ONEUSE", "VIPONLY", "NOPE"], rng.randint(0, 3)
                ),
                state=rng.choice([None, "open", "closed", "cancelled"]),
                **extra,
            )
            status, answer = dom.call(
                "update_customer_session_v2", sid, body=body, dry=rng.random() < 0.1
            )
        elif roll < 0.6:
            move = {"customerSession": {"state": rng.choice(["closed", "cancelled", "open"])}}
            status, answer = dom.call("update_customer_session_v2", sid, body=move)
        elif roll < 0.75:
            status, answer = dom.call("reopen_customer_session", sid)
        else:
            item = {"position": rng.randint(0, 4), "quantity": rng.randint(1, 3)}
            key = {"Idempotency-Key": str(rng.randint(0, 3))} if rng.random() < 0.5 else None
            status, answer = dom.call(
                "return_cart_items",
                sid,
                body={"return": {"returnedCartItems": [item]}},
                headers=key,
            )
        assert status in (200, 400, 404), answer
    for sid in sids:
        session = dom.state.data["sessions"].get(sid)
        if session is not None and session["state"] != "cancelled":
            dom.ok(
                "update_customer_session_v2", sid, body={"customerSession": {"state": "cancelled"}}
            )
    for coupon in dom.state.data["coupons"].values():
        assert coupon["usageCounter"] == 0, coupon["value"]
        assert not any(coupon["redemptions"].values()), coupon["value"]
    assert dom.state.data["referrals"]["FRIEND-DEMO"]["usageCounter"] == 0
    for integration_id in dom.state.data["loyalty"]["1"]["profiles"]:
        balance = dom.balance(integration_id)
        seeded = 200 if integration_id == "demo-customer" else 0
        assert (balance["activePoints"], balance["pendingPoints"], balance["negativePoints"]) == (
            seeded,
            0,
            0,
        )
    card = dom.ok("get_loyalty_card_balances", 2, "CARD-0001")["balance"]
    assert (card["activePoints"], card["pendingPoints"]) == (30, 0)
    for profile in dom.state.data["profiles"].values():
        assert (profile["closedSessions"], profile["totalSales"]) == (0, 0), profile[
            "integrationId"
        ]
    assert all(not budget.get("redeemCoupon") for budget in dom.state.data["budgets"].values())
