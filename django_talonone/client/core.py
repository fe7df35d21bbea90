"""The HTTP core of the Integration API client: one pooled ``requests.Session``, no Django."""

from __future__ import annotations

import copy
import datetime
import decimal
import json
import logging
import random
import re
import time
import uuid
from collections.abc import Mapping
from types import FunctionType
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import requests
import requests.utils
from requests.cookies import RequestsCookieJar
from requests.structures import CaseInsensitiveDict

from .. import _json
from . import errors
from .operations import OperationsMixin

__all__ = ["DEFAULT_TIMEOUT", "IntegrationClient"]

logger = logging.getLogger("django_talonone.client")

#: (connect, read) seconds. The connect part is just above a multiple of 3 s, TCP's
#: retransmission window, as requests' docs advise.
DEFAULT_TIMEOUT: tuple[float, float] = (3.05, 10.0)
DEFAULT_USER_AGENT = "django-talonone/{version} python-requests/{requests}"

Timeout = float | tuple[float, float]


class IntegrationClient(OperationsMixin):
    """Talon.One Integration API client: one method per operation, wire-format dicts in and out.

    Path parameters are positional, in path order; the request body is a dict with the API's
    camelCase keys; query parameters are snake_case keyword arguments. Answers are the decoded JSON.
    Failures raise :class:`~django_talonone.client.errors.TalonOneError` subclasses.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        session: requests.Session | None = None,
        user_agent: str | None = None,
        get_retries: int = 2,
        retry_backoff: float = 0.1,
    ) -> None:
        if not isinstance(base_url, str) or urlsplit(base_url).scheme not in ("http", "https"):
            # Echo the value only when it looks like a URL: with the arguments swapped, it is
            # the API key.
            if isinstance(base_url, str) and "://" in base_url:
                raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
            raise ValueError(
                "base_url must be an http(s) URL such as https://yourbaseurl.talon.one (the value "
                "given is not shown, it may be a secret: are the arguments swapped?)"
            )
        if not isinstance(api_key, str) or not api_key.strip():
            raise ValueError("api_key must be a non-empty string")
        if get_retries < 0:
            raise ValueError("get_retries must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.timeout = _normalise_timeout(timeout)
        self.get_retries = get_retries
        self.retry_backoff = retry_backoff
        self._api_key = _Secret(api_key.strip())
        self._owns_session = session is None
        if session is None:
            session = requests.Session()
            # requests re-reads proxy and CA settings from the environment on every call when
            # trust_env is on; read them once here instead, so HTTPS_PROXY etc. still apply.
            self._proxies = requests.utils.get_environ_proxies(self.base_url)
            session.trust_env = False
            # Without TLS (http:// and no proxy) no certificate is checked, but requests would
            # still stat a CA bundle path on every request.
            plain = self.base_url.lower().startswith("http://") and not self._proxies
            self._verify: bool | str = (None if plain else _environ_ca_bundle()) or True
        else:
            self._proxies = {}
            self._verify = session.verify if session.verify is not None else True
        self.session = session
        # The session _send may skip Session.request with (see _fast_path_for): only one this
        # client created, and only when the base URL carries no userinfo, query or fragment.
        self._fast_session: requests.Session | None = None
        self._url_prefix: str | None = None
        if (
            _FAST_PATH_AVAILABLE
            and self._owns_session
            and type(session) is requests.Session
            and not any(c in self.base_url for c in "@?#")
        ):
            self._fast_session = session
            self._url_prefix = _prepared_prefix(self.base_url)
        from django_talonone import __version__

        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": user_agent
            or DEFAULT_USER_AGENT.format(version=__version__, requests=requests.__version__),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, api_key='***')"

    def close(self) -> None:
        """Close pooled connections (only those of a session the client created)."""
        if self._owns_session:
            self.session.close()

    def with_headers(self, headers: Mapping[str, str]) -> IntegrationClient:
        """A copy of this client that adds ``headers`` (e.g. ``Idempotency-Key``) to every request.

        The copy shares the connection pool; closing it leaves the pool open.
        """
        extra = {str(k): str(v) for k, v in headers.items()}
        if any(k.lower() == "authorization" for k in extra):
            raise ValueError("the Authorization header is set by the client itself")
        clone = copy.copy(self)
        clone._headers = {**self._headers, **extra}
        clone._owns_session = False
        return clone

    def __enter__(self) -> IntegrationClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # The one place every operation goes through.
    def _call(
        self,
        op: dict[str, Any],
        path_args: tuple[Any, ...],
        body: Any,
        query: dict[str, Any],
    ) -> Any:
        if op["deprecated"]:
            import warnings

            warnings.warn(
                f"{op['title']} is deprecated by Talon.One; use its V2 successor",
                DeprecationWarning,
                stacklevel=3,
            )
        path = _fill_path(op, path_args)
        params = _encode_query(op, query) if query else None
        data = None if body is None else _dumps(body)
        headers = self._headers_for(op, body)
        method = op["method"]
        attempts = 1 + (self.get_retries if method == "GET" else 0)
        for attempt in range(attempts):
            try:
                return self._send(op, method, path, params, data, headers)
            except errors.TalonOneError as exc:
                if not exc.retryable or attempt + 1 >= attempts:
                    raise
                delay = getattr(exc, "retry_after", None)
                if delay is None:
                    delay = self.retry_backoff * (2**attempt) * (0.5 + random.random())
                if delay > 5:
                    raise
                logger.info("%s: retrying GET after %s (%.2fs)", op["title"], exc.status, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _headers_for(self, op: dict[str, Any], body: Any) -> dict[str, str]:
        headers = {**self._headers, "Authorization": "ApiKey-v1 " + self._api_key.reveal()}
        if body is None:
            del headers["Content-Type"]
        return headers

    def _send(
        self,
        op: dict[str, Any],
        method: str,
        path: str,
        params: list[tuple[str, str]] | None,
        data: bytes | None,
        headers: dict[str, str],
    ) -> Any:
        name = op["title"]
        started = time.perf_counter()
        session = self.session
        try:
            if self._fast_path_for(session):
                resp = self._send_prepared(session, method, path, params, data, headers)
            else:
                resp = session.request(
                    method,
                    self.base_url + path,
                    params=params,
                    data=data,
                    headers=headers,
                    timeout=self.timeout,
                    proxies=self._proxies,
                    verify=self._verify,
                    allow_redirects=False,
                )
        except requests.exceptions.ConnectTimeout as exc:
            raise self._transport_error(errors.TimeoutError, op, method, path, exc, False) from exc
        except requests.exceptions.Timeout as exc:
            raise self._transport_error(errors.TimeoutError, op, method, path, exc, True) from exc
        except requests.exceptions.RequestException as exc:
            # requests' ValueError kinds (InvalidHeader, InvalidURL, MissingSchema, ...) refuse the
            # request before it is sent: the same request can never succeed.
            refused = isinstance(exc, ValueError)
            sent = not refused and not _failed_before_sending(exc)
            error = self._transport_error(errors.ConnectionError, op, method, path, exc, sent)
            if refused:
                error.retryable = False
            raise error from exc
        status = resp.status_code
        if logger.isEnabledFor(logging.DEBUG):
            ms = (time.perf_counter() - started) * 1000
            logger.debug("%s %s %s -> %s in %.1f ms", name, method, path, status, ms)
        content = resp.content
        if 200 <= status < 300:
            if status == 204 or not content:
                if op["response"] is None or status == 204:
                    return None
                raise self._malformed(op, method, path, status, "empty body")
            try:
                decoded = _json.loads(content)
            except ValueError:
                raise self._malformed(op, method, path, status, "body is not JSON") from None
            expected = list if (op["response"] or "").startswith("list[") else dict
            if op["response"] is not None and not isinstance(decoded, expected):
                got = type(decoded).__name__
                msg = f"expected a JSON {'array' if expected is list else 'object'}, got {got}"
                raise self._malformed(op, method, path, status, msg)
            return decoded
        key = self._api_key.reveal().encode()
        if key in content:  # a gateway or the API may echo the Authorization header back
            content = content.replace(key, b"***")
        try:
            err_body: Any = _json.loads(content) if content else None
        except ValueError:
            err_body = self._redact(resp.text)[:500]  # redact first: the cut may split the key
        exc = errors.error_for_status(
            status,
            operation=name,
            method=method,
            path=path,
            body=err_body,
            retry_after_header=resp.headers.get("Retry-After"),
        )
        log = logger.warning if exc.retryable else logger.error
        log("%s %s %s failed: %s", name, method, path, exc.message, extra={"talonone_op": name})
        raise exc

    def _fast_path_for(self, session: requests.Session) -> bool:
        """Whether ``_send_prepared`` sends exactly what ``session.request(...)`` would.

        ``Session.request`` merges the session's cookies, auth, params, hooks, proxies and (with
        ``trust_env``) the environment into every request; ``_send_prepared`` skips that merging,
        which costs more than all the rest of our per-call work (its ``merge_setting`` goes
        through slow ``typing.Protocol`` isinstance checks in requests 2.34). So it is used only
        while that merging has nothing to merge: the session is the one this client created,
        nobody has since given it auth, params, proxies, response hooks or ``trust_env``, its
        cookie jar is empty, and nobody has patched ``Session.request`` (or what it calls) to
        intercept calls, e.g. a test stubbing the API. Otherwise: ``session.request``, as ever.

        Cookies: the Integration API sets none. Should something in between (a load balancer's
        affinity cookie) set one, ``Session.send`` stores it in the jar like before, and from then
        on this returns False, so the cookie is sent back exactly as requests would send it.
        """
        if session is not self._fast_session or session.trust_env or session.auth is not None:
            return False
        if session.params or session.proxies or session.cookies:
            return False
        hooks = session.hooks
        if hooks is not None and hooks.get("response") != []:  # as requests' merge_hooks tests
            return False
        if not isinstance(session.headers, Mapping):
            return False
        return (
            getattr(session.request, "__func__", None) is _SESSION_REQUEST
            and getattr(session.prepare_request, "__func__", None) is _SESSION_PREPARE_REQUEST
            and getattr(session.merge_environment_settings, "__func__", None)
            is _SESSION_MERGE_ENVIRONMENT
        )

    def _send_prepared(
        self,
        session: requests.Session,
        method: str,
        path: str,
        params: list[tuple[str, str]] | None,
        data: bytes | None,
        headers: dict[str, str],
    ) -> requests.Response:
        """``session.request(...)`` as ``_send`` calls it, without its merging of session state.

        Each step is the one ``Session.request`` / ``Session.prepare_request`` /
        ``PreparedRequest.prepare`` takes, given what ``_fast_path_for`` has checked; what they
        would merge in is empty, so it is left out. tests/client/test_fast_path.py compares the
        two request by request.
        """
        p = requests.PreparedRequest()
        p.prepare_method(method)
        # The query as requests' _encode_params encodes a list of str pairs (without its slow
        # Protocol checks); prepare_url passes a str query through unchanged.
        query = _urlencode(params) if params else None
        tail = path if query is None else f"{path}?{query}"
        if self._url_prefix is not None and _PLAIN_TAIL.fullmatch(tail):
            p.url = self._url_prefix + tail  # what prepare_url would make of it, see _PLAIN_TAIL
        else:
            p.prepare_url(self.base_url + path, query)
        p.prepare_headers(_merge_headers(session.headers, headers))
        # No cookies: the session's jar is empty, so prepare_cookies would add no header.
        # Session.send's redirect handling (Response.next) needs a jar of the request's own.
        p._cookies = RequestsCookieJar()
        # `data or {}` as in Session.request: a bodyless PUT/POST/DELETE gets Content-Length: 0.
        p.prepare_body(data or {}, None)
        # No prepare_auth: neither the session nor the URL (no userinfo) has auth. No
        # prepare_hooks: the session has no response hooks; p.hooks is already requests' default.
        return session.send(
            p,
            timeout=self.timeout,
            allow_redirects=False,
            # What merge_environment_settings gives with trust_env off: our proxies merged over
            # the session's (which are empty), our verify, the session's stream and cert.
            proxies=dict(self._proxies),
            stream=session.stream,
            verify=self._verify,
            cert=session.cert,
        )

    def _transport_error(
        self,
        cls: type[errors.TalonOneError],
        op: dict[str, Any],
        method: str,
        path: str,
        exc: Exception,
        sent: bool,
    ) -> errors.TalonOneError:
        message = self._redact(f"{type(exc).__name__}: {exc}")
        logger.warning("%s %s %s failed: %s", op["title"], method, path, message)
        return cls(
            message,
            operation=op["title"],
            method=method,
            path=path,
            outcome_unknown=sent and method != "GET",
        )

    def _malformed(
        self, op: dict[str, Any], method: str, path: str, status: int, why: str
    ) -> errors.MalformedResponseError:
        logger.error(
            "%s %s %s answered %s with a malformed body: %s", op["title"], method, path, status, why
        )
        return errors.MalformedResponseError(
            f"malformed answer: {why}",
            operation=op["title"],
            method=method,
            path=path,
            status=status,
            outcome_unknown=method != "GET",
        )

    def _redact(self, text: str) -> str:
        key = self._api_key.reveal()
        return text.replace(key, "***") if key in text else text


#: What Session.request runs; the fast path is taken only while these are unpatched.
_SESSION_REQUEST = requests.Session.request
_SESSION_PREPARE_REQUEST = requests.Session.prepare_request
_SESSION_MERGE_ENVIRONMENT = requests.Session.merge_environment_settings


def _is_requests_own(function: Any) -> bool:
    # Instrumentation that wrapped Session.request before this module was imported would be
    # skipped by the fast path: take it only if these are requests' own, unwrapped functions.
    code = getattr(function, "__code__", None)
    return (
        type(function) is FunctionType
        and not hasattr(function, "__wrapped__")
        and code is not None
        and code.co_filename == requests.sessions.__file__
    )


_FAST_PATH_AVAILABLE = all(
    _is_requests_own(f)
    for f in (_SESSION_REQUEST, _SESSION_PREPARE_REQUEST, _SESSION_MERGE_ENVIRONMENT)
)


# A URL tail that requests' prepare_url (urllib3's parse_url normalisation, then requote_uri)
# leaves exactly as it is: "/"-separated segments, none of them "." or "..", made of unreserved
# characters and uppercase percent-escapes of other bytes (an escaped unreserved character would
# be unescaped), then optionally a non-empty query that adds "=", "&" and "+". _fill_path (quote
# with safe="" of every id, which refuses "." and "..") and _urlencode (quote_plus) produce just
# that; a tail that somehow is not plain goes through prepare_url instead.
_UNRESERVED = r"[A-Za-z0-9._~-]"
_ESCAPE = r"%(?:[0189A-F][0-9A-F]|2[0-9A-CF]|3[A-F]|40|5[B-E]|60|7[B-DF])"
_SEGMENT = rf"/(?!\.\.?(?:[/?]|\Z))(?:{_UNRESERVED}|{_ESCAPE})*"
_PLAIN_PATH = re.compile(rf"(?:{_SEGMENT})*")
_PLAIN_TAIL = re.compile(rf"(?:{_SEGMENT})+(?:\?(?:{_UNRESERVED}|[=&+]|{_ESCAPE})+)?")


def _prepared_prefix(base_url: str) -> str | None:
    """``base_url`` as requests prepares it, to join a plain tail to; None unless that is exact.

    It is exact when the base path is plain itself: parse_url then splits ``base_url + tail``
    at the same authority (normalised alike: scheme and host case, IDNA, port) and its path and
    query need no change, so preparing the whole is preparing the base and appending the tail.
    """
    base_path = urlsplit(base_url).path
    if not _PLAIN_PATH.fullmatch(base_path):
        return None
    p = requests.PreparedRequest()
    try:
        p.prepare_url(base_url, None)
    except Exception:  # then every call prepares it (and fails) the way requests does
        return None
    url = str(p.url)
    prefix = url[:-1] if not base_path else url  # prepare_url gives an empty path a "/"
    return prefix if prefix.endswith(base_path) else None


def _urlencode(params: list[tuple[str, str]]) -> str:
    """The query string requests' ``RequestEncodingMixin._encode_params`` makes of str pairs."""
    return urlencode([(k.encode("utf-8"), v.encode("utf-8")) for k, v in params], doseq=True)


