"""A CSMS built on the SDK's public API (``BackendApp``) that logs every CALL
it answers: ``python -m bench.backends.sdk_backend --redis-url URL --log FILE``.

For the chaos runs and the soak: one line per handled charger CALL
(``<consumer> <entry id> <charger> <message id> <action>``), flushed before
the handler returns, so after a SIGKILL the log holds every answer the
process may have written; duplicates across consumers show up as the same
(charger, message id) twice. ``--delay`` makes each handler take that long,
so a batch is still in flight when the process is killed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import signal
import sys
from typing import Any

import redis.asyncio as aioredis

from router.backend import BackendApp
from router.backend.message import Message


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.backends.sdk_backend")
    p.add_argument("--redis-url", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--group", default="csms")
    p.add_argument("--consumer", default=f"sdk-{os.getpid()}")
    p.add_argument("--claim-idle", type=float, default=5.0)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--concurrency", type=int, default=50)
    args = p.parse_args(argv)
    return asyncio.run(serve(args))


async def serve(args: argparse.Namespace) -> int:
    redis = aioredis.Redis.from_url(args.redis_url, max_connections=args.concurrency + 20,
                                    socket_timeout=10, socket_connect_timeout=5)
    app = BackendApp(redis, group=args.group, consumer=args.consumer,
                     claim_idle=args.claim_idle, concurrency=args.concurrency, block=1.0)
    log = open(args.log, "a", buffering=1)  # open for the process's life

    def record(msg: Message) -> None:
        log.write(f"{args.consumer} {msg.entry_id} {msg.cs} {msg.id} {msg.action}\n")

    def now() -> str:
        return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    @app.on_call("BootNotification")
    async def boot(msg: Message) -> dict[str, Any]:
        await asyncio.sleep(args.delay)
        record(msg)
        return {"status": "Accepted", "currentTime": now(), "interval": 300}

    @app.on_call("Heartbeat")
    async def heartbeat(msg: Message) -> dict[str, Any]:
        await asyncio.sleep(args.delay)
        record(msg)
        return {"currentTime": now()}

    @app.on_call("DataTransfer")
    async def data_transfer(msg: Message) -> dict[str, Any]:
        await asyncio.sleep(args.delay)
        record(msg)
        return {"status": "Accepted"}

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, app.stop)
    loop.add_signal_handler(signal.SIGINT, app.stop)
    print(f"sdk backend {args.consumer} ready", file=sys.stderr, flush=True)
    await app.run()
    await redis.aclose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
