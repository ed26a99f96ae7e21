"""Seeded generator of schema-valid instances and of single-defect mutations.

Used by the differential tests: every instance generated here must be valid for
``jsonschema`` too (the tests assert it), and every mutation must be rejected by
both ``jsonschema`` and the router, with the code docs/ocppj.md documents for
the keyword that fails.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from typing import Any

# Characters that stress length counting (code points, not bytes or UTF-16
# units), JSON escaping and UTF-8 validation.
ALPHABET = "abcXYZ019 -_.:/\"\\\n\té€中😀"

Path = tuple[str | int, ...]


def resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = root["definitions"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _datetime(rng: random.Random) -> str:
    frac = rng.choice(["", ".5", ".123", ".123456"])
    zone = rng.choice(["Z", "+02:00", "-05:30"])
    return (f"{rng.randint(2000, 2099):04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            f"T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}{frac}{zone}")


def valid(node: dict[str, Any], root: dict[str, Any], rng: random.Random, *, draft6: bool,
          optional: float = 0.5, extras: bool = False, spread: int = 2, depth: int = 0) -> Any:
    """A random instance of ``node`` that JSON Schema accepts.

    ``optional``: probability of including each optional property; ``spread``:
    arrays get up to ``minItems + spread`` items (at least one when ``spread`` is 0).
    """
    node = resolve(node, root)
    typ = node.get("type")
    if typ is None:
        return rng.choice(["text", 7, 2.5, True, [1, "a"], {"k": [None]}])
    if typ == "object":
        props = node.get("properties", {})
        required = set(node.get("required", ()))
        out: dict[str, Any] = {}
        for name, sub in props.items():
            if name in required or (depth < 6 and rng.random() < optional):
                out[name] = valid(sub, root, rng, draft6=draft6, optional=optional, extras=extras,
                                  spread=spread, depth=depth + 1)
        if extras and node.get("additionalProperties", True) is not False:
            out["vendorExtension"] = {"nested": [1, 2.5, "x"]}
        return out
    if typ == "array":
        low = node.get("minItems", 0)
        if spread == 0:
            n = max(low, 1) if depth < 6 else low
        else:
            high = min(node.get("maxItems", low + spread), low + spread)
            n = rng.randint(low, max(low, high)) if depth < 6 else low
        return [valid(node["items"], root, rng, draft6=draft6, optional=optional, extras=extras,
                      spread=spread, depth=depth + 1) for _ in range(n)]
    if typ == "string":
        if "enum" in node:
            return rng.choice(node["enum"])
        if node.get("format") == "date-time":
            return _datetime(rng)
        limit = node.get("maxLength", 30)
        length = rng.choice([0, 1, limit, rng.randint(0, limit)]) if limit <= 60 else rng.randint(0, 60)
        return "".join(rng.choice(ALPHABET) for _ in range(length))
    if typ == "integer":
        high = node.get("maximum", node.get("minimum", -1000) + 5000)
        low = node.get("minimum", high - 5000)
        value = rng.choice([int(low), int(high), rng.randint(int(low), int(high))])
        if draft6 and rng.random() < 0.1:
            return float(value)  # draft-06: 3.0 is an integer
        return value
    if typ == "number":
        high = node.get("maximum", node.get("minimum", -1000.0) + 5000.0)
        low = node.get("minimum", high - 5000.0)
        if "multipleOf" in node:
            step = node["multipleOf"]
            k = rng.randint(int(low / step) + 1, int(high / step) - 1)
            return round(k * step, 1)
        value = rng.choice([low, high, round(rng.uniform(low, high), rng.randint(0, 6)), 5])
        return value if low <= value <= high else low
    if typ == "boolean":
        return rng.random() < 0.5
    raise AssertionError(f"unexpected type {typ}")


def _wrong_type(typ: str) -> Any:
    return {"string": 12345, "integer": "1", "number": "1.5", "boolean": "true",
            "object": "an object", "array": {"not": "an array"}}[typ]


def mutations(node: dict[str, Any], root: dict[str, Any], value: Any,
              path: Path = ()) -> Iterator[tuple[str, Path, Any]]:
    """(kind, path, replacement) for single-defect mutations of ``value``.

    The replacement ``DROP`` removes the key at ``path``.
    """
    node = resolve(node, root)
    typ = node.get("type")
    if typ is not None and path:
        yield "type", path, _wrong_type(typ)
    if typ == "object" and isinstance(value, dict):
        props = node.get("properties", {})
        for name in node.get("required", ()):
            if name in value:
                yield "required", (*path, name), DROP
        if node.get("additionalProperties", True) is False:
            yield "additionalProperties", (*path, "zzUnknownProperty"), 1
        for name, sub in props.items():
            if name in value:
                yield from mutations(sub, root, value[name], (*path, name))
    elif typ == "array" and isinstance(value, list):
        if node.get("minItems", 0) >= 1:
            yield "minItems", path, []
        if "maxItems" in node and value:
            yield "maxItems", path, [value[0]] * (node["maxItems"] + 1)
        for i, item in enumerate(value):
            yield from mutations(node["items"], root, item, (*path, i))
    elif typ == "string":
        if "enum" in node:
            yield "enum", path, "NotAnAllowedValue"
        elif "maxLength" in node:
            yield "maxLength", path, "é" * (node["maxLength"] + 1)
    elif typ in ("integer", "number"):
        if "minimum" in node:
            yield "minimum", path, node["minimum"] - 1
        if "maximum" in node:
            yield "maximum", path, node["maximum"] + 1
        if "multipleOf" in node:
            yield "multipleOf", path, 0.05


class _Drop:
    def __repr__(self) -> str:
        return "DROP"


DROP: Any = _Drop()


def apply(value: Any, path: Path, replacement: Any) -> Any:
    """A deep copy of ``value`` with ``path`` replaced (or dropped)."""
    out = copy.deepcopy(value)
    target = out
    for key in path[:-1]:
        target = target[key]
    if replacement is DROP:
        del target[path[-1]]
    else:
        target[path[-1]] = replacement
    return out
