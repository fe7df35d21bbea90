"""How path ids, query values and request bodies are encoded on the wire."""

from __future__ import annotations

import datetime
import decimal
import json
import math
import uuid
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest

from django_talonone.client import IntegrationClient, rfc3339

from .conftest import ANY_URL, BASE_URL, sent_json

UTC = datetime.timezone.utc

# ---- path ids ---------------------------------------------------------------------------------

AWKWARD_IDS = {
    "a/b": "a%2Fb",
    "a?b": "a%3Fb",
    "a#b": "a%23b",
    "a b": "a%20b",
    "ünï": "%C3%BCn%C3%AF",
    "%2F": "%252F",
    "+": "%2B",
    "a&b=c;d": "a%26b%3Dc%3Bd",
    "SUMMER-10_off.~": "SUMMER-10_off.~",
}


@pytest.mark.parametrize(("value", "encoded"), AWKWARD_IDS.items(), ids=list(AWKWARD_IDS))
def test_awkward_session_id_stays_in_one_path_segment(
    rsps: Any, client: IntegrationClient, value: str, encoded: str
) -> None:
    rsps.add("PUT", ANY_URL, json={"effects": []})
    client.update_customer_session_v2(value, {"customerSession": {}})
    url = rsps.calls[0].request.url
    assert url == f"{BASE_URL}/v2/customer_sessions/{encoded}"
    # Decoding the one segment gives the id back, unchanged.
    segment = urlsplit(url).path.split("/")[-1]
    assert unquote(segment) == value


@pytest.mark.parametrize("value", list(AWKWARD_IDS), ids=list(AWKWARD_IDS))
def test_awkward_ids_in_a_two_id_path(rsps: Any, client: IntegrationClient, value: str) -> None:
    rsps.add("GET", ANY_URL, json={"balance": {}})
    client.get_loyalty_card_balances(42, value)
    path = urlsplit(rsps.calls[0].request.url).path
    prefix, _, rest = path.partition("/cards/")
    assert prefix == "/v1/loyalty_programs/42"
    segment, _, tail = rest.partition("/")
    assert tail == "balances"
    assert unquote(segment) == value


def test_awkward_coupon_code_in_a_query_free_url(rsps: Any, client: IntegrationClient) -> None:
    rsps.add("GET", ANY_URL, json={"data": []})
    client.get_reserved_customers("50% OFF/today?#1")
    url = rsps.calls[0].request.url
    assert url == BASE_URL + "/v1/coupon_reservations/customerprofiles/50%25%20OFF%2Ftoday%3F%231"
    assert urlsplit(url).query == "" and urlsplit(url).fragment == ""


def test_path_ids_given_as_int_for_string_params(rsps: Any, client: IntegrationClient) -> None:
    rsps.add("DELETE", ANY_URL, status=204)
    client.delete_customer_data(12345)  # type: ignore[arg-type]
    assert rsps.calls[0].request.url == BASE_URL + "/v1/customer_data/12345"


@pytest.mark.parametrize("value", [7, "7", " 7 "])
def test_int_path_param_accepts_ints_and_numeric_strings(
    rsps: Any, client: IntegrationClient, value: Any
) -> None:
    rsps.add("DELETE", ANY_URL, status=204)
    client.delete_audience_v2(value)
    assert rsps.calls[0].request.url == BASE_URL + "/v2/audiences/7"


@pytest.mark.parametrize(
    "value", ["7a", "abc", "4.5", 4.5, True, False, [7], {"id": 7}, object(), b"7"]
)
def test_int_path_param_refuses_other_values(
    rsps: Any, client: IntegrationClient, value: Any
) -> None:
    with pytest.raises(TypeError, match="audience_id must be an int"):
        client.delete_audience_v2(value)
    assert len(rsps.calls) == 0


def test_int_path_param_error_names_operation(client: IntegrationClient) -> None:
    with pytest.raises(TypeError, match=r"^get_loyalty_card_balances\(\): loyalty_program_id"):
        client.get_loyalty_card_balances("x", "CARD-1")


