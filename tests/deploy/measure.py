"""Figures of the container image for bench/RESULTS.md: its size, the time from
container start to /readyz 200, and the drain of N connected chargers.

    python -m tests.deploy.measure --chargers 1000 --drain-seconds 10 --runs 3

The pod is the chart's, run as tests/deploy/test_image.py runs it (podman,
host network, read-only root, uid 10001) against a local redis-server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import websockets

from router.embedded_redis import RedisServer, free_port
from tests.deploy import podman
from tests.deploy.chart import manifests, router_deployment


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError):
        return False


async def one_run(redis: RedisServer, chargers: int, drain: float) -> dict[str, float]:
    port, admin = free_port(), free_port()
    values = {"image": {"repository": "localhost/ocpp-router", "tag": "test"},
              "redis": {"existingSecret": "r"},
              "config": {"port": port, "admin_port": admin, "drain_seconds": drain,
                         "key_prefix": f"m{uuid.uuid4().hex[:8]}"},
              "lifecycle": {"preStopSeconds": 0}}
    docs = manifests(values)
    pod = router_deployment(docs)["spec"]["template"]["spec"]
    maps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    name = f"ocpp-router-measure-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as work:
        args = podman.run_args(pod, name=name, secrets={("r", "url"): redis.url},
                               config_maps=maps, workdir=Path(work))
        started = time.monotonic()
        with podman.running(args):
            while not ready(f"http://127.0.0.1:{admin}/readyz"):
                await asyncio.sleep(0.01)
            to_ready = time.monotonic() - started
            async with contextlib.AsyncExitStack() as stack:
                conns = [await stack.enter_async_context(websockets.connect(
                    f"ws://127.0.0.1:{port}/ocpp/M-{i}", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                    ping_interval=None, max_queue=4)) for i in range(chargers)]
                stop_started = time.monotonic()
                stopping = asyncio.create_task(asyncio.to_thread(
                    podman.podman, "stop", "--time", str(pod["terminationGracePeriodSeconds"]),
                    name, timeout=600))
                closed = await asyncio.gather(*(ws.wait_closed() for ws in conns))
                last_close = time.monotonic() - stop_started
                await stopping
                to_exit = time.monotonic() - stop_started
                codes = {ws.close_code for ws in conns}
                assert len(closed) == chargers and codes == {1001}, codes
            exit_code = podman.state(name)["ExitCode"]
            assert exit_code == 0, podman.logs(name)
    return {"to_ready": to_ready, "last_close": last_close, "to_exit": to_exit}


async def main_async(args: argparse.Namespace) -> None:
    image = podman.build_image()
    print(f"image {podman.TEST_IMAGE}: {image['Size'] / 1e6:.1f} MB "
          f"(base {podman.podman('image', 'inspect', '--format', '{{.Size}}', 'localhost/debian-python:bookworm').stdout.strip()} B)")
    runs: list[dict[str, Any]] = []
    with RedisServer() as redis:
        for i in range(args.runs):
            r = await one_run(redis, args.chargers, args.drain_seconds)
            runs.append(r)
            print(f"run {i + 1}: start→ready {r['to_ready']:.2f} s, SIGTERM→last close "
                  f"{r['last_close']:.2f} s, SIGTERM→exit {r['to_exit']:.2f} s")
    for key in ("to_ready", "last_close", "to_exit"):
        values = [r[key] for r in runs]
        print(f"{key}: median {statistics.median(values):.2f} s "
              f"(min {min(values):.2f}, max {max(values):.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chargers", type=int, default=1000)
    parser.add_argument("--drain-seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
