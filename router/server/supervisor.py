"""Running the router: one process, or a supervisor with N workers.

With ``--workers 1`` the node runs in this process and serves the admin port
itself. With ``--workers N`` this process starts N worker interpreters that share the
charger port with SO_REUSEPORT (the kernel spreads connections), each its own
node (``<node-id>-<index>``), each with a private admin port on loopback. The
supervisor serves the public admin port: ``/metrics`` sums the workers'
metrics, ``/readyz`` is ready when every worker is, and SIGTERM is passed on so
every worker drains.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import resource
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from router.config import Config, config_field_names, load
from router.server.admin import AdminServer

log = logging.getLogger("router.supervisor")

RESTART_DELAY = 1.0
# Descriptors a process needs beside its charger sockets: listeners, Redis
# connections, admin clients, the event loop's own, worker pipes.
FD_RESERVE = 64


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


async def run_node(config: Config, index: int | None, admin_port_fd: int | None = None) -> int:
    """Run one node until it has drained; returns the exit status."""
    from router.server.node import Node

    node = Node(config, config.node_for_worker(index))
    own_admin = admin_port_fd is None
    await node.start(admin=own_admin)
    if not own_admin:
        # A worker: private admin port on loopback, told to the supervisor.
        node.admin = AdminServer(node.admin_routes())
        port = await node.admin.start("127.0.0.1", 0)
        assert admin_port_fd is not None
        os.write(admin_port_fd, f"{port}\n".encode())
        os.close(admin_port_fd)
    node.install_signal_handlers(sigint=own_admin)
    # Everything allocated so far lives as long as the process: keep it out of
    # the cyclic GC's generations so collections only scan per-message garbage.
    gc.freeze()
    await node.stopped.wait()
    return 0


def raise_fd_limit(max_connections: int) -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit and log what it allows.

    Container runtimes (containerd, CRI-O) start processes with a soft limit of
    1024 whatever the hard limit is, and every charger holds one descriptor.
    Raising the soft limit up to the hard one needs no privilege (setrlimit(2)).

    Args:
        max_connections: ``--max-connections``, to warn when the limit is lower.

    Returns:
        The soft limit in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        # No finite hard limit: the kernel still caps it at fs.nr_open.
        try:
            with open("/proc/sys/fs/nr_open") as f:
                target = int(f.read())
        except (OSError, ValueError):
            target = soft
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the file descriptor limit from %d to %d: %s",
                        soft, target, exc)
    room = max(soft - FD_RESERVE, 0)
    if room < max_connections:
        log.warning("file descriptor limit %d allows about %d connections per process, fewer "
                    "than --max-connections %d: raise the hard nofile limit", soft, room,
                    max_connections)
    else:
        log.info("file descriptor limit %d: room for about %d connections per process "
                 "(--max-connections %d)", soft, room, max_connections)
    return soft


def serve(config: Config) -> int:
    """Blocking entry point of ``ocpp-router serve``."""
    import uvloop

    _setup_logging(config.log_level)
    raise_fd_limit(config.max_connections)
    if config.workers == 1:
        return int(uvloop.run(run_node(config, None)))
    return Supervisor(config).run()


class Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.admin_port = 0


class Supervisor:
    """Starts and watches the worker processes; serves the aggregated admin port."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.workers = [Worker(i) for i in range(config.workers)]
        self.stopping = False
        self.tasks: set[asyncio.Task[None]] = set()
        self.done = asyncio.Event()

    def _spawn(self, worker: Worker) -> None:
        """Start a worker as a fresh interpreter (never fork a running event loop)."""
        env = dict(os.environ)
        env[WORKER_ENV] = config_to_json(self.config)
        env[WORKER_INDEX_ENV] = str(worker.index)
        task = asyncio.get_running_loop().create_task(self._run_worker(worker, env))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run_worker(self, worker: Worker, env: dict[str, str]) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "router.server.supervisor", env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE)
        worker.proc = proc
        worker.admin_port = 0
        assert proc.stdout is not None
        line = await proc.stdout.readline()
        if line.strip().isdigit():
            worker.admin_port = int(line.strip())
        status = await proc.wait()
        worker.proc = None
        worker.admin_port = 0
        if not self.stopping:
            log.error("worker %d exited (status %d); restarting", worker.index, status)
            await asyncio.sleep(RESTART_DELAY)
            if not self.stopping:
                self._spawn(worker)
                return
        if all(w.proc is None for w in self.workers):
            self.done.set()

    def run(self) -> int:
        import uvloop

        return int(uvloop.run(self._main()))

    async def _main(self) -> int:
        loop = asyncio.get_running_loop()
        self.done = asyncio.Event()
        for worker in self.workers:
            self._spawn(worker)
        admin = AdminServer({"/healthz": self._healthz, "/readyz": self._readyz,
                             "/metrics": self._metrics})
        await admin.start(self.config.admin_host, self.config.admin_port)

        def stop() -> None:
            if not self.stopping:
                self.stopping = True
                for worker in self.workers:
                    if worker.proc is not None and worker.proc.returncode is None:
                        worker.proc.send_signal(signal.SIGTERM)
                if all(w.proc is None for w in self.workers):
                    self.done.set()

        loop.add_signal_handler(signal.SIGTERM, stop)
        loop.add_signal_handler(signal.SIGINT, stop)
        await self.done.wait()
        await admin.close()
        return 0

    async def _fetch(self, path: str) -> list[tuple[int, bytes]]:
        async def one(port: int) -> tuple[int, bytes]:
            if not port:
                return 503, b"worker starting\n"
            return await asyncio.to_thread(_http_get, port, path)

        return list(await asyncio.gather(*(one(w.admin_port) for w in self.workers)))

    async def _healthz(self) -> tuple[int, str, bytes]:
        alive = all(w.proc is not None for w in self.workers)
        return (200, "text/plain", b"ok\n") if alive else (503, "text/plain", b"worker down\n")

    async def _readyz(self) -> tuple[int, str, bytes]:
        if self.stopping:
            return 503, "text/plain", b"draining\n"
        results = await self._fetch("/readyz")
        if all(status == 200 for status, _ in results):
            return 200, "text/plain", b"ready\n"
        return 503, "text/plain", b"not ready: " + b", ".join(
            body.strip() for status, body in results if status != 200) + b"\n"

    async def _metrics(self) -> tuple[int, str, bytes]:
        results = await self._fetch("/metrics")
        texts = [body.decode() for status, body in results if status == 200]
        return 200, "text/plain; version=0.0.4; charset=utf-8", merge_metrics(texts).encode()


