"""A real Redis Cluster: three masters and three replicas.

Six ``redis-server --cluster-enabled yes`` children on free loopback ports,
each in its own temp dir (cluster nodes write ``nodes.conf``), joined by
``redis-cli --cluster create … --cluster-replicas 1 --cluster-yes``.
``cluster-node-timeout`` is 2000 ms, so a master's SIGKILL is failed over in
a few seconds. :meth:`ClusterDeployment.kill_master` SIGKILLs the master of a
slot; :meth:`wait_failover` waits until every slot is served again.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from router.embedded_redis import find_redis_server, free_port
from tests.redis_modes.sentinel import _command, _Proc


def redis_cli() -> str:
    path = shutil.which("redis-cli")
    if path is None:
        raise RuntimeError("redis-cli not found (Debian package redis-tools)")
    return path


class ClusterDeployment:
    """Three masters + three replicas on 127.0.0.1.

    Args:
        masters: number of masters (each gets ``replicas`` replicas).
        node_timeout_ms: ``cluster-node-timeout``.
    """

    def __init__(self, masters: int = 3, replicas: int = 1,
                 node_timeout_ms: int = 2000) -> None:
        self.n = masters * (1 + replicas)
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.binary = find_redis_server()
        self.root = Path(tempfile.mkdtemp(prefix="ocpp-router-cluster-"))
        self.nodes: list[_Proc] = []

    def url(self, seeds: int = 2) -> str:
        hosts = ",".join(f"127.0.0.1:{p.port}" for p in self.nodes[:seeds])
        return f"redis+cluster://{hosts}"

    # -- lifecycle ---------------------------------------------------------------

    def __enter__(self) -> ClusterDeployment:
        try:
            for i in range(self.n):
                self.nodes.append(self._start_node(i))
            # free_port() races with other processes on a shared machine: a
            # node that could not bind its port exits; start it on another.
            for _ in range(4):
                self._wait(lambda: all(n.ping() or not n.alive for n in self.nodes), 20,
                           "the nodes to start")
                dead = [i for i, n in enumerate(self.nodes) if not n.alive]
                if not dead:
                    break
                for i in dead:
                    shutil.rmtree(self.root / f"node{i}", ignore_errors=True)
                    self.nodes[i] = self._start_node(i)
            self._wait(lambda: all(n.ping() for n in self.nodes), 20, "the nodes to start")
            subprocess.run([redis_cli(), "--cluster", "create",
                            *(f"127.0.0.1:{n.port}" for n in self.nodes),
                            "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                           check=True, capture_output=True, timeout=60)
            self._wait(self.healthy, 30, "the cluster to be ok on every node")
        except BaseException:
            self.close()
            raise
        return self

    def _start_node(self, i: int) -> _Proc:
        port = free_port()
        d = self.root / f"node{i}"
        d.mkdir()
        args = [self.binary, "--port", str(port), "--bind", "127.0.0.1",
                "--dir", str(d), "--cluster-enabled", "yes",
                "--cluster-config-file", str(d / "nodes.conf"),
                "--cluster-node-timeout", str(self.node_timeout_ms),
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--loglevel", "warning", "--logfile", str(d / "redis.log"),
                "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"]
        node = _Proc(f"node{i}", args, d, port)
        node.start()
        return node

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- state -------------------------------------------------------------------

    def cmd(self, port: int, *args: str) -> bytes:
        return _command(port, *args)

    def cli(self, port: int, *args: str) -> str:
        out = subprocess.run([redis_cli(), "-p", str(port), *args], check=True,
                             capture_output=True, timeout=30)
        return out.stdout.decode()

    def healthy(self) -> bool:
        for node in self.nodes:
            if not node.alive:
                continue
            try:
                info = self.cli(node.port, "CLUSTER", "INFO")
            except subprocess.SubprocessError:
                return False
            if "cluster_state:ok" not in info or "cluster_slots_ok:16384" not in info:
                return False
        return True

    def master_of(self, slot: int) -> int:
        """The port of the master serving ``slot``, asked of a live node."""
        for node in self.nodes:
            if not node.alive:
                continue
            for line in self.cli(node.port, "CLUSTER", "NODES").splitlines():
                parts = line.split()
                if "master" not in parts[2] or "fail" in parts[2]:
                    continue
                for rng in parts[8:]:
                    if rng.startswith("["):
                        continue
                    lo, _, hi = rng.partition("-")
                    if int(lo) <= slot <= int(hi or lo):
                        return int(parts[1].split(":")[1].split("@")[0])
        raise LookupError(f"no master for slot {slot}")

    def node_id(self, port: int) -> str:
        return self.cli(port, "CLUSTER", "MYID").strip()

    def kill_master(self, slot: int) -> _Proc:
        """SIGKILL the master of ``slot``."""
        port = self.master_of(slot)
        node = next(n for n in self.nodes if n.port == port)
        node.kill(signal.SIGKILL)
        return node

    def wait_failover(self, old_port: int, timeout: float) -> None:
        """Wait until every slot is served by a live master again."""
        def done() -> bool:
            live = [n for n in self.nodes if n.alive]
            try:
                return all("cluster_state:ok" in self.cli(n.port, "CLUSTER", "INFO")
                           for n in live) and old_port not in (
                    self.master_of(s) for s in (0, 5461, 10923, 16383))
            except (subprocess.SubprocessError, LookupError):
                return False
        self._wait(done, timeout, "the failover")

    @staticmethod
    def _wait(cond: object, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if cond():  # type: ignore[operator]
                return
            time.sleep(0.05)
        raise TimeoutError(f"timed out waiting for {what}")