@pytest.mark.parametrize("value", ["", None])
def test_empty_id_is_refused(rsps: Any, client: IntegrationClient, value: Any) -> None:
    with pytest.raises(ValueError, match="customer_session_id must not be empty"):
        client.update_customer_session_v2(value, {"customerSession": {}})
    with pytest.raises(ValueError, match="loyalty_card_id must not be empty"):
        client.get_loyalty_card_balances(42, value)
    with pytest.raises(ValueError, match="audience_id must not be empty"):
        client.delete_audience_v2(value)
    assert len(rsps.calls) == 0


@pytest.mark.parametrize("value", [".", ".."])
def test_dot_ids_are_refused(rsps: Any, client: IntegrationClient, value: str) -> None:
    # "/v2/customer_sessions/../reopen" would be normalised to "/v2/reopen" on the way out.
    with pytest.raises(ValueError, match="customer_session_id cannot be"):
        client.reopen_customer_session(value)
    assert len(rsps.calls) == 0


def test_ids_containing_dots_are_fine(rsps: Any, client: IntegrationClient) -> None:
    rsps.add("PUT", ANY_URL, json={"effects": []})
    client.reopen_customer_session("...")
    assert rsps.calls[0].request.url == BASE_URL + "/v2/customer_sessions/.../reopen"


# ---- query values -----------------------------------------------------------------------------


def _query(rsps: Any) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(rsps.calls[-1].request.url).query, keep_blank_values=True)


def test_naive_datetime_in_query_is_refused_clearly(rsps: Any, client: IntegrationClient) -> None:
    naive = datetime.datetime(2026, 11, 23, 10, 0)
    with pytest.raises(ValueError, match=r"naive datetime 2026-11-23T10:00:00 .*aware"):
        client.update_customer_session_v2("s", {"customerSession": {}}, now=naive)
    assert len(rsps.calls) == 0


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (datetime.datetime(2026, 11, 23, 10, 0, tzinfo=UTC), "2026-11-23T10:00:00Z"),
        (
            datetime.datetime(2026, 11, 23, 10, 0, 0, 250000, tzinfo=UTC),
            "2026-11-23T10:00:00.250000Z",
        ),
        (
            datetime.datetime(
                2026,
                11,
                23,
                10,
                0,
                tzinfo=datetime.timezone(datetime.timedelta(hours=5, minutes=30)),
            ),
            "2026-11-23T10:00:00+05:30",
        ),
        (
            datetime.datetime(
                2026, 11, 23, 10, 0, tzinfo=datetime.timezone(-datetime.timedelta(hours=8))
            ),
            "2026-11-23T10:00:00-08:00",
        ),
        ("2026-11-23T10:00:00+01:00", "2026-11-23T10:00:00+01:00"),  # strings pass through
    ],
)
def test_datetime_query_values_are_rfc3339_and_keep_their_offset(
    rsps: Any, client: IntegrationClient, value: Any, wire: str
) -> None:
    rsps.add("GET", ANY_URL, json={"balance": {}})
    client.get_loyalty_balances(42, "cust-1", end_date=value)
    assert _query(rsps) == [("endDate", wire)]


def test_zoneinfo_datetime_keeps_its_offset(rsps: Any, client: IntegrationClient) -> None:
    zoneinfo = pytest.importorskip("zoneinfo")
    try:
        berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    except zoneinfo.ZoneInfoNotFoundError:
        pytest.skip("no tz database")
    rsps.add("GET", ANY_URL, json={"balance": {}})
    client.get_loyalty_balances(42, "c", end_date=datetime.datetime(2026, 7, 1, 12, tzinfo=berlin))
    assert _query(rsps) == [("endDate", "2026-07-01T12:00:00+02:00")]


