"""Build valid OCPP request instances from the ``ocpp`` package's JSON schemas.

Two deterministic instances per schema: ``minimal`` (required fields only) and
``full`` (every property), each checked with ``jsonschema`` before use, so a
handler sees both the sparsest and the richest valid request.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import ocpp

OCPP_DIR = Path(ocpp.__file__).parent
_DIRS = {"ocpp1.6": "v16", "ocpp2.0.1": "v201", "ocpp2.1": "v21"}
NOW = "2026-11-21T12:00:00.000Z"


@cache
def schema(proto: str, action: str, response: bool) -> dict[str, Any]:
    folder = OCPP_DIR / _DIRS[proto] / "schemas"
    if proto == "ocpp1.6":
        name = f"{action}Response.json" if response else f"{action}.json"
    else:
        name = f"{action}{'Response' if response else 'Request'}.json"
    data: dict[str, Any] = json.loads((folder / name).read_text())
    return data


def validator(proto: str, action: str, response: bool) -> jsonschema.protocols.Validator:
    root = schema(proto, action, response)
    cls = jsonschema.validators.validator_for(root)
    return cls(root, format_checker=cls.FORMAT_CHECKER)


def instance(proto: str, action: str, *, full: bool) -> dict[str, Any]:
    root = schema(proto, action, False)
    value = _build(root, root, full, depth=0)
    validator(proto, action, False).validate(value)
    assert isinstance(value, dict)
    return value


def _build(node: dict[str, Any], root: dict[str, Any], full: bool, depth: int) -> Any:
    if "$ref" in node:
        target: Any = root
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        return _build(target, root, full, depth)
    if "enum" in node:
        return node["enum"][0]
    kind = node.get("type")
    if kind == "object":
        props = node.get("properties", {})
        names = list(props) if full and depth < 6 else node.get("required", [])
        return {name: _build(props[name], root, full, depth + 1) for name in names
                if name != "customData"}
    if kind == "array":
        count = max(node.get("minItems", 0), 1 if full else 0)
        count = min(count, node.get("maxItems", count))
        return [_build(node["items"], root, full, depth + 1) for _ in range(count)]
    if kind == "string":
        if node.get("format") == "date-time":
            return NOW
        if node.get("format") == "uri":
            return "https://example.com/x"
        size = max(node.get("minLength", 0), 1)
        return "A" * min(size, node.get("maxLength", size))
    if kind in ("integer", "number"):
        value = node.get("minimum", min(1, node.get("maximum", 1)))
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return False
    if kind is None:  # untyped ("any JSON"), e.g. DataTransfer.data
        return "data"
    raise AssertionError(f"no instance for {node}")
