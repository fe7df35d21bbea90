"""System checks for the ``TALONONE`` setting (ids ``talonone.E001`` ...).

Each problem is reported at start-up (``manage.py check``, ``runserver``, ``migrate``) with a hint
that says how to fix it; the API key itself is never echoed.
"""

from __future__ import annotations

import difflib
from typing import Any
from urllib.parse import urlsplit

from django.core import checks

from .client.schema import response_content_values
from .conf import DEFAULTS, normalise_timeout

__all__ = ["check_adapter", "check_order_model", "check_pipeline", "check_settings"]

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


# ---- model-signal mode and the shop adapter (talonone.E020 - E029) ----------------------------


@checks.register("talonone")
def check_order_model(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Validate model-signal mode: ORDER_MODEL, ORDER_STATUS_FIELD and ORDER_STATUS_MAP."""
    from django.apps import apps
    from django.core.exceptions import FieldDoesNotExist

    from .model_signals import SESSION_STATES

    raw = _talonone_dict()
    if raw is None:
        return []
    found: list[checks.CheckMessage] = []
    label = raw.get("ORDER_MODEL")
    field_name = raw.get("ORDER_STATUS_FIELD", DEFAULTS["ORDER_STATUS_FIELD"])
    mapping = raw.get("ORDER_STATUS_MAP", DEFAULTS["ORDER_STATUS_MAP"])
    states = ", ".join(SESSION_STATES)
    map_given = bool(mapping)
    if not isinstance(mapping, dict):
        found.append(
            checks.Error(
                f'TALONONE["ORDER_STATUS_MAP"] must be a dict, not {type(mapping).__name__}.',
                hint='Map each status value to a session state, e.g. {"paid": "closed", '
                '"cancelled": "cancelled"}.',
                id="talonone.E022",
            )
        )
        mapping = {}
    for status, state in mapping.items():
        if state not in SESSION_STATES:
            found.append(
                checks.Error(
                    f'TALONONE["ORDER_STATUS_MAP"] maps {status!r} to {state!r}, which is not '
                    "a session state.",
                    hint=f"Use one of: {states}; leave out statuses Talon.One need not hear of.",
                    id="talonone.E023",
                )
            )
    if not label:
        if map_given:
            found.append(
                checks.Error(
                    'TALONONE["ORDER_STATUS_MAP"] is set but TALONONE["ORDER_MODEL"] is not, so '
                    "no status change will ever be pushed.",
                    hint='Set TALONONE["ORDER_MODEL"] to your order model, e.g. "shop.Order", '
                    "or remove ORDER_STATUS_MAP.",
                    id="talonone.E027",
                )
            )
        return found
    try:
        model = apps.get_model(label) if isinstance(label, str) else None
    except (LookupError, ValueError):
        model = None
    if model is None:
        found.append(
            checks.Error(
                f'TALONONE["ORDER_MODEL"] = {label!r} is not an installed model.',
                hint='Write it as "app_label.ModelName" (e.g. "shop.Order") and make sure the '
                "app is in INSTALLED_APPS.",
                id="talonone.E020",
            )
        )
        return found
    try:
        field = model._meta.get_field(field_name) if isinstance(field_name, str) else None
    except FieldDoesNotExist:
        field = None
    if field is None or not getattr(field, "concrete", False):
        names = ", ".join(f.name for f in model._meta.concrete_fields)
        found.append(
            checks.Error(
                f'TALONONE["ORDER_STATUS_FIELD"] = {field_name!r} is not a field of '
                f"{model._meta.label}.",
                hint=f"Name the field that holds the order's status; its fields are: {names}.",
                id="talonone.E021",
            )
        )
        return found
    if not map_given:
        found.append(
            checks.Error(
                f'TALONONE["ORDER_MODEL"] = {label!r} is set but ORDER_STATUS_MAP is empty, so '
                "no status change will ever be pushed.",
                hint='Map your statuses to session states, e.g. {"placed": "open", '
                '"paid": "closed", "cancelled": "cancelled"}.',
                id="talonone.E026",
            )
        )
    choices = [value for value, _label in field.flatchoices] if field.choices else []
    known = set(choices) | {str(value) for value in choices}
    for status in mapping:
        if choices and status not in known:
            found.append(
                checks.Error(
                    f'TALONONE["ORDER_STATUS_MAP"] has the status {status!r}, which is not one '
                    f"of the choices of {model._meta.label}.{field.name}.",
                    hint="Use the stored values: " + ", ".join(repr(c) for c in choices) + ".",
                    id="talonone.E028",
                )
            )
    return found


@checks.register("talonone")
def check_adapter(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Validate ``TALONONE["ADAPTER"]``: it must import and subclass ShopAdapter."""
    from django.utils.module_loading import import_string

    from .adapters import ShopAdapter

    raw = _talonone_dict()
    if raw is None:
        return []
    path = raw.get("ADAPTER", DEFAULTS["ADAPTER"])
    hint = (
        'Set TALONONE["ADAPTER"] to the dotted path of your ShopAdapter subclass, e.g. '
        '"shop.talonone.ShopAdapter", or leave it out to use the default adapter.'
    )
    if isinstance(path, type):
        cls: Any = path
    else:
        try:
            cls = import_string(str(path))
        except Exception as exc:  # a module that fails to import may raise anything
            return [
                checks.Error(
                    f'TALONONE["ADAPTER"] = {path!r} cannot be imported: '
                    f"{type(exc).__name__}: {exc}",
                    hint=hint,
                    id="talonone.E024",
                )
            ]
    if not (isinstance(cls, type) and issubclass(cls, ShopAdapter)):
        return [
            checks.Error(
                f'TALONONE["ADAPTER"] = {path!r} is not a subclass of '
                "django_talonone.adapters.ShopAdapter.",
                hint=hint,
                id="talonone.E025",
            )
        ]
    return []


def _talonone_dict() -> dict[str, Any] | None:
    """The TALONONE dict, or None when it is missing or malformed (E001/E002 report that)."""
    from django.conf import settings as django_settings

    raw = getattr(django_settings, "TALONONE", None)
    return raw if isinstance(raw, dict) else None


# ---- the push pipeline (talonone.E030 - E039) -------------------------------------------------

DISPATCH_MODES = ("inline", "celery")
#: responseContent values UpdateCustomerSessionV2 accepts (Talon.One's OpenAPI file).
SESSION_RESPONSE_CONTENT = tuple(sorted(response_content_values("update_customer_session_v2")))


@checks.register("talonone")
def check_pipeline(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Validate the push pipeline keys: dispatch, retries, rate limit and timeouts."""
    raw = _talonone_dict()
    if raw is None:
        return []  # E001 / E002 say so

    def get(name: str) -> Any:
        return raw.get(name, DEFAULTS[name])

    return [
        *_check_dispatch(get("DISPATCH"), get("TASK_OPTIONS")),
        *_check_retries(get("MAX_ATTEMPTS"), get("RETRY_BASE_DELAY"), get("RETRY_MAX_DELAY")),
        *_check_rate_limit(get("RATE_LIMIT")),
        *_check_timeouts(get("EVALUATE_TIMEOUT"), get("IN_FLIGHT_TIMEOUT"), get("TIMEOUT")),
        *_check_response_content(get("RESPONSE_CONTENT")),
        *_check_response_content(
            get("EVALUATE_RESPONSE_CONTENT"),
            "EVALUATE_RESPONSE_CONTENT",
            "talonone.E041",
            optional=True,
        ),
        *_check_program_ids(get("LOYALTY_PROGRAM_IDS")),
        *_check_batches(get("BATCH_SIZE"), get("SEND_CONCURRENCY")),
        *_check_async_commit(get("ASYNC_COMMIT")),
    ]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_dispatch(mode: Any, options: Any) -> list[checks.CheckMessage]:
    import importlib.util

    found = []
    if mode not in DISPATCH_MODES:
        found.append(
            checks.Error(
                f'TALONONE["DISPATCH"] must be "inline" or "celery", got {mode!r}.',
                hint='"inline" pushes in-process after each commit (no Celery needed); "celery" '
                "sends the django_talonone.push task to your Celery workers.",
                id="talonone.E030",
            )
        )
    elif mode == "celery" and importlib.util.find_spec("celery") is None:
        found.append(
            checks.Error(
                'TALONONE["DISPATCH"] is "celery" but Celery is not installed.',
                hint='pip install "django-talonone[celery]", or set TALONONE["DISPATCH"] = '
                '"inline".',
                id="talonone.E031",
            )
        )
    if not isinstance(options, dict):
        found.append(
            checks.Error(
                f'TALONONE["TASK_OPTIONS"] must be a dict of apply_async options, '
                f"not {type(options).__name__}.",
                hint='For example {"queue": "talonone"}; leave it out for none.',
                id="talonone.E032",
            )
        )
    return found


def _check_retries(attempts: Any, base: Any, cap: Any) -> list[checks.CheckMessage]:
    found = []
    if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
        found.append(
            checks.Error(
                f'TALONONE["MAX_ATTEMPTS"] must be an integer of at least 1, got {attempts!r}.',
                hint="It is how many times a push is tried before it is dead-lettered; "
                "the default is 8.",
                id="talonone.E033",
            )
        )
    bad = [
        name
        for name, value in (("RETRY_BASE_DELAY", base), ("RETRY_MAX_DELAY", cap))
        if not _is_number(value) or value <= 0
    ]
    for name in bad:
        value = base if name == "RETRY_BASE_DELAY" else cap
        found.append(
            checks.Error(
                f'TALONONE["{name}"] must be a positive number of seconds, got {value!r}.',
                hint="The defaults are RETRY_BASE_DELAY = 2 and RETRY_MAX_DELAY = 600.",
                id="talonone.E034",
            )
        )
    if not bad and base > cap:
        found.append(
            checks.Error(
                f'TALONONE["RETRY_BASE_DELAY"] ({base}) is larger than '
                f'TALONONE["RETRY_MAX_DELAY"] ({cap}).',
                hint="Retry delays grow from the base delay up to the maximum; make base <= max.",
                id="talonone.E034",
            )
        )
    return found


def _check_rate_limit(rate: Any) -> list[checks.CheckMessage]:
    if rate is None or (_is_number(rate) and rate > 0):
        return []
    return [
        checks.Error(
            f'TALONONE["RATE_LIMIT"] must be None or a positive number of requests per second, '
            f"got {rate!r}.",
            hint="Give each process its share of your account's limit, e.g. 100 / 4 for four "
            "workers; None turns the limit off.",
            id="talonone.E035",
        )
    ]


def _check_timeouts(evaluate: Any, in_flight: Any, timeout: Any) -> list[checks.CheckMessage]:
    found = []
    if not _is_number(evaluate) or not 0 < evaluate <= 10:
        found.append(
            checks.Error(
                f'TALONONE["EVALUATE_TIMEOUT"] must be a number of seconds above 0 and at most '
                f"10, got {evaluate!r}.",
                hint="evaluate_cart() waits this long on the cart page before it falls back to "
                "the last mirrored effects; the default is 2.",
                id="talonone.E036",
            )
        )
    pair = normalise_timeout(timeout)
    slowest = sum(pair) if isinstance(pair, tuple) and all(map(_is_number, pair)) else 0
    if not _is_number(in_flight) or in_flight <= 0:
        found.append(
            checks.Error(
                f'TALONONE["IN_FLIGHT_TIMEOUT"] must be a positive number of seconds, '
                f"got {in_flight!r}.",
                hint="The sweep takes back pushes in flight for longer than this; default 300.",
                id="talonone.E037",
            )
        )
    elif in_flight <= slowest:
        found.append(
            checks.Error(
                f'TALONONE["IN_FLIGHT_TIMEOUT"] ({in_flight}) must be longer than a request can '
                f'take (TALONONE["TIMEOUT"], {slowest} s in all).',
                hint="Otherwise the sweep takes back pushes that are still being sent.",
                id="talonone.E037",
            )
        )
    return found


def _check_response_content(
    value: Any,
    name: str = "RESPONSE_CONTENT",
    check_id: str = "talonone.E038",
    *,
    optional: bool = False,
) -> list[checks.CheckMessage]:
    """A list of responseContent values (``optional``: or None, for "not set")."""
    if value is None and optional:
        return []
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        unknown = [v for v in value if v not in SESSION_RESPONSE_CONTENT]
        if not unknown:
            return []
        problem = f"has unknown values: {', '.join(map(repr, unknown))}"
    else:
        problem = f"must be a list of strings, not {type(value).__name__}"
    return [
        checks.Error(
            f'TALONONE["{name}"] {problem}.',
            hint="Valid values: " + ", ".join(SESSION_RESPONSE_CONTENT) + ".",
            id=check_id,
        )
    ]


def _check_program_ids(value: Any) -> list[checks.CheckMessage]:
    ok = isinstance(value, (list, tuple)) and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
    )
    if ok:
        return []
    return [
        checks.Error(
            f'TALONONE["LOYALTY_PROGRAM_IDS"] must be a list of positive integers, got {value!r}.',
            hint="Use the numeric ids of your loyalty programs (Talon.One: Loyalty > program "
            "settings), or leave it out.",
            id="talonone.E039",
        )
    ]


def _check_async_commit(value: Any) -> list[checks.CheckMessage]:
    if isinstance(value, bool):
        return []
    return [
        checks.Error(
            f'TALONONE["ASYNC_COMMIT"] must be True or False, got {value!r}.',
            hint="True (the default) lets PostgreSQL commit the records of successful sends "
            "without waiting for the disk; False makes every commit wait. "
            "See docs/operations.md.",
            id="talonone.E042",
        )
    ]


def _check_batches(size: Any, width: Any) -> list[checks.CheckMessage]:
    found = []
    for name, value, most, hint in (
        ("BATCH_SIZE", size, 1000, "1 sends one key at a time; the default is 200."),
        (
            "SEND_CONCURRENCY",
            width,
            64,
            "It is how many requests one worker keeps in flight (for different keys); "
            "the default is 4.",
        ),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= most:
            found.append(
                checks.Error(
                    f'TALONONE["{name}"] must be an integer from 1 to {most}, got {value!r}.',
                    hint=hint,
                    id="talonone.E040",
                )
            )
    return found
