"""One asyncio Redis connection for the hot path: raw RESP out and in.

Requests are written as pre-encoded RESP and replies parsed by the compiled
``ReplyReader`` (both in ``router.streams._resp``); replies are matched
first-in first-out: Redis answers the commands of one
connection in the order it received them
(https://redis.io/docs/latest/develop/reference/protocol-spec/#request-response-model),
so a queue of ``(replies expected, callback)`` is all the bookkeeping there is.

One object is one TCP connection: once it is lost it stays closed, and the
owner (publisher, reader) opens a new one. A request that waits longer than
its timeout drops the whole connection: with FIFO matching there is no way to
skip one late reply and stay in step.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import Callable, Sequence
from typing import Any, cast

from router.streams._resp import CommandBuffer, ReplyReader
from router.streams.errors import (
    ConnectionLostError,
    NotConnectedError,
    RedisConnectionError,
    RedisProtocolError,
    RedisReplyError,
    RedisTimeoutError,
    StreamsError,
)
from router.streams.redis_url import RedisURL, TLSSettings, parse_redis_url

#: What a ``send_raw`` callback receives: the replies of its commands, in
#: order (an error reply is a :class:`RedisReplyError` instance in that list),
#: or the exception that ended the connection before all of them arrived.
Replies = list[Any] | StreamsError
ReplyCallback = Callable[[Replies], None]


class _Request:
    __slots__ = ("callback", "deadline", "expected", "replies", "xread")

    def __init__(self, expected: int, callback: ReplyCallback, deadline: float | None,
                 xread: bool) -> None:
        self.expected = expected
        self.callback = callback
        self.deadline = deadline
        self.xread = xread          # the last reply is an XREAD's: parsed as StreamEntries
        self.replies: list[Any] = []


class RedisConnection(asyncio.Protocol):
    """A single Redis connection with FIFO reply matching.

    Args:
        on_lost: called once, with the reason, when the connection ends for any
            reason other than :meth:`close` (the owner starts reconnecting).
    """

    def __init__(self, *, on_lost: Callable[[StreamsError], None] | None = None) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: asyncio.Transport | None = None
        self._reader = ReplyReader()
        self._queue: collections.deque[_Request] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self._on_lost = on_lost
        self._closed: asyncio.Future[None] | None = None
        self._closing = False
        self._lost_reason: StreamsError | None = None
        self._used = False
        #: Join the writes of one event-loop iteration into one (set by the
        #: cluster layer on a master's connection that many slot publishers
        #: share: one write and one syscall per master per iteration instead
        #: of one per slot).
        self.coalesce = False
        self._writes: list[bytes] = []
        self.address: RedisURL | None = None
        self.bytes_written = 0

    # -- connecting -----------------------------------------------------------

    async def connect(self, url: str | RedisURL, *, timeout: float = 5.0,
                      name: str | None = None) -> None:
        """Open the connection, then AUTH, SELECT and CLIENT SETNAME as needed.

        With a ``redis+sentinel://`` URL the sentinels are asked for the
        master's address first, and the server found there must say it is the
        master (``ROLE``): during a failover a sentinel may still name the old
        master, now a replica, and writing there fails with ``-READONLY``.

        Args:
            url: a Redis URL (:mod:`router.streams.redis_url`) or its parsed
                form. A cluster URL must be narrowed to one node first
                (:meth:`RedisURL.server`).
            timeout: seconds for discovery, connecting and the handshake together.
            name: client name shown by ``CLIENT LIST`` (operators, tests);
                spaces and non-ASCII characters become ``_``.

        Raises:
            ValueError: a malformed URL (:class:`RedisURLError`), or a cluster URL.
            RedisConnectionError: refused, unreachable, timed out, the server
                rejected AUTH/SELECT, no sentinel knew the master, or the
                server named by the sentinels is not (yet) the master.
            RuntimeError: this object was already connected once.
        """
        if self._used:
            raise RuntimeError("a RedisConnection connects once; make a new one")
        self._used = True
        target = url if isinstance(url, RedisURL) else parse_redis_url(url)
        if target.mode == "cluster":
            raise ValueError("a cluster URL names seeds, not one server: connect to "
                             "RedisURL.server(host, port)")
        loop = self._loop = asyncio.get_running_loop()
        self._closed = loop.create_future()
        where: object = target
        try:
            async with asyncio.timeout(timeout):
                sentinel = target.mode == "sentinel"
                if sentinel:
                    host, port = await discover_master(target, timeout=timeout)
                    target = target.server(host, port)
                    where = target
                self.address = target
                if target.unix_path is not None:
                    await loop.create_unix_connection(lambda: self, target.unix_path)
                else:
                    await loop.create_connection(
                        lambda: self, target.host, target.port,
                        ssl=_ssl_context(target),
                        server_hostname=target.server_hostname(target.host),
                    )
                if target.password is not None:
                    auth: tuple[str, ...] = (target.password,)
                    if target.username is not None:
                        auth = (target.username, target.password)
                    await self.command("AUTH", *auth)
                if target.db:
                    await self.command("SELECT", target.db)
                if name:
                    try:
                        await self.command("CLIENT", "SETNAME", _client_name(name))
                    except RedisReplyError as exc:
                        # An ACL without CLIENT: the name is only a courtesy.
                        # Anything else (maxclients reached, …) fails the connect.
                        if not str(exc).startswith("NOPERM"):
                            raise
                if sentinel:
                    role = await self.command("ROLE")
                    if not role or role[0] != b"master":
                        raise RedisConnectionError(
                            f"{target} is not the master (a failover is under way)")
        except TimeoutError:
            self.abort()
            raise RedisConnectionError(f"no connection to {where} within {timeout}s") from None
        except OSError as exc:
            self.abort()
            raise RedisConnectionError(f"cannot connect to {where}: {exc.strerror or exc}") from None
        except RedisConnectionError:
            self.abort()
            raise
        except StreamsError as exc:
            self.abort()
            raise RedisConnectionError(f"handshake with {where} failed: {exc}") from None
        except BaseException:
            # Cancelled (the owner is closing) or a bug: never leak the socket.
            self.abort()
            raise

    # -- asyncio.Protocol -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing
        # it, so no isinstance check here.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        queue = self._queue
        gets = reader.gets
        reader.feed(data)
        try:
            while queue:
                req = queue[0]
                replies = req.replies
                # A publish batch expects one reply per entry: parsed in one
                # C call. False = no complete reply buffered yet (RESP2, which
                # we speak, has no boolean type: unambiguous).
                want = req.expected - len(replies) - req.xread
                if want and reader.gets_into(replies, want) < want:
                    return
                if req.xread:
                    reply = reader.gets_xread()
                    if reply is False:
                        return
                    replies.append(reply)
                queue.popleft()
                # A demoted master answers writes with -READONLY and ends
                # blocked reads with -UNBLOCKED: the failover happened under
                # this connection. Checking the last reply is enough (the
                # switch is permanent within one request) and costs one
                # type test per request, not per entry.
                if replies and type(replies[-1]) is RedisReplyError and \
                        _demoted(replies[-1]):
                    reason = ConnectionLostError(
                        f"{self.address} is no longer the master: {replies[-1]}")
                    self._deliver(req.callback, reason)
                    self._lose(reason)
                    return
                self._deliver(req.callback, replies)
            if gets() is not False:
                self._lose(RedisProtocolError("reply without a request"))
        except RedisProtocolError as exc:
            self._lose(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        reason = self._lost_reason
        if reason is None:
            if self._closing:
                reason = ConnectionLostError("connection closed")
            else:
                detail = f": {exc}" if exc else ""
                reason = ConnectionLostError(f"Redis closed the connection{detail}")
        self._lost_reason = reason
        self._fail_all(reason)
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
        if not self._closing and self._on_lost is not None:
            on_lost, self._on_lost = self._on_lost, None
            on_lost(reason)

    # -- sending --------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the socket is open and usable."""
        return self._transport is not None and self._lost_reason is None and not self._closing

    @property
    def in_flight(self) -> int:
        """Requests written whose replies have not all arrived."""
        return len(self._queue)

    def send_raw(self, data: bytes, n_replies: int, callback: ReplyCallback,
                 timeout: float | None = None, *, xread: bool = False) -> None:
        """Write pre-encoded commands; ``callback`` gets their ``n_replies`` replies.

        The callback runs exactly once, from the event loop, never from inside
        this call: with the list of replies (error replies as
        :class:`RedisReplyError` items), or with a :class:`StreamsError` when the
        connection ended first (:class:`ConnectionLostError`,
        :class:`RedisTimeoutError`, …).

        Args:
            data: RESP bytes of ``n_replies`` commands (``CommandBuffer.take()``).
            n_replies: how many replies to wait for (at least 1).
            callback: receives the replies or the error.
            timeout: seconds to wait for all replies; past it the connection is
                dropped and every request on it fails. None waits forever.
            xread: the last command is an XREAD; its reply comes as a
                ``StreamEntries`` (``router.streams._resp``).

        Raises:
            NotConnectedError: the connection is not open (nothing was written).
        """
        transport = self._transport
        if transport is None or not self.connected:
            raise NotConnectedError("not connected to Redis")
        deadline = None
        if timeout is not None:
            assert self._loop is not None
            deadline = self._loop.time() + timeout
        self._queue.append(_Request(n_replies, callback, deadline, xread))
        if self.coalesce:
            if not self._writes:
                assert self._loop is not None
                self._loop.call_soon(self._flush_writes)
            self._writes.append(data)
            if deadline is not None and self._timer is None:
                self._arm_timer()
            return
        self._write(transport, data)
        if deadline is not None and self._timer is None:
            self._arm_timer()

    def _flush_writes(self) -> None:
        data = b"".join(self._writes)
        self._writes.clear()
        transport = self._transport
        if transport is None or not self.connected:
            return      # lost meanwhile: its requests failed with the others
        self._write(transport, data)

    def _write(self, transport: asyncio.Transport, data: bytes) -> None:
        try:
            transport.write(data)
        except Exception as exc:
            # A transport torn down under us may raise (uvloop, on a closed
            # handle) instead of reporting through connection_lost; fail this
            # request with the others, from the loop, so no callback is lost.
            reason = ConnectionLostError(f"write to Redis failed: {exc}")
            if self._lost_reason is None:
                self._lost_reason = reason
            assert self._loop is not None
            self._loop.call_soon(self._lose, reason)
            return
        self.bytes_written += len(data)

    def command_async(self, *args: bytes | str | int, timeout: float | None = None
                      ) -> asyncio.Future[Any]:
        """Send one command; the future gets its reply or a :class:`StreamsError`.

        Raises:
            NotConnectedError: the connection is not open.
        """
        buf = CommandBuffer(256)
        buf.append_command(*args)
        assert self._loop is not None
        fut: asyncio.Future[Any] = self._loop.create_future()
        self.send_raw(buf.take(), 1, lambda r: _settle_one(fut, r), timeout)
        return fut

    async def command(self, *args: bytes | str | int, timeout: float | None = None) -> Any:
        """Run one command and return its reply (``EVALSHA``, ``HSET``, …).

        Raises:
            NotConnectedError: the connection is not open.
            RedisReplyError: Redis answered with an error.
            ConnectionLostError, RedisTimeoutError: no reply.
        """
        return await self.command_async(*args, timeout=timeout)

    async def pipeline(self, commands: Sequence[Sequence[bytes | str | int]],
                       timeout: float | None = None, *, xread: bool = False) -> list[Any]:
        """Run several commands in one write; error replies come back as
        :class:`RedisReplyError` items of the list instead of being raised.
        With ``xread``, the last command is an XREAD and its reply comes as a
        ``StreamEntries``.

        Raises:
            NotConnectedError: the connection is not open.
            ConnectionLostError, RedisTimeoutError: the replies did not all arrive.
        """
        if not commands:
            return []
        buf = CommandBuffer()
        for cmd in commands:
            buf.append_command(*cmd)
        assert self._loop is not None
        fut: asyncio.Future[list[Any]] = self._loop.create_future()
        self.send_raw(buf.take(), len(commands), lambda r: _settle_many(fut, r), timeout,
                      xread=xread)
        return await fut

    # -- closing --------------------------------------------------------------

    def close(self) -> None:
        """Close the socket; requests still waiting fail with ConnectionLostError."""
        if self._closing:
            return
        self._closing = True
        if self._transport is not None:
            self._transport.close()
        elif self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    def abort(self) -> None:
        """Drop the socket at once (no flush of buffered writes)."""
        self._closing = True
        if self._transport is not None:
            self._transport.abort()
        elif self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    async def wait_closed(self) -> None:
        """Return when the socket is closed (by either side)."""
        if self._closed is not None:
            await asyncio.shield(self._closed)

    # -- internals ------------------------------------------------------------

    def _deliver(self, callback: ReplyCallback, result: Replies) -> None:
        try:
            callback(result)
        except Exception as exc:  # a bug in the owner must not break the connection
            assert self._loop is not None
            self._loop.call_exception_handler({
                "message": "exception in a Redis reply callback",
                "exception": exc,
                "protocol": self,
            })

    def _fail_all(self, reason: StreamsError) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        queue = self._queue
        while queue:
            self._deliver(queue.popleft().callback, reason)

    def _lose(self, reason: StreamsError) -> None:
        # Record why before aborting: connection_lost reports this reason.
        if self._lost_reason is None:
            self._lost_reason = reason
        self._fail_all(reason)
        if self._transport is not None:
            self._transport.abort()

    def _arm_timer(self) -> None:
        # One timer for the oldest request: replies come in order, so the
        # head is always the one that has waited longest.
        self._timer = None
        if not self._queue:
            return
        deadline = self._queue[0].deadline
        if deadline is None:
            return
        assert self._loop is not None
        self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if not self._queue:
            return
        head = self._queue[0]
        assert self._loop is not None
        if head.deadline is not None and head.deadline <= self._loop.time():
            self._lose(RedisTimeoutError("Redis did not answer in time"))
        else:
            self._arm_timer()


