"""evaluate_cart: one bounded call for the cart page, a stale fallback that never raises."""
# ruff: noqa: F811  (the fixtures are imported from tests.pipeline_fakes)

from __future__ import annotations

import subprocess
import sys
from typing import Any
from unittest import mock

import pytest
import requests
from django.db import DatabaseError
from django.db.backends.utils import CursorWrapper

from django_talonone import outbox, ratelimit
from django_talonone.adapters import ShopAdapter
from django_talonone.models import CustomerSession, Effect, Push
from django_talonone.outbox import UPDATE_SESSION, make_payload
from tests.pipeline_fakes import make_order, pipeline, talon  # noqa: F401

pytestmark = pytest.mark.django_db


def evaluate(cart: Any, **kwargs: Any) -> Any:
    from django_talonone import evaluate_cart  # the public, lazily exported name

    return evaluate_cart(cart, **kwargs)


def key_of(order: Any) -> str:
    return f"session:shop.order-{order.pk}"


def test_the_cart_is_sent_now_and_its_mirrored_effects_come_back(talon):
    order = make_order(lines=2)
    result = evaluate(order)
    assert (result.stale, result.error, result.preview) == (False, None, False)
    (request,) = talon.sent()
    assert request.query == {}  # a real update, not a dry run
    assert len(request.body["customerSession"]["cartItems"]) == 2
    assert result.session == CustomerSession.objects.get(integration_id=f"shop.order-{order.pk}")
    assert result.session.order == order
    (effect,) = result.effects
    assert effect.pk is not None and effect.effect_type == "setDiscount"
    assert effect.props["value"] == 2.0
    assert (result.push.state, result.push.source) == ("done", "evaluate_cart")


def test_it_uses_a_client_with_the_evaluate_timeout(talon, settings):
    settings.TALONONE = {**settings.TALONONE, "EVALUATE_TIMEOUT": 1.5}
    with mock.patch.object(outbox, "get_client", wraps=outbox.get_client) as get_client:
        evaluate(make_order())
        evaluate(make_order(), timeout=0.25)
    assert [c.args for c in get_client.call_args_list] == [(1.5,), (0.25,)]
    assert outbox.get_client(1.5).timeout == (1.5, 1.5)
    assert outbox.get_client(1.5).get_retries == 0


@pytest.mark.parametrize(
    ("failure", "state", "unknown"),
    [
        (503, "pending", True),
        (409, "pending", False),
        (requests.exceptions.ReadTimeout("slow"), "pending", True),
        (requests.exceptions.ConnectionError("Connection refused"), "pending", False),
    ],
)
def test_on_failure_the_last_mirrored_effects_come_back_stale(talon, failure, state, unknown):
    order = make_order()
    fresh = evaluate(order)
    talon.fail("update", failure)
    order.lines.create(sku="SKU-9", quantity=1, price=5)
    result = evaluate(order)
    assert result.stale is True
    assert result.error
    assert [e.pk for e in result.effects] == [e.pk for e in fresh.effects]  # the last mirrored
    assert result.session == fresh.session
    # The update is not lost: it waits in the outbox for its retry.
    push = result.push
    assert (push.state, push.attempts, push.outcome_unknown) == (state, 1, unknown)
    assert len(push.payload["body"]["customerSession"]["cartItems"]) == 2


def test_a_permanent_error_fails_the_push_and_says_why(talon):
    talon.fail("update", (400, {}, {"message": "Invalid cart", "errors": [{"title": "bad sku"}]}))
    result = evaluate(make_order())
    assert (result.stale, result.session, result.effects) == (True, None, [])
    assert "Invalid cart" in result.error and "bad sku" in result.error
    assert result.push.state == "failed"


def test_without_any_mirror_yet_a_failure_gives_no_effects(talon):
    talon.fail("update", 503)
    result = evaluate(make_order())
    assert (result.session, result.effects, result.stale) == (None, [], True)


class BrokenAdapter(ShopAdapter):
    def cart_items(self, obj: Any) -> list[dict[str, Any]]:
        raise ValueError("a line has no price")


