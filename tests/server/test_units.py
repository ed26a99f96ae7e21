"""Pure functions of the server layer (no sockets)."""

from __future__ import annotations

import base64

import pytest

from router.metrics import Histogram
from router.server.connection import basic_credentials, cn_from_header, parse_identity
from router.server.supervisor import merge_metrics
from tests.resp import stream_entries


@pytest.mark.parametrize(("path", "expected"), [
    ("/ocpp/CP-1", (0, "CP-1")),
    ("/ocpp/CP-1?x=1", (0, "CP-1")),
    ("/ocpp/a*b_c=d+e|f@g.h", (0, "a*b_c=d+e|f@g.h")),
    ("/ocpp/CP%2A1", (0, "CP*1")),
    ("/ocpp/CP%zz", (400, None)),
    ("/ocpp/CP%2", (400, None)),
    ("/ocpp/CP:1", (404, None)),
    ("/ocpp/CP%3A1", (404, None)),
    ("/ocpp/" + "x" * 49, (404, None)),
    ("/ocpp/", (404, None)),
    ("/ocp/CP", (404, None)),
    ("/ocpp/%C3%A9", (404, None)),
    # forgiving: empty segments collapsed, one trailing slash after the identity
    ("/ocpp//CP-1", (0, "CP-1")),
    ("//ocpp///CP-1?a=/b", (0, "CP-1")),
    ("/ocpp/CP-1/", (0, "CP-1")),
    ("/ocpp//CP-1//", (0, "CP-1")),
    ("/ocpp//", (404, None)),
    ("/ocpp/CP-1/x", (404, None)),
    ("/ocpp/CP-1%2F", (404, None)),
])
def test_parse_identity(path: str, expected: tuple[int, str | None]) -> None:
    assert parse_identity(path, "/ocpp/") == expected


def b64(text: bytes) -> str:
    return base64.b64encode(text).decode()


@pytest.mark.parametrize(("header", "expected"), [
    (f"Basic {b64(b'CP-1:secret')}", ("CP-1", b"secret")),
    (f"basic {b64(b'CP-1:pa:ss')}", ("CP-1", b"pa:ss")),
    (f"Basic {b64(b'CP-1')}", None),
    ("Basic !!!", None),
    ("Bearer abc", None),
    (None, None),
    (f"Basic {b64(bytes([0xff, 0x3a, 0x61]))}", None),
])
def test_basic_credentials(header: str | None, expected: object) -> None:
    assert basic_credentials(header) == expected


@pytest.mark.parametrize(("value", "cn"), [
    ("CN=CP-1,O=ACME", "CP-1"),
    ("O=ACME, CN=CP-1", "CP-1"),
    ("/C=DE/O=ACME/CN=CP-1", "CP-1"),
    ("CN%3DCP-1%2CO%3DACME", "CP-1"),
    ("O=ACME", None),
])
def test_cn_from_header(value: str, cn: str | None) -> None:
    assert cn_from_header(value) == cn


def test_merge_metrics_sums_workers() -> None:
    a = ("# HELP x_total things\n# TYPE x_total counter\nx_total{k=\"a\"} 2.0\n"
         "# HELP g a gauge\n# TYPE g gauge\ng 1.0\n")
    b = ("# HELP x_total things\n# TYPE x_total counter\nx_total{k=\"a\"} 3.0\n"
         "x_total{k=\"b\"} 1.0\n# HELP g a gauge\n# TYPE g gauge\ng 4.0\n")
    merged = merge_metrics([a, b])
    assert 'x_total{k="a"} 5' in merged
    assert 'x_total{k="b"} 1' in merged
    assert "\ng 5\n" in merged


def test_dispatch_isolates_a_failing_entry() -> None:
    from router.server._charger import dispatch_out_entries

    seen: list[bytes] = []
    failed: list[tuple[bytes, str]] = []

    def slow(ref: bytes, fields: dict[bytes, bytes]) -> None:
        if fields.get(b"boom"):
            raise ValueError("bad entry")
        seen.append(ref)

    entries = stream_entries([
        (b"1-0", {b"kind": b"call"}), (b"2-0", {b"kind": b"call", b"boom": b"1"}),
        (b"3-0", {b"kind": b"result", b"cs": b"nobody", b"conn": b"x", b"id": b"1",
                  b"payload": b"{}"})])
    dispatch_out_entries(entries, {}, slow,
                         lambda ref, fields, exc: failed.append((ref, str(exc))))
    assert seen == [b"1-0", b"3-0"]        # a result for an unknown charger takes the slow path
    assert failed == [(b"2-0", "bad entry")]


def test_histogram_buckets_match_prometheus_le() -> None:
    # A value lands in the first bucket whose bound is >= the value (Prometheus
    # "le"); above every bound it counts only in +Inf.
    h = Histogram((0.001, 0.01, 0.1))
    for v in (0.0, 0.001, 0.0011, 0.01, 0.05, 0.1, 7.0, 7.0):
        h.observe(v)
    assert h.counts == [2, 2, 2, 2]
    assert h.n == 8 and h.total == pytest.approx(14.1621)
    fam = h.family("x", "doc")
    buckets = {s.labels["le"]: s.value for s in fam.samples if s.name == "x_bucket"}
    assert buckets == {"0.001": 2, "0.01": 4, "0.1": 6, "+Inf": 8}


@pytest.mark.parametrize("bounds", [(2.0, 1.0), (1.0, 1.0), tuple(float(i) for i in range(33))])
def test_histogram_rejects_bad_bounds(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        Histogram(bounds)


def test_every_metric_is_documented() -> None:
    # docs/deployment.md lists every family /metrics exposes (SREs alert on
    # these names); a new metric without a row fails here.
    from pathlib import Path

    from router.metrics import RouterMetrics
    from router.server.wsconn import stats as ws_stats

    doc = (Path(__file__).parents[2] / "docs" / "deployment.md").read_text()
    m = RouterMetrics()
    m.gauges = lambda: {"ws": ws_stats(), "connections": {"ocpp1.6": 1}}
    names = [fam.name for fam in m.collector().collect()]
    assert len(names) > 30
    missing = []
    for name in names:
        short = "_" + name.split("_ws_", 1)[1] if "_ws_" in name else None
        if f"`{name}`" not in doc and (short is None or f"`{short}`" not in doc):
            missing.append(name)
    assert missing == []
