"""Fuzz targets: the only allowed outcomes are events or the codec's own
documented errors (``ProtocolError`` 1002, ``InvalidPayload`` 1007,
``MessageTooBig`` 1009 for frames; ``HandshakeError`` subclasses for the
upgrade). Anything else — another exception, a crash, an event that breaks an
invariant — is a finding.

Each target takes raw bytes so it runs under atheris and under plain pytest
(replaying a corpus). The first byte picks a configuration; the frame targets
build mostly well-formed masked frames from the input (structure-aware) half
of the time, so mutations reach payload, fragmentation and deflate paths.

The frames are fuzzed by two targets, because the oracle costs more than the
subject: ``frames`` (every configuration, input-chosen chunking, the codec's
invariants) and ``frames_diff`` (the same streams against wsproto's pure
Python parser). One target doing both ran at ~1,400 executions/s on a quiet
core; see bench/RESULTS.md ("Fuzzing the compiled parsers").
"""

from __future__ import annotations

import importlib.util
import struct
import zlib

from wsproto.frame_protocol import FrameProtocol, ParseFailed

from router.ws import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Connection,
    DeflateParams,
    HandshakeError,
    HandshakeParser,
    InvalidPayload,
    MessageTooBig,
    ProtocolError,
    mask,
)

ALLOWED_FRAME_ERRORS = (ProtocolError, InvalidPayload, MessageTooBig)
MAX_SIZES = (0, 1, 125, 1000, 70_000)
# Chunk sizes the input picks: byte-at-a-time and odd small splits cut frame
# headers, masks and UTF-8 sequences at every offset; the large ones hand the
# codec several frames in one buffer.
STEPS = (1, 2, 3, 7, 98, 291, 680, 4096)
# At most this many chunks of the chosen size, then the rest in one piece:
# the per-call cost (a Python call, a bytes slice, an events list, all under
# ASan) times the length of a byte-at-a-time feed dominated the old target.
MAX_CHUNKS = 64
DEFLATES = (None, DeflateParams(12, 12, True, True), DeflateParams(15, 9, False, False))


