"""The router raises its soft RLIMIT_NOFILE to the hard limit at start and says
how many connections that allows (containerd starts processes at 1024 soft)."""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import timeout

ENV = {k: v for k, v in os.environ.items() if not k.startswith("OCPP_ROUTER_")}


def start_with_limit(soft: int, hard: int, *args: str) -> tuple[str, int]:
    """Run ``ocpp-router serve`` with the given fd limits until it listens; its log
    so far and the soft limit it runs with."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    proc = subprocess.Popen(
        [sys.executable, "-m", "router.cli.main", "serve", "--port", "0", "--admin-port", "0",
         "--redis-url", "redis://127.0.0.1:1/0", *args],
        env=ENV, stderr=subprocess.PIPE, text=True, preexec_fn=limit)
    assert proc.stderr is not None
    log = ""
    deadline = time.monotonic() + timeout(30)
    try:
        while "listening on" not in log:
            assert time.monotonic() < deadline, log
            line = proc.stderr.readline()
            assert line, log
            log += line
        with open(f"/proc/{proc.pid}/limits") as f:
            found = re.search(r"^Max open files\s+(\d+)", f.read(), re.M)
        assert found is not None
        return log, int(found.group(1))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=timeout(30))


def test_the_soft_limit_is_raised_to_the_hard_one() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 1024:
        pytest.skip(f"needs a finite hard fd limit above 1024 (here {hard})")
    log, soft = start_with_limit(1024, hard, "--max-connections", "100")
    assert soft == hard
    assert (f"file descriptor limit {hard}: room for about {hard - 64} connections per "
            f"process (--max-connections 100)") in log


def test_a_hard_limit_below_max_connections_is_a_warning() -> None:
    log, soft = start_with_limit(256, 512, "--max-connections", "15000")
    assert soft == 512
    assert ("WARNING router.supervisor: file descriptor limit 512 allows about 448 "
            "connections per process, fewer than --max-connections 15000") in log