def test_an_adapter_error_gives_stale_effects_and_a_failed_push(talon, settings):
    order = make_order()
    evaluate(order)
    settings.TALONONE = {**settings.TALONONE, "ADAPTER": "tests.test_evaluate_cart.BrokenAdapter"}
    result = evaluate(order)
    assert result.stale is True
    assert result.error == "a line has no price"
    assert len(result.effects) == 1
    failed = Push.objects.get(state="failed")
    assert (failed.key, failed.source) == (key_of(order), "evaluate_cart")
    assert "a line has no price" in failed.last_error
    assert len(talon.sent()) == 1


class AskingAdapter(ShopAdapter):
    """An adapter that asks for parts of the answer of its own."""

    def session_payload(self, obj: Any) -> dict[str, Any]:
        body = super().session_payload(obj)
        body["responseContent"] = ["customerSession", "loyalty", "awardedGiveaways"]
        return body


@pytest.mark.parametrize(
    ("changed", "asked"),
    [
        # By default: what the adapter asks for, without the customer's profile and loyalty.
        ({}, ["customerSession", "coupons", "triggeredCampaigns"]),
        (
            {"ADAPTER": "tests.test_evaluate_cart.AskingAdapter"},
            ["customerSession", "awardedGiveaways"],
        ),
        ({"RESPONSE_CONTENT": ["customerProfile"]}, None),
        # Set: exactly that, whatever the adapter asks for; [] asks for nothing.
        (
            {"EVALUATE_RESPONSE_CONTENT": ["customerSession", "loyalty"]},
            ["customerSession", "loyalty"],
        ),
        ({"EVALUATE_RESPONSE_CONTENT": []}, None),
    ],
)
def test_the_parts_of_the_answer_the_cart_page_asks_for(talon, settings, changed, asked):
    settings.TALONONE = {**settings.TALONONE, **changed}
    order = make_order()
    result = evaluate(order)
    evaluate(order, dry=True)
    assert [request.body.get("responseContent") for request in talon.sent()] == [asked, asked]
    assert result.stale is False and len(result.effects) == 1


def test_it_never_raises_into_the_view(talon):
    order = make_order()
    broken = DatabaseError("disk full")
    with mock.patch.object(CursorWrapper, "execute", side_effect=broken):
        result = evaluate(order)
    assert result.stale is True
    assert "disk full" in result.error


def test_the_api_key_is_never_in_the_error(talon):
    talon.fail("update", (401, {}, {"message": "invalid key tests-api-key"}))
    result = evaluate(make_order())
    assert result.stale and "tests-api-key" not in result.error


# --- dry runs ------------------------------------------------------------------------------------


def test_dry_previews_without_storing_anything(talon):
    order = make_order(lines=3)
    result = evaluate(order, dry=True)
    (request,) = talon.sent()
    assert request.query == {"dry": ["true"]}
    assert (result.preview, result.stale, result.push, result.session) == (True, False, None, None)
    (effect,) = result.effects
    assert (effect.pk, effect.effect_type, effect.props["value"]) == (None, "setDiscount", 3.0)
    assert Push.objects.count() == 0
    assert CustomerSession.objects.count() == 0
    assert Effect.objects.count() == 0
    assert talon.sessions == {}  # nor remotely


def test_dry_leaves_the_mirror_as_it_was(talon):
    order = make_order()
    before = evaluate(order)
    order.lines.create(sku="SKU-2", quantity=1, price=10)
    preview = evaluate(order, dry=True)
    assert preview.effects[0].props["value"] == 2.0
    assert [e.pk for e in before.session.effects.filter(is_current=True)] == [
        e.pk for e in before.effects
    ]
    assert before.session.cart_items.count() == 1


def test_a_failing_dry_run_is_stale_and_records_nothing(talon):
    talon.fail("update", 503)
    result = evaluate(make_order(), dry=True)
    assert (result.stale, result.push) == (True, None)
    assert Push.objects.count() == 0


# --- one key at a time ---------------------------------------------------------------------------


