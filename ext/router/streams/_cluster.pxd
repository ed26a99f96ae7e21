# Declarations of router.streams._cluster: the Redis Cluster publisher's hot
# step. router.streams.cluster.ClusterPublisher subclasses ClusterPublisherCore;
# router.server._charger sees it as a PublisherCore and calls ``inbound``
# (a virtual cdef method) on it.

from router.streams._publisher cimport PublisherCore


cdef class ClusterPublisherCore(PublisherCore):
    cdef public list _by_shard      # the PublisherCore of each inbound shard's slot

    cdef int inbound(self, Py_ssize_t shard, object cs, object kind, object proto,
                     object node, object conn, long long ts_ms, object id, object action,
                     object payload, object extra, object on_error,
                     object on_done) except -1
