"""The generator's pre-encoded messages and the responders' answers are valid
for the OCA JSON schemas (the copies shipped with the ``ocpp`` package)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import ocpp
import orjson
import pytest

from router.sim import messages

SCHEMAS = Path(ocpp.__file__).parent
_DIRS = {"ocpp1.6": "v16", "ocpp2.0.1": "v201", "ocpp2.1": "v21"}


@cache
def schema(proto: str, action: str, response: bool) -> dict[str, Any]:
    if proto == "ocpp1.6":
        name = f"{action}Response.json" if response else f"{action}.json"
    else:
        name = f"{action}{'Response' if response else 'Request'}.json"
    return json.loads((SCHEMAS / _DIRS[proto] / "schemas" / name).read_text())


def check(proto: str, action: str, payload: Any, response: bool = False) -> None:
    s = schema(proto, action, response)
    jsonschema.validators.validator_for(s)(s).validate(payload)


@pytest.mark.parametrize("proto", messages.PROTOCOLS)
def test_mix_calls_are_schema_valid(proto: str) -> None:
    cycle = messages.mix(proto)
    assert {a for a, _ in cycle} >= {"StatusNotification", "MeterValues", "Heartbeat"}
    for action, body in [("BootNotification", messages.boot_body(proto)), *cycle]:
        msg = orjson.loads(messages.call(b"42", body))
        assert msg[:3] == [2, "42", action]
        check(proto, action, msg[3])


@pytest.mark.parametrize("proto", messages.PROTOCOLS)
def test_meter_values_carry_several_samples(proto: str) -> None:
    body = dict(messages.mix(proto))["MeterValues"]
    sampled = orjson.loads(messages.call(b"1", body))[3]["meterValue"][0]["sampledValue"]
    assert len(sampled) >= 5


@pytest.mark.parametrize("proto", messages.PROTOCOLS)
def test_csms_responses_are_schema_valid(proto: str) -> None:
    for action, payload in messages.CSMS_RESPONSES[proto].items():
        check(proto, action, orjson.loads(payload), response=True)
    # Every action of the mix has its own answer.
    assert {a for a, _ in messages.mix(proto)} <= set(messages.CSMS_RESPONSES[proto])


BACKEND_CALLS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "ocpp1.6": [
        ("RemoteStartTransaction", {"idTag": "X"}),
        ("Reset", {"type": "Soft"}),
        ("ChangeConfiguration", {"key": "HeartbeatInterval", "value": "60"}),
        ("GetConfiguration", {"key": ["HeartbeatInterval", "MeterValueSampleInterval"]}),
        ("GetConfiguration", {}),
        ("TriggerMessage", {"requestedMessage": "Heartbeat"}),
        ("UnlockConnector", {"connectorId": 1}),
        ("DataTransfer", {"vendorId": "v"}),
        ("GetLocalListVersion", {}),
    ],
    "ocpp2.0.1": [
        ("RequestStartTransaction", {"idToken": {"idToken": "X", "type": "ISO14443"},
                                     "remoteStartId": 1}),
        ("Reset", {"type": "Immediate"}),
        ("GetVariables", {"getVariableData": [{"component": {"name": "OCPPCommCtrlr"},
                                               "variable": {"name": "HeartbeatInterval"}}]}),
        ("SetVariables", {"setVariableData": [{"component": {"name": "OCPPCommCtrlr"},
                                               "variable": {"name": "HeartbeatInterval"},
                                               "attributeValue": "60"}]}),
        ("TriggerMessage", {"requestedMessage": "Heartbeat"}),
        ("UnlockConnector", {"evseId": 1, "connectorId": 1}),
        ("GetBaseReport", {"requestId": 1, "reportBase": "FullInventory"}),
    ],
}
BACKEND_CALLS["ocpp2.1"] = BACKEND_CALLS["ocpp2.0.1"]


@pytest.mark.parametrize("proto", messages.PROTOCOLS)
def test_charger_answers_to_backend_calls_are_schema_valid(proto: str) -> None:
    for action, payload in BACKEND_CALLS[proto]:
        check(proto, action, payload)  # the test's own CALL is valid
        answer = messages.charger_response(proto, action, payload)
        assert answer is not None, action
        check(proto, action, orjson.loads(answer), response=True)


def test_unknown_backend_call_is_not_implemented() -> None:
    assert messages.charger_response("ocpp1.6", "NoSuchAction", {}) is None
    err = orjson.loads(messages.callerror(b"7", "NotImplemented", "no"))
    assert err == [4, "7", "NotImplemented", "no", {}]
