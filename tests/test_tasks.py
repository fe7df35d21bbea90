"""Celery tasks, Celery dispatch, the rate limiter, the talonone_push command, pipeline checks."""
# ruff: noqa: F811  (the fixtures are imported from tests.pipeline_fakes)

from __future__ import annotations

import datetime
import io
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from django.utils import timezone

from django_talonone import outbox, ratelimit, tasks
from django_talonone.checks import check_pipeline
from django_talonone.models import Push
from django_talonone.outbox import UPDATE_SESSION, make_payload
from django_talonone.ratelimit import TokenBucket
from tests.pipeline_fakes import pipeline, talon  # noqa: F401


def cart_payload(sid: str, *skus: str, state: str | None = None) -> dict[str, Any]:
    session: dict[str, Any] = {"cartItems": [{"sku": s, "quantity": 1, "price": 1} for s in skus]}
    if state:
        session["state"] = state
    return make_payload(sid, body={"customerSession": session})


# --- the tasks -----------------------------------------------------------------------------------


def test_tasks_have_stable_names():
    assert tasks.push.name == "django_talonone.push"
    assert tasks.sweep.name == "django_talonone.sweep"


@pytest.mark.django_db
def test_the_push_task_sends_the_key(talon):
    Push.objects.create(key="session:a", operation=UPDATE_SESSION, payload=cart_payload("a", "X"))
    assert tasks.push("session:a") == 1
    assert [r.ident for r in talon.sent()] == ["a"]


@pytest.mark.django_db
def test_the_sweep_task_returns_its_counts(talon):
    assert tasks.sweep() == {"reclaimed": 0, "dead": 0, "woken": 0}


@pytest.fixture
def eager_celery():
    """The test project's Celery app, running tasks in-process (a host project's setup)."""
    from tests.celery_app import app

    app.conf.task_always_eager = True
    yield app
    app.conf.task_always_eager = False


@pytest.mark.django_db(transaction=True)
def test_celery_dispatch_runs_the_task_after_commit(talon, settings, eager_celery):
    settings.TALONONE = {**settings.TALONONE, "DISPATCH": "celery"}
    with transaction.atomic():
        outbox.enqueue(UPDATE_SESSION, "session:a", cart_payload("a", "X"))
        outbox.enqueue(UPDATE_SESSION, "session:a", cart_payload("a", "X", "Y"))
        assert talon.sent() == []
    (request,) = talon.sent()
    assert len(request.body["customerSession"]["cartItems"]) == 2
    assert set(Push.objects.values_list("state", flat=True)) == {"done"}


