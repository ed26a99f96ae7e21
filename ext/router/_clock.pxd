# Clock readings for the compiled hot paths, as inline C (no Python call).
# The same clocks as time.monotonic() and time.time() on Linux, so values
# mix freely with those taken in Python.

from libc.time cimport time_t


cdef extern from "<time.h>" nogil:
    ctypedef int clockid_t
    cdef struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(clockid_t clk_id, timespec* tp)
    clockid_t CLOCK_REALTIME
    clockid_t CLOCK_MONOTONIC


cdef inline double monotonic_s() noexcept nogil:
    """time.monotonic(): seconds on CLOCK_MONOTONIC."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


cdef inline long long epoch_ms() noexcept nogil:
    """int(time.time() * 1000): wall-clock milliseconds since the Unix epoch."""
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <long long>ts.tv_sec * 1000 + ts.tv_nsec // 1000000


cdef inline long long monotonic_us() noexcept nogil:
    """int(time.monotonic() * 1e6): microseconds on CLOCK_MONOTONIC (integer
    arithmetic for the per-connection rate limit)."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <long long>ts.tv_sec * 1000000 + ts.tv_nsec // 1000
