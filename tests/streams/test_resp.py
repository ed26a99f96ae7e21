"""The compiled RESP encoder: differential against hiredis's RESP parser and a
round trip through a real Redis. The reply parser: tests/streams/test_replies.py."""

from __future__ import annotations

import hiredis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.embedded_redis import RedisServer
from router.streams import CommandBuffer, open_connection
from tests.streams.helpers import client


def parse_all(data: bytes) -> list[object]:
    """Parse RESP arrays with hiredis (a request is an array of bulk strings too)."""
    reader = hiredis.Reader()
    reader.feed(data)
    out = []
    while (item := reader.gets()) is not False:
        out.append(item)
    assert not reader.has_data()
    return out


def as_bytes(v: bytes | str | int) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode()
    return str(v).encode()


args_st = st.lists(
    st.one_of(st.binary(max_size=300), st.text(max_size=100),
              st.integers(min_value=-(2**63), max_value=2**63 - 1)),
    min_size=1, max_size=20)


@given(st.lists(args_st, min_size=1, max_size=10))
def test_append_command_matches_hiredis(commands: list[list[bytes | str | int]]) -> None:
    buf = CommandBuffer(64)  # small start: exercises growth
    for cmd in commands:
        buf.append_command(*cmd)
    assert len(buf) == len(commands)
    data = buf.take()
    assert parse_all(data) == [[as_bytes(a) for a in cmd] for cmd in commands]
    assert len(buf) == 0
    assert buf.nbytes == 0


@given(st.lists(st.tuples(st.binary(max_size=50), st.binary(max_size=2000)), min_size=1,
                max_size=10),
       st.one_of(st.none(), st.integers(min_value=1, max_value=10**12)))
def test_append_xadd_matches_hiredis(pairs: list[tuple[bytes, bytes]], maxlen: int | None) -> None:
    buf = CommandBuffer()
    fields = [x for pair in pairs for x in pair]
    buf.append_xadd(b"k", maxlen, fields)
    head = [b"XADD", b"k"] + ([b"MAXLEN", b"~", str(maxlen).encode()] if maxlen else []) + [b"*"]
    assert parse_all(buf.take()) == [head + fields]


def test_append_inbound_layout() -> None:
    buf = CommandBuffer()
    buf.append_inbound(b"ocpp:in:{0}", 1_000_000, "call", "CP-1", "ocpp1.6", "router-a-0",
                       "3f2a", 1763731200123, "19223201", "BootNotification", b'{"a":1}')
    buf.append_inbound(b"ocpp:in:{0}", None, "disconnected", "CP-1", "ocpp2.0.1", "n", "c", 5,
                       extra=("code", 1006, "description", ""))
    first, second = parse_all(buf.take())
    assert first == [
        b"XADD", b"ocpp:in:{0}", b"MAXLEN", b"~", b"1000000", b"*",
        b"v", b"1", b"kind", b"call", b"cs", b"CP-1", b"proto", b"ocpp1.6",
        b"node", b"router-a-0", b"conn", b"3f2a", b"ts", b"1763731200123",
        b"id", b"19223201", b"action", b"BootNotification", b"payload", b'{"a":1}',
    ]
    assert second == [
        b"XADD", b"ocpp:in:{0}", b"*", b"v", b"1", b"kind", b"disconnected", b"cs", b"CP-1",
        b"proto", b"ocpp2.0.1", b"node", b"n", b"conn", b"c", b"ts", b"5",
        b"code", b"1006", b"description", b"",
    ]


def test_buffers_and_memoryviews_are_accepted() -> None:
    buf = CommandBuffer()
    payload = bytearray(b"[2,\"1\",\"Heartbeat\",{}]")
    buf.append_command(b"SET", memoryview(payload)[19:21], payload)
    assert parse_all(buf.take()) == [[b"SET", b"{}", bytes(payload)]]


@pytest.mark.parametrize("bad", [None, 1.5, True, object(), "\udcff"])
def test_failed_append_leaves_buffer_unchanged(bad: object) -> None:
    buf = CommandBuffer()
    buf.append_command(b"PING")
    before = buf.nbytes
    with pytest.raises((TypeError, ValueError, UnicodeEncodeError)):
        buf.append_command(b"SET", b"k", bad)
    with pytest.raises((TypeError, ValueError, UnicodeEncodeError)):
        buf.append_xadd(b"k", 10, [b"f", bad])
    with pytest.raises((TypeError, ValueError, UnicodeEncodeError)):
        buf.append_inbound(b"k", 10, "call", bad, "ocpp1.6", "n", "c", 1, payload=b"{}")
    assert buf.nbytes == before
    assert len(buf) == 1
    assert parse_all(buf.take()) == [[b"PING"]]