def _merge_headers(
    session_headers: Mapping[str, Any], headers: dict[str, str]
) -> CaseInsensitiveDict[Any]:
    """requests' ``merge_setting(headers, session.headers, dict_class=CaseInsensitiveDict)``."""
    merged: CaseInsensitiveDict[Any] = CaseInsensitiveDict()
    for key, value in session_headers.items():
        merged[key] = value
    for key, value in headers.items():
        merged[key] = value
    for key in [key for key, value in merged.items() if value is None]:
        del merged[key]
    return merged


class _Secret:
    """Holds the API key so that repr(), str() and vars() of the client never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("the API key cannot be pickled")


def _fill_path(op: dict[str, Any], args: tuple[Any, ...]) -> str:
    path = op["path"]
    for (wire, py, typ), value in zip(op["path_params"], args, strict=True):
        if value is None or value == "":
            raise ValueError(f"{op['name']}(): {py} must not be empty")
        if value in (".", ".."):  # URL normalisation would drop the segment: another endpoint
            raise ValueError(f"{op['name']}(): {py} cannot be {value!r}")
        if typ == "int" and (isinstance(value, bool) or not isinstance(value, int)):
            # Only an int or a numeric string: int() would also turn True into 1, 4.5 into 4
            # and b"7" into 7, silently addressing another resource.
            try:
                if not isinstance(value, str):
                    raise TypeError
                value = int(value)
            except (TypeError, ValueError):
                raise TypeError(f"{op['name']}(): {py} must be an int, got {value!r}") from None
        # safe="" so that "/", "?", "#" and spaces inside an id stay inside one path segment.
        path = path.replace("{" + wire + "}", quote(str(value), safe=""))
    return path


def _encode_query(op: dict[str, Any], query: dict[str, Any]) -> list[tuple[str, str]]:
    params: list[tuple[str, str]] = []
    for py, wire, typ, explode in op["query"]:
        value = query.get(py)
        if value is None:
            continue
        if typ == "list[str]":
            if isinstance(value, (str, bytes)):
                value = [value]
            items = [_query_value(v, py) for v in value]
            if explode:
                params.extend((wire, v) for v in items)
            elif items:
                params.append((wire, ",".join(items)))
        else:
            params.append((wire, _query_value(value, py)))
    return params


def _query_value(value: Any, name: str) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, datetime.datetime):
        return rfc3339(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    return str(value)


def rfc3339(value: datetime.datetime) -> str:
    """An aware datetime as RFC 3339 (``2026-11-23T10:00:00Z``); naive datetimes are refused."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"naive datetime {value.isoformat()} is ambiguous; pass an aware datetime "
            "(e.g. django.utils.timezone.now())"
        )
    if value.utcoffset() == datetime.timedelta(0):
        return value.replace(tzinfo=None).isoformat() + "Z"
    return value.isoformat()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return rfc3339(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise ValueError(f"Decimal {value} is not a JSON number")
        # Prices are sent as JSON numbers; float keeps every Decimal with up to 15 digits exact.
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable in a request body")


def _dumps(body: Any) -> bytes:
    return json.dumps(
        body, separators=(",", ":"), ensure_ascii=False, default=_json_default, allow_nan=False
    ).encode()


def _normalise_timeout(timeout: Timeout) -> tuple[float, float]:
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        pair = (float(timeout), float(timeout))
    elif isinstance(timeout, (tuple, list)) and len(timeout) == 2:
        pair = (float(timeout[0]), float(timeout[1]))
    else:
        raise ValueError(f"timeout must be seconds or a (connect, read) pair, got {timeout!r}")
    if min(pair) <= 0:
        raise ValueError(f"timeout values must be positive, got {timeout!r}")
    return pair


def _environ_ca_bundle() -> str | None:
    import os

    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or None


def _failed_before_sending(exc: Exception) -> bool:
    # urllib3 wraps "could not connect" in NewConnectionError / NameResolutionError; then the
    # request never left, so a retry cannot apply it twice.
    text = repr(exc)
    return any(
        marker in text
        for marker in ("NewConnectionError", "NameResolutionError", "Connection refused")
    )