#: Error replies that mean "this server is not the master any more"
#: (https://redis.io/docs/latest/operate/oss_and_stack/management/sentinel/ —
#: clients must reconnect and rediscover; UNBLOCKED ends a blocking read on a
#: master turned replica, https://redis.io/commands/replicaof/).
_DEMOTION_PREFIXES = ("READONLY", "UNBLOCKED", "MASTERDOWN")


def _demoted(reply: RedisReplyError) -> bool:
    return str(reply).startswith(_DEMOTION_PREFIXES)


def _client_name(name: str) -> str:
    # Redis rejects client names with spaces or non-printable characters
    # (https://redis.io/commands/client-setname/); a node id is user input.
    return "".join(c if "!" <= c <= "~" else "_" for c in name)


def _settle_one(fut: asyncio.Future[Any], result: Replies) -> None:
    if fut.done():
        return
    if isinstance(result, StreamsError):
        fut.set_exception(result)
        return
    reply = result[0]
    if isinstance(reply, RedisReplyError):
        fut.set_exception(reply)
    else:
        fut.set_result(reply)


def _settle_many(fut: asyncio.Future[list[Any]], result: Replies) -> None:
    if fut.done():
        return
    if isinstance(result, StreamsError):
        fut.set_exception(result)
        return
    fut.set_result(result)