def test_tasks_import_without_celery():
    code = """
import sys
sys.modules["celery"] = None  # as if Celery were not installed
import django
django.setup()
from django.core.exceptions import ImproperlyConfigured
from django_talonone import tasks
assert tasks.push.name == "django_talonone.push"
try:
    tasks.push.apply_async(args=["session:a"])
except ImproperlyConfigured as exc:
    assert "needs Celery" in str(exc), exc
else:
    raise AssertionError("apply_async should say Celery is missing")
"""
    env = {"DJANGO_SETTINGS_MODULE": "tests.settings", "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=".")


# --- the rate limiter ----------------------------------------------------------------------------


class FakeClock:
    """A clock that only moves when the bucket sleeps (or the test says so)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_a_full_bucket_lets_a_burst_through(clock):
    bucket = TokenBucket(10, clock=clock, sleep=clock.sleep)
    for _ in range(10):
        assert bucket.acquire()
    assert clock.sleeps == []
    assert bucket.acquire()
    assert clock.sleeps == [0.1]


def test_tokens_come_back_at_the_rate(clock):
    bucket = TokenBucket(10, clock=clock, sleep=clock.sleep)
    for _ in range(10):
        bucket.acquire()
    clock.now += 0.5
    for _ in range(5):
        bucket.acquire()
    assert clock.sleeps == []
    assert bucket.wait_time() == pytest.approx(0.1)


def test_the_burst_never_exceeds_its_size(clock):
    bucket = TokenBucket(2, burst=3, clock=clock, sleep=clock.sleep)
    clock.now += 3600  # an idle hour saves up no more than the burst
    for _ in range(3):
        bucket.acquire()
    assert clock.sleeps == []
    bucket.acquire()
    assert clock.sleeps == [0.5]


def test_waiters_queue_up_in_order(clock):
    bucket = TokenBucket(4, burst=1, clock=clock, sleep=lambda s: clock.sleeps.append(s))
    bucket.acquire()
    # Three callers arrive at the same instant: they reserve consecutive slots.
    for _ in range(3):
        bucket.acquire()
    assert clock.sleeps == [0.25, 0.5, 0.75]


def test_the_long_run_rate_is_the_limit(clock):
    bucket = TokenBucket(50, clock=clock, sleep=clock.sleep)
    start = clock.now
    for _ in range(550):
        bucket.acquire()
    # 50 from the full bucket, then 500 at 50/s.
    assert clock.now - start == pytest.approx(10.0)


def test_a_wait_longer_than_the_timeout_takes_nothing(clock):
    bucket = TokenBucket(10, burst=1, clock=clock, sleep=clock.sleep)
    assert bucket.acquire()
    assert bucket.acquire(timeout=0.05) is False
    assert clock.sleeps == []
    assert bucket.acquire(timeout=0.1) is True  # the refused call reserved nothing
    assert clock.sleeps == [0.1]


def test_a_rate_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(0)


def test_the_bucket_is_thread_safe():
    bucket = TokenBucket(1000)  # a burst of 1000, then 1000/s
    taken: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(250):
            bucket.acquire()
            with lock:
                taken.append(time.monotonic())

    start = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(taken) == 1500
    # 1000 at once, the other 500 at 1000/s: at least half a second, however threads interleave.
    assert max(taken) - start >= 0.45


def test_the_process_bucket_follows_the_setting(settings, pipeline):
    assert ratelimit.get_limiter() is None
    assert ratelimit.acquire() is True
    settings.TALONONE = {**settings.TALONONE, "RATE_LIMIT": 25}
    first = ratelimit.get_limiter()
    assert first is not None and first.rate == 25
    assert ratelimit.get_limiter() is first
    settings.TALONONE = {**settings.TALONONE, "RATE_LIMIT": 40}
    assert ratelimit.get_limiter().rate == 40


# --- the management command ----------------------------------------------------------------------


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("talonone_push", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_the_command_sends_due_pushes(talon):
    Push.objects.create(key="session:a", operation=UPDATE_SESSION, payload=cart_payload("a", "X"))
    Push.objects.create(key="session:b", operation=UPDATE_SESSION, payload=cart_payload("b", "Y"))
    later = timezone.now() + datetime.timedelta(minutes=5)
    Push.objects.create(
        key="session:c", operation=UPDATE_SESSION, payload=cart_payload("c", "Z"),
        next_attempt_at=later,
    )  # fmt: skip
    assert run() == "2 pushes finished.\n"
    assert sorted(r.ident for r in talon.sent()) == ["a", "b"]


@pytest.mark.django_db
def test_the_command_sweeps(talon):
    Push.objects.create(
        key="session:a", operation=UPDATE_SESSION, payload=cart_payload("a", "X"),
        state="in_flight", attempts=1,
        claimed_at=timezone.now() - datetime.timedelta(hours=1),
    )  # fmt: skip
    assert run("--sweep") == "1 reclaimed, 0 dead, 1 keys woken.\n"
    assert Push.objects.get().state == "done"


@pytest.mark.django_db
def test_the_command_retries_dead_pushes(talon, django_capture_on_commit_callbacks):
    dead = Push.objects.create(
        key="session:a", operation=UPDATE_SESSION, state="dead", attempts=8,
        payload=cart_payload("a", "X", state="closed"),
    )  # fmt: skip
    Push.objects.create(
        key="session:b", operation=UPDATE_SESSION, state="dead", payload=cart_payload("b", "Y")
    )
    with django_capture_on_commit_callbacks(execute=True):
        out = run("--retry-dead", "--id", str(dead.pk))
    assert out == "1 pushes queued again, 0 superseded cart updates left as they are.\n"
    assert [r.ident for r in talon.sent()] == ["a"]
    assert list(Push.objects.order_by("id").values_list("state", flat=True)) == ["done", "dead"]


@pytest.mark.django_db
def test_the_command_loops(talon):
    Push.objects.create(key="session:a", operation=UPDATE_SESSION, payload=cart_payload("a", "X"))
    out = run("--loop", "--rounds", "2", "--interval", "0.01")
    assert out == "1 pushes finished, 0 reclaimed, 0 dead.\n"


@pytest.mark.django_db
def test_the_command_refuses_options_that_do_not_go_together(pipeline):
    with pytest.raises(CommandError, match="go with --retry-dead"):
        run("--failed")
    with pytest.raises(CommandError):
        run("--sweep", "--loop")


# --- system checks for the pipeline keys ---------------------------------------------------------

GOOD = {"BASE_URL": "https://acme.europe-west1.talon.one", "API_KEY": "key-123"}


def ids(settings: Any, **values: Any) -> list[str]:
    settings.TALONONE = {**GOOD, **values}
    return [m.id for m in check_pipeline()]


def test_the_defaults_pass(settings):
    assert ids(settings) == []
    assert ids(settings, DISPATCH="celery", TASK_OPTIONS={"queue": "t"}, RATE_LIMIT=25.5) == []
    assert ids(settings, RESPONSE_CONTENT=[], LOYALTY_PROGRAM_IDS=[3, 4]) == []
    assert ids(settings, BATCH_SIZE=1, SEND_CONCURRENCY=16) == []


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"DISPATCH": "thread"}, ["talonone.E030"]),
        ({"DISPATCH": None}, ["talonone.E030"]),
        ({"TASK_OPTIONS": ["queue"]}, ["talonone.E032"]),
        ({"MAX_ATTEMPTS": 0}, ["talonone.E033"]),
        ({"MAX_ATTEMPTS": 2.5}, ["talonone.E033"]),
        ({"MAX_ATTEMPTS": True}, ["talonone.E033"]),
        ({"RETRY_BASE_DELAY": 0}, ["talonone.E034"]),
        ({"RETRY_MAX_DELAY": "600"}, ["talonone.E034"]),
        ({"RETRY_BASE_DELAY": 30, "RETRY_MAX_DELAY": 10}, ["talonone.E034"]),
        ({"RATE_LIMIT": 0}, ["talonone.E035"]),
        ({"RATE_LIMIT": -5}, ["talonone.E035"]),
        ({"RATE_LIMIT": "100/s"}, ["talonone.E035"]),
        ({"EVALUATE_TIMEOUT": 0}, ["talonone.E036"]),
        ({"EVALUATE_TIMEOUT": 30}, ["talonone.E036"]),
        ({"EVALUATE_TIMEOUT": None}, ["talonone.E036"]),
        ({"IN_FLIGHT_TIMEOUT": 0}, ["talonone.E037"]),
        ({"IN_FLIGHT_TIMEOUT": 10, "TIMEOUT": (3.05, 10)}, ["talonone.E037"]),
        ({"RESPONSE_CONTENT": ["customerSession", "session"]}, ["talonone.E038"]),
        ({"RESPONSE_CONTENT": "customerSession"}, ["talonone.E038"]),
        ({"RESPONSE_CONTENT": None}, ["talonone.E038"]),
        ({"EVALUATE_RESPONSE_CONTENT": ["customerSession", "profile"]}, ["talonone.E041"]),
        ({"EVALUATE_RESPONSE_CONTENT": "loyalty"}, ["talonone.E041"]),
        ({"LOYALTY_PROGRAM_IDS": ["5"]}, ["talonone.E039"]),
        ({"LOYALTY_PROGRAM_IDS": 5}, ["talonone.E039"]),
        ({"BATCH_SIZE": 0}, ["talonone.E040"]),
        ({"BATCH_SIZE": 5000}, ["talonone.E040"]),
        ({"SEND_CONCURRENCY": "4"}, ["talonone.E040"]),
        ({"SEND_CONCURRENCY": True}, ["talonone.E040"]),
        ({"ASYNC_COMMIT": "off"}, ["talonone.E042"]),
        ({"ASYNC_COMMIT": None}, ["talonone.E042"]),
    ],
)
def test_bad_pipeline_settings_are_reported(settings, values, expected):
    assert ids(settings, **values) == expected


def test_celery_dispatch_without_celery_is_reported(settings, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "celery" else real(name, *a)
    )
    settings.TALONONE = {**GOOD, "DISPATCH": "celery"}
    (message,) = check_pipeline()
    assert message.id == "talonone.E031"
    assert "django-talonone[celery]" in message.hint


@pytest.mark.parametrize("value", [None, [], ["customerSession", "loyalty"]])
def test_evaluate_response_content_may_be_unset_empty_or_a_list(settings, value):
    assert ids(settings, EVALUATE_RESPONSE_CONTENT=value) == []


def test_messages_name_the_setting_and_how_to_fix_it(settings):
    settings.TALONONE = {**GOOD, "RESPONSE_CONTENT": ["customerSession", "coupon"]}
    (message,) = check_pipeline()
    assert "'coupon'" in message.msg
    assert "coupons" in message.hint
