# Declarations of router.streams._publisher: the publisher's hot state and its
# per-entry path, cimported by router.server._charger (a CALL is published
# with one C call). router.streams.publisher.Publisher subclasses PublisherCore.

from router.streams._resp cimport CommandBuffer


cdef class _Batch:
    # One write to Redis and its entries' callbacks; called with the replies.
    cdef object owner           # the PublisherCore
    cdef Py_ssize_t n           # entries (one reply each)
    cdef Py_ssize_t nbytes
    cdef list errors            # an on_error callback (or None) per entry, in order
    cdef list dones             # (index, on_done) of the entries that asked for their id
    cdef double started         # loop.time() of the first write attempt
    cdef bint sent              # written to Redis (counted in _inflight)
    cdef bytes data             # the RESP bytes, kept to write again after a failover
    cdef Py_ssize_t nreplies    # n, plus one for the WAIT of --durability replicated
    cdef object error           # why it is held (the last failure), for on_error at expiry
    cdef list replies           # the XADDs' replies while a WAIT is sent again, else None


cdef class PublisherCore:
    # --- configuration (set by Publisher.__init__)
    cdef public object keys                 # KeySpace
    cdef public object maxlen               # MAXLEN ~ of inbound streams, or None
    cdef public double timeout              # seconds a batch may wait for its replies
    cdef public Py_ssize_t max_pending      # entries at which to pause
    cdef public Py_ssize_t max_pending_bytes
    cdef public object on_pause
    cdef public object on_resume
    cdef public object on_batch
    cdef public object stats                # PublisherStats
    cdef public int wait_replicas           # --durability replicated: WAIT for this many (0: none)
    cdef public long long wait_ms           # WAIT's timeout in milliseconds
    # --- state
    cdef public bint paused
    cdef public Py_ssize_t pending          # entries buffered or awaiting their reply
    cdef public object _loop                # the running loop once started, else None
    cdef public object _conn                # RedisConnection or None
    cdef public bint _closed
    cdef public list _flushed_waiters       # futures of wait_flushed()
    cdef public list _inbound               # the inbound stream key of every shard
    cdef Py_ssize_t _inflight_bytes         # bytes written, replies not all back
    cdef CommandBuffer _buf                 # this iteration's XADDs
    cdef list _errors                       # on_error (or None) per buffered entry
    cdef list _dones                        # (index, on_done) of buffered entries
    cdef bint _flush_scheduled
    cdef int _inflight                      # batches written, replies not back
    cdef public object _held                # deque of _Batch waiting for a connection (failover)
    cdef object _hold_timer                 # expires the oldest held batch

    cdef inline bint _full(self)
    cdef int _queued(self, object on_error, object on_done) except -1
    cdef int _refuse(self, object on_error) except -1
    cdef int inbound(self, Py_ssize_t shard, object cs, object kind, object proto,
                     object node, object conn, long long ts_ms, object id, object action,
                     object payload, object extra, object on_error,
                     object on_done) except -1
    cdef int _finish(self, _Batch batch, object result) except -1
    cdef int _hold(self, _Batch batch, object error) except -1
    cdef int _complete(self, _Batch batch, object error) except -1
    cdef int _settled(self, _Batch batch) except -1
    cdef bint _wait_again(self, _Batch batch, list replies) except -1
    cdef int _call(self, object cb, tuple args) except -1
