"""django_talonone._json gives what the standard library gives, with orjson or without it."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from django_talonone import _json

ANSWER = {
    "effects": [{"campaignId": 1, "props": {"value": 25.99, "name": "20 % off — shoes"}}],
    "customerSession": {"integrationId": "s1", "total": 434.1, "cartItems": [], "ok": True},
    "empty": None,
}


@pytest.fixture(params=["orjson", "stdlib"])
def implementation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "stdlib":
        monkeypatch.setattr(_json, "orjson", None)
    elif _json.orjson is None:
        pytest.skip("orjson is not installed")
    return str(request.param)


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__}")


def test_an_answer_reads_as_the_standard_library_reads_it(implementation: str):
    text = json.dumps(ANSWER)
    assert _json.loads(text) == json.loads(text)
    assert _json.loads(text.encode()) == ANSWER


def test_what_orjson_refuses_is_read_by_the_standard_library(implementation: str):
    assert _json.loads('{"big": 123456789012345678901234567890}') == {
        "big": 123456789012345678901234567890
    }
    assert str(_json.loads("[NaN]")[0]) == "nan"
    with pytest.raises(ValueError):
        _json.loads(b"{not json")


def test_written_documents_read_back_the_same(implementation: str):
    value = {"a": [1, 2.5, "é"], 3: Decimal("1.10"), "n": None, "big": 2**70}
    written = _json.dumps(value, _default)
    assert json.loads(written) == {"a": [1, 2.5, "é"], "3": "1.10", "n": None, "big": 2**70}


def test_a_value_nothing_can_write_is_a_type_error(implementation: str):
    with pytest.raises(TypeError):
        _json.dumps({"x": object()}, _default)


@pytest.mark.parametrize(
    "text",
    [
        '{"n": 9223372036854775808}',  # 19 digits: past a signed 64-bit integer
        '{"n": -18446744073709551617}',  # 20 digits, negative
        '{"n": 123456789012345678}',  # 18 digits: fits, the fast path
        '{"n": 1.2345678901234567890123}',  # a long fraction
        '{"s": "٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣", "n": 12345678901234567890}',  # Arabic digits, then a big one
        '{"s": "\\ud800"}',  # a lone surrogate, escaped
    ],
)
@pytest.mark.parametrize("as_bytes", [False, True])
def test_long_numbers_read_exactly_as_the_standard_library_reads_them(
    implementation: str, text: str, as_bytes: bool
):
    data = text.encode() if as_bytes else text
    assert _json.loads(data) == json.loads(text)
    assert repr(_json.loads(data)) == repr(json.loads(text))  # ints stay ints, to the last digit
