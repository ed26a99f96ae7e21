"""A backend team's first service on the SDK: constant answers, nothing else.

A :class:`router.backend.BackendApp` with one handler per action of the
closed-loop mix (``bench.messages``), each returning a constant, schema-valid
payload. The handlers are plain ``def`` functions, as docs/backend.md
advises for handlers that do not await (``--async`` makes them ``async def``,
which the SDK of before issue 14 required). Whatever CPU this process spends per message
is the SDK's own overhead (reading, parsing, dispatching, answering,
acknowledging), the figure the ``sdk`` scenario of ``bench.run`` reports
next to the compiled fast responder (``bench.backends.fast_responder``).

    python -m bench.backends.sdk_constant --redis-url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import redis.asyncio as aioredis
import uvloop

from bench import messages
from router.backend import BackendApp, Message
from router.backend.dedup import Deduplicator
from router.streams import parse_redis_url

_V16 = messages.CSMS_RESPONSES["ocpp1.6"]
_V2 = messages.CSMS_RESPONSES["ocpp2.0.1"]


def build(redis: aioredis.Redis, prefix: str, shards: int, group: str,
          coroutines: bool = False, dedup: bool = False) -> BackendApp:
    """The app: seven handlers, constant payloads (pre-encoded JSON bytes);
    ``dedup``: with the group's :class:`Deduplicator` (router/backend/dedup.py)."""
    app = BackendApp(redis, group=group, prefix=prefix, shards=shards, batch=500,
                     dedup=Deduplicator(redis, prefix=prefix, group=group) if dedup else None)

    def constant(action: str) -> None:
        v16, v2 = _V16.get(action, b"{}"), _V2.get(action, b"{}")

        def handler(msg: Message) -> bytes:
            return v16 if msg.proto == "ocpp1.6" else v2

        async def async_handler(msg: Message) -> bytes:
            return v16 if msg.proto == "ocpp1.6" else v2

        app.on_call(action)(async_handler if coroutines else handler)

    # The seven actions of the 1.6 mix; TransactionEvent replaces the
    # start/stop pair in 2.x.
    for action in ("BootNotification", "Heartbeat", "StatusNotification", "MeterValues",
                   "Authorize", "StartTransaction", "StopTransaction", "TransactionEvent"):
        constant(action)
    return app


async def serve(args: argparse.Namespace) -> None:
    # Any --redis-url (standalone, Sentinel, Cluster: bench/cluster.py runs it on one).
    redis = parse_redis_url(args.redis_url).redis_py()
    app = build(redis, args.key_prefix, args.shards, args.group, args.coroutines, args.dedup)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, app.stop)
    try:
        await app.run()
    finally:
        await redis.aclose()


def main() -> int:
    p = argparse.ArgumentParser(description="SDK backend with constant handlers (bench).")
    p.add_argument("--redis-url", required=True)
    p.add_argument("--key-prefix", default="ocpp")
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--group", default="bench")
    p.add_argument("--async", dest="coroutines", action="store_true",
                   help="async def handlers instead of plain def")
    p.add_argument("--dedup", action="store_true",
                   help="drop redelivered duplicates (BackendApp(dedup=Deduplicator(...)))")
    args = p.parse_args()
    uvloop.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