class Reader:
    """A small cursor over the fuzz input (atheris' FuzzedDataProvider is
    not available outside atheris runs)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def take(self, n: int) -> bytes:
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out

    def left(self) -> int:
        return len(self.data) - self.pos


# One compressor for every message of every execution: Z_FULL_FLUSH after each
# message resets it (no back-references across the flush, the same bytes for
# the same payload whatever came before), so each message inflates on its own
# as without context takeover (RFC 7692 §7.2.1). Setting up a compressor per
# message cost ~90 µs under ASan, half of this target's time.
_COMPRESSOR = zlib.compressobj(wbits=-12)


def structured_stream(r: Reader) -> bytes:
    """Masked frames with fields from the input; deflated payloads sometimes."""
    out: list[bytes] = []
    size = 0
    while r.left() > 0 and size < 200_000:
        b0 = r.byte()
        opcode = (OP_TEXT, OP_BINARY, 0, OP_PING, OP_PONG, OP_CLOSE, b0 & 0x0F)[b0 % 7]
        fin = bool(b0 & 0x10)
        rsv = (r.byte() >> 5) if b0 & 0x20 else 0
        n = r.byte()
        if b0 & 0x40:
            n = n * 256 + r.byte()
        payload = r.take(n)
        if b0 & 0x40 and 0 < len(payload) < n:
            # A 16-bit length the input cannot fill: its bytes repeated, so
            # frames and messages beyond max_len (buffer growth, the 70,000
            # byte limit) come from short inputs.
            payload = (payload * (n // len(payload) + 1))[:n]
        if b0 & 0x80:
            payload = (_COMPRESSOR.compress(payload)
                       + _COMPRESSOR.flush(zlib.Z_FULL_FLUSH))[:-4]
            rsv |= 0b100
        key = r.take(4).ljust(4, b"\0")
        n = len(payload)
        head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        out += (head, key, mask(payload, key))
        size += len(head) + 4 + n
    return b"".join(out)


def chunks(stream: bytes, step: int) -> list[bytes]:
    """``stream`` cut every ``step`` bytes, at most :data:`MAX_CHUNKS` times;
    the rest in one piece."""
    cut = min(len(stream), step * MAX_CHUNKS)
    out = [stream[i:i + step] for i in range(0, cut, step)]
    if cut < len(stream):
        out.append(stream[cut:])
    return out


def fuzz_frames(data: bytes) -> None:
    """Feed frames to the server codec, split at input-chosen points."""
    if not data:
        return
    r = Reader(data)
    cfg = r.byte()
    max_size = MAX_SIZES[cfg % len(MAX_SIZES)] or 1 << 20
    deflate = DEFLATES[(cfg >> 3) % len(DEFLATES)]
    stream = structured_stream(r) if cfg & 0x80 else r.take(r.left())
    conn = Connection(max_message_size=max_size, deflate=deflate)
    closed = False
    for chunk in chunks(stream, STEPS[cfg & 0x07]):
        try:
            events = conn.receive_data(chunk)
        except ALLOWED_FRAME_ERRORS as exc:
            assert exc.close_code in (1002, 1007, 1009)
            assert conn.failed
            for event in conn.events_received():
                check_event(event, max_size)
            return
        for event in events:
            assert not closed, "event after a close frame"
            check_event(event, max_size)
            closed = event[0] == OP_CLOSE
    # Whatever was sent back must be decodable by us too (round trip).
    if not closed and not conn.failed:
        conn.send(OP_BINARY, stream[:1000])


def fuzz_frames_diff(data: bytes) -> None:
    """Differential: the stream (raw, or built like :func:`fuzz_frames` does)
    through our codec and wsproto's frame parser, which must agree."""
    if not data:
        return
    r = Reader(data)
    cfg = r.byte()
    compare_with_wsproto(structured_stream(r) if cfg & 0x80 else r.take(r.left()))


def _ours(stream: bytes) -> tuple[list[tuple[object, ...]], int | None]:
    """Our events for a whole stream until the first close, and the close
    code of the error that ended it (None: no error)."""
    conn = Connection(max_message_size=1 << 20)
    try:
        events = conn.receive_data(stream)
        code = None
    except ALLOWED_FRAME_ERRORS as exc:
        events, code = conn.events_received(), exc.close_code
    out = []
    for event in events:
        out.append(event)
        if event[0] == OP_CLOSE:
            break
    return out, code


def _theirs(stream: bytes) -> tuple[list[tuple[object, ...]], int | None]:
    """wsproto's frame layer (RFC 6455 server side, no extensions) on the same
    stream: messages reassembled from frames, until the first close."""
    proto = FrameProtocol(client=False, extensions=[])
    out: list[tuple[object, ...]] = []
    parts: list[bytes] = []
    kind = 0
    try:
        proto.receive_bytes(stream)
        for frame in proto.received_frames():
            op = int(frame.opcode)
            if op == OP_CLOSE:
                code, reason = frame.payload
                out.append((OP_CLOSE, int(code), reason))
                break
            if op in (OP_PING, OP_PONG):
                out.append((op, bytes(frame.payload)))
                continue
            kind = op or kind
            payload = frame.payload
            parts.append(payload.encode() if isinstance(payload, str) else bytes(payload))
            if frame.message_finished:
                out.append((kind, b"".join(parts)))
                parts = []
    except ParseFailed as exc:
        return out, int(exc.code)
    return out, None


