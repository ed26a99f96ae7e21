"""The sans-I/O frame codec: framing rules, close codes, UTF-8, limits, and
feeding at every split point (RFC 6455 §5, §7.4, §8.1)."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.ws import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Connection,
    InvalidPayload,
    MessageTooBig,
    ProtocolError,
    WebSocketError,
    close_frame,
    encode,
    mask,
    validate_utf8,
)
from tests.ws.helpers import client_frame, close_payload, parse_server_frames


def feed_all(data: bytes, **kw: int) -> list[tuple[object, ...]]:
    return Connection(**kw).receive_data(data)


def feed_split(data: bytes, cuts: list[int], **kw: int) -> list[tuple[object, ...]]:
    conn = Connection(**kw)
    events: list[tuple[object, ...]] = []
    prev = 0
    for cut in [*sorted(cuts), len(data)]:
        events += conn.receive_data(data[prev:cut])
        prev = cut
    return events


def feed_bytewise(data: bytes, **kw: int) -> list[tuple[object, ...]]:
    conn = Connection(**kw)
    events: list[tuple[object, ...]] = []
    for i in range(len(data)):
        events += conn.receive_data(data[i:i + 1])
    return events


# ----------------------------------------------------------------- messages


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 125, 126, 127, 65535, 65536, 200_000])
def test_lengths_at_encoding_boundaries(size: int) -> None:
    payload = os.urandom(size)
    assert feed_all(client_frame(OP_BINARY, payload)) == [(OP_BINARY, payload)]
    assert feed_split(client_frame(OP_BINARY, payload), [1, 3, 5]) == [(OP_BINARY, payload)]


def test_several_messages_in_one_read() -> None:
    data = (client_frame(OP_TEXT, b"a") + client_frame(OP_BINARY, b"\x00\x01")
            + client_frame(OP_PING, b"hi") + client_frame(OP_PONG, b"")
            + client_frame(OP_CLOSE, close_payload(1000, b"bye")))
    assert feed_all(data) == [
        (OP_TEXT, b"a"), (OP_BINARY, b"\x00\x01"), (OP_PING, b"hi"), (OP_PONG, b""),
        (OP_CLOSE, 1000, "bye"),
    ]


def test_fragmented_message_with_interleaved_control_frames() -> None:
    text = "żółw 🐢 turtle".encode()
    data = (client_frame(OP_TEXT, text[:3], fin=False)      # cut inside a character
            + client_frame(OP_PING, b"p1")
            + client_frame(0, text[3:11], fin=False)
            + client_frame(OP_PONG, b"p2")
            + client_frame(0, b"", fin=False)
            + client_frame(0, text[11:]))
    expected = [(OP_PING, b"p1"), (OP_PONG, b"p2"), (OP_TEXT, text)]
    assert feed_all(data) == expected
    assert feed_bytewise(data) == expected


def test_close_without_code_is_1005_and_later_bytes_are_ignored() -> None:
    conn = Connection()
    events = conn.receive_data(client_frame(OP_CLOSE) + client_frame(OP_TEXT, b"late"))
    assert events == [(OP_CLOSE, 1005, "")]
    assert conn.closed
    assert conn.receive_data(client_frame(OP_TEXT, b"later")) == []


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011,
                                  1012, 1013, 1014, 3000, 3999, 4000, 4999])
def test_valid_close_codes(code: int) -> None:
    assert feed_all(client_frame(OP_CLOSE, close_payload(code, "ok é".encode()))) == [
        (OP_CLOSE, code, "ok é")]


# ----------------------------------------------------------------- errors

PROTOCOL_ERRORS = {
    "unmasked": client_frame(OP_TEXT, b"x", masked=False),
    "rsv1 without deflate": client_frame(OP_TEXT, b"x", rsv=0b100),
    "rsv2": client_frame(OP_TEXT, b"x", rsv=0b010),
    "rsv3": client_frame(OP_BINARY, b"x", rsv=0b001),
    **{f"opcode {op}": client_frame(op, b"x") for op in (3, 4, 5, 6, 7, 11, 12, 13, 14, 15)},
    "fragmented ping": client_frame(OP_PING, b"x", fin=False),
    "ping > 125": client_frame(OP_PING, b"x" * 126),
    "close > 125": client_frame(OP_CLOSE, close_payload(1000, b"x" * 124)),
    "continuation first": client_frame(0, b"x"),
    "text inside fragmented": client_frame(OP_TEXT, b"a", fin=False) + client_frame(OP_TEXT, b"b"),
    "16-bit length for 100": client_frame(OP_BINARY, b"x" * 100, length_form=126),
    "64-bit length for 1000": client_frame(OP_BINARY, b"x" * 1000, length_form=127),
    "64-bit length MSB": bytes([0x82, 0xFF]) + b"\x80" + b"\x00" * 7 + b"abcd",
    "close 1 byte": client_frame(OP_CLOSE, b"\x03"),
    **{f"close code {c}": client_frame(OP_CLOSE, close_payload(c))
       for c in (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535)},
}


@pytest.mark.parametrize("data", PROTOCOL_ERRORS.values(), ids=PROTOCOL_ERRORS.keys())
def test_protocol_errors_close_1002(data: bytes) -> None:
    conn = Connection(max_message_size=1 << 30)
    with pytest.raises(ProtocolError) as info:
        conn.receive_data(data)
    assert info.value.close_code == 1002
    assert conn.failed
    assert conn.receive_data(client_frame(OP_TEXT, b"ignored")) == []


INVALID_UTF8 = [b"\xff", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
                b"\xf5\x80\x80\x80", b"a\x80", b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed"]


@pytest.mark.parametrize("bad", INVALID_UTF8)
def test_invalid_utf8_closes_1007(bad: bytes) -> None:
    with pytest.raises(InvalidPayload) as info:
        feed_all(client_frame(OP_TEXT, bad))
    assert info.value.close_code == 1007
    with pytest.raises(InvalidPayload):
        feed_bytewise(client_frame(OP_TEXT, bad[:1], fin=False) + client_frame(0, bad[1:]))


def test_invalid_utf8_fails_fast_inside_a_fragment() -> None:
    # Autobahn 6.4.x: the error is found before the rest of the frame arrives.
    frame = client_frame(OP_TEXT, b"\xce\xba\xf4\x90\x80\x80" + b"x" * 1000, fin=False)
    conn = Connection()
    with pytest.raises(InvalidPayload):
        conn.receive_data(frame[:12])


def test_invalid_utf8_in_close_reason_is_1007() -> None:
    with pytest.raises(InvalidPayload):
        feed_all(client_frame(OP_CLOSE, close_payload(1000, b"\xff")))


def test_binary_messages_are_not_utf8_checked() -> None:
    assert feed_all(client_frame(OP_BINARY, b"\xff\xfe")) == [(OP_BINARY, b"\xff\xfe")]


def test_too_big_is_refused_on_the_header() -> None:
    # Only the header (and 10 payload bytes) of a 2 MB frame: 1009 at once.
    conn = Connection(max_message_size=1000)
    frame = client_frame(OP_BINARY, b"x" * 2_000_000)
    with pytest.raises(MessageTooBig) as info:
        conn.receive_data(frame[:24])
    assert info.value.close_code == 1009


def test_too_big_across_fragments() -> None:
    conn = Connection(max_message_size=1000)
    assert conn.receive_data(client_frame(OP_TEXT, b"x" * 600, fin=False)) == []
    with pytest.raises(MessageTooBig):
        conn.receive_data(client_frame(0, b"x" * 401))


def test_exactly_the_limit_passes() -> None:
    data = client_frame(OP_TEXT, b"x" * 600, fin=False) + client_frame(0, b"y" * 400)
    assert feed_all(data, max_message_size=1000) == [(OP_TEXT, b"x" * 600 + b"y" * 400)]


def test_errors_share_one_base_and_carry_wire_codes() -> None:
    for cls, code in ((ProtocolError, 1002), (InvalidPayload, 1007), (MessageTooBig, 1009)):
        assert issubclass(cls, WebSocketError)
        assert cls.close_code == code
        assert cls.public_reason and "\n" not in cls.public_reason


# ----------------------------------------------------------------- split feeding

message_st = st.tuples(
    st.sampled_from([OP_TEXT, OP_BINARY, OP_PING, OP_PONG]),
    st.one_of(st.text(max_size=300).map(str.encode), st.binary(max_size=70_000)),
    st.integers(min_value=1, max_value=4),        # fragments for data messages
)


def build_stream(messages: list[tuple[int, bytes, int]]) -> tuple[bytes, list[tuple[int, bytes]]]:
    data = b""
    expected = []
    for op, payload, parts in messages:
        if op in (OP_PING, OP_PONG):
            payload = payload[:125]
            data += client_frame(op, payload, key=os.urandom(4))
        else:
            if op == OP_TEXT and not validate_utf8(payload):
                op = OP_BINARY
            step = max(1, len(payload) // parts)
            chunks = [payload[i:i + step] for i in range(0, len(payload), step)] or [b""]
            for i, chunk in enumerate(chunks):
                data += client_frame(op if i == 0 else 0, chunk, fin=i == len(chunks) - 1,
                                     key=os.urandom(4))
        expected.append((op, payload))
    return data, expected


@settings(max_examples=60, deadline=None)
@given(st.lists(message_st, min_size=1, max_size=6), st.randoms(use_true_random=False))
def test_random_split_points_give_the_same_events(messages: list[tuple[int, bytes, int]],
                                                   rnd: random.Random) -> None:
    data, expected = build_stream(messages)
    assert feed_all(data) == expected
    cuts = rnd.sample(range(1, len(data)), min(len(data) - 1, rnd.randint(0, 40)))
    assert feed_split(data, cuts) == expected


@settings(max_examples=15, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([OP_TEXT, OP_BINARY, OP_PING]),
                          st.binary(max_size=200), st.integers(1, 3)), min_size=1, max_size=4))
def test_byte_at_a_time(messages: list[tuple[int, bytes, int]]) -> None:
    data, expected = build_stream(messages)
    assert feed_bytewise(data) == expected


def test_every_split_offset_of_a_mixed_stream() -> None:
    data, expected = build_stream([(OP_TEXT, "héllo wörld".encode(), 3), (OP_PING, b"p", 1),
                                   (OP_BINARY, bytes(range(256)) * 2, 2)])
    for cut in range(1, len(data)):
        assert feed_split(data, [cut]) == expected


# ----------------------------------------------------------------- UTF-8 and masking


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_utf8_validator_matches_python(data: bytes) -> None:
    try:
        data.decode("utf-8")
        ok = True
    except UnicodeDecodeError:
        ok = False
    assert validate_utf8(data) is ok


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60).map(str.encode), st.integers(0, 60), st.integers(0, 60))
def test_utf8_incremental_across_fragments(text: bytes, a: int, b: int) -> None:
    a, b = sorted((min(a, len(text)), min(b, len(text))))
    data = (client_frame(OP_TEXT, text[:a], fin=False) + client_frame(0, text[a:b], fin=False)
            + client_frame(0, text[b:]))
    assert feed_all(data) == [(OP_TEXT, text)]


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=100), st.binary(min_size=4, max_size=4))
def test_mask_matches_bytewise_xor(data: bytes, key: bytes) -> None:
    assert mask(data, key) == bytes(b ^ key[i % 4] for i, b in enumerate(data))


# ----------------------------------------------------------------- encoding


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_server_frames_are_unmasked_fin_frames(size: int) -> None:
    payload = os.urandom(size)
    assert parse_server_frames(encode(OP_BINARY, payload)) == [(OP_BINARY, True, False, payload)]
    assert parse_server_frames(Connection().send(OP_TEXT, payload)) == [
        (OP_TEXT, True, False, payload)]


def test_close_frame_reason_is_cut_at_a_character_boundary() -> None:
    [(op, fin, _, payload)] = parse_server_frames(close_frame(1001, "é" * 100))
    assert op == OP_CLOSE and fin
    assert len(payload) <= 125
    assert payload[:2] == b"\x03\xe9"
    payload[2:].decode("utf-8")
