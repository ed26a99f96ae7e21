"""One inbound stream entry (docs/streams.md, "Inbound entries"), parsed.

Handlers receive a :class:`Message`. The payload stays the bytes the charger
sent (the router keeps them exactly as received); :attr:`Message.json` decodes
them to plain Python on first use, :meth:`Message.decode` into a typed value
(a ``msgspec.Struct`` such as the generated OCPP-J message types, a dataclass,
a ``TypedDict`` …).
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
import orjson

from router.backend.errors import BackendError
from router.streams._resp import StreamEntries

T = TypeVar("T")

#: What XREAD / XREADGROUP return with ``decode_responses`` off (redis-py's
#: annotations are looser): ``[(stream, [(entry id, fields), …]), …]``.
StreamReply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]

KINDS = ("call", "result", "error", "send", "connected", "disconnected", "failed")


class MalformedEntry(BackendError, ValueError):
    """An inbound entry lacks a field the contract requires, or has a bad value."""


def _text(fields: dict[bytes, bytes], name: bytes, default: str = "") -> str:
    value = fields.get(name)
    return value.decode("utf-8", "replace") if value is not None else default


_TEXT_FIELDS = {name: name.encode() for name in (
    "action", "addr", "code", "conn", "cs", "description", "id", "kind", "msgtype", "node",
    "proto", "ref")}
_BYTES_FIELDS = {"payload": b"payload", "details": b"details"}


class Message:
    """An inbound entry: a charger message or a connection event.

    Attributes mirror the entry's fields (absent ones are ``""`` / ``b""``);
    ``stream`` and ``entry_id`` say where it came from.
    """

    __slots__ = (
        "_i", "_json", "_src", "action", "addr", "code", "conn", "cs", "description", "details",
        "entry_id", "fields", "id", "kind", "msgtype", "node", "payload", "proto", "ref",
        "stream", "ts",
    )
    # Set on messages made by lazy() only: the read they come from.
    _src: StreamEntries
    _i: int

    def __init__(self, stream: str, entry_id: str, fields: dict[bytes, bytes]) -> None:
        """Parse one entry.

        Args:
            stream: the stream key the entry was read from.
            entry_id: its stream entry id.
            fields: its raw fields.

        Raises:
            MalformedEntry: a field every entry has is missing, or ``kind`` is unknown.
        """
        self.stream = stream
        self.entry_id = entry_id
        self.fields = fields
        # node/conn are checked where they matter (a reply needs them), so that
        # a `failed` entry for an unknown connection still parses.
        for required in (b"kind", b"cs"):
            if not fields.get(required):
                raise MalformedEntry(f"entry {entry_id} of {stream} has no {required.decode()!r}")
        self.kind = _text(fields, b"kind")
        if self.kind not in KINDS:
            raise MalformedEntry(f"entry {entry_id} of {stream} has unknown kind {self.kind!r}")
        self.cs = _text(fields, b"cs")
        self.proto = _text(fields, b"proto")
        self.node = _text(fields, b"node")
        self.conn = _text(fields, b"conn")
        try:
            self.ts = int(fields.get(b"ts") or 0)
        except ValueError as exc:
            raise MalformedEntry(f"entry {entry_id} of {stream} has a bad 'ts'") from exc
        self.id = _text(fields, b"id")
        self.action = _text(fields, b"action")
        self.payload: bytes = fields.get(b"payload", b"")
        self.code = _text(fields, b"code")
        self.description = _text(fields, b"description")
        self.details: bytes = fields.get(b"details", b"")
        self.addr = _text(fields, b"addr")
        self.ref = _text(fields, b"ref")
        self.msgtype = _text(fields, b"msgtype")
        self._json: Any = None

    @classmethod
    def lazy(cls, stream: str, entry_id: str, src: StreamEntries, i: int, kind: str,
             action: str | None) -> Message:
        """A message over entry ``i`` of a group read, its fields decoded on access.

        The SDK's read path makes these: routing needs only ``kind`` and
        ``action`` (``StreamEntries.head``), and a handler that never looks at
        ``payload`` or ``conn`` costs no bytes or str object for them.
        """
        msg = cls.__new__(cls)
        msg.stream = stream
        msg._src = src
        msg._i = i
        msg.entry_id = entry_id
        msg.kind = kind
        msg.action = action or ""
        msg._json = None
        return msg

    def __getattr__(self, name: str) -> Any:
        # Called only for a slot not set yet, i.e. a field of a lazy message
        # on first access; the value is kept in its slot.
        if name.startswith("_"):
            raise AttributeError(name)
        src: StreamEntries = object.__getattribute__(self, "_src")
        i: int = object.__getattribute__(self, "_i")
        value: Any
        if name in _TEXT_FIELDS:
            raw = src.field(i, _TEXT_FIELDS[name])
            value = raw.decode("utf-8", "replace") if raw is not None else ""
        elif name in _BYTES_FIELDS:
            value = src.field(i, _BYTES_FIELDS[name]) or b""
        elif name == "ts":
            try:
                value = int(src.field(i, b"ts") or 0)
            except ValueError as exc:
                raise MalformedEntry(f"entry {self.entry_id} of {self.stream} has a bad 'ts'") \
                    from exc
        elif name == "fields":
            value = src.fields(i)
        else:
            raise AttributeError(name)
        setattr(self, name, value)
        return value

    @property
    def json(self) -> Any:
        """The payload as plain Python (dicts, lists, str, int, float …), decoded once.

        Raises:
            MalformedEntry: the payload is not JSON (never for router-published
                entries, which are validated).
        """
        if self._json is None:
            try:
                self._json = orjson.loads(self.payload) if self.payload else {}
            except orjson.JSONDecodeError as exc:
                raise MalformedEntry(f"entry {self.entry_id}: payload is not JSON") from exc
        return self._json

    def decode(self, type_: type[T]) -> T:
        """Decode the payload into ``type_`` (typed access).

        Args:
            type_: any type msgspec can decode into, e.g. a generated OCPP-J
                message struct.

        Raises:
            msgspec.ValidationError: the payload does not fit ``type_``.
        """
        return msgspec.json.decode(self.payload or b"{}", type=type_)

    def typed(self) -> msgspec.Struct:
        """The payload as the generated OCPP-J type of its version and action.

        E.g. a ``router.ocppj.v16.BootNotificationRequest`` for a 1.6
        BootNotification ``call``; the response type for a ``result``.

        Raises:
            router.ocppj.OCPPJError: unknown action, or a payload the type rejects.
            router.ocppj.UnknownProtocol: ``proto`` is not an OCPP version.
        """
        from router.ocppj import decode_payload

        return decode_payload(self.proto, self.action, self.payload or b"{}",
                              response=self.kind == "result")

    def error_details(self) -> dict[str, Any]:
        """The ``details`` field (``errorDetails`` of a CALLERROR) as a dict."""
        if not self.details:
            return {}
        try:
            value = orjson.loads(self.details)
        except orjson.JSONDecodeError:
            return {}
        return value if isinstance(value, dict) else {}

    def __repr__(self) -> str:
        extra = f" {self.action}" if self.action else ""
        return f"<Message {self.kind}{extra} cs={self.cs!r} id={self.id!r} entry={self.entry_id}>"


def encode_payload(payload: Any) -> bytes:
    """Encode a payload for an outbound entry.

    ``bytes`` are taken as already-encoded JSON; anything else (dicts,
    ``msgspec.Struct`` values, dataclasses …) is encoded with msgspec.

    Args:
        payload: the payload.

    Raises:
        TypeError: ``payload`` cannot be encoded as JSON, or does not encode to a
            JSON object (OCPP-J payloads are objects).
    """
    if isinstance(payload, bytes | bytearray | memoryview):
        data = bytes(payload)
    else:
        try:
            data = msgspec.json.encode(payload)
        except (TypeError, msgspec.EncodeError) as exc:
            raise TypeError(f"payload cannot be encoded as JSON: {exc}") from exc
    if not data.lstrip().startswith(b"{"):
        raise TypeError("an OCPP payload must be a JSON object")
    return data