def test_invalid_shapes() -> None:
    buf = CommandBuffer()
    with pytest.raises(ValueError):
        buf.append_command()
    with pytest.raises(ValueError):
        buf.append_xadd(b"k", None, [b"odd"])
    with pytest.raises(ValueError):
        buf.append_xadd(b"k", None, [])
    with pytest.raises(ValueError):
        buf.append_xadd(b"k", 0, [b"f", b"v"])
    with pytest.raises(ValueError):
        buf.append_inbound(b"k", None, "call", "c", "p", "n", "c", 1, extra=("odd",))
    with pytest.raises(OverflowError):
        buf.append_command(b"X", 2**64)
    assert buf.nbytes == 0


def test_large_batch_grows_and_shrinks() -> None:
    buf = CommandBuffer(64)
    big = b"x" * (5 * 1024 * 1024)
    buf.append_command(b"SET", b"k", big)
    assert buf.nbytes > len(big)
    assert buf.capacity >= buf.nbytes
    assert parse_all(buf.take()) == [[b"SET", b"k", big]]
    assert buf.capacity == 64  # a spike does not pin memory
    buf.append_command(b"PING")
    assert parse_all(buf.take()) == [[b"PING"]]
    # Below the shrink threshold the block is kept for reuse.
    buf.append_command(b"SET", b"k", b"y" * 100_000)
    cap = buf.capacity
    buf.take()
    assert buf.capacity == cap > 64


async def test_round_trip_through_redis(redis_session: RedisServer, key_prefix: str) -> None:
    """XADD encoded here, XRANGE through redis-py: identical fields, byte for byte."""
    key = f"{key_prefix}:in:{{0}}".encode()
    binary = bytes(range(256)) * 4 + b"\r\n$3\r\n*1\r\n"  # RESP look-alikes inside a value
    utf8 = "Zürich ⚡ 充电桩 🚗"
    large = ("[" + ",".join(['{"sampledValue":"12.5"}'] * 40_000) + "]").encode()
    buf = CommandBuffer(64)
    buf.append_inbound(key, 1000, "call", utf8, "ocpp2.0.1", "node-1", "c1", 1763731200123,
                       "id-1", "MeterValues", large)
    buf.append_xadd(key, None, [b"bin", binary, "ü", utf8, b"empty", b""])
    conn = await open_connection(redis_session.url)
    try:
        done: list[object] = []
        conn.send_raw(buf.take(), 2, done.append, timeout=10)
        await conn.command(b"PING")  # FIFO: the batch was answered before this
        replies = done[0]
        assert isinstance(replies, list) and len(replies) == 2
        assert all(isinstance(r, bytes) and b"-" in r for r in replies)
    finally:
        conn.close()
        await conn.wait_closed()
    async with client(redis_session.url) as r:
        entries = await r.xrange(key)
    assert [e[0] for e in entries] == replies
    assert entries[0][1] == {
        b"v": b"1", b"kind": b"call", b"cs": utf8.encode(), b"proto": b"ocpp2.0.1",
        b"node": b"node-1", b"conn": b"c1", b"ts": b"1763731200123", b"id": b"id-1",
        b"action": b"MeterValues", b"payload": large,
    }
    assert entries[1][1] == {b"bin": binary, "ü".encode(): utf8.encode(), b"empty": b""}


text_or_bytes = st.one_of(st.text(max_size=40), st.binary(max_size=200))
optional = st.one_of(st.none(), text_or_bytes)


@given(kind=text_or_bytes, cs=text_or_bytes, proto=text_or_bytes, node=text_or_bytes,
       conn=text_or_bytes, ts=st.integers(min_value=0, max_value=2**62), id_=optional,
       action=optional, payload=optional,
       extra=st.lists(st.tuples(text_or_bytes, text_or_bytes), max_size=4),
       maxlen=st.one_of(st.none(), st.integers(min_value=1, max_value=2**40)))
def test_append_inbound_matches_hiredis(kind: str | bytes, cs: str | bytes, proto: str | bytes,
                                        node: str | bytes, conn: str | bytes, ts: int,
                                        id_: str | bytes | None, action: str | bytes | None,
                                        payload: str | bytes | None,
                                        extra: list[tuple[str | bytes, str | bytes]],
                                        maxlen: int | None) -> None:
    flat_extra = [x for pair in extra for x in pair]
    buf = CommandBuffer(64)
    buf.append_inbound(b"in", maxlen, kind, cs, proto, node, conn, ts, id_, action, payload,
                       flat_extra)
    want: list[bytes] = [b"XADD", b"in"]
    if maxlen is not None:
        want += [b"MAXLEN", b"~", str(maxlen).encode()]
    want += [b"*", b"v", b"1", b"kind", as_bytes(kind), b"cs", as_bytes(cs),
             b"proto", as_bytes(proto), b"node", as_bytes(node), b"conn", as_bytes(conn),
             b"ts", str(ts).encode()]
    for name, value in ((b"id", id_), (b"action", action), (b"payload", payload)):
        if value is not None:
            want += [name, as_bytes(value)]
    want += [as_bytes(x) for x in flat_extra]
    assert parse_all(buf.take()) == [want]