@pytest.mark.parametrize("busy_state", ["pending", "in_flight"])
def test_a_busy_session_queues_the_update_and_previews_it(talon, busy_state):
    order = make_order()
    earlier = Push.objects.create(
        key=key_of(order), operation=UPDATE_SESSION,
        payload=make_payload(f"shop.order-{order.pk}", body={"customerSession": {}}),
        state=busy_state,
    )  # fmt: skip
    result = evaluate(order)
    (request,) = talon.sent()
    assert request.query == {"dry": ["true"]}  # the real update must wait its turn
    assert (result.preview, result.stale) == (True, False)
    assert result.effects[0].effect_type == "setDiscount"
    assert result.push.state == "pending"
    assert result.push.attempts == 0
    assert result.push.pk > earlier.pk


def test_a_queued_update_wakes_the_worker_with_celery(
    talon, settings, django_capture_on_commit_callbacks
):
    settings.TALONONE = {**settings.TALONONE, "DISPATCH": "celery"}
    order = make_order()
    Push.objects.create(key=key_of(order), operation=UPDATE_SESSION, payload=make_payload("x"))
    with (
        mock.patch("django_talonone.tasks.push.apply_async") as apply_async,
        django_capture_on_commit_callbacks(execute=True),
    ):
        evaluate(order)
    apply_async.assert_called_once_with(args=[key_of(order)])


def test_a_local_rate_limit_gives_stale_effects_instead_of_waiting(talon, settings):
    settings.TALONONE = {**settings.TALONONE, "RATE_LIMIT": 0.5}
    assert ratelimit.acquire(0)  # the one token there is
    result = evaluate(make_order(), timeout=0.2)
    assert result.stale is True
    assert "rate limit" in result.error
    assert talon.sent() == []
    assert result.push.state == "pending"


# --- the package exports it lazily ---------------------------------------------------------------


