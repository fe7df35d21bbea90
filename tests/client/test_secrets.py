"""The API key never shows up in a repr, an exception, a pickle or a log line."""

from __future__ import annotations

import copy
import http.server
import json
import logging
import pickle
import socket
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from django_talonone.client import IntegrationClient, TalonOneError

from .conftest import ANY_URL, API_KEY, BASE_URL

PROXY_VARS = ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"]


def assert_no_key_in_exception(exc: BaseException, *, chained: bool = True) -> None:
    assert API_KEY not in str(exc)
    assert API_KEY not in repr(exc)
    assert API_KEY not in repr(exc.args)
    assert API_KEY not in repr(vars(exc))
    assert API_KEY.encode() not in pickle.dumps(exc)
    if chained:
        # What a log handler or an error tracker prints, the chained requests error included.
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        assert API_KEY not in text


def assert_no_key_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    assert API_KEY not in caplog.text
    for record in caplog.records:
        assert API_KEY not in record.getMessage()
        assert API_KEY not in repr(record.args)
        assert API_KEY not in repr(vars(record))


def assert_no_key_in_client(client: IntegrationClient) -> None:
    assert API_KEY not in repr(client)
    assert API_KEY not in str(client)
    assert API_KEY not in f"{client!r} {client}"
    assert API_KEY not in repr(vars(client))
    assert API_KEY not in repr(vars(client.session))
    assert API_KEY not in repr(client.session.headers)


# ---- the client object ------------------------------------------------------------------------


def test_key_not_in_repr_str_or_vars() -> None:
    client = IntegrationClient(BASE_URL, API_KEY)
    assert_no_key_in_client(client)
    assert BASE_URL in repr(client)  # the repr is still useful


def test_key_not_in_client_after_calls(rsps: Any, client: IntegrationClient) -> None:
    rsps.add("GET", ANY_URL, json={"effects": []})
    client.get_customer_session("s")
    assert_no_key_in_client(client)


def test_pickling_the_client_or_its_secret_refuses() -> None:
    client = IntegrationClient(BASE_URL, API_KEY)
    with pytest.raises(TypeError, match="cannot be pickled") as info:
        pickle.dumps(client)
    assert API_KEY not in str(info.value)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError):
            pickle.dumps(client._api_key, protocol=protocol)
    with pytest.raises(TypeError):
        copy.deepcopy(client)


def test_swapped_constructor_arguments_do_not_echo_the_key() -> None:
    # IntegrationClient(api_key, base_url) by mistake: the error must not print the key.
    with pytest.raises(ValueError) as info:
        IntegrationClient(API_KEY, BASE_URL)
    assert API_KEY not in str(info.value)
    assert "base_url" in str(info.value)


# ---- every outcome, mocked ---------------------------------------------------------------------

OUTCOMES: dict[str, dict[str, Any]] = {
    "200": {"json": {"effects": []}},
    "204": {"status": 204},
    "400": {"status": 400, "json": {"message": "bad", "errors": [{"title": "t", "source": {}}]}},
    "401": {"status": 401, "json": {"message": "Unauthorized"}},
    "404": {"status": 404, "json": {"message": "not found"}},
    "409": {"status": 409, "json": {"message": "parallel request"}},
    "422": {"status": 422, "json": {"message": "unprocessable"}},
    "429": {"status": 429, "headers": {"Retry-After": "1"}},
    "500": {"status": 500, "json": {"message": "internal"}},
    "502-html": {"status": 502, "body": "<html>Bad Gateway</html>", "content_type": "text/html"},
    "malformed": {"body": "<html>", "content_type": "text/html"},
    "empty": {"body": b""},
    "array": {"json": [1, 2]},
    "refused": {"body": requests.exceptions.ConnectionError("[Errno 111] Connection refused")},
    "dropped": {"body": requests.exceptions.ConnectionError("Connection aborted.")},
    "read-timeout": {"body": requests.exceptions.ReadTimeout("Read timed out.")},
    "connect-timeout": {"body": requests.exceptions.ConnectTimeout("Connect timed out.")},
    # A gateway or the API echoing what it was sent; the client must scrub it.
    "echo-401-json": {"status": 401, "json": {"message": f"bad key ApiKey-v1 {API_KEY}"}},
    "echo-400-errors": {
        "status": 400,
        "json": {"message": "bad", "errors": [{"title": f"key {API_KEY}", "source": {}}]},
    },
    "echo-502-text": {
        "status": 502,
        "body": f"<pre>Authorization: ApiKey-v1 {API_KEY}</pre>",
        "content_type": "text/html",
    },
    "echo-late-in-long-text": {
        "status": 503,
        # The key straddles the 500-character cut of a non-JSON error body.
        "body": "x" * 492 + API_KEY + "y" * 100,
        "content_type": "text/plain",
    },
    "echo-transport": {"body": requests.exceptions.ConnectionError(f"proxy said {API_KEY}")},
}


