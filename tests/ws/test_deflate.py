"""permessage-deflate (RFC 7692): negotiation, decompression limits, context
takeover, and what we send."""

from __future__ import annotations

import os
import zlib

import pytest

from router.ws import (
    OP_BINARY,
    OP_PING,
    OP_TEXT,
    Connection,
    DeflateParams,
    InvalidPayload,
    MessageTooBig,
    ProtocolError,
    negotiate_deflate,
)
from tests.ws.helpers import client_frame, deflate, inflate, parse_server_frames

NO_CTX = DeflateParams(12, 12, True, True)
CTX = DeflateParams(15, 15, False, False)


# ----------------------------------------------------------------- negotiation


@pytest.mark.parametrize(("offer", "response"), [
    ("permessage-deflate",
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
     "server_max_window_bits=12"),
    ("permessage-deflate; client_max_window_bits",
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
     "server_max_window_bits=12; client_max_window_bits=12"),
    ("permessage-deflate; client_max_window_bits=10; server_max_window_bits=11",
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
     "server_max_window_bits=11; client_max_window_bits=10"),
    ('permessage-deflate; server_max_window_bits="10"',
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
     "server_max_window_bits=10"),
    # The first acceptable offer wins; broken ones are declined (§7.1).
    ("permessage-deflate; foo=1, permessage-deflate; server_max_window_bits=8, "
     "permessage-deflate; server_max_window_bits=13",
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
     "server_max_window_bits=12"),
    ("x-webkit-deflate-frame, permessage-deflate; client_max_window_bits=15",
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
     "server_max_window_bits=12; client_max_window_bits=12"),
])
def test_negotiation(offer: str, response: str) -> None:
    params = negotiate_deflate(offer)
    assert params is not None
    assert params.response == response


@pytest.mark.parametrize("offer", [
    "x-webkit-deflate-frame",
    "permessage-deflate; server_max_window_bits=8",       # zlib cannot do 8
    "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; server_max_window_bits",
    "permessage-deflate; client_max_window_bits=7",
    "permessage-deflate; client_max_window_bits=010",
    "permessage-deflate; server_no_context_takeover=1",
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    "permessage-deflate; mystery",
    "permessage-deflate;",
])
def test_declined_offers(offer: str) -> None:
    assert negotiate_deflate(offer) is None


def test_context_takeover_kept_when_allowed() -> None:
    params = negotiate_deflate("permessage-deflate; client_max_window_bits", 15, 15, False, False)
    assert params is not None
    assert params.response == "permessage-deflate; client_max_window_bits=15"
    assert not params.server_no_context_takeover and not params.client_no_context_takeover
    forced = negotiate_deflate("permessage-deflate; server_no_context_takeover", 15, 15,
                               False, False)
    assert forced is not None and forced.server_no_context_takeover   # MUST honour (§7.1.1.1)


# ----------------------------------------------------------------- receiving


@pytest.mark.parametrize("params", [NO_CTX, CTX], ids=["no-context", "context"])
def test_compressed_messages(params: DeflateParams) -> None:
    conn = Connection(deflate=params)
    text = ("ocpp " * 500).encode()
    data = client_frame(OP_TEXT, deflate(text, 12), rsv=0b100)
    assert conn.receive_data(data) == [(OP_TEXT, text)]
    # Fragmented compressed message: RSV1 only on the first frame (§6.1).
    payload = deflate(os.urandom(3000) + b"z" * 5000, 12)
    frames = (client_frame(OP_BINARY, payload[:100], fin=False, rsv=0b100)
              + client_frame(OP_PING, b"!")
              + client_frame(0, payload[100:]))
    events = conn.receive_data(frames)
    assert events[0] == (OP_PING, b"!")
    assert events[1][0] == OP_BINARY and len(events[1][1]) == 8000
    # Uncompressed messages stay allowed (§6: RSV1 is per message).
    assert conn.receive_data(client_frame(OP_TEXT, b"plain")) == [(OP_TEXT, b"plain")]


def test_client_context_takeover_across_messages() -> None:
    conn = Connection(deflate=CTX)
    comp = zlib.compressobj(wbits=-15)
    for i in range(5):
        msg = b"the same words again and again %d" % i
        assert conn.receive_data(client_frame(OP_TEXT, deflate(msg, compressor=comp), rsv=0b100)) == [
            (OP_TEXT, msg)]