_SSL_CONTEXTS: dict[TLSSettings, ssl.SSLContext] = {}


def _ssl_context(target: RedisURL) -> ssl.SSLContext | None:
    # One context per TLS setting: loading the CA file on every reconnect of
    # every connection would cost a file read and a parse each time.
    if target.tls is None:
        return None
    ctx = _SSL_CONTEXTS.get(target.tls)
    if ctx is None:
        ctx = _SSL_CONTEXTS[target.tls] = target.tls.context()
    return ctx


async def discover_master(url: RedisURL, *, timeout: float = 5.0) -> tuple[str, int]:
    """Ask the sentinels of ``url``, in order, for its master's address.

    ``SENTINEL GET-MASTER-ADDR-BY-NAME`` (https://redis.io/docs/latest/operate/oss_and_stack/management/sentinel/#sentinel-api);
    the first sentinel that answers with an address wins. A sentinel that
    answers is moved to the front, so the next discovery asks it first.

    Raises:
        RedisConnectionError: no sentinel answered with an address.
    """
    assert url.mode == "sentinel" and url.master_name is not None
    per_sentinel = max(timeout / max(len(url.addresses), 1), 0.5)
    errors: list[str] = []
    for host, port in _sentinel_order(url):
        conn = RedisConnection()
        try:
            await conn.connect(url.sentinel(host, port), timeout=per_sentinel)
            reply = await conn.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", url.master_name,
                                       timeout=per_sentinel)
        except StreamsError as exc:
            errors.append(f"{host}:{port}: {exc}")
            continue
        finally:
            conn.close()
        if not reply:
            errors.append(f"{host}:{port} knows no master {url.master_name!r}")
            continue
        _SENTINEL_FIRST[url.addresses] = (host, port)
        return reply[0].decode(), int(reply[1])
    raise RedisConnectionError(f"no sentinel named master {url.master_name!r}: "
                               + "; ".join(errors))