@pytest.mark.parametrize("method", ["GET", "PUT"])
@pytest.mark.parametrize("outcome", list(OUTCOMES))
def test_key_never_in_errors_or_debug_logs(
    rsps: Any, caplog: pytest.LogCaptureFixture, method: str, outcome: str
) -> None:
    caplog.set_level(logging.DEBUG, logger="")
    client = IntegrationClient(BASE_URL, API_KEY)  # default retries: GETs retry, too
    for _ in range(1 + (client.get_retries if method == "GET" else 0)):
        rsps.add(method, ANY_URL, **OUTCOMES[outcome])
    rsps.assert_all_requests_are_fired = False
    try:
        if method == "GET":
            client.get_customer_session("sess-1")
        else:
            client.update_customer_session_v2("sess-1", {"customerSession": {}})
    except TalonOneError as exc:
        # requests' own exceptions never hold request headers; "echo-transport" fakes one that
        # does, and the client keeps it as __cause__ for debugging: only its own text is scrubbed.
        assert_no_key_in_exception(exc, chained=outcome != "echo-transport")
        assert "sk-SUPER" not in str(exc)  # not even the first half of the key
    assert_no_key_in_logs(caplog)
    assert "sk-SUPER" not in caplog.text
    assert_no_key_in_client(client)
    # The key was really sent (so the checks above looked at a real flow).
    assert rsps.calls[0].request.headers["Authorization"] == f"ApiKey-v1 {API_KEY}"


def test_failures_are_logged_with_the_operation(
    rsps: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="")
    rsps.add("PUT", ANY_URL, status=500, json={"message": "internal"})
    client = IntegrationClient(BASE_URL, API_KEY)
    with pytest.raises(TalonOneError):
        client.update_customer_session_v2("sess-1", {"customerSession": {}})
    messages = [r.getMessage() for r in caplog.records if r.name == "django_talonone.client"]
    assert any("UpdateCustomerSessionV2" in m and "500" in m for m in messages), messages


# ---- a real HTTP server, so that urllib3's own DEBUG lines are captured too --------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    release = threading.Event()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _answer(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        auth = self.headers.get("Authorization", "")
        kind = self.path.rstrip("/").rsplit("/", 1)[-1].split("?")[0]
        if kind == "ok":
            self._answer(200, b'{"effects": []}')
        elif kind == "echo-json":
            self._answer(401, json.dumps({"message": f"rejected {auth}"}).encode())
        elif kind == "echo-html":
            self._answer(502, f"<html>{auth}</html>".encode(), "text/html")
        elif kind == "slow":
            self.release.wait(5)
            self._answer(200, b"{}")
        else:
            self._answer(404, b'{"message": "no such test path"}')

    do_GET = do_PUT = do_POST = do_DELETE = _handle


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        _Handler.release.set()
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def real_client(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], IntegrationClient]:
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    made: list[IntegrationClient] = []

    def make(base_url: str) -> IntegrationClient:
        made.append(IntegrationClient(base_url, API_KEY, timeout=(2, 0.3), get_retries=0))
        return made[-1]

    yield make  # type: ignore[misc]
    for c in made:
        c.close()


@pytest.mark.parametrize("kind", ["ok", "echo-json", "echo-html", "slow"])
def test_real_http_flow_keeps_the_key_out_of_logs_and_errors(
    server: str, real_client: Any, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    caplog.set_level(logging.DEBUG, logger="")
    client = real_client(server)
    try:
        client.update_customer_session_v2(kind, {"customerSession": {"state": "open"}})
    except TalonOneError as exc:
        assert kind != "ok"
        assert_no_key_in_exception(exc)
        if kind == "slow":
            assert exc.outcome_unknown is True  # read timeout on a PUT
    assert any(r.name.startswith("urllib3") for r in caplog.records)
    assert_no_key_in_logs(caplog)


def test_real_connection_refused(real_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = real_client(f"http://127.0.0.1:{port}")
    with pytest.raises(TalonOneError) as info:
        client.update_customer_session_v2("s", {"customerSession": {}})
    exc = info.value
    assert type(exc).__name__ == "ConnectionError"
    assert exc.outcome_unknown is False  # nothing was sent: safe to send again
    assert exc.retryable is True
    assert_no_key_in_exception(exc)
    assert_no_key_in_logs(caplog)
