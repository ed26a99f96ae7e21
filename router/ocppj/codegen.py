"""Generate the msgspec validators in ``router/ocppj/_generated/`` from the OCA schemas.

Every schema in ``router/ocppj/schemas/<version>/`` becomes a ``msgspec.Struct``
(``BootNotificationRequest``, ``BootNotificationResponse``, …); nested objects
and ``$ref`` definitions become further Structs, string enums become
``Literal`` aliases, and the JSON Schema constraints become ``msgspec.Meta``
(``maxLength`` → ``max_length``, ``minimum`` → ``ge`` …). Constraints msgspec
cannot express are generated as ``__post_init__`` checks (``multipleOf``) or as
tables read by the post-decode checks (``format: date-time`` in strict mode).

The generator knows every keyword that occurs in the shipped schemas and fails
on any other one: a refreshed schema that uses a new keyword must be handled
here before it can silently weaken validation.

The output is committed; ``tests/ocppj/test_codegen.py`` regenerates into a
temporary directory and fails if the committed files differ.

Usage: ``python -m router.ocppj.codegen [--out DIR]``
"""

from __future__ import annotations

import argparse
import json
import keyword
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMAS = Path(__file__).resolve().parent / "schemas"
OUT = Path(__file__).resolve().parent / "_generated"

#: Folder under ``schemas/`` for each WebSocket subprotocol name.
VERSION_DIRS = {"ocpp1.6": "v16", "ocpp2.0.1": "v201", "ocpp2.1": "v21"}

# Keywords without effect on validation (annotations, vendor noise such as the
# OCA generator's ``javaType``). ``additionalItems`` only applies when
# ``items`` is an array of schemas (JSON Schema draft-04 §5.3.1); it never is
# in these schemas, which ``_check_keywords`` asserts.
ANNOTATIONS = frozenset(
    {"$schema", "$id", "id", "title", "description", "comment", "javaType", "default", "additionalItems"}
)
VALIDATION = frozenset(
    {
        "type", "properties", "additionalProperties", "required", "maxLength", "enum",
        "$ref", "definitions", "items", "minItems", "maxItems", "minimum", "maximum",
        "multipleOf", "format",
    }
)
KNOWN_FORMATS = frozenset({"date-time", "uri"})

# Strict-mode table kinds (see router/ocppj/_runtime.py).
DT, DT_LIST, NESTED, NESTED_LIST = 0, 1, 2, 3


class SchemaError(Exception):
    """A schema uses something the generator does not handle."""


@dataclass
class _Type:
    """A generated type expression and what strict mode must look at below it."""

    expr: str
    strict_kind: int | None = None  # DT, DT_LIST, NESTED, NESTED_LIST or None


@dataclass
class _Module:
    version: str
    lines: list[str] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)  # name -> fingerprint
    by_fp: dict[str, str] = field(default_factory=dict)  # fingerprint -> name
    strict: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    uses_multiple_of: bool = False


