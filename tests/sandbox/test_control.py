"""The test-only control endpoints under /sandbox/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from django_talonone.sandbox import Sandbox

from .conftest import API_KEY, Http, cart_body

DEMO = Path(__file__).parents[2] / "django_talonone" / "sandbox" / "campaigns" / "demo.json"


@pytest.fixture
def ctl(sandbox: Sandbox) -> Http:
    """A connection without an API key: control endpoints do not need one."""
    conn = Http(sandbox.url, api_key=None)
    yield conn
    conn.close()


def test_health_needs_no_key(ctl: Http) -> None:
    assert ctl.request("GET", "/sandbox/health") == (
        200,
        {"content-type": "application/json", "content-length": "15"},
        {"status": "ok"},
    )


def test_request_log_records_and_never_holds_the_key(
    sandbox: Sandbox, sandbox_http: Http, ctl: Http
) -> None:
    sandbox_http.request("PUT", "/v2/customer_sessions/s%2F1?dry=true", cart_body())
    sandbox_http.request("GET", "/v2/customer_sessions/s%2F1", auth=False)
    status, _, log = ctl.request("GET", "/sandbox/requests")
    assert status == 200
    assert [(e["method"], e["operation"], e["status"]) for e in log] == [
        ("PUT", "update_customer_session_v2", 200),
        ("GET", "get_customer_session", 401),
    ]
    first = log[0]
    assert first["path"] == "/v2/customer_sessions/s%2F1"
    assert first["query"] == {"dry": ["true"]}
    assert first["body"] == cart_body()
    assert first["key"] == "session:s/1"
    assert first["time"].endswith("Z")
    assert "authorization" not in first["headers"]
    assert API_KEY not in json.dumps(log)
    assert sandbox.requests == log

    _, _, only = ctl.request("GET", "/sandbox/requests?operation=GetCustomerSession")
    assert [e["operation"] for e in only] == ["get_customer_session"]
    assert ctl.request("DELETE", "/sandbox/requests")[0] == 204
    assert ctl.request("GET", "/sandbox/requests")[2] == []


def test_unreadable_bodies_are_logged_as_text(sandbox_http: Http, ctl: Http) -> None:
    sandbox_http.request("PUT", "/v2/customer_sessions/s1", raw=b"{not json")
    log = ctl.request("GET", "/sandbox/requests")[2]
    assert log[0]["status"] == 400 and log[0]["body"] == "{not json"


def test_counters(sandbox_http: Http, ctl: Http) -> None:
    sandbox_http.request("PUT", "/v2/customer_sessions/s1", cart_body())
    sandbox_http.request("PUT", "/v2/customer_sessions/s1", cart_body())
    sandbox_http.request("GET", "/v2/nothing")
    status, _, counters = ctl.request("GET", "/sandbox/counters")
    assert status == 200
    assert counters == {
        "requests": {"update_customer_session_v2": 2},
        "statuses": {"200": 2, "404": 1},
        "conflicts": {},
        "max_parallel": {"session:s1": 1},
        "rate_limited": 0,
        "faults": {},
        "errors": 0,
        "in_flight": {},
    }


def test_faults_over_http(sandbox_http: Http, ctl: Http) -> None:
    status, _, fault = ctl.request(
        "POST",
        "/sandbox/faults",
        {"operation": "UpdateCustomerSessionV2", "kind": "status", "params": {"status": 503}},
    )
    assert status == 201
    assert fault == {
        "id": 1,
        "operation": "update_customer_session_v2",
        "kind": "status",
        "rate": 1.0,
        "count": None,
        "fired": 0,
        "params": {"status": 503, "apply": False},
    }
    # Parameters may also sit at the top level.
    ctl.request("POST", "/sandbox/faults", {"operation": "*", "kind": "latency", "seconds": 0.01})
    assert sandbox_http.request("PUT", "/v2/customer_sessions/s1", cart_body())[0] == 503
    listed = ctl.request("GET", "/sandbox/faults")[2]
    assert [(f["id"], f["fired"]) for f in listed] == [(1, 1), (2, 1)]
    assert ctl.request("DELETE", "/sandbox/faults/1")[0] == 204
    assert ctl.request("DELETE", "/sandbox/faults/1")[0] == 404
    assert ctl.request("DELETE", "/sandbox/faults")[0] == 204
    assert ctl.request("GET", "/sandbox/faults")[2] == []


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "status"},
        {"operation": "*", "kind": "meteor"},
        {"operation": "*", "kind": "status", "rate": 2},
        {"operation": "*", "kind": "status", "params": {"status": 418}},
        {"operation": "*", "kind": "timeout", "params": "slow"},
        ["not", "an", "object"],
    ],
)
def test_bad_fault_is_400(ctl: Http, spec: object) -> None:
    status, _, body = ctl.request("POST", "/sandbox/faults", spec)
    assert status == 400
    assert body["StatusCode"] == 400 and body["message"]


def test_reset_forgets_everything(sandbox: Sandbox, sandbox_http: Http, ctl: Http) -> None:
    sandbox_http.request("PUT", "/v2/customer_sessions/s1", cart_body())
    ctl.request("POST", "/sandbox/faults", {"operation": "*", "kind": "conflict"})
    assert ctl.request("POST", "/sandbox/reset")[0] == 204
    assert ctl.request("GET", "/sandbox/requests")[2] == []
    assert ctl.request("GET", "/sandbox/faults")[2] == []
    assert ctl.request("GET", "/sandbox/counters")[2]["requests"] == {}
    assert sandbox_http.request("GET", "/v2/customer_sessions/s1")[0] == 404


def test_state_snapshot(sandbox_http: Http, ctl: Http) -> None:
    sandbox_http.request("PUT", "/v2/customer_sessions/snap-1", cart_body())
    status, _, snapshot = ctl.request("GET", "/sandbox/state")
    assert status == 200
    assert isinstance(snapshot, dict)
    assert "snap-1" in json.dumps(snapshot)


def test_campaigns_endpoint(sandbox: Sandbox, ctl: Http) -> None:
    assert ctl.request("PUT", "/sandbox/campaigns", raw=b"{oops")[0] == 400
    assert ctl.request("PUT", "/sandbox/campaigns", ["a", "list"])[0] == 400
    status, _, body = ctl.request("PUT", "/sandbox/campaigns", {"campaigns": "not a list"})
    assert status == 400 and body["message"]
    if DEMO.exists():
        demo = json.loads(DEMO.read_text())
        assert ctl.request("PUT", "/sandbox/campaigns", demo)[0] == 204


def test_rate_limit_endpoint(sandbox_http: Http, ctl: Http) -> None:
    assert ctl.request("PUT", "/sandbox/rate_limit", {"rate": 0.2}) == (
        200,
        {"content-type": "application/json", "content-length": "12"},
        {"rate": 0.2},
    )
    statuses = [sandbox_http.request("GET", "/v2/customer_sessions/x")[0] for _ in range(3)]
    assert 429 in statuses
    assert ctl.request("PUT", "/sandbox/rate_limit", {"rate": -1})[0] == 400
    assert ctl.request("PUT", "/sandbox/rate_limit", {})[0] == 400
    ctl.request("POST", "/sandbox/reset")  # back to the configured limit: none
    assert sandbox_http.request("GET", "/v2/customer_sessions/x")[0] == 404


def test_unknown_control_endpoint_and_method(ctl: Http) -> None:
    assert ctl.request("GET", "/sandbox/nothing")[0] == 404
    status, headers, _ = ctl.request("GET", "/sandbox/reset")
    assert status == 405 and headers["allow"] == "POST"
