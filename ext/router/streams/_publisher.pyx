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

from router.streams.errors import (
    NotConnectedError,
    PublishOverloadError,
    RedisReplyError,
    StreamsError,
)

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
        data = self._buf.take()
        batch.nbytes = len(data)
        batch.errors = self._errors
        batch.dones = self._dones
        batch.started = self._loop.time()
        self._errors = []
        self._dones = []
        self._inflight_bytes += batch.nbytes
        if conn is None or not conn.connected or self._closed:
            self._finish(batch, NotConnectedError("not connected to Redis"))
            return
        try:
            conn.send_raw(data, batch.n, batch, self.timeout)
        except StreamsError as exc:     # closed under us: fail the batch, never drop it
            self._finish(batch, exc)
            return
        batch.sent = True
        self._inflight += 1
        stats = self.stats
        stats.batches += 1
        stats.writes_bytes += batch.nbytes

    cdef int _finish(self, _Batch batch, object result) except -1:
        cdef object stats = self.stats
        cdef Py_ssize_t i, nerr = 0
        cdef double elapsed
        cdef object cb, reply
        cdef list replies
        self.pending -= batch.n
        self._inflight_bytes -= batch.nbytes
        if batch.sent:
            self._inflight -= 1
            if self._buf._ncmd and not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush)
        if isinstance(result, StreamsError):
            stats.failed += batch.n
            if result.code == "timeout":
                stats.timeouts += 1
            for cb in batch.errors:
                if cb is not None:
                    self._call(cb, (result,))
        else:
            replies = <list?>result
            elapsed = self._loop.time() - batch.started
            stats.recent.append((batch.n, elapsed))
            for i in range(len(replies)):
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
