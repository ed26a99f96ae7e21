"""A real Redis Cluster: three masters and three replicas on loopback.

Six ``redis-server --cluster-enabled yes`` children on free ports, each in its
own temp dir (a cluster node rewrites its ``nodes.conf``), joined by
``redis-cli --cluster create … --cluster-replicas 1``. ``cluster-node-timeout``
is 2 s, so a replica takes over a SIGKILLed master in about 3 to 4 s.

:meth:`RedisCluster.kill_master` SIGKILLs the master owning a slot;
:meth:`wait_failover` waits until every slot is served again;
:meth:`move_slot` migrates one slot (its keys included) to another master
with ``CLUSTER SETSLOT … IMPORTING/MIGRATING``, ``MIGRATE`` and
``SETSLOT … NODE``, the steps ``redis-cli --cluster reshard`` takes
(https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/#live-resharding).

With ``tls`` (a :class:`~tests.redis_modes.tls.TestCA`) every node speaks only
TLS, to clients, on the cluster bus and for replication (``tls-cluster``,
``tls-replication``), and demands client certificates; with ``acl`` lines the
``default`` user is off and the nodes replicate as ``admin``.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import redis

from router.embedded_redis import find_redis_server, free_port

NODE_TIMEOUT_MS = 2000
ADMIN_PASSWORD = "admin-secret"


def _redis_cli() -> str:
    server = Path(find_redis_server())
    cli = server.with_name("redis-cli")
    if cli.exists():
        return str(cli)
    found = shutil.which("redis-cli")
    if found is None:
        raise RuntimeError("redis-cli not found (Debian: apt-get install redis-tools)")
    return found


class ClusterNode:
    """One ``redis-server`` of the cluster."""

    def __init__(self, port: int, directory: Path, tls: Any = None,
                 aclfile: Path | None = None) -> None:
        self.port = port
        self.dir = directory
        self.tls = tls
        self.aclfile = aclfile
        self.proc: subprocess.Popen[bytes] | None = None
        self.killed_slot = 0    # a slot it served when kill_master() killed it

    def start(self) -> None:
        if self.tls is None:
            listen = ["--port", str(self.port)]
        else:
            ca = self.tls
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-cluster", "yes",
                      "--tls-replication", "yes", "--tls-cert-file", str(ca.server_cert),
                      "--tls-key-file", str(ca.server_key), "--tls-ca-cert-file", str(ca.ca),
                      "--tls-auth-clients", "yes",
                      # The bus and replication links are TLS clients too: the
                      # server certificate is for serverAuth only.
                      "--tls-client-cert-file", str(ca.client_cert),
                      "--tls-client-key-file", str(ca.client_key)]
        if self.aclfile is not None:
            listen += ["--aclfile", str(self.aclfile), "--masteruser", "admin",
                       "--masterauth", ADMIN_PASSWORD]
        self.proc = subprocess.Popen(
            [find_redis_server(), *listen, "--bind", "127.0.0.1",
             "--cluster-enabled", "yes", "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
             "--cluster-config-file", "nodes.conf", "--dir", str(self.dir),
             "--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0", "--protected-mode", "no",
             "--logfile", str(self.dir / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def client(self, timeout: float = 2.0) -> redis.Redis:
        kw: dict[str, Any] = {}
        if self.tls is not None:
            kw.update(ssl=True, ssl_ca_certs=str(self.tls.ca),
                      ssl_certfile=str(self.tls.client_cert),
                      ssl_keyfile=str(self.tls.client_key))
        if self.aclfile is not None:
            kw.update(username="admin", password=ADMIN_PASSWORD)
        return redis.Redis("127.0.0.1", self.port, socket_timeout=timeout,
                           socket_connect_timeout=timeout, **kw)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def ping(self) -> bool:
        try:
            with self.client(0.5) as c:
                return bool(c.ping())
        except redis.RedisError:
            return False


class RedisCluster:
    """Six nodes, three masters with one replica each (a context manager)."""

    def __init__(self, masters: int = 3, replicas: int = 1, *, tls: Any = None,
                 acl: list[str] | None = None) -> None:
        self.masters = masters
        self.replicas = replicas
        self.tls = tls
        self.tmp = Path(tempfile.mkdtemp(prefix="ocpp-cluster-"))
        self.aclfile: Path | None = None
        if acl is not None:
            self.aclfile = self.tmp / "users.acl"
            self.aclfile.write_text("\n".join([
                "user default off", f"user admin on >{ADMIN_PASSWORD} ~* &* +@all", *acl]) + "\n")
        self.nodes: list[ClusterNode] = []

    # -- lifecycle --------------------------------------------------------------

    def start(self, wait: float = 30.0) -> None:
        for i in range(self.masters * (1 + self.replicas)):
            d = self.tmp / f"node{i}"
            d.mkdir()
            node = ClusterNode(free_port(), d, self.tls, self.aclfile)
            node.start()
            self.nodes.append(node)
        deadline = time.monotonic() + wait
        while not all(n.ping() for n in self.nodes):
            for node in self.nodes:
                if node.proc is not None and node.proc.poll() is not None:
                    # Lost a race for its free port with another process: again.
                    node.port = free_port()
                    node.start()
            if time.monotonic() > deadline:
                raise RuntimeError("cluster nodes did not start")
            time.sleep(0.05)
        subprocess.run(
            [_redis_cli(), "--cluster", "create",
             *(f"127.0.0.1:{n.port}" for n in self.nodes),
             "--cluster-replicas", str(self.replicas), "--cluster-yes", *self._cli_options()],
            check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, timeout=wait)
        self.wait_ok(wait)
        self.wait_replicas_synced(wait)

    def _cli_options(self) -> list[str]:
        opts: list[str] = []
        if self.tls is not None:
            opts += ["--tls", "--cacert", str(self.tls.ca), "--cert", str(self.tls.client_cert),
                     "--key", str(self.tls.client_key)]
        if self.aclfile is not None:
            opts += ["--user", "admin", "--pass", ADMIN_PASSWORD]
        return opts

    def close(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> RedisCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- views --------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``redis+cluster://`` with every node as a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    @property
    def seed_url(self) -> str:
        """``redis+cluster://`` with one seed (the client must learn the rest)."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def url_for(self, user: str, password: str, *, seeds: int = 1) -> str:
        """A ``rediss+cluster://`` URL (TLS cluster) for ``user``, with the
        test CA and the client certificate, naming ``seeds`` nodes."""
        assert self.tls is not None
        ca = self.tls
        query = (f"ssl_ca_certs={quote(str(ca.ca))}&ssl_certfile={quote(str(ca.client_cert))}"
                 f"&ssl_keyfile={quote(str(ca.client_key))}")
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:seeds])
        return f"rediss+cluster://{user}:{password}@{hosts}?{query}"

    def node_at(self, port: int) -> ClusterNode:
        return next(n for n in self.nodes if n.port == port)

    def live(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.alive]

    def slot_owner(self, slot: int) -> ClusterNode:
        """The master serving ``slot``, as a live node sees it."""
        for node in self.live():
            try:
                with node.client() as c:
                    for start, end, master, *_ in c.execute_command("CLUSTER", "SLOTS"):
                        if start <= slot <= end:
                            return self.node_at(int(master[1]))
            except redis.RedisError:
                continue
        raise RuntimeError(f"no node knows slot {slot}")

    def masters_now(self) -> list[ClusterNode]:
        out = []
        for node in self.live():
            with node.client() as c:
                if c.execute_command("ROLE")[0] == b"master":
                    out.append(node)
        return out

    def keyslot(self, key: bytes | str) -> int:
        with self.live()[0].client() as c:
            return int(c.execute_command("CLUSTER", "KEYSLOT", key))

    # -- faults -------------------------------------------------------------------

    def wait_ok(self, wait: float = 30.0) -> None:
        """Until every live node says ``cluster_state:ok`` and agrees on the slots."""
        deadline = time.monotonic() + wait
        while True:
            try:
                states = []
                views = set()
                for node in self.live():
                    with node.client() as c:
                        states.append(c.execute_command("CLUSTER", "INFO")
                                      .decode().split("\r\n")[0])
                        views.add(tuple(sorted((s, e, int(m[1])) for s, e, m, *_ in
                                               c.execute_command("CLUSTER", "SLOTS"))))
                if all(s == "cluster_state:ok" for s in states) and len(views) == 1:
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not become ok")
            time.sleep(0.1)

    def wait_replicas_synced(self, wait: float = 30.0) -> None:
        """Until every replica finished its sync with its master (a replica
        that never synced does not take over a failed master)."""
        deadline = time.monotonic() + wait
        while True:
            linked = 0
            for node in self.live():
                with node.client() as c:
                    info = c.info("replication")
                if info["role"] == "slave" and info.get("master_link_status") == "up":
                    linked += 1
            if linked >= self.masters * self.replicas:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the replicas did not sync")
            time.sleep(0.1)

    def kill_master(self, slot: int = 0) -> ClusterNode:
        """SIGKILL the master serving ``slot``; returns it."""
        node = self.slot_owner(slot)
        node.killed_slot = slot
        node.kill()
        return node

    def wait_failover(self, old: ClusterNode, wait: float = 30.0) -> ClusterNode:
        """Until a replica of ``old`` took its slots and the cluster is ok."""
        deadline = time.monotonic() + wait
        while True:
            try:
                self.wait_ok(max(0.1, deadline - time.monotonic()))
                owner = self.slot_owner(old.killed_slot)
                if owner is not old:
                    return owner
            except RuntimeError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"no replica took over from {old.port}")
            time.sleep(0.1)

    def move_slot(self, slot: int, to: ClusterNode, batch: int = 100) -> None:
        """Migrate ``slot`` with its keys to the master ``to`` (live resharding)."""
        source = self.slot_owner(slot)
        if source is to:
            return
        with source.client(10) as src, to.client(10) as dst:
            src_id = src.execute_command("CLUSTER", "MYID").decode()
            dst_id = dst.execute_command("CLUSTER", "MYID").decode()
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
            while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch):
                auth = ["AUTH2", "admin", ADMIN_PASSWORD] if self.aclfile is not None else []
                src.execute_command("MIGRATE", "127.0.0.1", to.port, "", 0, 10000,
                                    *auth, "KEYS", *keys)
            dst.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        for node in self.masters_now():
            if node not in (source, to):
                with node.client() as c:
                    c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
