"""Routing, auth and request validation of the sandbox's HTTP layer."""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_talonone.client import AuthenticationError, BadRequestError, IntegrationClient
from django_talonone.client.schema import MODELS, OPERATIONS
from django_talonone.sandbox import Sandbox

from .conftest import API_KEY, Echo, Http, cart_body

# -- auth -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [None, f"Bearer {API_KEY}", "ApiKey-v1 wrong-key", "ApiKey-v1", f"ApiKey-v2 {API_KEY}"],
)
def test_missing_or_wrong_api_key_is_401_with_envelope(echo: Echo, header: str | None) -> None:
    conn = Http(echo.url)
    headers = {"Authorization": header} if header else {}
    status, _, body = conn.request("GET", "/v2/customer_sessions/s1", headers=headers, auth=False)
    assert status == 401
    assert body["StatusCode"] == 401
    assert body["message"]
    assert isinstance(body["errors"], list)
    assert API_KEY not in json.dumps(body)
    assert echo.calls == []
    conn.close()


def test_client_sees_authentication_error(echo: Echo) -> None:
    with IntegrationClient(echo.url, "not-the-key") as client, pytest.raises(AuthenticationError):
        client.get_customer_session("s1")


# -- routing ----------------------------------------------------------------------------------


def _minimal(typ: str) -> Any:
    """The smallest value of reference type ``typ`` that passes validation."""
    samples = {
        "str": "x",
        "int": 1,
        "number": 1.5,
        "bool": True,
        "datetime": "2026-01-01T00:00:00Z",
        "UUID": "8a6f2b1e-0000-4000-8000-000000000000",
    }
    if typ in samples:
        return samples[typ]
    if typ.startswith("list["):
        return [_minimal(typ[5:-1])]
    if typ.startswith("dict["):
        return {}
    fields = MODELS.get(typ, {})
    return {name: _minimal(ftyp) for name, (ftyp, required) in fields.items() if required}


def test_every_operation_is_routed(echo: Echo, echo_http: Http) -> None:
    for op in OPERATIONS:
        path = op["path"]
        for wire, _py, typ in op["path_params"]:
            path = path.replace("{" + wire + "}", "7" if typ == "int" else "id-x")
        body = _minimal(op["body"]) if op["body"] else None
        status, _, answer = echo_http.request(op["method"], path, body)
        assert status == op["success"][0], (op["name"], answer)
        assert echo.calls[-1].name == op["name"]


def test_unknown_route_is_404_envelope(echo_http: Http) -> None:
    status, _, body = echo_http.request("GET", "/v2/no_such_thing")
    assert status == 404
    assert body["StatusCode"] == 404 and body["errors"] == [] and "no_such_thing" in body["message"]


def test_wrong_method_is_405_with_allow(echo_http: Http) -> None:
    status, headers, body = echo_http.request("DELETE", "/v2/customer_sessions/s1")
    assert status == 405
    assert headers["allow"] == "GET, PUT"
    assert body["StatusCode"] == 405


def test_literal_segments_win_over_parameters(echo: Echo, echo_http: Http) -> None:
    status, _, _ = echo_http.request("GET", "/v1/coupon_reservations/customerprofiles/CODE1")
    assert status == 200
    assert echo.calls[-1].name == "get_reserved_customers"
    assert echo.calls[-1].path == {"couponValue": "CODE1"}


@pytest.mark.parametrize("awkward", ["a/b?c#d é", "100%", "x y+z", "~/.."])
def test_awkward_ids_are_routed_intact(echo: Echo, awkward: str) -> None:
    with IntegrationClient(echo.url, API_KEY) as client:
        client.update_customer_session_v2(awkward, {"customerSession": {}})
        client.get_loyalty_balances(3, awkward)
    assert echo.calls[0].name == "update_customer_session_v2"
    assert echo.calls[0].path == {"customerSessionId": awkward}
    assert echo.calls[1].path == {"loyaltyProgramId": 3, "integrationId": awkward}


def test_int_path_parameter_is_checked(echo: Echo, echo_http: Http) -> None:
    status, _, body = echo_http.request("GET", "/v1/loyalty_programs/abc/profile/p1/balances")
    assert status == 400
    assert body["errors"][0]["source"] == {"parameter": "loyaltyProgramId"}
    assert echo.calls == []


