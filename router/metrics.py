"""Prometheus metrics, counted as plain integers on the hot path.

The router counts into dicts and small fixed-bucket histograms (a dict update
or a ``bisect`` per event, no locks, no label lookups) and turns them into
Prometheus metric families only when ``/metrics`` is scraped, through a custom
collector (the same idea as uvloop's ``readonly uint64_t`` debug counters).
No metric has a per-charger label: cardinality stays bounded by the OCPP
action list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from router import _metrics

NS = "ocpp_router"

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0, 30.0)
SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


class Histogram(_metrics.Histogram):
    """Fixed buckets, cumulative on export; counted in C (``router._metrics``),
    so the compiled hot paths observe without a Python call."""

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        buckets: list[tuple[str, float]] = []
        acc = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            acc += count
            buckets.append((repr(float(bound)), acc))
        buckets.append(("+Inf", self.n))
        return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=self.total)


class RouterMetrics:
    """Every counter of one router process."""

    def __init__(self) -> None:
        self.handshakes: dict[str, int] = {}
        # (direction, kind, action) -> count; direction "in" (from chargers) / "out"
        self.messages: dict[tuple[str, str, str], int] = {}
        # The two counts of every routed CALL, kept by action alone (a str
        # key: no tuple per message); folded into ``messages`` at scrape time.
        self.calls_in: dict[str, int] = {}       # ("in", "call", action)
        self.results_out: dict[str, int] = {}    # ("out", "result", action)
        self.validation_errors: dict[str, int] = {}
        self.backend_failed: dict[str, int] = {}
        self.redis_errors: dict[str, int] = {}
        # Registry entries written back after Redis lost them, by what noticed
        # it ("reconnect", "node_key_lost", "refresh", "start").
        self.registry_restored: dict[str, int] = {}
        self.edge_answers: dict[str, int] = {}
        self.ignored: dict[str, int] = {}
        # Fleet behaviour (issue 13): admission refusals by (status, reason),
        # shed connections by state, rate-limited CALLs by action taken,
        # durable commands by outcome.
        self.refused: dict[tuple[str, str], int] = {}
        self.shed: dict[str, int] = {}
        self.rate_limited: dict[str, int] = {}
        self.commands: dict[str, int] = {}
        # validation profiles: (rule, check, action) -> messages let through;
        # outcome ("ok" / "failed") -> reloads
        self.relaxed: dict[tuple[str, str, str], int] = {}
        self.profile_reloads: dict[str, int] = {}
        self.publish_latency = Histogram(LATENCY_BUCKETS)
        self.publish_batch = Histogram(SIZE_BUCKETS)
        self.reply_latency = Histogram(LATENCY_BUCKETS)
        # OCPP-S (docs/soap.md): requests by (version, ok|fault), faults sent
        # by subcode, requests refused with a bare HTTP status, backend CALLs
        # POSTed to SOAP chargers by outcome.
        self.soap_requests: dict[tuple[str, str], int] = {}
        self.soap_faults: dict[str, int] = {}
        self.soap_http_errors: dict[str, int] = {}
        self.soap_calls: dict[str, int] = {}
        # Read at scrape time: set by the node.
        self.gauges: Callable[[], dict[str, Any]] = dict

    @staticmethod
    def inc(table: dict[Any, int], key: Any, n: int = 1) -> None:
        table[key] = table.get(key, 0) + n

    def message_counts(self) -> dict[tuple[str, str, str], int]:
        """Every message count by (direction, kind, action)."""
        table = dict(self.messages)
        for (direction, kind), counts in ((("in", "call"), self.calls_in),
                                          (("out", "result"), self.results_out)):
            for action, n in counts.items():
                key = (direction, kind, action)
                table[key] = table.get(key, 0) + n
        return table

    def collector(self) -> RouterCollector:
        return RouterCollector(self)


def _counter(name: str, doc: str, labels: list[str],
             table: dict[Any, int]) -> CounterMetricFamily:
    fam = CounterMetricFamily(f"{NS}_{name}", doc, labels=labels)
    for key, value in sorted(table.items()):
        values = list(key) if isinstance(key, tuple) else [key]
        fam.add_metric([str(v) for v in values], value)
    return fam


class RouterCollector(Collector):
    """Turns :class:`RouterMetrics` into metric families at scrape time."""

    def __init__(self, metrics: RouterMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.m
        yield _counter("handshakes", "WebSocket handshakes by outcome", ["outcome"], m.handshakes)
        yield _counter("messages", "OCPP-J messages by direction (in: from chargers), kind and "
                       "action", ["direction", "kind", "action"], m.message_counts())
        yield _counter("validation_errors", "charger messages answered with a CALLERROR by the "
                       "router, by error code", ["code"], m.validation_errors)
        yield _counter("backend_failed", "backend messages that ended as a failed entry, by code",
                       ["code"], m.backend_failed)
        yield _counter("redis_errors", "Redis errors by operation", ["op"], m.redis_errors)
        yield _counter("registry_restored", "registry entries of this node written back after "
                       "Redis lost them, by what noticed it", ["trigger"], m.registry_restored)
        yield _counter("edge_answers", "charger CALLs answered by the router itself, by action",
                       ["action"], m.edge_answers)
        yield _counter("ignored_messages", "charger messages ignored (unknown message type, "
                       "answers to nothing)", ["reason"], m.ignored)
        yield _counter("admission_refusals", "handshakes refused by admission control, by HTTP "
                       "status (503, 429) and reason", ["status", "reason"], m.refused)
        yield _counter("rebalance_shed", "connections closed to rebalance the fleet, by what "
                       "they had in flight (idle, busy)", ["state"], m.shed)
        yield _counter("rate_limited_messages", "charger CALLs over --message-rate, by the "
                       "action taken (callerror, close)", ["action"], m.rate_limited)
        yield _counter("queued_commands", "backend CALLs from the per-charger command queues, by "
                       "outcome", ["outcome"], m.commands)
        yield _counter("relaxed_messages", "charger messages accepted only thanks to a "
                       "validation profile, by rule, relaxed check and action",
                       ["rule", "check", "action"], m.relaxed)
        yield _counter("profile_reloads", "validation profile reloads by outcome (failed: the "
                       "previous rules stay)", ["outcome"], m.profile_reloads)
        yield m.publish_latency.family(f"{NS}_publish_latency_seconds",
                                       "time from XADD batch write to Redis reply")
        yield m.publish_batch.family(f"{NS}_publish_batch_size", "XADDs per write to Redis")
        yield m.reply_latency.family(f"{NS}_backend_reply_latency_seconds",
                                     "time from a charger CALL to the backend's reply")
        yield _counter("soap_requests", "OCPP-S requests from chargers by OCPP version and "
                       "outcome (ok, fault)", ["version", "outcome"], m.soap_requests)
        yield _counter("soap_faults", "SOAP faults sent to chargers, by subcode", ["subcode"],
                       m.soap_faults)
        yield _counter("soap_http_errors", "OCPP-S requests refused with an HTTP status and no "
                       "SOAP body, by status", ["status"], m.soap_http_errors)
        yield _counter("soap_calls", "backend CALLs POSTed to SOAP chargers, by outcome "
                       "(result, error, failed)", ["outcome"], m.soap_calls)
        gauges = m.gauges()
        conns = GaugeMetricFamily(f"{NS}_connections", "open charger connections by protocol",
                                  labels=["protocol"])
        for proto, n in sorted(gauges.get("connections", {}).items()):
            conns.add_metric([proto], n)
        yield conns
        soap = GaugeMetricFamily(f"{NS}_soap_sessions", "SOAP chargers heard from recently "
                                 "(sessions on this node), by protocol", labels=["protocol"])
        for proto, n in sorted(gauges.get("soap_sessions", {}).items()):
            soap.add_metric([proto], n)
        yield soap
        for name, doc in (
            ("handshakes_in_progress", "handshakes not yet finished"),
            ("backend_calls_queued", "backend CALLs queued or in flight to chargers"),
            ("charger_calls_pending", "charger CALLs waiting for the backend's reply"),
            ("publish_pending", "XADDs buffered or written and not yet acknowledged by Redis"),
            ("draining", "1 while the process drains after SIGTERM"),
            ("redis_connected", "1 while the publishing connection to Redis is up"),
            ("reading_paused", "1 while reading from chargers is paused (publish backpressure)"),
            ("fleet_nodes", "live, ready nodes in the last rebalancing check (this one included)"),
            ("fleet_mean_connections", "mean connections per live, ready node in that check"),
            ("rebalance_surplus", "connections this node still means to shed"),
        ):
            yield GaugeMetricFamily(f"{NS}_{name}", doc, value=float(gauges.get(name, 0)))
        for name, doc in (
            ("out_reads", "XREAD replies read from this node's out stream (entries per read: "
                          "out_entries / out_reads)"),
            ("out_entries", "entries read from this node's out stream"),
            # Redis failover ride-through and --durability (issue 12)
            ("publish_held", "XADD batches held for want of a Redis connection (restart, "
                             "failover) instead of failing"),
            ("publish_resent", "held XADD batches written again on a new connection"),
            ("publish_expired", "XADDs failed because no Redis connection came back within "
                                "--publish-timeout"),
            ("publish_not_replicated", "XADD batches no replica confirmed within "
                                       "--publish-timeout (--durability replicated)"),
        ):
            yield CounterMetricFamily(f"{NS}_{name}", doc, value=float(gauges.get(name, 0)))
        ws = gauges.get("ws", {})
        for key, value in sorted(ws.items()):
            if key == "connections_open":
                yield GaugeMetricFamily(f"{NS}_ws_connections_open",
                                        "TCP connections held by the WebSocket layer",
                                        value=float(value))
            elif key == "errors_by_close_code":
                fam = CounterMetricFamily(f"{NS}_ws_protocol_errors",
                                          "connections closed for a protocol error, by close code",
                                          labels=["code"])
                for code, n in sorted(value.items()):
                    fam.add_metric([str(code)], n)
                yield fam
            elif isinstance(value, int | float):
                yield CounterMetricFamily(f"{NS}_ws_{key.removesuffix('_total')}",
                                          f"WebSocket layer: {key.replace('_', ' ')}",
                                          value=value)
