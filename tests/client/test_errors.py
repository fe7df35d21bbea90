"""Every error class: what the shop's code can read from it, and whether a retry can help."""

from __future__ import annotations

import datetime
import email.utils
import pickle
from typing import Any

import pytest
import requests

from django_talonone.client import (
    AuthenticationError,
    BadRequestError,
    ClientError,
    ConflictError,
    ConnectionError,
    IntegrationClient,
    MalformedResponseError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    TalonOneError,
    TimeoutError,
)
from django_talonone.client.errors import error_for_status, parse_retry_after

from .conftest import ANY_URL, BASE_URL
from .test_operations import CASES, Case, call

SESSION_PATH = "/v2/customer_sessions/sess%2F1"
BAD_REQUEST = {
    "message": "Invalid request",
    "errors": [
        {
            "title": "Invalid value",
            "details": "price must be a number",
            "source": {"pointer": "/customerSession/cartItems/0/price"},
        },
        {"title": "Unknown parameter", "source": {"parameter": "dryy"}},
    ],
    "StatusCode": 400,
}


@pytest.fixture
def put_client() -> IntegrationClient:
    return IntegrationClient(BASE_URL, "sk-other", get_retries=0)


def update_session(client: IntegrationClient) -> Any:
    return client.update_customer_session_v2("sess/1", {"customerSession": {"state": "open"}})


def get_session(client: IntegrationClient) -> Any:
    return client.get_customer_session("sess/1")


def assert_names_request(exc: TalonOneError, method: str = "PUT") -> None:
    title = "UpdateCustomerSessionV2" if method == "PUT" else "GetCustomerSession"
    assert exc.operation == title
    assert exc.method == method
    assert exc.path == SESSION_PATH
    text = str(exc)
    assert title in text and method in text and SESSION_PATH in text


def roundtrip(exc: TalonOneError) -> TalonOneError:
    copy = pickle.loads(pickle.dumps(exc))
    assert type(copy) is type(exc)
    assert str(copy) == str(exc)
    assert copy.args == exc.args
    assert vars(copy) == vars(exc)
    assert copy.retryable == exc.retryable
    return copy


# ---- status codes -----------------------------------------------------------------------------


def test_400_parses_the_api_errors(rsps: Any, put_client: IntegrationClient) -> None:
    rsps.add("PUT", ANY_URL, json=BAD_REQUEST, status=400)
    with pytest.raises(BadRequestError) as info:
        update_session(put_client)
    exc = info.value
    assert isinstance(exc, ClientError)
    assert exc.status == 400
    assert exc.retryable is False
    assert exc.outcome_unknown is False
    assert exc.message == "Invalid request"
    assert exc.errors == BAD_REQUEST["errors"]
    assert exc.errors[0]["source"]["pointer"] == "/customerSession/cartItems/0/price"
    assert exc.body == BAD_REQUEST
    text = str(exc)
    assert_names_request(exc)
    assert "400" in text and "Invalid request" in text
    assert "price must be a number" in text
    assert "pointer=/customerSession/cartItems/0/price" in text
    assert "parameter=dryy" in text
    roundtrip(exc)


def test_400_with_malformed_errors_list(rsps: Any, put_client: IntegrationClient) -> None:
    rsps.add("PUT", ANY_URL, json={"message": "bad", "errors": ["oops", 3, None]}, status=400)
    with pytest.raises(BadRequestError) as info:
        update_session(put_client)
    assert info.value.errors == []
    assert "bad" in str(info.value)


