"""The bench's SDK backend (bench.backends.sdk_constant) against a real
redis-server: every action of the charger cycle answered with its constant,
with ``async def`` and with plain ``def`` handlers."""

from __future__ import annotations

import subprocess
import sys
import time

import orjson
import pytest
import redis

from bench.backends.sdk_constant import ANSWERS
from bench.services import Service
from router.embedded_redis import RedisServer, free_port
from tests.conftest import timeout


@pytest.mark.parametrize("handlers", ["async", "def"])
def test_sdk_backend_answers_the_cycle_with_constants(redis_server: RedisServer,
                                                      handlers: str) -> None:
    r = redis.Redis.from_url(redis_server.url)
    argv = [sys.executable, "-m", "bench.backends.sdk_constant", "--redis-url",
            redis_server.url, "--handlers", handlers]
    with Service("sdk", argv, None):
        deadline = time.monotonic() + timeout(20)
        while time.monotonic() < deadline:
            try:
                if r.xinfo_groups("ocpp:in:{0}"):
                    break
            except redis.ResponseError:
                pass
            time.sleep(0.05)
        base = {"v": "1", "node": "node-a", "conn": "c0ffee", "ts": "1", "proto": "ocpp1.6",
                "payload": "{}"}
        for n, action in enumerate(ANSWERS):
            r.xadd("ocpp:in:{0}", {**base, "kind": "call", "cs": f"CP-{n}", "id": str(n),
                                   "action": action})
        while r.xlen("ocpp:out:node-a") < len(ANSWERS) and time.monotonic() < deadline:
            time.sleep(0.02)
        out = [f for _, f in r.xrange("ocpp:out:node-a")]
        assert [orjson.loads(f[b"payload"]) for f in out] == list(ANSWERS.values())
        assert [f[b"id"] for f in out] == [str(n).encode() for n in range(len(ANSWERS))]
        while r.xpending("ocpp:in:{0}", "bench-sdk")["pending"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert r.xpending("ocpp:in:{0}", "bench-sdk")["pending"] == 0
    r.close()


def test_sdk_backend_without_redis_says_so_in_one_line() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.backends.sdk_constant",
                           "--redis-url", f"redis://127.0.0.1:{free_port()}/0"],
                          capture_output=True, text=True, timeout=timeout(30))
    assert done.returncode == 1
    assert done.stderr.startswith("sdk_constant: ") and done.stderr.count("\n") == 1