def test_evaluate_cart_is_exported_lazily():
    code = (
        "import sys, django_talonone, django_talonone.client;"
        "assert not any(m == 'django' or m.startswith('django.') for m in sys.modules), "
        "'importing the package imported Django';"
        "assert 'evaluate_cart' in dir(django_talonone)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    import django_talonone
    from django_talonone.services import Evaluation, evaluate_cart

    assert django_talonone.evaluate_cart is evaluate_cart
    assert django_talonone.Evaluation is Evaluation
    with pytest.raises(AttributeError):
        django_talonone.nothing_here  # noqa: B018


# --- PostgreSQL: the mirror's reads are answered while the request is under way -------------------


def _with_a_customer_and_a_first_evaluation(lines: int) -> Any:
    from django.contrib.auth.models import User

    order = make_order(lines=lines, customer=User.objects.create(username="ann"))
    first = evaluate(order)  # the mirror's rows exist from here on
    assert first.session.profile_integration_id and not first.stale
    return order


def _spy_on_the_request(monkeypatch: Any, captured: Any) -> dict[str, Any]:
    """What was sent to the database, and whether a pipeline was open, when the request left."""
    from django_talonone import _db

    seen: dict[str, Any] = {}
    real = outbox._send

    def send(push: Any, client: Any, **kwargs: Any) -> Any:
        seen["pipeline"] = _db.in_pipeline()
        seen["before"] = [query["sql"] for query in captured.captured_queries]
        return real(push, client, **kwargs)

    monkeypatch.setattr(outbox, "_send", send)
    return seen


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_mirrors_reads_go_out_before_the_request_and_lock_nothing(talon, monkeypatch):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from django_talonone import _db

    if not _db.pipelined():
        pytest.skip("pipelines need psycopg 3 with libpq 14 or later")
    order = _with_a_customer_and_a_first_evaluation(lines=2)
    order.lines.create(sku="SKU-3", quantity=1, price="10.00")
    with CaptureQueriesContext(connection) as captured:
        seen = _spy_on_the_request(monkeypatch, captured)
        result = evaluate(order)
    assert seen["pipeline"] is True
    read_first = {
        sql.split(" FROM ")[1].split()[0].strip('"')
        for sql in seen["before"]
        if sql.startswith("SELECT")
    }  # the shop's order lines (the adapter), the outbox's check, then the mirror's rows
    assert read_first - {"shop_orderline", "talonone_push"} == {
        "talonone_customersession",
        "talonone_customerprofile",
        "talonone_effect",
    }
    sent = [query["sql"] for query in captured.captured_queries]
    assert not [sql for sql in sent if "FOR UPDATE" in sql]  # the key is held: no row locks
    assert not [sql for sql in sent[len(seen["before"]) :] if sql.startswith("SELECT")]
    (effect,) = result.effects
    assert effect.props["value"] == 3.0 and not result.stale
    session = CustomerSession.objects.get(pk=result.session.pk)
    assert session.cart_items.count() == 3 and session.order == order
    assert [e.pk for e in Effect.objects.filter(session=session, is_current=True)] == [effect.pk]
    assert Push.objects.get(pk=result.push.pk).state == "done"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_when_the_answer_names_another_profile_the_mirror_reads_again_under_locks(
    talon, monkeypatch
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    order = _with_a_customer_and_a_first_evaluation(lines=1)
    real = talon._update

    def update(req: Any) -> Any:
        status, payload = real(req)
        payload["customerSession"]["profileId"] = "someone-else"
        return status, payload

    monkeypatch.setattr(talon, "_update", update)
    with CaptureQueriesContext(connection) as captured:
        result = evaluate(order)
    assert not result.stale
    assert result.session.profile_integration_id == "someone-else"
    assert CustomerSession.objects.get(pk=result.session.pk).profile.integration_id == (
        "someone-else"
    )
    assert any("FOR UPDATE" in query["sql"] for query in captured.captured_queries)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("async_commit", [True, False])
def test_the_records_of_a_cart_update_wait_for_the_disk_only_when_asked(
    talon, settings, async_commit
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from django_talonone import _db

    settings.TALONONE = {**settings.TALONONE, "ASYNC_COMMIT": async_commit}
    order = _with_a_customer_and_a_first_evaluation(lines=1)
    with CaptureQueriesContext(connection) as captured:
        assert not evaluate(order).stale
    relaxed = [q["sql"] for q in captured.captured_queries if "synchronous_commit" in q["sql"]]
    if not async_commit:
        assert relaxed == []
    elif _db.pipelined():
        # The mirror's transaction, and the in-flight row where it goes in one query with the
        # check (client-side binding, Django's default).
        assert relaxed[-1] == "SET LOCAL synchronous_commit TO OFF"
        if not connection.settings_dict["OPTIONS"].get("server_side_binding"):
            assert len(relaxed) == 2 and relaxed[0].startswith("BEGIN; SET LOCAL")


def test_only_an_open_carts_update_may_lose_its_in_flight_row():
    def plain(operation: str, payload: dict[str, Any]) -> bool:
        return outbox._is_plain_update(Push(operation=operation, payload=payload))

    body = {"customerSession": {"state": "open", "cartItems": []}}
    assert plain(UPDATE_SESSION, make_payload("s", body=body))
    assert plain(UPDATE_SESSION, make_payload("s", body={"customerSession": {}}))
    closing = {"customerSession": {"state": "closed"}}
    assert not plain(UPDATE_SESSION, make_payload("s", body=closing))
    assert not plain("update_customer_profile_v2", make_payload("p", body={}))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("failure", "unknown"),
    [
        (503, True),
        (requests.exceptions.ReadTimeout("slow"), True),
        (requests.exceptions.ConnectionError("Connection refused"), False),
    ],
)
def test_a_failed_request_leaves_the_prefetched_reads_behind_and_the_connection_usable(
    talon, failure, unknown
):
    order = _with_a_customer_and_a_first_evaluation(lines=1)
    fresh = CustomerSession.objects.get(order_id=order.pk)
    talon.fail("update", failure)
    order.lines.create(sku="SKU-9", quantity=1, price="10.00")
    result = evaluate(order)
    assert result.stale is True and result.error
    assert result.session == fresh
    push = Push.objects.get(pk=result.push.pk)
    assert (push.state, push.attempts, push.outcome_unknown) == ("pending", 1, unknown)
    # The next cart page: the update waits in the outbox, so the key is busy (a dry run), and
    # the database connection works as before.
    again = evaluate(order)
    assert (again.stale, again.preview) == (False, True)
    assert again.effects[0].props["value"] == 2.0
