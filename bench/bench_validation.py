"""CPU per message of OCPP-J decoding + schema validation, side by side.

    .venv/bin/python bench/bench_validation.py
    .venv/bin/python bench/bench_validation.py --number 20000 --rounds 7 --json out.json

Messages (charger CALLs, as frames on the wire): OCPP 1.6 BootNotification,
StatusNotification, a MeterValues with 3 sampled values (~400 bytes), and an
OCPP 2.0.1 TransactionEvent (Updated, with a meter value). Variants, each
starting from the frame bytes and ending with a validated payload:

* ``router decode``: ``router.ocppj.dialect(proto).decode(frame)`` — envelope
  scan (Cython) + msgspec decode of the payload into its generated type; what
  the router does per charger CALL.
* ``router payload``: ``Dialect.validate_request(action, payload)`` — payload
  only (the backend-reply path).
* ``ocpp library``: ``ocpp.messages.unpack`` + ``_validate_payload`` (the
  synchronous core of ``validate_payload``): ``json.loads`` and a cached
  ``jsonschema.Draft4Validator``, exactly as ``ocpp`` validates every message.
* ``jsonschema``: ``json.loads`` + a prebuilt validator of the schema's own draft.
* ``fastjsonschema``: ``json.loads`` + the validator compiled by
  ``fastjsonschema.compile``.
* ``msgspec only``: ``msgspec.json.Decoder(T).decode(payload)`` — the floor
  (no envelope, no error classification).

Method: each variant runs ``--number`` messages per round, ``--rounds``
rounds; the figure is this process's CPU time (``time.process_time``: user +
system) per message of the best round (least disturbed by other work on a
shared machine). Every variant is first checked to accept the message.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastjsonschema
import jsonschema
import msgspec
from ocpp.messages import _validate_payload, unpack

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import router.ocppj as ocppj
from router.ocppj._walker import load_schema

MESSAGES: list[tuple[str, str, str, dict[str, Any]]] = [
    ("BootNotification 1.6", "ocpp1.6", "BootNotification", {
        "chargePointVendor": "ACME", "chargePointModel": "X1-22kW",
        "chargePointSerialNumber": "SN-000123456", "chargeBoxSerialNumber": "CB-000123456",
        "firmwareVersion": "1.4.2-rc3", "iccid": "89490200001234567890", "imsi": "262011234567890",
        "meterType": "ACME MT-3", "meterSerialNumber": "MT-000987"}),
    ("StatusNotification 1.6", "ocpp1.6", "StatusNotification", {
        "connectorId": 1, "errorCode": "NoError", "status": "Charging",
        "timestamp": "2026-11-21T12:00:00.000Z"}),
    ("MeterValues 1.6 (3 samples)", "ocpp1.6", "MeterValues", {
        "connectorId": 1, "transactionId": 4711, "meterValue": [{
            "timestamp": "2026-11-21T12:00:00.000Z", "sampledValue": [
                {"value": "123456.7", "context": "Sample.Periodic", "format": "Raw",
                 "measurand": "Energy.Active.Import.Register", "location": "Outlet", "unit": "Wh"},
                {"value": "16.02", "context": "Sample.Periodic", "measurand": "Current.Import",
                 "phase": "L1", "location": "Outlet", "unit": "A"},
                {"value": "229.8", "context": "Sample.Periodic", "measurand": "Voltage",
                 "phase": "L1-N", "location": "Outlet", "unit": "V"}]}]}),
    ("TransactionEvent 2.0.1", "ocpp2.0.1", "TransactionEvent", {
        "eventType": "Updated", "timestamp": "2026-11-21T12:00:00.000Z",
        "triggerReason": "MeterValuePeriodic", "seqNo": 12, "offline": False,
        "transactionInfo": {"transactionId": "b7e1c0de-4711", "chargingState": "Charging"},
        "evse": {"id": 1, "connectorId": 1}, "idToken": {"idToken": "04A2B3C4D5", "type": "ISO14443"},
        "meterValue": [{"timestamp": "2026-11-21T12:00:00.000Z", "sampledValue": [
            {"value": 123456.7, "context": "Sample.Periodic",
             "measurand": "Energy.Active.Import.Register", "unitOfMeasure": {"unit": "Wh"}},
            {"value": 11040.0, "context": "Sample.Periodic", "measurand": "Power.Active.Import",
             "unitOfMeasure": {"unit": "W"}}]}]}),
]


def variants(proto: str, action: str, frame: bytes, payload: bytes) -> dict[str, Callable[[], Any]]:
    d = ocppj.dialect(proto)
    version = proto.removeprefix("ocpp")
    text = frame.decode()
    module = ocppj.types(proto)
    schema_file = module.SCHEMA_FILES[f"{action}:request"]
    schema = load_schema(schema_file)
    validator = jsonschema.validators.validator_for(schema)(schema)
    fast = fastjsonschema.compile(schema)
    typed = msgspec.json.Decoder(module.REQUESTS[action]).decode
    loads = json.loads
    decode = d.decode
    validate_request = d.validate_request

    def ocpp_library() -> None:
        _validate_payload(unpack(text), version)

    return {
        "router decode": lambda: decode(frame),
        "router payload": lambda: validate_request(action, payload, from_charger=True),
        "ocpp library": ocpp_library,
        "jsonschema": lambda: validator.validate(loads(frame)[3]),
        "fastjsonschema": lambda: fast(loads(frame)[3]),
        "msgspec only": lambda: typed(payload),
    }


def measure(fn: Callable[[], Any], number: int, rounds: int) -> float:
    """Best round's CPU seconds per call."""
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(number):
            fn()
        best = min(best, (time.process_time() - start) / number)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--number", type=int, default=20000, help="messages per round (fast variants)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the best is reported")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)

    rows = []
    for label, proto, action, body in MESSAGES:
        payload = json.dumps(body, separators=(",", ":")).encode()
        frame = b'[2,"19223201",' + json.dumps(action).encode() + b"," + payload + b"]"
        row: dict[str, Any] = {"message": label, "proto": proto, "action": action,
                               "frame_bytes": len(frame), "payload_bytes": len(payload), "us": {}}
        for name, fn in variants(proto, action, frame, payload).items():
            fn()  # accepted by every variant (raises otherwise)
            slow = name in ("ocpp library", "jsonschema")
            number = max(200, args.number // 50) if slow else args.number
            row["us"][name] = measure(fn, number, args.rounds) * 1e6
        rows.append(row)

    names = list(rows[0]["us"])
    print(f"CPU µs per message (best of {args.rounds} rounds; ratio = variant / router decode)")
    print(f"{'message':30} {'bytes':>5} " + " ".join(f"{n:>22}" for n in names))
    for row in rows:
        base = row["us"]["router decode"]
        cells = " ".join(f"{row['us'][n]:9.2f} ({row['us'][n] / base:7.1f}x)" for n in names)
        print(f"{row['message']:30} {row['frame_bytes']:5d} {cells}")
    meta = {"python": sys.version.split()[0], "machine": platform.machine(),
            "processor": platform.processor(),
            "versions": {p: importlib.metadata.version(p)
                         for p in ("jsonschema", "fastjsonschema", "ocpp", "msgspec")},
            "number": args.number, "rounds": args.rounds,
            "command": " ".join([Path(sys.executable).name, *sys.argv])}
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
