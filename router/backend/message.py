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
from router.streams._resp import CommandBuffer

T = TypeVar("T")

#: What XREAD / XREADGROUP return with ``decode_responses`` off (redis-py's
#: annotations are looser): ``[(stream, [(entry id, fields), …]), …]``.
StreamReply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]

KINDS = ("call", "result", "error", "send", "connected", "disconnected", "failed")


class MalformedEntry(BackendError, ValueError):
    """An inbound entry lacks a field the contract requires, or has a bad value."""


_KINDS = frozenset(KINDS)
_SCRATCH = CommandBuffer(256)
# The fields every dispatch reads, taken in one call from a group read.
_HEAD = (b"kind", b"cs", b"action", b"proto", b"node", b"conn", b"id")


def _text(fields: dict[bytes, bytes], name: bytes, default: str = "") -> str:
    value = fields.get(name)
    return value.decode("utf-8", "replace") if value is not None else default


class Message:
    """An inbound entry: a charger message or a connection event.

    Attributes mirror the entry's fields (absent ones are ``""`` / ``b""``);
    ``stream`` and ``entry_id`` say where it came from.

    Built lazily: the SDK's reader keeps the group read's reply bytes
    (``router.streams._resp.StreamEntries``) and takes only ``kind``, ``cs``,
    ``action``, ``proto``, ``node``, ``conn`` and ``id`` from them up front;
    every other field (``payload``, ``ts``, ``code`` …) is decoded on first
    access, and :attr:`fields` builds the dict only when asked.
    """

    __slots__ = (
        "_entries", "_entry_id", "_fields", "_i", "_json", "_ref", "_writes",
        "action", "conn", "cs", "id", "kind", "node", "proto", "stream",
    )

    _entries: Any
    _i: int
    _fields: dict[bytes, bytes] | None
    _ref: bytes | None
    _entry_id: str | None
    _writes: list[tuple[Any, ...]] | None
    _json: Any
    kind: str
    cs: str
    action: str
    proto: str
    node: str
    conn: str
    id: str
    stream: str

    def __init__(self, stream: str, entry_id: str, fields: dict[bytes, bytes]) -> None:
        """Parse one entry.

        Args:
            stream: the stream key the entry was read from.
            entry_id: its stream entry id.
            fields: its raw fields.

        Raises:
            MalformedEntry: a field every entry has is missing, ``kind`` is
                unknown or ``ts`` is not a number.
        """
        self.stream = stream
        self._entry_id = entry_id
        self._ref = None
        self._entries = None
        self._i = 0
        self._fields = fields
        self._writes = None
        self._json = None
        self._head(tuple(None if (v := fields.get(n)) is None else v.decode("utf-8", "replace")
                         for n in _HEAD))
        self.ts  # noqa: B018 - checked up front on this path, as it always was

    @classmethod
    def _from_entries(cls, stream: str, entries: Any, i: int) -> Message:
        """Entry ``i`` of a group read's ``StreamEntries``, decoded lazily.

        Raises:
            MalformedEntry: a field every entry has is missing or ``kind`` is unknown.
        """
        msg = cls.__new__(cls)
        msg.stream = stream
        msg._entries = entries
        msg._i = i
        msg._fields = None
        msg._ref = None
        msg._entry_id = None
        msg._writes = None
        msg._json = None
        msg._head(entries.pick(i, _HEAD))
        return msg

    def _head(self, values: tuple[str | None, ...]) -> None:
        kind, cs, action, proto, node, conn, mid = values
        # node/conn are checked where they matter (a reply needs them), so that
        # a `failed` entry for an unknown connection still parses.
        if not kind:
            raise MalformedEntry(f"entry {self.entry_id} of {self.stream} has no 'kind'")
        if not cs:
            raise MalformedEntry(f"entry {self.entry_id} of {self.stream} has no 'cs'")
        if kind not in _KINDS:
            raise MalformedEntry(f"entry {self.entry_id} of {self.stream} has unknown kind {kind!r}")
        self.kind = kind
        self.cs = cs
        self.action = action or ""
        self.proto = proto or ""
        self.node = node or ""
        self.conn = conn or ""
        self.id = mid or ""

    # -- lazily decoded fields --------------------------------------------------

    def _raw(self, name: bytes) -> bytes | None:
        if self._entries is not None:
            value: bytes | None = self._entries.value(self._i, name)
            return value
        assert self._fields is not None
        return self._fields.get(name)

    def _str(self, name: bytes) -> str:
        value = self._raw(name)
        return value.decode("utf-8", "replace") if value is not None else ""

    @property
    def entry_id(self) -> str:
        """The stream entry id."""
        if self._entry_id is None:
            self._entry_id = self.entry_ref.decode()
        return self._entry_id

    @property
    def entry_ref(self) -> bytes:
        """The stream entry id as bytes (what XACK takes)."""
        if self._ref is None:
            if self._entries is not None:
                self._ref = self._entries.ref(self._i)
            else:
                assert self._entry_id is not None
                self._ref = self._entry_id.encode()
        return self._ref

    @property
    def fields(self) -> dict[bytes, bytes]:
        """Every field of the entry, raw."""
        if self._fields is None:
            self._fields = self._entries.fields(self._i)
        return self._fields

    @property
    def payload(self) -> bytes:
        """The payload exactly as the charger sent it (JSON bytes; ``b""`` if none)."""
        return self._raw(b"payload") or b""

    @property
    def details(self) -> bytes:
        """``errorDetails`` of a CALLERROR (JSON bytes; ``b""`` if none)."""
        return self._raw(b"details") or b""

    @property
    def ts(self) -> int:
        """When the router received it (ms since the Unix epoch; 0 if absent).

        Raises:
            MalformedEntry: ``ts`` is not a number.
        """
        try:
            return int(self._raw(b"ts") or 0)
        except ValueError as exc:
            raise MalformedEntry(f"entry {self.entry_id} of {self.stream} has a bad 'ts'") from exc

    @property
    def code(self) -> str:
        return self._str(b"code")

    @property
    def description(self) -> str:
        return self._str(b"description")

    @property
    def addr(self) -> str:
        return self._str(b"addr")

    @property
    def ref(self) -> str:
        """The ``ref`` field (what a ``failed`` entry refers to)."""
        return self._str(b"ref")

    @property
    def msgtype(self) -> str:
        return self._str(b"msgtype")

    # -- writes riding with the answer --------------------------------------------

    def write(self, *command: bytes | str | int) -> None:
        """Add a Redis command to this entry's answer, e.g.
        ``msg.write("HSET", key, "status", "Charging")``.

        The command leaves in the same pipelined write as the reply (before
        it) and the acknowledgement of the entry, so a handler can keep state
        without a round trip of its own: the entry is acknowledged only if
        every command it wrote and its reply succeeded; otherwise it stays
        pending and is handled again. Dropped when the handler raises. On a
        Redis Cluster the keys must live on the same node as the inbound shard.

        Args:
            *command: the command name and its arguments (bytes, str or int).

        Raises:
            TypeError: an argument of another type; ValueError: no command.
        """
        try:
            _SCRATCH.append_command(*command)   # refuse a bad argument here, in the handler
        finally:
            _SCRATCH.clear()
        if self._writes is None:
            self._writes = []
        self._writes.append(command)

    @property
    def writes(self) -> tuple[tuple[bytes | str | int, ...], ...]:
        """The commands added with :meth:`write` so far (tests of handlers run them)."""
        return tuple(self._writes or ())

    # -- payload access -----------------------------------------------------------

    @property
    def json(self) -> Any:
        """The payload as plain Python (dicts, lists, str, int, float …), decoded once.

        Raises:
            MalformedEntry: the payload is not JSON (never for router-published
                entries, which are validated).
        """
        if self._json is None:
            try:
                payload = self.payload
                self._json = orjson.loads(payload) if payload else {}
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
