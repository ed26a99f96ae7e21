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
