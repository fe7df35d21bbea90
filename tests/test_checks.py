"""System checks on TALONONE: each problem has its id, a specific message and a fix hint."""

import pytest

from django_talonone.checks import check_settings

GOOD = {"BASE_URL": "https://acme.europe-west1.talon.one", "API_KEY": "key-123"}


def ids(settings, value):
    settings.TALONONE = value
    return [m.id for m in check_settings()]


def messages(settings, value):
    settings.TALONONE = value
    return check_settings()


def test_good_settings_pass(settings):
    assert ids(settings, GOOD) == []
    assert ids(settings, {**GOOD, "TIMEOUT": (1, 5), "APPLICATION_ID": 7, "GET_RETRIES": 0}) == []


def test_localhost_may_use_http(settings):
    assert ids(settings, {**GOOD, "BASE_URL": "http://127.0.0.1:8123"}) == []
    assert ids(settings, {**GOOD, "BASE_URL": "http://localhost:8123/"}) == []


def test_missing_setting(settings):
    del settings.TALONONE
    (msg,) = check_settings()
    assert msg.id == "talonone.E001"
    assert "TALONONE" in msg.hint


def test_not_a_dict(settings):
    assert ids(settings, [("API_KEY", "x")]) == ["talonone.E002"]


@pytest.mark.parametrize("key", [None, "", 123])
def test_missing_or_empty_api_key(settings, key):
    value = dict(GOOD)
    if key is None:
        del value["API_KEY"]
    else:
        value["API_KEY"] = key
    (msg,) = messages(settings, value)
    assert msg.id == "talonone.E004"
    assert "Integration API key" in msg.hint


def test_api_key_with_whitespace_is_flagged_without_echoing_it(settings):
    (msg,) = messages(settings, {**GOOD, "API_KEY": " sk-very-secret\n"})
    assert msg.id == "talonone.E005"
    assert "sk-very-secret" not in msg.msg + (msg.hint or "")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (None, "talonone.E006"),
        ("acme.talon.one", "talonone.E007"),
        ("ftp://acme.talon.one", "talonone.E007"),
        ("https://", "talonone.E007"),
        ("https://acme.talon.one/v2/", "talonone.E008"),
        ("https://acme.talon.one?x=1", "talonone.E008"),
        ("http://acme.talon.one", "talonone.E009"),
    ],
)
def test_base_url_problems(settings, url, expected):
    value = {**GOOD, "BASE_URL": url}
    if url is None:
        del value["BASE_URL"]
    (msg,) = messages(settings, value)
    assert msg.id == expected
    assert msg.hint


@pytest.mark.parametrize("timeout", [0, -1, (0, 5), (3, -1), "10", (1, 2, 3), True, (1, "x")])
def test_bad_timeouts(settings, timeout):
    (msg,) = messages(settings, {**GOOD, "TIMEOUT": timeout})
    assert msg.id == "talonone.E010"
    assert "(3.05, 10)" in msg.hint


def test_unknown_key_names_the_nearest_valid_one(settings):
    (msg,) = messages(settings, {**GOOD, "API_KYE": "x"})
    assert msg.id == "talonone.E003"
    assert '"API_KYE"' in msg.msg
    assert 'Did you mean "API_KEY"' in msg.hint


def test_unknown_key_without_near_match_lists_valid_keys(settings):
    (msg,) = messages(settings, {**GOOD, "COLOUR": "blue"})
    assert msg.id == "talonone.E003"
    assert "Did you mean" not in msg.hint
    assert "BASE_URL" in msg.hint


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("APPLICATION_ID", "7", "talonone.E011"),
        ("APPLICATION_ID", 0, "talonone.E011"),
        ("GET_RETRIES", -1, "talonone.E012"),
        ("GET_RETRIES", 11, "talonone.E012"),
        ("USER_AGENT", "", "talonone.E013"),
    ],
)
def test_bad_numbers(settings, key, value, expected):
    assert ids(settings, {**GOOD, key: value}) == [expected]


def test_several_problems_are_all_reported(settings):
    found = ids(settings, {"BASE_URL": "http://acme.talon.one", "TIMEOUT": 0, "API_KEYS": "x"})
    assert sorted(found) == ["talonone.E003", "talonone.E004", "talonone.E009", "talonone.E010"]


def test_checks_run_through_django(settings):
    from django.core import checks

    settings.TALONONE = {**GOOD, "TIMEOUT": -5}
    found = [m.id for m in checks.run_checks(tags=["talonone"])]
    assert found == ["talonone.E010"]
