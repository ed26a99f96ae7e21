"""The compiled RESP2 reply parser (``ReplyReader``): differential against
hiredis on any reply cut into any chunks, the XREAD form (``StreamEntries``)
against hiredis on real Redis replies, and malformed input."""

from __future__ import annotations

import hiredis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.embedded_redis import RedisServer
from router.streams import open_connection
from router.streams._resp import ReplyReader, StreamEntries
from router.streams.errors import RedisProtocolError, RedisReplyError
from tests.resp import encode_reply, stream_entries, xread_reply


def _norm(value: object) -> object:
    # hiredis returns its own ReplyError; ours is RedisReplyError: compare messages.
    if isinstance(value, Exception):
        return ("error", str(value))
    if isinstance(value, list):
        return [_norm(v) for v in value]
    if isinstance(value, str):      # a simple string comes back as bytes
        return value.encode()
    return value


def _drain(reader: object, chunks: list[bytes]) -> list[object]:
    out = []
    for chunk in chunks:
        reader.feed(chunk)  # type: ignore[attr-defined]
        while (item := reader.gets()) is not False:  # type: ignore[attr-defined]
            out.append(item)
    return out


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


leaf = st.one_of(
    st.binary(max_size=200),
    st.integers(min_value=-(2**63) + 1, max_value=2**63 - 1),
    st.none(),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)
    .map(RedisReplyError),
)
replies = st.recursive(leaf, lambda inner: st.lists(inner, max_size=6), max_leaves=40)


@given(st.lists(replies, min_size=1, max_size=8), st.lists(st.integers(0, 10_000), max_size=12),
       st.sampled_from([64, 100, 4096]))
def test_gets_matches_hiredis_on_any_chunking(values: list[object], cuts: list[int],
                                              initial: int) -> None:
    data = b"".join(encode_reply(v) for v in values)
    chunks = _chunks(data, cuts)
    ours = _drain(ReplyReader(initial), chunks)
    theirs = _drain(hiredis.Reader(), chunks)
    assert _norm(ours) == _norm(theirs) == _norm(values)
    assert all(type(v) is RedisReplyError for v in ours if isinstance(v, Exception))


def test_gets_waits_for_the_whole_reply() -> None:
    reader = ReplyReader(64)
    big = b"x" * 100_000
    data = encode_reply([b"a", big, 7])
    for i in range(0, len(data) - 1, 997):
        reader.feed(data[i:min(i + 997, len(data) - 1)])
        assert reader.gets() is False
    reader.feed(data[-1:])
    assert reader.gets() == [b"a", big, 7]
    assert reader.gets() is False


@pytest.mark.parametrize("bad", [
    b"?what\r\n",                 # unknown type byte
    b"$3\r\nabcd\r\n",            # bulk longer than its length
    b":12a\r\n",                  # not a number
    b":\r\n",
    b"$-2\r\n",                   # negative length other than nil
    b"*-5\r\n",
    b":99999999999999999999\r\n",  # out of range
    b"+OK\n",                     # LF without CR
    b"%1\r\n",                    # RESP3 map: never asked for
])
def test_malformed_replies_raise(bad: bytes) -> None:
    reader = ReplyReader()
    reader.feed(bad)
    with pytest.raises(RedisProtocolError):
        reader.gets()


def test_nesting_limit() -> None:
    reader = ReplyReader()
    reader.feed(b"*1\r\n" * 40 + b":1\r\n")
    with pytest.raises(RedisProtocolError, match="nested"):
        reader.gets()


def test_stream_entries_access() -> None:
    entries = stream_entries([
        (b"1-0", [b"a", b"1", b"b", b"2"]),
        (b"2-5", [b"k", b"v", b"k", b"w"]),      # repeated name: the last wins
        (b"3-0", []),
    ])
    assert len(entries) == 3 and entries.last_id == b"3-0"
    assert list(entries) == [(b"1-0", {b"a": b"1", b"b": b"2"}), (b"2-5", {b"k": b"w"}),
                             (b"3-0", {})]
    assert entries[-1] == (b"3-0", {}) and entries.ref(1) == b"2-5"
    assert entries.fields(0) == {b"a": b"1", b"b": b"2"}
    with pytest.raises(IndexError):
        entries[3]
    with pytest.raises(IndexError):
        entries.fields(-4)


def test_gets_xread_shapes() -> None:
    reader = ReplyReader()
    reader.feed(b"*-1\r\n")                  # BLOCK timed out
    empty = reader.gets_xread()
    assert isinstance(empty, StreamEntries) and len(empty) == 0 and empty.last_id is None
    reader.feed(b"-NOGROUP no such key\r\n")
    err = reader.gets_xread()
    assert type(err) is RedisReplyError and str(err) == "NOGROUP no such key"
    # Two streams: flattened in reply order.
    two = xread_reply([(b"1-0", [b"a", b"1"])], key=b"s1")[4:]
    two = b"*2\r\n" + two + xread_reply([(b"2-0", [b"b", b"2"])], key=b"s2")[4:]
    reader.feed(two[:10])
    assert reader.gets_xread() is False
    reader.feed(two[10:])
    assert list(reader.gets_xread()) == [(b"1-0", {b"a": b"1"}), (b"2-0", {b"b": b"2"})]
    # XREADGROUP: an entry deleted while pending has a nil field list.
    reader.feed(encode_reply([[b"s", [[b"1-0", None]]]]))
    assert list(reader.gets_xread()) == [(b"1-0", {})]


