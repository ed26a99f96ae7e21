"""atheris fuzz target for the OCPP-J envelope decoder (opt-in, not part of make test).

    .venv/bin/python -m tests.ocppj.fuzz_envelope -max_total_time=600

Every input is decoded by each dialect; the same invariants as
tests/ocppj/test_fuzz.py are asserted (documented outcomes only). The compiled
module is not built with coverage instrumentation, so libFuzzer gets coverage
feedback from the Python parts only (error path, walker); inputs are seeded
with valid frames so mutations stay close to real traffic.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    import router.ocppj as ocppj
    from router.ocppj import errors

from tests.ocppj.test_fuzz import DIALECTS, check

SEEDS = [
    b'[2,"19223201","BootNotification",{"chargePointVendor":"ACME","chargePointModel":"X1"}]',
    b'[3,"1",{"status":"Accepted","currentTime":"2026-11-21T12:00:00Z","interval":300}]',
    b'[4,"1","GenericError","",{}]',
    b'[6,"s","NotifyPeriodicEventStream",{"id":1,"pending":0,"basetime":"2026-01-01T00:00:00Z",'
    b'"data":[{"t":0.5,"v":"1"}]}]',
]


def one_input(data: bytes) -> None:
    for d in DIALECTS:
        check(d, data)


def main() -> None:
    assert ocppj.PROTOCOLS and errors.CODES
    atheris.Setup(sys.argv, one_input)
    for seed in SEEDS:
        one_input(seed)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