def _fingerprint(node: Any, root: dict[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """The validation-relevant content of ``node`` with ``$ref`` inlined."""
    if isinstance(node, dict):
        if "$ref" in node:
            ref = node["$ref"]
            if ref in seen:
                raise SchemaError(f"recursive $ref {ref}")
            return _fingerprint(_resolve(ref, root), root, (*seen, ref))
        return {
            k: (
                {p: _fingerprint(v, root, seen) for p, v in sorted(node[k].items())}
                if k == "properties"
                else _fingerprint(v, root, seen)
            )
            for k, v in sorted(node.items())
            if k not in ANNOTATIONS and k != "definitions"
        }
    if isinstance(node, list):
        return [_fingerprint(v, root, seen) for v in node]
    return node


def _resolve(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    if not ref.startswith("#/definitions/"):
        raise SchemaError(f"unsupported $ref {ref!r}")
    target = root.get("definitions", {}).get(ref[len("#/definitions/"):])
    if not isinstance(target, dict):
        raise SchemaError(f"unresolved $ref {ref!r}")
    return target


def _check_keywords(node: dict[str, Any], where: str) -> None:
    unknown = set(node) - ANNOTATIONS - VALIDATION
    if unknown:
        raise SchemaError(f"{where}: unsupported keyword(s) {sorted(unknown)}")
    if "additionalItems" in node and not isinstance(node.get("items"), dict):
        raise SchemaError(f"{where}: additionalItems with a non-schema items")
    if "format" in node and node["format"] not in KNOWN_FORMATS:
        raise SchemaError(f"{where}: unsupported format {node['format']!r}")
    ap = node.get("additionalProperties", True)
    if not isinstance(ap, bool):
        raise SchemaError(f"{where}: additionalProperties must be a boolean here")
    if isinstance(node.get("type"), list):
        raise SchemaError(f"{where}: type arrays are not supported")


def _pascal(name: str) -> str:
    return name[:1].upper() + name[1:]


class _Generator:
    def __init__(self, version: str) -> None:
        self.mod = _Module(version)
        self.root: dict[str, Any] = {}
        self.top = ""

    def _claim(self, wanted: str, fp: str) -> tuple[str, bool]:
        """Name for a type with fingerprint ``fp``; True when it must still be emitted."""
        if fp in self.mod.by_fp:
            return self.mod.by_fp[fp], False
        name = wanted
        if name in self.mod.names:
            name = f"{self.top}{wanted}"
            n = 2
            while name in self.mod.names:
                name, n = f"{self.top}{wanted}{n}", n + 1
        self.mod.names[name] = fp
        self.mod.by_fp[fp] = name
        return name, True

    def type_of(self, node: dict[str, Any], name_hint: str, where: str) -> _Type:
        _check_keywords(node, where)
        if "$ref" in node:
            # Draft-04/06: siblings of "$ref" are ignored (draft-04 core §7 /
            # draft-06 core §8), so only the target counts.
            ref = node["$ref"]
            return self.type_of(_resolve(ref, self.root), ref.rsplit("/", 1)[1], f"{where}->{ref}")
        typ = node.get("type")
        if typ is None:
            extra = set(node) & (VALIDATION - {"definitions"})
            if extra:
                raise SchemaError(f"{where}: constraints {sorted(extra)} without a type")
            return _Type("Any")
        if typ == "object":
            return self.struct(node, name_hint, where)
        if typ == "array":
            item = self.type_of(node["items"], name_hint, f"{where}[]") if "items" in node else _Type("Any")
            meta = []
            if "minItems" in node:
                meta.append(f"min_length={int(node['minItems'])}")
            if "maxItems" in node:
                meta.append(f"max_length={int(node['maxItems'])}")
            expr = f"list[{item.expr}]"
            if meta:
                expr = f"Annotated[{expr}, Meta({', '.join(meta)})]"
            kind = {DT: DT_LIST, NESTED: NESTED_LIST}.get(item.strict_kind) if item.strict_kind is not None else None
            if item.strict_kind in (DT_LIST, NESTED_LIST):
                raise SchemaError(f"{where}: nested arrays are not supported by strict mode tables")
            return _Type(expr, kind)
        if typ == "string":
            if "enum" in node:
                values = [v for v in node["enum"] if "maxLength" not in node or len(v) <= node["maxLength"]]
                literal = f"Literal[{', '.join(json.dumps(v) for v in values)}]"
                if name_hint.endswith("EnumType"):
                    fp = json.dumps(["enum", values])
                    alias, new = self._claim(name_hint, fp)
                    if new:
                        self.mod.lines.append(f"{alias} = {literal}\n\n\n")
                    return _Type(alias)
                return _Type(literal)
            meta = [f"max_length={int(node['maxLength'])}"] if "maxLength" in node else []
            expr = f"Annotated[str, Meta({', '.join(meta)})]" if meta else "str"
            return _Type(expr, DT if node.get("format") == "date-time" else None)
        if typ in ("integer", "number"):
            base = "int" if typ == "integer" else "float"
            meta = []
            for key, arg in (("minimum", "ge"), ("maximum", "le")):
                if key in node:
                    value = node[key]
                    meta.append(f"{arg}={int(value) if base == 'int' and float(value).is_integer() else value!r}")
            if "enum" in node:
                raise SchemaError(f"{where}: numeric enum")
            return _Type(f"Annotated[{base}, Meta({', '.join(meta)})]" if meta else base)
        if typ == "boolean":
            return _Type("bool")
        raise SchemaError(f"{where}: unsupported type {typ!r}")

    def struct(self, node: dict[str, Any], name_hint: str, where: str, *, top: bool = False) -> _Type:
        if top:
            # Every message gets its own class, even when two schemas are equal.
            if name_hint in self.mod.names:
                raise SchemaError(f"{where}: class name {name_hint} already used")
            name = name_hint
            self.mod.names[name] = ""
        else:
            fp = json.dumps(_fingerprint(node, self.root), sort_keys=True)
            name, new = self._claim(_pascal(name_hint), fp)
            if not new:
                return _Type(name, NESTED if name in self.mod.strict else None)
        props: dict[str, Any] = node.get("properties", {})
        required: list[str] = node.get("required", [])
        fields: list[str] = []
        post: list[str] = []
        strict: list[tuple[str, int]] = []
        for prop in sorted(props, key=lambda p: (p not in required, list(props).index(p))):
            if keyword.iskeyword(prop) or not prop.isidentifier() or prop.startswith("_"):
                raise SchemaError(f"{where}.{prop}: property name is not a Python identifier")
            sub = props[prop]
            t = self.type_of(sub, prop, f"{where}.{prop}")
            if prop in required:
                fields.append(f"    {prop}: {t.expr}")
            else:
                fields.append(f"    {prop}: {t.expr} | UnsetType = UNSET")
            if t.strict_kind is not None:
                strict.append((prop, t.strict_kind))
            target = _resolve(sub["$ref"], self.root) if "$ref" in sub else sub
            if "multipleOf" in target:
                self.mod.uses_multiple_of = True
                post.append(f"        check_multiple_of(self.{prop}, {str(target['multipleOf'])!r}, {prop!r})")
            if target.get("type") == "array" and "multipleOf" in target.get("items", {}):
                raise SchemaError(f"{where}.{prop}: multipleOf inside arrays is not supported")
        for req in required:
            if req not in props:
                # Required but not described: any JSON value satisfies it.
                fields.append(f"    {req}: Any")
        forbid = node.get("additionalProperties", True) is False
        opts = ", forbid_unknown_fields=True" if forbid else ""
        doc = (node.get("description") or "").strip().splitlines()
        lines = [f"class {name}(_Base{opts}):\n"]
        lines.append(f"    {json.dumps(doc[0].strip() if doc else name + ' (generated).')}\n\n")
        lines.extend(line + "\n" for line in fields)
        if post:
            lines.append("\n    def __post_init__(self) -> None:\n")
            lines.extend(line + "\n" for line in post)
        if not fields and not post:
            lines.append("    pass\n")
        lines.append("\n\n")
        self.mod.lines.extend(lines)
        if strict:
            self.mod.strict[name] = strict
        return _Type(name, NESTED if strict else None)


def _schema_files(version_dir: str) -> list[tuple[str, str, bool, Path]]:
    """(action, class name, is_response, path) for every schema of a version."""
    out = []
    for path in sorted((SCHEMAS / version_dir).glob("*.json")):
        stem = path.stem
        if stem.endswith("Response"):
            action, response = stem[: -len("Response")], True
        elif stem.endswith("Request"):
            action, response = stem[: -len("Request")], False
        else:
            action, response = stem, False
        out.append((action, action + ("Response" if response else "Request"), response, path))
    return out


HEADER = '''"""OCPP {proto} message types, generated from the OCA JSON schemas.

Generated by ``python -m router.ocppj.codegen`` from ``router/ocppj/schemas/{vdir}/``;
do not edit. Field names are the JSON property names; optional properties
default to ``msgspec.UNSET`` (absent), never ``None``.
"""

from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, Struct, UnsetType
{extra_import}

class _Base(Struct, kw_only=True, omit_defaults=True, gc=False):
    """Common configuration: keyword-only fields, absent optionals left out;
    not tracked by the garbage collector (decoded JSON holds no cycles)."""


'''


def generate(proto: str) -> str:
    """Return the source of the generated module for ``proto``.

    Args:
        proto: ``"ocpp1.6"``, ``"ocpp2.0.1"`` or ``"ocpp2.1"``.

    Raises:
        SchemaError: a schema uses a keyword, format or construct not handled here.
    """
    vdir = VERSION_DIRS[proto]
    gen = _Generator(proto)
    requests: dict[str, str] = {}
    responses: dict[str, str] = {}
    files: dict[str, str] = {}
    for action, cls, response, path in _schema_files(vdir):
        gen.root = json.loads(path.read_text(encoding="utf-8"))
        gen.top = cls
        for name, definition in sorted(gen.root.get("definitions", {}).items()):
            _check_keywords(definition, f"{path.name}#{name}")
        gen.struct(gen.root, cls, path.name, top=True)
        (responses if response else requests)[action] = cls
        files[f"{action}:{'response' if response else 'request'}"] = f"{vdir}/{path.name}"
    body = "".join(gen.mod.lines)
    extra = "\nfrom router.ocppj._runtime import check_multiple_of\n" if gen.mod.uses_multiple_of else ""
    out = [HEADER.format(proto=proto, vdir=vdir, extra_import=extra), body]
    out.append("#: action -> request type (CALL / SEND payload)\n")
    out.append("REQUESTS: dict[str, type[Struct]] = {\n")
    out.extend(f"    {a!r}: {c},\n" for a, c in sorted(requests.items()))
    out.append("}\n\n#: action -> response type (CALLRESULT payload)\n")
    out.append("RESPONSES: dict[str, type[Struct]] = {\n")
    out.extend(f"    {a!r}: {c},\n" for a, c in sorted(responses.items()))
    out.append("}\n\n#: 'action:request' / 'action:response' -> schema file under router/ocppj/schemas\n")
    out.append("SCHEMA_FILES: dict[str, str] = {\n")
    out.extend(f"    {k!r}: {v!r},\n" for k, v in sorted(files.items()))
    out.append("}\n\n#: strict mode: type -> ((field, kind), ...); kinds 0 date-time, 1 list of date-time,\n")
    out.append("#: 2 nested type, 3 list of nested types (only fields with a date-time below them)\n")
    out.append("DATETIME_FIELDS: dict[type[Struct], tuple[tuple[str, int], ...]] = {\n")
    for name, entries in sorted(gen.mod.strict.items()):
        out.append(f"    {name}: ({''.join(f'({f!r}, {k}), ' for f, k in entries)}),\n")
    out.append("}\n\n")
    names = sorted(set(gen.mod.names) | set(requests.values()) | set(responses.values()))
    out.append("__all__ = [\n")
    out.extend(f"    {n!r},\n" for n in names)
    out.append("]\n")
    return "".join(out)


def write_all(out_dir: Path) -> list[Path]:
    """Generate every version into ``out_dir``; return the files written.

    Raises:
        SchemaError: see ``generate``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    init = out_dir / "__init__.py"
    init.write_text('"""Generated msgspec types, one module per OCPP version (see codegen.py)."""\n')
    written.append(init)
    for proto, vdir in VERSION_DIRS.items():
        path = out_dir / f"{vdir}.py"
        path.write_text(generate(proto), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate router/ocppj/_generated from the schemas")
    parser.add_argument("--out", type=Path, default=OUT, help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    for path in write_all(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
