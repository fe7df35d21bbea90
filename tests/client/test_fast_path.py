"""The client's fast path sends exactly what ``session.request(...)`` would, and only when it can.

``IntegrationClient._send`` prepares the request itself and calls ``session.send()`` when the
session is the pristine one the client created; otherwise it calls ``session.request()`` as it
always did. ``responses`` intercepts at the transport adapter, below ``Session.send``, so both
paths are observable: each test sends the same call through the fast path and through
``session.request`` (the same client with the fast path switched off, as it is for a session the
client did not create) and compares what reached the adapter: method, URL (as bytes), headers in
order, body, hooks, cookie jar, and the keyword arguments of ``send`` (timeout, proxies, verify,
stream, cert). One test compares the raw bytes on a real socket.
"""

from __future__ import annotations

import copy
import datetime
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import responses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_talonone.client import (
    ConnectionError,
    IntegrationClient,
    TalonOneError,
    TimeoutError,
    core,
)
from django_talonone.client.operations import _OPS

from .conftest import ANY_URL, API_KEY, BASE_URL
from .test_encoding import AWKWARD_IDS
from .test_operations import CASES, Case, call

UTC = datetime.timezone.utc
CET = datetime.timezone(datetime.timedelta(hours=1))
PROXY_VARS = ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"]


# ---- helpers ----------------------------------------------------------------------------------


def via_session_request(client: IntegrationClient) -> IntegrationClient:
    """The same client (same session, headers, proxies, verify), fast path switched off."""
    twin = copy.copy(client)
    twin._fast_session = None
    return twin


def wire(request: Any) -> dict[str, Any]:
    """Everything about a request as it reached the transport adapter."""
    return {
        "method": request.method,
        "url": request.url.encode("ascii"),
        "headers": list(request.headers.items()),  # in order, names as sent
        "body": request.body,
        "hooks": request.hooks,
        "cookies": (type(request._cookies), len(request._cookies)),
        "body_position": request._body_position,
        "send": dict(request.req_kwargs),  # timeout, proxies, verify, stream, cert
    }


@pytest.fixture
def fast_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records the method of every request that took the fast path."""
    taken: list[str] = []
    original = IntegrationClient._send_prepared

    def spy(self: IntegrationClient, session: Any, method: str, *args: Any) -> Any:
        taken.append(method)
        return original(self, session, method, *args)

    monkeypatch.setattr(IntegrationClient, "_send_prepared", spy)
    return taken


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in [*PROXY_VARS, "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"]:
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.lower(), raising=False)
    return monkeypatch


def both_ways(
    client: IntegrationClient,
    send: Callable[[IntegrationClient], Any],
    answer: Callable[[responses.RequestsMock], None],
    fast_calls: list[str],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Send once via the fast path, once via session.request; return what each put on the wire."""
    results = []
    for c in (client, via_session_request(client)):
        with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
            answer(rsps)
            before = len(fast_calls)
            send(c)
            assert len(rsps.calls) == 1
            results.append(wire(rsps.calls[0].request))
            assert len(fast_calls) - before == (1 if c is client else 0)
    return results[0], results[1]


def answer_for(case: Case) -> Callable[[responses.RequestsMock], None]:
    def add(rsps: responses.RequestsMock) -> None:
        if case.answer is None:
            rsps.add(case.method, ANY_URL, status=case.status)
        else:
            rsps.add(case.method, ANY_URL, status=case.status, json=case.answer)

    return add


# ---- the fast path is what the client normally takes -----------------------------------------


def test_fast_path_is_available_with_this_requests() -> None:
    assert core._FAST_PATH_AVAILABLE
    client = IntegrationClient(BASE_URL, API_KEY)
    assert client._fast_session is client.session
    assert client._url_prefix == BASE_URL


def test_default_client_takes_the_fast_path(
    rsps: Any, client: IntegrationClient, fast_calls: list[str]
) -> None:
    rsps.add("GET", ANY_URL, json={"effects": []})
    client.get_customer_session("s")
    assert fast_calls == ["GET"]


# ---- the same request, byte for byte ----------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
def test_every_operation_sends_the_same_request(case: Case, fast_calls: list[str]) -> None:
    client = IntegrationClient(BASE_URL, API_KEY)
    fast, reference = both_ways(
        client, lambda c: call(c, case, **case.kwargs), answer_for(case), fast_calls
    )
    assert fast == reference


