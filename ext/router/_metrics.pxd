# Declarations of router._metrics: the fixed-bucket histogram the hot paths
# observe into from C (router.metrics re-exports it and builds the
# Prometheus families from it at scrape time).

cdef enum:
    MAX_BUCKETS = 32


cdef class Histogram:
    cdef readonly tuple bounds          # upper bounds, ascending
    cdef double _bounds[MAX_BUCKETS]
    cdef long long _counts[MAX_BUCKETS + 1]   # the last one is +Inf
    cdef Py_ssize_t _nb
    cdef readonly double total
    cdef readonly long long n

    cdef void add(self, double value) noexcept
