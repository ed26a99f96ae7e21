# cython: language_level=3
"""A fixed-bucket histogram observed from compiled code without a Python call.

``router.metrics`` re-exports :class:`Histogram`; the compiled hot paths
(``router.server._charger``) cimport it and call ``add`` directly.
"""


cdef class Histogram:
    """Fixed buckets (``value <= bound``), cumulative on export.

    Args:
        bounds: the buckets' upper bounds, ascending, at most 32.

    Raises:
        ValueError: too many bounds, or not ascending.
    """

    def __init__(self, tuple bounds):
        cdef Py_ssize_t i
        if len(bounds) > MAX_BUCKETS:
            raise ValueError(f"at most {MAX_BUCKETS} buckets")
        for i in range(1, len(bounds)):
            if not bounds[i - 1] < bounds[i]:
                raise ValueError("bucket bounds must be ascending")
        self.bounds = bounds
        self._nb = len(bounds)
        for i in range(self._nb):
            self._bounds[i] = bounds[i]
        for i in range(self._nb + 1):
            self._counts[i] = 0
        self.total = 0.0
        self.n = 0

    cdef void add(self, double value) noexcept:
        cdef Py_ssize_t i = 0
        # A linear scan: 12-15 bounds, most values fall in the first few.
        while i < self._nb and value > self._bounds[i]:
            i += 1
        self._counts[i] += 1
        self.total += value
        self.n += 1

    def observe(self, double value):
        """Count one value."""
        self.add(value)

    @property
    def counts(self):
        """Per-bucket counts (not cumulative), the last one above every bound."""
        return [self._counts[i] for i in range(self._nb + 1)]
