"""Check a decoded API answer against the reference's models, recursively.

The tables come from ``django_talonone.client.schema`` (``MODELS``: model → field → (type,
required); ``EFFECT_PROPS``: effectType → props model), which scripts/generate_client.py generates
from ``shared/reference/talonone-integration-api.md``. Every required field must be present and not
null; every field present must have the JSON type its reference type says; an Effect's ``props``
are checked against the model of its ``effectType``. Fields the reference does not list are allowed
(the API adds fields over time; the newer OpenAPI files have some).
"""

from __future__ import annotations

import datetime
import re
from typing import Any

from django_talonone.client.schema import EFFECT_PROPS, MODELS

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def check(value: Any, type_name: str, path: str = "$") -> list[str]:
    """Problems of ``value`` as a ``type_name`` of the reference (empty when it conforms)."""
    problems: list[str] = []
    _check(value, type_name.strip(), path, problems)
    return problems


def check_effect_types(effects: list[dict[str, Any]]) -> list[str]:
    """Effect types the reference does not know (the checker skips their props)."""
    return [e["effectType"] for e in effects if e.get("effectType") not in EFFECT_PROPS]


def _check(value: Any, type_name: str, path: str, problems: list[str]) -> None:
    if type_name == "Any":
        return
    if type_name.startswith("list[") and type_name.endswith("]"):
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list, got {_kind(value)}")
            return
        inner = type_name[5:-1]
        for index, item in enumerate(value):
            _check(item, inner, f"{path}[{index}]", problems)
        return
    if type_name.startswith("dict[") and type_name.endswith("]"):
        if not isinstance(value, dict):
            problems.append(f"{path}: expected an object, got {_kind(value)}")
            return
        inner = type_name[5:-1].split(",", 1)[1].strip()
        for key, item in value.items():
            if not isinstance(key, str):
                problems.append(f"{path}: object key {key!r} is not a string")
            _check(item, inner, f"{path}.{key}", problems)
        return
    scalar = _SCALARS.get(type_name)
    if scalar is not None:
        if not scalar(value):
            problems.append(f"{path}: expected {type_name}, got {_kind(value)}")
        return
    model = MODELS.get(type_name)
    if model is None:
        problems.append(f"{path}: the reference has no type {type_name!r}")
        return
    if not isinstance(value, dict):
        problems.append(f"{path}: expected a {type_name} object, got {_kind(value)}")
        return
    for field, (field_type, required) in model.items():
        if field not in value or value[field] is None:
            if required:
                problems.append(f"{path}.{field}: required by {type_name} but missing")
            continue
        _check(value[field], field_type, f"{path}.{field}", problems)
    if type_name == "Effect" and "props" in value:
        props_model = EFFECT_PROPS.get(value.get("effectType"))
        if props_model is not None:
            _check(value["props"], props_model, f"{path}.props", problems)


def _is_datetime(value: Any) -> bool:
    if not isinstance(value, str) or "T" not in value:
        return False
    text = value[:-1] + "+00:00" if value.endswith("Z") else value
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        return False
    return parsed.tzinfo is not None


_SCALARS = {
    "str": lambda v: isinstance(v, str),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "datetime": _is_datetime,
    "UUID": lambda v: isinstance(v, str) and bool(_UUID.match(v)),
}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return type(value).__name__
