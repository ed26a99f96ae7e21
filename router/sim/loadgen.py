"""Load generator: simulated OCPP-J chargers over real WebSockets.

Each simulated charger opens a WebSocket (subprotocol ``ocpp1.6``,
``ocpp2.0.1`` or ``ocpp2.1``), sends a BootNotification, and then, depending on
the mode:

``closed``  sends the next CALL of a realistic mix as soon as the previous one
            is answered — one outstanding CALL per charger, as OCPP-J requires
            (OCPP-J 1.6 §4.1.1, OCPP 2.0.1 Part 4 §4.1.1);
``open``    sends CALLs at a fixed total rate; a charger whose previous CALL is
            still unanswered queues the next one and sends it when the answer
            arrives, with its latency counted from the 2 ms generator tick at
            which it fell due (no coordinated omission);
``idle``    connects, boots and holds the connection;
``echo``    no OCPP: sends a small text message and waits for it to come back
            (codec benchmarks against echo servers).

Chargers answer backend CALLs (``[2, …]`` from the server) with a schema-valid
CALLRESULT for common actions and CALLERROR ``NotImplemented`` otherwise.

Cheap per message, because it shares the CPU with the system under test:
picows (the fastest Python WebSocket client), uvloop, pre-encoded messages (only
the message id is spliced in), a reply check that reads the envelope with two
``bytes.find`` calls, latencies appended to an ``array``, histograms built only
at the end. Several worker processes, each bound to its own 127.0.0.N source
address, get past the per-process file descriptor limit and the ephemeral port
range (``IP_BIND_ADDRESS_NO_PORT``: the port is picked at ``connect()`` for the
whole 4-tuple, see ip(7)).

The parent process drives the workers over pipes (one JSON object per line),
prints progress to stderr, measures the CPU and memory of the processes it is
told to watch (``--watch NAME=PID``) over the same window, and writes one JSON
result. ``ocpp-router simulate`` (router/cli/simulate.py) is the operator's
face of it; ``bench.run`` calls :func:`run_load`; ``python -m router.sim.loadgen
--help`` (or ``python -m bench.loadgen``) runs it bare.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import ipaddress
import math
import os
import random
import resource
import socket
import ssl
import sys
import time
from array import array
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
import uvloop
from picows import WSCloseCode, WSError, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from router.sim import messages
from router.sim.procstat import TreeSample, cpu_of, machine_busy_seconds, sample_tree

MODES = ("closed", "open", "idle", "echo")

# Bound once: these run per message (STYLE.md: no global lookups in hot loops).
_TEXT = WSMsgType.TEXT
_CLOSE = WSMsgType.CLOSE
_perf_ns = time.perf_counter_ns
_CALLRESULT = ord("3")
_CALLERROR = ord("4")
_CALL = ord("2")
# ip(7): reserve the source address now but pick the port at connect(), per
# 4-tuple, so one 127.0.0.N can reach several servers with ~28k ports each.
_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


class LoadgenError(RuntimeError):
    """The load generator could not run (bad configuration, a worker died)."""


@dataclass
class LoadConfig:
    """Everything one load generator run needs.

    ``url`` is the base URL; each charger connects to ``url + "/" + identity``.
    ``proto`` is a subprotocol, ``mix`` (round robin over the three versions)
    or ``none`` (no ``Sec-WebSocket-Protocol``; echo servers).
    """

    url: str
    chargers: int = 200
    mode: str = "closed"
    proto: str = "ocpp1.6"
    duration: float = 10.0
    warmup: float = 2.0
    rate: float = 0.0
    tick_ms: float = 2.0
    hold: float = 3.0
    heartbeat: float = 0.0      # idle: seconds between a charger's Heartbeats (0: none)
    storm: bool = False
    storm_timeout: float = 60.0
    procs: int = 0
    source_addrs: list[str] = field(default_factory=list)
    connect_concurrency: int = 256
    connect_timeout: float = 120.0
    handshake_timeout: float = 30.0
    id_prefix: str = "CP"
    watch: dict[str, int] = field(default_factory=dict)
    progress: bool = True
    reconnect: bool = True
    retry_after: bool = False
    # Security profiles 1-3 (OCPP 2.0.1 Part 2 §A00): HTTP Basic with the
    # identity as user name, server certificate check against tls_ca (or none:
    # tls_insecure), client certificate tls_cert/tls_key.
    password: str | None = None
    tls_ca: str | None = None
    tls_insecure: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None

    def validate(self) -> None:
        """Raises:
            LoadgenError: an inconsistent option.
        """
        if self.mode not in MODES:
            raise LoadgenError(f"mode must be one of {MODES}")
        if self.proto not in (*messages.PROTOCOLS, "mix", "none"):
            raise LoadgenError(f"unknown proto {self.proto!r}")
        if self.mode == "open" and self.rate <= 0:
            raise LoadgenError("open loop needs --rate > 0")
        if self.mode == "echo" and self.proto != "none":
            self.proto = "none"
        if self.chargers < 1:
            raise LoadgenError("--chargers must be >= 1")
        if self.storm and self.mode != "idle":
            raise LoadgenError("--storm runs on idle chargers (--mode idle)")
        if self.heartbeat < 0 or (self.heartbeat and self.mode != "idle"):
            raise LoadgenError("--heartbeat is for idle chargers (the mixes have their own)")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise LoadgenError("--tls-cert and --tls-key go together")
        for path in (self.tls_ca, self.tls_cert, self.tls_key):
            if path is not None and not os.path.isfile(path):
                raise LoadgenError(f"file not found: {path}")


def client_ssl_context(cfg: dict[str, Any]) -> ssl.SSLContext | None:
    """The TLS context of a ``wss://`` run (None for ``ws://``).

    Raises:
        LoadgenError: a certificate or key cannot be loaded.
    """
    if not str(cfg["url"]).startswith("wss://"):
        return None
    try:
        ctx = ssl.create_default_context(cafile=cfg.get("tls_ca"))
        if cfg.get("tls_insecure"):
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if cfg.get("tls_cert"):
            ctx.load_cert_chain(cfg["tls_cert"], cfg["tls_key"])
    except (OSError, ssl.SSLError) as exc:
        raise LoadgenError(f"TLS: {exc}") from None
    return ctx


# --------------------------------------------------------------------------- #
# Worker process                                                              #
# --------------------------------------------------------------------------- #

def _bucket(v: int) -> int:
    """Histogram bucket (lower bound) of a latency in µs: exact below 1024 µs,
    then 512 buckets per power of two (< 0.2 % relative error)."""
    if v < 1024:
        return v
    s = v.bit_length() - 10
    return (v >> s) << s


def _histogram(values: Iterable[int]) -> list[list[int]]:
    return sorted([b, c] for b, c in Counter(map(_bucket, values)).items())


class Charger(WSListener):
    """One simulated charger: one WebSocket connection's listener."""

    def __init__(self, worker: Worker, idx: int, proto: str) -> None:
        self.w = worker
        self.idx = idx
        self.proto = proto
        self.transport: WSTransport | None = None
        self.cycle = worker.cycles[proto] if proto in worker.cycles else []
        self.sent_at = worker.sent_at[proto] if proto in worker.sent_at else []
        self.pos = idx % len(self.cycle) if self.cycle else 0
        self.seq = 0
        self.cur_id: bytes | None = None
        self.t0 = 0
        self.booted = False
        self.closing = False
        self.backlog: deque[int] = deque()

    # -- picows callbacks -------------------------------------------------- #

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        w = self.w
        w.connected += 1
        if self.proto == "none":
            # Echo servers speak no OCPP: connected counts as booted.
            self.booted = True
            w.on_booted(self)
            return
        self.seq += 1
        mid = b"b%d" % self.seq
        self.cur_id = mid
        self.t0 = _perf_ns()
        w.boots_sent[self.proto] += 1
        transport.send(_TEXT, messages.call(mid, w.boot_bodies[self.proto]))

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        mt = frame.msg_type
        if mt is not _TEXT:
            if mt is _CLOSE:
                self.w.server_closed(self.idx, frame.get_close_code())
                # RFC 6455 §5.5.1: answer a Close frame with a Close frame.
                self.closing = self.closing or not self.w.reconnect
                transport.send_close(frame.get_close_code())
                transport.disconnect()
            return
        data = frame.get_payload_as_bytes()
        w = self.w
        if w.echo:
            self._answered(data)
            return
        kind = data[1]
        if kind == _CALLRESULT or kind == _CALLERROR:
            # The envelope's id is the first JSON string: '[3,"<id>",…'.
            q = data.find(b'"', 2)
            if data[q + 1:data.find(b'"', q + 1)] != self.cur_id:
                w.unexpected += 1
                return
            if kind == _CALLERROR:
                w.count_error(data)
            self._answered(data)
        elif kind == _CALL:
            self._answer_backend_call(transport, data)
        else:
            self._slow_path(transport, data)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        w = self.w
        w.connected -= 1
        if self.booted:
            w.booted -= 1
            w.active.discard(self)
        if self.closing:
            return
        w.disconnects += 1
        if w.reconnect and not w.quitting:
            w.loop.call_later(1.0, w.reconnect_one, self.idx)

    # -- traffic ----------------------------------------------------------- #

    def _answered(self, data: bytes) -> None:
        now = _perf_ns()
        w = self.w
        self.cur_id = None
        if not self.booted:
            self.booted = True
            if b'"Accepted"' in data:
                w.boot_accepted += 1
            else:
                w.boot_not_accepted += 1
            w.boot_lat.append((now - self.t0) // 1000)
            w.on_booted(self)
            if w.heartbeat_s > 0:
                # The first one at a random point of the interval: chargers
                # booted together do not beat together.
                w.loop.call_later(w.heartbeat_s * random.random(), self.heartbeat)
            return
        w.done += 1
        if w.measuring:
            w.lat.append((now - self.t0) // 1000)
        if not w.running:
            return
        if w.closed_loop:
            self.send_next(now)
        elif self.backlog:
            self.send_next(self.backlog.popleft())

    def heartbeat(self) -> None:
        """Idle chargers: a Heartbeat every ``heartbeat_s`` (skipped while a
        CALL is unanswered, as OCPP-J allows one at a time)."""
        w = self.w
        transport = self.transport
        if self.closing or w.quitting or transport is None or transport.is_disconnected:
            return
        if self.cur_id is None:
            self.seq += 1
            mid = b"h%d" % self.seq
            self.cur_id = mid
            self.t0 = _perf_ns()
            w.heartbeats_sent[self.proto] += 1
            transport.send(_TEXT, messages.call(mid, w.heartbeat_bodies[self.proto]))
        w.loop.call_later(w.heartbeat_s, self.heartbeat)

    def send_next(self, t0: int) -> None:
        """Send the next CALL of the mix, its latency counted from ``t0`` (ns)."""
        transport = self.transport
        if transport is None or self.closing:
            return
        self.seq += 1
        mid = b"%d" % self.seq
        body = self.cycle[self.pos]
        self.sent_at[self.pos] += 1
        self.pos += 1
        if self.pos == len(self.cycle):
            self.pos = 0
        self.cur_id = mid
        self.t0 = t0
        transport.send(_TEXT, b'[2,"' + mid + b'",' + body)
        self.w.sent += 1

    def trigger(self, intended: int) -> None:
        """Open loop: one CALL is due at ``intended`` (perf_counter ns). If the
        previous CALL is still unanswered, this one waits for it and its
        latency includes the wait (no coordinated omission)."""
        if self.cur_id is None:
            self.send_next(intended)
        else:
            self.backlog.append(intended)
            self.w.deferred += 1

    def _answer_backend_call(self, transport: WSTransport, data: bytes) -> None:
        w = self.w
        try:
            msg = orjson.loads(data)
            mid, action, payload = msg[1], msg[2], msg[3]
            resp = messages.charger_response(self.proto, action, payload)
        except (orjson.JSONDecodeError, IndexError, KeyError, TypeError, AttributeError):
            w.bad_backend_calls += 1
            return
        w.backend_calls += 1
        if resp is None:
            transport.send(_TEXT, messages.callerror(mid.encode(), "NotImplemented",
                                                     f"{action} not simulated"))
        else:
            transport.send(_TEXT, messages.callresult(mid.encode(), resp))

    def _slow_path(self, transport: WSTransport, data: bytes) -> None:
        """Envelopes with whitespace (``[ 3, "id", …]``): decode them fully."""
        w = self.w
        try:
            msg = orjson.loads(data)
            kind, mid = int(msg[0]), str(msg[1]).encode()
        except (orjson.JSONDecodeError, IndexError, TypeError, ValueError):
            w.unexpected += 1
            return
        if kind == 2:
            self._answer_backend_call(transport, data)
        elif kind in (3, 4) and mid == self.cur_id:
            if kind == 4:
                w.count_error(data)
            self._answered(data)
        else:
            w.unexpected += 1


class Worker:
    """One generator process: a slice of the chargers, one source address."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.loop = asyncio.get_running_loop()
        self.url: str = cfg["url"].rstrip("/")
        self.first: int = cfg["first"]
        self.count: int = cfg["count"]
        self.src: str = cfg["source_addr"]
        self.mode: str = cfg["mode"]
        self.proto: str = cfg["proto"]
        self.echo = self.mode == "echo"
        self.closed_loop = self.mode in ("closed", "echo")
        self.reconnect: bool = cfg["reconnect"]
        self.retry_after: bool = cfg.get("retry_after", False)
        # Close codes the server sent, and how often each charger was told to
        # go by 1001/1012 (rebalancing, drain).
        self.close_codes: Counter[int] = Counter()
        self.sent_away: Counter[int] = Counter()
        self.id_prefix: str = cfg["id_prefix"]
        self.rate: float = cfg["rate"]
        self.tick_s: float = cfg.get("tick_ms", 2.0) / 1000
        self.ssl_context = client_ssl_context(cfg)
        self.password: str | None = cfg.get("password")
        self.cycles = {p: [body for _, body in messages.mix(p)] for p in messages.PROTOCOLS}
        self.boot_bodies = {p: messages.boot_body(p) for p in messages.PROTOCOLS}
        if self.echo:
            # A small OCPP-sized text message (a StatusNotification CALL body).
            self.cycles["none"] = [self.cycles["ocpp1.6"][0]]
        # CALLs sent per position of each cycle (an index, not a dict, per
        # message); by action in the report.
        self.sent_at = {p: [0] * len(c) for p, c in self.cycles.items()}
        self.actions = {p: [action for action, _ in messages.mix(p)] for p in messages.PROTOCOLS}
        self.boots_sent: Counter[str] = Counter()
        self.heartbeat_s: float = cfg.get("heartbeat", 0.0)
        self.heartbeat_bodies = {p: dict(messages.mix(p))["Heartbeat"] for p in messages.PROTOCOLS}
        self.heartbeats_sent: Counter[str] = Counter()
        self.active: set[Charger] = set()
        self.chargers: dict[int, Charger] = {}
        # Open loop: start time, CALLs issued, round-robin list and position.
        self._open_start = 0
        self._issued = 0
        self._rr: list[Charger] = []
        self._rr_pos = 0
        self._interval_ns = 1e9 / self.rate if self.rate > 0 else 0.0
        self.running = False
        self.measuring = False
        self.quitting = False
        # Counters (reported to the parent).
        self.connected = 0
        self.booted = 0
        self.boot_accepted = 0
        self.boot_not_accepted = 0
        self.handshakes = 0
        self.handshake_failures = 0
        self.failure_kinds: Counter[str] = Counter()
        self.error_codes: Counter[str] = Counter()
        self.proto_mismatch = 0
        self.disconnects = 0
        self.reconnects = 0
        self.sent = 0
        self.done = 0
        self.deferred = 0
        self.unexpected = 0
        self.call_errors = 0
        self.backend_calls = 0
        self.bad_backend_calls = 0
        self.lat = array("q")
        self.boot_lat = array("q")
        self.hs_lat = array("q")
        self.lat_reported = 0      # lat[:lat_reported] went out with a progress line
        self.done_at_measure = 0
        self.measured = 0
        self.storm: dict[str, Any] | None = None
        self._storm_start = 0.0
        self._storm_target = 0
        self._storm_failures0 = 0
        self._booted_waiters: list[tuple[int, asyncio.Future[None]]] = []

    def server_closed(self, idx: int, code: Any) -> None:
        code = int(code)
        self.close_codes[code] += 1
        if code in (1001, 1012):
            self.sent_away[idx] += 1

    def count_error(self, data: bytes) -> None:
        """A CALLERROR answered one of our CALLs: count it by error code."""
        self.call_errors += 1
        try:
            code = str(orjson.loads(data)[2])
        except (orjson.JSONDecodeError, IndexError):
            code = "?"
        self.error_codes[code] += 1

    # -- connections ------------------------------------------------------- #

    def _proto_of(self, idx: int) -> str:
        if self.proto == "mix":
            return messages.PROTOCOLS[idx % len(messages.PROTOCOLS)]
        return self.proto

    def _socket(self, _parsed_url: Any) -> socket.socket | None:
        if not self.src:
            return None          # no source address: picows connects as usual
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((self.src, 0))
        except OSError:
            sock.close()
            raise
        return sock

    async def connect_one(self, idx: int, deadline: float) -> None:
        proto = self._proto_of(idx)
        identity = f"{self.id_prefix}{idx:06d}"
        url = f"{self.url}/{identity}"
        headers = {} if proto == "none" else {"Sec-WebSocket-Protocol": proto}
        if self.password is not None:
            # OCPP-J security profile 1/2: Basic auth, user name = identity.
            token = base64.b64encode(f"{identity}:{self.password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        delay = 0.2
        while not self.quitting:
            t0 = _perf_ns()
            try:
                transport, listener = await ws_connect(
                    lambda: Charger(self, idx, proto), url,
                    socket_factory=self._socket, extra_headers=headers,
                    ssl_context=self.ssl_context,
                    websocket_handshake_timeout=self.cfg["handshake_timeout"],
                    read_buffer_init_size=4096, enable_auto_pong=True,
                    logger_name="router.sim.loadgen")
            except (TimeoutError, WSError, OSError) as exc:
                self.handshake_failures += 1
                response = getattr(exc, "response", None)
                status = getattr(response, "status", None)
                self.failure_kinds[f"http_{int(status)}" if status else type(exc).__name__] += 1
                pause = delay
                if self.retry_after and response is not None:
                    # What a charger honouring RFC 9110 §10.2.3 does with a
                    # 503/429: come back after Retry-After seconds.
                    with contextlib.suppress(TypeError, ValueError):
                        pause = float(response.headers.get("Retry-After"))
                if time.monotonic() + pause > deadline:
                    return
                await asyncio.sleep(pause)
                delay = min(delay * 2, 2.0)
                continue
            if not isinstance(listener, Charger):
                # picows returns no listener when the server closed the TCP
                # connection before answering the upgrade.
                self.handshake_failures += 1
                self.failure_kinds["ClosedDuringHandshake"] += 1
                if time.monotonic() + delay > deadline:
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self.handshakes += 1
            self.hs_lat.append((_perf_ns() - t0) // 1000)
            self.chargers[idx] = listener
            if proto != "none":
                got = transport.response.headers.get("Sec-WebSocket-Protocol")
                if got != proto:
                    self.proto_mismatch += 1
            return

    async def connect_all(self, indices: list[int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        todo = deque(indices)

        async def lane() -> None:
            while todo and not self.quitting:
                await self.connect_one(todo.popleft(), deadline)

        await asyncio.gather(*(lane() for _ in range(min(self.cfg["connect_concurrency"],
                                                          len(todo)))))

    def reconnect_one(self, idx: int) -> None:
        if self.quitting or self.storm_running:
            return
        self.reconnects += 1
        self.loop.create_task(self.connect_one(idx, time.monotonic() + 60))

    @property
    def storm_running(self) -> bool:
        return self.storm is not None and "seconds" not in self.storm

    def on_booted(self, ch: Charger) -> None:
        self.booted += 1
        self.active.add(ch)
        if self.running and self.closed_loop:
            ch.send_next(_perf_ns())
        if self.storm_running and self.booted >= self._storm_target:
            self._storm_done()

    # -- commands from the parent ----------------------------------------- #

    def go(self) -> None:
        self.running = True
        if self.closed_loop:
            now = _perf_ns()
            for ch in list(self.active):
                if ch.cur_id is None:
                    ch.send_next(now)
        elif self.mode == "open":
            self._open_start = _perf_ns()
            self._issued = 0
            self._rr = []
            self._rr_pos = 0
            self._interval_ns = 1e9 / self.rate
            self._tick()

    def _tick(self) -> None:
        if not self.running:
            return
        now = _perf_ns()
        due = int((now - self._open_start) / self._interval_ns) - self._issued
        if due > 0:
            if not self._rr:
                self._rr = list(self.active)
            rr, pos, n = self._rr, self._rr_pos, len(self._rr)
            if n:
                for _ in range(due):
                    self._issued += 1
                    # Latency counts from this tick, not from the ideal
                    # instant between ticks: the tick's granularity (and any
                    # lag of the generator itself) is not the server's delay.
                    rr[pos].trigger(now)
                    pos += 1
                    if pos == n:
                        pos = 0
                        # Pick up reconnected chargers once per round.
                        rr = self._rr = list(self.active)
                        n = len(rr)
                        if not n:
                            break
                self._rr_pos = pos
        self.loop.call_later(self.tick_s, self._tick)

    def measure(self) -> None:
        self.lat = array("q")
        self.done_at_measure = self.done
        self.measuring = True

    def end_measure(self) -> None:
        self.measuring = False
        self.measured = self.done - self.done_at_measure

    def start_storm(self) -> None:
        """Every connection drops at once (TCP reset, as when a network path
        fails) and every charger reconnects and boots again immediately."""
        self._storm_target = self.booted
        self._storm_failures0 = self.handshake_failures
        self.storm = {"dropped": self._storm_target}
        self._storm_start = time.monotonic()
        for ch in list(self.chargers.values()):
            ch.closing = True
            if ch.transport is not None:
                ch.transport.disconnect(graceful=False)
        self.chargers.clear()
        self.boot_lat = array("q")
        self.hs_lat = array("q")
        if self._storm_target == 0:
            self._storm_done()
            return
        self.loop.create_task(self.connect_all(list(range(self.first, self.first + self.count)),
                                               self.cfg["storm_timeout"]))

    def _storm_done(self) -> None:
        assert self.storm is not None
        self.storm["seconds"] = time.monotonic() - self._storm_start
        self.storm["rebooted"] = self.booted
        self.storm["handshake_failures"] = self.handshake_failures - self._storm_failures0
        self.emit({"t": "storm_done", **self.storm})

    def counters(self) -> dict[str, Any]:
        return {
            "connected": self.connected, "booted": self.booted,
            "boot_accepted": self.boot_accepted, "boot_not_accepted": self.boot_not_accepted,
            "handshakes": self.handshakes, "handshake_failures": self.handshake_failures,
            "proto_mismatch": self.proto_mismatch, "disconnects": self.disconnects,
            "reconnects": self.reconnects, "sent": self.sent, "done": self.done,
            "deferred": self.deferred, "unexpected": self.unexpected,
            "call_errors": self.call_errors, "backend_calls": self.backend_calls,
            "bad_backend_calls": self.bad_backend_calls,
        }

    def recent(self) -> dict[str, Any]:
        """Latencies measured since the previous progress line (live p50/p99)."""
        lat = self.lat
        if self.lat_reported > len(lat):      # a new measurement window began
            self.lat_reported = 0
        hist = _histogram(lat[self.lat_reported:])
        self.lat_reported = len(lat)
        return {"recent_hist": hist}

    def sent_by_action(self) -> dict[str, dict[str, int]]:
        """CALLs sent, by subprotocol and action (BootNotification included)."""
        out: dict[str, dict[str, int]] = {}
        for proto, boots in self.boots_sent.items():
            out.setdefault(proto, {})["BootNotification"] = boots
        for proto, beats in self.heartbeats_sent.items():
            out.setdefault(proto, {})["Heartbeat"] = beats
        for proto, actions in self.actions.items():
            for action, n in zip(actions, self.sent_at[proto], strict=True):
                if n:
                    table = out.setdefault(proto, {})
                    table[action] = table.get(action, 0) + n
        return out

    def report(self) -> dict[str, Any]:
        return {
            "sent_by_action": self.sent_by_action(),
            "t": "report", **self.counters(), "measured": self.measured,
            "failure_kinds": dict(self.failure_kinds), "error_codes": dict(self.error_codes),
            "lat_hist": _histogram(self.lat), "lat_max": max(self.lat, default=0),
            "boot_hist": _histogram(self.boot_lat), "hs_hist": _histogram(self.hs_lat),
            "storm": self.storm,
            "close_codes": {str(k): v for k, v in self.close_codes.items()},
            "sent_away": len(self.sent_away),
            "sent_away_twice": sum(1 for n in self.sent_away.values() if n > 1),
        }

    def emit(self, obj: dict[str, Any]) -> None:
        sys.stdout.buffer.write(orjson.dumps(obj) + b"\n")
        sys.stdout.buffer.flush()

    async def quit(self) -> None:
        self.quitting = True
        self.running = False
        for ch in list(self.chargers.values()):
            ch.closing = True
            if ch.transport is not None and not ch.transport.is_disconnected:
                with contextlib.suppress(Exception):
                    ch.transport.send_close(WSCloseCode.OK)
                ch.transport.disconnect()


async def _worker_main(cfg: dict[str, Any]) -> None:
    _raise_nofile()
    w = Worker(cfg)
    reader = asyncio.StreamReader()
    await w.loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def progress() -> None:
        while True:
            await asyncio.sleep(0.5)
            w.emit({"t": "progress", **w.counters(), **w.recent()})

    ticker = asyncio.create_task(progress())
    deadline = time.monotonic() + cfg["connect_timeout"]
    await w.connect_all(list(range(w.first, w.first + w.count)), cfg["connect_timeout"])
    # Ready once every connected charger has its BootNotification answered.
    while w.booted < w.connected and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    # Objects created so far live for the whole run: keep the collector off them.
    gc.collect()
    gc.freeze()
    w.emit({"t": "ready", **w.counters()})
    while True:
        line = (await reader.readline()).strip().decode()
        if not line or line == "quit":
            break
        if line == "go":
            w.go()
        elif line == "measure":
            w.measure()
        elif line == "endmeasure":
            w.end_measure()
        elif line == "stop":
            w.running = False
        elif line == "storm":
            w.start_storm()
        elif line == "report":
            w.emit(w.report())
    ticker.cancel()
    await w.quit()
    await asyncio.sleep(0.2)


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --------------------------------------------------------------------------- #
# Parent: drives the workers, measures, aggregates                            #
# --------------------------------------------------------------------------- #

# File descriptors one worker keeps for itself (pipes, the loop, logging).
_FD_RESERVE = 200
_PORTS_PER_ADDR = 28000


def default_source_addrs(url: str, procs: int) -> list[str]:
    """One 127.0.0.N per worker for a loopback IPv4 target (each its own
    ephemeral port range), else none: the kernel picks the source."""
    host = urlsplit(url).hostname or ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return [""]
    if address.version == 4 and address.is_loopback:
        return [f"127.0.0.{10 + i}" for i in range(procs)]
    return [""]


def plan_procs(cfg: LoadConfig) -> int:
    """How many worker processes: ``cfg.procs`` or enough for the fd limit."""
    if cfg.procs > 0:
        return cfg.procs
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    per_proc = max(1, min(hard - _FD_RESERVE, _PORTS_PER_ADDR) * 9 // 10)
    return max(1, math.ceil(cfg.chargers / per_proc))


def percentiles(hist: list[list[int]], max_us: int) -> dict[str, float]:
    """p50/p90/p99/p99.9/max in milliseconds from a merged histogram."""
    total = sum(c for _, c in hist)
    out: dict[str, float] = {}
    if total == 0:
        return out
    points = {"p50": 0.50, "p90": 0.90, "p99": 0.99, "p99.9": 0.999}
    cum, i = 0, 0
    targets = sorted(points.items(), key=lambda kv: kv[1])
    for bucket, count in hist:
        cum += count
        while i < len(targets) and cum >= targets[i][1] * total:
            out[targets[i][0]] = round(bucket / 1000, 3)
            i += 1
    out["max"] = round(max_us / 1000, 3)
    out["mean"] = round(sum(b * c for b, c in hist) / total / 1000, 3)
    return out


def merge_hists(hists: Iterable[list[list[int]]]) -> list[list[int]]:
    merged: Counter[int] = Counter()
    for h in hists:
        for b, c in h:
            merged[b] += c
    return sorted([b, c] for b, c in merged.items())


class _WorkerProc:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.last: dict[str, Any] = {}
        self.recent: list[list[int]] = []   # latencies since the parent last looked
        self.ready = asyncio.get_running_loop().create_future()
        self.report: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.storm: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        for fut in (self.ready, self.report, self.storm):
            # Not every run awaits every future (no storm, early failure):
            # retrieve the exception so asyncio does not log it as lost.
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def pump(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            msg = orjson.loads(line)
            kind = msg.pop("t")
            self.recent.extend(msg.pop("recent_hist", ()))
            self.last = msg
            fut = {"ready": self.ready, "report": self.report, "storm_done": self.storm}.get(kind)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        for fut in (self.ready, self.report, self.storm):
            if not fut.done():
                fut.set_exception(LoadgenError(
                    f"load generator worker {self.proc.pid} exited early"))

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")


def _watch_samples(watch: dict[str, int]) -> dict[str, TreeSample]:
    return {name: sample_tree(pid) for name, pid in watch.items()}


async def run_load(cfg: LoadConfig, log: Callable[[str], None] | None = None,
                   hold: Callable[[Callable[[], dict[str, int]]], Awaitable[None]] | None = None
                   ) -> dict[str, Any]:
    """Run the load described by ``cfg`` and return the result as a dict.

    Args:
        cfg: the run's configuration.
        log: where progress lines go (default: stderr when ``cfg.progress``).
        hold: idle mode: instead of holding for ``cfg.hold`` seconds, await
            ``hold(counters)`` (``counters()`` sums the workers' latest
            progress: connected, booted, disconnects …); the fleet tests
            scale routers out meanwhile.

    Raises:
        LoadgenError: a bad configuration, or a worker process died.
    """
    cfg.validate()
    if log is None:
        def log(line: str) -> None:
            if cfg.progress:
                print(line, file=sys.stderr, flush=True)
    procs = min(plan_procs(cfg), cfg.chargers)
    addrs = cfg.source_addrs or default_source_addrs(cfg.url, procs)
    baseline = _watch_samples(cfg.watch)
    per, extra = divmod(cfg.chargers, procs)
    workers: list[_WorkerProc] = []
    first = 0
    t_start = time.monotonic()
    for i in range(procs):
        count = per + (1 if i < extra else 0)
        wcfg = {"url": cfg.url, "first": first, "count": count,
                "source_addr": addrs[i % len(addrs)], "mode": cfg.mode, "proto": cfg.proto,
                "reconnect": cfg.reconnect, "id_prefix": cfg.id_prefix,
                "rate": cfg.rate * count / cfg.chargers,
                "connect_concurrency": cfg.connect_concurrency,
                "connect_timeout": cfg.connect_timeout,
                "handshake_timeout": cfg.handshake_timeout,
                "storm_timeout": cfg.storm_timeout, "tick_ms": cfg.tick_ms,
                "password": cfg.password, "tls_ca": cfg.tls_ca,
                "tls_insecure": cfg.tls_insecure, "tls_cert": cfg.tls_cert,
                "tls_key": cfg.tls_key, "heartbeat": cfg.heartbeat,
                "retry_after": cfg.retry_after}
        first += count
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "router.sim.loadgen", "--worker", orjson.dumps(wcfg).decode(),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            # A worker's report line carries its latency histograms: after
            # thousands of reconnects it outgrows asyncio's 64 KiB line limit.
            limit=16 << 20)
        workers.append(_WorkerProc(proc))
    pumps = [asyncio.create_task(w.pump()) for w in workers]
    timeline: list[list[float | None]] = []
    phase = ["connect"]

    def total(key: str) -> int:
        return sum(int(w.last.get(key, 0)) for w in workers)

    async def progress() -> None:
        prev_done, prev_t = 0, time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            done = total("done")
            rate = (done - prev_done) / (now - prev_t)
            prev_done, prev_t = done, now
            recent = merge_hists(w.recent for w in workers)
            for w in workers:
                w.recent = []
            pct = percentiles(recent, recent[-1][0] if recent else 0)
            errors = total("call_errors") + total("handshake_failures") + total("disconnects")
            timeline.append([round(now - t_start, 2), round(rate), total("booted"),
                             pct.get("p50"), pct.get("p99"), errors])
            lat = (f"p50 {pct['p50']:.1f} ms p99 {pct['p99']:.1f} ms" if pct
                   else "p50 - p99 -")
            log(f"[{now - t_start:6.1f}s {phase[0]:>8}] connected {total('connected'):>6}/"
                f"{cfg.chargers} booted {total('booted'):>6} {rate:>9,.0f} msg/s {lat} "
                f"errors {errors} (CALLERROR {total('call_errors')}, handshake "
                f"{total('handshake_failures')}, dropped {total('disconnects')})")

    progress_task = asyncio.create_task(progress())
    result: dict[str, Any] = {"config": {k: v for k, v in asdict(cfg).items() if k != "watch"},
                              "procs": procs, "source_addrs": addrs[:procs]}
    try:
        ready = await asyncio.gather(*(w.ready for w in workers))
        connect_s = time.monotonic() - t_start
        booted = sum(r["booted"] for r in ready)
        result.update(connect_seconds=round(connect_s, 3), booted_at_ready=booted,
                      handshake_rate_per_s=round(booted / connect_s, 1) if connect_s else None)
        gen_pids = tuple(w.proc.pid for w in workers)
        if booted:
            # CPU per connection of the connect phase: TCP accept, HTTP upgrade
            # and (OCPP) the BootNotification round trip. The generator's share
            # includes its interpreter start-up.
            result["connect_cpu_us_per_conn"] = {
                name: round((cpu_of(s.pids) - s.cpu_s) * 1e6 / booted, 1)
                for name, s in baseline.items()}
            result["connect_cpu_us_per_conn"]["loadgen"] = round(
                cpu_of(gen_pids) * 1e6 / booted, 1)
        if cfg.mode in ("closed", "open", "echo"):
            phase[0] = "warmup"
            for w in workers:
                w.send("go")
            await asyncio.sleep(cfg.warmup)
            before = _watch_samples(cfg.watch)
            gen0 = cpu_of(gen_pids)
            busy0 = machine_busy_seconds()
            t0 = time.monotonic()
            for w in workers:
                w.send("measure")
            phase[0] = "measure"
            await asyncio.sleep(cfg.duration)
            for w in workers:
                w.send("endmeasure")
            window = time.monotonic() - t0
            gen1 = cpu_of(gen_pids)
            after = {name: cpu_of(s.pids) for name, s in before.items()}
            busy = machine_busy_seconds() - busy0
            ours = gen1 - gen0 + sum(after[n] - before[n].cpu_s for n in before)
            result["machine_cores_busy"] = {
                "all": round(busy / window, 2), "measured_processes": round(ours / window, 2),
                "other_processes": round(max(0.0, busy - ours) / window, 2)}
            for w in workers:
                w.send("stop")
            result["window_s"] = round(window, 3)
            result["_cpu"] = {"loadgen": gen1 - gen0,
                              **{n: after[n] - before[n].cpu_s for n in before}}
        else:
            phase[0] = "hold"
            if hold is not None:
                keys = ("connected", "booted", "disconnects", "reconnects", "handshakes",
                        "handshake_failures")
                await hold(lambda: {k: total(k) for k in keys})
            else:
                await asyncio.sleep(cfg.hold)
            held = _watch_samples(cfg.watch)
            n = total("booted")
            result["memory"] = {
                name: {
                    "baseline_rss_kib": baseline[name].rss_kib, "rss_kib": s.rss_kib,
                    "baseline_anon_kib": baseline[name].anon_kib, "anon_kib": s.anon_kib,
                    "processes": len(s.pids), "connections": n,
                    "rss_per_conn_kib": round((s.rss_kib - baseline[name].rss_kib) / n, 2)
                    if n else None,
                    "anon_per_conn_kib": round((s.anon_kib - baseline[name].anon_kib) / n, 2)
                    if n else None,
                } for name, s in held.items()}
            result["memory"]["loadgen"] = {"rss_kib": sum(sample_tree(p).rss_kib
                                                          for p in gen_pids)}
            if cfg.storm:
                phase[0] = "storm"
                storm_t0 = time.monotonic()
                storm_cpu0 = {name: cpu_of(s.pids) for name, s in held.items()}
                storm_cpu0["loadgen"] = cpu_of(gen_pids)
                busy0 = machine_busy_seconds()
                for w in workers:
                    w.send("storm")
                try:
                    storms = await asyncio.wait_for(
                        asyncio.gather(*(w.storm for w in workers)), cfg.storm_timeout + 5)
                    result["storm"] = {
                        "dropped": sum(s["dropped"] for s in storms),
                        "rebooted": sum(s["rebooted"] for s in storms),
                        "seconds_to_all_booted": round(max(s["seconds"] for s in storms), 3),
                        "handshake_failures": sum(s["handshake_failures"] for s in storms),
                        "completed": True,
                    }
                except TimeoutError:
                    result["storm"] = {"completed": False, "rebooted": total("booted"),
                                       "seconds_to_all_booted": None,
                                       "timeout_s": cfg.storm_timeout}
                result["storm"]["cpu_s"] = {
                    name: round(cpu_of(held[name].pids) - storm_cpu0[name], 3) for name in held}
                result["storm"]["cpu_s"]["loadgen"] = round(
                    cpu_of(gen_pids) - storm_cpu0["loadgen"], 3)
                wall = time.monotonic() - storm_t0
                result["storm"]["wall_s"] = round(wall, 3)
                spent = sum(result["storm"]["cpu_s"].values())
                busy = machine_busy_seconds() - busy0
                result["machine_cores_busy"] = {
                    "all": round(busy / wall, 2), "measured_processes": round(spent / wall, 2),
                    "other_processes": round(max(0.0, busy - spent) / wall, 2)}
                # With the cores to itself, the storm could not end sooner than
                # the CPU its parts spent divided by the cores.
                result["storm"]["cpu_bound_estimate_s"] = round(spent / (os.cpu_count() or 1), 2)
        phase[0] = "report"
        for w in workers:
            w.send("report")
        reports = await asyncio.wait_for(asyncio.gather(*(w.report for w in workers)), 60)
    finally:
        progress_task.cancel()
        for w in workers:
            with contextlib.suppress(Exception):
                w.send("quit")
        for w in workers:
            try:
                await asyncio.wait_for(w.proc.wait(), 30)
            except TimeoutError:
                w.proc.kill()
                await w.proc.wait()
        for p in pumps:
            p.cancel()
    _aggregate(result, reports, cfg)
    result["timeline"] = timeline
    return result


def _aggregate(result: dict[str, Any], reports: list[dict[str, Any]], cfg: LoadConfig) -> None:
    keys = ("connected", "booted", "boot_accepted", "boot_not_accepted", "handshakes",
            "handshake_failures", "proto_mismatch", "disconnects", "reconnects", "sent", "done",
            "deferred", "unexpected", "call_errors", "backend_calls", "bad_backend_calls",
            "measured")
    result["counters"] = {k: sum(int(r.get(k, 0)) for r in reports) for k in keys}
    kinds: Counter[str] = Counter()
    for r in reports:
        kinds.update(r.get("failure_kinds", {}))
    result["counters"]["failure_kinds"] = dict(kinds)
    closes: Counter[str] = Counter()
    for r in reports:
        closes.update(r.get("close_codes", {}))
    result["counters"]["close_codes"] = dict(closes)
    result["counters"]["sent_away"] = sum(int(r.get("sent_away", 0)) for r in reports)
    result["counters"]["sent_away_twice"] = sum(int(r.get("sent_away_twice", 0))
                                                for r in reports)
    codes: Counter[str] = Counter()
    for r in reports:
        codes.update(r.get("error_codes", {}))
    result["counters"]["callerror_codes"] = dict(codes)
    sent: dict[str, Counter[str]] = {}
    for r in reports:
        for proto, table in r.get("sent_by_action", {}).items():
            sent.setdefault(proto, Counter()).update(table)
    result["sent_by_action"] = {proto: dict(sorted(c.items())) for proto, c in sorted(sent.items())}
    result["chargers"] = cfg.chargers
    hist = merge_hists(r["lat_hist"] for r in reports)
    lat_max = max((int(r["lat_max"]) for r in reports), default=0)
    if "window_s" in result:
        measured = result["counters"]["measured"]
        result["messages"] = measured
        result["msgs_per_s"] = round(measured / result["window_s"], 1)
        result["latency_ms"] = percentiles(hist, lat_max)
        result["latency_hist_us"] = hist
        cpu = result.pop("_cpu")
        result["cpu"] = {
            name: {"cpu_s": round(s, 3),
                   "cores": round(s / result["window_s"], 3),
                   "us_per_msg": round(s * 1e6 / measured, 2) if measured else None}
            for name, s in cpu.items()}
    boot = merge_hists(r["boot_hist"] for r in reports)
    result["boot_latency_ms"] = percentiles(boot, boot[-1][0] if boot else 0)
    hs = merge_hists(r["hs_hist"] for r in reports)
    result["handshake_latency_ms"] = percentiles(hs, hs[-1][0] if hs else 0)
    result["handshake_hist_us"] = hs


def _parse_watch(items: list[str]) -> dict[str, int]:
    out = {}
    for item in items:
        name, _, pid = item.partition("=")
        if not pid.isdigit():
            raise argparse.ArgumentTypeError(f"--watch wants NAME=PID, got {item!r}")
        out[name] = int(pid)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen",
                                description="Simulated OCPP-J chargers over WebSockets.")
    p.add_argument("--url", help="base URL; each charger connects to URL/<identity>")
    p.add_argument("--chargers", type=int, default=200)
    p.add_argument("--mode", choices=MODES, default="closed")
    p.add_argument("--proto", default="ocpp1.6",
                   help="ocpp1.6 | ocpp2.0.1 | ocpp2.1 | mix | none (echo)")
    p.add_argument("--duration", type=float, default=10.0, help="measurement window, s")
    p.add_argument("--warmup", type=float, default=2.0, help="load before the window, s")
    p.add_argument("--rate", type=float, default=0.0, help="open loop: total CALLs per second")
    p.add_argument("--tick-ms", type=float, default=2.0,
                   help="open loop: the pacing tick; CALLs due in one tick leave together")
    p.add_argument("--hold", type=float, default=3.0, help="idle: hold before measuring, s")
    p.add_argument("--storm", action="store_true",
                   help="idle: then drop every connection at once and reconnect")
    p.add_argument("--storm-timeout", type=float, default=60.0)
    p.add_argument("--procs", type=int, default=0, help="worker processes (0: by fd limit)")
    p.add_argument("--source-addr", action="append", default=[], dest="source_addrs",
                   help="source address per worker (repeat); default 127.0.0.10+i for a "
                        "127.x target, else the kernel's choice")
    p.add_argument("--connect-concurrency", type=int, default=256,
                   help="handshakes in flight per worker")
    p.add_argument("--connect-timeout", type=float, default=120.0)
    p.add_argument("--handshake-timeout", type=float, default=30.0)
    p.add_argument("--id-prefix", default="CP")
    p.add_argument("--no-reconnect", dest="reconnect", action="store_false")
    p.add_argument("--watch", action="append", default=[],
                   help="NAME=PID: measure CPU/memory of this process tree")
    p.add_argument("--json", help="write the result here (default: stdout)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        uvloop.run(_worker_main(orjson.loads(args.worker)))
        return 0
    if not args.url:
        print("bench.loadgen: --url is required", file=sys.stderr)
        return 2
    cfg = LoadConfig(
        url=args.url, chargers=args.chargers, mode=args.mode, proto=args.proto,
        duration=args.duration, warmup=args.warmup, rate=args.rate, tick_ms=args.tick_ms,
        hold=args.hold,
        storm=args.storm, storm_timeout=args.storm_timeout, procs=args.procs,
        source_addrs=args.source_addrs, connect_concurrency=args.connect_concurrency,
        connect_timeout=args.connect_timeout, handshake_timeout=args.handshake_timeout,
        id_prefix=args.id_prefix, watch=_parse_watch(args.watch), progress=not args.quiet,
        reconnect=args.reconnect)
    try:
        result = uvloop.run(run_load(cfg))
    except LoadgenError as exc:
        print(f"bench.loadgen: {exc}", file=sys.stderr)
        return 1
    out = orjson.dumps(result, option=orjson.OPT_INDENT_2)
    if args.json:
        with open(args.json, "wb") as f:
            f.write(out)
    else:
        sys.stdout.buffer.write(out + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
