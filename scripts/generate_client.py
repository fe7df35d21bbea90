"""Generate the client's wire tables from the shared API reference.

Reads ``shared/reference/talonone-integration-api.md`` (models: field, type, required) and the
OpenAPI path files under ``shared/reference/openapi/integration-api/paths`` (wire names of query
parameters, how arrays are encoded, success status codes), and writes three modules:

* ``django_talonone/client/schema.py``     - MODELS and OPERATIONS as plain data (used by the
  client, the sandbox's request validation and the wire-check test);
* ``django_talonone/client/types.py``      - one ``TypedDict`` per model;
* ``django_talonone/client/operations.py`` - one method per operation, mixed into
  ``IntegrationClient``.

Run ``python scripts/generate_client.py [path/to/shared]`` after the reference changes; the
output is committed so that installing the package never needs the reference.
"""

from __future__ import annotations

import keyword
import pprint
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "django_talonone" / "client"

# The deprecated V1 event call is absent from the OpenAPI files and from SDK 26.2; the reference
# gives its shape in prose.
TRACK_EVENT_V1 = {
    "response_content": [],
    "name": "track_event",
    "title": "TrackEvent",
    "method": "POST",
    "path": "/v1/events",
    "path_params": [],
    "query": [("dry", "dry", "bool", True)],
    "body": "NewEvent",
    "response": "IntegrationState",
    "success": [201],
    "deprecated": True,
    "summary": "Track an event (V1). Deprecated: use track_event_v2.",
}
EXTRA_MODELS = {
    "NewEvent": {
        "profileId": ("str", False),
        "storeIntegrationId": ("str", False),
        "type": ("str", True),
        "attributes": ("dict[str, Any]", False),
        "sessionId": ("str", True),
    },
    "IntegrationState": {
        "session": ("dict[str, Any]", False),
        "profile": ("dict[str, Any]", False),
        "event": ("Event", False),
        "loyalty": ("Loyalty", False),
        "coupon": ("dict[str, Any]", False),
    },
    # Not spelled out in the reference; the OpenAPI answer of /v1/best_prior_price.
    "BestPriorPrice": {
        "id": ("int", True),
        "sku": ("str", True),
        "observedAt": ("datetime", True),
        "contextIds": ("list[str]", True),
        "contextId": ("str", False),  # deprecated in favour of contextIds
        "price": ("number", True),
        "metadata": ("dict[str, Any]", True),
        "target": ("dict[str, Any]", True),
    },
    # Request bodies the reference lists without a model.
    "UpdateAudienceCustomersAttributesRequest": {},
}
# Where the reference and the (newer) OpenAPI files disagree on a model, the OpenAPI files win.
MODEL_OVERRIDES = {
    # OpenAPI requires timeframeEndDateType (and no longer strictEndDate).
    "BestPriorPriceRequest": {
        "skus": ("list[str]", True),
        "timeframeEndDate": ("datetime", True),
        "timeframe": ("str", True),
        "timeframeEndDateType": ("str", True),
        "strictEndDate": ("bool", False),
        "target": ("BestPriorTarget", False),
    },
}
BODY_OVERRIDES = {
    # The reference lists no body; the OpenAPI file takes a free-form attribute map.
    "UpdateAudienceCustomersAttributes": "dict[str, Any]",
}
# Path-level id types from the OpenAPI files (int or str).
PY_TYPES = {
    "str": "str",
    "int": "int",
    "number": "float",
    "bool": "bool",
    "datetime": "str",
    "UUID": "str",
    "Any": "Any",
}


def main(shared: Path) -> None:
    ref = (shared / "reference" / "talonone-integration-api.md").read_text()
    models = parse_models(ref)
    models.update({k: v for k, v in EXTRA_MODELS.items() if k not in models})
    models.update(MODEL_OVERRIDES)
    ops = parse_operations(ref, shared / "reference" / "openapi" / "integration-api" / "paths")
    ops.append(TRACK_EVENT_V1)
    ops.sort(key=lambda o: o["name"])
    effects = {
        name[0].lower() + name[1 : -len("EffectProps")]: name
        for name in models
        if name.endswith("EffectProps")
    }
    # The props model is CustomEffectProps, but the wire name of the effect is customEffect.
    effects["customEffect"] = effects.pop("custom")
    write_schema(models, ops, effects)
    write_types(models)
    write_operations(ops)
    _format([PKG / "schema.py", PKG / "types.py", PKG / "operations.py"])
    print(f"{len(models)} models, {len(ops)} operations, {len(effects)} effect types")


def _format(paths: list[Path]) -> None:
    """Run ruff's formatter on the output when ruff is installed, so the files stay lint-clean."""
    import shutil
    import subprocess

    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if Path(ruff).exists():
        subprocess.run([ruff, "format", "--quiet", *map(str, paths)], check=True)


