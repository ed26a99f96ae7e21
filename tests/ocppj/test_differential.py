"""Differential tests: router.ocppj against jsonschema, for every schema.

For each version, action and direction: seeded random valid instances must be
accepted by both jsonschema (the way the ``ocpp`` library validates: the
schema's own draft, ``Decimal`` parsing for OCPP 1.6 so ``multipleOf`` is
exact) and the router; every single-defect mutation (drop a required field,
wrong type, unknown property, overlong string, bad enum value, out-of-range
number, not a multiple, too few / too many items, at every depth) must be
rejected by both, with the code docs/ocppj.md documents for that keyword and
the JSON path jsonschema reports.

The router is driven through the API the service uses for each direction:
``Dialect.decode`` for charger CALLs / SENDs, ``validate_request(from_charger=
False)`` for backend CALLs, ``validate_response`` for CALLRESULT payloads; and
``decode_payload`` for the typed access of backends.
"""

from __future__ import annotations

import decimal
import json
import os
import random
from typing import Any

import jsonschema
import msgspec
import pytest

import router.ocppj as ocppj
from router.ocppj import errors
from router.ocppj._walker import KEYWORD_ERROR, load_schema
from router.ocppj.codegen import VERSION_DIRS, _schema_files

from .instances import DROP, apply, mutations, valid

# OCPPJ_FULL=1: every mutation site of larger instances (minutes of CPU; opt-in).
FULL = os.environ.get("OCPPJ_FULL") == "1"
VALID_PER_SCHEMA = 40 if FULL else 12
MUTATED_INSTANCES = 3 if FULL else 2
# Without FULL: at most this many mutations per instance, always including
# every (kind, depth) combination that occurs.
MUTATION_SAMPLE = 30


def _cases() -> list[Any]:
    out = []
    for proto, vdir in VERSION_DIRS.items():
        for action, _cls, response, path in _schema_files(vdir):
            out.append(pytest.param(proto, action, response, f"{vdir}/{path.name}",
                                    id=f"{proto}-{path.stem}"))
    return out


class Oracle:
    """jsonschema as the ``ocpp`` library uses it."""

    def __init__(self, proto: str, relpath: str) -> None:
        text = (ocppj._walker.SCHEMAS / relpath).read_text(encoding="utf-8")
        # Decimal for the draft-04 schemas of OCPP 1.6 (the ones with multipleOf);
        # the draft-06 ones (1.6 security extension, 2.x) as jsonschema reads them.
        self.decimal = "draft-04" in text
        parse_float = decimal.Decimal if self.decimal else float
        schema = json.loads(text, parse_float=parse_float)
        cls = jsonschema.validators.validator_for(schema)
        self.validator = cls(schema)

    def errors(self, text: str) -> list[jsonschema.ValidationError]:
        instance = json.loads(text, parse_float=decimal.Decimal if self.decimal else float)
        return list(self.validator.iter_errors(instance))


def _router_check(proto: str, action: str, response: bool, payload: bytes) -> None:
    """Validate ``payload`` through the API of its direction; raise OCPPJError."""
    d = ocppj.dialect(proto)
    if response:
        d.validate_response(action, payload)
    elif action in d.send_actions:
        msg = d.decode(b'[6,"m-1",' + json.dumps(action).encode() + b"," + payload + b"]")
        assert msg is not None and msg.payload == payload
    elif action in d.charger_actions:
        msg = d.decode(b'[2, "m-1", ' + json.dumps(action).encode() + b", " + payload + b"]")
        # The payload is kept byte for byte, as received.
        assert msg is not None and msg.payload == payload and msg.action == action
    if not response and action in d.csms_actions:
        d.validate_request(action, payload, from_charger=False)


def _dumps(value: Any, rng: random.Random) -> bytes:
    # Both raw UTF-8 and \u-escaped text, with and without whitespace.
    if rng.random() < 0.5:
        return json.dumps(value, ensure_ascii=rng.random() < 0.5).encode()
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _path(parts: tuple[str | int, ...]) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


@pytest.mark.parametrize(("proto", "action", "response", "relpath"), _cases())
def test_valid_instances_pass_both(proto: str, action: str, response: bool, relpath: str) -> None:
    oracle = Oracle(proto, relpath)
    schema = load_schema(relpath)
    draft6 = "draft-06" in schema["$schema"]
    rng = random.Random(f"{relpath}-valid")
    for i in range(VALID_PER_SCHEMA):
        extras = i % 4 == 3
        value = valid(schema, schema, rng, draft6=draft6, optional=[0.0, 1.0, 0.5][i % 3],
                      extras=extras)
        payload = _dumps(value, rng)
        assert oracle.errors(payload.decode()) == [], f"generator bug: {payload!r}"
        _router_check(proto, action, response, payload)
        typed = ocppj.decode_payload(proto, action, payload, response=response)
        assert type(typed).__name__ == action + ("Response" if response else "Request")
        if not extras:
            # Typed access round-trips (integral floats come back as ints).
            assert json.loads(msgspec.json.encode(typed)) == json.loads(payload)