def test_rfc3339_helper() -> None:
    assert rfc3339(datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05Z"
    with pytest.raises(ValueError, match="naive"):
        rfc3339(datetime.datetime(2026, 1, 2))


def test_booleans_in_query_are_lowercase_words(rsps: Any, client: IntegrationClient) -> None:
    rsps.add("GET", ANY_URL, json={})
    client.get_customer_inventory("c", profile=True, coupons=False)
    assert _query(rsps) == [("profile", "true"), ("coupons", "false")]


def test_query_values_with_reserved_characters(rsps: Any, client: IntegrationClient) -> None:
    rsps.add("GET", ANY_URL, json={})
    client.get_loyalty_card_points(42, "CARD-1", subledger_id=["a&b", "c=d", "e f", "g+h"])
    assert _query(rsps) == [
        ("subledgerId", "a&b"),
        ("subledgerId", "c=d"),
        ("subledgerId", "e f"),
        ("subledgerId", "g+h"),
    ]


# ---- bodies -----------------------------------------------------------------------------------


def test_decimal_datetime_uuid_in_body_are_encoded(rsps: Any, client: IntegrationClient) -> None:
    rsps.add("PUT", ANY_URL, json={"effects": []})
    ref = uuid.UUID("0b8b2b1e-2c3d-4e5f-8a9b-0c1d2e3f4a5b")
    body = {
        "customerSession": {
            "cartItems": [
                {"sku": "A", "quantity": 1, "price": decimal.Decimal("19.99")},
                {"sku": "B", "quantity": 2, "price": decimal.Decimal("20.00")},
                {
                    "sku": "C",
                    "quantity": 1,
                    "price": decimal.Decimal("0.10"),
                    "adjustmentReferenceId": ref,
                    "adjustmentEffectiveFrom": datetime.datetime(2026, 11, 23, 10, tzinfo=UTC),
                },
            ],
            "attributes": {
                "since": datetime.date(2020, 2, 29),
                "tags": ("x", "y"),
                "shop": "Café ünï",
            },
        }
    }
    client.update_customer_session_v2("sess-1", body)
    raw = rsps.calls[0].request.body
    assert isinstance(raw, bytes)
    raw.decode("utf-8")  # valid UTF-8
    sent = sent_json(rsps.calls[0])
    items = sent["customerSession"]["cartItems"]
    assert items[0]["price"] == 19.99
    assert items[1]["price"] == 20 and b'"price":20}' in raw
    assert items[2]["price"] == 0.1
    assert items[2]["adjustmentReferenceId"] == str(ref)
    assert items[2]["adjustmentEffectiveFrom"] == "2026-11-23T10:00:00Z"
    attrs = sent["customerSession"]["attributes"]
    assert attrs == {"since": "2020-02-29", "tags": ["x", "y"], "shop": "Café ünï"}


def test_non_utc_datetime_in_body_keeps_offset(rsps: Any, client: IntegrationClient) -> None:
    rsps.add("POST", ANY_URL, json={"effects": []})
    tz = datetime.timezone(datetime.timedelta(hours=-3))
    client.track_event_v2(
        {"type": "t", "attributes": {"at": datetime.datetime(2026, 1, 1, tzinfo=tz)}}
    )
    assert sent_json(rsps.calls[0])["attributes"]["at"] == "2026-01-01T00:00:00-03:00"


def test_naive_datetime_in_body_is_refused(rsps: Any, client: IntegrationClient) -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        client.track_event_v2({"type": "t", "attributes": {"at": datetime.datetime(2026, 1, 1)}})
    assert len(rsps.calls) == 0


@pytest.mark.parametrize(
    "bad",
    [math.nan, math.inf, -math.inf, decimal.Decimal("NaN"), decimal.Decimal("Infinity")],
    ids=["nan", "inf", "-inf", "Decimal-NaN", "Decimal-Infinity"],
)
def test_nan_and_infinity_in_body_are_refused(
    rsps: Any, client: IntegrationClient, bad: Any
) -> None:
    body = {"customerSession": {"cartItems": [{"sku": "A", "quantity": 1, "price": bad}]}}
    with pytest.raises(ValueError):
        client.update_customer_session_v2("sess-1", body)
    assert len(rsps.calls) == 0


def test_unserialisable_body_value_is_a_clear_type_error(
    rsps: Any, client: IntegrationClient
) -> None:
    with pytest.raises(TypeError, match="object is not JSON serialisable"):
        client.track_event_v2({"type": "t", "attributes": {"x": object()}})
    assert len(rsps.calls) == 0


def test_body_is_compact_json(rsps: Any, client: IntegrationClient) -> None:
    rsps.add("PUT", ANY_URL, json={"id": 7})
    client.update_audience_v2(7, {"name": "VIP"})
    assert rsps.calls[0].request.body == json.dumps({"name": "VIP"}, separators=(",", ":")).encode()