def compare_with_wsproto(stream: bytes) -> None:
    """Differential: the same events and the same verdict (1002/1007) as
    wsproto's frame parser, for a server without extensions."""
    ours, our_code = _ours(stream)
    theirs, their_code = _theirs(stream)
    if (our_code is None) != (their_code is None):
        # One side rejects a frame whose header is still incomplete (wsproto
        # checks the opcode after two bytes, we after the whole header): the
        # verdicts must agree once the header is complete (14 bytes at most).
        tail = stream + bytes(14) + client_frame(OP_CLOSE, b"\x03\xe8")
        ours, our_code = _ours(tail)
        theirs, their_code = _theirs(tail)
    if our_code == 1009 and their_code in (None, 1007):
        # wsproto has no message size limit: it waits for the payload of a
        # frame whose header announces more than our 1 MiB, which we refuse on
        # the header (RFC 6455 §10.4), or finds invalid UTF-8 in the part of
        # it that arrived. Everything else about that header (RSV bits,
        # opcode, mask, minimal length) we checked first: a 1002 from wsproto
        # would still be a disagreement, and the events before must agree.
        their_code = 1009
    end = _invalid_text_prefix(stream) if our_code == 1007 and their_code in (None, 1002) \
        else None
    if end is not None:
        # We fail a text message at its first invalid byte (RFC 6455 §8.1,
        # Autobahn's "fail fast" cases); wsproto's incremental decoder (Python's)
        # holds a truncated sequence such as ED A1 (a UTF-16 surrogate, never
        # valid) until more bytes come, so it fails later or on a later frame,
        # and goes on delivering what comes before that (a ping or pong
        # between the fragments). Checked here without either parser: the
        # bytes of that message up to the frame ending at ``end`` cannot begin
        # any valid UTF-8 text; wsproto must agree with us up to that frame.
        cut, cut_code = _theirs(stream[:end])
        if cut_code is None:
            theirs, their_code = cut, 1007
    reason = _close_1014(stream) if their_code == 1002 and our_code in (None, 1007) else None
    if reason is not None:
        # 1014 (Bad Gateway) is in the IANA close code registry (RFC 6455
        # §11.7); wsproto's list stops at 1013 and 1015 and calls it reserved.
        # We must then take the close frame as any other: its reason is
        # UTF-8 (a close event) or not (1007).
        try:
            theirs, their_code = [*theirs, (OP_CLOSE, 1014, reason.decode("utf-8"))], None
        except UnicodeDecodeError:
            their_code = 1007
    assert ours == theirs, (stream[:200], ours[:5], theirs[:5], our_code, their_code)
    assert our_code == their_code, (stream[:200], our_code, their_code)


def _hand_frames(stream: bytes) -> list[tuple[int, bytes, int]]:
    """(first byte, unmasked payload, offset after the frame) of the complete
    masked frames at the start of ``stream``, read by hand (RFC 6455 §5.2) —
    for the oracle checks that must depend on neither parser."""
    out = []
    pos = 0
    while pos + 2 <= len(stream):
        b0, b1 = stream[pos], stream[pos + 1]
        n, pos = b1 & 0x7F, pos + 2
        if n >= 126:
            size = 2 if n == 126 else 8
            n, pos = int.from_bytes(stream[pos:pos + size], "big"), pos + size
        if not b1 & 0x80 or pos + 4 > len(stream):
            break
        key, pos = stream[pos:pos + 4], pos + 4
        out.append((b0, bytes(b ^ key[i % 4] for i, b in enumerate(stream[pos:pos + n])),
                    min(pos + n, len(stream))))
        pos += n
    return out


def _invalid_text_prefix(stream: bytes) -> int | None:
    """When a text message in ``stream`` has bytes, as far as they arrived,
    that no valid UTF-8 text starts with: the offset after the frame that
    brought them; else None."""
    text, parts = False, b""
    for b0, payload, end in _hand_frames(stream):
        op = b0 & 0x0F
        if op == OP_TEXT:
            text, parts = True, payload
        elif op == 0 and text:
            parts += payload
        elif op != 0:
            continue              # a control frame between fragments
        if text:
            try:
                parts.decode("utf-8")
            except UnicodeDecodeError as exc:
                if exc.reason != "unexpected end of data":
                    return end
            if b0 & 0x80:
                text = False
    return None


