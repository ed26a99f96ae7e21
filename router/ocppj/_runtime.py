"""Checks the generated types run that ``msgspec.Meta`` cannot express.

Imported by ``router/ocppj/_generated/*.py`` (``multipleOf``) and by the
dialects (strict ``date-time``). Errors are raised as ``ValueError`` so msgspec
turns them into ``ValidationError`` with the JSON path; the error path then
re-checks the payload with ``router.ocppj._walker`` to classify it.
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache
from typing import Any

from msgspec import UNSET


@lru_cache(maxsize=16)
def _fraction(text: str) -> Fraction:
    return Fraction(text)


def is_multiple_of(value: float | int, divisor: str) -> bool:
    """Whether ``value`` is an exact multiple of the decimal ``divisor``.

    The OCPP 1.6 schemas require charging limits to be multiples of 0.1. With
    binary floats, ``0.3 / 0.1`` is not an integer, so a float-based check
    (jsonschema's default) rejects valid values; the ``ocpp`` library therefore
    parses these payloads with ``decimal.Decimal``. We compare exactly on the
    shortest decimal representation of the IEEE double (``repr``), which is
    what the charger wrote for any value of up to 15 significant digits.

    Args:
        value: the decoded JSON number.
        divisor: the schema's ``multipleOf`` as decimal text, e.g. ``"0.1"``.
    """
    if isinstance(value, int):
        number = Fraction(value)
    else:
        try:
            number = Fraction(repr(value))
        except ValueError:  # inf / nan: never a multiple
            return False
    return (number / _fraction(divisor)).denominator == 1


def check_multiple_of(value: Any, divisor: str, name: str) -> None:
    """``__post_init__`` helper of the generated types.

    Raises:
        ValueError: ``value`` is set and not a multiple of ``divisor``.
    """
    if value is not UNSET and not is_multiple_of(value, divisor):
        raise ValueError(f"`{name}` must be a multiple of {divisor}")


# RFC 3339 §5.6 date-time: full-date "T" full-time, with time-offset "Z" or
# +hh:mm. RFC 3339 §5.6 NOTE allows "t"/"z" in lower case and (per ISO 8601 /
# RFC 3339 §5.6 NOTE) a space instead of "T"; JSON Schema's "date-time" format
# is RFC 3339 date-time, so we accept what the ABNF accepts: T/t, Z/z.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-](\d{2}):(\d{2}))\Z", re.ASCII
)
_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def is_rfc3339(text: str) -> bool:
    """Whether ``text`` is an RFC 3339 §5.6 ``date-time`` (leap second 60 allowed).

    Args:
        text: the string to check.
    """
    m = _RFC3339.match(text)
    if m is None:
        return False
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    if not 1 <= month <= 12 or day < 1 or hour > 23 or minute > 59 or second > 60:
        return False
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    limit = 29 if month == 2 and leap else 28 if month == 2 else _DAYS[month - 1]
    if day > limit:
        return False
    if m.group(9) is not None and (int(m.group(9)) > 23 or int(m.group(10)) > 59):
        return False
    return True


def first_bad_datetime(obj: Any, table: dict[Any, tuple[tuple[str, int], ...]], path: str = "$") -> str | None:
    """Path of the first ``date-time`` field of a decoded Struct that is not RFC 3339.

    Args:
        obj: a decoded generated Struct.
        table: the generated module's ``DATETIME_FIELDS``.
        path: JSON path of ``obj``.
    """
    fields = table.get(type(obj))
    if not fields:
        return None
    for name, kind in fields:
        value = getattr(obj, name)
        if value is UNSET:
            continue
        if kind == 0:
            if not is_rfc3339(value):
                return f"{path}.{name}"
        elif kind == 1:
            for i, item in enumerate(value):
                if not is_rfc3339(item):
                    return f"{path}.{name}[{i}]"
        elif kind == 2:
            found = first_bad_datetime(value, table, f"{path}.{name}")
            if found:
                return found
        else:
            for i, item in enumerate(value):
                found = first_bad_datetime(item, table, f"{path}.{name}[{i}]")
                if found:
                    return found
    return None