AWKWARD_VALUES = [*AWKWARD_IDS, "..", "a..b", ".x", "~", "ü/€ 😀", "%41", "%zz", "a\tb", ""]


@pytest.mark.parametrize("value", list(AWKWARD_IDS), ids=list(AWKWARD_IDS))
def test_awkward_ids_query_values_and_body(value: str, fast_calls: list[str]) -> None:
    client = IntegrationClient(BASE_URL, API_KEY)
    body = {
        "customerSession": {"profileId": value, "cartItems": [{"name": "Äpfel €", "sku": value}]}
    }
    now = datetime.datetime(2026, 11, 23, 11, 30, tzinfo=CET)

    fast, reference = both_ways(
        client,
        lambda c: c.update_customer_session_v2(value, body, dry=True, now=now),
        lambda rsps: rsps.add("PUT", ANY_URL, json={"effects": []}),
        fast_calls,
    )
    assert fast == reference
    assert fast["body"] == json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


@pytest.mark.parametrize("value", AWKWARD_VALUES, ids=repr)
def test_query_lists_exploded_and_comma_joined(value: str, fast_calls: list[str]) -> None:
    client = IntegrationClient(BASE_URL, API_KEY)
    values = [value, "a b", "c&d=e", "ü", "+"]
    fast, reference = both_ways(
        client,
        lambda c: c.get_loyalty_card_transactions(
            42,
            "card 1",
            subledger_id=values,  # exploded: subledgerId=...&subledgerId=...
            customer_session_ids=values,
            start_date=datetime.datetime(2026, 1, 1, tzinfo=UTC),
            end_date="2026-02-01T00:00:00+01:00",
            page_size=50,
            skip=0,
        ),
        lambda rsps: rsps.add("GET", ANY_URL, json={"data": [], "hasMore": False}),
        fast_calls,
    )
    assert fast == reference
    fast, reference = both_ways(
        client,
        lambda c: c.get_customer_achievements(
            "cust 1",
            campaign_ids=values,
            achievement_status=values,  # comma-joined
        ),
        lambda rsps: rsps.add("GET", ANY_URL, json={"data": [], "hasMore": False}),
        fast_calls,
    )
    assert fast == reference


@pytest.mark.parametrize(
    ("send", "method"),
    [
        (lambda c: c.reopen_customer_session("s?1"), "PUT"),
        (lambda c: c.delete_customer_data("x#y"), "DELETE"),
        (lambda c: c.delete_audience_v2(7), "DELETE"),
        (lambda c: c.get_customer_session("s"), "GET"),
        (lambda c: c.delete_coupon_reservation("C 1", {"integrationIDs": ["a"]}), "DELETE"),
    ],
    ids=["bodyless PUT", "bodyless DELETE", "bodyless DELETE, int id", "GET", "DELETE with body"],
)
def test_content_length_as_requests_sets_it(
    send: Callable[[IntegrationClient], Any], method: str, fast_calls: list[str]
) -> None:
    client = IntegrationClient(BASE_URL, API_KEY)
    fast, reference = both_ways(
        client,
        send,
        lambda rsps: rsps.add(method, ANY_URL, status=204),
        fast_calls,
    )
    assert fast == reference
    headers = dict(fast["headers"])
    if fast["body"] is not None:
        assert headers["Content-Length"] == str(len(fast["body"]))
        assert headers["Content-Type"] == "application/json"
    else:
        assert "Content-Type" not in headers
        # requests announces an empty body on methods that may carry one, never on GET.
        assert headers.get("Content-Length") == (None if method == "GET" else "0")


def test_bodyless_post_gets_content_length_zero(fast_calls: list[str]) -> None:
    # No operation POSTs without a body today; the rule comes from requests, checked directly.
    client = IntegrationClient(BASE_URL, API_KEY)
    op = {**_OPS["reopen_customer_session"], "method": "POST"}
    fast, reference = both_ways(
        client,
        lambda c: c._call(op, ("s",), None, {}),
        lambda rsps: rsps.add("POST", ANY_URL, json={}),
        fast_calls,
    )
    assert fast == reference
    assert dict(fast["headers"])["Content-Length"] == "0"


