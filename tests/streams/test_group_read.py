"""What the backend SDK's data path takes from the compiled RESP module:
``StreamEntries.head`` / ``field`` on a group read, and the answers
(``append_reply``) and acknowledgements (``append_xack``) it encodes,
differential against hiredis and the generic encoder."""

from __future__ import annotations

import hiredis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.streams import CommandBuffer
from router.streams._resp import ReplyReader, StreamEntries


def bulk(b: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(b), b)


def group_read(entries: list[tuple[bytes, list[bytes] | None]]) -> StreamEntries:
    """An XREADGROUP reply of one stream, parsed by ReplyReader.gets_xread."""
    body = b""
    for eid, fields in entries:
        flat = b"*-1\r\n" if fields is None else (
            b"*%d\r\n" % len(fields) + b"".join(bulk(f) for f in fields))
        body += b"*2\r\n" + bulk(eid) + flat
    reader = ReplyReader()
    reader.feed(b"*1\r\n*2\r\n" + bulk(b"ocpp:in:{0}") + b"*%d\r\n" % len(entries) + body)
    read = reader.gets_xread()
    assert isinstance(read, StreamEntries)
    return read


CALL = [b"v", b"1", b"kind", b"call", b"cs", b"CP-1", b"proto", b"ocpp1.6", b"node", b"n-1",
        b"conn", b"c0ffee", b"ts", b"17", b"id", b"19", b"action", b"Heartbeat",
        b"payload", b"{}"]


def test_head_routes_without_a_dict() -> None:
    read = group_read([
        (b"1-1", CALL),
        (b"1-2", [b"kind", b"connected", b"cs", b"CP-2", b"node", b"n-1", b"conn", b"c"]),
        (b"1-3", [b"kind", b"teleport", b"cs", b"", b"id", b"x"]),
        (b"1-4", None),                              # deleted while pending
        (b"1-5", [b"kind", b"call", b"kind", b"result", b"cs", b"\xc3\xa9"]),
    ])
    assert read.head(0) == ("1-1", "call", "Heartbeat", b"CP-1", True)
    assert read.head(1) == ("1-2", "connected", None, b"CP-2", False)   # no id
    assert read.head(2) == ("1-3", None, None, None, False)       # unknown kind, empty cs
    assert read.head(3) == ("1-4", None, None, None, False)
    assert read.head(4)[1:4] == ("result", None, "é".encode())     # the last name wins
    assert read.field(0, b"payload") == b"{}" and read.field(0, b"addr") is None
    assert read.field(4, b"kind") == b"result" == read.fields(4)[b"kind"]
    with pytest.raises(IndexError):
        read.head(5)


@given(cs=st.binary(min_size=1, max_size=40), node=st.binary(min_size=1, max_size=40),
       conn=st.binary(max_size=40), mid=st.binary(max_size=40),
       payload=st.binary(max_size=3000),
       maxlen=st.one_of(st.none(), st.integers(min_value=1, max_value=10**9)))
def test_append_reply_matches_the_generic_xadd(cs: bytes, node: bytes, conn: bytes, mid: bytes,
                                               payload: bytes, maxlen: int | None) -> None:
    read = group_read([(b"1-1", [b"kind", b"call", b"cs", cs, b"node", node, b"conn", conn,
                                 b"id", mid])])
    fast, generic = CommandBuffer(64), CommandBuffer(64)
    fast.append_reply(b"ocpp:out:", read, 0, payload, maxlen)
    generic.append_xadd(b"ocpp:out:" + node, maxlen, [b"kind", b"result", b"cs", cs,
                                                      b"conn", conn, b"id", mid,
                                                      b"payload", payload])
    assert len(fast) == 1
    assert fast.take() == generic.take()


def test_append_reply_refuses_an_entry_without_its_address() -> None:
    read = group_read([(b"1-1", [b"kind", b"call", b"cs", b"CP", b"conn", b"c", b"id", b"1"]),
                       (b"1-2", [b"kind", b"call", b"cs", b"CP", b"node", b"", b"conn", b"c",
                                 b"id", b"1"])])
    buf = CommandBuffer()
    for i in (0, 1):
        with pytest.raises(ValueError, match="lacks node"):
            buf.append_reply(b"ocpp:out:", read, i, b"{}", 100)
    with pytest.raises(TypeError):
        buf.append_reply(b"ocpp:out:", group_read([(b"1-1", CALL)]), 0, 3.5, 100)
    assert len(buf) == 0 and buf.nbytes == 0


def test_append_xack() -> None:
    buf = CommandBuffer()
    buf.append_xack("ocpp:in:{0}", b"csms", ["1-1", b"2-0"])
    reader = hiredis.Reader()
    reader.feed(buf.take())
    assert reader.gets() == [b"XACK", b"ocpp:in:{0}", b"csms", b"1-1", b"2-0"]
    with pytest.raises(ValueError):
        buf.append_xack("s", "g", [])
    with pytest.raises(TypeError):
        buf.append_xack("s", "g", ["1-1", None])
    assert buf.nbytes == 0
