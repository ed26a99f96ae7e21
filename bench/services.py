"""Start and stop the processes a scenario measures (servers, backends, Redis).

Every service is a real child process on a free loopback port; ``wait_port``
polls until it accepts TCP connections.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from router.embedded_redis import free_port

REPO = Path(__file__).resolve().parent.parent


class ServiceError(RuntimeError):
    """A service did not start or exited while it was needed."""


def wait_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None,
              ) -> None:
    """Wait until ``host:port`` accepts a TCP connection.

    Raises:
        ServiceError: the deadline passed, or ``proc`` exited first.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"process exited with status {proc.returncode} before "
                               f"listening on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise ServiceError(f"nothing listens on {host}:{port} after {timeout:.0f}s")


class Service:
    """A child process that listens on ``port`` once it is ready.

    Its stderr goes to a log file (``log_path``) so a failed start can be shown.
    """

    def __init__(self, name: str, argv: Sequence[str], port: int | None,
                 host: str = "127.0.0.1", env: dict[str, str] | None = None,
                 ready_timeout: float = 30.0) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.host = host
        self.env = env
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.mkdtemp(prefix=f"bench-{name}-")
        self.log_path = os.path.join(self._dir, "stderr.log")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Service:
        """Start the process and wait until it listens.

        Raises:
            ServiceError: it could not be run or did not become ready.
        """
        env = dict(os.environ, **(self.env or {}))
        env.setdefault("PYTHONPATH", str(REPO))
        with open(self.log_path, "wb") as log:
            try:
                self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=log, cwd=REPO, env=env)
            except OSError as exc:
                raise ServiceError(f"{self.name}: cannot run {self.argv[0]}: {exc}") from exc
        if self.port is not None:
            try:
                wait_port(self.host, self.port, self.ready_timeout, self.proc)
            except ServiceError as exc:
                tail = self.log_tail()
                self.stop()
                raise ServiceError(f"{self.name}: {exc}; stderr: {tail}") from exc
        return self

    def log_tail(self, chars: int = 600) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")[-chars:].strip()
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        self.cleanup()


def python_module(module: str, *args: str) -> list[str]:
    """argv that runs ``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


class HAProxy(Service):
    """A real ``haproxy`` (Debian's 2.6) balancing TCP round-robin over ``backends``.

    Plain TCP mode (``mode tcp``): the WebSocket upgrade, TLS and close codes
    pass through untouched, as behind a cloud network load balancer. ``maxconn``
    stays at or below 9000 because haproxy may not raise its descriptor limit
    here (20,000 per process, two per proxied connection plus its own).
    ``set_backends`` rewrites the server list and reloads with ``-sf`` (the
    old process finishes its connections, as in a rolling configuration change).
    """

    def __init__(self, backends: Sequence[tuple[str, int]], port: int | None = None,
                 maxconn: int = 9000, balance: str = "roundrobin",
                 timeout_s: int = 3600) -> None:
        self.listen_port = port if port is not None else free_port()
        self.maxconn = min(maxconn, 9000)
        self.balance = balance
        self.timeout_s = timeout_s
        super().__init__("haproxy", [], self.listen_port)
        self.config_path = os.path.join(self._dir, "haproxy.cfg")
        self._write_config(backends)
        self.argv = [_haproxy(), "-db", "-f", self.config_path]

    def _write_config(self, backends: Sequence[tuple[str, int]]) -> None:
        servers = "\n".join(f"    server s{i} {host}:{port} check inter 500 fall 2 rise 1"
                            for i, (host, port) in enumerate(backends))
        Path(self.config_path).write_text(f"""\
global
    maxconn {self.maxconn}
defaults
    mode tcp
    timeout connect 2s
    timeout client {self.timeout_s}s
    timeout server {self.timeout_s}s
    timeout tunnel {self.timeout_s}s
frontend chargers
    bind 127.0.0.1:{self.listen_port}
    maxconn {self.maxconn}
    default_backend routers
backend routers
    balance {self.balance}
{servers}
""")

    def set_backends(self, backends: Sequence[tuple[str, int]]) -> None:
        """Point haproxy at ``backends`` and reload (new process, old one drains)."""
        assert self.proc is not None
        self._write_config(backends)
        old = self.proc
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([*self.argv, "-sf", str(old.pid)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self._old = old

    def wait_reloaded(self, timeout: float = 10.0) -> None:
        """Wait until the process replaced by :meth:`set_backends` has exited
        (it exits once its last proxied connection is closed).

        Raises:
            ServiceError: it is still running after ``timeout`` seconds.
        """
        old = getattr(self, "_old", None)
        if old is None:
            return
        try:
            old.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise ServiceError(f"haproxy {old.pid} still runs {timeout:.0f}s after the "
                               "reload (connections still open through it)") from exc

    def stop(self, timeout: float = 10.0) -> None:
        old = getattr(self, "_old", None)
        super().stop(timeout)
        if old is not None and old.poll() is None:
            old.kill()
            old.wait()


def _haproxy() -> str:
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy"
                                         if os.path.exists("/usr/sbin/haproxy") else None)
    if not found:
        raise ServiceError("no haproxy: run scripts/system-deps.sh (Debian package haproxy)")
    return found



def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` in a Prometheus exposition ``text`` whose
    labels include ``labels`` (every label value given must match)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total
