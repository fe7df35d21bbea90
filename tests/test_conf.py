"""The TALONONE accessor: defaults, lazy reads, reload on override."""

import pytest

from django_talonone.conf import DEFAULTS, settings


def test_defaults_fill_in_missing_keys():
    assert settings.GET_RETRIES == DEFAULTS["GET_RETRIES"]
    assert settings.TIMEOUT == (3.05, 10.0)


def test_override_takes_effect_at_once(settings):  # pytest-django's settings fixture
    settings.TALONONE = {"BASE_URL": "https://a.talon.one", "API_KEY": "k", "TIMEOUT": 4}
    from django_talonone.conf import settings as tsettings

    assert tsettings.BASE_URL == "https://a.talon.one"
    assert tsettings.TIMEOUT == (4.0, 4.0)
    settings.TALONONE = {"BASE_URL": "https://b.talon.one", "API_KEY": "k"}
    assert tsettings.BASE_URL == "https://b.talon.one"


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="not a TALONONE setting"):
        settings.BASE_ULR  # noqa: B018


def test_importing_conf_reads_no_settings(monkeypatch):
    import importlib

    import django_talonone.conf as conf

    touched = []
    monkeypatch.setattr(
        conf.TalonOneSettings, "user_settings", property(lambda self: touched.append(1) or {})
    )
    importlib.reload(conf)
    assert touched == []
    importlib.reload(conf)  # restore the real accessor for later tests