@pytest.mark.parametrize(
    ("status", "cls", "retryable"),
    [
        (400, BadRequestError, False),
        (401, AuthenticationError, False),
        (403, ClientError, False),
        (404, NotFoundError, False),
        (409, ConflictError, True),
        (422, ClientError, False),
        (429, RateLimitedError, True),
        (500, ServerError, True),
        (502, ServerError, True),
        (503, ServerError, True),
        (504, ServerError, True),
    ],
)
def test_status_maps_to_class(
    rsps: Any, put_client: IntegrationClient, status: int, cls: type, retryable: bool
) -> None:
    rsps.add("PUT", ANY_URL, json={"message": f"api says {status}"}, status=status)
    with pytest.raises(TalonOneError) as info:
        update_session(put_client)
    exc = info.value
    assert type(exc) is cls
    assert exc.status == status
    assert exc.retryable is retryable
    assert type(exc).retryable is retryable
    assert f"api says {status}" in str(exc)
    assert f"-> {status}" in str(exc)
    assert_names_request(exc)
    # A 5xx on a write may have been applied; a 4xx was not.
    assert exc.outcome_unknown is (status >= 500)
    if status < 500 and status not in (409, 429):
        assert isinstance(exc, ClientError)
    roundtrip(exc)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_on_a_get_has_a_known_outcome(
    rsps: Any, put_client: IntegrationClient, status: int
) -> None:
    rsps.add("GET", ANY_URL, json={"message": "down"}, status=status)
    with pytest.raises(ServerError) as info:
        get_session(put_client)
    assert info.value.outcome_unknown is False
    assert_names_request(info.value, "GET")


def test_401_says_authentication(rsps: Any, put_client: IntegrationClient) -> None:
    rsps.add("GET", ANY_URL, json={"message": "unauthorized"}, status=401)
    with pytest.raises(AuthenticationError, match="unauthorized"):
        get_session(put_client)


def test_404(rsps: Any, put_client: IntegrationClient) -> None:
    rsps.add("GET", ANY_URL, json={"message": "session not found"}, status=404)
    with pytest.raises(NotFoundError) as info:
        get_session(put_client)
    assert info.value.retryable is False
    assert "session not found" in str(info.value)


def test_error_without_body_still_says_status(rsps: Any, put_client: IntegrationClient) -> None:
    rsps.add("PUT", ANY_URL, status=409, body=b"")
    with pytest.raises(ConflictError) as info:
        update_session(put_client)
    assert info.value.body is None
    assert "409" in str(info.value)


# ---- 429 and Retry-After ----------------------------------------------------------------------


def test_429_retry_after_seconds(rsps: Any, put_client: IntegrationClient) -> None:
    rsps.add(
        "PUT", ANY_URL, json={"message": "slow down"}, status=429, headers={"Retry-After": "7"}
    )
    with pytest.raises(RateLimitedError) as info:
        update_session(put_client)
    assert info.value.retry_after == 7.0
    assert info.value.retryable is True
    assert roundtrip(info.value).retry_after == 7.0  # type: ignore[attr-defined]


def test_429_retry_after_http_date(rsps: Any, put_client: IntegrationClient) -> None:
    when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=120)
    header = email.utils.format_datetime(when, usegmt=True)
    rsps.add("PUT", ANY_URL, status=429, headers={"Retry-After": header})
    with pytest.raises(RateLimitedError) as info:
        update_session(put_client)
    assert info.value.retry_after is not None
    assert 110 <= info.value.retry_after <= 121