def parse_models(ref: str) -> dict[str, dict[str, tuple[str, bool]]]:
    """Every ``### Name`` section of the reference followed by a field table."""
    models: dict[str, dict[str, tuple[str, bool]]] = {}
    body = ref.split("## Models", 1)[1]
    for section in re.split(r"^### ", body, flags=re.M)[1:]:
        name, _, rest = section.partition("\n")
        fields: dict[str, tuple[str, bool]] = {}
        for line in rest.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) < 3 or cells[0] in ("field", "") or set(cells[0]) <= {"-"}:
                continue
            typ = cells[1]
            if typ.startswith("list[Annotated[str]"):
                typ = "list[str]"
            fields[cells[0]] = (typ, cells[2] == "yes")
        models[name.strip()] = fields
    return models


def parse_operations(ref: str, paths_dir: Path) -> list[dict]:
    table = ref.split("## Operations", 1)[1].split("## Models", 1)[0]
    rows: dict[str, tuple[str, str, str]] = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 5 or " /" not in cells[1]:
            continue
        title = cells[0] if cells[0][0].isupper() else to_pascal(cells[0])
        rows[title] = (cells[1], cells[2], cells[4])
    openapi = {}
    for f in sorted(paths_dir.glob("*.yaml")):
        doc = yaml.safe_load(f.read_text())
        path = f.read_text().splitlines()[0].split("path: ", 1)[1].strip()
        for method, op in doc.items():
            openapi[op["operationId"].lower()] = (method.upper(), path, op)
    ops = []
    for title, (method_path, body, response) in rows.items():
        method, path = method_path.split(" ", 1)
        o_method, o_path, op = openapi[title.lower()]
        assert (o_method, o_path) == (method, path), (title, method, path)
        path_params, query = [], []
        for p in op.get("parameters", []):
            schema = p.get("schema", {})
            typ = {"integer": "int", "boolean": "bool", "number": "number"}.get(
                schema.get("type"), "str"
            )
            if p["in"] == "path":
                path_params.append((p["name"], to_snake(p["name"]), typ))
            elif p["in"] == "query":
                if schema.get("type") == "array":
                    typ = "list[str]"
                elif schema.get("format") == "date-time":
                    typ = "datetime"
                query.append((to_snake(p["name"]), p["name"], typ, p.get("explode", True)))
        path_params.sort(key=lambda p: path.index("{" + p[0] + "}"))
        success = sorted(int(c) for c in op["responses"] if c.startswith("2"))
        response = response.strip()
        if response.startswith("List["):
            response = "list[" + response[5:]
        ops.append(
            {
                "name": to_snake(title),
                "title": title,
                "method": method,
                "path": path,
                "path_params": path_params,
                "query": query,
                "body": BODY_OVERRIDES.get(title, body or None),
                "response": None if response in ("None", "") else response,
                "success": success,
                "deprecated": bool(op.get("deprecated")),
                # What the body's responseContent may ask for (empty: no such field).
                "response_content": _response_content(op),
                "summary": op.get("summary", title).strip().rstrip(".") + ".",
            }
        )
    return ops


def _response_content(op: dict) -> list[str]:
    """The enum of ``responseContent`` items in an operation's request body, if it has one."""

    def find(node: object) -> list[str] | None:
        if isinstance(node, dict):
            props = node.get("properties")
            if isinstance(props, dict) and "responseContent" in props:
                return props["responseContent"].get("items", {}).get("enum")
            node = list(node.values())
        if isinstance(node, list):
            for child in node:
                found = find(child)
                if found:
                    return found
        return None

    return find(op.get("requestBody", {})) or []


def to_snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def to_pascal(snake: str) -> str:
    return "".join(part.capitalize() for part in snake.split("_"))


def py_type(typ: str, models: dict | None = None) -> str:
    """A reference type (``list[Effect]``, ``dict[str, Any]``, ``datetime``) as a Python hint."""
    typ = typ.strip()
    m = re.fullmatch(r"list\[(.+)\]", typ)
    if m:
        return f"list[{py_type(m.group(1), models)}]"
    m = re.fullmatch(r"dict\[str, (.+)\]", typ)
    if m:
        return f"dict[str, {py_type(m.group(1), models)}]"
    if typ in PY_TYPES:
        return PY_TYPES[typ]
    if models is not None and typ not in models:
        return "dict[str, Any]"
    return typ


HEADER = '"""{doc}\n\nGenerated by scripts/generate_client.py from the shared API reference; do not edit.\n"""\n'


