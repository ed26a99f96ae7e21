"""RESP2 reply encoding for tests: what Redis would send, built from Python values."""

from __future__ import annotations

from typing import Any

from router.streams._resp import ReplyReader, StreamEntries
from router.streams.errors import RedisReplyError


def encode_reply(value: Any) -> bytes:
    """One RESP2 reply: bytes -> bulk, str -> simple string, int -> integer,
    None -> nil bulk, list -> array, RedisReplyError -> error."""
    if isinstance(value, RedisReplyError):
        return b"-" + str(value).encode() + b"\r\n"
    if isinstance(value, bool):
        raise TypeError("RESP2 has no boolean")
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, str):
        return b"+" + value.encode() + b"\r\n"
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, list):
        return b"*%d\r\n" % len(value) + b"".join(encode_reply(v) for v in value)
    raise TypeError(f"no RESP2 encoding for {type(value).__name__}")


def xread_reply(entries: list[tuple[bytes, list[bytes] | dict[bytes, bytes]]],
                key: bytes = b"ocpp:out:n1") -> bytes:
    """The XREAD reply of one stream holding ``entries`` (fields as a flat
    list of names and values, or a dict)."""
    flat = [[ref, [x for kv in f.items() for x in kv] if isinstance(f, dict) else f]
            for ref, f in entries]
    return encode_reply([[key, flat]])


def stream_entries(entries: list[tuple[bytes, list[bytes] | dict[bytes, bytes]]]
                   ) -> StreamEntries:
    """``entries`` as the router's reader would hand them over."""
    reader = ReplyReader()
    reader.feed(xread_reply(entries))
    out = reader.gets_xread()
    assert isinstance(out, StreamEntries)
    return out
