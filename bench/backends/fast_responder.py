"""The minimal fast responder: a tight backend loop on redis-py + hiredis.

It implements just enough of the stream contract (docs/streams.md) to answer
every charger CALL: read inbound entries with one ``XREADGROUP … COUNT 500``
over all shards, answer each ``call`` with a constant CALLRESULT payload for
its action into ``ocpp:out:<node>`` (``MAXLEN ~ 100000``, as the contract
asks of backends) and acknowledge everything read — all replies and the XACKs
of one batch leave in one pipeline (one round trip). Nothing is validated or
stored: this is the cheapest backend a deployment could have, so the
end-to-end figures measure the router, not the backend.

    python -m bench.backends.fast_responder --redis-url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import redis

from bench import messages

_EMPTY = b"{}"


def ensure_groups(r: redis.Redis, streams: list[str], group: str, from_start: bool) -> None:
    """Create the consumer group on every inbound stream (idempotent).

    Raises:
        redis.ResponseError: any error other than "the group exists".
    """
    for key in streams:
        try:
            r.xgroup_create(key, group, id="0" if from_start else "$", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


def run(url: str, prefix: str, shards: int, group: str, consumer: str,
        from_start: bool, count: int) -> None:
    """Serve until killed.

    Raises:
        redis.RedisError: Redis is unreachable or refuses a command.
    """
    r = redis.Redis.from_url(url)
    streams = [f"{prefix}:in:{{{n}}}" for n in range(shards)]
    ensure_groups(r, streams, group, from_start)
    responses = {p.encode(): {a.encode(): v for a, v in table.items()}
                 for p, table in messages.CSMS_RESPONSES.items()}
    out_prefix = f"{prefix}:out:".encode()
    read_args: list[Any] = ["XREADGROUP", "GROUP", group, consumer, "COUNT", count,
                            "BLOCK", 1000, "STREAMS", *streams, *([">"] * len(streams))]
    execute = r.execute_command
    while True:
        batches = execute(*read_args)
        if not batches:
            continue
        pipe = r.pipeline(transaction=False)
        command = pipe.execute_command
        for stream, entries in batches:
            ids = []
            for entry_id, f in entries:
                ids.append(entry_id)
                if f.get(b"kind") != b"call":
                    continue  # connected/disconnected/result/…: nothing to answer
                table = responses.get(f.get(b"proto", b""), responses[b"ocpp1.6"])
                command("XADD", out_prefix + f[b"node"], "MAXLEN", "~", 100000, "*",
                        "kind", "result", "cs", f[b"cs"], "conn", f[b"conn"], "id", f[b"id"],
                        "payload", table.get(f[b"action"], _EMPTY))
            if ids:
                command("XACK", stream, group, *ids)
        pipe.execute()


def main() -> int:
    p = argparse.ArgumentParser(description="Minimal fast backend for the e2e benchmark.")
    p.add_argument("--redis-url", required=True)
    p.add_argument("--key-prefix", default="ocpp")
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--group", default="bench")
    p.add_argument("--consumer", default="fast-0")
    p.add_argument("--count", type=int, default=500, help="XREADGROUP COUNT")
    p.add_argument("--from-start", action="store_true",
                   help="create the group at 0 instead of $ (answer old entries too)")
    args = p.parse_args()
    try:
        run(args.redis_url, args.key_prefix, args.shards, args.group, args.consumer,
            args.from_start, args.count)
    except redis.RedisError as exc:
        print(f"fast_responder: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
