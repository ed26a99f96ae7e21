"""A real Sentinel deployment: one master, one replica, three sentinels.

Every process is a ``redis-server`` child on a free loopback port in its own
temp dir (sentinels rewrite their config file, so each gets its own copy).
``down-after-milliseconds`` is short so a failover after a SIGKILL takes a
few seconds, not the default 30. :meth:`SentinelDeployment.kill_master`
SIGKILLs the current master; :meth:`wait_failover` waits until the sentinels
name another master and that server says it is the master.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from router.embedded_redis import find_redis_server, free_port, terminate

MASTER_NAME = "ocpp-master"


def _command(port: int, *args: str, timeout: float = 2.0) -> bytes:
    """One inline command, its raw reply (tests only: no RESP parsing needed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall((" ".join(args) + "\r\n").encode())
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        # Multi-bulk replies: read until quiet for a moment.
        s.settimeout(0.1)
        try:
            while chunk := s.recv(65536):
                data += chunk
        except OSError:
            pass
        return data


class _Proc:
    def __init__(self, name: str, args: list[str], directory: Path, port: int) -> None:
        self.name = name
        self.port = port
        self.dir = directory
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     cwd=self.dir)

    def ping(self) -> bool:
        try:
            return _command(self.port, "PING", timeout=0.5).startswith(b"+PONG")
        except OSError:
            return False

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(sig)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)


class SentinelDeployment:
    """Master + replica + three sentinels (quorum 2).

    Args:
        down_after_ms: how long a master must be unreachable to be declared
            down (``sentinel down-after-milliseconds``).
    """

    def __init__(self, down_after_ms: int = 1000, replicas: int = 1) -> None:
        self.down_after_ms = down_after_ms
        self.binary = find_redis_server()
        self.root = Path(tempfile.mkdtemp(prefix="ocpp-router-sentinel-"))
        self.servers: list[_Proc] = []
        self.sentinels: list[_Proc] = []
        self.replicas = replicas

    # -- URLs --------------------------------------------------------------------

    def url(self, db: int = 0) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{MASTER_NAME}/{db}"

    # -- lifecycle ---------------------------------------------------------------

    def _server(self, index: int, replica_of: int | None) -> _Proc:
        port = free_port()
        d = self.root / f"server{index}"
        d.mkdir()
        args = [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d),
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--loglevel", "warning", "--logfile", str(d / "redis.log"),
                "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"]
        if replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(replica_of)]
        return _Proc(f"server{index}", args, d, port)

    def _sentinel(self, index: int, master_port: int) -> _Proc:
        port = free_port()
        d = self.root / f"sentinel{index}"
        d.mkdir()
        conf = d / "sentinel.conf"
        conf.write_text("\n".join([
            f"port {port}", "bind 127.0.0.1", f"dir {d}", "daemonize no",
            f"logfile {d / 'sentinel.log'}", "loglevel warning",
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2",
            f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}",
            f"sentinel failover-timeout {MASTER_NAME} 10000",
            f"sentinel parallel-syncs {MASTER_NAME} 1",
        ]) + "\n")
        return _Proc(f"sentinel{index}", [self.binary, str(conf), "--sentinel"], d, port)

    def start(self, timeout: float = 30.0) -> SentinelDeployment:
        try:
            master = self._server(0, None)
            self.servers = [master] + [self._server(i + 1, master.port)
                                       for i in range(self.replicas)]
            for s in self.servers:
                s.start()
            self._wait(lambda: all(s.ping() for s in self.servers), timeout, "servers")
            self._wait(lambda: self._replicas_online(master.port) >= self.replicas, timeout,
                       "replicas in sync")
            self.sentinels = [self._sentinel(i, master.port) for i in range(3)]
            for s in self.sentinels:
                s.start()
            self._wait(lambda: all(self._sentinel_sees_all(s) for s in self.sentinels),
                       timeout, "sentinels to discover each other and the replica")
        except BaseException:
            self.stop()
            raise
        return self

    def _replicas_online(self, port: int) -> int:
        try:
            info = _command(port, "INFO", "replication").decode()
        except OSError:
            return 0
        return sum(1 for line in info.splitlines()
                   if line.startswith("slave") and "state=online" in line)

    def _sentinel_sees_all(self, sentinel: _Proc) -> bool:
        try:
            reply = _command(sentinel.port, "SENTINEL", "MASTER", MASTER_NAME).decode()
        except OSError:
            return False
        fields = reply.split("\r\n")
        def value(name: str) -> str:
            try:
                return fields[fields.index(name) + 2]
            except (ValueError, IndexError):
                return ""
        return (value("num-slaves") == str(self.replicas)
                and value("num-other-sentinels") == "2")

    @staticmethod
    def _wait(predicate: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():  # type: ignore[operator]
                return
            time.sleep(0.05)
        raise RuntimeError(f"sentinel deployment: timed out waiting for {what}")

    def stop(self) -> None:
        for p in self.sentinels + self.servers:
            p.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> SentinelDeployment:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- topology ----------------------------------------------------------------

    def master_port(self) -> int:
        """The master's port as the first sentinel that answers sees it."""
        for s in self.sentinels:
            try:
                reply = _command(s.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
            except OSError:
                continue
            parts = reply.split(b"\r\n")
            if len(parts) >= 5 and parts[0] == b"*2":
                return int(parts[4])
        raise RuntimeError("no sentinel named the master")

    def master(self) -> _Proc:
        port = self.master_port()
        return next(s for s in self.servers if s.port == port)

    def kill_master(self) -> _Proc:
        """SIGKILL the current master; returns it (restartable with ``.start()``)."""
        master = self.master()
        master.kill(signal.SIGKILL)
        return master

    def wait_failover(self, old_port: int, timeout: float = 60.0) -> int:
        """Wait until the sentinels name a new master that says it is the master."""
        def promoted() -> bool:
            try:
                port = self.master_port()
            except RuntimeError:
                return False
            if port == old_port:
                return False
            try:
                return _command(port, "ROLE").startswith(b"*3\r\n$6\r\nmaster")
            except OSError:
                return False
        self._wait(promoted, timeout, "the failover")
        return self.master_port()

    def replica_of(self, old: _Proc, new_port: int) -> None:
        """Restart ``old`` (the killed master) as a replica of ``new_port``, as an
        operator or the sentinels would."""
        if "--replicaof" not in old.args:
            old.args += ["--replicaof", "127.0.0.1", str(new_port)]
        old.start()
        self._wait(old.ping, 20, f"{old.name} to restart")

