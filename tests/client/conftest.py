"""Fixtures of the Integration API client tests: a client, a `responses` mock, a fake clock."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import responses

from django_talonone.client import IntegrationClient, core

#: Distinctive, so that a leak anywhere is found by a plain substring search.
API_KEY = "sk-SUPER-SECRET-1234"
BASE_URL = "https://acme.europe-west1.talon.one"
ANY_URL = re.compile(r".*")


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    """HTTP is mocked; every registered answer must be used."""
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


@pytest.fixture
def client() -> Iterator[IntegrationClient]:
    c = IntegrationClient(BASE_URL, API_KEY)
    yield c
    c.close()


class FakeClock:
    """Stands in for the ``time`` module inside the client: sleeps are recorded, not slept."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """No test of the client ever really sleeps (retries back off on the fake clock)."""
    fake = FakeClock()
    monkeypatch.setattr(core, "time", fake)
    return fake


def sent_json(call: Any) -> Any:
    """The JSON body of a recorded request (None when there was none)."""
    body = call.request.body
    if body is None:
        return None
    return json.loads(body.decode() if isinstance(body, bytes) else body)
