"""Bounded retries inside the client: idempotent GETs only, with backoff; writes never."""

from __future__ import annotations

from typing import Any

import pytest
import requests
import responses
from responses.registries import OrderedRegistry

from django_talonone.client import (
    BadRequestError,
    ConnectionError,
    IntegrationClient,
    NotFoundError,
    RateLimitedError,
    ServerError,
    TalonOneError,
    core,
)

from .conftest import ANY_URL, API_KEY, BASE_URL, FakeClock

OK = {"json": {"customerSession": {}, "effects": []}}
REFUSED = {"body": requests.exceptions.ConnectionError("[Errno 111] Connection refused")}


@pytest.fixture
def ordered() -> Any:
    """Answers are served strictly in the order they were added."""
    with responses.RequestsMock(registry=OrderedRegistry) as mock:
        yield mock


@pytest.fixture
def no_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    """random() == 0.5: the jitter factor (0.5 + random()) is exactly 1."""

    class _Random:
        @staticmethod
        def random() -> float:
            return 0.5

    monkeypatch.setattr(core, "random", _Random)


def make(**kwargs: Any) -> IntegrationClient:
    return IntegrationClient(BASE_URL, API_KEY, **kwargs)


@pytest.mark.parametrize(
    "failure",
    [
        {"status": 500, "json": {"message": "boom"}},
        {"status": 502, "body": "<html>bad gateway</html>"},
        {"status": 503, "json": {"message": "busy"}},
        {"status": 429},
        REFUSED,
        {"body": requests.exceptions.ReadTimeout("Read timed out.")},
    ],
    ids=["500", "502", "503", "429", "refused", "timeout"],
)
def test_get_is_retried_then_succeeds(
    ordered: Any, clock: FakeClock, no_jitter: None, failure: dict[str, Any]
) -> None:
    ordered.add("GET", ANY_URL, **failure)
    ordered.add("GET", ANY_URL, **failure)
    ordered.add("GET", ANY_URL, **OK)
    result = make().get_customer_session("sess-1")
    assert result == OK["json"]
    assert len(ordered.calls) == 3
    # Exponential backoff from retry_backoff=0.1: 0.1 s, then 0.2 s.
    assert clock.sleeps == pytest.approx([0.1, 0.2])


def test_get_gives_up_after_get_retries(ordered: Any, clock: FakeClock, no_jitter: None) -> None:
    for _ in range(5):
        ordered.add("GET", ANY_URL, status=503, json={"message": "busy"})
    with pytest.raises(ServerError) as info:
        make(get_retries=4, retry_backoff=0.5).get_customer_session("sess-1")
    assert info.value.status == 503
    assert len(ordered.calls) == 5
    assert clock.sleeps == pytest.approx([0.5, 1.0, 2.0, 4.0])


def test_default_is_two_retries(ordered: Any, clock: FakeClock) -> None:
    for _ in range(3):
        ordered.add("GET", ANY_URL, **REFUSED)
    with pytest.raises(ConnectionError):
        make().get_customer_session("sess-1")
    assert len(ordered.calls) == 3
    assert len(clock.sleeps) == 2


def test_backoff_has_jitter_within_bounds(rsps: Any, clock: FakeClock) -> None:
    for _ in range(3):
        rsps.add("GET", ANY_URL, status=500)
    with pytest.raises(ServerError):
        make(retry_backoff=1.0).get_customer_session("sess-1")
    first, second = clock.sleeps
    assert 0.5 <= first <= 1.5
    assert 1.0 <= second <= 3.0


def test_retries_zero_disables(rsps: Any, clock: FakeClock) -> None:
    rsps.add("GET", ANY_URL, status=503)
    with pytest.raises(ServerError):
        make(get_retries=0).get_customer_session("sess-1")
    assert len(rsps.calls) == 1
    assert clock.sleeps == []


def test_negative_retries_refused() -> None:
    with pytest.raises(ValueError, match="get_retries"):
        make(get_retries=-1)