def test_bfinal_block_is_accepted() -> None:
    comp = zlib.compressobj(wbits=-15)
    payload = comp.compress(b"final block") + comp.flush(zlib.Z_FINISH)
    assert Connection(deflate=NO_CTX).receive_data(client_frame(OP_TEXT, payload, rsv=0b100)) == [
        (OP_TEXT, b"final block")]


def test_deflate_bomb_closes_1009() -> None:
    # 50 MB of zeros compress to ~50 kB; the limit is 1 MB.
    bomb = deflate(b"\0" * 50_000_000)
    conn = Connection(max_message_size=1 << 20, deflate=NO_CTX)
    with pytest.raises(MessageTooBig):
        conn.receive_data(client_frame(OP_BINARY, bomb, rsv=0b100))
    assert conn.failed


def test_inflated_size_exactly_at_the_limit() -> None:
    conn = Connection(max_message_size=100_000, deflate=NO_CTX)
    assert conn.receive_data(client_frame(OP_BINARY, deflate(b"a" * 100_000), rsv=0b100)) == [
        (OP_BINARY, b"a" * 100_000)]


def test_corrupt_deflate_data_closes_1007() -> None:
    with pytest.raises(InvalidPayload):
        Connection(deflate=NO_CTX).receive_data(
            client_frame(OP_BINARY, b"\xff\xff\xff\xff garbage", rsv=0b100))


def test_compressed_invalid_utf8_closes_1007() -> None:
    with pytest.raises(InvalidPayload):
        Connection(deflate=NO_CTX).receive_data(client_frame(OP_TEXT, deflate(b"\xff\xfe"), rsv=0b100))


def test_rsv1_on_continuation_is_a_protocol_error() -> None:
    conn = Connection(deflate=NO_CTX)
    with pytest.raises(ProtocolError):
        conn.receive_data(client_frame(OP_TEXT, b"a", fin=False) + client_frame(0, b"b", rsv=0b100))


# ----------------------------------------------------------------- sending


@pytest.mark.parametrize("params", [NO_CTX, CTX], ids=["no-context", "context"])
def test_sent_messages_inflate(params: DeflateParams) -> None:
    conn = Connection(deflate=params, compression_threshold=64)
    dec = zlib.decompressobj(wbits=-params.server_max_window_bits)
    for i in range(4):
        msg = (b'[2,"%d","Heartbeat",{}]' % i) * 20
        [(op, fin, rsv1, payload)] = parse_server_frames(conn.send(OP_TEXT, msg))
        assert (op, fin, rsv1) == (OP_TEXT, True, True)
        if params.server_no_context_takeover:
            assert inflate(payload, params.server_max_window_bits) == msg
        else:
            assert dec.decompress(payload + b"\x00\x00\xff\xff") == msg


def test_small_messages_are_not_compressed() -> None:
    conn = Connection(deflate=NO_CTX, compression_threshold=64)
    assert parse_server_frames(conn.send(OP_TEXT, b"short")) == [(OP_TEXT, True, False, b"short")]


def test_large_incompressible_message_round_trips() -> None:
    msg = os.urandom(300_000)
    [(_, _, rsv1, payload)] = parse_server_frames(Connection(deflate=NO_CTX).send(OP_BINARY, msg))
    assert rsv1 and inflate(payload, 12) == msg


@pytest.mark.parametrize("params", [NO_CTX, CTX], ids=["no-context", "context"])
def test_empty_messages_compressed(params: DeflateParams) -> None:
    # RFC 7692 §7.2.3.6: an empty message may be one 0x00 byte; with context
    # takeover the second empty message makes zlib emit nothing at all.
    conn = Connection(deflate=params, compression_threshold=0)
    dec = zlib.decompressobj(wbits=-15)
    for _ in range(3):
        [(op, _, rsv1, payload)] = parse_server_frames(conn.send(OP_BINARY, b""))
        assert (op, rsv1) == (OP_BINARY, True) and payload
        assert dec.decompress(payload + b"\x00\x00\xff\xff") == b""
    for payload in (b"\x00", deflate(b"")):
        assert conn.receive_data(client_frame(OP_TEXT, payload, rsv=0b100)) == [(OP_TEXT, b"")]
