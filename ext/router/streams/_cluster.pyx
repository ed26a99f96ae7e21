# cython: language_level=3
"""The Redis Cluster publisher's per-entry step, compiled.

In cluster mode the node's publisher is a :class:`ClusterPublisherCore`: the
charger path (``router.server._charger``) calls its ``inbound`` through the
``PublisherCore`` vtable exactly as in standalone mode, and this override
hands the entry to the publisher of the shard's slot (one list index and one
C call more per message). Each of those is an ordinary ``Publisher`` (its own
batching, holding and resending) writing on the connection to the master
that owns the slot; see :mod:`router.streams.cluster`.
"""

from router.streams._publisher cimport PublisherCore


cdef class ClusterPublisherCore(PublisherCore):
    """Routes inbound entries to the per-slot publishers in ``_by_shard``."""

    def __cinit__(self, *args, **kwargs):
        self._by_shard = []

    cdef int inbound(self, Py_ssize_t shard, object cs, object kind, object proto,
                     object node, object conn, long long ts_ms, object id, object action,
                     object payload, object extra, object on_error,
                     object on_done) except -1:
        if shard < 0:
            shard = self.keys.shard_of(cs)
        return (<PublisherCore>self._by_shard[shard]).inbound(
            shard, cs, kind, proto, node, conn, ts_ms, id, action, payload, extra,
            on_error, on_done)