_SENTINEL_FIRST: dict[tuple[tuple[str, int], ...], tuple[str, int]] = {}


def _sentinel_order(url: RedisURL) -> list[tuple[str, int]]:
    first = _SENTINEL_FIRST.get(url.addresses)
    order = list(url.addresses)
    if first in order:
        order.remove(first)
        order.insert(0, first)
    return order


async def open_connection(url: str | RedisURL, *, timeout: float = 5.0, name: str | None = None,
                          on_lost: Callable[[StreamsError], None] | None = None
                          ) -> RedisConnection:
    """Connect a new :class:`RedisConnection`.

    Raises:
        ValueError: a malformed URL.
        RedisConnectionError: the connection or handshake failed.
    """
    conn = RedisConnection(on_lost=on_lost)
    await conn.connect(url, timeout=timeout, name=name)
    return conn


class SharedConnection:
    """One pipelined connection shared by many callers, opened on first use
    and opened again after it was lost.

    For the router's light traffic that is not worth a connection of its own
    but comes in bursts: registry writes and password look-ups during a
    reconnect storm. Thousands of concurrent commands queue FIFO on one socket
    (Redis answers in order) instead of contending for a pool.

    Args:
        url: Redis URL.
        name: ``CLIENT SETNAME`` of the connection.
        connect_timeout: seconds for one connection attempt.
    """

    def __init__(self, url: str, *, name: str | None = None,
                 connect_timeout: float = 5.0) -> None:
        parse_redis_url(url)   # a malformed URL fails here, not at first use
        self.url = url
        self.name = name
        self.connect_timeout = connect_timeout
        self._conn: RedisConnection | None = None
        self._opening: asyncio.Future[RedisConnection] | None = None

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.connected

    async def _get(self) -> RedisConnection:
        conn = self._conn
        if conn is not None and conn.connected:
            return conn
        opening = self._opening
        if opening is None:
            # One attempt shared by every caller that arrives meanwhile.
            opening = self._opening = asyncio.ensure_future(
                open_connection(self.url, timeout=self.connect_timeout, name=self.name))
            opening.add_done_callback(self._opened)
        return await asyncio.shield(opening)

    def _opened(self, fut: asyncio.Future[RedisConnection]) -> None:
        self._opening = None
        if not fut.cancelled() and fut.exception() is None:
            self._conn = fut.result()

    async def command(self, *args: bytes | str | int, timeout: float | None = None) -> Any:
        """Run one command (see :meth:`RedisConnection.command`).

        Raises:
            StreamsError: connecting failed, the connection broke, timeout, or
                an error reply.
        """
        return await (await self._get()).command(*args, timeout=timeout)

    async def pipeline(self, commands: Sequence[Sequence[bytes | str | int]],
                       timeout: float | None = None) -> list[Any]:
        """Run several commands in one write (see :meth:`RedisConnection.pipeline`).

        Raises:
            StreamsError: connecting failed, the connection broke or timeout.
        """
        return await (await self._get()).pipeline(commands, timeout=timeout)

    async def close(self) -> None:
        opening, self._opening = self._opening, None
        if opening is not None:
            opening.cancel()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            await conn.wait_closed()