@pytest.mark.parametrize("bad", [
    encode_reply([[b"s"]]),                          # stream without entries
    encode_reply([[b"s", [[b"1-0", [b"a"]]]]]),      # odd field list
    encode_reply([[b"s", [[b"1-0", [b"a", None]]]]]),  # nil value
    encode_reply([[b"s", [b"1-0"]]]),                # entry not a pair
    encode_reply(b"OK"),
])
def test_gets_xread_rejects_other_shapes(bad: bytes) -> None:
    reader = ReplyReader()
    reader.feed(bad)
    with pytest.raises(RedisProtocolError):
        reader.gets_xread()


async def test_xread_from_redis_matches_hiredis(redis_session: RedisServer,
                                                key_prefix: str) -> None:
    """Real XREAD replies (binary fields, empty values, long values), parsed by
    both; the router's connection hands the XREAD reply over as StreamEntries."""
    key = f"{key_prefix}:out".encode()
    conn = await open_connection(redis_session.url)
    try:
        values = [b"", b"\x00\r\n\xff", "é".encode() * 50, b"v" * 70_000]
        for i, v in enumerate(values):
            await conn.command(b"XADD", key, b"*", b"kind", b"result", b"i", i, b"blob", v)
        cmd = (b"XREAD", b"COUNT", 100, b"STREAMS", key, b"0-0")
        [raw_reply] = await conn.pipeline([cmd], xread=True)
        [generic] = await conn.pipeline([cmd])
    finally:
        conn.close()
        await conn.wait_closed()
    assert isinstance(raw_reply, StreamEntries)
    expected = [(ref, dict(zip(flat[::2], flat[1::2], strict=True)))
                for ref, flat in generic[0][1]]
    assert list(raw_reply) == expected
    assert [f[b"blob"] for _, f in raw_reply] == values
    # The same bytes through hiredis give the same entries.
    h = hiredis.Reader()
    h.feed(encode_reply(generic))
    assert _norm(h.gets()) == _norm(generic)


def test_gets_into_stops_at_the_limit_or_an_incomplete_reply() -> None:
    reader = ReplyReader()
    data = b"".join(encode_reply(v) for v in (b"1-1", RedisReplyError("ERR x"), b"1-2", 5))
    out: list[object] = []
    reader.feed(data[:-2])
    assert reader.gets_into(out, 10) == 3          # the fourth is not whole yet
    reader.feed(data[-2:])
    assert reader.gets_into(out, 0) == 0
    assert reader.gets_into(out, 10) == 1
    assert _norm(out) == [b"1-1", ("error", "ERR x"), b"1-2", 5]


@given(st.binary(max_size=300), st.lists(st.integers(0, 400), max_size=6))
def test_garbage_never_crashes(data: bytes, cuts: list[int]) -> None:
    # Whatever arrives (a broken proxy, a wrong port), the parser returns
    # replies, waits for more, or raises RedisProtocolError: nothing else.
    reader = ReplyReader(64)
    try:
        for chunk in _chunks(data, cuts):
            reader.feed(chunk)
            while reader.gets() is not False:
                pass
    except RedisProtocolError:
        pass


@given(replies)
def test_gets_xread_on_any_reply_shape(value: object) -> None:
    # Any well-formed reply: an XREAD-shaped one becomes StreamEntries, an
    # error reply a RedisReplyError, anything else a RedisProtocolError.
    reader = ReplyReader(64)
    reader.feed(encode_reply(value))
    try:
        out = reader.gets_xread()
    except RedisProtocolError:
        return
    if isinstance(value, RedisReplyError):
        assert type(out) is RedisReplyError and str(out) == str(value)
        return
    assert isinstance(out, StreamEntries)
    expected = []
    for _key, entries in value or []:  # type: ignore[attr-defined]
        for ref, flat in entries:
            flat = flat or []
            expected.append((ref, dict(zip(flat[::2], flat[1::2], strict=True))))
    assert list(out) == expected


def test_group_read_field_access_without_a_dict() -> None:
    # The backend SDK's accessors (issue 14): pick, value, size, and the XADD
    # of a CALLRESULT built from the entry's own bytes.
    from router.streams._resp import CommandBuffer

    reader = ReplyReader()
    fields = [b"kind", b"call", b"cs", b"CP-\xc3\xa9", b"node", b"n1", b"conn", b"c1",
              b"id", b"42", b"payload", b"{}", b"cs", b"CP-2"]
    reader.feed(encode_reply([[b"s", [[b"1-0", fields], [b"2-0", None]]]]))
    entries = reader.gets_xread()
    # A repeated name: the last one wins, as in fields().
    assert entries.pick(0, (b"kind", b"cs", b"action")) == ("call", "CP-2", None)
    assert entries.value(0, b"payload") == b"{}" and entries.value(0, b"ts") is None
    assert (entries.size(0), entries.size(1)) == (7, 0)
    assert entries.pick(1, (b"kind",)) == (None,)
    with pytest.raises(IndexError):
        entries.pick(2, (b"kind",))
    buf = CommandBuffer()
    buf.append_result(b"ocpp:out:", 100, entries, 0, b'{"a":1}')
    expected = CommandBuffer()
    expected.append_xadd(b"ocpp:out:n1", 100, [b"kind", b"result", b"cs", b"CP-2",
                                               b"conn", b"c1", b"id", b"42",
                                               b"payload", b'{"a":1}'])
    assert buf.take() == expected.take()
    buf.append_result(b"ocpp:out:", None, entries, 0, b"{}")
    assert b"MAXLEN" not in buf.take()
    with pytest.raises(ValueError, match="lacks node"):
        buf.append_result(b"ocpp:out:", 100, entries, 1, b"{}")
    assert len(buf) == 0 and buf.nbytes == 0
