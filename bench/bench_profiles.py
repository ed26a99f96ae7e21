"""CPU per message of validation with and without validation profiles.

    .venv/bin/python bench/bench_profiles.py
    .venv/bin/python bench/bench_profiles.py --number 20000 --rounds 7 --json out.json

What a router process does per charger CALL (``Dialect.decode`` of the frame),
for an OCPP 2.0.1 MeterValues with a signed meter value, side by side:

* ``strict, valid``: a valid frame. The path every message takes, profiles or
  not: a connection's rules are consulted only after the strict decode
  rejected a message (router/server/connection.py ``invalid_message``).
* ``strict, rejected``: the same frame with a 3,000-character signed meter
  value, rejected (today's cost of a broken message, CALLERROR not included).
* ``relaxed``: that rejected frame, then what a connection with a
  ``string_length`` rule adds: the envelope re-read with the payload bytes
  kept (``profiles.envelope_only``) and the relaxed walk (``relaxed_check``).

Method as bench/bench_validation.py: ``--number`` messages per round,
``--rounds`` rounds, this process's CPU time per message of the best round.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_validation import measure
from router.ocppj import dialect
from router.ocppj.errors import OCPPJError
from router.ocppj.profiles import envelope_only, parse_rules, relaxed_check

TS = "2026-11-21T12:00:00Z"


def frame(signed_len: int) -> bytes:
    sampled = [{"value": 12345.6, "measurand": "Energy.Active.Import.Register",
                "unitOfMeasure": {"unit": "Wh"},
                "signedMeterValue": {"signedMeterData": "A" * signed_len, "signingMethod": "ECDSA",
                                     "encodingMethod": "OCMF", "publicKey": "K" * 64}},
               {"value": 7200.0, "measurand": "Power.Active.Import"},
               {"value": 230.1, "measurand": "Voltage", "phase": "L1-N"}]
    return json.dumps([2, "m1", "MeterValues",
                       {"evseId": 1, "meterValue": [{"timestamp": TS, "sampledValue": sampled}]}],
                      separators=(",", ":")).encode()


def best_us(fn: Callable[[], object], number: int, rounds: int) -> float:
    return round(measure(fn, number, rounds) * 1e6, 2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--number", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    d = dialect("ocpp2.0.1")
    rules = parse_rules([{"name": "signed", "identity": "*", "actions": ["MeterValues"],
                          "relax": ["string_length"]}])
    valid, broken = frame(2000), frame(3000)
    d.decode(valid)

    def rejected() -> None:
        try:
            d.decode(broken)
        except OCPPJError:
            return
        raise AssertionError("the broken frame was accepted")

    def relaxed() -> None:
        try:
            d.decode(broken)
        except OCPPJError:
            msg = envelope_only(d).decode(broken)
            assert msg is not None and msg.payload is not None
            if not relaxed_check(d, rules, "MeterValues", msg.payload, False):
                raise AssertionError("not relaxed") from None

    result = {
        "message": f"OCPP 2.0.1 MeterValues, {len(valid)}/{len(broken)} bytes",
        "us_per_msg": {
            "strict, valid": best_us(lambda: d.decode(valid), args.number, args.rounds),
            "strict, rejected": best_us(rejected, args.number, args.rounds),
            "relaxed": best_us(relaxed, args.number, args.rounds),
        },
    }
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
