"""The minimal fast responder: a tight backend loop on a plain socket.

It implements just enough of the stream contract (docs/streams.md) to answer
every charger CALL: read inbound entries with one ``XREADGROUP … COUNT 500``
over all shards, answer each ``call`` with a constant CALLRESULT payload for
its action into ``ocpp:out:<node>`` (``MAXLEN ~ 100000``, as the contract
asks of backends) and acknowledge everything read. The replies, the XACKs and
the next ``XREADGROUP`` of one batch leave in one write (one round trip per
batch). Nothing is validated or stored: this is the cheapest backend a
deployment could have, so the end-to-end figures measure the router, not the
backend. The commands are encoded and the replies parsed by the router's
compiled RESP code (``router.streams._resp``); redis-py with hiredis, which the
first version used, cost ≈ 12 µs of CPU per message here, more than the router
itself, on the two cores the whole stack shares (``--client redis-py`` keeps
it for comparison).

    python -m bench.backends.fast_responder --redis-url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import socket
import sys
from typing import Any

import redis

from bench import messages
from router.streams import CommandBuffer, parse_redis_url
from router.streams._resp import ReplyReader
from router.streams.errors import RedisReplyError

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


_RESPONSES = {p.encode(): {a.encode(): v for a, v in table.items()}
              for p, table in messages.CSMS_RESPONSES.items()}


def answer(f: dict[bytes, bytes], out_prefix: bytes) -> tuple[Any, ...] | None:
    """The XADD that answers one inbound entry, or None when it needs no
    answer (connected/disconnected/result/…: only a ``call`` is answered)."""
    if f.get(b"kind") != b"call":
        return None
    table = _RESPONSES.get(f.get(b"proto", b""), _RESPONSES[b"ocpp1.6"])
    return (b"XADD", out_prefix + f[b"node"], b"MAXLEN", b"~", 100000, b"*",
            b"kind", b"result", b"cs", f[b"cs"], b"conn", f[b"conn"], b"id", f[b"id"],
            b"payload", table.get(f[b"action"], _EMPTY))


def run_redis_py(url: str, prefix: str, shards: int, group: str, consumer: str,
                 from_start: bool, count: int) -> None:
    """The first version (redis-py + hiredis, one pipeline per batch), kept
    for comparison. Serves until killed.

    Raises:
        redis.RedisError: Redis is unreachable or refuses a command.
    """
    r = redis.Redis.from_url(url)
    streams = [f"{prefix}:in:{{{n}}}" for n in range(shards)]
    ensure_groups(r, streams, group, from_start)
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
                xadd = answer(f, out_prefix)
                if xadd is not None:
                    command(*xadd)
            if ids:
                command("XACK", stream, group, *ids)
        pipe.execute()


class _Link:
    """One blocking socket to Redis with the compiled RESP reader."""

    def __init__(self, url: str) -> None:
        addr = parse_redis_url(url)
        if addr.tls is not None or addr.mode != "standalone":
            raise redis.ConnectionError("only redis:// and unix:// are supported here (use --client redis-py)")
        try:
            if addr.unix_path is not None:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(addr.unix_path)
            else:
                self.sock = socket.create_connection((addr.host, addr.port))
        except OSError as exc:
            raise redis.ConnectionError(f"cannot connect to Redis: {exc}") from None
        self.reader = ReplyReader()
        setup = CommandBuffer(256)
        if addr.password is not None:
            setup.append_command(b"AUTH", *([addr.username] if addr.username else []),
                                 addr.password)
        setup.append_command(b"SELECT", addr.db)
        n = len(setup)
        self.sock.sendall(setup.take())
        for _ in range(n):
            self.reply()

    def reply(self) -> Any:
        """The next reply (blocking).

        Raises:
            redis.ResponseError: an error reply.
            redis.ConnectionError: Redis closed the connection.
        """
        reader = self.reader
        while True:
            reply = reader.gets()
            if reply is not False:
                if isinstance(reply, RedisReplyError):
                    raise redis.ResponseError(str(reply))
                return reply
            data = self.sock.recv(1 << 20)
            if not data:
                raise redis.ConnectionError("Redis closed the connection")
            reader.feed(data)


def run(url: str, prefix: str, shards: int, group: str, consumer: str,
        from_start: bool, count: int) -> None:
    """Serve until killed.

    Raises:
        redis.RedisError: Redis is unreachable or refuses a command.
    """
    streams = [f"{prefix}:in:{{{n}}}".encode() for n in range(shards)]
    with redis.Redis.from_url(url) as setup:
        ensure_groups(setup, [s.decode() for s in streams], group, from_start)
    link = _Link(url)
    out_prefix = f"{prefix}:out:".encode()
    group_b = group.encode()
    read_args: list[Any] = [b"XREADGROUP", b"GROUP", group_b, consumer.encode(), b"COUNT",
                            count, b"BLOCK", 1000, b"STREAMS", *streams,
                            *([b">"] * len(streams))]
    buf = CommandBuffer(1 << 16)
    buf.append_command(*read_args)
    link.sock.sendall(buf.take())
    pending = 0          # replies of the last write still to read before the XREADGROUP's
    while True:
        for _ in range(pending):
            link.reply()                        # XADD ids and XACK counts: errors raise
        batches = link.reply()
        for stream, entries in batches or ():
            ids = []
            for entry_id, flat in entries:
                ids.append(entry_id)
                if not flat:
                    continue  # deleted meanwhile: acknowledged, nothing to answer
                xadd = answer(dict(zip(flat[::2], flat[1::2], strict=True)), out_prefix)
                if xadd is not None:
                    buf.append_command(*xadd)
            if ids:
                buf.append_command(b"XACK", stream, group_b, *ids)
        pending = len(buf)
        buf.append_command(*read_args)          # the next read rides in the same write
        link.sock.sendall(buf.take())


def main() -> int:
    p = argparse.ArgumentParser(description="Minimal fast backend for the e2e benchmark.")
    p.add_argument("--redis-url", required=True)
    p.add_argument("--key-prefix", default="ocpp")
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--group", default="bench")
    p.add_argument("--consumer", default="fast-0")
    p.add_argument("--count", type=int, default=500, help="XREADGROUP COUNT")
    p.add_argument("--client", choices=("resp", "redis-py"), default="resp",
                   help="compiled RESP on a socket (default) or redis-py + hiredis")
    p.add_argument("--from-start", action="store_true",
                   help="create the group at 0 instead of $ (answer old entries too)")
    args = p.parse_args()
    serve = run if args.client == "resp" else run_redis_py
    try:
        serve(args.redis_url, args.key_prefix, args.shards, args.group, args.consumer,
            args.from_start, args.count)
    except (redis.RedisError, OSError, ValueError) as exc:
        print(f"fast_responder: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
