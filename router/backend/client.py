"""Backend → charger: CALLs, SENDs and registry look-ups (docs/streams.md).

:meth:`Client.call` finds the node holding the charger in the registry
(``<prefix>:cs:<identity>``), validates the payload, adds a ``call`` entry to
``<prefix>:out:<node>`` with ``reply_to`` set to this client's own reply stream
and waits for the one ``result`` / ``error`` / ``failed`` entry the router
adds there. The caller and the charger's router may be on different machines:
only Redis is shared.

One background task per client reads the reply stream (``XREAD BLOCK``) and
hands each answer to the waiting call by message id, so any number of calls can
wait concurrently on one Redis connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
import uuid
from types import TracebackType
from typing import Any, TypeVar, cast, overload

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from router.backend.errors import (
    CallFailed,
    CallTimeout,
    ChargerError,
    DeliveryFailed,
    InvalidPayload,
    NotConnected,
)
from router.backend.message import MalformedEntry, Message, StreamReply, encode_payload
from router.ocppj import UnknownProtocol, dialect
from router.ocppj.errors import OCPPJError
from router.streams.commands import CANCEL, ENQUEUE, KEY_GRACE_S, MAX_QUEUED, QueueKeys
from router.streams.keys import KeySpace

log = logging.getLogger(__name__)

T = TypeVar("T")

OUT_MAXLEN = 100_000
# How long after the CALL's own timeout the client still waits for the router's
# `failed Timeout` entry before giving up on its own (router busy or gone).
TIMEOUT_GRACE = 2.0
# XREAD BLOCK time of the reply reader. Must stay below the client's socket
# timeout (redis-py ≥ 8 defaults to 5 s) or the blocked read is cut off.
REPLY_BLOCK_MS = 2000
# Longest `wait` of a queued CALL (a week: a charger offline for longer gets
# its commands again from the backend when it is back).
MAX_WAIT = 7 * 86400.0


@dataclasses.dataclass(frozen=True, slots=True)
class Registration:
    """A charger's registry entry (docs/streams.md, "Registry")."""

    identity: str
    node: str
    conn: str
    proto: str
    since: int
    addr: str
    #: ``websocket`` (OCPP-J) or ``soap`` (OCPP-S, docs/soap.md).
    transport: str = "websocket"
    #: An OCPP-S charger's own endpoint (``From``/``ReplyTo``), where CSMS CALLs go.
    endpoint: str = ""

    @classmethod
    def from_hash(cls, identity: str, fields: dict[bytes, bytes]) -> Registration:
        """Build from the registry hash's fields."""
        def text(name: bytes) -> str:
            return fields.get(name, b"").decode("utf-8", "replace")

        try:
            since = int(fields.get(b"since") or 0)
        except ValueError:
            since = 0
        return cls(identity, text(b"node"), text(b"conn"), text(b"proto"), since, text(b"addr"),
                   text(b"transport") or "websocket", text(b"endpoint"))


def validate_request(proto: str, action: str, payload: bytes, *, send: bool = False) -> None:
    """Validate a backend CALL (or 2.1 SEND) payload for the charger's OCPP version.

    The same check the router makes (router.ocppj), done before sending so a
    bad payload fails here, with the JSON path, instead of as a ``failed``
    entry from the router.

    Args:
        proto: ``ocpp1.6``, ``ocpp2.0.1`` or ``ocpp2.1``.
        action: the OCPP action.
        payload: the JSON payload.
        send: validate as a SEND instead of a CALL.

    Raises:
        InvalidPayload: unknown protocol, unknown action for the version (``code``
            ``NotImplemented``), wrong direction (``NotSupported``), or a payload
            its schema rejects (``FormatViolation``, ``TypeConstraintViolation`` …).
    """
    if proto in ("ocpp1.5", "ocpp1.2"):
        return      # OCPP-S only (docs/soap.md): the router checks against the WSDL's tables
    try:
        dia = dialect(proto)
        if send:
            dia.validate_send(action, payload, from_charger=False)
        else:
            dia.validate_request(action, payload, from_charger=False)
    except OCPPJError as exc:
        raise InvalidPayload(f"{action}: {exc.description}", code=exc.code_for(proto)) from None
    except UnknownProtocol:
        raise InvalidPayload(f"the charger speaks an unknown protocol {proto!r}") from None


