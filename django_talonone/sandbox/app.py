"""The sandbox's WSGI app: the Integration API's HTTP surface in front of the domain layer.

For an API request it routes to an operation of ``client.schema.OPERATIONS``, checks the API key,
the request rate, the parameters and the body's shape, refuses parallel requests on one customer
session or profile with a 409 as Talon.One does, applies any injected fault, and hands a
:class:`~django_talonone.sandbox.wire.Call` to ``handlers.handle`` under the state's lock.

Paths under ``/sandbox/`` are control endpoints for tests and the demo (no API key): reset, load
campaigns, read the request log and counters, inject faults, read the state. Talon.One has no
such endpoints; code that talks to the real API must never call them.
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import hmac
import http
import json
import logging
import math
import random
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote

from django_talonone.client.schema import MODELS, OPERATIONS

from .server import ABORT, HEADERS
from .wire import ApiError, Call

if TYPE_CHECKING:
    from .state import State

__all__ = ["CONFLICT_MESSAGES", "FAULT_KINDS", "LOG_LIMIT", "SandboxApp"]

logger = logging.getLogger("django_talonone.sandbox")

#: The kinds of fault ``add_fault`` accepts.
FAULT_KINDS = ("latency", "status", "rate_limit", "conflict", "reset", "timeout", "malformed")
#: Talon.One's 409 message, by the kind of entity that was busy.
CONFLICT_MESSAGES = {
    "session": "Too many requests are updating this session at the same time",
    "profile": "Too many requests are updating this customer profile at the same time",
}
#: The request log keeps this many most recent API requests.
LOG_LIMIT = 10_000

Handler = Callable[["State", Call], tuple[int, Any]]
Answer = tuple[int, list[tuple[str, str]], bytes]


class SandboxApp:
    """The WSGI app: Integration API routes plus ``/sandbox/`` control endpoints.

    ``handler`` defaults to ``handlers.handle``; ``rate_limit`` is requests per second across all
    API operations (None: unlimited); ``seed`` makes fault injection repeatable.
    """

    def __init__(
        self,
        state: State,
        *,
        api_key: str,
        handler: Handler | None = None,
        rate_limit: float | None = None,
        seed: int = 0,
        campaigns: dict[str, Any] | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("api_key must not be empty")
        if handler is None:
            from .handlers import handle as handler
        self.state = state
        self._handler = handler
        self._api_key = api_key.encode()
        self._initial_campaigns = campaigns
        self._initial_rate = rate_limit
        self._seed = seed
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._campaigns_replaced = False
        self._inflight: dict[str, int] = {}
        self._log: deque[_Entry] = deque(maxlen=LOG_LIMIT)
        self._log_seq = 0
        self._faults: list[_Fault] = []
        self._fault_seq = 0
        self._rng = random.Random(seed)
        self._bucket = _TokenBucket(rate_limit) if rate_limit else None
        self._counters = _new_counters()

    # -- WSGI ---------------------------------------------------------------------------------

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        """Answer one request; never raises."""
        try:
            method = environ["REQUEST_METHOD"]
            path = _raw_path(environ)
            if path == "/sandbox" or path.startswith("/sandbox/"):
                status, headers, payload = self._control(method, path, environ)
            else:
                status, headers, payload = self._api(method, path, environ)
        except Exception:  # a bug here must still give the client an answer
            logger.exception("sandbox: unexpected failure")
            status, headers, payload = _error(ApiError(500, "sandbox internal error"))
        start_response(_STATUS_LINES.get(status) or f"{status} Unknown", headers)
        return [payload]

    # -- control, in-process (Sandbox uses these; the /sandbox/ endpoints call them too) ------

    def close(self) -> None:
        """Wake requests sleeping in an injected latency or timeout so the server can stop."""
        self._stopping.set()

    def reset(self) -> None:
        """Forget all data, the request log, counters and faults; campaigns and the rate limit
        return to those the sandbox started with, and the fault RNG is re-seeded."""
        state = self.state
        with state.lock:
            if self._campaigns_replaced:
                self.state = type(state)(self._initial_campaigns)
                self._campaigns_replaced = False
            else:
                state.reset()
        with self._lock:
            self._log.clear()
            self._counters = _new_counters()
            self._faults.clear()
            self._rng = random.Random(self._seed)
            self._bucket = _TokenBucket(self._initial_rate) if self._initial_rate else None

    def load_campaigns(self, data: dict[str, Any]) -> None:
        """Replace the campaigns (raises ValueError, with the state's message, on a bad file)."""
        if not isinstance(data, dict):
            raise ValueError("a campaigns file must be a JSON object")
        state = self.state
        with state.lock:
            state.load_campaigns(data)
            self._campaigns_replaced = True

    def snapshot(self) -> dict[str, Any]:
        """The state as JSON-able data (what ``--state FILE`` saves)."""
        state = self.state
        with state.lock:
            return state.snapshot()

    def requests(self, operation: str | None = None) -> list[dict[str, Any]]:
        """The request log, oldest first, optionally for one operation (name or title)."""
        if operation is not None:
            operation = _operation_name(operation)
        with self._lock:
            entries = list(self._log)
        return [e.as_dict() for e in entries if operation is None or e.operation == operation]

    def clear_requests(self) -> None:
        """Empty the request log."""
        with self._lock:
            self._log.clear()

    def counters(self) -> dict[str, Any]:
        """Requests per operation and status, 409s, peak and current parallelism per key, 429s,
        injected faults and sandbox errors."""
        with self._lock:
            counters = json.loads(json.dumps(self._counters))
            counters["in_flight"] = dict(self._inflight)
        return counters

    def add_fault(
        self,
        operation: str,
        kind: str,
        rate: float = 1.0,
        count: int | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """Inject a fault into ``operation`` (a name, a title or ``"*"``); returns its description.

        ``rate`` is the chance (0..1) that a matching request gets it; ``count`` caps how many
        requests do. Raises ValueError on an unknown operation, kind or parameter.
        """
        fault = _Fault.build(operation, kind, rate, count, params)
        with self._lock:
            self._fault_seq += 1
            fault.id = self._fault_seq
            self._faults.append(fault)
            return fault.as_dict()

    def faults(self) -> list[dict[str, Any]]:
        """The faults in force, in the order they are tried."""
        with self._lock:
            return [f.as_dict() for f in self._faults]

    def remove_fault(self, fault_id: int) -> bool:
        """Remove one fault; False when there is none with that id."""
        with self._lock:
            before = len(self._faults)
            self._faults = [f for f in self._faults if f.id != fault_id]
            return len(self._faults) != before

    def clear_faults(self) -> None:
        """Remove every fault."""
        with self._lock:
            self._faults.clear()

    def set_rate_limit(self, rate: float | None) -> None:
        """Limit API requests to ``rate`` per second (None or 0: unlimited) until the next reset."""
        if rate is not None and (not isinstance(rate, (int, float)) or rate < 0):
            raise ValueError("rate must be a non-negative number of requests per second")
        with self._lock:
            self._bucket = _TokenBucket(float(rate)) if rate else None

    # -- the Integration API ------------------------------------------------------------------

    def _api(self, method: str, path: str, environ: dict[str, Any]) -> Answer:
        entry = _Entry(time.time(), method, path, environ)
        try:
            answer = self._serve(entry, environ)
        except ApiError as err:
            answer = _error(err, err.headers if isinstance(err, _Refusal) else None)
        except Exception:
            # A bug in the sandbox or a handler: answer the API's envelope, log it, count it.
            logger.exception("sandbox: %s %s raised", method, path)
            with self._lock:
                self._counters["errors"] += 1
            answer = _error(ApiError(500, f"sandbox internal error in {entry.operation or path}"))
        entry.status = answer[0]
        with self._lock:
            self._log_seq += 1
            entry.seq = self._log_seq
            self._log.append(entry)
            statuses = self._counters["statuses"]
            key = str(entry.status) if entry.status else "aborted"
            statuses[key] = statuses.get(key, 0) + 1
        return answer

    def _serve(self, entry: _Entry, environ: dict[str, Any]) -> Answer:
        op, raw_params = _route(entry.method, entry.path)
        name = op["name"]
        entry.operation = name
        with self._lock:
            requests = self._counters["requests"]
            requests[name] = requests.get(name, 0) + 1

        if not self._authorised(environ.get("HTTP_AUTHORIZATION", "")):
            raise ApiError(
                401,
                "Unauthorized: send a valid API key as 'Authorization: ApiKey-v1 <key>'",
                [{"title": "invalid or missing API key", "source": {"parameter": "Authorization"}}],
            )
        if self._bucket is not None:
            self._check_rate()

        path_params = _path_params(op, raw_params)
        query = _query(op, environ.get("QUERY_STRING", ""))
        raw_body = environ["wsgi.input"].read() if op["body"] else b""
        entry.raw_body = raw_body
        body = _body(op, raw_body)
        headers = environ.get(HEADERS)
        if headers is None:
            headers = _headers_from_environ(environ)
        call_headers = {k: v for k, v in headers.items() if k not in _SECRET_HEADERS}
        entry.headers = call_headers
        call = Call(op, path_params, query, body, call_headers)

        key = _concurrency_key(name, path_params, body)
        entry.key = key
        if key is None:
            return self._with_faults(call, environ, entry)
        self._enter(key)
        try:
            return self._with_faults(call, environ, entry)
        finally:
            with self._lock:
                left = self._inflight[key] - 1
                if left:
                    self._inflight[key] = left
                else:
                    del self._inflight[key]

    def _authorised(self, header: str) -> bool:
        scheme, _, key = header.strip().partition(" ")
        if scheme.lower() != "apikey-v1":
            return False
        return hmac.compare_digest(key.strip().encode(), self._api_key)

    def _check_rate(self) -> None:
        with self._lock:
            bucket = self._bucket
            wait = bucket.take() if bucket is not None else 0.0
            if wait:
                self._counters["rate_limited"] += 1
        if wait and bucket is not None:
            retry = max(1, math.ceil(wait))
            raise _Refusal(
                429,
                f"Too many requests: the limit is {bucket.rate:g} requests per second",
                [("Retry-After", str(retry))],
            )

    def _enter(self, key: str) -> None:
        """Mark ``key`` in flight, or refuse with Talon.One's 409 when it already is."""
        with self._lock:
            parallel = self._inflight.get(key, 0) + 1
            peaks = self._counters["max_parallel"]
            if parallel > peaks.get(key, 0):
                peaks[key] = parallel
            if parallel > 1:
                conflicts = self._counters["conflicts"]
                conflicts[key] = conflicts.get(key, 0) + 1
            else:
                self._inflight[key] = 1
                return
        raise ApiError(409, CONFLICT_MESSAGES[key.partition(":")[0]])

    def _with_faults(self, call: Call, environ: dict[str, Any], entry: _Entry) -> Answer:
        delay, fault = self._draw_faults(call.name)
        if delay:
            entry.faults.append("latency")
            self._stopping.wait(delay)
        if fault is None:
            return self._handle(call)
        kind, params = fault.kind, fault.params
        entry.faults.append(kind)
        if kind == "status":
            if params["apply"]:
                self._handle_quietly(call)
            status = params["status"]
            return _error(ApiError(status, f"{http.HTTPStatus(status).phrase} (injected fault)"))
        if kind == "rate_limit":
            err = ApiError(429, "Too many requests (injected fault)")
            return _error(err, [("Retry-After", _seconds_header(params["retry_after"]))])
        if kind == "conflict":
            entity = entry.key.partition(":")[0] if entry.key else "session"
            return _error(ApiError(409, CONFLICT_MESSAGES[entity]))
        if kind == "malformed":
            status, headers, payload = self._handle(call)
            if status >= 300:
                return status, headers, payload
            if status == 204:
                status = 200
            # Cut the answer short: what a proxy that dropped the end of the body would deliver.
            cut = payload[: len(payload) // 2] if len(payload) > 2 else b'{"effects": ['
            return status, [("Content-Type", "application/json")], cut
        # reset / timeout: the transport drops the connection, with or without applying first.
        if params["apply"]:
            self._handle_quietly(call)
        if kind == "timeout":
            self._stopping.wait(params["seconds"])
            environ[ABORT] = "close"
        else:
            environ[ABORT] = "reset"
        return 0, [], b""

    def _draw_faults(self, name: str) -> tuple[float, _Fault | None]:
        """Total injected latency and the one terminal fault (if any) for this request."""
        if not self._faults:
            return 0.0, None
        delay = 0.0
        chosen: _Fault | None = None
        with self._lock:
            for fault in self._faults:
                if fault.operation not in ("*", name) or fault.count == 0:
                    continue
                if fault.kind != "latency" and chosen is not None:
                    continue
                if fault.rate < 1.0 and not self._rng.random() < fault.rate:
                    continue
                fault.fired += 1
                if fault.count is not None:
                    fault.count -= 1
                faults = self._counters["faults"]
                faults[fault.kind] = faults.get(fault.kind, 0) + 1
                if fault.kind == "latency":
                    delay += fault.params["seconds"]
                else:
                    chosen = fault
        return delay, chosen

    def _handle(self, call: Call) -> Answer:
        state = self.state
        with state.lock:
            status, body = self._handler(state, call)
            # Encode under the lock: the body may share dicts with the state.
            payload = b"" if body is None else _dumps(body)
        if body is None:
            return status, [], payload
        return status, [("Content-Type", "application/json")], payload

    def _handle_quietly(self, call: Call) -> None:
        """Apply a request whose answer a fault will replace; its own errors do not matter."""
        with contextlib.suppress(ApiError):
            self._handle(call)

    # -- /sandbox/ control endpoints ----------------------------------------------------------

    def _control(self, method: str, path: str, environ: dict[str, Any]) -> Answer:
        routes: dict[str, dict[str, Callable[[dict[str, Any]], tuple[int, Any]]]] = {
            "/sandbox/health": {"GET": lambda env: (200, {"status": "ok"})},
            "/sandbox/reset": {"POST": self._ctl_reset},
            "/sandbox/campaigns": {"PUT": self._ctl_campaigns},
            "/sandbox/requests": {"GET": self._ctl_requests, "DELETE": self._ctl_clear_requests},
            "/sandbox/counters": {"GET": lambda env: (200, self.counters())},
            "/sandbox/faults": {
                "GET": lambda env: (200, self.faults()),
                "POST": self._ctl_add_fault,
                "DELETE": self._ctl_clear_faults,
            },
            "/sandbox/rate_limit": {"PUT": self._ctl_rate_limit},
            "/sandbox/state": {"GET": lambda env: (200, self.snapshot())},
        }
        try:
            methods = routes.get(path.rstrip("/"))
            if methods is None and path.startswith("/sandbox/faults/"):
                methods = {"DELETE": lambda env: self._ctl_remove_fault(path)}
            if methods is None:
                raise ApiError(404, f"no sandbox control endpoint at {path}")
            action = methods.get(method)
            if action is None:
                allowed = ", ".join(sorted(methods))
                err = ApiError(405, f"{method} is not allowed on {path}; use {allowed}")
                return _error(err, [("Allow", allowed)])
            status, body = action(environ)
        except ApiError as err:
            return _error(err)
        except ValueError as exc:
            return _error(ApiError(400, str(exc), [{"title": str(exc), "source": {}}]))
        except Exception:
            logger.exception("sandbox: control endpoint %s %s raised", method, path)
            return _error(ApiError(500, f"sandbox internal error in {method} {path}"))
        if body is None:
            return status, [], b""
        return status, [("Content-Type", "application/json")], _dumps(body)

    def _ctl_reset(self, environ: dict[str, Any]) -> tuple[int, Any]:
        self.reset()
        return 204, None

    def _ctl_campaigns(self, environ: dict[str, Any]) -> tuple[int, Any]:
        self.load_campaigns(_control_body(environ))
        return 204, None

    def _ctl_requests(self, environ: dict[str, Any]) -> tuple[int, Any]:
        query = parse_qs(environ.get("QUERY_STRING", ""))
        operation = (query.get("operation") or [None])[-1]
        return 200, self.requests(operation)

    def _ctl_clear_requests(self, environ: dict[str, Any]) -> tuple[int, Any]:
        self.clear_requests()
        return 204, None

    def _ctl_add_fault(self, environ: dict[str, Any]) -> tuple[int, Any]:
        spec = _control_body(environ)
        if not isinstance(spec, dict):
            raise ValueError("a fault must be a JSON object: {operation, kind, rate, count, ...}")
        spec = dict(spec)
        params = spec.pop("params", None) or {}
        if not isinstance(params, dict):
            raise ValueError("params must be a JSON object")
        try:
            operation = spec.pop("operation")
            kind = spec.pop("kind")
        except KeyError as exc:
            raise ValueError(f"a fault needs {exc.args[0]!r}") from None
        rate = spec.pop("rate", 1.0)
        count = spec.pop("count", None)
        return 201, self.add_fault(operation, kind, rate, count, **{**spec, **params})

    def _ctl_clear_faults(self, environ: dict[str, Any]) -> tuple[int, Any]:
        self.clear_faults()
        return 204, None

    def _ctl_remove_fault(self, path: str) -> tuple[int, Any]:
        text = path.rstrip("/").rsplit("/", 1)[-1]
        if not text.isdigit() or not self.remove_fault(int(text)):
            raise ApiError(404, f"no fault with id {text}")
        return 204, None

    def _ctl_rate_limit(self, environ: dict[str, Any]) -> tuple[int, Any]:
        spec = _control_body(environ)
        if not isinstance(spec, dict) or "rate" not in spec:
            raise ValueError('send {"rate": <requests per second, or null for no limit>}')
        self.set_rate_limit(spec["rate"])
        return 200, {"rate": spec["rate"]}


# -- routing ----------------------------------------------------------------------------------


def _build_routes() -> dict[int, list[tuple[tuple[str | None, ...], dict[str, Any]]]]:
    """Templates by segment count; literal segments as text, parameters as None."""
    table: dict[int, list[tuple[tuple[str | None, ...], dict[str, Any]]]] = {}
    for op in OPERATIONS:
        segments = tuple(None if s.startswith("{") else s for s in op["path"].strip("/").split("/"))
        table.setdefault(len(segments), []).append((segments, op))
    for candidates in table.values():
        # Most literal segments first, so ".../customerprofiles/{x}" beats ".../{x}/{y}".
        candidates.sort(key=lambda c: -sum(s is not None for s in c[0]))
    return table


_ROUTES = _build_routes()
_OPS_BY_TITLE = {op["title"]: op["name"] for op in OPERATIONS}
_OP_NAMES = {op["name"] for op in OPERATIONS}


def _route(method: str, path: str) -> tuple[dict[str, Any], list[str]]:
    """The operation for ``method path`` and its raw (still encoded) parameter segments."""
    parts = path.strip("/").split("/")
    allowed: list[str] = []
    for segments, op in _ROUTES.get(len(parts), ()):
        values: list[str] = []
        for want, got in zip(segments, parts, strict=True):
            if want is None:
                if not got:
                    break
                values.append(got)
            elif want != got:
                break
        else:
            if op["method"] == method:
                return op, values
            allowed.append(op["method"])
    if allowed:
        allow = ", ".join(sorted(set(allowed)))
        raise _Refusal(405, f"{method} is not allowed on {path}; use {allow}", [("Allow", allow)])
    raise ApiError(404, f"no Integration API operation at {method} {path}")


def _path_params(op: dict[str, Any], raw: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for (wire, _py, typ), value in zip(op["path_params"], raw, strict=True):
        try:
            text = unquote(value, errors="strict")
        except UnicodeDecodeError:
            raise ApiError.bad_parameter(wire, f"{wire} is not valid UTF-8") from None
        if typ == "int":
            if not (text.isascii() and text.isdigit()) or len(text) > 18:
                raise ApiError.bad_parameter(wire, f"{wire} must be an integer, got {text!r}")
            params[wire] = int(text)
        else:
            params[wire] = text
    return params


def _query(op: dict[str, Any], query_string: str) -> dict[str, list[str]]:
    if not query_string:
        return {}
    try:
        query = parse_qs(query_string, keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "the query string is not valid UTF-8") from None
    for _py, wire, typ, _explode in op["query"]:
        for value in query.get(wire, ()):
            if typ == "bool" and value.lower() not in ("true", "false"):
                raise ApiError.bad_parameter(wire, f"{wire} must be true or false, got {value!r}")
            if typ == "int" and not _is_int_text(value):
                raise ApiError.bad_parameter(wire, f"{wire} must be an integer, got {value!r}")
            if typ == "datetime" and not _is_datetime(value):
                raise ApiError.bad_parameter(
                    wire, f"{wire} must be an RFC 3339 date-time, got {value!r}"
                )
    return query


def _concurrency_key(name: str, path: dict[str, Any], body: Any) -> str | None:
    """The session or profile a request updates; Talon.One allows one such request at a time."""
    if name in _SESSION_OPS:
        return "session:" + path["customerSessionId"]
    if name == "update_customer_profile_v2":
        return "profile:" + path["integrationId"]
    if name in ("track_event_v2", "track_event") and isinstance(body, dict):
        profile = body.get("profileId")
        if isinstance(profile, str) and profile:
            return "profile:" + profile
    return None


_SESSION_OPS = frozenset(
    {"update_customer_session_v2", "reopen_customer_session", "return_cart_items"}
)
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


# -- request bodies ---------------------------------------------------------------------------


def _body(op: dict[str, Any], raw: bytes) -> Any:
    """Decode the body and check it against the operation's body model."""
    model = op["body"]
    if not model:
        return None
    if not raw.strip():
        raise ApiError.bad_field("", "Missing request body", f"{op['title']} needs a JSON body")
    try:
        body = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise ApiError.bad_field("", "Invalid JSON", "the body is nested too deeply") from None
    except UnicodeDecodeError:
        raise ApiError.bad_field("", "Invalid JSON", "the body is not UTF-8") from None
    except ValueError as exc:
        raise ApiError.bad_field("", "Invalid JSON", str(exc)) from None
    if _fits(model)(body):
        return body
    # Only a body that does not fit pays for the walk that names every offending field.
    errors: list[dict[str, Any]] = []
    _check(body, model, "", errors)
    if errors:
        first = errors[0]
        where = first["source"]["pointer"] or "the body"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ApiError(400, f"{first['title']} at {where}: {first['details']}{more}", errors)
    return body


def _fits(typ: str) -> Callable[[Any], bool]:
    """A fast yes/no check that a decoded JSON value fits the reference type ``typ``."""
    check = _FITS.get(typ)
    if check is not None:
        return check
    if typ.startswith("list["):
        inner = _fits(typ[5:-1])

        def check(v: Any) -> bool:
            return type(v) is list and all(map(inner, v))

    elif typ.startswith("dict[str, "):
        inner = _fits(typ[10:-1])

        def check(v: Any) -> bool:
            return type(v) is dict and all(map(inner, v.values()))

    elif typ in _SHAPES:
        types, required = _SHAPES[typ]
        fields: dict[str, Callable[[Any], bool]] = {}

        def check(v: Any) -> bool:
            if type(v) is not dict:
                return False
            for key, item in v.items():
                fits = fields.get(key)
                if fits is not None and item is not None and not fits(item):
                    return False
            return all(v.get(key) is not None for key in required)

        _FITS[typ] = check  # registered before its fields, so recursive models terminate
        fields.update((key, _fits(ftype)) for key, ftype in types.items())
    else:
        return _FITS["Any"]
    _FITS[typ] = check
    return check


def _check(value: Any, typ: str, pointer: str, errors: list[dict[str, Any]]) -> None:
    """Append an error per place where ``value`` does not fit the reference type ``typ``."""
    if len(errors) >= _MAX_ERRORS:
        return
    simple = _SCALARS.get(typ)
    if simple is not None:
        if not simple(value):
            errors.append(_type_error(pointer, typ, value))
        return
    if typ.startswith("list["):
        if not isinstance(value, list):
            errors.append(_type_error(pointer, typ, value))
            return
        inner = typ[5:-1]
        if inner != "Any":
            for i, item in enumerate(value):
                _check(item, inner, f"{pointer}/{i}", errors)
        return
    if typ.startswith("dict[str, "):
        if not isinstance(value, dict):
            errors.append(_type_error(pointer, typ, value))
            return
        inner = typ[10:-1]
        if inner != "Any":
            for key, item in value.items():
                _check(item, inner, f"{pointer}/{_escape(key)}", errors)
        return
    shape = _SHAPES.get(typ)
    if shape is None:
        return  # a type the reference leaves open
    if not isinstance(value, dict):
        errors.append(_type_error(pointer, typ, value))
        return
    fields, required = shape
    for key, item in value.items():
        ftype = fields.get(key)
        if ftype is not None and item is not None:
            _check(item, ftype, f"{pointer}/{_escape(key)}", errors)
    for key in required:
        if value.get(key) is None:
            errors.append(
                {
                    "title": "Missing required field",
                    "details": f"{key!r} is required",
                    "source": {"pointer": f"{pointer}/{_escape(key)}"},
                }
            )


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_datetime(v: Any) -> bool:
    """An RFC 3339 date-time (any fraction digits, ``Z`` or an offset) naming a real instant."""
    if not isinstance(v, str):
        return False
    match = _RFC3339.fullmatch(v)
    if match is None:
        return False
    date_time, fraction, offset = match.groups()
    fraction = (fraction or ".0")[1:7].ljust(6, "0")
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        datetime.datetime.fromisoformat(f"{date_time[:10]}T{date_time[11:]}.{fraction}{offset}")
    except ValueError:
        return False
    return True


_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


def _is_uuid(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    try:
        uuid.UUID(v)
    except ValueError:
        return False
    return True


def _is_int_text(text: str) -> bool:
    digits = text[1:] if text[:1] == "-" else text
    return digits.isascii() and digits.isdigit() and len(digits) <= 18


_SCALARS: dict[str, Callable[[Any], bool]] = {
    "Any": lambda v: True,
    "str": lambda v: isinstance(v, str),
    "int": _is_int,
    "number": _is_number,
    "bool": lambda v: isinstance(v, bool),
    "datetime": _is_datetime,
    "UUID": _is_uuid,
}
_FITS: dict[str, Callable[[Any], bool]] = {
    # json.loads gives exactly these types, so `type(v) is` is both exact and fast.
    "Any": lambda v: True,
    "str": lambda v: type(v) is str,
    "int": lambda v: type(v) is int,
    "number": lambda v: type(v) is float or type(v) is int,
    "bool": lambda v: type(v) is bool,
    "datetime": _is_datetime,
    "UUID": _is_uuid,
}
_SHAPES: dict[str, tuple[dict[str, str], tuple[str, ...]]] = {
    name: (
        {key: typ for key, (typ, _req) in fields.items()},
        tuple(key for key, (_typ, req) in fields.items() if req),
    )
    for name, fields in MODELS.items()
}
_MAX_ERRORS = 20
_JSON_TYPES = {
    "str": "a string",
    "int": "an integer",
    "number": "a number",
    "bool": "a boolean",
    "datetime": "an RFC 3339 date-time string",
    "UUID": "a UUID string",
}


def _type_error(pointer: str, typ: str, value: Any) -> dict[str, Any]:
    if typ.startswith("list["):
        want = "an array"
    elif typ.startswith("dict[") or typ in MODELS:
        want = "an object" if typ.startswith("dict[") else f"an object ({typ})"
    else:
        want = _JSON_TYPES.get(typ, typ)
    return {
        "title": "Invalid type",
        "details": f"must be {want}, got {_json_type(value)}",
        "source": {"pointer": pointer},
    }


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string" if len(value) < 10 else "a string that does not fit"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _escape(key: str) -> str:
    """A key as a JSON pointer reference token (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1") if ("~" in key or "/" in key) else key


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


# -- faults -----------------------------------------------------------------------------------


@dataclass
class _Fault:
    operation: str
    kind: str
    rate: float
    count: int | None
    params: dict[str, Any]
    id: int = 0
    fired: int = 0

    @classmethod
    def build(
        cls, operation: str, kind: str, rate: Any, count: Any, params: dict[str, Any]
    ) -> _Fault:
        """Check a fault's description and fill in each kind's defaults."""
        name = operation if operation == "*" else _operation_name(operation)
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; use one of {', '.join(FAULT_KINDS)}")
        if not _is_number(rate) or not 0 <= rate <= 1:
            raise ValueError(f"rate must be a number from 0 to 1, got {rate!r}")
        if count is not None and (not _is_int(count) or count < 1):
            raise ValueError(f"count must be a positive integer or null, got {count!r}")
        allowed = _FAULT_PARAMS[kind]
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            names = ", ".join(allowed) or "none"
            raise ValueError(f"unknown parameter(s) {unknown} for a {kind} fault; it takes {names}")
        filled = {**allowed, **params}
        for key in ("seconds", "retry_after"):
            if key in filled:
                value = filled[key]
                if not _is_number(value) or not 0 <= value <= _MAX_FAULT_SECONDS:
                    raise ValueError(f"{key} must be 0..{_MAX_FAULT_SECONDS:g} seconds")
        if "status" in filled and filled["status"] not in (500, 502, 503):
            raise ValueError("status must be 500, 502 or 503")
        if "apply" in filled and not isinstance(filled["apply"], bool):
            raise ValueError("apply must be true or false")
        return cls(name, kind, float(rate), count, filled)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "operation": self.operation,
            "kind": self.kind,
            "rate": self.rate,
            "count": self.count,
            "fired": self.fired,
            "params": dict(self.params),
        }


_MAX_FAULT_SECONDS = 60.0
# Each kind's parameters and their defaults.
_FAULT_PARAMS: dict[str, dict[str, Any]] = {
    "latency": {"seconds": 0.2},
    "status": {"status": 500, "apply": False},
    "rate_limit": {"retry_after": 1},
    "conflict": {},
    "reset": {"apply": False},
    "timeout": {"seconds": 5.0, "apply": False},
    "malformed": {},
}


def _operation_name(operation: str) -> str:
    if operation in _OP_NAMES:
        return operation
    if operation in _OPS_BY_TITLE:
        return _OPS_BY_TITLE[operation]
    raise ValueError(
        f"unknown operation {operation!r}; use an operation name such as "
        "'update_customer_session_v2', its title, or '*'"
    )


def _seconds_header(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


# -- rate limit -------------------------------------------------------------------------------


class _TokenBucket:
    """``rate`` requests per second on average, bursts up to one second's worth."""

    def __init__(self, rate: float) -> None:
        self.rate = float(rate)
        self.capacity = max(1.0, self.rate)
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def take(self) -> float:
        """Spend a token; 0.0 when allowed, else the seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


# -- request log ------------------------------------------------------------------------------


class _Entry:
    """One API request as logged: cheap to record, decoded only when the log is read."""

    __slots__ = (
        "faults",
        "headers",
        "key",
        "method",
        "operation",
        "path",
        "query",
        "raw_body",
        "seq",
        "started",
        "status",
    )

    def __init__(self, started: float, method: str, path: str, environ: dict[str, Any]) -> None:
        self.started = started
        self.method = method
        self.path = path
        self.query: str = environ.get("QUERY_STRING", "")
        self.operation: str | None = None
        self.status = 0
        self.raw_body = b""
        self.headers: dict[str, str] = {}
        self.key: str | None = None
        self.faults: list[str] = []
        self.seq = 0

    def as_dict(self) -> dict[str, Any]:
        body: Any = None
        if self.raw_body:
            try:
                body = json.loads(self.raw_body)
            except (ValueError, RecursionError):
                body = self.raw_body[:2000].decode("utf-8", "replace")
        when = datetime.datetime.fromtimestamp(self.started, datetime.timezone.utc)
        return {
            "id": self.seq,
            "time": when.isoformat().replace("+00:00", "Z"),
            "method": self.method,
            "path": self.path,
            "operation": self.operation,
            "status": self.status or None,
            "query": parse_qs(self.query, keep_blank_values=True),
            "body": body,
            "headers": dict(self.headers),
            "key": self.key,
            "faults": list(self.faults),
        }


def _new_counters() -> dict[str, Any]:
    return {
        "requests": {},
        "statuses": {},
        "conflicts": {},
        "max_parallel": {},
        "rate_limited": 0,
        "faults": {},
        "errors": 0,
    }


# -- answers ----------------------------------------------------------------------------------


class _Refusal(ApiError):
    """An error answer that carries extra headers (``Allow``, ``Retry-After``)."""

    def __init__(self, status: int, message: str, headers: list[tuple[str, str]]) -> None:
        super().__init__(status, message)
        self.headers = headers


def _error(err: ApiError, headers: list[tuple[str, str]] | None = None) -> Answer:
    out = [("Content-Type", "application/json")]
    if headers:
        out.extend(headers)
    return err.status, out, _dumps(err.body())


def _dumps(body: Any) -> bytes:
    # ASCII output: lone surrogates from a client's JSON cannot break the encoding.
    text = json.dumps(body, separators=(",", ":"), default=_json_default, allow_nan=False)
    return text.encode("ascii")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


_STATUS_LINES = {s.value: f"{s.value} {s.phrase}" for s in http.HTTPStatus}


def _control_body(environ: dict[str, Any]) -> Any:
    raw = environ["wsgi.input"].read()
    if not raw.strip():
        raise ValueError("this endpoint needs a JSON body")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"invalid JSON: {exc}") from None


def _raw_path(environ: dict[str, Any]) -> str:
    """The request path as sent, still percent-encoded, so ``%2F`` inside an id survives."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw is None:
        # A server without RAW_URI gives only the decoded path; re-encode it (ids with "/" lose).
        return quote(environ.get("PATH_INFO", "").encode("latin-1"), safe="/")
    if raw.startswith(("http://", "https://")):  # absolute-form target
        raw = "/" + raw.split("/", 3)[-1] if raw.count("/") >= 3 else "/"
    return raw.partition("?")[0]


def _headers_from_environ(environ: dict[str, Any]) -> dict[str, str]:
    headers = {
        key[5:].lower().replace("_", "-"): value
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = environ["CONTENT_TYPE"]
    return headers
