"""The ``talonone_sandbox`` pytest fixture, and what importing the sandbox costs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from django.conf import settings as django_settings

from django_talonone.client import from_settings
from django_talonone.sandbox import Sandbox

from .conftest import cart_body

ROOT = Path(__file__).parents[2]


def test_fixture_yields_a_running_sandbox_and_points_settings_at_it(
    talonone_sandbox: Sandbox,
) -> None:
    assert talonone_sandbox.url.startswith("http://127.0.0.1:")
    assert django_settings.TALONONE["BASE_URL"] == talonone_sandbox.url
    assert django_settings.TALONONE["API_KEY"] == talonone_sandbox.api_key
    from django_talonone.conf import settings as talonone_settings

    assert talonone_settings.BASE_URL == talonone_sandbox.url
    with from_settings() as client:
        assert client.update_customer_session_v2("fx-1", cart_body())
    assert [r["operation"] for r in talonone_sandbox.requests] == ["update_customer_session_v2"]
    # Leave things behind for the next test to prove the reset.
    talonone_sandbox.faults.add("*", "status")


def test_fixture_resets_between_tests(talonone_sandbox: Sandbox) -> None:
    assert talonone_sandbox.requests == []
    assert talonone_sandbox.faults.list() == []
    assert talonone_sandbox.counters["requests"] == {}
    with talonone_sandbox.client() as client:
        assert client.update_customer_session_v2("fx-2", cart_body())


def test_settings_are_restored_after_the_fixture() -> None:
    assert django_settings.TALONONE["BASE_URL"] == "http://127.0.0.1:9"


def test_importing_the_sandbox_and_the_plugin_imports_no_django() -> None:
    code = (
        "import sys, django_talonone.sandbox, django_talonone.testing\n"
        "assert 'django' not in sys.modules, 'django was imported'\n"
        "assert 'django_talonone.sandbox.app' not in sys.modules, 'app imported eagerly'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
