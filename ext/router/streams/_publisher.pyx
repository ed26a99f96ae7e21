# cython: language_level=3
"""The publisher's per-entry and per-batch work, compiled.

``PublisherCore`` holds what every XADD touches — the RESP buffer, the
per-entry error callbacks, the pending counts and the pause/refuse limits — as
C fields, and does the batch's flush and completion in C.
:class:`router.streams.publisher.Publisher` subclasses it and adds the
lifecycle (start, close, reconnect supervision); the failure semantics are
documented there.

The router's charger path calls :meth:`PublisherCore.inbound` directly from C
(``router.server._charger``), with no Python call per message.
"""

from router.streams._resp cimport CommandBuffer

import collections

from router.streams.errors import (
    NotConnectedError,
    PublishOverloadError,
    RedisReplyError,
    ReplicationTimeoutError,
    StreamsError,
)

cdef bytes _wait_command(int replicas, long long ms):
    cdef CommandBuffer buf = CommandBuffer(64)
    buf.append_command(b"WAIT", replicas, ms if ms > 0 else 1)
    return buf.take()


cdef class _Batch:
    """One write to Redis: its entries' callbacks, called back with the replies."""

    def __call__(self, result):
        (<PublisherCore>self.owner)._finish(self, result)


cdef class PublisherCore:
    """Buffered XADDs and their bookkeeping (see the module docstring)."""

    def __cinit__(self, *args, **kwargs):
        self._buf = CommandBuffer(64 * 1024)
        self._errors = []
        self._dones = []
        self._flushed_waiters = []
        self._inbound = []
        self.pending = 0
        self.paused = False
        self._closed = False
        self._flush_scheduled = False
        self._inflight_bytes = 0
        self._inflight = 0
        self._held = collections.deque()
        self._hold_timer = None
        self.wait_replicas = 0
        self.wait_ms = 0

    # -- appending (hot path) -------------------------------------------------

    cdef inline bint _full(self):
        # At twice the limits entries are refused (the caller ignored on_pause).
        return (self.pending >= 2 * self.max_pending
                or self._inflight_bytes + self._buf._len >= 2 * self.max_pending_bytes)

    cdef int _queued(self, object on_error, object on_done) except -1:
        # The bookkeeping of one appended entry.
        if on_done is not None:
            self._dones.append((len(self._errors), on_done))
        self._errors.append(on_error)
        self.pending += 1
        # Adaptive batching: while a batch awaits its replies, new entries
        # wait for them and leave together right after (_finish), so batches
        # grow with load and Redis round trips, without a timer.
        if not self._flush_scheduled and not self._inflight:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        if not self.paused and (
                self.pending >= self.max_pending
                or self._inflight_bytes + self._buf._len >= self.max_pending_bytes):
            self.paused = True
            if self.on_pause is not None:
                self.on_pause()
        return 0

    cdef int _refuse(self, object on_error) except -1:
        self.stats.failed += 1
        if on_error is not None:
            self._loop.call_soon(on_error, PublishOverloadError("publish buffer full"))
        return 0

    cdef int inbound(self, Py_ssize_t shard, object cs, object kind, object proto,
                     object node, object conn, long long ts_ms, object id, object action,
                     object payload, object extra, object on_error,
                     object on_done) except -1:
        """Queue the XADD of one inbound entry; ``shard`` < 0: computed from ``cs``."""
        cdef object key
        if self._loop is None:
            raise RuntimeError("Publisher not started")
        if shard >= 0:
            key = self._inbound[shard]
        else:
            key = self.keys.inbound_for(cs)
        if self._full():
            return self._refuse(on_error)
        self._buf.inbound(key, self.maxlen, kind, cs, proto, node, conn, ts_ms,
                          id, action, payload, extra)
        return self._queued(on_error, on_done)

    def publish_inbound(self, cs, kind, proto, node, conn, long long ts_ms, id=None,
                        action=None, payload=None, extra=(), *, shard=None,
                        on_error=None, on_done=None):
        """Queue the XADD of one inbound entry (docs/streams.md) for this iteration's write.

        Args:
            cs: the charger identity (its shard is ``keys.shard_of(cs)``).
            kind, proto, node, conn, ts_ms, id, action, payload: contract fields;
                id/action/payload are left out when None.
            extra: more name/value pairs (``code``, ``description``, ``addr`` …).
            shard: the charger's shard when the caller has it cached.
            on_error: called with the error if this entry was not written.
            on_done: called with the new entry id once Redis acknowledged it.

        Raises:
            RuntimeError: the publisher was not started.
            TypeError, ValueError: a malformed field (nothing is queued).
        """
        self.inbound(-1 if shard is None else shard, cs, kind, proto, node, conn, ts_ms,
                     id, action, payload, extra, on_error, on_done)

    def xadd(self, key, fields, maxlen, on_error=None, on_done=None):
        """Queue any XADD (``failed`` entries, ``reply_to`` copies) for this iteration's write.

        Args:
            key: the stream key.
            fields: alternating field names and values.
            maxlen: ``MAXLEN ~`` cap, or None.
            on_error, on_done: as for :meth:`publish_inbound`.

        Raises:
            RuntimeError: the publisher was not started.
            TypeError, ValueError: malformed fields (nothing is queued).
        """
        if self._loop is None:
            raise RuntimeError("Publisher not started")
        if self._full():
            self._refuse(on_error)
            return
        self._buf.append_xadd(key, maxlen, fields)
        self._queued(on_error, on_done)

    # -- one write per loop iteration -------------------------------------------

    def _flush(self):
        cdef _Batch batch
        cdef object conn = self._conn
        self._flush_scheduled = False
        if self._buf._ncmd == 0:
            return
        batch = _Batch.__new__(_Batch)
        batch.owner = self
        batch.n = self._buf._ncmd
        batch.nreplies = batch.n + (self.wait_replicas > 0)
        batch.data = self._buf.take()
        batch.nbytes = len(batch.data)
        batch.errors = self._errors
        batch.dones = self._dones
        batch.started = self._loop.time()
        self._errors = []
        self._dones = []
        self._inflight_bytes += batch.nbytes
        if self._closed:
            self._complete(batch, NotConnectedError("publisher closed"))
            return
        if conn is None or not conn.connected or self._held:
            # No master at the moment (failover, restart): hold the batch until
            # a connection is back or its publish timeout is spent.
            self._hold(batch, NotConnectedError("not connected to Redis"))
            return
        exc = self._send(batch)
        if exc is not None:
            self._hold(batch, exc)

    def _send(self, _Batch batch):
        """Write ``batch`` with what is left of its timeout; the error if the
        connection refused it (nothing written), else None."""
        cdef double left = batch.started + self.timeout - self._loop.time()
        conn = self._conn
        if conn is None:
            return NotConnectedError("not connected to Redis")
        data = batch.data
        batch.replies = None
        if self.wait_replicas > 0:
            # --durability replicated: the batch counts as published once a
            # replica has it (https://redis.io/commands/wait/); one WAIT per
            # write, in the same write, so the cost is one reply per batch.
            # Its timeout fits in what is left of the batch's: WAIT's "0
            # replicas" must come back before the connection's own timeout.
            data = data + _wait_command(self.wait_replicas,
                                        min(self.wait_ms, <long long>(left * 500)))
        try:
            conn.send_raw(data, batch.nreplies, batch, left if left > 0.001 else 0.001)
        except StreamsError as exc:     # closed under us: the caller holds the batch
            return exc
        batch.sent = True
        self._inflight += 1
        stats = self.stats
        stats.batches += 1
        stats.writes_bytes += batch.nbytes
        return None

    cdef int _hold(self, _Batch batch, object error) except -1:
        batch.error = error
        self._held.append(batch)
        self.stats.held += 1
        if self._hold_timer is None:
            self._arm_hold_timer()
        return 0

    def _arm_hold_timer(self):
        self._hold_timer = None
        if self._held:
            head = <_Batch>self._held[0]
            self._hold_timer = self._loop.call_at(head.started + self.timeout,
                                                  self._expire_held)

    def _expire_held(self):
        """Fail the held batches whose publish timeout is spent."""
        cdef _Batch batch
        cdef double now = self._loop.time()
        self._hold_timer = None
        while self._held:
            batch = <_Batch>self._held[0]
            if batch.started + self.timeout > now:
                break
            self._held.popleft()
            self.stats.expired += batch.n
            self._complete(batch, batch.error)
        self._arm_hold_timer()

    def _resend_held(self):
        """A connection is back: write the held batches again, oldest first.

        A batch lost in flight may have been written before the connection
        broke: writing it again makes its entries at-least-once; consumers
        drop the repeat by (cs, conn, id) (docs/streams.md).
        """
        cdef _Batch batch
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        now = self._loop.time()
        while self._held:
            batch = <_Batch>self._held.popleft()
            if batch.started + self.timeout <= now:
                self.stats.expired += batch.n
                self._complete(batch, batch.error)
                continue
            exc = self._send(batch)
            if exc is not None:
                batch.error = exc
                self._held.appendleft(batch)
                break
            self.stats.resent += 1
        self._arm_hold_timer()
        if not self._held and self._buf._ncmd and not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _drop_held(self, error):
        """Fail every held batch with ``error`` (closing)."""
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        while self._held:
            self._complete(<_Batch>self._held.popleft(), error)

    cdef int _finish(self, _Batch batch, object result) except -1:
        cdef object stats = self.stats
        cdef Py_ssize_t i, nerr = 0
        cdef double elapsed
        cdef object cb, reply, acked
        cdef list replies
        if batch.sent:
            batch.sent = False
            self._inflight -= 1
            if self._buf._ncmd and not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush)
        if isinstance(result, StreamsError):
            if (result.code != "timeout" and type(result) is not RedisReplyError
                    and not self._closed
                    and self._loop.time() < batch.started + self.timeout):
                # The connection broke (master killed, demoted, failover):
                # write the batch again on the next connection.
                self._hold(batch, result)
                return 0
            return self._complete(batch, result)
        replies = <list?>result
        if batch.nreplies > batch.n:
            if batch.replies is not None:       # the answer to a WAIT sent again
                acked = replies[0]
                replies = batch.replies
            else:
                acked = replies[batch.n]
            if type(acked) is RedisReplyError:
                return self._complete(batch, acked)
            if acked < self.wait_replicas:
                # No replica confirmed yet (none connected: the master was just
                # promoted and its replicas are still (re)syncing). WAIT again
                # for what is left of the publish timeout: WAIT counts the
                # replication offset of this client's writes, these included.
                if self._wait_again(batch, replies):
                    return 0
                # Spent: the entries are on the master only and would be lost
                # with it; they do not count as published.
                stats.replication_timeouts += 1
                return self._complete(batch, ReplicationTimeoutError(
                    f"{acked} of {self.wait_replicas} replicas acknowledged within "
                    f"the publish timeout ({self.timeout:g} s)"))
        elapsed = self._loop.time() - batch.started
        stats.recent.append((batch.n, elapsed))
        for i in range(batch.n):
            reply = replies[i]
            if type(reply) is RedisReplyError:
                nerr += 1
                cb = batch.errors[i]
                if cb is not None:
                    self._call(cb, (reply,))
        if nerr:
            stats.failed += nerr
            stats.reply_errors += nerr
        stats.entries += batch.n - nerr
        for i, cb in batch.dones:
            reply = replies[i]
            if type(reply) is not RedisReplyError:
                self._call(cb, (reply,))
        if self.on_batch is not None:
            self._call(self.on_batch, (batch.n, elapsed))
        return self._settled(batch)

    cdef bint _wait_again(self, _Batch batch, list replies) except -1:
        cdef double left = batch.started + self.timeout - self._loop.time()
        cdef object conn = self._conn
        if left < 0.05 or self._closed or conn is None or not conn.connected:
            return False
        try:
            conn.send_raw(_wait_command(self.wait_replicas,
                                        min(self.wait_ms, <long long>(left * 500))),
                          1, batch, left)
        except StreamsError:
            return False
        batch.replies = replies
        batch.sent = True
        self._inflight += 1
        self.stats.rewaits += 1
        return True

    cdef int _complete(self, _Batch batch, object error) except -1:
        # Every entry of ``batch`` failed with ``error``.
        cdef object stats = self.stats
        cdef object cb
        stats.failed += batch.n
        if error.code == "timeout":
            stats.timeouts += 1
        for cb in batch.errors:
            if cb is not None:
                self._call(cb, (error,))
        return self._settled(batch)

    cdef int _settled(self, _Batch batch) except -1:
        # ``batch`` is done for good: release its share of the limits.
        batch.data = None
        self.pending -= batch.n
        self._inflight_bytes -= batch.nbytes
        if self.paused and self.pending <= self.max_pending // 2 and (
                self._inflight_bytes + self._buf._len <= self.max_pending_bytes // 2):
            self.paused = False
            if self.on_resume is not None:
                self._call(self.on_resume, ())
        if self.pending == 0 and self._flushed_waiters:
            waiters, self._flushed_waiters = self._flushed_waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
        return 0

    cdef int _call(self, object cb, tuple args) except -1:
        # A failing callback is a bug in the caller; it must not cost other
        # entries their callbacks.
        try:
            cb(*args)
        except Exception as exc:
            self._loop.call_exception_handler({
                "message": "exception in a publish callback",
                "exception": exc,
            })
        return 0
