"""Client-side frame building and small utilities shared by the WebSocket tests."""

from __future__ import annotations

import socket
import struct
import zlib

from router.ws import mask

KEY = b"\x37\xfa\x21\x3d"


def client_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0,
                 masked: bool = True, key: bytes = KEY, length_form: int | None = None) -> bytes:
    """One client-to-server frame (RFC 6455 §5.2), masked unless told otherwise.

    ``rsv`` is the RSV1..3 bits as 0b100/0b010/0b001; ``length_form`` forces the
    7-bit (0), 16-bit (126) or 64-bit (127) length encoding.
    """
    n = len(payload)
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    form = length_form if length_form is not None else (0 if n < 126 else 126 if n < 65536 else 127)
    mbit = 0x80 if masked else 0
    if form == 0:
        head = bytes([b0, mbit | n])
    elif form == 126:
        head = bytes([b0, mbit | 126]) + struct.pack("!H", n)
    else:
        head = bytes([b0, mbit | 127]) + struct.pack("!Q", n)
    if masked:
        return head + key + mask(payload, key)
    return head + payload


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def deflate(data: bytes, wbits: int = 15, compressor: zlib._Compress | None = None) -> bytes:
    """Compress one message as a permessage-deflate sender does (RFC 7692 §7.2.1)."""
    c = compressor or zlib.compressobj(wbits=-wbits)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def inflate(payload: bytes, wbits: int = 15) -> bytes:
    return zlib.decompressobj(wbits=-wbits).decompress(payload + b"\x00\x00\xff\xff")


def parse_server_frames(data: bytes) -> list[tuple[int, bool, bool, bytes]]:
    """Split server-to-client bytes into (opcode, fin, rsv1, payload); the frames
    must be unmasked (RFC 6455 §5.1)."""
    frames = []
    i = 0
    while i < len(data):
        b0, b1 = data[i], data[i + 1]
        assert not b1 & 0x80, "server frames are never masked"
        n = b1 & 0x7F
        i += 2
        if n == 126:
            n = struct.unpack("!H", data[i:i + 2])[0]
            i += 2
        elif n == 127:
            n = struct.unpack("!Q", data[i:i + 8])[0]
            i += 8
        frames.append((b0 & 0x0F, bool(b0 & 0x80), bool(b0 & 0x40), data[i:i + n]))
        i += n
    return frames


UPGRADE = (
    b"GET /ocpp/CP001 HTTP/1.1\r\n"
    b"Host: localhost\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
)


def upgrade_request(*extra: bytes) -> bytes:
    return UPGRADE + b"".join(h + b"\r\n" for h in extra) + b"\r\n"


def recv_until_closed(sock: socket.socket, limit: int = 1 << 22) -> bytes:
    """Read until the peer closes (or resets) the connection."""
    chunks = []
    total = 0
    while total < limit:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)
