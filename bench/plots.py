"""PNG plots of the benchmark results (matplotlib, no display needed).

    python -m bench.plots [bench/results]

Reads ``<dir>/{e2e,idle,storm,echo}.json`` (whichever exist) and writes next
to them: throughput and CPU per message by system, the latency CDF, memory per
connection, the reconnect storm.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on a build machine

import matplotlib.pyplot as plt
import orjson

# One colour per CPU part across every plot.
COLOURS = {"router": "#1f77b4", "server": "#1f77b4", "redis": "#d62728",
           "backend": "#2ca02c", "loadgen": "#7f7f7f"}


def _load(results: Path, scenario: str) -> dict[str, Any] | None:
    path = results / f"{scenario}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = orjson.loads(path.read_bytes())
    return data


def _available(data: dict[str, Any], key: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in data.get("systems", {}).items()
            if r.get("available") and key in r}


def _short(name: str) -> str:
    return (name.replace(" (websockets + ocpp)", "\n(websockets+ocpp)").replace(" + ", "\n+ ")
            .replace(" (", "\n(").replace(" @ ", "\n@ "))


def _bars(ax: Any, names: list[str], values: list[float], fmt: str) -> None:
    bars = ax.bar(range(len(names)), values, color="#1f77b4")
    ax.set_xticks(range(len(names)), [_short(n) for n in names], fontsize=8)
    for bar, v in zip(bars, values, strict=True):
        ax.annotate(fmt.format(v), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)


def _footer(fig: Any, data: dict[str, Any]) -> None:
    m = data.get("machine", {})
    fig.text(0.01, 0.005, f"{m.get('cpus')} x {m.get('cpu_model')}, Python {m.get('python')}, "
             f"commit {m.get('git_commit')}, {data.get('finished')}", fontsize=6, color="#555")


def plot_throughput_cpu(data: dict[str, Any], out: Path, title: str) -> Path | None:
    systems = _available(data, "msgs_per_s")
    systems = {n: r for n, r in systems.items() if r["config"]["mode"] != "open"}
    if not systems:
        return None
    from bench.report import cpu_bound_rate

    names = list(systems)
    cores = int(data.get("machine", {}).get("cpus") or 2)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(13, 10))
    xs = range(len(names))
    measured = [systems[n]["msgs_per_s"] for n in names]
    bound = [cpu_bound_rate(systems[n], cores) or 0.0 for n in names]
    ax1.bar([x - 0.2 for x in xs], measured, width=0.4, color="#1f77b4", label="measured")
    ax1.bar([x + 0.2 for x in xs], bound, width=0.4, color="#aec7e8", hatch="//",
            label="CPU-bound (from µs/msg)")
    for x, v in zip(xs, measured, strict=True):
        ax1.annotate(f"{v:,.0f}", (x - 0.2, v), ha="center", va="bottom", fontsize=7)
    for x, v in zip(xs, bound, strict=True):
        ax1.annotate(f"{v:,.0f}", (x + 0.2, v), ha="center", va="bottom", fontsize=7)
    ax1.set_xticks(list(xs), [_short(n) for n in names], fontsize=8)
    ax1.set_ylabel("messages per second (CALL + CALLRESULT)")
    ax1.set_title(f"{title}: throughput")
    ax1.legend(fontsize=8)
    # Grouped, not stacked: the parts differ by two orders of magnitude, so
    # the axis is logarithmic, and stacking on a log axis would mislead.
    # The router and a single-process server fill the same slot ("server").
    def us(n: str, part: str) -> float:
        cpu = systems[n]["cpu"]
        if part == "server":
            return float((cpu.get("server") or cpu.get("router") or {}).get("us_per_msg") or 0)
        return float(cpu.get(part, {}).get("us_per_msg") or 0)

    parts = [p for p in ("server", "redis", "backend", "loadgen")
             if any(us(n, p) for n in names)]
    width = 0.8 / max(1, len(parts))
    for k, part in enumerate(parts):
        vals = [us(n, part) for n in names]
        xs = [i - 0.4 + width * (k + 0.5) for i in range(len(names))]
        ax2.bar(xs, vals, width=width, color=COLOURS[part],
                label="server / router" if part == "server" else part)
        for x, v in zip(xs, vals, strict=True):
            if v:
                ax2.annotate(f"{v:.0f}" if v >= 10 else f"{v:.1f}", (x, v), ha="center",
                             va="bottom", fontsize=7)
    ax2.set_xticks(range(len(names)), [_short(n) for n in names], fontsize=8)
    ax2.set_yscale("log")
    ax2.set_ylim(bottom=1)
    ax2.set_ylabel("CPU µs per message (/proc utime+stime)")
    ax2.set_title(f"{title}: CPU per message by process")
    ax2.legend(fontsize=8)
    _footer(fig, data)
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_latency_cdf(data: dict[str, Any], out: Path) -> Path | None:
    systems = _available(data, "latency_hist_us")
    if not systems:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for name, r in systems.items():
        hist = r["latency_hist_us"]
        total = sum(c for _, c in hist)
        if not total:
            continue
        xs, ys, cum = [], [], 0
        for bucket, count in hist:
            cum += count
            xs.append(max(bucket, 1) / 1000)
            ys.append(cum / total)
        ax.step(xs, ys, where="post",
                label=f"{name} ({r['msgs_per_s']:,.0f} msg/s)")
    ax.set_xscale("log")
    ax.set_xlabel("latency, ms (CALL sent -> CALLRESULT received, at the charger)")
    ax.set_ylabel("fraction of messages")
    ax.set_title("End-to-end latency CDF")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    _footer(fig, data)
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_memory(datasets: list[dict[str, Any]], out: Path) -> Path | None:
    names, values, counts = [], [], []
    for data in datasets:
        for name, r in _available(data, "memory").items():
            m = r["memory"].get(r.get("server_part", "server"), {})
            if m.get("rss_per_conn_kib") is None:
                continue
            names.append(name)
            values.append(m["rss_per_conn_kib"])
            counts.append(m["connections"])
    if not names:
        return None
    fig, ax = plt.subplots(figsize=(10, 4.8))
    _bars(ax, [f"{n}\n{c:,} conns" for n, c in zip(names, counts, strict=True)], values,
          "{:.1f}")
    ax.axhline(4.0, color="#d62728", linestyle="--", linewidth=1)
    ax.annotate("goal: 4 KiB", (len(names) - 0.5, 4.0), color="#d62728", fontsize=8,
                ha="right", va="bottom")
    ax.set_ylabel("user-space RSS growth per connection, KiB")
    ax.set_title("Memory per idle connection")
    _footer(fig, datasets[0])
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_storm(data: dict[str, Any], out: Path) -> Path | None:
    systems = {n: r for n, r in _available(data, "storm").items()
               if r["storm"].get("seconds_to_all_booted") is not None}
    if not systems:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.8))
    names = list(systems)
    secs = [systems[n]["storm"]["seconds_to_all_booted"] for n in names]
    _bars(ax, [f"{n}\n{systems[n]['storm']['dropped']:,} chargers, "
               f"{systems[n]['storm']['rebooted'] / max(s, 1e-9):,.0f}/s"
               for n, s in zip(names, secs, strict=True)], secs, "{:.1f} s")
    ax.axhline(10.0, color="#d62728", linestyle="--", linewidth=1)
    ax.set_ylabel("seconds until every charger is booted again")
    ax.set_title("Reconnect storm")
    _footer(fig, data)
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def draw_all(results: Path) -> list[Path]:
    """Draw every plot whose data exists; returns the files written."""
    written: list[Path | None] = []
    e2e, idle, storm, echo = (_load(results, s) for s in ("e2e", "idle", "storm", "echo"))
    if e2e:
        written.append(plot_throughput_cpu(e2e, results / "e2e_throughput_cpu.png",
                                           "End to end"))
        written.append(plot_latency_cdf(e2e, results / "e2e_latency_cdf.png"))
    if echo:
        written.append(plot_throughput_cpu(echo, results / "echo_throughput_cpu.png",
                                           "Codec (echo)"))
    mem = [d for d in (idle, echo) if d]
    if mem:
        written.append(plot_memory(mem, results / "memory_per_connection.png"))
    if storm:
        written.append(plot_storm(storm, results / "storm.png"))
    return [p for p in written if p is not None]


def main() -> int:
    results = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results"
    for path in draw_all(results):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