def test_headers_of_with_headers_clone_in_the_same_order(fast_calls: list[str]) -> None:
    client = IntegrationClient(BASE_URL, API_KEY, user_agent="shop/1.0")
    # A differently cased duplicate of a header the client sets, and one of requests' defaults.
    tagged = client.with_headers(
        {"Idempotency-Key": "order-17", "accept": "application/json; q=1", "CONNECTION": "close"}
    )
    assert tagged.session is client.session and tagged._fast_session is client.session
    fast, reference = both_ways(
        tagged,
        lambda c: c.update_customer_session_v2("s", {"customerSession": {}}),
        lambda rsps: rsps.add("PUT", ANY_URL, json={"effects": []}),
        fast_calls,
    )
    assert fast == reference
    names = [name for name, _ in fast["headers"]]
    assert names == [
        "User-Agent",
        "Accept-Encoding",
        "accept",
        "CONNECTION",
        "Content-Type",
        "Idempotency-Key",
        "Authorization",
        "Content-Length",
    ]


def test_session_headers_set_after_construction_are_merged_alike(fast_calls: list[str]) -> None:
    client = IntegrationClient(BASE_URL, API_KEY)
    client.session.headers["X-Shop"] = "acme"
    client.session.headers["accept-encoding"] = None  # None removes a header, as in requests
    fast, reference = both_ways(
        client,
        lambda c: c.get_customer_session("s"),
        lambda rsps: rsps.add("GET", ANY_URL, json={}),
        fast_calls,
    )
    assert fast == reference
    headers = dict(fast["headers"])
    assert headers["X-Shop"] == "acme" and "Accept-Encoding" not in headers


def test_proxies_and_ca_bundle_read_at_construction(
    clean_env: pytest.MonkeyPatch, tmp_path: Any, fast_calls: list[str]
) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    clean_env.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    clean_env.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    client = IntegrationClient(BASE_URL, API_KEY, timeout=(1.5, 7))
    clean_env.delenv("HTTPS_PROXY")
    clean_env.delenv("REQUESTS_CA_BUNDLE")
    fast, reference = both_ways(
        client,
        lambda c: c.get_customer_session("s"),
        lambda rsps: rsps.add("GET", ANY_URL, json={}),
        fast_calls,
    )
    assert fast == reference
    assert fast["send"]["proxies"]["https"] == "http://proxy.internal:3128"
    assert fast["send"]["verify"] == str(bundle)
    assert fast["send"]["timeout"] == (1.5, 7.0)


def test_session_verify_cert_and_stream_are_read_alike(
    clean_env: Any, fast_calls: list[str]
) -> None:
    client = IntegrationClient(BASE_URL, API_KEY)
    client.session.verify = False  # the client's own verify (from construction) still wins
    client.session.cert = ("/tmp/client.pem", "/tmp/client.key")
    fast, reference = both_ways(
        client,
        lambda c: c.get_customer_session("s"),
        lambda rsps: rsps.add("GET", ANY_URL, json={}),
        fast_calls,
    )
    assert fast == reference
    assert fast["send"]["verify"] is True
    assert fast["send"]["cert"] == ("/tmp/client.pem", "/tmp/client.key")


@pytest.mark.parametrize(
    "base_url",
    [
        "https://ACME.Talon.One",
        "https://acme.talon.one:8443/",
        "http://127.0.0.1:8080/api/v1",
        "https://bücher.example",
        "https://acme.talon.one/a%2fb",  # lowercase escape: not plain, prepare_url every call
        "https://acme.talon.one/base path",  # likewise
        "https://acme.talon.one/x/../y",  # likewise: a dot segment
    ],
)
def test_base_urls(base_url: str, fast_calls: list[str]) -> None:
    client = IntegrationClient(base_url, API_KEY)
    assert client._fast_session is client.session
    for value in ["a/b", "ü", "%41", "..."]:
        fast, reference = both_ways(
            client,
            lambda c, v=value: c.get_customer_inventory(v, profile=True, coupons=False),
            lambda rsps: rsps.add("GET", ANY_URL, json={}),
            fast_calls,
        )
        assert fast == reference


def test_plain_base_path_is_joined_to_the_prepared_prefix() -> None:
    assert IntegrationClient("https://ACME.talon.one/", API_KEY)._url_prefix == (
        "https://acme.talon.one"
    )
    assert IntegrationClient("http://h:8080/api/v1", API_KEY)._url_prefix == "http://h:8080/api/v1"
    assert IntegrationClient("https://h/a%2fb", API_KEY)._url_prefix is None
    assert IntegrationClient("https://h/x/../y", API_KEY)._url_prefix is None


# ---- the URL: the prefix-and-tail shortcut equals requests' prepare_url ----------------------


def prepared(url: str, params: Any = None) -> str:
    p = requests.PreparedRequest()
    p.prepare_url(url, params)
    return str(p.url)


