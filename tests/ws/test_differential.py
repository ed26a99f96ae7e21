"""Differential test against wsproto (a trusted, independent RFC 6455
implementation): the same hypothesis-generated client frame streams, valid or
not, must give the same complete messages and the same close code.

Known, deliberate divergence: close code 1014 (IANA "Bad Gateway") is valid
for us and not for wsproto, so it is not generated.
"""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed

from router.ws import Connection, WebSocketError
from tests.ws.helpers import client_frame

CLOSE_CODES = [0, 999, 1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009, 1010, 1011,
               1012, 1013, 1015, 1016, 2000, 2999, 3000, 3999, 4000, 4999, 5000, 65535]

payload_st = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=100).map(str.encode),
    st.sampled_from([b"\xce\xba\xe1", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf",
                     "€".encode()[:2], b"x" * 126, b"y" * 70_000]),
)


@st.composite
def frame_st(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["text", "binary", "cont", "ping", "pong", "close", "weird"]))
    fin = draw(st.booleans()) if kind in ("text", "binary", "cont") else draw(
        st.sampled_from([True, True, True, False]))
    rsv = draw(st.sampled_from([0] * 12 + [1, 2, 4]))
    masked = draw(st.sampled_from([True] * 20 + [False]))
    payload = draw(payload_st)
    if kind == "close":
        shape = draw(st.sampled_from(["empty", "one", "code"]))
        if shape == "empty":
            payload = b""
        elif shape == "one":
            payload = payload[:1] or b"\x03"
        else:
            reason = draw(st.one_of(st.text(max_size=20).map(str.encode),
                                    st.sampled_from([b"\xff", b"\xc3"])))
            payload = struct.pack("!H", draw(st.sampled_from(CLOSE_CODES))) + reason
    elif kind in ("ping", "pong"):
        payload = payload[: draw(st.sampled_from([125, 125, 125, 126, 200]))]
    opcode = {"text": 1, "binary": 2, "cont": 0, "ping": 9, "pong": 10, "close": 8}.get(kind)
    if opcode is None:
        opcode = draw(st.sampled_from([3, 4, 5, 6, 7, 11, 12, 13, 14, 15]))
    form = None
    if draw(st.integers(0, 20)) == 0 and len(payload) < 65536:
        form = draw(st.sampled_from([126, 127]))      # non-minimal length encoding
    return client_frame(opcode, payload, fin=fin, rsv=rsv, masked=masked,
                        key=draw(st.binary(min_size=4, max_size=4)), length_form=form)


def run_wsproto(data: bytes, cuts: list[int]) -> tuple[list[tuple[int, object]], int | None]:
    proto = FrameProtocol(client=False, extensions=[])
    messages: list[tuple[int, object]] = []
    parts: list[object] = []
    opcode = None
    prev = 0
    try:
        for cut in [*cuts, len(data)]:
            proto.receive_bytes(data[prev:cut])
            prev = cut
            for frame in proto.received_frames():
                if frame.opcode is Opcode.CLOSE:
                    code, reason = frame.payload
                    messages.append((8, (int(code), reason)))
                    return messages, None
                if frame.opcode in (Opcode.PING, Opcode.PONG):
                    messages.append((int(frame.opcode), bytes(frame.payload)))
                    continue
                if opcode is None:
                    opcode = frame.opcode
                parts.append(frame.payload)
                if frame.message_finished:
                    if opcode is Opcode.TEXT:
                        messages.append((1, "".join(parts).encode()))   # type: ignore[arg-type]
                    else:
                        messages.append((2, b"".join(parts)))           # type: ignore[arg-type]
                    parts = []
                    opcode = None
    except ParseFailed as exc:
        return messages, int(exc.code)
    return messages, None


def run_ours(data: bytes, cuts: list[int]) -> tuple[list[tuple[int, object]], int | None]:
    conn = Connection(max_message_size=1 << 30)
    messages: list[tuple[int, object]] = []
    prev = 0
    error = None
    for cut in [*cuts, len(data)]:
        try:
            events = conn.receive_data(data[prev:cut])
        except WebSocketError as exc:
            events = conn.events_received()
            error = int(exc.close_code)
        for event in events:
            if event[0] == 8:
                messages.append((8, (event[1], event[2])))
            else:
                messages.append((event[0], event[1]))
        prev = cut
        if conn.closed or error is not None:
            break
    return messages, error


@settings(max_examples=400, deadline=None)
@given(st.lists(frame_st(), min_size=1, max_size=8), st.lists(st.integers(1, 10_000), max_size=6))
def test_same_messages_and_close_codes_as_wsproto(frames: list[bytes], raw_cuts: list[int]) -> None:
    data = b"".join(frames)
    cuts = sorted({c % len(data) for c in raw_cuts} - {0})
    assert run_ours(data, cuts) == run_wsproto(data, cuts)


# ----------------------------------------------------------------- permessage-deflate

message_st = st.lists(
    st.tuples(st.booleans(), st.one_of(st.text(max_size=400).map(str.encode),
                                       st.binary(max_size=3000),
                                       st.sampled_from([b"abc" * 5000, b"\0" * 70_000])),
              st.integers(1, 3)),
    min_size=1, max_size=6)


@settings(max_examples=80, deadline=None)
@given(message_st, st.booleans(), st.booleans(), st.sampled_from([9, 12, 15]),
       st.sampled_from([9, 10, 15]))   # wsproto cannot do 8
def test_deflate_both_ways_against_wsproto(messages: list[tuple[bool, bytes, int]],
                                            server_no_ctx: bool, client_no_ctx: bool,
                                            server_bits: int, client_bits: int) -> None:
    from wsproto.extensions import PerMessageDeflate

    from router.ws import Connection as Codec
    from router.ws import negotiate_deflate

    client_ext = PerMessageDeflate()
    params = negotiate_deflate(f"{client_ext.name}; {client_ext.offer()}", server_bits, client_bits,
                               server_no_ctx, client_no_ctx)
    assert params is not None
    client_ext.finalize(params.response)
    client = FrameProtocol(client=True, extensions=[client_ext])
    server = Codec(max_message_size=1 << 20, deflate=params, compression_threshold=0)

    expected = []
    wire = b""
    for is_text, payload, parts in messages:
        if is_text and not payload.decode("utf-8", "ignore").encode() == payload:
            is_text = False
        data: str | bytes = payload.decode() if is_text else payload
        step = max(1, len(data) // parts)
        chunks = [data[i:i + step] for i in range(0, len(data), step)] or [data]
        for i, chunk in enumerate(chunks):
            wire += client.send_data(chunk, fin=i == len(chunks) - 1)
        expected.append((1 if is_text else 2, payload))
    # Client -> server: wsproto compresses and masks, we inflate.
    assert [(e[0], e[1]) for e in server.receive_data(wire)] == expected
    # Server -> client: we compress, wsproto inflates.
    back = b"".join(server.send(op, payload) for op, payload in expected)
    client.receive_bytes(back)
    got = []
    parts_: list[object] = []
    for frame in client.received_frames():
        parts_.append(frame.payload)
        if frame.message_finished:
            if frame.opcode is Opcode.TEXT:
                got.append((1, "".join(parts_).encode()))       # type: ignore[arg-type]
            else:
                got.append((2, b"".join(parts_)))               # type: ignore[arg-type]
            parts_ = []
    assert got == expected
