"""System checks for the ``TALONONE`` setting (ids ``talonone.E001`` ...).

Each problem is reported at start-up (``manage.py check``, ``runserver``, ``migrate``) with a hint
that says how to fix it; the API key itself is never echoed.
"""

from __future__ import annotations

import difflib
from typing import Any
from urllib.parse import urlsplit

from django.core import checks

from .conf import DEFAULTS, normalise_timeout

__all__ = ["check_settings"]

LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "testserver"}  # noqa: S104


@checks.register("talonone")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Validate ``settings.TALONONE``: its type, keys, API key, base URL and timeouts."""
    from django.conf import settings as django_settings

    raw = getattr(django_settings, "TALONONE", None)
    if raw is None:
        return [
            checks.Error(
                "The TALONONE setting is missing.",
                hint='Add TALONONE = {"BASE_URL": "https://<your>.talon.one", '
                '"API_KEY": os.environ["TALONONE_API_KEY"]} to your settings.',
                id="talonone.E001",
            )
        ]
    if not isinstance(raw, dict):
        return [
            checks.Error(
                f"TALONONE must be a dict, not {type(raw).__name__}.",
                hint='Write it as TALONONE = {"BASE_URL": ..., "API_KEY": ...}.',
                id="talonone.E002",
            )
        ]
    return [
        *_check_keys(raw),
        *_check_api_key(raw.get("API_KEY")),
        *_check_base_url(raw.get("BASE_URL")),
        *_check_timeout(raw.get("TIMEOUT", DEFAULTS["TIMEOUT"])),
        *_check_numbers(raw),
    ]


def _check_keys(raw: dict[str, Any]) -> list[checks.CheckMessage]:
    found = []
    for key in raw:
        if key in DEFAULTS:
            continue
        near = difflib.get_close_matches(str(key).upper(), DEFAULTS, n=1, cutoff=0.5)
        hint = (
            (f'Did you mean "{near[0]}"? ' if near else "")
            + "Valid keys: "
            + ", ".join(sorted(DEFAULTS))
            + "."
        )
        found.append(
            checks.Error(f'TALONONE has an unknown key "{key}".', hint=hint, id="talonone.E003")
        )
    return found


def _check_api_key(value: Any) -> list[checks.CheckMessage]:
    if isinstance(value, str) and value.strip():
        if value != value.strip():
            return [
                checks.Error(
                    'TALONONE["API_KEY"] has leading or trailing white space.',
                    hint="Strip the value, e.g. os.environ['TALONONE_API_KEY'].strip().",
                    id="talonone.E005",
                )
            ]
        return []
    problem = "is missing" if value is None else "is empty" if value == "" else "is not a string"
    return [
        checks.Error(
            f'TALONONE["API_KEY"] {problem}.',
            hint="Create an Integration API key in Talon.One (Account > Tools > Integration API "
            'keys) and set TALONONE["API_KEY"], ideally from an environment variable.',
            id="talonone.E004",
        )
    ]


def _check_base_url(value: Any) -> list[checks.CheckMessage]:
    hint = 'Set TALONONE["BASE_URL"] to your deployment\'s URL, e.g. "https://mycompany.europe-west1.talon.one".'
    if not isinstance(value, str) or not value:
        return [checks.Error('TALONONE["BASE_URL"] is missing.', hint=hint, id="talonone.E006")]
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        parts, host = None, None
    if parts is None or parts.scheme not in ("http", "https") or not host:
        return [
            checks.Error(
                f'TALONONE["BASE_URL"] is not a valid http(s) URL: {value!r}.',
                hint=hint,
                id="talonone.E007",
            )
        ]
    if parts.query or parts.fragment or parts.path.rstrip("/"):
        return [
            checks.Error(
                f'TALONONE["BASE_URL"] must be the bare deployment URL, got {value!r}.',
                hint="Drop the path, query and fragment: the client adds /v2/... itself.",
                id="talonone.E008",
            )
        ]
    if parts.scheme != "https" and host not in LOCAL_HOSTS:
        return [
            checks.Error(
                f'TALONONE["BASE_URL"] must use https, got {value!r}.',
                hint="The API key travels in every request; plain http is only allowed for "
                "localhost (e.g. the django-talonone sandbox).",
                id="talonone.E009",
            )
        ]
    return []


def _check_timeout(value: Any) -> list[checks.CheckMessage]:
    pair = normalise_timeout(value)
    ok = (
        isinstance(pair, tuple)
        and len(pair) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pair)
        and all(v > 0 for v in pair)
    )
    if ok:
        return []
    return [
        checks.Error(
            f'TALONONE["TIMEOUT"] must be a positive number of seconds or a (connect, read) '
            f"pair of positive numbers, got {value!r}.",
            hint='For example TALONONE["TIMEOUT"] = (3.05, 10).',
            id="talonone.E010",
        )
    ]


def _check_numbers(raw: dict[str, Any]) -> list[checks.CheckMessage]:
    found = []
    app_id = raw.get("APPLICATION_ID")
    if app_id is not None and (
        not isinstance(app_id, int) or isinstance(app_id, bool) or app_id <= 0
    ):
        found.append(
            checks.Error(
                f'TALONONE["APPLICATION_ID"] must be a positive integer, got {app_id!r}.',
                hint="Use the numeric id from Talon.One's Application settings, or leave it out.",
                id="talonone.E011",
            )
        )
    retries = raw.get("GET_RETRIES", DEFAULTS["GET_RETRIES"])
    if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= 10:
        found.append(
            checks.Error(
                f'TALONONE["GET_RETRIES"] must be an integer from 0 to 10, got {retries!r}.',
                hint="0 turns retries of GET requests off; the default is 2.",
                id="talonone.E012",
            )
        )
    agent = raw.get("USER_AGENT")
    if agent is not None and (not isinstance(agent, str) or not agent.strip()):
        found.append(
            checks.Error(
                'TALONONE["USER_AGENT"] must be a non-empty string or None.',
                hint="Leave it out to send the default django-talonone User-Agent.",
                id="talonone.E013",
            )
        )
    return found
