"""Validation profiles: per-model relaxations of the schema checks.

Firmware breaks the schemas in known ways (a signed meter value longer than
2.0.1's 2,500 characters, an enum in the wrong case, an extra property, a
date-time without offset, a number sent as a string). A profile rule names the
chargers it applies to (identity pattern and/or the vendor and model of their
BootNotification) and what it lets through (docs/ocppj.md):

.. code-block:: toml

    [[validation_profile]]
    name = "acme-ac22-signed-meter"      # label of the metric and the stream field
    vendor = "ACME"                      # fnmatch patterns, all given ones must match
    model = "AC22*"
    identity = "ACME-*"
    actions = ["MeterValues", "TransactionEvent"]   # default: every action
    paths = ["$.meterValue[*].sampledValue[*].signedMeterValue.*"]  # default: anywhere
    relax = ["string_length"]
    skip = []                            # actions not validated at all

Sans-I/O: this module parses rules and decides; the node reads the file,
reloads it and counts. Only what chargers send is ever relaxed, and only on
the error path: a message the strict validator accepts never gets here.
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import msgspec

from router.ocppj import Dialect, errors
from router.ocppj._envelope import Core
from router.ocppj._walker import first_violation, load_schema

#: The relaxable checks (``relax = [...]``) and the JSON Schema keyword each loosens.
CHECKS: dict[str, str] = {
    "string_length": "maxLength: a longer string",
    "enum_case": "enum: an allowed value in another letter case",
    "additional_properties": "additionalProperties: properties the schema does not define",
    "datetime_offset": "format date-time (with strict_datetime): no time zone offset",
    "number_as_string": "type number/integer: the number written as a JSON string",
}
SKIP = "skip"
_KEYS = {"name", "identity", "vendor", "model", "actions", "paths", "relax", "skip"}
_INDEX = re.compile(r"\[\d+\]")


class ProfileError(ValueError):
    """A profile file or rule the router cannot use (message names the rule)."""


@dataclass(frozen=True)
class Rule:
    """One ``[[validation_profile]]`` table."""

    name: str
    identity: str | None = None
    vendor: str | None = None
    model: str | None = None
    actions: frozenset[str] | None = None      # None: every action
    paths: tuple[re.Pattern[str], ...] = ()    # empty: anywhere
    relax: frozenset[str] = frozenset()
    skip: frozenset[str] = frozenset()

    @property
    def needs_boot(self) -> bool:
        """Whether the rule can only match once the BootNotification is known."""
        return self.vendor is not None or self.model is not None

    def matches(self, identity: str, vendor: str | None, model: str | None) -> bool:
        """Every pattern the rule gives matches (case-sensitive fnmatch)."""
        for pattern, value in ((self.identity, identity), (self.vendor, vendor),
                               (self.model, model)):
            if pattern is not None and (value is None or not fnmatch.fnmatchcase(value,
                                                                                  pattern)):
                return False
        return True

    def allows(self, check: str, action: str, path: str) -> bool:
        if check not in self.relax or (self.actions is not None and action not in self.actions):
            return False
        if not self.paths:
            return True
        general = _INDEX.sub("[*]", path)
        return any(p.fullmatch(general) for p in self.paths)


def _path_pattern(text: str) -> re.Pattern[str]:
    # "$.a[*].b" matches any index; a "*" elsewhere matches any run of characters.
    text = text if text.startswith("$") else "$." + text
    return re.compile(".*".join(re.escape(part) for part in text.replace("[*]", "\0").split("*"))
                      .replace("\0", r"\[\*\]"))


def _strings(rule: str, key: str, value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ProfileError(f"validation_profile {rule!r}: {key} must be a list of strings")
    return list(value)


def parse_rules(tables: Any, source: str = "") -> tuple[Rule, ...]:
    """Rules from the decoded ``validation_profile`` array of tables.

    Raises:
        ProfileError: an unknown key, check or shape; names the rule and ``source``.
    """
    where = f"{source}: " if source else ""
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ProfileError(f"{where}validation_profile must be an array of tables "
                           "([[validation_profile]])")
    rules: list[Rule] = []
    names: set[str] = set()
    for i, table in enumerate(tables):
        name = table.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", name):
            raise ProfileError(f"{where}validation_profile #{i + 1}: name must be 1-64 "
                               "characters of A-Z a-z 0-9 _ . : -")
        label = f"{where}validation_profile {name!r}"
        if name in names:
            raise ProfileError(f"{label}: the name is used twice")
        names.add(name)
        unknown = set(table) - _KEYS
        if unknown:
            raise ProfileError(f"{label}: unknown key {sorted(unknown)[0]!r}")
        patterns = {k: table[k] for k in ("identity", "vendor", "model") if k in table}
        for key, value in patterns.items():
            if not isinstance(value, str) or not value:
                raise ProfileError(f"{label}: {key} must be a non-empty pattern")
        if not patterns:
            raise ProfileError(f"{label}: needs identity, vendor or model (use identity = "
                               "\"*\" for every charger)")
        relax = _strings(name, "relax", table.get("relax", []))
        for check in relax:
            if check not in CHECKS:
                raise ProfileError(f"{label}: unknown check {check!r} (known: "
                                   f"{', '.join(CHECKS)})")
        skip = _strings(name, "skip", table.get("skip", []))
        if not relax and not skip:
            raise ProfileError(f"{label}: relaxes nothing (give relax or skip)")
        actions = table.get("actions")
        rules.append(Rule(
            name=name, identity=patterns.get("identity"), vendor=patterns.get("vendor"),
            model=patterns.get("model"),
            actions=None if actions is None else frozenset(_strings(name, "actions", actions)),
            paths=tuple(_path_pattern(p) for p in _strings(name, "paths", table.get("paths", []))),
            relax=frozenset(relax), skip=frozenset(skip)))
    return tuple(rules)


def load_file(path: str) -> tuple[Rule, ...]:
    """The rules of a TOML file's ``[[validation_profile]]`` tables (other keys
    are ignored, so the router's own config file can hold them).

    Raises:
        ProfileError: unreadable, not TOML, or a bad rule.
    """
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ProfileError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path} is not valid TOML: {exc}") from None
    return parse_rules(data.get("validation_profile", []), path)


class Profiles:
    """The loaded rules and the questions the node asks them."""

    def __init__(self, rules: Sequence[Rule] = ()) -> None:
        self.rules = tuple(rules)
        #: whether a connection must remember its BootNotification's vendor/model
        self.needs_boot = any(r.needs_boot for r in self.rules)

    def match(self, identity: str, vendor: str | None = None,
              model: str | None = None) -> tuple[Rule, ...] | None:
        """The rules for a charger, in file order; None when none applies."""
        found = tuple(r for r in self.rules if r.matches(identity, vendor, model))
        return found or None

    def describe(self) -> list[dict[str, Any]]:
        """The rules as JSON-ready dicts (``GET /profiles``)."""
        return [{"name": r.name, "identity": r.identity, "vendor": r.vendor, "model": r.model,
                 "actions": sorted(r.actions) if r.actions is not None else None,
                 "paths": [p.pattern for p in r.paths], "relax": sorted(r.relax),
                 "skip": sorted(r.skip)} for r in self.rules]


def boot_vendor_model(proto: str, payload: bytes) -> tuple[str | None, str | None]:
    """Vendor and model from a BootNotification payload (as far as readable).

    OCPP 1.6: ``chargePointVendor`` / ``chargePointModel``; 2.x:
    ``chargingStation.vendorName`` / ``chargingStation.model``.
    """
    try:
        value = json.loads(payload)
    except ValueError:
        return None, None
    if not isinstance(value, dict):
        return None, None
    if proto == "ocpp1.6":
        vendor, model = value.get("chargePointVendor"), value.get("chargePointModel")
    else:
        station = value.get("chargingStation")
        station = station if isinstance(station, dict) else {}
        vendor, model = station.get("vendorName"), station.get("model")
    return (vendor if isinstance(vendor, str) else None,
            model if isinstance(model, str) else None)


def _not_an_object(action: str, payload: bytes, response: bool, message_id: str,
                   msgtype: int) -> None:
    raise errors.FormatViolation("$: payload is not a JSON object", message_id=message_id,
                                 msgtype=msgtype)


def _no_post_check(action: str, response: bool, obj: Any, message_id: str, msgtype: int) -> None:
    return None


@cache
def envelope_only(dialect: Dialect) -> Core:
    """A core with ``dialect``'s envelope rules whose payload check accepts any
    JSON object: it yields the CALL (id, action, payload bytes exactly as
    received) that the strict decode rejected, for the relaxed re-check."""
    any_object = msgspec.json.Decoder(dict[str, Any]).decode
    options = dialect.options
    return Core(dialect.proto,
                dict.fromkeys(dialect.charger_actions, any_object),
                dict.fromkeys(dialect.send_actions, any_object),
                dict.fromkeys(dialect.csms_actions, any_object),
                dict.fromkeys(dialect.all_actions, any_object),
                dialect.error_codes, {}, False, options.null_payload_as_empty,
                options.lenient_error_codes, _not_an_object, _no_post_check)


def relaxed_check(dialect: Dialect, rules: Iterable[Rule], action: str, payload: bytes,
                  response: bool) -> list[tuple[str, str]]:
    """Re-check a payload the strict validator rejected, with ``rules``.

    Returns:
        The relaxations that let it pass, as (rule name, check) pairs in the
        order met (``skip`` for a skipped action); empty when the rules do not
        make it valid (the strict error stands).
    """
    rules = tuple(rules)
    for rule in rules:
        if action in rule.skip:
            try:
                value = json.loads(payload)
            except ValueError:
                return []
            return [(rule.name, SKIP)] if isinstance(value, dict) else []
    key = f"{action}:{'response' if response else 'request'}"
    schema_file = dialect._module.SCHEMA_FILES.get(key)
    if schema_file is None:
        return []
    try:
        value = json.loads(payload)
    except ValueError:
        return []
    applied: list[tuple[str, str]] = []

    def relax(check: str, path: str) -> bool:
        for rule in rules:
            if rule.allows(check, action, path):
                if (rule.name, check) not in applied:
                    applied.append((rule.name, check))
                return True
        return False

    found = first_violation(load_schema(schema_file), value,
                            strict_datetime=dialect.options.strict_datetime, relax=relax)
    return applied if found is None else []


def relaxed_field(applied: Iterable[tuple[str, str]]) -> bytes:
    """The ``relaxed`` stream field: ``rule:check`` items, comma-separated."""
    return ",".join(f"{rule}:{check}" for rule, check in applied).encode()
