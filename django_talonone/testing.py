"""pytest plugin for host shops (entry point ``talonone``): Talon.One without the network.

Fixtures:

``talonone_sandbox``
    A running :class:`~django_talonone.sandbox.Sandbox`, reset for each test. When Django settings
    are configured, ``TALONONE["BASE_URL"]`` and ``["API_KEY"]`` point at it for the test.

pytest loads this module in every run of a project that installs django-talonone, so it imports
neither Django nor the sandbox's server at import time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from django_talonone.sandbox import Sandbox

__all__ = ["talonone_sandbox"]


@pytest.fixture
def talonone_sandbox(
    request: pytest.FixtureRequest, _talonone_sandbox_server: Sandbox
) -> Iterator[Sandbox]:
    """A running sandbox with no data, no faults and an empty request log.

    One server serves the whole test session and is reset before each test. Load campaigns with
    ``talonone_sandbox.load_campaigns(path_or_dict)``; they revert at the next test.
    """
    sandbox = _talonone_sandbox_server
    sandbox.reset()
    _point_settings_at(request, sandbox)
    yield sandbox


@pytest.fixture(scope="session")
def _talonone_sandbox_server() -> Iterator[Sandbox]:
    """The session's one sandbox server (started on first use)."""
    from django_talonone.sandbox import Sandbox

    with Sandbox() as sandbox:
        yield sandbox


def _point_settings_at(request: pytest.FixtureRequest, sandbox: Sandbox) -> None:
    """Point ``settings.TALONONE`` at the sandbox for this test, when Django is configured."""
    try:
        from django.conf import settings as django_settings
    except ImportError:
        return
    if not django_settings.configured:
        return
    values = {"BASE_URL": sandbox.url, "API_KEY": sandbox.api_key}
    try:
        # pytest-django's fixture restores the setting after the test and sends setting_changed.
        settings: Any = request.getfixturevalue("settings")
    except pytest.FixtureLookupError:
        from django.test import override_settings

        override = override_settings(
            TALONONE={**getattr(django_settings, "TALONONE", {}), **values}
        )
        override.enable()
        request.addfinalizer(override.disable)
        return
    settings.TALONONE = {**getattr(settings, "TALONONE", {}), **values}