def test_retry_after_is_honoured(ordered: Any, clock: FakeClock) -> None:
    ordered.add("GET", ANY_URL, status=429, headers={"Retry-After": "2"})
    ordered.add("GET", ANY_URL, status=429, headers={"Retry-After": "0"})
    ordered.add("GET", ANY_URL, **OK)
    assert make(retry_backoff=0.1).get_customer_session("s") == OK["json"]
    assert clock.sleeps == [2.0, 0.0]


def test_long_retry_after_is_raised_at_once(rsps: Any, clock: FakeClock) -> None:
    rsps.add("GET", ANY_URL, status=429, headers={"Retry-After": "30"})
    with pytest.raises(RateLimitedError) as info:
        make(get_retries=5).get_customer_session("s")
    assert info.value.retry_after == 30.0
    assert len(rsps.calls) == 1
    assert clock.sleeps == []  # the caller (outbox) decides when to come back


def test_long_backoff_is_not_waited_for(rsps: Any, clock: FakeClock, no_jitter: None) -> None:
    # retry_backoff so large that the next wait would exceed 5 s: give up instead of blocking.
    rsps.add("GET", ANY_URL, status=503)
    with pytest.raises(ServerError):
        make(retry_backoff=6.0).get_customer_session("s")
    assert len(rsps.calls) == 1
    assert clock.sleeps == []


@pytest.mark.parametrize(
    ("method", "call"),
    [
        ("PUT", lambda c: c.update_customer_session_v2("s", {"customerSession": {}})),
        ("PUT", lambda c: c.reopen_customer_session("s")),
        ("POST", lambda c: c.track_event_v2({"type": "t"})),
        ("POST", lambda c: c.return_cart_items("s", {"return": {"returnedCartItems": []}})),
        ("DELETE", lambda c: c.delete_customer_data("cust-1")),
        ("DELETE", lambda c: c.delete_coupon_reservation("C", {"integrationIDs": ["x"]})),
    ],
)
@pytest.mark.parametrize(
    "failure",
    [
        {"status": 500},
        {"status": 503},
        {"status": 429, "headers": {"Retry-After": "1"}},
        {"status": 409},
        REFUSED,
        {"body": requests.exceptions.ReadTimeout("Read timed out.")},
    ],
    ids=["500", "503", "429", "409", "refused", "timeout"],
)
def test_writes_are_never_retried(
    rsps: Any, clock: FakeClock, method: str, call: Any, failure: dict[str, Any]
) -> None:
    rsps.add(method, ANY_URL, **failure)
    with pytest.raises(TalonOneError) as info:
        call(make(get_retries=5))
    assert info.value.retryable is True  # the outbox may retry later; the client does not
    assert len(rsps.calls) == 1
    assert clock.sleeps == []


@pytest.mark.parametrize(
    ("status", "cls"),
    [(400, BadRequestError), (401, TalonOneError), (404, NotFoundError), (422, TalonOneError)],
)
def test_4xx_get_is_never_retried(rsps: Any, clock: FakeClock, status: int, cls: type) -> None:
    rsps.add("GET", ANY_URL, status=status, json={"message": "no"})
    with pytest.raises(cls):
        make(get_retries=5).get_customer_session("s")
    assert len(rsps.calls) == 1
    assert clock.sleeps == []


def test_retries_are_logged_without_the_key(ordered: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="")
    ordered.add("GET", ANY_URL, status=503)
    ordered.add("GET", ANY_URL, **OK)
    make().get_customer_session("s")
    assert any("retrying" in r.getMessage() for r in caplog.records)
    assert API_KEY not in caplog.text


def test_every_get_operation_retries(ordered: Any, clock: FakeClock) -> None:
    from .test_operations import CASES, call

    gets = [c for c in CASES if c.method == "GET"]
    assert len(gets) == 11
    client = make(get_retries=1)
    for case in gets:
        ordered.add("GET", ANY_URL, status=502)
        ordered.add("GET", ANY_URL, json=case.answer)
        assert call(client, case) == case.answer
    assert len(ordered.calls) == 2 * len(gets)
