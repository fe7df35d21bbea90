"""Fixtures for the sandbox's HTTP-layer tests.

``sandbox`` is a real :class:`Sandbox` (the domain layer included); ``echo`` serves the same HTTP
layer in front of a recording handler, so routing, auth and validation are tested on their own.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from django_talonone.sandbox import Sandbox
from django_talonone.sandbox.app import SandboxApp
from django_talonone.sandbox.server import Server
from django_talonone.sandbox.wire import Call

API_KEY = "test-key-7f3a9"


class Http:
    """A tiny keep-alive client for transport-level checks (raw paths, raw bodies, any headers)."""

    def __init__(self, url: str, api_key: str | None = API_KEY) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=10)
        self.api_key = api_key

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
    ) -> tuple[int, dict[str, str], Any]:
        """Send one request; answer (status, lower-cased headers, decoded JSON or raw bytes)."""
        sent = dict(headers or {})
        if auth and self.api_key:
            sent.setdefault("Authorization", f"ApiKey-v1 {self.api_key}")
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        if data is not None:
            sent.setdefault("Content-Type", "application/json")
        self.conn.request(method, path, body=data, headers=sent)
        resp = self.conn.getresponse()
        content = resp.read()
        out_headers = {k.lower(): v for k, v in resp.getheaders()}
        try:
            decoded: Any = json.loads(content) if content else None
        except ValueError:
            decoded = content
        return resp.status, out_headers, decoded

    def close(self) -> None:
        self.conn.close()


class Recorder:
    """A handler that records each Call and answers the operation's first success status."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.fail_with: BaseException | None = None

    def __call__(self, state: Any, call: Call) -> tuple[int, Any]:
        self.calls.append(call)
        if self.fail_with is not None:
            raise self.fail_with
        status = call.operation["success"][0]
        if status == 204:
            return 204, None
        return status, {"operation": call.name, "path": call.path}


class TinyState:
    """Just what the HTTP layer touches on a state."""

    def __init__(self, campaigns: dict[str, Any] | None = None) -> None:
        self.lock = threading.RLock()
        self.campaigns = campaigns

    def reset(self) -> None:
        pass

    def load_campaigns(self, data: dict[str, Any]) -> None:
        self.campaigns = data

    def snapshot(self) -> dict[str, Any]:
        return {"campaigns": self.campaigns}


class Echo:
    """The HTTP layer served in front of a :class:`Recorder`."""

    def __init__(self) -> None:
        self.recorder = Recorder()
        self.app = SandboxApp(TinyState(), api_key=API_KEY, handler=self.recorder)
        self.server = Server(self.app)
        self.server.start()
        self.url = self.server.url

    @property
    def calls(self) -> list[Call]:
        return self.recorder.calls

    def stop(self) -> None:
        self.app.close()
        self.server.shutdown()


@pytest.fixture
def echo() -> Iterator[Echo]:
    server = Echo()
    yield server
    server.stop()


@pytest.fixture
def echo_http(echo: Echo) -> Iterator[Http]:
    conn = Http(echo.url)
    yield conn
    conn.close()


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(api_key=API_KEY) as running:
        yield running


@pytest.fixture
def sandbox_http(sandbox: Sandbox) -> Iterator[Http]:
    conn = Http(sandbox.url)
    yield conn
    conn.close()


def cart_body(lines: int = 5, profile: str = "p-1") -> dict[str, Any]:
    """An UpdateCustomerSessionV2 body with ``lines`` cart items."""
    return {
        "customerSession": {
            "profileId": profile,
            "state": "open",
            "cartItems": [
                {
                    "sku": f"SKU-{i}",
                    "name": f"Item {i}",
                    "quantity": 1 + i % 3,
                    "price": 10.5 + i,
                    "category": "shoes" if i % 2 else "socks",
                }
                for i in range(lines)
            ],
        },
        "responseContent": ["customerSession", "customerProfile"],
    }


@pytest.fixture
def cart() -> Any:
    return cart_body
