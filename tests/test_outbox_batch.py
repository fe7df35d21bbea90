"""The worker's batches: heads of many keys claimed together, sent a few at a time, mirrored in
one transaction, and every per-key rule of the outbox kept."""
# ruff: noqa: F811  (the fixtures are imported from tests.pipeline_fakes)

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_talonone import mirror, outbox, tasks
from django_talonone.models import CartItem, CustomerSession, Push
from django_talonone.outbox import REOPEN_SESSION, UPDATE_SESSION, make_payload, session_key
from tests.pipeline_fakes import failed_pushes, pipeline, talon  # noqa: F401

pytestmark = pytest.mark.django_db


def cart(sid: str, *skus: str, state: str | None = None) -> Push:
    """A pending cart update of session ``sid``, written without a wake-up call."""
    session: dict[str, Any] = {
        "profileId": f"customer-{sid}",
        "cartItems": [{"sku": sku, "quantity": 1, "price": 10} for sku in skus],
    }
    if state:
        session["state"] = state
    body = {"customerSession": session, "responseContent": ["customerSession"]}
    return Push.objects.create(
        key=session_key(sid), operation=UPDATE_SESSION, payload=make_payload(sid, body=body)
    )


def states() -> dict[int, str]:
    return dict(Push.objects.values_list("pk", "state"))


def test_a_batch_sends_many_keys_and_mirrors_them_together(talon):
    pushes = [cart(f"s{i}", "A", "B") for i in range(6)]
    assert outbox.process_batch() == (6, 6)
    assert sorted(r.ident for r in talon.sent("update")) == [f"s{i}" for i in range(6)]
    assert set(states().values()) == {"done"}
    for push in pushes:
        push.refresh_from_db()
        sid = push.payload["args"][0]
        assert push.session == CustomerSession.objects.get(integration_id=sid)
        assert push.attempts == 1
        assert [line.sku for line in push.session.cart_items.order_by("position")] == ["A", "B"]
        assert [e.effect_type for e in push.session.effects.all()] == ["setDiscount"]
    assert len({push.claimed_by for push in pushes}) == 1  # claimed together, one token
    assert outbox.process_batch() == (0, 0)  # nothing left


def test_a_batch_costs_the_same_statements_for_three_keys_or_thirty(talon):
    def statements(n: int, start: int) -> int:
        for i in range(start, start + n):
            cart(f"s{i}", "A")
        with CaptureQueriesContext(connection) as queries:
            assert outbox.process_batch() == (n, n)
        return len(queries)

    statements(3, 0), statements(30, 100)  # sessions and profiles exist from here on
    for i in range(3):
        cart(f"s{i}", "B")
    with CaptureQueriesContext(connection) as few:
        outbox.process_batch()
    for i in range(100, 130):
        cart(f"s{i}", "B")
    with CaptureQueriesContext(connection) as many:
        outbox.process_batch()
    assert len(many) <= len(few) + 3, [q["sql"][:80] for q in many.captured_queries]


def test_only_the_head_of_a_key_is_taken_and_later_rows_wait_for_it(talon):
    first = cart("s1", "A", state="closed")
    second = Push.objects.create(
        key=session_key("s1"), operation=REOPEN_SESSION, payload=make_payload("s1")
    )
    other = cart("s2", "A")
    assert outbox.process_batch() == (2, 2)
    assert states() == {first.pk: "done", second.pk: "pending", other.pk: "done"}
    assert outbox.process_batch() == (1, 1)
    assert [r.route for r in talon.sent() if r.ident == "s1"] == ["update", "reopen"]
    assert talon.parallel == []


def test_cart_updates_queued_behind_a_head_are_folded_as_before(talon):
    for skus in (("A",), ("A", "B"), ("A", "B", "C")):
        cart("s1", *skus)
    cart("s2", "X")
    finished, claimed = outbox.process_batch()
    assert (finished, claimed) == (2, 2)  # s1's three rows went out as one request
    (request,) = [r for r in talon.sent("update") if r.ident == "s1"]
    assert [i["sku"] for i in request.body["customerSession"]["cartItems"]] == ["A", "B", "C"]
    assert set(states().values()) == {"done"}


