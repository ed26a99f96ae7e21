"""Exceptions of the WebSocket layer and the close codes they map to.

One base exception, :class:`WebSocketError`. Every subclass carries its wire
code as class data: ``close_code`` (RFC 6455 §7.4.1) for errors after the
upgrade, ``status`` (RFC 9110 §15) for errors during the HTTP upgrade. The
``reason`` sent to the peer is the fixed, public ``public_reason`` of the
class, never the exception message, so no internal detail leaves the process
(the message is for logs only).

The mapping exception → close code lives in one place,
:func:`close_code_for`; ``docs/websocket.md`` has the full table.
"""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    """Close codes used by the router (RFC 6455 §7.4.1)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005           # never sent: "close frame without a code" (§7.1.5)
    ABNORMAL = 1006            # never sent: "TCP closed without a close frame" (§7.1.5)
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011


class WebSocketError(Exception):
    """Base class of every error raised by ``router.ws`` and the connection glue."""

    close_code: int = CloseCode.INTERNAL_ERROR
    public_reason: str = "internal error"


# ---------------------------------------------------------------- after the upgrade


class ProtocolError(WebSocketError, ValueError):
    """The peer broke RFC 6455 framing rules (§5.2, §5.4, §5.5): close 1002."""

    close_code = CloseCode.PROTOCOL_ERROR
    public_reason = "protocol error"


class InvalidPayload(WebSocketError, ValueError):
    """Text message or close reason is not UTF-8 (§8.1), or a compressed
    message does not inflate (RFC 7692 §8): close 1007."""

    close_code = CloseCode.INVALID_PAYLOAD
    public_reason = "invalid payload data"


class MessageTooBig(WebSocketError, ValueError):
    """A message (after decompression) exceeds ``WSSettings.max_message_size``:
    close 1009 (§7.4.1)."""

    close_code = CloseCode.MESSAGE_TOO_BIG
    public_reason = "message too big"


class PolicyViolation(WebSocketError):
    """The application refuses the peer's behaviour: close 1008."""

    close_code = CloseCode.POLICY_VIOLATION
    public_reason = "policy violation"


class InternalError(WebSocketError):
    """An application hook raised, or zlib ran out of memory: close 1011."""

    close_code = CloseCode.INTERNAL_ERROR
    public_reason = "internal error"


class InvalidState(WebSocketError, AssertionError):
    """An action was called in a state that does not allow it (e.g. ``send_text``
    before ``accept``). A bug in the caller; never caused by the peer."""


# ---------------------------------------------------------------- during the upgrade


class HandshakeError(WebSocketError, ValueError):
    """The HTTP upgrade request is not acceptable; answered with ``status``."""

    status: int = 400
    public_reason = "Bad Request"


class BadRequest(HandshakeError):
    """Malformed HTTP or not a valid WebSocket upgrade (RFC 6455 §4.2.1): 400."""

    status = 400
    public_reason = "Bad Request"


class UnsupportedVersion(HandshakeError):
    """``Sec-WebSocket-Version`` is not 13 (RFC 6455 §4.4): 426 with
    ``Sec-WebSocket-Version: 13``."""

    status = 426
    public_reason = "Upgrade Required"


class HeadersTooLarge(HandshakeError):
    """More than ``max_header_bytes`` or ``max_headers`` (RFC 6585 §5): 431."""

    status = 431
    public_reason = "Request Header Fields Too Large"


class MethodNotAllowed(HandshakeError):
    """The upgrade request is not a GET (RFC 6455 §4.1): 405."""

    status = 405
    public_reason = "Method Not Allowed"


def close_code_for(exc: BaseException) -> int:
    """The close code to send for an error raised while a connection is open.

    This is the one place that maps errors to close codes: ``WebSocketError``
    subclasses carry theirs; anything else (an application hook raised) is an
    internal error, 1011 (RFC 6455 §7.4.1).

    Args:
        exc: the exception caught by the connection glue.
    """
    if isinstance(exc, WebSocketError):
        return int(exc.close_code)
    return int(CloseCode.INTERNAL_ERROR)


def public_reason_for(exc: BaseException) -> str:
    """The close reason sent to the peer for ``exc``: a fixed phrase of the
    class, never ``str(exc)`` (no internal detail on the wire).

    Args:
        exc: the exception caught by the connection glue.
    """
    if isinstance(exc, WebSocketError):
        return exc.public_reason
    return InternalError.public_reason


__all__ = [
    "BadRequest",
    "CloseCode",
    "HandshakeError",
    "HeadersTooLarge",
    "InternalError",
    "InvalidPayload",
    "InvalidState",
    "MessageTooBig",
    "MethodNotAllowed",
    "PolicyViolation",
    "ProtocolError",
    "UnsupportedVersion",
    "WebSocketError",
    "close_code_for",
    "public_reason_for",
]