class Client:
    """Send CALLs and SENDs to chargers wherever they are connected.

    Use ``async with Client(redis) as client:`` or call :meth:`close` when done:
    it stops the reply reader and deletes the reply stream.

    Args:
        redis: the Redis client (``decode_responses`` off).
        prefix: the key prefix (``--key-prefix``).
        shards: the number of inbound shards (``--shards``).
        name: unique name of this client; its reply stream is
            ``<prefix>:reply:<name>`` (default: random).
        validate: validate CALL payloads before sending them.
        reply_ttl: seconds the reply stream lives after its last use, so a
            client that dies without :meth:`close` leaves nothing behind.
        concurrency: Redis commands this client runs at once (look-ups and
            sends; waiting for answers takes no connection), so that many
            concurrent calls stay within the connection pool.
    """

    def __init__(self, redis: aioredis.Redis, *, prefix: str = "ocpp", shards: int = 1,
                 name: str | None = None, validate: bool = True,
                 reply_ttl: float = 600.0, concurrency: int = 16) -> None:
        self.redis = redis
        self.prefix = prefix
        self.keys = KeySpace(prefix=prefix, shards=shards)
        self.name = name or uuid.uuid4().hex
        self.reply_key = f"{prefix}:reply:{self.name}"
        self.validate = validate
        self.reply_ttl = reply_ttl
        self.timeout_grace = TIMEOUT_GRACE
        # The reply stream's TTL: reply_ttl, or longer once a CALL with a
        # longer timeout was sent (never shortened while it may be pending).
        self._ttl = reply_ttl
        self._slots = asyncio.Semaphore(concurrency)
        self._waiting: dict[str, asyncio.Future[Message]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._queue_keys = QueueKeys(prefix)
        self._enqueue = redis.register_script(ENQUEUE)
        self._cancel = redis.register_script(CANCEL)
        self._closing = False

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop the reply reader and delete the reply stream."""
        self._closing = True
        reader, self._reader = self._reader, None
        if reader is not None:
            # Wake the blocked XREAD with a marker entry rather than cancelling
            # it: a cancelled blocking command can leave redis-py's connection
            # in a state that never returns to the pool.
            with contextlib.suppress(RedisError, OSError):
                await self.redis.xadd(self.reply_key, {"wake": "1"})
            try:
                await asyncio.wait_for(asyncio.shield(reader), REPLY_BLOCK_MS / 1000 + 1)
            except TimeoutError:
                reader.cancel()
            with contextlib.suppress(RedisError, OSError):
                await self.redis.delete(self.reply_key)
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(DeliveryFailed("client closed", code="Closed"))
        self._waiting.clear()
        self._closing = False

    # ------------------------------------------------------------------ registry

    async def where(self, identity: str) -> Registration | None:
        """The registry entry of a connected charger, or ``None``.

        Raises:
            redis.exceptions.RedisError: Redis failed.
        """
        async with self._slots:
            reply = await self.redis.hgetall(self.keys.registry(identity))
        fields = cast(dict[bytes, bytes], reply)
        if not fields or not fields.get(b"node"):
            return None
        return Registration.from_hash(identity, fields)

    async def chargers(self) -> list[Registration]:
        """Every connected charger in the registry (SCAN, so safe on big databases).

        Raises:
            redis.exceptions.RedisError: Redis failed.
        """
        head = f"{self.prefix}:cs:"
        keys = [key async for key in self.redis.scan_iter(match=f"{head}*", count=1000)]
        found: list[Registration] = []
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in chunk:
                    pipe.hgetall(key)
                hashes = await pipe.execute()
            for key, fields in zip(chunk, hashes, strict=True):
                if fields and fields.get(b"node"):  # expired between SCAN and HGETALL
                    identity = key.decode("utf-8", "replace")[len(head):]
                    found.append(Registration.from_hash(identity, fields))
        found.sort(key=lambda r: r.identity)
        return found

    # ------------------------------------------------------------------ calls

    @overload
    async def call(self, identity: str, action: str, payload: Any, *,
                   timeout: float = ..., response_type: None = ...,
                   wait: float | None = ...) -> Any: ...

    @overload
    async def call(self, identity: str, action: str, payload: Any, *,
                   timeout: float = ..., response_type: type[T],
                   wait: float | None = ...) -> T: ...

    async def call(self, identity: str, action: str, payload: Any, *, timeout: float = 30.0,
                   response_type: type[T] | None = None, wait: float | None = None) -> Any:
        """Send a CALL to a charger and return its CALLRESULT payload.

        Args:
            identity: the charger identity.
            action: the OCPP action, e.g. ``RemoteStartTransaction``.
            payload: a dict, a ``msgspec.Struct`` or JSON bytes.
            timeout: seconds the charger has to answer (sent to the router as
                the CALL's ``timeout``).
            response_type: decode the answer into this type (typed access);
                default a plain dict.
            wait: seconds the CALL may wait for the charger to be connected.
                With ``wait`` the CALL goes to the charger's command queue
                (docs/streams.md, "Command queues") instead of a node: it is
                delivered by whichever node holds the charger, also after a
                reconnect or after its node died, exactly once and in order
                with the other queued CALLs to that charger. Without ``wait``
                a charger that is not connected fails at once.

        Raises:
            NotConnected: the charger is not connected (only without ``wait``).
            InvalidPayload: the payload or action is not valid for the charger's version.
            ChargerError: the charger answered with a CALLERROR.
            CallTimeout: no answer in time.
            DeliveryFailed: the router could not deliver it (``QueueFull``, ``Closed``,
                ``Expired``: not connected within ``wait`` …).
            TypeError: ``payload`` is not a JSON object.
            ValueError: ``wait`` is not between 0 and 7 days.
            redis.exceptions.RedisError: Redis failed.
        """
        if wait is not None:
            answer = await self._call_queued(identity, action, payload, timeout, wait)
            return self._answer(identity, answer, response_type)
        where, data = await self._target(identity, action, payload, send=False)
        msg_id = uuid.uuid4().hex
        answer = await self._send_and_wait(where, msg_id, {
            "kind": "call", "cs": identity, "id": msg_id, "action": action,
            "payload": data, "conn": where.conn, "timeout": max(1, math.ceil(timeout)),
            "reply_to": self.reply_key,
        }, timeout)
        return self._answer(identity, answer, response_type)

    def _answer(self, identity: str, answer: Message, response_type: type[T] | None) -> Any:
        if answer.kind == "result":
            if response_type is not None:
                return answer.decode(response_type)
            return orjson.loads(answer.payload) if answer.payload else {}
        raise self._failure(identity, answer)

    async def _call_queued(self, identity: str, action: str, payload: Any, timeout: float,
                           wait: float) -> Message:
        """Queue a CALL for ``identity`` (see :meth:`call`'s ``wait``) and wait
        for its one outcome entry."""
        if not 0 < wait <= MAX_WAIT:
            raise ValueError(f"wait must be seconds between 0 and {MAX_WAIT}")
        data = encode_payload(payload)
        where = await self.where(identity)
        if self.validate and where is not None:
            validate_request(where.proto, action, data)
        msg_id = uuid.uuid4().hex
        seconds = max(1, math.ceil(timeout))
        expires = int(time.time() * 1000 + wait * 1000)
        queue = self._queue_keys.queue(identity)
        self._ensure_reader()
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiting[msg_id] = fut
        try:
            self._ttl = max(self._ttl, wait + seconds + self.timeout_grace + 60)
            async with self._slots:
                entry = await self._enqueue(
                    keys=[queue],
                    args=[MAX_QUEUED, int((wait + seconds + KEY_GRACE_S) * 1000),
                          "v", "1", "id", msg_id, "action", action, "payload", data,
                          "timeout", seconds, "expires", expires, "reply_to", self.reply_key])
                if entry is None:
                    raise DeliveryFailed(f"more than {MAX_QUEUED} commands queued for {identity}",
                                         code="QueueFull")
                async with self.redis.pipeline(transaction=False) as pipe:
                    # The expiry index, so a node expires it even if the
                    # charger never comes back; LT keeps the earliest.
                    pipe.zadd(self._queue_keys.due, {identity: expires}, lt=True)
                    pipe.pexpire(self.reply_key, int(self._ttl * 1000))
                    await pipe.execute()
                # Nudge the node holding the charger now, if any; otherwise
                # the node it connects to pulls the queue itself.
                where = await self.where(identity)
                if where is not None:
                    await self.redis.xadd(self.keys.out(where.node),
                                          {"kind": "pull", "cs": identity},
                                          maxlen=OUT_MAXLEN, approximate=True)
            try:
                async with asyncio.timeout(wait + seconds + self.timeout_grace):
                    return await fut
            except TimeoutError:
                # No outcome from any router (none running, or all busy):
                # take it back unless it was sent; then it never will be.
                async with self._slots:
                    removed = await self._cancel(keys=[queue, self._queue_keys.claim(identity)],
                                                 args=[entry])
                if removed:
                    raise DeliveryFailed(f"{identity} was not connected within {wait:g}s",
                                         code="Expired") from None
                raise CallTimeout(f"{identity} did not answer within {timeout:g}s") from None
        finally:
            self._waiting.pop(msg_id, None)

    async def _target(self, identity: str, action: str, payload: Any, *, send: bool
                      ) -> tuple[Registration, bytes]:
        """Where ``identity`` is connected, and the encoded (and, with
        ``validate``, checked) payload of a CALL or SEND to it."""
        data = encode_payload(payload)
        where = await self.where(identity)
        if where is None:
            raise NotConnected(f"{identity} is not connected")
        if self.validate:
            validate_request(where.proto, action, data, send=send)
        return where, data

    async def send(self, identity: str, action: str, payload: Any) -> None:
        """Send an OCPP 2.1 SEND (``[6, id, action, payload]``) to a charger.

        Nothing answers a SEND; the router reports only failures, which this
        method does not wait for.

        Raises:
            NotConnected: the charger is not connected.
            InvalidPayload: the payload is not valid for the action.
            redis.exceptions.RedisError: Redis failed.
        """
        where, data = await self._target(identity, action, payload, send=True)
        await self.redis.xadd(self.keys.out(where.node), {
            "kind": "send", "cs": identity, "id": uuid.uuid4().hex, "action": action,
            "payload": data, "conn": where.conn,
        }, maxlen=OUT_MAXLEN, approximate=True)

    async def disconnect(self, identity: str) -> bool:
        """Ask the router to close the charger's connection (code 1000).

        Returns ``False`` when the charger is not connected.

        Raises:
            redis.exceptions.RedisError: Redis failed.
        """
        where = await self.where(identity)
        if where is None:
            return False
        await self.redis.xadd(self.keys.out(where.node),
                              {"kind": "close", "cs": identity, "conn": where.conn},
                              maxlen=OUT_MAXLEN, approximate=True)
        return True

    @staticmethod
    def _failure(identity: str, answer: Message) -> CallFailed:
        """Map a non-result answer to the exception :meth:`call` raises (one place)."""
        if answer.kind == "error":
            return ChargerError(answer.code or "GenericError", answer.description,
                                answer.error_details())
        code, text = answer.code, answer.description
        if code == "NotConnected":
            return NotConnected(text or f"{identity} is not connected")
        if code in ("InvalidPayload", "UnknownAction"):
            return InvalidPayload(text, code=code)
        if code == "Timeout":
            return CallTimeout(text or f"{identity} did not answer in time")
        return DeliveryFailed(text, code=code or "Failed")

    async def _send_and_wait(self, where: Registration, msg_id: str, fields: dict[Any, Any],
                             timeout: float) -> Message:
        self._ensure_reader()
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiting[msg_id] = fut
        try:
            async with self._slots, self.redis.pipeline(transaction=False) as pipe:
                pipe.xadd(self.keys.out(where.node), fields, maxlen=OUT_MAXLEN,
                          approximate=True)
                # The answer must land in a stream that still expires: a
                # router's late XADD to an expired key would recreate it with
                # no TTL. The reply stream outlives every pending CALL.
                self._ttl = max(self._ttl, timeout + self.timeout_grace + 60)
                pipe.pexpire(self.reply_key, int(self._ttl * 1000))
                await pipe.execute()
            # Wait a little longer than the charger may take, so that the
            # router's own `failed Timeout` entry normally arrives first.
            async with asyncio.timeout(timeout + self.timeout_grace):
                return await fut
        except TimeoutError:
            raise CallTimeout(f"{where.identity} did not answer within {timeout:g}s") from None
        finally:
            self._waiting.pop(msg_id, None)

    def _ensure_reader(self) -> None:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_replies(), name="backend-replies")

    async def _read_replies(self) -> None:
        # The stream is this client's alone and new, so reading from 0 cannot
        # miss an answer that arrives before the first XREAD.
        last: bytes | str = "0-0"
        backoff = 0.1
        try:
            # Create the stream now, with its TTL, so that an answer to a
            # client that dies early never creates it without one.
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xadd(self.reply_key, {"wake": "0"})
                pipe.pexpire(self.reply_key, int(self._ttl * 1000))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("creating %s failed: %s", self.reply_key, exc)
        while not self._closing:
            try:
                response = cast(StreamReply, await self.redis.xread(
                    {self.reply_key: last}, count=100, block=REPLY_BLOCK_MS))
                backoff = 0.1
                ids = []
                for _stream, entries in response or ():
                    for entry_id, fields in entries:
                        last = entry_id
                        ids.append(entry_id)
                        self._deliver(entry_id, fields)
                if ids:
                    # Read answers are not needed again; the TTL covers a client
                    # that dies without close().
                    async with self.redis.pipeline(transaction=False) as pipe:
                        pipe.xdel(self.reply_key, *ids)
                        pipe.pexpire(self.reply_key, int(self._ttl * 1000))
                        await pipe.execute()
            except (RedisError, OSError) as exc:
                log.warning("reading %s failed (%s); retrying in %.1fs",
                            self.reply_key, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _deliver(self, entry_id: bytes | str, fields: dict[bytes, bytes]) -> None:
        if b"wake" in fields:
            return  # close()'s marker
        try:
            msg = Message(self.reply_key, entry_id.decode() if isinstance(entry_id, bytes)
                          else entry_id, fields)
        except MalformedEntry as exc:
            log.warning("ignoring a malformed answer in %s: %s", self.reply_key, exc)
            return
        fut = self._waiting.get(msg.id)
        if fut is not None and not fut.done():
            fut.set_result(msg)