def test_an_api_error_costs_only_its_own_row(
    talon, failed_pushes, settings, django_capture_on_commit_callbacks
):
    pushes = [cart(f"s{i}", "A") for i in range(4)]
    talon.fail("update", 503, 400)  # the first two requests to arrive
    settings.TALONONE = {**settings.TALONONE, "SEND_CONCURRENCY": 1}  # arrival = claim order
    with django_capture_on_commit_callbacks(execute=True):
        assert outbox.process_batch() == (3, 4)
    found = states()
    assert [found[p.pk] for p in pushes] == ["pending", "failed", "done", "done"]
    assert [p.pk for p in failed_pushes] == [pushes[1].pk]
    retry = Push.objects.get(pk=pushes[0].pk)
    assert (retry.error_status, retry.attempts, retry.claimed_by) == (503, 1, "")


def test_if_the_batch_mirror_fails_each_answer_is_mirrored_on_its_own(talon, caplog):
    pushes = [cart(f"s{i}", "A") for i in range(3)]
    real = mirror.mirror_session_answers

    def only_alone(items: list[Any], **kwargs: Any) -> Any:
        if len(items) > 1:  # e.g. one answer the batch writer chokes on
            raise RuntimeError("boom")
        return real(items, **kwargs)

    with mock.patch.object(mirror, "mirror_session_answers", side_effect=only_alone):
        assert outbox.process_batch() == (3, 3)
    assert "mirroring 3 answers together failed" in caplog.text
    assert set(states().values()) == {"done"}
    assert CartItem.objects.count() == 3
    for push in pushes:
        push.refresh_from_db()
        assert push.session is not None and push.last_error == ""


def test_requests_for_different_keys_overlap_but_never_for_one(talon, settings):
    talon.latency = 0.05
    for i in range(8):
        cart(f"s{i}", "A")
    assert outbox.process_batch() == (8, 8)
    assert talon.max_in_flight > 1
    assert talon.parallel == []
    settings.TALONONE = {**settings.TALONONE, "SEND_CONCURRENCY": 1}
    talon.max_in_flight = 0
    for i in range(3):
        cart(f"s{i}", "B")
    outbox.process_batch()
    assert talon.max_in_flight == 1


def test_the_push_task_drains_every_due_key(talon, settings):
    for sid in ("a", "b", "c"):
        cart(sid, "A")
    assert tasks.push(session_key("a")) == 3
    assert sorted(r.ident for r in talon.sent()) == ["a", "b", "c"]
    # BATCH_SIZE 1: the task serves its own key only, as process_key does.
    settings.TALONONE = {**settings.TALONONE, "BATCH_SIZE": 1}
    for sid in ("a", "b"):
        cart(sid, "B")
    assert tasks.push(session_key("a")) == 1
    assert Push.objects.get(key=session_key("b"), state="pending")


def test_drain_hands_a_long_backlog_back(talon, settings):
    settings.TALONONE = {**settings.TALONONE, "DISPATCH": "celery", "BATCH_SIZE": 2}
    for i in range(5):
        cart(f"s{i}", "A")
    with (
        mock.patch.object(outbox, "MAX_ROWS_PER_CALL", 3),
        mock.patch("django_talonone.tasks.push.apply_async") as apply_async,
    ):
        finished = outbox.drain(session_key("s0"))
    assert finished == 4  # two batches of two: the limit was reached after the second claim
    apply_async.assert_called_once()
    assert apply_async.call_args.kwargs["args"] == [session_key("s0")]