@pytest.mark.parametrize(
    ("query", "parameter"),
    [("dry=maybe", "dry"), ("now=yesterday", "now")],
)
def test_query_parameters_are_checked(echo_http: Http, query: str, parameter: str) -> None:
    status, _, body = echo_http.request("PUT", f"/v2/customer_sessions/s1?{query}", cart_body())
    assert status == 400
    assert body["errors"][0]["source"] == {"parameter": parameter}


def test_call_carries_decoded_request(echo: Echo, echo_http: Http) -> None:
    echo_http.request(
        "POST",
        "/v2/customer_sessions/s%2F1/returns?dry=true&runRuleEngine=false",
        {"return": {"returnedCartItems": [{"position": 0}]}},
        headers={"Idempotency-Key": "ret-1"},
    )
    call = echo.calls[-1]
    assert call.path == {"customerSessionId": "s/1"}
    assert call.query == {"dry": ["true"], "runRuleEngine": ["false"]}
    assert call.flag("dry") is True and call.flag("runRuleEngine", True) is False
    assert call.body == {"return": {"returnedCartItems": [{"position": 0}]}}
    assert call.headers["idempotency-key"] == "ret-1"
    assert "authorization" not in call.headers


# -- bodies -----------------------------------------------------------------------------------


def _pointers(body: dict[str, Any]) -> list[str]:
    return [e["source"]["pointer"] for e in body["errors"]]


@pytest.mark.parametrize(
    ("raw", "detail"),
    [(b"", "Missing request body"), (b"{nope", "Invalid JSON"), (b"\xff\xfe", "Invalid JSON")],
)
def test_unreadable_body_is_400(echo: Echo, echo_http: Http, raw: bytes, detail: str) -> None:
    status, _, body = echo_http.request("PUT", "/v2/customer_sessions/s1", raw=raw)
    assert status == 400
    assert body["errors"][0]["title"] == detail
    assert body["errors"][0]["source"] == {"pointer": ""}
    assert echo.calls == []


@pytest.mark.parametrize("raw", [b"NaN", b'{"customerSession": {"cartItems": [{"price": 1e999}]}}'])
def test_non_finite_numbers_are_refused(echo_http: Http, raw: bytes) -> None:
    assert echo_http.request("PUT", "/v2/customer_sessions/s1", raw=raw)[0] == 400


def test_missing_required_field_names_it(echo_http: Http) -> None:
    body = cart_body()
    del body["customerSession"]["cartItems"][2]["quantity"]
    status, _, answer = echo_http.request("PUT", "/v2/customer_sessions/s1", body)
    assert status == 400
    assert _pointers(answer) == ["/customerSession/cartItems/2/quantity"]
    assert answer["errors"][0]["title"] == "Missing required field"
    assert "/customerSession/cartItems/2/quantity" in answer["message"]


def test_missing_top_level_object(echo_http: Http) -> None:
    status, _, answer = echo_http.request(
        "PUT", "/v2/customer_sessions/s1", {"customerSession": None}
    )
    assert status == 400
    assert _pointers(answer) == ["/customerSession"]


def test_wrong_types_are_each_named(echo_http: Http) -> None:
    body = cart_body()
    session = body["customerSession"]
    session["cartItems"][0]["quantity"] = "2"
    session["cartItems"][1]["price"] = "cheap"
    session["cartItems"][3]["quantity"] = True
    session["couponCodes"] = ["OK", 5]
    session["additionalCosts"] = {"ship/fast": {"price": "x"}}
    session["attributes"] = {"anything": [1, {"goes": None}]}
    status, _, answer = echo_http.request("PUT", "/v2/customer_sessions/s1", body)
    assert status == 400
    assert sorted(_pointers(answer)) == sorted(
        [
            "/customerSession/cartItems/0/quantity",
            "/customerSession/cartItems/1/price",
            "/customerSession/cartItems/3/quantity",
            "/customerSession/couponCodes/1",
            "/customerSession/additionalCosts/ship~1fast/price",
        ]
    )
    assert all(e["title"] == "Invalid type" for e in answer["errors"])


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ([], ""),
        ({"customerSession": []}, "/customerSession"),
        ({"customerSession": {"cartItems": {}}}, "/customerSession/cartItems"),
        ({"customerSession": {"cartItems": [7]}}, "/customerSession/cartItems/0"),
        ({"customerSession": {}, "responseContent": "customerSession"}, "/responseContent"),
    ],
)
def test_wrong_container_types(echo_http: Http, body: Any, pointer: str) -> None:
    status, _, answer = echo_http.request("PUT", "/v2/customer_sessions/s1", body)
    assert status == 400
    assert _pointers(answer)[0] == pointer


