"""Table-driven conversion between OCPP-S body elements and JSON values.

One small loop over the generated schema facts (:mod:`router.soap._tables`):
an element's children are matched to its type's sequence by local name, each
simple value is checked and converted by its XML Schema base type
(``int``/``long`` → integer, ``decimal`` → number, ``boolean`` → true/false
from ``true``/``false``/``1``/``0``, ``dateTime`` → an RFC 3339 string, UTC
assumed when the charger gave no offset), lists follow ``maxOccurs``, and
maxLength/enumeration facets are enforced. Writing goes the other way and emits
the elements in the schema's sequence order (XML Schema requires it, JSON
objects have no order). Every error names the JSON path of the value.
"""

from __future__ import annotations

import math
import re
from typing import Any

from router.soap._tables import TABLES
from router.soap.errors import ProtocolViolation
from router.soap.xmlparse import Element

_INT = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
# xs:dateTime (XML Schema Part 2 §3.2.7); the offset is optional there.
_DATETIME = re.compile(
    r"-?[0-9]{4,}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"(?P<tz>[Zz]|[+-][0-9]{2}:[0-9]{2})?")
# Characters XML 1.0 §2.2 does not allow (a backend string with them cannot be sent).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_RANGES = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


def types_of(version: str, service: str) -> dict[str, Any]:
    """The type table of one service of one OCPP-S version."""
    return TABLES[version][service]["types"]  # type: ignore[no-any-return]


def _simple_from_text(types: dict[str, Any], tname: str, text: str, path: str) -> Any:
    spec = types.get(tname)
    base, max_len, enum = (spec[1], spec[2], spec[3]) if spec else (tname, 0, None)
    if base in ("int", "long"):
        t = text.strip()
        if not _INT.fullmatch(t):
            raise ProtocolViolation(f"{path}: {t[:40]!r} is not an integer")
        n = int(t)
        lo, hi = _RANGES[base]
        if not lo <= n <= hi:
            raise ProtocolViolation(f"{path}: {n} is out of range for xs:{base}")
        return n
    if base == "decimal":
        t = text.strip()
        if not _DECIMAL.fullmatch(t):
            raise ProtocolViolation(f"{path}: {t[:40]!r} is not a decimal")
        return float(t) if "." in t else int(t)
    if base == "boolean":
        t = text.strip()
        if t in ("true", "1"):
            return True
        if t in ("false", "0"):
            return False
        raise ProtocolViolation(f"{path}: {t[:40]!r} is not a boolean")
    if base == "dateTime":
        t = text.strip()
        m = _DATETIME.fullmatch(t)
        if m is None:
            raise ProtocolViolation(f"{path}: {t[:40]!r} is not an xs:dateTime")
        t = t.replace("t", "T").replace("z", "Z")
        # OCPP: all times are UTC; RFC 3339 needs the offset.
        return t if m.group("tz") else t + "Z"
    value = text.strip() if enum else text
    if enum and value not in enum:
        raise ProtocolViolation(f"{path}: {value[:40]!r} is not one of {', '.join(enum)}")
    if max_len and len(value) > max_len:
        raise ProtocolViolation(f"{path}: longer than {max_len} characters")
    return value


def from_element(types: dict[str, Any], tname: str, el: Element, path: str = "$") -> Any:
    """The JSON value of element ``el`` of type ``tname`` (validated).

    Raises:
        ProtocolViolation: a value breaks the type; the message names its path.
    """
    spec = types.get(tname)
    if spec is None or spec[0] == "simple":
        if el.children:
            raise ProtocolViolation(f"{path}: a simple value has child elements")
        return _simple_from_text(types, tname, el.text, path)
    if spec[0] == "text":
        if el.children:
            raise ProtocolViolation(f"{path}: a simple value has child elements")
        out: dict[str, Any] = {"value": _simple_from_text(types, spec[1], el.text, path)}
        for aname, atype, required in spec[2]:
            if aname in el.attrs:
                out[aname] = _simple_from_text(types, atype, el.attrs[aname], f"{path}.{aname}")
            elif required:
                raise ProtocolViolation(f"{path}: missing attribute {aname}")
        return out
    fields = spec[1]
    by_name = {f[0]: f for f in fields}
    result: dict[str, Any] = {}
    for child in el.children:
        f = by_name.get(child.name)
        if f is None:
            raise ProtocolViolation(f"{path}: unexpected element {child.name[:40]!r}")
        name, ftype, _, max_occurs = f
        cpath = f"{path}.{name}"
        if max_occurs == 1:
            if name in result:
                raise ProtocolViolation(f"{cpath}: occurs more than once")
            result[name] = from_element(types, ftype, child, cpath)
        else:
            items = result.setdefault(name, [])
            if 0 < max_occurs <= len(items):
                raise ProtocolViolation(f"{cpath}: more than {max_occurs} items")
            items.append(from_element(types, ftype, child, f"{cpath}[{len(items)}]"))
    for name, _, min_occurs, _ in fields:
        if not min_occurs:
            continue
        got = result.get(name)
        if got is None or (isinstance(got, list) and len(got) < min_occurs):
            raise ProtocolViolation(f"{path}: missing required element {name}")
    return result


def escape(text: str) -> str:
    """Text for element content or a double-quoted attribute."""
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def _simple_to_text(types: dict[str, Any], tname: str, value: Any, path: str) -> str:
    spec = types.get(tname)
    base, max_len, enum = (spec[1], spec[2], spec[3]) if spec else (tname, 0, None)
    if base in ("int", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProtocolViolation(f"{path}: expected an integer")
        lo, hi = _RANGES[base]
        if not lo <= value <= hi:
            raise ProtocolViolation(f"{path}: {value} is out of range for xs:{base}")
        return str(value)
    if base == "decimal":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ProtocolViolation(f"{path}: expected a number")
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ProtocolViolation(f"{path}: expected a finite number")
            text = repr(value)
            return format(value, "f") if "e" in text or "E" in text else text
        return str(value)
    if base == "boolean":
        if not isinstance(value, bool):
            raise ProtocolViolation(f"{path}: expected a boolean")
        return "true" if value else "false"
    if not isinstance(value, str):
        raise ProtocolViolation(f"{path}: expected a string")
    if _NOT_XML.search(value):
        raise ProtocolViolation(f"{path}: contains a character XML cannot carry")
    if base == "dateTime":
        if not _DATETIME.fullmatch(value):
            raise ProtocolViolation(f"{path}: {value[:40]!r} is not a date-time")
        return value.upper()
    if enum and value not in enum:
        raise ProtocolViolation(f"{path}: {value[:40]!r} is not one of {', '.join(enum)}")
    if max_len and len(value) > max_len:
        raise ProtocolViolation(f"{path}: longer than {max_len} characters")
    return escape(value)


def to_xml(types: dict[str, Any], tname: str, value: Any, tag: str, out: list[str],
           path: str = "$") -> None:
    """Append element ``tag`` (a prefixed name) holding ``value`` of type ``tname``.

    Unknown members and missing required ones are errors; members are written
    in the type's sequence order.

    Raises:
        ProtocolViolation: ``value`` breaks the type; the message names its path.
    """
    prefix = tag.partition(":")[0] + ":" if ":" in tag else ""
    spec = types.get(tname)
    if spec is None or spec[0] == "simple":
        out.append(f"<{tag}>{_simple_to_text(types, tname, value, path)}</{tag}>")
        return
    if not isinstance(value, dict):
        raise ProtocolViolation(f"{path}: expected an object")
    if spec[0] == "text":
        attrs = []
        allowed = {"value"}
        for aname, atype, required in spec[2]:
            allowed.add(aname)
            if aname in value:
                attrs.append(f' {aname}="{_simple_to_text(types, atype, value[aname], path)}"')
            elif required:
                raise ProtocolViolation(f"{path}: missing {aname}")
        extra = set(value) - allowed
        if extra:
            raise ProtocolViolation(f"{path}: unexpected member {sorted(extra)[0][:40]!r}")
        if "value" not in value:
            raise ProtocolViolation(f"{path}: missing value")
        text = _simple_to_text(types, spec[1], value["value"], f"{path}.value")
        out.append(f"<{tag}{''.join(attrs)}>{text}</{tag}>")
        return
    fields = spec[1]
    known = {f[0] for f in fields}
    for key in value:
        if key not in known:
            raise ProtocolViolation(f"{path}: unexpected member {str(key)[:40]!r}")
    out.append(f"<{tag}>")
    for name, ftype, min_occurs, max_occurs in fields:
        cpath = f"{path}.{name}"
        if name not in value:
            if min_occurs:
                raise ProtocolViolation(f"{path}: missing required member {name}")
            continue
        item = value[name]
        if max_occurs == 1:
            to_xml(types, ftype, item, prefix + name, out, cpath)
            continue
        if not isinstance(item, list):
            raise ProtocolViolation(f"{cpath}: expected an array")
        if len(item) < min_occurs or 0 < max_occurs < len(item):
            raise ProtocolViolation(f"{cpath}: wrong number of items")
        for i, sub in enumerate(item):
            to_xml(types, ftype, sub, prefix + name, out, f"{cpath}[{i}]")
    out.append(f"</{tag}>")
