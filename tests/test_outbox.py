"""The outbox: enqueue on commit, one key at a time, coalescing, retries, reconciling, the sweep."""
# ruff: noqa: F811  (the fixtures are imported from tests.pipeline_fakes)

from __future__ import annotations

import datetime
import threading
from decimal import Decimal
from typing import Any
from unittest import mock

import pytest
import requests
from django.db import transaction
from django.utils import timezone

from django_talonone import outbox
from django_talonone.models import CustomerSession, LoyaltyBalance, Push
from django_talonone.outbox import UPDATE_SESSION, make_payload, session_key
from tests.pipeline_fakes import (  # noqa: F401
    APPLY_THEN_TIMEOUT,
    failed_pushes,
    make_order,
    pipeline,
    talon,
)

pytestmark = pytest.mark.django_db

SID = "cart-1"
KEY = session_key(SID)


def cart_body(*skus: str, state: str | None = None, **extra: Any) -> dict[str, Any]:
    session: dict[str, Any] = {
        "cartItems": [{"sku": sku, "quantity": 1, "price": 10} for sku in skus],
        **extra,
    }
    if state:
        session["state"] = state
    return {"customerSession": session, "responseContent": ["customerSession"]}


def push_cart(*skus: str, state: str | None = None, key: str = KEY, **extra: Any) -> Push:
    sid = key.split(":", 1)[1]
    body = cart_body(*skus, state=state, **extra)
    return outbox.enqueue(UPDATE_SESSION, key, make_payload(sid, body=body), source="test")


def make_due() -> None:
    """Pretend the retry delays have passed."""
    Push.objects.filter(state="pending").update(
        next_attempt_at=timezone.now() - datetime.timedelta(seconds=1)
    )


# --- enqueue and dispatch on commit ------------------------------------------------------------