WORKER_ENV = "OCPP_ROUTER__WORKER_CONFIG"
WORKER_INDEX_ENV = "OCPP_ROUTER__WORKER_INDEX"


def config_to_json(config: Config) -> str:
    """Serialise a Config for a worker process (values re-validated there)."""
    data: dict[str, Any] = {}
    for name in config_field_names():
        value = getattr(config, name)
        if value is None:
            continue
        if isinstance(value, tuple):
            value = [str(v) for v in value]
        data[name] = value
    return json.dumps(data)


async def _worker_main(config: Config, index: int) -> int:
    """A worker: run a node; print the private admin port on stdout."""
    read_fd, write_fd = os.pipe()
    task = asyncio.create_task(run_node(config, index, write_fd))
    port = await asyncio.to_thread(os.read, read_fd, 16)
    os.close(read_fd)
    sys.stdout.write(port.decode())
    sys.stdout.flush()
    return await task


def worker_entry() -> int:
    import uvloop

    config = load(json.loads(os.environ[WORKER_ENV]))
    _setup_logging(config.log_level)
    # The supervisor owns SIGINT (Ctrl-C reaches the whole process group):
    # a worker drains only when the supervisor passes SIGTERM on.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return int(uvloop.run(_worker_main(config, int(os.environ[WORKER_INDEX_ENV]))))


def _http_get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except OSError:
        return 503, b"worker unreachable\n"


def merge_metrics(texts: Iterable[str]) -> str:
    """Sum the samples of several Prometheus text expositions (one per worker).

    Counters, gauges and histogram buckets of the workers add up to the
    process group's totals; help and type come from the first exposition.
    """
    families: dict[str, tuple[str, str]] = {}
    samples: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for fam in text_string_to_metric_families(text):
            families.setdefault(fam.name, (fam.type, fam.documentation))
            table = samples.setdefault(fam.name, {})
            for s in fam.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                table[key] = table.get(key, 0.0) + s.value
    out: list[str] = []
    for name, (mtype, doc) in families.items():
        out.append(f"# HELP {name} {_escape_help(doc)}")
        out.append(f"# TYPE {name} {mtype}")
        for (sname, labels), value in samples[name].items():
            label_text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
            out.append(f"{sname}{{{label_text}}} {_number(value)}" if labels
                       else f"{sname} {_number(value)}")
    return "\n".join(out) + "\n"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: Any) -> str:
    f = float(value)
    return repr(int(f)) if f.is_integer() and abs(f) < 2**53 else repr(f)


if __name__ == "__main__":
    sys.exit(worker_entry())