def test_every_plain_tail_is_left_alone_by_prepare_url() -> None:
    """Exhaustively for one character or escape in a segment or the query: whatever _PLAIN_TAIL
    accepts, preparing base URL + tail gives the prepared prefix + tail, unchanged."""
    pieces = [chr(c) for c in range(0x20, 0x7F)] + [f"%{b:02X}" for b in range(256)]
    pieces += [f"%{b:02x}" for b in range(256)] + ["ü", "", ".", "..", "...", "%", "%4"]
    accepted = 0
    for base_url in (BASE_URL, "http://127.0.0.1:8080/api/v1", "https://Bücher.example"):
        prefix = core._prepared_prefix(base_url)
        assert prefix is not None
        for piece in pieces:
            for tail in (
                f"/v1/x/{piece}",
                f"/v1/{piece}/y",
                f"/{piece}",
                f"/v1/x?k={piece}",
                f"/v1?{piece}",
                f"/v1?a=1&b={piece}{piece}",
            ):
                if core._PLAIN_TAIL.fullmatch(tail):
                    accepted += 1
                    assert prepared(base_url + tail) == prefix + tail, (base_url, tail)
    assert accepted > 1000


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    ident=st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12).filter(
        lambda s: s not in (".", "..")
    ),
    values=st.lists(st.text(st.characters(exclude_categories=["Cs"]), max_size=8), max_size=3),
)
def test_url_bytes_for_any_id_and_query(ident: str, values: list[str]) -> None:
    client = IntegrationClient(BASE_URL, API_KEY)
    twin = via_session_request(client)
    urls = []
    for c in (client, twin):
        with responses.RequestsMock() as rsps:
            rsps.add("GET", ANY_URL, json={"data": []})
            c.get_loyalty_card_points(7, ident, subledger_id=values, transaction_uuids=values)
            urls.append(rsps.calls[0].request.url.encode("ascii"))
    assert urls[0] == urls[1]
    # and our encoders only ever produce plain tails: the shortcut is the one taken
    tail = urls[0].decode()[len(BASE_URL) :]
    assert core._PLAIN_TAIL.fullmatch(tail), tail


