"""The precise validator of the error path: classify what msgspec rejected.

The hot path decodes payloads with the generated msgspec types. When msgspec
rejects a payload, this module re-checks it against the schema itself, with the
semantics of a JSON Schema draft-04 / draft-06 validator (what ``jsonschema``
does, for the keywords the OCA schemas use), and returns the first violation
with its JSON path. Two things follow:

* the verdict equals jsonschema's even where msgspec is stricter: draft-06
  counts ``1.0`` as an ``integer`` (draft-06 core §4.2 / validation §6.25), and
  numbers beyond the double range are still numbers; when the walker finds
  nothing, the payload is accepted;
* the classification into OCPP error codes happens in one table (``KEYWORD_ERROR``).

Never on the hot path: it allocates a Python object tree (``json.loads``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

from router.ocppj import errors
from router.ocppj._runtime import is_multiple_of, is_rfc3339

SCHEMAS = Path(__file__).resolve().parent / "schemas"

#: JSON Schema keyword that failed -> OCPP error class (documented in docs/ocppj.md).
KEYWORD_ERROR: dict[str, type[errors.OCPPJError]] = {
    "type": errors.TypeConstraintViolation,
    "required": errors.OccurrenceConstraintViolation,
    "minItems": errors.OccurrenceConstraintViolation,
    "maxItems": errors.OccurrenceConstraintViolation,
    "additionalProperties": errors.FormatViolation,
    "enum": errors.PropertyConstraintViolation,
    "maxLength": errors.PropertyConstraintViolation,
    "minimum": errors.PropertyConstraintViolation,
    "maximum": errors.PropertyConstraintViolation,
    "multipleOf": errors.PropertyConstraintViolation,
    "format": errors.PropertyConstraintViolation,
}

#: ``relax(check, path) -> bool``: whether a validation profile lets this
#: violation pass (router/ocppj/profiles.py); checks: string_length, enum_case,
#: additional_properties, datetime_offset, number_as_string.
Relax = Callable[[str, str], bool]

_TYPE_NAMES = {"object": "an object", "array": "an array", "string": "a string",
               "integer": "an integer", "number": "a number", "boolean": "a boolean", "null": "null"}


class Violation(NamedTuple):
    """The first schema violation found: keyword, JSON path, description."""

    keyword: str
    path: str
    description: str

    def error(self, message_id: str = "-1", msgtype: int = 0) -> errors.OCPPJError:
        """The OCPP-J error for this violation."""
        return KEYWORD_ERROR[self.keyword](self.description, message_id=message_id, msgtype=msgtype)


@cache
def load_schema(relpath: str) -> dict[str, Any]:
    """A shipped schema by its path under ``router/ocppj/schemas`` (cached).

    Args:
        relpath: e.g. ``"v16/BootNotification.json"``.

    Raises:
        FileNotFoundError: no such schema.
    """
    loaded: dict[str, Any] = json.loads((SCHEMAS / relpath).read_text(encoding="utf-8"))
    return loaded


def is_draft4(root: dict[str, Any]) -> bool:
    """Whether a schema declares draft-04 (OCPP 1.6 core) rather than draft-06."""
    return "draft-04" in str(root.get("$schema", ""))


def _is_type(value: Any, typ: str, draft4: bool) -> bool:
    # bool is a subclass of int in Python but never a JSON number.
    if typ == "string":
        return isinstance(value, str)
    if typ == "object":
        return isinstance(value, dict)
    if typ == "array":
        return isinstance(value, list)
    if typ == "boolean":
        return isinstance(value, bool)
    if typ == "null":
        return value is None
    if isinstance(value, bool):
        return False
    if typ == "number":
        return isinstance(value, int | float)
    if typ == "integer":
        if isinstance(value, int):
            return True
        # draft-06 validation §6.25 / core §4.2: 1.0 is an integer; draft-04 §3.5: it is not.
        return not draft4 and isinstance(value, float) and value.is_integer()
    return False


def first_violation(
    schema: dict[str, Any],
    value: Any,
    *,
    root: dict[str, Any] | None = None,
    strict_datetime: bool = False,
    path: str = "$",
    relax: Relax | None = None,
) -> Violation | None:
    """First violation of ``schema`` by the decoded JSON ``value``, or None.

    Args:
        schema: a (sub)schema.
        value: the instance, as ``json.loads`` returns it.
        root: the schema document ``$ref`` resolves against (default: ``schema``).
        strict_datetime: assert ``format: date-time`` (RFC 3339 §5.6).
        path: JSON path of ``value``.
        relax: a validation profile's say on the five relaxable violations
            (see :data:`Relax`); asked only where the relaxed form is what
            the check names (e.g. ``enum_case`` only for a string equal to an
            allowed value but for case). None: strict.
    """
    root = schema if root is None else root
    return _walk(schema, value, root, is_draft4(root), strict_datetime, path, relax)


def _as_number(text: str, typ: str) -> int | float | None:
    """The number a string holds (for ``number_as_string``), or None."""
    try:
        number = json.loads(text.strip()) if text.strip() else None
    except ValueError:
        return None
    if isinstance(number, bool) or not isinstance(number, int | float):
        return None
    if isinstance(number, float) and not math.isfinite(number):
        return None          # json.loads reads NaN/Infinity; JSON has no such numbers
    if typ == "integer" and not isinstance(number, int):
        return None
    return number


def _walk(schema: dict[str, Any], value: Any, root: dict[str, Any], draft4: bool, strict: bool,
          path: str, relax: Relax | None = None) -> Violation | None:
    ref = schema.get("$ref")
    if ref is not None:
        # Siblings of "$ref" are ignored in draft-04/06.
        schema = root["definitions"][ref.rsplit("/", 1)[1]]
    typ = schema.get("type")
    if typ is not None and not _is_type(value, typ, draft4):
        number = (_as_number(value, typ) if relax is not None and isinstance(value, str)
                  and typ in ("number", "integer") else None)
        if number is None or relax is None or not relax("number_as_string", path):
            return Violation("type", path, f"{path}: must be {_TYPE_NAMES.get(typ, typ)}")
        value = number       # minimum/maximum/multipleOf apply to the number
    enum = schema.get("enum")
    if enum is not None and not any(_equal(value, e) for e in enum):
        folded = value.casefold() if relax is not None and isinstance(value, str) else None
        if relax is None or folded is None or not any(
                isinstance(e, str) and e.casefold() == folded for e in enum) or not relax(
                "enum_case", path):
            return Violation("enum", path, f"{path}: value is not one of the allowed values")
    if isinstance(value, str):
        limit = schema.get("maxLength")
        if limit is not None and len(value) > limit and (
                relax is None or not relax("string_length", path)):
            return Violation("maxLength", path, f"{path}: longer than {limit} characters")
        if strict and schema.get("format") == "date-time" and not is_rfc3339(value) and (
                relax is None or not is_rfc3339(value + "Z")
                or not relax("datetime_offset", path)):
            return Violation("format", path, f"{path}: not an RFC 3339 date-time")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        low = schema.get("minimum")
        if low is not None and value < low:
            return Violation("minimum", path, f"{path}: less than {low}")
        high = schema.get("maximum")
        if high is not None and value > high:
            return Violation("maximum", path, f"{path}: greater than {high}")
        step = schema.get("multipleOf")
        if step is not None and not is_multiple_of(value, str(step)):
            return Violation("multipleOf", path, f"{path}: not a multiple of {step}")
    elif isinstance(value, dict):
        props: dict[str, Any] = schema.get("properties", {})
        for name in schema.get("required", ()):
            if name not in value:
                return Violation("required", path, f"{path}: required property '{name}' is missing")
        if schema.get("additionalProperties", True) is False and any(
                name not in props for name in value) and (
                relax is None or not relax("additional_properties", path)):
            # The name comes from the peer: never echoed (docs/ocppj.md).
            return Violation("additionalProperties", path,
                             f"{path}: contains a property the schema does not define")
        for name, sub in props.items():
            if name in value:
                found = _walk(sub, value[name], root, draft4, strict, f"{path}.{name}", relax)
                if found is not None:
                    return found
    elif isinstance(value, list):
        low = schema.get("minItems")
        if low is not None and len(value) < low:
            return Violation("minItems", path, f"{path}: fewer than {low} items")
        high = schema.get("maxItems")
        if high is not None and len(value) > high:
            return Violation("maxItems", path, f"{path}: more than {high} items")
        items = schema.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                found = _walk(items, item, root, draft4, strict, f"{path}[{i}]", relax)
                if found is not None:
                    return found
    return None


def _equal(a: Any, b: Any) -> bool:
    # JSON equality: true != 1 (jsonschema._utils.equal does the same).
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(a == b)