def _close_1014(stream: bytes) -> bytes | None:
    """The reason bytes of the first close frame if its code is 1014 and the
    frame is otherwise well-formed (FIN, no RSV bits, at most 125 bytes)."""
    for b0, payload, _end in _hand_frames(stream):
        if b0 & 0x0F == OP_CLOSE:
            ok = b0 & 0xF0 == 0x80 and len(payload) <= 125 and payload[:2] == b"\x03\xf6"
            return payload[2:] if ok else None
    return None


def check_event(event: tuple[object, ...], max_size: int) -> None:
    op = event[0]
    if op == OP_CLOSE:
        code, reason = event[1], event[2]
        assert isinstance(code, int) and isinstance(reason, str)
        assert code == 1005 or 1000 <= code <= 4999
        return
    payload = event[1]
    assert isinstance(payload, bytes)
    if op in (OP_PING, OP_PONG):
        assert len(payload) <= 125
    else:
        assert op in (OP_TEXT, OP_BINARY)
        assert len(payload) <= max_size
        if op == OP_TEXT:
            payload.decode("utf-8")


def fuzz_upgrade(data: bytes) -> None:
    """Feed an HTTP upgrade request in input-chosen chunks."""
    if not data:
        return
    step = 1 + data[0] % 64
    parser = HandshakeParser(max_header_bytes=4096, max_headers=32)
    body = data[1:]
    for i in range(0, len(body), step):
        try:
            request = parser.feed(body[i:i + step])
        except HandshakeError as exc:
            assert exc.status in (400, 405, 426, 431)
            return
        if request is not None:
            assert request.method == "GET"
            assert request.host is not None and len(request.key) == 24
            assert len(request.headers) <= 32
            assert all(name == name.lower() and "\0" not in name + value
                       for name, value in request.headers)
            return


from tests.fuzz.oracles import OCPPJ_TARGETS, fuzz_resp  # noqa: E402  (uses the helpers above)
from tests.ws.helpers import client_frame  # noqa: E402

TARGETS = {"frames": fuzz_frames, "frames_diff": fuzz_frames_diff, "upgrade": fuzz_upgrade, **OCPPJ_TARGETS, "resp": fuzz_resp}
if importlib.util.find_spec("router.soap") is not None:
    # Issue 16's OCPP-S front (router/soap/): its pure parse function.
    from tests.fuzz.soap import fuzz_soap
    TARGETS["soap"] = fuzz_soap


def seeds() -> dict[str, list[bytes]]:
    """Small valid inputs to start from (written to the corpus directory)."""
    from tests.ws.helpers import client_frame, close_payload, upgrade_request

    frames = [
        b"\x00" + client_frame(OP_TEXT, b"hello") + client_frame(OP_CLOSE, close_payload(1000)),
        b"\x01" + client_frame(OP_TEXT, b"he", fin=False) + client_frame(OP_PING, b"p")
        + client_frame(0, "llo ✓".encode()),
        b"\x08" + client_frame(OP_BINARY, b"\x00" * 300),
        bytes([0x80 | 0x10 | 0x40]) + b"\x01\x00" + b"x" * 256 + b"abcd",
        bytes([0x88]) + bytes([0x80 | 0x10 | 0x01]) + b"\x20" + b"compress me " * 3 + b"kkkk",
    ]
    upgrades = [
        b"\x05" + upgrade_request(b"Sec-WebSocket-Protocol: ocpp1.6",
                                  b"Sec-WebSocket-Extensions: permessage-deflate"),
        b"\x00" + upgrade_request(b"Authorization: Basic Q1AwMDE6c2VjcmV0"),
    ]
    return {"frames": frames, "upgrade": upgrades}