@pytest.mark.parametrize(("proto", "action", "response", "relpath"), _cases())
def test_mutations_rejected_by_both(proto: str, action: str, response: bool, relpath: str) -> None:
    oracle = Oracle(proto, relpath)
    schema = load_schema(relpath)
    draft6 = "draft-06" in schema["$schema"]
    rng = random.Random(f"{relpath}-mutate")
    checked = 0
    for n in range(MUTATED_INSTANCES):
        base = valid(schema, schema, rng, draft6=draft6, optional=1.0, spread=2 if FULL else n)
        sites = list(mutations(schema, schema, base))
        if not FULL and len(sites) > MUTATION_SAMPLE:
            rng.shuffle(sites)
            firsts = {(kind, len(path)): (kind, path, r) for kind, path, r in reversed(sites)}
            rest = [s for s in sites if s not in firsts.values()]
            sites = list(firsts.values()) + rest[: max(0, MUTATION_SAMPLE - len(firsts))]
        for kind, path, replacement in sites:
            mutated = apply(base, path, replacement)
            payload = _dumps(mutated, rng)
            found = oracle.errors(payload.decode())
            where = path[:-1] if kind in ("required", "additionalProperties") else path
            expected_path = _path(where)
            assert any(e.validator == kind and e.json_path == expected_path for e in found), (
                f"mutation {kind} at {expected_path} not rejected by jsonschema: {payload!r}")
            with pytest.raises(errors.OCPPJError) as info:
                _router_check(proto, action, response, payload)
            exc = info.value
            assert type(exc) is KEYWORD_ERROR[kind], (kind, expected_path, exc)
            assert exc.description.startswith(expected_path + ":"), (expected_path, exc.description)
            assert len(exc.description) <= 255
            with pytest.raises(type(exc)):
                ocppj.decode_payload(proto, action, payload, response=response)
            checked += 1
            if replacement is DROP:
                assert exc.code_for(proto) in errors.CODES[proto]
    assert checked > 0 or not schema.get("properties"), "no mutation site"


def test_codes_per_version_for_each_keyword() -> None:
    # The documented mapping, spelled per version (docs/ocppj.md).
    expect_16 = {
        "type": "TypeConstraintViolation", "required": "OccurenceConstraintViolation",
        "minItems": "OccurenceConstraintViolation", "maxItems": "OccurenceConstraintViolation",
        "additionalProperties": "FormationViolation", "enum": "PropertyConstraintViolation",
        "maxLength": "PropertyConstraintViolation", "minimum": "PropertyConstraintViolation",
        "maximum": "PropertyConstraintViolation", "multipleOf": "PropertyConstraintViolation",
        "format": "PropertyConstraintViolation",
    }
    for keyword, code in expect_16.items():
        exc = KEYWORD_ERROR[keyword]("$: x")
        assert exc.code_for("ocpp1.6") == code
        two = code.replace("Formation", "Format").replace("Occurence", "Occurrence")
        assert exc.code_for("ocpp2.0.1") == exc.code_for("ocpp2.1") == two


@pytest.mark.parametrize("text", ["0.3", "21.4", "0.7", "1e1", "100", "-0.1", "1.1"])
def test_multiple_of_is_decimal_exact(text: str) -> None:
    # jsonschema with float parsing rejects 0.3 (0.3 / 0.1 is not an integer in
    # binary floating point); OCPP 1.6 means decimal multiples (the ocpp
    # library parses these payloads as Decimal). We agree with the Decimal oracle.
    payload = ('{"connectorId":1,"csChargingProfiles":{"chargingProfileId":1,"stackLevel":0,'
               '"chargingProfilePurpose":"TxDefaultProfile","chargingProfileKind":"Absolute",'
               '"chargingSchedule":{"chargingRateUnit":"A","chargingSchedulePeriod":'
               f'[{{"startPeriod":0,"limit":{text}}}]}}}}}}')
    oracle = Oracle("ocpp1.6", "v16/SetChargingProfile.json")
    assert oracle.errors(payload) == []
    ocppj.dialect("ocpp1.6").validate_request("SetChargingProfile", payload.encode(),
                                              from_charger=False)
    bad = payload.replace(f'"limit":{text}', '"limit":0.25')
    assert [e.validator for e in oracle.errors(bad)] == ["multipleOf"]
    with pytest.raises(errors.PropertyConstraintViolation, match="limit"):
        ocppj.dialect("ocpp1.6").validate_request("SetChargingProfile", bad.encode(),
                                                  from_charger=False)


def test_draft6_integral_float_is_an_integer_draft4_not() -> None:
    # draft-06 (OCPP 2.x): 1.0 is an integer; draft-04 (OCPP 1.6 core): it is not.
    two = b'{"evseId":1.0,"connectorId":2,"connectorStatus":"Available","timestamp":"t"}'
    assert Oracle("ocpp2.0.1", "v201/StatusNotificationRequest.json").errors(two.decode()) == []
    ocppj.dialect("ocpp2.0.1").decode(b'[2,"1","StatusNotification",' + two + b"]")
    typed = ocppj.decode_payload("ocpp2.0.1", "StatusNotification", two, response=False)
    assert typed.evseId == 1 and type(typed.evseId) is int  # type: ignore[attr-defined]
    one = b'{"connectorId":1.0,"errorCode":"NoError","status":"Available"}'
    assert [e.validator for e in Oracle("ocpp1.6", "v16/StatusNotification.json").errors(
        one.decode())] == ["type"]
    with pytest.raises(errors.TypeConstraintViolation, match=r"\$\.connectorId"):
        ocppj.dialect("ocpp1.6").decode(b'[2,"1","StatusNotification",' + one + b"]")