def test_429_without_retry_after(rsps: Any, put_client: IntegrationClient) -> None:
    rsps.add("PUT", ANY_URL, status=429)
    with pytest.raises(RateLimitedError) as info:
        update_session(put_client)
    assert info.value.retry_after is None
    assert "rate limited" in str(info.value)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("0", 0.0),
        ("  12 ", 12.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


# ---- transport failures -----------------------------------------------------------------------


def test_connection_refused_is_retryable_and_outcome_known(
    rsps: Any, put_client: IntegrationClient
) -> None:
    refused = requests.exceptions.ConnectionError(
        "HTTPSConnectionPool: Max retries exceeded (Caused by NewConnectionError("
        "'Failed to establish a new connection: [Errno 111] Connection refused'))"
    )
    rsps.add("PUT", ANY_URL, body=refused)
    with pytest.raises(ConnectionError) as info:
        update_session(put_client)
    exc = info.value
    assert exc.retryable is True
    assert exc.status is None
    assert exc.outcome_unknown is False  # never reached the API: safe to send again
    assert "Connection refused" in str(exc)
    assert_names_request(exc)
    assert isinstance(exc.__cause__, requests.exceptions.ConnectionError)
    roundtrip(exc)


def test_a_request_requests_refuses_to_build_is_permanent_and_never_sent(
    rsps: Any, put_client: IntegrationClient
) -> None:
    # E.g. an Idempotency-Key made from a shop's return id with a newline in it.
    client = put_client.with_headers({"Idempotency-Key": "RMA-1\r\nX-Evil: 1"})
    with pytest.raises(ConnectionError) as info:
        update_session(client)
    exc = info.value
    assert (exc.retryable, exc.outcome_unknown) == (False, False)
    assert isinstance(exc.__cause__, requests.exceptions.InvalidHeader)
    assert len(rsps.calls) == 0


def test_connection_dropped_mid_request_on_a_write_is_outcome_unknown(
    rsps: Any, put_client: IntegrationClient
) -> None:
    dropped = requests.exceptions.ConnectionError(
        "('Connection aborted.', RemoteDisconnected('Remote end closed connection'))"
    )
    rsps.add("PUT", ANY_URL, body=dropped)
    with pytest.raises(ConnectionError) as info:
        update_session(put_client)
    assert info.value.outcome_unknown is True


def test_read_timeout_on_a_put_is_outcome_unknown(rsps: Any, put_client: IntegrationClient) -> None:
    rsps.add("PUT", ANY_URL, body=requests.exceptions.ReadTimeout("Read timed out. (10)"))
    with pytest.raises(TimeoutError) as info:
        update_session(put_client)
    exc = info.value
    assert exc.retryable is True
    assert exc.outcome_unknown is True
    assert "Read timed out" in str(exc)
    assert_names_request(exc)
    roundtrip(exc)


def test_connect_timeout_is_outcome_known(rsps: Any, put_client: IntegrationClient) -> None:
    rsps.add("PUT", ANY_URL, body=requests.exceptions.ConnectTimeout("Connect timed out"))
    with pytest.raises(TimeoutError) as info:
        update_session(put_client)
    assert info.value.outcome_unknown is False
    assert info.value.retryable is True


def test_read_timeout_on_a_get_is_not_outcome_unknown(
    rsps: Any, put_client: IntegrationClient
) -> None:
    rsps.add("GET", ANY_URL, body=requests.exceptions.ReadTimeout("Read timed out."))
    with pytest.raises(TimeoutError) as info:
        get_session(put_client)
    assert info.value.outcome_unknown is False  # a GET changes nothing


# ---- malformed answers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "why"),
    [
        (b"<html>hello</html>", "text/html", "not JSON"),
        (b'{"effects": [', "application/json", "not JSON"),
        (b"", "application/json", "empty body"),
        (b"[1, 2]", "application/json", "expected a JSON object, got list"),
        (b'"ok"', "application/json", "expected a JSON object, got str"),
        (b"null", "application/json", "expected a JSON object, got NoneType"),
    ],
    ids=["html", "truncated", "empty", "array", "string", "null"],
)
def test_malformed_success_answer(
    rsps: Any, put_client: IntegrationClient, body: bytes, content_type: str, why: str
) -> None:
    rsps.add("PUT", ANY_URL, body=body, status=200, content_type=content_type)
    with pytest.raises(MalformedResponseError) as info:
        update_session(put_client)
    exc = info.value
    assert why in str(exc)
    assert exc.status == 200
    assert exc.outcome_unknown is True  # the write was probably applied
    assert exc.retryable is True
    assert_names_request(exc)
    roundtrip(exc)


def test_list_operation_answering_an_object_is_malformed(
    rsps: Any, put_client: IntegrationClient
) -> None:
    rsps.add("POST", ANY_URL, json={"sku": "A"}, status=200)
    with pytest.raises(MalformedResponseError, match="expected a JSON array, got dict"):
        put_client.best_prior_price({"skus": ["A"], "timeframe": "30"})


