"""Validation profiles without sockets: rule parsing, matching, the relaxed walk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from router.ocppj import Options, dialect
from router.ocppj._walker import first_violation, load_schema
from router.ocppj.profiles import (
    ProfileError,
    Profiles,
    boot_vendor_model,
    envelope_only,
    load_file,
    parse_rules,
    relaxed_check,
    relaxed_field,
)


@pytest.mark.parametrize(("table", "error"), [
    ({"identity": "*", "relax": ["enum_case"]}, "name must be"),
    ({"name": "a b", "identity": "*", "relax": ["enum_case"]}, "name must be"),
    ({"name": "r", "relax": ["enum_case"]}, "needs identity, vendor or model"),
    ({"name": "r", "identity": "*"}, "relaxes nothing"),
    ({"name": "r", "identity": "*", "relax": ["case"]}, "unknown check 'case'"),
    ({"name": "r", "identity": "*", "relax": ["enum_case"], "action": ["X"]}, "unknown key"),
    ({"name": "r", "identity": "", "relax": ["enum_case"]}, "non-empty pattern"),
    ({"name": "r", "identity": "*", "relax": "enum_case", "actions": [1]}, "list of strings"),
])
def test_bad_rules_are_named(table: dict[str, Any], error: str) -> None:
    with pytest.raises(ProfileError, match=error):
        parse_rules([table], "f.toml")


def test_duplicate_names_and_shape() -> None:
    rule = {"name": "r", "identity": "*", "relax": ["enum_case"]}
    with pytest.raises(ProfileError, match="used twice"):
        parse_rules([rule, rule])
    with pytest.raises(ProfileError, match="array of tables"):
        parse_rules({"name": "r"})


def test_load_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot read"):
        load_file(str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[[validation_profile]\n")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_file(str(bad))
    other = tmp_path / "router.toml"
    other.write_text('port = 9000\n')
    assert load_file(str(other)) == ()


def test_matching_by_identity_vendor_and_model() -> None:
    profiles = Profiles(parse_rules([
        {"name": "by-id", "identity": "ACME-*", "relax": ["enum_case"]},
        {"name": "by-model", "vendor": "ACME", "model": "AC22*", "relax": ["string_length"]},
    ]))
    assert profiles.needs_boot
    assert profiles.match("OTHER-1") is None
    assert [r.name for r in profiles.match("ACME-1") or ()] == ["by-id"]
    assert [r.name for r in profiles.match("X", "ACME", "AC22-S") or ()] == ["by-model"]
    assert profiles.match("X", "ACME", None) is None
    assert profiles.match("X", "acme", "AC22") is None    # case-sensitive
    assert profiles.describe()[1]["model"] == "AC22*"


def test_paths_use_star_for_indexes() -> None:
    [rule] = parse_rules([{"name": "r", "identity": "*", "relax": ["string_length"],
                           "actions": ["MeterValues"],
                           "paths": ["$.meterValue[*].sampledValue[*].value", "customData.*"]}])
    assert rule.allows("string_length", "MeterValues", "$.meterValue[3].sampledValue[0].value")
    assert not rule.allows("string_length", "MeterValues", "$.meterValue[3].value")
    assert rule.allows("string_length", "MeterValues", "$.customData.vendorId")
    assert not rule.allows("string_length", "StatusNotification", "$.customData.vendorId")
    assert not rule.allows("enum_case", "MeterValues", "$.customData.vendorId")


def test_relax_none_is_the_strict_walker() -> None:
    schema = load_schema("v201/StatusNotificationRequest.json")
    value = {"timestamp": "x", "connectorStatus": "available", "evseId": 1, "connectorId": 1}
    strict = first_violation(schema, value)
    assert strict is not None and strict.keyword == "enum"
    assert first_violation(schema, value, relax=lambda check, path: False) == strict
    assert first_violation(schema, value, relax=lambda check, path: True) is None


@pytest.mark.parametrize(("payload", "checks"), [
    ({"connectorStatus": "AVAILABLE"}, ["enum_case"]),
    ({"evseId": "7"}, ["number_as_string"]),
    ({"vendorX": 1}, ["additional_properties"]),
    ({"timestamp": "2026-11-21T12:00:00.5"}, ["datetime_offset"]),
    ({"connectorStatus": "AVAILABLE", "evseId": "7"}, ["enum_case", "number_as_string"]),
])
def test_relaxed_check_names_what_it_relaxed(payload: dict[str, Any], checks: list[str]) -> None:
    d = dialect("ocpp2.0.1", Options(strict_datetime=True))
    base = {"timestamp": "2026-11-21T12:00:00Z", "connectorStatus": "Available", "evseId": 1,
            "connectorId": 1}
    rules = parse_rules([{"name": "all", "identity": "*", "relax": list(checks)}])
    raw = json.dumps({**base, **payload}).encode()
    assert relaxed_check(d, rules, "StatusNotification", raw, False) == [
        ("all", c) for c in checks]
    # one check short: the strict verdict stands
    fewer = parse_rules([{"name": "all", "identity": "*", "relax": checks[:-1]}]
                        ) if len(checks) > 1 else ()
    assert relaxed_check(d, fewer, "StatusNotification", raw, False) == []


def test_not_relaxable_stays_rejected() -> None:
    d = dialect("ocpp2.0.1")
    rules = parse_rules([{"name": "all", "identity": "*",
                          "relax": ["enum_case", "number_as_string", "string_length",
                                    "additional_properties", "datetime_offset"]}])
    for payload in ({"connectorStatus": "Nope", "timestamp": "t", "evseId": 1, "connectorId": 1},
                    {"connectorStatus": "Available", "timestamp": "t", "evseId": "-1x",
                     "connectorId": 1},
                    {"connectorStatus": "Available", "evseId": 1, "connectorId": 1}):
        assert relaxed_check(d, rules, "StatusNotification", json.dumps(payload).encode(),
                             False) == []
    # not numbers in JSON: NaN, Infinity
    for text in ("NaN", "-Infinity", "1e999"):
        assert first_violation({"type": "number"}, text, relax=lambda check, path: True)
    # minimum still applies to a number written as a string
    found = first_violation({"type": "integer", "minimum": 0}, "-1",
                            relax=lambda check, path: True)
    assert found is not None and found.keyword == "minimum"


def test_envelope_only_keeps_the_payload_bytes() -> None:
    d = dialect("ocpp1.6")
    raw = b'[2, "7", "DataTransfer", {"vendorId" : "' + b"V" * 300 + b'"}]'
    msg = envelope_only(d).decode(raw)
    assert msg is not None and msg.payload == b'{"vendorId" : "' + b"V" * 300 + b'"}'
    assert relaxed_field([("a", "skip"), ("b", "enum_case")]) == b"a:skip,b:enum_case"


def test_boot_vendor_model() -> None:
    assert boot_vendor_model("ocpp1.6", b'{"chargePointVendor":"V","chargePointModel":"M"}') == (
        "V", "M")
    assert boot_vendor_model("ocpp2.0.1", b'{"chargingStation":{"vendorName":"V","model":1}}') == (
        "V", None)
    assert boot_vendor_model("ocpp2.1", b"[1]") == (None, None)
    assert boot_vendor_model("ocpp2.1", b"{") == (None, None)
