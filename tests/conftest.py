"""Shared fixtures: real redis-server processes, free ports, one timeout factor.

Every test that needs Redis gets its own redis-server (function scope) or shares
one per worker (``redis_session``) and then uses a unique key prefix.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from router.embedded_redis import RedisServer, free_port

# One factor scales every timeout in the tests (slow or loaded machines: raise it).
TIMEOUT_FACTOR = float(os.environ.get("OCPP_ROUTER_TEST_TIMEOUT_FACTOR", "1"))


def timeout(seconds: float) -> float:
    return seconds * TIMEOUT_FACTOR


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server for this test only."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_session() -> Iterator[RedisServer]:
    """One redis-server per test worker; combine with ``key_prefix``."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def key_prefix() -> str:
    """A key prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def port() -> int:
    return free_port()


# ---------------------------------------------------------------- router nodes
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402


@dataclass
class RouterNode:
    """A real ``ocpp-router serve`` process."""

    proc: subprocess.Popen[bytes]
    port: int
    admin_port: int
    node_id: str
    redis_url: str
    key_prefix: str
    args: list[str] = field(default_factory=list)

    def url(self, identity: str, host: str = "127.0.0.1") -> str:
        return f"ws://{host}:{self.port}/ocpp/{identity}"

    def admin(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.admin_port}{path}", timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        from bench.services import metric_sum

        _, text = self.admin("/metrics")
        return metric_sum(text, name, **labels)

    def stop(self, sig: int = signal.SIGTERM, wait: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        return int(self.proc.returncode)


def start_router(redis_url: str, key_prefix: str, *args: str, node_id: str | None = None,
                 ready: bool = True, wait: float = 20) -> RouterNode:
    # free_port() hands out a port that is free now; on a busy machine another
    # process (an outgoing connection's ephemeral port, another suite) can
    # take it before the router binds. That race is the environment's, not the
    # router's: pick new ports and start again, a bounded number of times.
    for _ in range(4):
        try:
            return _start_router(redis_url, key_prefix, *args, node_id=node_id, ready=ready,
                                 wait=wait)
        except _PortTaken:
            continue
    raise RuntimeError("no free ports for the router after 4 attempts")


class _PortTaken(RuntimeError):
    pass


def _start_router(redis_url: str, key_prefix: str, *args: str, node_id: str | None,
                  ready: bool, wait: float) -> RouterNode:
    port = free_port()
    admin_port = free_port()
    while admin_port == port:  # the kernel may hand out the same free port twice
        admin_port = free_port()
    node_id = node_id or f"node-{uuid.uuid4().hex[:8]}"
    argv = [sys.executable, "-m", "router.cli.main", "serve", "--host", "127.0.0.1",
            "--port", str(port), "--admin-host", "127.0.0.1", "--admin-port", str(admin_port),
            "--redis-url", redis_url, "--key-prefix", key_prefix, "--node-id", node_id,
            "--drain-seconds", "1", *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCPP_ROUTER_")}
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env)
    node = RouterNode(proc, port, admin_port, node_id, redis_url, key_prefix, list(args))
    deadline = time.monotonic() + timeout(wait)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            if proc.stderr:
                proc.stderr.close()     # else a later test fails on its ResourceWarning
            if "address already in use" in err:
                raise _PortTaken(err)
            raise RuntimeError(f"router exited with {proc.returncode}: {err[-2000:]}")
        try:
            status, _ = node.admin("/readyz")
            if status == 200 or (not ready and status == 503):
                return node
        except OSError:
            pass
        time.sleep(0.05)
    node.stop(signal.SIGKILL)
    raise RuntimeError("router did not become ready")


@pytest.fixture
def router_factory(redis_server: RedisServer,
                   key_prefix: str) -> Iterator[Callable[..., RouterNode]]:
    """Start router processes on this test's Redis; all stopped at teardown."""
    nodes: list[RouterNode] = []

    def make(*args: str, **kw: object) -> RouterNode:
        node = start_router(redis_server.url, key_prefix, *args, **kw)  # type: ignore[arg-type]
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.stop()


@pytest.fixture
def router_node(router_factory: Callable[..., RouterNode]) -> RouterNode:
    """One router process with default options (auth none) on a fresh Redis."""
    return router_factory()
