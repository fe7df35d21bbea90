"""Shared helpers of the push-pipeline unit tests: a tiny Talon.One on `responses`, settings.

``FakeTalon`` keeps just enough state (each session's state and cart) to answer like Talon.One,
logs every request, and fails on demand: ``talon.fail("update", 503, ReadTimeout())``.
Import the fixtures into a test module with ``from tests.pipeline_fakes import *``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import requests
import responses

from django_talonone import outbox, signals
from django_talonone.models import Push

__all__ = ["APPLY_THEN_TIMEOUT", "FakeTalon", "Request", "make_order", "pipeline", "talon"]

BASE_URL = "http://127.0.0.1:9"
API_KEY = "tests-api-key"
_lock = threading.RLock()
#: A failure spec: Talon.One applies the request, then the answer never arrives.
APPLY_THEN_TIMEOUT = "apply-then-timeout"

ROUTES = [
    ("update", "PUT", r"/v2/customer_sessions/(?P<id>[^/]+)$"),
    ("get", "GET", r"/v2/customer_sessions/(?P<id>[^/]+)$"),
    ("return", "POST", r"/v2/customer_sessions/(?P<id>[^/]+)/returns$"),
    ("reopen", "PUT", r"/v2/customer_sessions/(?P<id>[^/]+)/reopen$"),
    ("profile", "PUT", r"/v2/customer_profiles/(?P<id>[^/]+)$"),
    ("delete", "DELETE", r"/v1/customer_data/(?P<id>[^/]+)$"),
    ("event", "POST", r"/v2/events$"),
    ("balances", "GET", r"/v1/loyalty_programs/(?P<program>\d+)/profile/(?P<id>[^/]+)/balances$"),
]


@dataclass
class Request:
    route: str
    method: str
    path: str
    ident: str
    body: Any
    query: dict[str, list[str]]
    headers: dict[str, str]


@dataclass
class FakeTalon:
    """Answers the Integration API calls the outbox makes, like Talon.One would."""

    rsps: responses.RequestsMock
    requests: list[Request] = field(default_factory=list)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))
    #: Entities (sessions, profiles) being answered right now, and any request that arrived
    #: for one of them meanwhile: Talon.One would have answered it 409.
    in_progress: set[str] = field(default_factory=set)
    parallel: list[str] = field(default_factory=list)
    #: The most requests (of any entities) that were being answered at once.
    max_in_flight: int = 0
    _in_flight: int = 0
    #: Seconds each answer takes (widens the window in which a parallel request would show).
    latency: float = 0.0

    def __post_init__(self) -> None:
        for route, method, pattern in ROUTES:
            self.rsps.add_callback(
                method,
                re.compile(re.escape(BASE_URL) + pattern.replace("$", r"(\?.*)?$")),
                callback=self._answer(route, pattern),
                content_type="application/json",
            )

    # --- the test's controls --------------------------------------------------------------

    def fail(self, route: str, *specs: Any) -> None:
        """Make the next requests on ``route`` fail: a status, (status, headers, body), an
        exception, or APPLY_THEN_TIMEOUT."""
        self.failures[route].extend(specs)

    def sent(self, route: str | None = None) -> list[Request]:
        return [r for r in self.requests if route is None or r.route == route]

    # --- answering --------------------------------------------------------------------------

    def _answer(self, route: str, pattern: str) -> Any:
        def callback(request: requests.PreparedRequest) -> Any:
            parts = urlsplit(request.url)
            match = re.search(pattern, parts.path)
            assert match, request.url
            ident = unquote(match.group("id")) if "id" in match.groupdict() else ""
            body = json.loads(request.body) if request.body else None
            entry = Request(
                route,
                request.method,
                parts.path,
                ident,
                body,
                parse_qs(parts.query),
                dict(request.headers),
            )
            entity = ident or (body or {}).get("profileId", "")
            with _lock:
                self.requests.append(entry)
                if entity in self.in_progress:
                    self.parallel.append(entity)
                self.in_progress.add(entity)
                self._in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self._in_flight)
            try:
                if self.latency:
                    time.sleep(self.latency)
                return self._reply(route, entry)
            finally:
                with _lock:
                    self.in_progress.discard(entity)
                    self._in_flight -= 1

        return callback

    def _reply(self, route: str, entry: Request) -> Any:
        with _lock:
            if self.failures[route]:
                spec = self.failures[route].pop(0)
            else:
                status, payload = getattr(self, "_" + route)(entry)
                return status, {}, "" if payload is None else json.dumps(payload)
            if spec == APPLY_THEN_TIMEOUT:
                getattr(self, "_" + route)(entry)
                return requests.exceptions.ReadTimeout("read timed out")
        if isinstance(spec, BaseException):
            return spec
        status, headers, err = (spec, {}, None) if isinstance(spec, int) else spec
        if isinstance(err, str):
            return status, headers, err  # sent as it is, e.g. a proxy's HTML page
        return status, headers, json.dumps(err or {"message": f"fake {status}"})

    def _session(self, ident: str) -> dict[str, Any]:
        if ident not in self.sessions:
            self.sessions[ident] = self._blank(ident)
        return self.sessions[ident]

    def _blank(self, ident: str) -> dict[str, Any]:
        return {
            "integrationId": ident,
            "id": len(self.sessions) + 1,
            "applicationId": 1,
            "state": "open",
            "cartItems": [],
            "couponCodes": [],
            "updateCount": 0,
            "profileId": "",
        }

    def _state(self, session: dict[str, Any]) -> dict[str, Any]:
        total = sum(Decimal(str(i.get("price", 0))) * i["quantity"] for i in session["cartItems"])
        effects = []
        if total and session["state"] in ("open", "closed"):
            effects.append(
                {
                    "campaignId": 1,
                    "rulesetId": 2,
                    "ruleIndex": 0,
                    "ruleName": "10% off",
                    "effectType": "setDiscount",
                    "props": {"name": "10% off", "value": float(round(total / 10, 2))},
                }
            )
        view = {
            **session,
            "total": float(total),
            "cartItemTotal": float(total),
            "additionalCostTotal": 0,
            "firstSession": session["updateCount"] == 1,
            "created": "2026-01-01T00:00:00Z",
            "updated": "2026-01-01T00:00:00Z",
        }
        return {"customerSession": view, "effects": effects}

    def _update(self, req: Request) -> tuple[int, Any]:
        if req.query.get("dry") == ["true"]:
            # Only the payload counts and nothing is stored.
            preview = {**self._blank(req.ident), **req.body["customerSession"]}
            return 200, {**self._state(preview), "createdCoupons": [], "createdReferrals": []}
        session = self._session(req.ident)
        new = req.body["customerSession"]
        target = new.get("state")
        if target and target != session["state"]:
            allowed = {("open", "closed"), ("open", "cancelled"), ("closed", "cancelled")}
            if (session["state"], target) not in allowed:
                return 400, {"message": f"cannot go from {session['state']} to {target}"}
        session.update({k: v for k, v in new.items() if k != "state"})
        if target:
            session["state"] = target
        session["updateCount"] += 1
        return 200, {**self._state(session), "createdCoupons": [], "createdReferrals": []}

    def _get(self, req: Request) -> tuple[int, Any]:
        if req.ident not in self.sessions:
            return 404, {"message": "not found"}
        session = self.sessions[req.ident]
        if session["state"] == "partially_returned":
            # The effects netted of what the return rolled back: here, half the discount.
            answer = self._state({**session, "state": "closed"})
            for effect in answer["effects"]:
                effect["props"]["value"] = round(effect["props"]["value"] / 2, 2)
            return 200, {**answer, "customerSession": {**answer["customerSession"], **session}}
        return 200, self._state(session)

    def _return(self, req: Request) -> tuple[int, Any]:
        session = self._session(req.ident)
        if session["state"] != "closed":
            return 400, {"message": "session is not closed"}
        kept = self._state(session)["effects"]
        session["state"] = "partially_returned"
        # A return answers its rollback effects only: half the discount goes back.
        rollbacks = [
            {
                **effect,
                "effectType": "rollbackDiscount",
                "props": {"name": effect["props"]["name"], "value": effect["props"]["value"] / 2},
            }
            for effect in kept
        ]
        state = self._state(session)
        return 200, {**state, "effects": rollbacks, "createdCoupons": [], "createdReferrals": []}

    def _reopen(self, req: Request) -> tuple[int, Any]:
        session = self._session(req.ident)
        if session["state"] != "closed":
            return 400, {"message": "only a closed session can be reopened"}
        session["state"] = "open"
        return 200, {"effects": self._state(session)["effects"]}

    def _profile(self, req: Request) -> tuple[int, Any]:
        profile = {
            "integrationId": req.ident,
            "id": 7,
            "accountId": 1,
            "closedSessions": 0,
            "totalSales": 0,
            "attributes": (req.body or {}).get("attributes", {}),
        }
        return 200, {
            "customerProfile": profile,
            "effects": [],
            "createdCoupons": [],
            "createdReferrals": [],
        }

    def _delete(self, req: Request) -> tuple[int, Any]:
        return 204, None

    def _event(self, req: Request) -> tuple[int, Any]:
        profile = {"integrationId": req.body["profileId"], "id": 7, "attributes": {}}
        return 201, {
            "customerProfile": profile,
            "effects": [],
            "createdCoupons": [],
            "createdReferrals": [],
        }

    def _balances(self, req: Request) -> tuple[int, Any]:
        return 200, {
            "balance": {
                "activePoints": 10,
                "pendingPoints": 0,
                "spentPoints": 0,
                "expiredPoints": 0,
                "negativePoints": 0,
            },
            "subledgerBalances": {},
        }


@pytest.fixture
def pipeline(settings: Any) -> dict[str, Any]:
    """TALONONE for the pipeline tests: inline dispatch, fast retries, no rate limit."""
    settings.TALONONE = {
        "BASE_URL": BASE_URL,
        "API_KEY": API_KEY,
        "DISPATCH": "inline",
        "MAX_ATTEMPTS": 3,
        "RETRY_BASE_DELAY": 1.0,
        "RETRY_MAX_DELAY": 60.0,
        # One read timeout, short, so that a test of the timeout path stays fast.
        "TIMEOUT": (1.0, 1.0),
    }
    return settings.TALONONE


@pytest.fixture
def talon(pipeline: Any) -> Iterator[FakeTalon]:
    """A fake Talon.One; any request to an unknown route fails the test."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield FakeTalon(rsps)
    outbox._reset_clients(setting="TALONONE")


@pytest.fixture
def failed_pushes() -> Iterator[list[Push]]:
    """The pushes push_failed was sent for."""
    seen: list[Push] = []

    def record(sender: Any, push: Push, **kwargs: Any) -> None:
        seen.append(push)

    signals.push_failed.connect(record, weak=False)
    yield seen
    signals.push_failed.disconnect(record)


def make_order(*, lines: int = 1, customer: Any = None, **fields: Any) -> Any:
    """A saved test-shop order with ``lines`` lines (SKU-1 ... at 10.00 each)."""
    from tests.shop.models import Order, OrderLine

    order = Order.objects.create(customer=customer, **fields)
    for n in range(1, lines + 1):
        OrderLine.objects.create(order=order, sku=f"SKU-{n}", quantity=1, price=Decimal("10.00"))
    return order