def test_a_row_taken_back_by_the_sweep_meanwhile_is_not_marked_done(talon):
    push = cart("s1", "A")
    real = outbox._send

    def slow_send(p: Push, client: Any, **kwargs: Any) -> Any:
        answer = real(p, client, **kwargs)
        Push.objects.filter(pk=p.pk).update(state="pending", claimed_by="", outcome_unknown=True)
        return answer

    with mock.patch.object(outbox, "_send", slow_send):
        assert outbox.process_batch() == (0, 1)
    push.refresh_from_db()
    assert (push.state, push.outcome_unknown) == ("pending", True)


def test_the_drained_batch_is_what_the_threads_send_in_a_tenth_of_a_second(pipeline, settings):
    settings.TALONONE = {**settings.TALONONE, "BATCH_SIZE": 200, "SEND_CONCURRENCY": 4}
    with mock.patch.object(outbox, "_round_trip", outbox._RoundTrip()) as trips:
        assert outbox._batch_size() == 16  # nothing measured yet: start small
        trips.add(0.05)
        assert outbox._batch_size() == 8  # 4 threads x 0.1 s / 50 ms
        trips.add(5.0)
        assert outbox._batch_size() == 4  # never fewer than the threads
        for _ in range(50):
            trips.add(0.0005)
        assert outbox._batch_size() == 200  # never more than BATCH_SIZE


def test_a_failing_batch_still_lets_the_next_batch_finish(talon, settings):
    settings.TALONONE = {**settings.TALONONE, "BATCH_SIZE": 2}
    for i in range(4):
        cart(f"s{i}", "A")
    real = outbox._complete_batch
    calls = []

    def first_fails(batch: Any, client: Any) -> int:
        calls.append(batch.keys)
        if len(calls) == 1:
            raise RuntimeError("database went away")
        return real(batch, client)

    with (
        mock.patch.object(outbox, "_complete_batch", first_fails),
        pytest.raises(RuntimeError, match="went away"),
    ):
        outbox.drain()
    # The second batch was claimed and sent while the first was being completed: it is done.
    assert len(calls) == 2
    done = set(Push.objects.filter(state="done").values_list("key", flat=True))
    assert done == set(calls[1])
    # The first batch's rows stay in flight until the sweep takes them back.
    assert Push.objects.filter(state="in_flight").count() == 2


def test_a_row_that_fails_in_a_drain_waits_for_its_retry_even_a_very_short_one(talon, settings):
    settings.TALONONE = {**settings.TALONONE, "BATCH_SIZE": 2, "SEND_CONCURRENCY": 1}
    push = cart("s1", "A")
    for sid in ("s2", "s3", "s4"):
        cart(sid, "A")
    talon.fail("update", 503)  # s1's first try (it is sent first)
    with mock.patch.object(outbox, "retry_delay", return_value=0.0):
        assert outbox.drain() == 3
        push.refresh_from_db()
        assert (push.state, push.attempts) == ("pending", 1)
        assert [r.ident for r in talon.sent("update")].count("s1") == 1
        assert outbox.drain() == 1  # a later drain takes it again
    push.refresh_from_db()
    assert (push.state, push.attempts) == ("done", 2)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("async_commit", [True, False])
def test_a_batch_commits_with_its_writes_and_waits_for_the_disk_only_when_asked(
    talon, settings, async_commit
):
    from django_talonone import _db

    if not _db.pipelined():
        pytest.skip("pipelines need psycopg 3 with libpq 14 or later")
    settings.TALONONE = {**settings.TALONONE, "ASYNC_COMMIT": async_commit}
    for i in range(3):
        cart(f"s{i}", "A")
    with CaptureQueriesContext(connection) as queries:
        assert outbox.process_batch() == (3, 3)
    sent = [query["sql"] for query in queries.captured_queries]
    marked = next(
        i
        for i, sql in enumerate(sent)
        if sql.startswith('UPDATE "talonone_push"') and "'done'" in sql
    )
    tail = sent[marked + 1 : marked + 3]
    if async_commit:
        assert tail == ["SET LOCAL synchronous_commit TO OFF", "COMMIT"]
    else:
        assert tail[0] == "COMMIT"
    assert set(states().values()) == {"done"}
    assert CustomerSession.objects.count() == 3
