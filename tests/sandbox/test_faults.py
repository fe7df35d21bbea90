"""Injected faults, 409s on parallel requests for one key, and the 429 rate limit."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from django_talonone.client import (
    ConflictError,
    ConnectionError,
    IntegrationClient,
    MalformedResponseError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    TimeoutError,
)
from django_talonone.sandbox import Sandbox
from django_talonone.sandbox.app import CONFLICT_MESSAGES

from .conftest import API_KEY, Http, cart_body

UPDATE = "update_customer_session_v2"


@pytest.fixture
def client(sandbox: Sandbox) -> Any:
    with sandbox.client(timeout=(2.0, 5.0)) as c:
        yield c


def _session_exists(client: IntegrationClient, session_id: str) -> bool:
    try:
        client.get_customer_session(session_id)
    except NotFoundError:
        return False
    return True


# -- each kind, as the client sees it ---------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503])
def test_status_fault_is_a_server_error(sandbox: Sandbox, client: Any, status: int) -> None:
    sandbox.faults.add(UPDATE, "status", status=status)
    with pytest.raises(ServerError) as info:
        client.update_customer_session_v2("s1", cart_body())
    assert info.value.status == status
    assert info.value.outcome_unknown is True
    assert not _session_exists(client, "s1")  # not applied unless asked
    assert sandbox.requests[0]["faults"] == ["status"]


def test_status_fault_can_apply_the_request_first(sandbox: Sandbox, client: Any) -> None:
    sandbox.faults.add(UPDATE, "status", status=502, apply=True)
    with pytest.raises(ServerError):
        client.update_customer_session_v2("s1", cart_body())
    assert _session_exists(client, "s1")


def test_rate_limit_fault_is_429_with_retry_after(sandbox: Sandbox, client: Any) -> None:
    sandbox.faults.add(UPDATE, "rate_limit", retry_after=2)
    with pytest.raises(RateLimitedError) as info:
        client.update_customer_session_v2("s1", cart_body())
    assert info.value.retry_after == 2.0


def test_conflict_fault_is_409(sandbox: Sandbox, client: Any) -> None:
    sandbox.faults.add(UPDATE, "conflict")
    with pytest.raises(ConflictError) as info:
        client.update_customer_session_v2("s1", cart_body())
    assert info.value.message == CONFLICT_MESSAGES["session"]
    assert sandbox.counters["conflicts"] == {}  # injected, not a real concurrency conflict


@pytest.mark.parametrize("apply", [False, True])
def test_reset_fault_drops_the_connection(sandbox: Sandbox, client: Any, apply: bool) -> None:
    sandbox.faults.add(UPDATE, "reset", count=1, apply=apply)
    with pytest.raises(ConnectionError) as info:
        client.update_customer_session_v2("s1", cart_body())
    assert info.value.outcome_unknown is True
    assert _session_exists(client, "s1") is apply
    assert sandbox.requests[0]["status"] is None


def test_timeout_fault_hangs_past_the_client_timeout(sandbox: Sandbox) -> None:
    sandbox.faults.add(UPDATE, "timeout", seconds=1.0, apply=True)
    with sandbox.client(timeout=(2.0, 0.3)) as client, pytest.raises(TimeoutError) as info:
        client.update_customer_session_v2("s1", cart_body())
    assert info.value.outcome_unknown is True
    sandbox.faults.clear()
    with sandbox.client() as client:
        assert _session_exists(client, "s1")


def test_malformed_fault_cuts_the_json(sandbox: Sandbox, client: Any) -> None:
    sandbox.faults.add(UPDATE, "malformed")
    with pytest.raises(MalformedResponseError) as info:
        client.update_customer_session_v2("s1", cart_body())
    assert info.value.status == 200
    assert _session_exists(client, "s1")  # the request was applied; only its answer broke


def test_latency_fault_delays_but_answers(sandbox: Sandbox, client: Any) -> None:
    sandbox.faults.add(UPDATE, "latency", seconds=0.05)
    assert client.update_customer_session_v2("s1", cart_body())
    assert sandbox.requests[0]["faults"] == ["latency"]
    assert sandbox.counters["faults"] == {"latency": 1}


# -- which requests a fault hits --------------------------------------------------------------


def test_count_limits_the_fault(sandbox: Sandbox, client: Any) -> None:
    fault = sandbox.faults.add(UPDATE, "status", count=2)
    outcomes = []
    for i in range(4):
        try:
            client.update_customer_session_v2(f"s{i}", cart_body())
            outcomes.append("ok")
        except ServerError:
            outcomes.append("500")
    assert outcomes == ["500", "500", "ok", "ok"]
    listed = sandbox.faults.list()
    assert listed[0]["id"] == fault["id"] and listed[0]["fired"] == 2 and listed[0]["count"] == 0


def test_star_and_title_select_operations(sandbox: Sandbox, client: Any) -> None:
    sandbox.faults.add("UpdateCustomerProfileV2", "status", status=503)
    client.update_customer_session_v2("s1", cart_body())  # untouched
    with pytest.raises(ServerError):
        client.update_customer_profile_v2("p1", {"attributes": {}})
    sandbox.faults.clear()
    sandbox.faults.add("*", "conflict")
    with pytest.raises(ConflictError):
        client.update_customer_session_v2("s1", cart_body())


def _pattern(sandbox: Sandbox, n: int = 40) -> list[int]:
    conn = Http(sandbox.url)
    statuses = [
        conn.request("PUT", f"/v2/customer_sessions/s{i}", cart_body())[0] for i in range(n)
    ]
    conn.close()
    return statuses


def test_faults_are_deterministic_under_a_seed() -> None:
    patterns = []
    for seed in (7, 7, 8):
        with Sandbox(api_key=API_KEY, seed=seed) as sandbox:
            sandbox.faults.add(UPDATE, "status", rate=0.5)
            patterns.append(_pattern(sandbox))
            # reset re-seeds: the same faults give the same pattern again
            sandbox.reset()
            sandbox.faults.add(UPDATE, "status", rate=0.5)
            assert _pattern(sandbox) == patterns[-1]
    assert patterns[0] == patterns[1]
    assert patterns[0] != patterns[2]
    assert set(patterns[0]) == {200, 500}


def test_bad_fault_descriptions_are_refused(sandbox: Sandbox) -> None:
    for args, params in [
        (("nope", "status"), {}),
        ((UPDATE, "explode"), {}),
        ((UPDATE, "status"), {"status": 404}),
        ((UPDATE, "latency"), {"seconds": 3600}),
        ((UPDATE, "latency"), {"colour": "red"}),
    ]:
        with pytest.raises(ValueError):
            sandbox.faults.add(*args, **params)
    with pytest.raises(ValueError):
        sandbox.faults.add(UPDATE, "status", rate=1.5)
    with pytest.raises(ValueError):
        sandbox.faults.add(UPDATE, "status", count=0)
    assert len(sandbox.faults) == 0


# -- 409: one request at a time per session or profile ----------------------------------------


def _in_background(fn: Any) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(fn())
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def _wait_in_flight(sandbox: Sandbox, key: str) -> None:
    deadline = time.monotonic() + 5
    while key not in sandbox.counters["in_flight"]:
        assert time.monotonic() < deadline, f"{key} never became in flight"
        time.sleep(0.005)


def test_second_request_on_a_busy_session_gets_409(sandbox: Sandbox) -> None:
    sandbox.faults.add(UPDATE, "latency", seconds=0.5, count=1)
    first_client, second_client = sandbox.client(), sandbox.client()
    thread, first = _in_background(
        lambda: first_client.update_customer_session_v2("s1", cart_body())
    )
    _wait_in_flight(sandbox, "session:s1")
    with pytest.raises(ConflictError) as info:
        second_client.update_customer_session_v2("s1", cart_body())
    assert info.value.body == {
        "message": "Too many requests are updating this session at the same time",
        "errors": [],
        "StatusCode": 409,
    }
    # Another session is not blocked by the busy one.
    assert second_client.update_customer_session_v2("s2", cart_body())
    thread.join(5)
    assert isinstance(first[0], dict)  # the first request went through
    counters = sandbox.counters
    assert counters["conflicts"] == {"session:s1": 1}
    assert counters["max_parallel"]["session:s1"] == 2
    assert counters["max_parallel"]["session:s2"] == 1
    assert counters["in_flight"] == {}
    first_client.close()
    second_client.close()


def test_profile_update_and_event_share_the_profile_key(sandbox: Sandbox) -> None:
    sandbox.faults.add("update_customer_profile_v2", "latency", seconds=0.5, count=1)
    first_client, second_client = sandbox.client(), sandbox.client()
    thread, _ = _in_background(
        lambda: first_client.update_customer_profile_v2("p1", {"attributes": {"a": 1}})
    )
    _wait_in_flight(sandbox, "profile:p1")
    with pytest.raises(ConflictError):
        second_client.track_event_v2({"type": "viewed", "profileId": "p1"}, silent="no")
    thread.join(5)
    assert sandbox.counters["conflicts"] == {"profile:p1": 1}
    first_client.close()
    second_client.close()


# -- 429: the configured request rate ---------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after() -> None:
    # 0.2/s: one request passes, the next token is 5 s away, so the rest are surely limited.
    with Sandbox(api_key=API_KEY, rate_limit=0.2) as sandbox:
        conn = Http(sandbox.url)
        answers = [
            conn.request("PUT", f"/v2/customer_sessions/s{i}", cart_body()) for i in range(6)
        ]
        limited = [a for a in answers if a[0] == 429]
        assert limited, [a[0] for a in answers]
        assert int(limited[0][1]["retry-after"]) >= 1
        assert limited[0][2]["StatusCode"] == 429
        assert sandbox.counters["rate_limited"] == len(limited)
        # Control endpoints are not limited.
        assert conn.request("GET", "/sandbox/counters")[0] == 200
        with sandbox.client() as client, pytest.raises(RateLimitedError) as info:
            client.update_customer_session_v2("s9", cart_body())
        assert info.value.retry_after is not None and info.value.retry_after >= 1
        sandbox.set_rate_limit(None)
        assert conn.request("PUT", "/v2/customer_sessions/s10", cart_body())[0] == 200
        conn.close()