# ---- answers and failures come back the same way ----------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        requests.exceptions.ConnectTimeout("Connect timed out"),
        requests.exceptions.ReadTimeout("Read timed out. (read timeout=10)"),
        requests.exceptions.ConnectionError(
            "Max retries exceeded (Caused by NewConnectionError('[Errno 111] Connection refused'))"
        ),
        requests.exceptions.ConnectionError("Connection aborted: RemoteDisconnected"),
        requests.exceptions.SSLError("certificate verify failed"),
        requests.exceptions.ChunkedEncodingError("Connection broken"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transport_errors_map_the_same(failure: Exception, fast_calls: list[str]) -> None:
    client = IntegrationClient(BASE_URL, API_KEY, get_retries=0)
    raised = []
    for c in (client, via_session_request(client)):
        with responses.RequestsMock() as rsps:
            rsps.add("PUT", ANY_URL, body=failure)
            with pytest.raises((TimeoutError, ConnectionError)) as info:
                c.update_customer_session_v2("s", {"customerSession": {}})
        exc = info.value
        raised.append((type(exc), str(exc), exc.outcome_unknown, exc.retryable, exc.path))
    assert raised[0] == raised[1]
    assert fast_calls == ["PUT"]


def test_invalid_header_fails_the_same(fast_calls: list[str]) -> None:
    client = IntegrationClient(BASE_URL, API_KEY).with_headers({"X-Order": "17\r\nX-Evil: 1"})
    raised = []
    for c in (client, via_session_request(client)):
        with pytest.raises(ConnectionError) as info:
            c.get_customer_session("s")
        raised.append((str(info.value), type(info.value.__cause__)))
    assert raised[0] == raised[1]
    assert raised[0][1] is requests.exceptions.InvalidHeader
    assert API_KEY not in raised[0][0]


def test_redirect_is_not_followed_and_next_is_prepared_alike(fast_calls: list[str]) -> None:
    client = IntegrationClient(BASE_URL, API_KEY)
    seen = []
    original = requests.Session.send

    def send(session: requests.Session, request: Any, **kwargs: Any) -> Any:
        resp = original(session, request, **kwargs)
        seen.append((resp.status_code, resp.next.url if resp.next else None, resp.history))
        return resp

    results = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(requests.Session, "send", send)
        for c in (client, via_session_request(client)):
            with responses.RequestsMock() as rsps:
                rsps.add("GET", ANY_URL, status=302, headers={"Location": "/v2/elsewhere"})
                with pytest.raises(TalonOneError) as info:
                    c.get_customer_session("s")
                results.append((type(info.value), str(info.value), len(rsps.calls)))
    assert results[0] == results[1]
    assert seen[0] == seen[1] == (302, f"{BASE_URL}/v2/elsewhere", [])
    assert fast_calls == ["GET"]


def test_cookie_set_by_an_answer_is_sent_back_via_session_request(
    rsps: Any, fast_calls: list[str]
) -> None:
    """The API sets no cookies; should a load balancer set one, requests' handling applies."""
    client = IntegrationClient(BASE_URL, API_KEY)
    rsps.add("GET", ANY_URL, json={}, headers={"Set-Cookie": "affinity=node-2; Path=/"})
    rsps.add("GET", ANY_URL, json={})
    client.get_customer_session("s")
    assert fast_calls == ["GET"]
    assert client.session.cookies.get("affinity") == "node-2"  # stored by Session.send, as ever
    client.get_customer_session("s")
    assert fast_calls == ["GET"]  # the second call went through session.request
    assert rsps.calls[1].request.headers["Cookie"] == "affinity=node-2"


# ---- when the fast path is not taken ----------------------------------------------------------


def test_user_supplied_session_uses_session_request(rsps: Any, fast_calls: list[str]) -> None:
    session = requests.Session()
    session.trust_env = False
    client = IntegrationClient(BASE_URL, API_KEY, session=session)
    assert client._fast_session is None
    rsps.add("GET", ANY_URL, json={})
    rsps.add("GET", ANY_URL, json={})
    client.get_customer_session("s")
    client.with_headers({"X-A": "1"}).get_customer_session("s")  # a clone: the same rule
    assert fast_calls == []


def _auth(s: requests.Session) -> None:
    s.auth = ("user", "pass")


def _hook(s: requests.Session) -> None:
    s.hooks["response"].append(lambda r, *a, **k: r)


def _params(s: requests.Session) -> None:
    s.params = {"tenant": "acme"}


def _trust_env(s: requests.Session) -> None:
    s.trust_env = True


def _cookie(s: requests.Session) -> None:
    s.cookies.set("c", "1", domain="acme.europe-west1.talon.one")


def _proxies(s: requests.Session) -> None:
    s.proxies = {"https": "http://proxy.internal:3128"}


@pytest.mark.parametrize(
    "configure",
    [_auth, _hook, _params, _trust_env, _cookie, _proxies],
    ids=["auth", "hooks", "params", "trust_env", "cookies", "proxies"],
)
def test_session_given_state_after_construction_uses_session_request(
    clean_env: Any, configure: Callable[[requests.Session], None], fast_calls: list[str]
) -> None:
    client = IntegrationClient(BASE_URL, API_KEY)
    configure(client.session)
    with responses.RequestsMock() as rsps:
        rsps.add("GET", ANY_URL, json={})
        client.get_customer_session("s")
        sent = rsps.calls[0].request
    assert fast_calls == []
    # ... and session.request did merge that state in, as it always has:
    if configure is _auth:
        assert sent.headers["Authorization"].startswith("Basic ")
    if configure is _params:
        assert sent.url.endswith("?tenant=acme")
    if configure is _cookie:
        assert sent.headers["Cookie"] == "c=1"
    if configure is _proxies:
        assert sent.req_kwargs["proxies"]["https"] == "http://proxy.internal:3128"


@pytest.mark.parametrize(
    "base_url",
    [
        "https://user:secret@acme.talon.one",
        "https://acme.talon.one?tenant=1",
        "https://acme.talon.one#x",
    ],
    ids=["userinfo", "query", "fragment"],
)
def test_base_url_with_userinfo_query_or_fragment_uses_session_request(
    base_url: str, fast_calls: list[str]
) -> None:
    client = IntegrationClient(base_url, API_KEY)
    assert client._fast_session is None
    with responses.RequestsMock() as rsps:
        rsps.add("GET", ANY_URL, json={})
        client.get_customer_session("s")
    assert fast_calls == []


def test_replaced_session_uses_session_request(rsps: Any, fast_calls: list[str]) -> None:
    client = IntegrationClient(BASE_URL, API_KEY)
    client.session = requests.Session()
    rsps.add("GET", ANY_URL, json={})
    client.get_customer_session("s")
    assert fast_calls == []


def test_stubbing_session_request_still_intercepts_every_call(fast_calls: list[str]) -> None:
    """A shop's test that patches requests.Session.request keeps seeing our calls."""
    client = IntegrationClient(BASE_URL, API_KEY)
    seen: list[tuple[str, str]] = []

    def fake_request(self: requests.Session, method: str, url: str, **kwargs: Any) -> Any:
        seen.append((method, url))
        resp = requests.Response()
        resp.status_code = 200
        resp._content = b'{"effects": []}'
        return resp

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(requests.Session, "request", fake_request)
        assert client.get_customer_session("s") == {"effects": []}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(client.session, "request", lambda *a, **k: fake_request(client.session, *a))
        assert client.get_customer_session("t") == {"effects": []}
    for name in ("prepare_request", "merge_environment_settings"):
        original = getattr(requests.Session, name)
        with pytest.MonkeyPatch.context() as mp, responses.RequestsMock() as rsps:
            mp.setattr(requests.Session, name, lambda self, *a, _o=original: _o(self, *a))
            rsps.add("GET", ANY_URL, json={})
            client.get_customer_session("u")
    assert seen == [
        ("GET", f"{BASE_URL}/v2/customer_sessions/s"),
        ("GET", f"{BASE_URL}/v2/customer_sessions/t"),
    ]
    assert fast_calls == []


def test_wrapped_session_methods_disable_the_fast_path() -> None:
    import functools

    @functools.wraps(requests.Session.request)
    def wrapper(*args: Any, **kwargs: Any) -> Any:  # pragma: no cover - never called
        raise AssertionError

    assert core._is_requests_own(requests.Session.request)
    assert not core._is_requests_own(wrapper)
    assert not core._is_requests_own(lambda: None)


# ---- raw bytes on a real socket ---------------------------------------------------------------


@pytest.fixture
def raw_server(clean_env: Any) -> Iterator[tuple[str, list[bytes]]]:
    """A one-request-per-connection HTTP server on 127.0.0.1 that records the raw requests."""
    received: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(body) < length and (chunk := conn.recv(65536)):
                    body += chunk
                received.append(data[: len(head) + 4] + body)
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 2\r\nConnection: close\r\n\r\n{}"
                )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    host, port = listener.getsockname()
    yield f"http://{host}:{port}", received
    listener.close()
    thread.join(5)


