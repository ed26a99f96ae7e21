"""A backend as a backend team writes it with the SDK: one ``BackendApp``
process, seven handlers that return constant answers.

It answers the seven actions of the load generator's charger cycle
(``bench.messages``) for OCPP 1.6 with schema-valid constant payloads, so its
CPU time per message is the SDK's own cost (reading, dispatch, answering,
acknowledging), with no business logic. ``bench.run --scenario sdk`` runs it
beside the compiled fast responder (``bench.backends.fast_responder``).

    python -m bench.backends.sdk_constant --redis-url redis://127.0.0.1:6379/0
    python -m bench.backends.sdk_constant --redis-url … --handlers def
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

import redis.asyncio as aioredis
import uvloop
from redis.exceptions import RedisError

from router.backend import BackendApp, Message
from router.streams.errors import StreamsError

_TS = "2026-11-21T12:00:00Z"
_ACCEPTED = {"idTagInfo": {"status": "Accepted"}}

#: action -> the constant CALLRESULT payload (OCPP 1.6 schemas).
ANSWERS: dict[str, dict[str, Any]] = {
    "BootNotification": {"status": "Accepted", "currentTime": _TS, "interval": 300},
    "Heartbeat": {"currentTime": _TS},
    "StatusNotification": {},
    "MeterValues": {},
    "Authorize": _ACCEPTED,
    "StartTransaction": {"transactionId": 1, "idTagInfo": {"status": "Accepted"}},
    "StopTransaction": _ACCEPTED,
}


def build_app(redis: aioredis.Redis, *, group: str, prefix: str, shards: int,
              handlers: str) -> BackendApp:
    """The app with one handler per action of :data:`ANSWERS`.

    Args:
        handlers: ``async`` (``async def`` handlers, the usual way) or ``def``
            (plain functions, called inline).
    """
    app = BackendApp(redis, group=group, prefix=prefix, shards=shards, start_id="$")
    for action, answer in ANSWERS.items():
        if handlers == "def":
            def plain(msg: Message, answer: dict[str, Any] = answer) -> dict[str, Any]:
                return answer

            app.on_call(action)(plain)
        else:
            async def coro(msg: Message, answer: dict[str, Any] = answer) -> dict[str, Any]:
                return answer

            app.on_call(action)(coro)
    return app


async def serve(args: argparse.Namespace) -> None:
    redis = aioredis.Redis.from_url(args.redis_url)
    app = build_app(redis, group=args.group, prefix=args.key_prefix, shards=args.shards,
                    handlers=args.handlers)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
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
    p.add_argument("--group", default="bench-sdk")
    p.add_argument("--handlers", choices=("async", "def"), default="async",
                   help="async def handlers (default) or plain def handlers")
    args = p.parse_args()
    try:
        uvloop.run(serve(args))
    except (OSError, ValueError, RedisError, StreamsError) as exc:
        print(f"sdk_constant: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
