# The declaration file of router.server._charger: the per-message hot path of
# a charger connection (router.server.connection.ChargerConnection subclasses
# ChargerCore and adds everything that is not per message).
#
# It sits beside _charger.pyx at the path of the dotted module name, so Cython
# finds it; the .pyx declares no field itself, so a lost .pxd fails the build.

from router._metrics cimport Histogram
from router.server._wsconn cimport WebSocketProtocol
from router.streams._publisher cimport PublisherCore


cdef class ChargerCore(WebSocketProtocol):
    # --- identity of the connection (set by the handshake and on_open)
    cdef public object node             # router.server.node.Node
    cdef public object identity         # str, once the URL was accepted
    cdef public str proto               # negotiated subprotocol ("" until accepted)
    cdef public object dialect          # router.ocppj.Dialect of proto
    cdef public str conn_id             # 16 hex digits, unique across nodes
    cdef public bytes conn_b            # conn_id as bytes (compared with out entries)
    cdef public str addr                # "ip:port" of the charger
    cdef public object since_ms         # int: when the connection opened
    cdef public int shard               # inbound shard of identity
    cdef public bint opened             # on_open ran and on_closed did not yet
    # --- the charger's CALL waiting for the backend (OCPP-J: at most one)
    cdef public object call_id          # str or None
    cdef public str call_action
    cdef public double call_started     # monotonic seconds
    cdef public double call_deadline
    # --- backend CALLs: the one in flight and those queued behind it
    cdef public object inflight         # BackendCall or None
    cdef public object queue            # deque[BackendCall] or None (idle: None)
    # --- shortcuts to node state, bound once in bind() (no lookups per message)
    cdef PublisherCore publisher        # node.publisher
    cdef dict calls_in                  # node.metrics.calls_in
    cdef dict results_out               # node.metrics.results_out
    cdef Histogram reply_hist           # node.metrics.reply_latency
    cdef set timed                      # node.timed
    cdef bytes node_b
    cdef double reply_timeout
    cdef bint edge_heartbeat
    # --- message-rate limit (issue 13): GCRA, a token bucket kept as one time
    #     stamp, integer microseconds; rl_interval 0 = no limit
    cdef long long rl_tat               # theoretical arrival time of the next CALL
    cdef long long rl_interval          # 1e6 / --message-rate
    cdef long long rl_tolerance         # (--message-burst - 1) x rl_interval
    # --- validation profiles (router/ocppj/profiles.py; connection.py)
    cdef public object profile          # tuple of the rules that apply, or None (strict)
    cdef public object boot_info        # (vendor, model) of the BootNotification, or None
    cdef public bint watch_boot         # call boot_seen() on a valid BootNotification

    cdef int text_event(self, bytes data) except -1
    cdef int _charger_call(self, object msg, tuple extra) except -1
    cdef int _result(self, str msg_id, bytes payload, bytes ref) except -1
    cdef bint _over_rate(self) noexcept