def test_raw_bytes_on_the_wire_are_identical(
    raw_server: tuple[str, list[bytes]], fast_calls: list[str]
) -> None:
    url, received = raw_server
    owner = IntegrationClient(url, API_KEY)
    client = owner.with_headers({"Idempotency-Key": "k-1"})
    body = {"customerSession": {"profileId": "ü 1", "couponCodes": ["A&B", "C D"]}}
    sends: list[Callable[[IntegrationClient], Any]] = [
        lambda c: c.update_customer_session_v2("sess/ü 1", body, dry=True),
        lambda c: c.get_loyalty_card_transactions(3, "card 1", subledger_id=["a b", "ü"]),
        lambda c: c.reopen_customer_session("s#1"),
        lambda c: c.delete_customer_data("p?1"),
    ]
    for send in sends:
        for c in (client, via_session_request(client)):
            send(c)
    assert len(fast_calls) == len(sends)
    assert len(received) == 2 * len(sends)
    for fast, reference in zip(received[::2], received[1::2], strict=True):
        assert fast == reference
    assert b"\r\nContent-Length: 0\r\n" in received[4] and received[4].startswith(b"PUT ")
    owner.close()


# ---- import cost: types is imported on first use ---------------------------------------------


def test_types_is_imported_lazily_and_still_importable() -> None:
    code = (
        "import sys, django_talonone.client as c\n"
        "assert 'django_talonone.client.types' not in sys.modules\n"
        "assert 'types' in dir(c) and 'types' in c.__all__\n"
        "from django_talonone.client import types\n"
        "assert c.types is types is sys.modules['django_talonone.client.types']\n"
        "assert types.IntegrationStateV2\n"
        "try:\n"
        "    c.no_such_name\n"
        "except AttributeError:\n"
        "    pass\n"
        "else:\n"
        "    raise AssertionError\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "ok"
    attribute = subprocess.run(
        [sys.executable, "-c", "import django_talonone.client as c; print(c.types.__name__)"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert attribute.stdout.strip() == "django_talonone.client.types"