def test_push_is_sent_after_commit_and_mirrored(talon, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        push = push_cart("A", "B")
        assert talon.sent() == []  # nothing leaves before the shop's transaction commits
    for callback in callbacks:
        callback()
    (request,) = talon.sent("update")
    assert request.path == "/v2/customer_sessions/cart-1"
    assert request.body == cart_body("A", "B")
    push.refresh_from_db()
    assert (push.state, push.attempts, push.done_at is not None) == ("done", 1, True)
    session = CustomerSession.objects.get(integration_id=SID)
    assert push.session == session
    assert [e.effect_type for e in session.effects.all()] == ["setDiscount"]
    assert session.effects.get().props["value"] == 2.0


@pytest.mark.django_db(transaction=True)
def test_rolled_back_transaction_sends_nothing(talon):
    with pytest.raises(RuntimeError), transaction.atomic():
        push_cart("A")
        raise RuntimeError("the shop's view failed")
    assert Push.objects.count() == 0
    assert talon.sent() == []


@pytest.mark.django_db(transaction=True)
def test_rolled_back_savepoint_drops_only_its_push(talon):
    with transaction.atomic():
        push_cart("A", key="session:kept")
        with pytest.raises(RuntimeError), transaction.atomic():
            push_cart("B", key="session:dropped")
            raise RuntimeError
    assert [r.ident for r in talon.sent()] == ["kept"]
    assert list(Push.objects.values_list("key", flat=True)) == ["session:kept"]


def test_unknown_operation_is_refused(talon):
    with pytest.raises(ValueError, match="unknown push operation"):
        outbox.enqueue("create_coupons", KEY, {})


def test_one_wake_up_per_key_and_transaction(talon, django_capture_on_commit_callbacks):
    with mock.patch.object(outbox, "dispatch") as dispatch:
        with django_capture_on_commit_callbacks(execute=True):
            for n in range(5):
                push_cart(f"A{n}")
                push_cart(f"B{n}", key="session:other")
        assert sorted(c.args[0] for c in dispatch.call_args_list) == [KEY, "session:other"]


# --- coalescing -------------------------------------------------------------------------------


def test_fifty_updates_in_one_transaction_make_one_request(
    talon, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        for n in range(1, 51):
            push_cart(*[f"SKU-{i}" for i in range(1, n + 1)])
    (request,) = talon.sent("update")
    assert request.body == cart_body(*[f"SKU-{i}" for i in range(1, 51)])
    survivor = Push.objects.get(state="done", coalesced=49)
    assert survivor.pk == Push.objects.order_by("-id").first().pk
    folded = Push.objects.exclude(pk=survivor.pk)
    assert folded.count() == 49
    assert set(folded.values_list("state", "attempts")) == {("done", 0)}
    assert set(folded.values_list("claimed_by", flat=True)) == {f"coalesced into #{survivor.pk}"}
    session = CustomerSession.objects.get(integration_id=SID)
    assert session.cart_items.count() == 50


@pytest.mark.django_db(transaction=True)
def test_fifty_updates_in_separate_transactions_with_a_busy_worker(talon, settings):
    # Celery: each commit sends a message; the worker gets to them after they piled up.
    settings.TALONONE = {**settings.TALONONE, "DISPATCH": "celery"}
    with mock.patch("django_talonone.tasks.push.apply_async") as apply_async:
        for n in range(1, 51):
            with transaction.atomic():
                push_cart(*[f"SKU-{i}" for i in range(1, n + 1)])
    assert apply_async.call_count == 50
    for call in apply_async.call_args_list:
        outbox.process_key(*call.kwargs["args"])
    assert len(talon.sent("update")) <= 3
    assert talon.sent("update")[-1].body == cart_body(*[f"SKU-{i}" for i in range(1, 51)])
    assert set(Push.objects.values_list("state", flat=True)) == {"done"}


def test_coalescing_keeps_fields_the_latest_update_leaves_out(
    talon, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        push_cart("A", couponCodes=["SAVE10"], referralCode="FRIEND")
        push_cart("A", "B", couponCodes=[])
        push_cart("A", "B", "C")
    (request,) = talon.sent("update")
    sent = request.body["customerSession"]
    # Sent one by one, Talon.One would keep the referral code and drop the coupon: so here.
    assert sent == {
        "cartItems": cart_body("A", "B", "C")["customerSession"]["cartItems"],
        "couponCodes": [],
        "referralCode": "FRIEND",
    }


def test_state_changes_are_barriers(talon, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        push_cart("A")
        push_cart("A", "B")
        push_cart("A", "B", state="closed")
        push_cart("A", "B", state="cancelled")
    sent = [r.body["customerSession"] for r in talon.sent("update")]
    assert [s.get("state") for s in sent] == [None, "closed", "cancelled"]
    assert [len(s["cartItems"]) for s in sent] == [2, 2, 2]
    assert talon.sessions[SID]["state"] == "cancelled"


def test_updates_after_a_barrier_fold_among_themselves_only(
    talon, django_capture_on_commit_callbacks
):
    talon.sessions[SID] = {**talon._blank(SID), "state": "closed"}
    with django_capture_on_commit_callbacks(execute=True):
        push_cart("A")
        outbox.enqueue(outbox.REOPEN_SESSION, KEY, make_payload(SID))
        push_cart("A", "B")
        push_cart("A", "B", "C")
    assert [r.route for r in talon.sent()] == ["update", "reopen", "update"]
    assert len(talon.sent("update")[-1].body["customerSession"]["cartItems"]) == 3


# --- one key at a time, in order ----------------------------------------------------------------


def test_rows_of_a_key_go_in_id_order(talon, django_capture_on_commit_callbacks):
    talon.sessions[SID] = {**talon._blank(SID), "state": "closed"}
    with django_capture_on_commit_callbacks(execute=True):
        outbox.enqueue(outbox.REOPEN_SESSION, KEY, make_payload(SID))
        push_cart("A", state="closed")
        outbox.enqueue(outbox.REOPEN_SESSION, KEY, make_payload(SID))
    assert [r.route for r in talon.sent()] == ["reopen", "update", "reopen"]


def test_a_row_waiting_for_its_retry_holds_back_the_rows_behind_it(
    talon, django_capture_on_commit_callbacks
):
    talon.fail("update", 503)
    with django_capture_on_commit_callbacks(execute=True):
        first = push_cart("A", state="closed")
    first.refresh_from_db()
    assert first.state == "pending"
    with django_capture_on_commit_callbacks(execute=True):
        push_cart("A", state="cancelled")
    assert len(talon.sent("update")) == 1  # the cancel waits for the close
    make_due()
    outbox.process_key(KEY)
    assert [r.body["customerSession"]["state"] for r in talon.sent("update")] == [
        "closed",
        "closed",
        "cancelled",
    ]


def test_a_key_held_by_another_worker_is_skipped(talon, django_capture_on_commit_callbacks):
    busy = Push.objects.create(
        key=KEY, operation=UPDATE_SESSION, payload=make_payload(SID, body=cart_body("A")),
        state="in_flight", claimed_by="other-worker", claimed_at=timezone.now(),
    )  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        later = push_cart("B")
    assert talon.sent() == []
    later.refresh_from_db()
    assert later.state == "pending"
    busy.delete()
    outbox.process_key(KEY)
    assert len(talon.sent()) == 1


def test_claim_is_a_compare_and_set(talon):
    push = Push.objects.create(key=KEY, operation=UPDATE_SESSION, payload=make_payload(SID))
    claimed = outbox.claim(KEY)
    assert claimed is not None and claimed[0].pk == push.pk
    assert outbox.claim(KEY) is None  # in flight now: a second claimer gets nothing
    push.refresh_from_db()
    assert (push.state, push.attempts, push.claimed_by) == ("in_flight", 1, claimed[1])


CLAIMED_FIELDS = (
    "state", "attempts", "claimed_by", "claimed_at", "updated_at", "payload", "coalesced",
)  # fmt: skip


def test_a_claimed_row_is_what_the_database_holds(talon):
    for sku in "ABC":  # written directly: no wake-up call, so the three are folded into one
        Push.objects.create(
            key=KEY, operation=UPDATE_SESSION, payload=make_payload(SID, body=cart_body(sku))
        )
    push, token, folded = outbox.claim(KEY)
    assert len(folded) == 2
    stored = Push.objects.get(pk=push.pk)
    assert [getattr(push, f) for f in CLAIMED_FIELDS] == [
        getattr(stored, f) for f in CLAIMED_FIELDS
    ]
    attempt = outbox.run(push, token, client=outbox.get_client())
    stored.refresh_from_db()
    done = (*CLAIMED_FIELDS, "done_at", "outcome_unknown", "last_error", "session_id")
    assert attempt.outcome == "done"
    assert [getattr(attempt.push, f) for f in done] == [getattr(stored, f) for f in done]


def test_updated_at_moves_with_every_change_of_state(talon):
    push = Push.objects.create(
        key=KEY, operation=UPDATE_SESSION, payload=make_payload(SID, body=cart_body("A"))
    )
    written = push.updated_at
    claimed, token, _ = outbox.claim(KEY)
    claimed_at = Push.objects.get(pk=push.pk).updated_at
    assert claimed_at == claimed.claimed_at > written
    outbox.run(claimed, token, client=outbox.get_client())
    done = Push.objects.get(pk=push.pk)
    assert done.updated_at == done.done_at > claimed_at


def test_a_cart_update_costs_a_bounded_number_of_queries(talon, django_assert_num_queries):
    """Claim (2 statements), send, mirror a changed cart of a mirrored session (no profile: read
    the session and its effects, write the new line, give the effect its new value in place,
    write the session) and mark the row done (6), then one read that finds the key empty; plus
    the two savepoints that stand in for BEGIN and COMMIT inside the test's transaction (4)."""
    outbox.process_key(push_cart("A").key)
    Push.objects.create(
        key=KEY, operation=UPDATE_SESSION, payload=make_payload(SID, body=cart_body("A", "B"))
    )
    with django_assert_num_queries(13):
        assert outbox.process_key(KEY) == 1
    session = CustomerSession.objects.get(integration_id=SID)
    assert list(session.cart_items.values_list("sku", flat=True)) == ["A", "B"]
    assert session.effects.get(is_current=True).props["value"] == 2.0


def test_failed_rows_do_not_block_their_key(talon, django_capture_on_commit_callbacks):
    talon.fail("update", 400)
    with django_capture_on_commit_callbacks(execute=True):
        push_cart("A")
        push_cart("B", state="closed")  # a barrier, so the two are not folded
    assert list(Push.objects.values_list("state", flat=True)) == ["failed", "done"]


# --- retries, backoff, dead rows ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "error_class", "status"),
    [
        (500, "ServerError", 500),
        (502, "ServerError", 502),
        (503, "ServerError", 503),
        (409, "ConflictError", 409),
        (429, "RateLimitedError", 429),
        (requests.exceptions.ReadTimeout("slow"), "TimeoutError", None),
        (requests.exceptions.ConnectTimeout("no route"), "TimeoutError", None),
        (requests.exceptions.ConnectionError("reset by peer"), "ConnectionError", None),
        ((200, {}, "<html>not json</html>"), "MalformedResponseError", 200),
    ],
)
def test_retryable_errors_retry_with_backoff(
    talon, django_capture_on_commit_callbacks, failure, error_class, status
):
    talon.fail("update", failure)
    before = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        push = push_cart("A")
    push.refresh_from_db()
    assert (push.state, push.attempts, push.error_class) == ("pending", 1, error_class)
    assert push.error_status == status
    # Full jitter: somewhere in [0, RETRY_BASE_DELAY] after the first failure.
    assert before <= push.next_attempt_at <= timezone.now() + datetime.timedelta(seconds=1)
    assert push.last_error
    make_due()
    outbox.process_key(KEY)
    push.refresh_from_db()
    assert (push.state, push.attempts, push.last_error) == ("done", 2, "")


def test_outcome_of_a_timeout_on_a_write_is_unknown(talon, django_capture_on_commit_callbacks):
    talon.fail("update", requests.exceptions.ReadTimeout("slow"))
    with django_capture_on_commit_callbacks(execute=True):
        push = push_cart("A")
    push.refresh_from_db()
    assert push.outcome_unknown is True
    talon.fail("update", requests.exceptions.ConnectTimeout("refused"))
    make_due()
    outbox.process_key(KEY)
    push.refresh_from_db()
    assert push.outcome_unknown is True  # still unknown whether the first try went through


def test_retry_after_is_honoured(talon, django_capture_on_commit_callbacks):
    talon.fail("update", (429, {"Retry-After": "120"}, {"message": "slow down"}))
    with django_capture_on_commit_callbacks(execute=True):
        push = push_cart("A")
    push.refresh_from_db()
    wait = (push.next_attempt_at - timezone.now()).total_seconds()
    assert 118 < wait <= 120
    outbox.process_key(KEY)  # not due yet: nothing is sent
    assert len(talon.sent()) == 1


@pytest.mark.parametrize("attempts", [1, 2, 3, 4, 8, 20])
def test_backoff_is_full_jitter_capped(pipeline, attempts):
    ceiling = min(60.0, 1.0 * 2 ** (attempts - 1))
    with mock.patch("random.uniform", side_effect=lambda lo, hi: hi) as uniform:
        assert outbox.retry_delay(attempts) == ceiling
    uniform.assert_called_once_with(0, ceiling)
    with mock.patch("random.uniform", side_effect=lambda lo, hi: lo):
        assert outbox.retry_delay(attempts) == 0
        assert outbox.retry_delay(attempts, retry_after=7.5) == 7.5


def test_dead_after_max_attempts(talon, failed_pushes, django_capture_on_commit_callbacks):
    talon.fail("update", 503, 503, 503, 503)
    with django_capture_on_commit_callbacks(execute=True):
        push = push_cart("A")
    for _ in range(3):
        make_due()
        with django_capture_on_commit_callbacks(execute=True):
            outbox.process_key(KEY)
    push.refresh_from_db()
    assert (push.state, push.attempts, push.error_status) == ("dead", 3, 503)
    assert len(talon.sent()) == 3  # MAX_ATTEMPTS = 3 in these tests
    assert [p.pk for p in failed_pushes] == [push.pk]
    assert failed_pushes[0].state == "dead"


@pytest.mark.parametrize(
    ("status", "error_class"),
    [(400, "BadRequestError"), (401, "AuthenticationError"), (404, "NotFoundError"),
     (422, "ClientError")],
)  # fmt: skip
def test_permanent_errors_fail_at_once_with_the_api_message(
    talon, failed_pushes, django_capture_on_commit_callbacks, status, error_class
):
    body = {
        "message": "Invalid request",
        "errors": [{"title": "cartItems.0.quantity must be at least 1",
                    "source": {"pointer": "/customerSession/cartItems/0/quantity"}}],
    }  # fmt: skip
    talon.fail("update", (status, {}, body))
    with django_capture_on_commit_callbacks(execute=True):
        push = push_cart("A")
    push.refresh_from_db()
    assert (push.state, push.attempts, push.error_status) == ("failed", 1, status)
    assert push.error_class == error_class
    assert "Invalid request" in push.last_error
    assert "cartItems.0.quantity must be at least 1" in push.last_error
    assert "tests-api-key" not in push.last_error
    assert [p.pk for p in failed_pushes] == [push.pk]
    make_due()
    outbox.process_key(KEY)
    assert len(talon.sent()) == 1  # never retried


def test_an_echoed_api_key_never_reaches_the_row(talon, django_capture_on_commit_callbacks):
    talon.fail("update", (400, {}, {"message": "bad header ApiKey-v1 tests-api-key"}))
    with django_capture_on_commit_callbacks(execute=True):
        push = push_cart("A")
    push.refresh_from_db()
    assert push.state == "failed"
    assert "tests-api-key" not in push.last_error


def test_a_payload_the_client_refuses_fails_the_row(talon, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        push = outbox.enqueue(UPDATE_SESSION, KEY, make_payload("", body=cart_body("A")))
    push.refresh_from_db()
    assert push.state == "failed"
    assert "must not be empty" in push.last_error
    assert talon.sent() == []


def test_a_mirror_error_keeps_the_row_done(talon, django_capture_on_commit_callbacks):
    with (
        mock.patch("django_talonone.mirror.mirror_session_answer", side_effect=KeyError("x")),
        django_capture_on_commit_callbacks(execute=True),
    ):
        push = push_cart("A", state="closed")
    push.refresh_from_db()
    assert push.state == "done"  # it was sent: re-sending a close would be worse
    assert push.error_class == "KeyError"
    assert push.last_error.startswith("sent; mirroring the answer failed")


# --- exactly once in effect -----------------------------------------------------------------------


def test_a_close_that_timed_out_but_went_through_is_not_sent_again(
    talon, django_capture_on_commit_callbacks
):
    talon.fail("update", APPLY_THEN_TIMEOUT)
    with django_capture_on_commit_callbacks(execute=True):
        push = push_cart("A", state="closed")
    push.refresh_from_db()
    assert (push.state, push.outcome_unknown) == ("pending", True)
    assert talon.sessions[SID]["state"] == "closed"
    make_due()
    outbox.process_key(KEY)
    assert [r.route for r in talon.sent()] == ["update", "get"]  # read back, not re-sent
    push.refresh_from_db()
    assert (push.state, push.outcome_unknown) == ("done", False)
    assert CustomerSession.objects.get(integration_id=SID).state == "closed"


def test_a_close_that_timed_out_before_it_applied_is_sent_again(
    talon, django_capture_on_commit_callbacks
):
    talon.sessions[SID] = talon._blank(SID)
    talon.fail("update", requests.exceptions.ReadTimeout("slow"))
    with django_capture_on_commit_callbacks(execute=True):
        push = push_cart("A", state="closed")
    make_due()
    outbox.process_key(KEY)
    assert [r.route for r in talon.sent()] == ["update", "get", "update"]
    push.refresh_from_db()
    assert push.state == "done"
    assert talon.sessions[SID]["state"] == "closed"


def test_a_reconcile_read_that_fails_is_retried_later(
    talon, settings, django_capture_on_commit_callbacks
):
    settings.TALONONE = {**settings.TALONONE, "GET_RETRIES": 0}  # else the client retries it
    talon.fail("update", APPLY_THEN_TIMEOUT)
    talon.fail("get", 503)
    with django_capture_on_commit_callbacks(execute=True):
        push = push_cart("A", state="cancelled")
    make_due()
    outbox.process_key(KEY)
    push.refresh_from_db()
    assert (push.state, push.attempts, push.outcome_unknown) == ("pending", 2, True)
    make_due()
    outbox.process_key(KEY)
    push.refresh_from_db()
    assert push.state == "done"
    assert [r.route for r in talon.sent()] == ["update", "get", "get"]


def test_returns_carry_the_idempotency_key_and_keep_it_on_a_retry(
    talon, django_capture_on_commit_callbacks
):
    talon.sessions[SID] = {**talon._blank(SID), "state": "closed"}
    talon.fail("return", requests.exceptions.ReadTimeout("slow"))
    payload = make_payload(
        SID,
        body={"return": {"returnedCartItems": [{"position": 0, "quantity": 1}]}},
        headers={"Idempotency-Key": "return-42"},
    )
    with django_capture_on_commit_callbacks(execute=True):
        push = outbox.enqueue(outbox.RETURN_ITEMS, KEY, payload)
    make_due()
    outbox.process_key(KEY)
    sent = talon.sent("return")
    assert [r.headers["Idempotency-Key"] for r in sent] == ["return-42", "return-42"]
    push.refresh_from_db()
    assert push.state == "done"
    # A done push is never sent again, whatever wakes its key.
    outbox.process_key(KEY)
    outbox.sweep(grace=0)
    assert len(talon.sent("return")) == 2


def closed_session_returned(django_capture_on_commit_callbacks: Any) -> Push:
    """A closed session with a 20.00 cart (2.00 off), half of it returned."""
    with django_capture_on_commit_callbacks(execute=True):
        push_cart("A", "B", state="closed")
        push = outbox.enqueue(
            outbox.RETURN_ITEMS,
            KEY,
            make_payload(
                SID, body={"return": {"returnedCartItems": [{"position": 1, "quantity": 1}]}}
            ),
        )
    push.refresh_from_db()
    return push


def test_a_return_reads_the_session_back_for_the_effects_it_keeps(
    talon, django_capture_on_commit_callbacks
):
    push = closed_session_returned(django_capture_on_commit_callbacks)
    assert push.state == "done"
    assert [r.route for r in talon.sent()][-2:] == ["return", "get"]
    session = CustomerSession.objects.get(integration_id=SID)
    current = list(session.effects.filter(is_current=True))
    assert [(e.effect_type, e.props["value"]) for e in current] == [("setDiscount", 1.0)]
    assert session.discount_total == Decimal("1.00")
    # The return's rollbacks are kept as history, beside the closed session's own effects.
    history = session.effects.filter(is_current=False).order_by("id")
    assert [(e.effect_type, e.props["value"]) for e in history] == [
        ("setDiscount", 2.0),
        ("rollbackDiscount", 1.0),
    ]


def test_a_return_whose_session_cannot_be_read_back_is_still_done(
    talon, django_capture_on_commit_callbacks, caplog
):
    talon.fail("get", 503, 503, 503)  # the client's own GET retries too
    push = closed_session_returned(django_capture_on_commit_callbacks)
    assert (push.state, push.last_error) == ("done", "")
    assert "reading the session back failed" in caplog.text
    # Until the session's next answer, its current set is what the return answered.
    session = CustomerSession.objects.get(integration_id=SID)
    current = session.effects.filter(is_current=True)
    assert [e.effect_type for e in current] == ["rollbackDiscount"]


def test_loyalty_balances_are_fetched_after_a_close(
    talon, settings, django_capture_on_commit_callbacks
):
    settings.TALONONE = {**settings.TALONONE, "LOYALTY_PROGRAM_IDS": [5]}
    with django_capture_on_commit_callbacks(execute=True):
        push_cart("A", profileId="alice")
        push_cart("A", state="closed", profileId="alice")
    (request,) = talon.sent("balances")
    assert request.path == "/v1/loyalty_programs/5/profile/alice/balances"
    balance = LoyaltyBalance.objects.get()
    assert (balance.profile.integration_id, balance.active_points) == ("alice", Decimal(10))


def test_a_failed_balance_fetch_does_not_fail_the_close(
    talon, settings, django_capture_on_commit_callbacks
):
    settings.TALONONE = {**settings.TALONONE, "LOYALTY_PROGRAM_IDS": [5]}
    talon.fail("balances", 404)
    with django_capture_on_commit_callbacks(execute=True):
        push = push_cart("A", state="closed", profileId="alice")
    push.refresh_from_db()
    assert push.state == "done"


# --- the sweep and the retry of dead rows -------------------------------------------------------


def test_sweep_reclaims_in_flight_rows_of_dead_workers(
    talon, failed_pushes, django_capture_on_commit_callbacks
):
    old = timezone.now() - datetime.timedelta(seconds=301)
    stale = Push.objects.create(
        key=KEY, operation=UPDATE_SESSION, payload=make_payload(SID, body=cart_body("A")),
        state="in_flight", claimed_by="dead-worker", claimed_at=old, attempts=1,
    )  # fmt: skip
    fresh = Push.objects.create(
        key="session:b", operation=UPDATE_SESSION, payload=make_payload("b", body=cart_body("B")),
        state="in_flight", claimed_by="live-worker", claimed_at=timezone.now(), attempts=1,
    )  # fmt: skip
    exhausted = Push.objects.create(
        key="session:c", operation=UPDATE_SESSION, payload=make_payload("c", body=cart_body("C")),
        state="in_flight", claimed_by="dead-worker", claimed_at=old, attempts=3,
    )  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        counts = outbox.sweep(wake=False)
    assert counts == {"reclaimed": 1, "dead": 1, "woken": 0}
    stale.refresh_from_db()
    assert (stale.state, stale.outcome_unknown, stale.claimed_by) == ("pending", True, "")
    fresh.refresh_from_db()
    assert fresh.state == "in_flight"
    exhausted.refresh_from_db()
    assert exhausted.state == "dead"
    assert [p.pk for p in failed_pushes] == [exhausted.pk]
    # The reclaimed row goes out on the next wake-up (a plain update: simply sent again).
    outbox.process_key(KEY)
    stale.refresh_from_db()
    assert (stale.state, stale.attempts) == ("done", 2)


def test_a_reclaimed_close_is_reconciled_not_resent(talon):
    talon.sessions[SID] = {**talon._blank(SID), "state": "closed"}
    Push.objects.create(
        key=KEY, operation=UPDATE_SESSION,
        payload=make_payload(SID, body=cart_body("A", state="closed")),
        state="in_flight", claimed_at=timezone.now() - datetime.timedelta(hours=1), attempts=1,
    )  # fmt: skip
    outbox.sweep()
    assert [r.route for r in talon.sent()] == ["get"]
    assert Push.objects.get().state == "done"


def test_sweep_wakes_overdue_keys_only(talon):
    overdue = timezone.now() - datetime.timedelta(seconds=60)
    Push.objects.create(
        key=KEY, operation=UPDATE_SESSION, payload=make_payload(SID, body=cart_body("A")),
        next_attempt_at=overdue,
    )  # fmt: skip
    Push.objects.create(
        key="session:new", operation=UPDATE_SESSION,
        payload=make_payload("new", body=cart_body("B")),
    )  # fmt: skip
    assert outbox.sweep()["woken"] == 1  # a fresh row's own wake-up is still on its way
    assert [r.ident for r in talon.sent()] == [SID]


def test_a_finish_after_a_reclaim_does_not_overwrite_it(talon):
    Push.objects.create(
        key=KEY, operation=UPDATE_SESSION, payload=make_payload(SID, body=cart_body("A"))
    )
    push, token, _ = outbox.claim(KEY)
    # Meanwhile the sweep took the row back and another worker claimed it.
    Push.objects.filter(pk=push.pk).update(claimed_by="someone-else")
    attempt = outbox.run(push, token, client=outbox.get_client())
    assert attempt.outcome == "lost"
    push.refresh_from_db()
    assert (push.state, push.claimed_by) == ("in_flight", "someone-else")


def test_retry_dead_puts_rows_back(talon, django_capture_on_commit_callbacks):
    dead = Push.objects.create(
        key=KEY, operation=UPDATE_SESSION,
        payload=make_payload(SID, body=cart_body("A", state="closed")), state="dead", attempts=3,
    )  # fmt: skip
    failed = Push.objects.create(
        key="session:x", operation=UPDATE_SESSION,
        payload=make_payload("x", body=cart_body("X")), state="failed", attempts=1,
    )  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        assert outbox.retry_dead() == {"retried": 1, "superseded": 0}
    dead.refresh_from_db()
    assert (dead.state, dead.attempts) == ("done", 1)
    failed.refresh_from_db()
    assert failed.state == "failed"
    with django_capture_on_commit_callbacks(execute=True):
        assert outbox.retry_dead(include_failed=True, key="session:x")["retried"] == 1
    failed.refresh_from_db()
    assert failed.state == "done"


def test_retry_dead_leaves_superseded_cart_updates_alone(talon):
    Push.objects.create(
        key=KEY, operation=UPDATE_SESSION, payload=make_payload(SID, body=cart_body("OLD")),
        state="dead",
    )  # fmt: skip
    Push.objects.create(
        key=KEY, operation=UPDATE_SESSION, payload=make_payload(SID, body=cart_body("NEW")),
        state="done",
    )  # fmt: skip
    assert outbox.retry_dead() == {"retried": 0, "superseded": 1}
    assert talon.sent() == []


# --- dispatch modes ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_celery_dispatch_sends_the_task_with_the_options(talon, settings):
    settings.TALONONE = {
        **settings.TALONONE, "DISPATCH": "celery", "TASK_OPTIONS": {"queue": "talonone"},
    }  # fmt: skip
    with mock.patch("django_talonone.tasks.push.apply_async") as apply_async:  # noqa: SIM117
        with transaction.atomic():
            push_cart("A")
            apply_async.assert_not_called()
    apply_async.assert_called_once_with(args=[KEY], queue="talonone")
    assert talon.sent() == []


@pytest.mark.django_db(transaction=True)
def test_broker_down_leaves_the_row_for_the_sweep(talon, settings, caplog):
    settings.TALONONE = {**settings.TALONONE, "DISPATCH": "celery"}
    down = OSError("Connection refused")
    with mock.patch("django_talonone.tasks.push.apply_async", side_effect=down):  # noqa: SIM117
        with transaction.atomic():
            push = push_cart("A")  # the shop's code carries on
    push.refresh_from_db()
    assert push.state == "pending"
    assert "the sweep will retry it" in caplog.text


def test_celery_retry_is_scheduled_with_a_countdown(talon, settings):
    settings.TALONONE = {**settings.TALONONE, "DISPATCH": "celery"}
    talon.fail("update", (429, {"Retry-After": "30"}, None))
    Push.objects.create(key=KEY, operation=UPDATE_SESSION, payload=make_payload(SID, body={}))
    with mock.patch("django_talonone.tasks.push.apply_async") as apply_async:
        outbox.process_key(KEY)
    (call,) = apply_async.call_args_list
    assert call.kwargs["args"] == [KEY]
    assert call.kwargs["countdown"] >= 30


def test_inline_dispatch_never_raises_into_the_shop(
    talon, django_capture_on_commit_callbacks, caplog
):
    with (
        mock.patch.object(outbox, "claim", side_effect=RuntimeError("database went away")),
        django_capture_on_commit_callbacks(execute=True),
    ):
        push = push_cart("A")
    push.refresh_from_db()
    assert push.state == "pending"
    assert "the rows stay in the outbox" in caplog.text


def test_the_client_is_cached_and_rebuilt_when_settings_change(pipeline, settings):
    first = outbox.get_client()
    assert outbox.get_client() is first
    assert outbox.get_client(2.0) is not first
    assert outbox.get_client(2.0).timeout == (2.0, 2.0)
    settings.TALONONE = {**settings.TALONONE, "BASE_URL": "http://localhost:8123"}
    assert outbox.get_client() is not first
    assert outbox.get_client().base_url == "http://localhost:8123"


def test_sends_are_rate_limited(talon, settings, django_capture_on_commit_callbacks):
    settings.TALONONE = {**settings.TALONONE, "RATE_LIMIT": 50}
    acquire = mock.patch("django_talonone.ratelimit.acquire", return_value=True)
    with acquire as acquire, django_capture_on_commit_callbacks(execute=True):
        push_cart("A", state="closed")
        push_cart("A", state="cancelled")
    assert acquire.call_count == 2


# --- PostgreSQL: row locks keep workers apart ----------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_worker_that_cannot_lock_the_head_row_skips_the_key(pipeline):
    from django.db import connection

    for sku in "ABC":  # written directly: no wake-up call
        body = cart_body(sku, state="closed")
        Push.objects.create(key=KEY, operation=UPDATE_SESSION, payload=make_payload(SID, body=body))
    locked, release = threading.Event(), threading.Event()
    seen: dict[str, Any] = {}

    def other_worker() -> None:
        try:
            with transaction.atomic():
                seen["head"] = outbox._lock_head(KEY)  # mid-claim: holds the head row's lock
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=other_worker)
    thread.start()
    assert locked.wait(10)
    try:
        assert outbox.claim(KEY) is None  # skips the key rather than overtake or wait
    finally:
        release.set()
        thread.join()
    assert seen["head"].pk == Push.objects.order_by("id").first().pk
    claimed = outbox.claim(KEY)
    assert claimed is not None and claimed[0].pk == seen["head"].pk


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_workers_send_one_key_at_a_time_in_order(talon):
    from django.db import connection

    talon.latency = 0.01
    keys = [f"profile:p{n}" for n in range(4)]
    for n in range(20):
        for key in keys:
            body = {"profileId": key.split(":")[1], "type": "viewed", "attributes": {"n": n}}
            Push.objects.create(
                key=key, operation=outbox.TRACK_EVENT, payload=make_payload(body=body)
            )
    errors: list[BaseException] = []

    def worker(order: list[str]) -> None:
        try:
            while Push.objects.filter(state__in=["pending", "in_flight"]).exists():
                for key in order:
                    outbox.process_key(key)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    # All six go through the keys in the same order, so they meet on every key.
    threads = [threading.Thread(target=worker, args=(keys,)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert talon.parallel == []  # Talon.One would have answered 409 to any of these
    assert set(Push.objects.values_list("state", flat=True)) == {"done"}
    for key in keys:
        profile = key.split(":")[1]
        sent = [
            r.body["attributes"]["n"] for r in talon.sent("event") if r.body["profileId"] == profile
        ]
        assert sent == list(range(20))