def write_schema(models: dict, ops: list[dict], effects: dict) -> None:
    out = [
        HEADER.format(doc="Wire tables of the Integration API: models, operations, effect types."),
        "from __future__ import annotations\n",
        "from typing import Any\n",
        "# model name -> field name -> (reference type, required)",
        "MODELS: dict[str, dict[str, tuple[str, bool]]] = " + pprint.pformat(models, width=100),
        "",
        "# One entry per operation: path params (wire, python, type) in path order, query params",
        "# (python, wire, type, explode) as the OpenAPI files spell them.",
        "OPERATIONS: list[dict[str, Any]] = " + pprint.pformat(ops, width=100, sort_dicts=False),
        "",
        "",
        "def response_content_values(operation: str) -> frozenset[str]:",
        '    """What ``responseContent`` may ask for in the request body of ``operation``."""',
        "    for op in OPERATIONS:",
        '        if op["name"] == operation:',
        '            return frozenset(op["response_content"])',
        "    raise KeyError(operation)",
        "",
        "",
        "# effectType -> the model of its props",
        "EFFECT_PROPS: dict[str, str] = " + pprint.pformat(effects, width=100),
        "",
    ]
    (PKG / "schema.py").write_text("\n".join(out))


def write_types(models: dict) -> None:
    out = [
        HEADER.format(doc="TypedDicts of every request and response model, keys as on the wire."),
        # No ``from __future__ import annotations`` here: TypedDict only sees ``Required`` (and
        # so fills ``__required_keys__``) when it is a real object, not part of a string. The
        # types inside are quoted instead, as models refer to models defined further down.
        # Python 3.10's typing.TypedDict ignores Required: take both from typing_extensions.
        "import sys",
        "from typing import Any\n",
        "if sys.version_info >= (3, 11):",
        "    from typing import Required, TypedDict",
        "else:  # pragma: no cover",
        "    from typing_extensions import Required, TypedDict\n",
        "__all__ = " + pprint.pformat(sorted(models), width=100),
        "",
    ]
    for name, fields in models.items():
        items = []
        for field, (typ, required) in fields.items():
            hint = f'"{py_type(typ, models)}"'
            if required:
                hint = f"Required[{hint}]"
            items.append((field, hint))
        if any(keyword.iskeyword(f) or not f.isidentifier() for f, _ in items):
            body = ", ".join(f'"{f}": {h}' for f, h in items)
            out.append(f'{name} = TypedDict("{name}", {{{body}}}, total=False)\n')
            continue
        out.append(f"\nclass {name}(TypedDict, total=False):")
        if not items:
            out.append("    pass")
        for field, hint in items:
            out.append(f"    {field}: {hint}")
        out.append("")
    (PKG / "types.py").write_text("\n".join(out) + "\n")


def write_operations(ops: list[dict]) -> None:
    out = [
        HEADER.format(
            doc="One method per Integration API operation (mixed into IntegrationClient)."
        ),
        "from __future__ import annotations\n",
        "import datetime",
        "from collections.abc import Sequence",
        "from typing import TYPE_CHECKING, Any\n",
        "from .schema import OPERATIONS\n",
        "if TYPE_CHECKING:",
        "    from . import types as t\n",
        "_OPS = {op['name']: op for op in OPERATIONS}\n\n",
        "class OperationsMixin:",
        '    """The Integration API, one method per operation, named as the official SDK names them."""\n',
        "    def _call(self, op: dict[str, Any], path_args: tuple[Any, ...], body: Any, query: dict[str, Any]) -> Any:",
        "        raise NotImplementedError\n",
    ]
    qtypes = {
        "bool": "bool",
        "int": "int",
        "str": "str",
        "number": "float",
        "datetime": "datetime.datetime | str",
        "list[str]": "Sequence[str]",
    }
    for op in ops:
        args = ["self"]
        for _wire, py, typ in op["path_params"]:
            args.append(f"{py}: {'int' if typ == 'int' else 'str'}")
        if op["body"]:
            body_t = op["body"]
            hint = body_t if body_t.startswith("dict") else f"t.{body_t}"
            args.append(f"body: {hint}")
        if op["query"]:
            args.append("*")
            for py, _wire, typ, _explode in op["query"]:
                args.append(f"{py}: {qtypes[typ]} | None = None")
        resp = op["response"]
        if resp is None:
            ret = "None"
        elif resp.startswith("list["):
            ret = f"list[t.{resp[5:-1]}]"
        else:
            ret = f"t.{resp}"
        if 204 in op["success"] and resp is not None:
            ret += " | None"
        sig = f"    def {op['name']}(" + ", ".join(args) + f") -> {ret}:"
        doc = f"{op['summary']}\n\n        ``{op['method']} {op['path']}``"
        if 204 in op["success"] and resp is not None:
            doc += ' (None when the API answers 204, e.g. with ``silent`` left at ``"yes"``)'
        if op["deprecated"]:
            doc += "\n\n        Deprecated by Talon.One; calling it emits a DeprecationWarning"
        out.append(sig)
        out.append(f'        """{doc}."""')
        path_args = ", ".join(p[1] for p in op["path_params"])
        path_args = f"({path_args},)" if op["path_params"] else "()"
        query = "{" + ", ".join(f'"{p[0]}": {p[0]}' for p in op["query"]) + "}"
        body = "body" if op["body"] else "None"
        out.append(
            f'        return self._call(_OPS["{op["name"]}"], {path_args}, {body}, {query})\n'
        )
    (PKG / "operations.py").write_text("\n".join(out))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared")
