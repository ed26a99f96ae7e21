"""Enums of the WebSocket layer that users see."""

from __future__ import annotations

from enum import IntEnum


class Opcode(IntEnum):
    """Frame opcodes (RFC 6455 §5.2); event tuples of ``Connection`` start with one."""

    CONTINUATION = 0
    TEXT = 1
    BINARY = 2
    CLOSE = 8
    PING = 9
    PONG = 10


class ConnectionState(IntEnum):
    """``WebSocketProtocol.state``."""

    CONNECTING = 0   # TCP accepted, upgrade not answered yet
    OPEN = 1         # 101 written, messages flow
    CLOSING = 2      # close handshake or rejection in progress
    CLOSED = 3       # TCP connection gone