def test_malformed_get_answer_is_outcome_known(rsps: Any, put_client: IntegrationClient) -> None:
    rsps.add("GET", ANY_URL, body=b"not json", status=200)
    with pytest.raises(MalformedResponseError) as info:
        get_session(put_client)
    assert info.value.outcome_unknown is False


def test_html_502_page_is_a_server_error_with_its_text(
    rsps: Any, put_client: IntegrationClient
) -> None:
    page = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    rsps.add("PUT", ANY_URL, body=page, status=502, content_type="text/html")
    with pytest.raises(ServerError) as info:
        update_session(put_client)
    exc = info.value
    assert exc.status == 502
    assert exc.body == page
    assert "502 Bad Gateway" in str(exc)
    assert exc.outcome_unknown is True
    roundtrip(exc)


def test_huge_non_json_error_body_is_truncated(rsps: Any, put_client: IntegrationClient) -> None:
    rsps.add("PUT", ANY_URL, body="x" * 100_000, status=503, content_type="text/plain")
    with pytest.raises(ServerError) as info:
        update_session(put_client)
    assert len(info.value.body) <= 500
    assert len(str(info.value)) < 1000


# ---- every operation names itself in its errors ------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
def test_every_operation_error_names_operation_method_and_path(
    rsps: Any, put_client: IntegrationClient, case: Case
) -> None:
    rsps.add(case.method, ANY_URL, json=BAD_REQUEST, status=400)
    with pytest.raises(BadRequestError) as info:
        call(put_client, case)
    exc = info.value
    assert (exc.operation, exc.method, exc.path) == (case.title, case.method, case.path)
    assert f"{case.title} ({case.method} {case.path}) -> 400: Invalid request" in str(exc)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_every_operation_5xx_outcome(rsps: Any, put_client: IntegrationClient, case: Case) -> None:
    rsps.add(case.method, ANY_URL, json={"message": "boom"}, status=503)
    with pytest.raises(ServerError) as info:
        call(put_client, case)
    assert info.value.outcome_unknown is (case.method != "GET")
    assert info.value.operation == case.title


# ---- the error classes themselves -------------------------------------------------------------


ALL_CLASSES = [
    (TalonOneError, False),
    (ClientError, False),
    (BadRequestError, False),
    (AuthenticationError, False),
    (NotFoundError, False),
    (ConflictError, True),
    (RateLimitedError, True),
    (ServerError, True),
    (TimeoutError, True),
    (ConnectionError, True),
    (MalformedResponseError, True),
]


@pytest.mark.parametrize(("cls", "retryable"), ALL_CLASSES, ids=lambda x: getattr(x, "__name__", x))
def test_each_class_is_picklable_with_attributes(cls: type, retryable: bool) -> None:
    kwargs: dict[str, Any] = {
        "operation": "UpdateCustomerSessionV2",
        "method": "PUT",
        "path": "/v2/customer_sessions/s",
        "status": 418,
        "errors": [{"title": "t", "source": {"pointer": "/x"}}],
        "body": {"message": "m"},
        "outcome_unknown": True,
    }
    if cls is RateLimitedError:
        kwargs["retry_after"] = 3.5
    exc = cls("m", **kwargs)
    assert issubclass(cls, TalonOneError)
    assert exc.retryable is retryable
    copy = roundtrip(exc)
    for name, value in kwargs.items():
        assert getattr(copy, name) == value
    assert copy.message == "m"
    # Usable with Celery's autoretry_for, multiprocessing etc.: raising the copy works.
    with pytest.raises(cls):
        raise copy


def test_error_for_status_of_an_unexpected_code() -> None:
    exc = error_for_status(302, operation="Op", method="GET", path="/p", body=None)
    assert type(exc) is TalonOneError
    assert exc.retryable is False
    assert "unexpected status 302" in str(exc)