def test_client_surfaces_pointer(echo: Echo) -> None:
    with IntegrationClient(echo.url, API_KEY) as client, pytest.raises(BadRequestError) as info:
        client.track_event_v2({"profileId": "p1"})
    assert info.value.errors[0]["source"] == {"pointer": "/type"}


def test_unknown_fields_are_ignored(echo: Echo, echo_http: Http) -> None:
    status, _, _ = echo_http.request(
        "PUT", "/v2/customer_sessions/s1", {"customerSession": {}, "x": 1}
    )
    assert status == 200


# -- failures of the domain layer -------------------------------------------------------------


def test_handler_bug_is_500_envelope_logged_and_counted(
    echo: Echo, echo_http: Http, caplog: pytest.LogCaptureFixture
) -> None:
    echo.recorder.fail_with = KeyError("boom")
    with caplog.at_level(logging.ERROR, logger="django_talonone.sandbox"):
        status, headers, body = echo_http.request("PUT", "/v2/customer_sessions/s1", cart_body())
    assert status == 500
    assert headers["content-type"] == "application/json"
    assert body["StatusCode"] == 500 and "update_customer_session_v2" in body["message"]
    assert "KeyError" in caplog.text
    assert echo.app.counters()["errors"] == 1


def test_handler_api_error_passes_through(echo: Echo, echo_http: Http) -> None:
    from django_talonone.sandbox.wire import ApiError

    echo.recorder.fail_with = ApiError.not_found("customer session 's1'")
    status, _, body = echo_http.request("GET", "/v2/customer_sessions/s1")
    assert status == 404
    assert body["errors"][0]["source"] == {"resource": "customer session 's1'"}


# -- hypothesis: nothing a client sends makes the sandbox answer 5xx -------------------------

_FUZZED = ["update_customer_session_v2", "update_customer_profile_v2", "track_event_v2"]
_OPS = {op["name"]: op for op in OPERATIONS}

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


def _shaped(typ: str, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values that mostly fit the reference type ``typ``, with random JSON mixed in."""
    if depth > 3:
        return _json
    scalars: dict[str, st.SearchStrategy[Any]] = {
        "str": st.text(max_size=12) | st.sampled_from(["open", "closed", "cancelled", ""]),
        "int": st.integers(min_value=-5, max_value=10_001),
        "number": st.integers(-10, 10**6) | st.floats(-1e6, 1e9, allow_nan=False),
        "bool": st.booleans(),
        "datetime": st.sampled_from(["2026-01-01T00:00:00Z", "2099-12-31T23:59:59+02:00"]),
        "UUID": st.uuids().map(str),
        "Any": _json,
    }
    if typ in scalars:
        return scalars[typ] | _json
    if typ.startswith("list["):
        return st.lists(_shaped(typ[5:-1], depth + 1), max_size=4) | _json
    if typ.startswith("dict[str, "):
        return st.dictionaries(st.text(max_size=8), _shaped(typ[10:-1], depth + 1), max_size=3)
    fields = MODELS.get(typ)
    if fields is None:
        return _json
    return (
        st.fixed_dictionaries(
            {},
            optional={name: _shaped(ftyp, depth + 1) for name, (ftyp, _req) in fields.items()},
        )
        | _json
    )


@pytest.fixture(scope="module")
def fuzz_target() -> Any:
    with Sandbox(api_key=API_KEY) as running:
        conn = Http(running.url)
        yield running, conn
        conn.close()


@pytest.mark.parametrize("name", _FUZZED)
@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), session_id=st.text(min_size=1, max_size=12))
def test_random_bodies_never_get_5xx(
    fuzz_target: Any, name: str, data: Any, session_id: str
) -> None:
    sandbox, conn = fuzz_target
    op = _OPS[name]
    kind, value = data.draw(
        st.one_of(
            st.binary(max_size=64).map(lambda b: ("raw", b)),
            _json.map(lambda v: ("json", v)),
            _shaped(op["body"]).map(lambda v: ("json", v)),
        )
    )
    raw = value if kind == "raw" else json.dumps(value).encode()
    path = op["path"]
    if op["path_params"]:
        path = path.replace("{" + op["path_params"][0][0] + "}", quote(session_id, safe=""))
    query = data.draw(st.sampled_from(["", "?dry=true", "?runRuleEngine=true", "?silent=no"]))
    status, _, answer = conn.request(op["method"], path + query, raw=raw)
    assert status < 500, answer
    assert sandbox.counters["errors"] == 0
