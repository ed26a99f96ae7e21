"""Prometheus metrics of a backend process (``BackendApp``).

A backend team runs many consumer processes in one group; each exports what
it did, labelled with its group and consumer name, so a dashboard can tell a
consumer that fails or dead-letters from one that idles. The counters are the
app's own (:attr:`BackendApp.stats`, plain integers the data path increments)
read at scrape time by a collector: nothing is added per message. Consumer
*lag* (entries not yet read by the group, entries read but not acknowledged)
is Redis's to tell (``XINFO GROUPS``: ``lag`` and ``pending`` per shard), not
one process's: docs/backend.md ("Observability") shows how to scale on it.

    from router.backend.metrics import serve_metrics
    stop = serve_metrics(app, port=9101)   # GET /metrics; stop() to close
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from router.backend.app import BackendApp

#: ``BackendApp.stats`` key -> the ``outcome`` label of ocpp_backend_entries_total.
OUTCOMES = {
    "handled": "handled",          # acknowledged after its answer (if any) was written
    "failed": "failed",            # handler raised or its answer was refused: stays pending
    "claimed": "claimed",          # taken over from a consumer that went idle
    "dead": "dead_lettered",       # delivered max_deliveries times: moved to the dead stream
    "duplicates": "duplicate",     # dropped by the Deduplicator
}


class BackendCollector(Collector):
    """Reads one app's counters and in-flight figures at scrape time."""

    def __init__(self, app: BackendApp) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        app = self.app
        labels = ["group", "consumer"]
        values = [app.group, app.consumer]
        entries = CounterMetricFamily(
            "ocpp_backend_entries", "Inbound entries this consumer finished, by outcome",
            labels=[*labels, "outcome"])
        for key, outcome in OUTCOMES.items():
            entries.add_metric([*values, outcome], app.stats[key])
        yield entries
        sweeps = CounterMetricFamily(
            "ocpp_backend_claim_sweeps", "Sweeps for entries idle longer than claim_idle",
            labels=labels)
        sweeps.add_metric(values, app.stats["sweeps"])
        yield sweeps
        held = GaugeMetricFamily(
            "ocpp_backend_in_flight",
            "Entries read and not yet acknowledged (bounded by max_in_flight)", labels=labels)
        held.add_metric(values, app.in_flight())
        yield held
        limit = GaugeMetricFamily("ocpp_backend_max_in_flight", "The max_in_flight bound",
                                  labels=labels)
        limit.add_metric(values, app.max_in_flight)
        yield limit
        running = GaugeMetricFamily(
            "ocpp_backend_async_handlers",
            "async def handlers running or waiting for a slot (bounded by concurrency)",
            labels=labels)
        running.add_metric(values, app.async_handlers())
        yield running


def serve_metrics(app: BackendApp, port: int, addr: str = "0.0.0.0") -> Callable[[], None]:
    """Serve ``app``'s metrics on ``http://addr:port/metrics`` from a thread.

    Returns a function that closes the server. Raises :class:`OSError` when
    the port cannot be bound.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BackendCollector(app))
    server, thread = start_http_server(port, addr, registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop
