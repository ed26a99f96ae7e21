"""Markdown tables of the benchmark results, and the generated part of
``bench/RESULTS.md``.

    python -m bench.report [bench/results] [--write bench/RESULTS.md]

Only the block between ``<!-- bench:generated:begin -->`` and
``<!-- bench:generated:end -->`` is rewritten; every other section of
RESULTS.md (method notes, the OCPP-J engineer's "Validation" section) is kept.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import orjson

from bench.run import (
    OCPP_LIB,
    OURS_ECHO,
    PICOWS,
    PICOWS_ECHO,
    ROUTER_FAST,
    WEBSOCKETS_ECHO,
)

BEGIN = "<!-- bench:generated:begin -->"
END = "<!-- bench:generated:end -->"
HALF = ROUTER_FAST + " @ 50% load"


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _load(results: Path, scenario: str) -> dict[str, Any]:
    path = results / f"{scenario}.json"
    if not path.exists():
        return {}
    data: dict[str, Any] = orjson.loads(path.read_bytes())
    return data


def _sys(data: dict[str, Any], name: str) -> dict[str, Any]:
    r: dict[str, Any] = _get(data, "systems", name) or {}
    return r


def _num(v: Any, fmt: str = "{:,.0f}") -> str:
    return "—" if v is None else fmt.format(v)


def _why(r: dict[str, Any]) -> str:
    if not r:
        return "not run"
    reason = str(r.get("reason", "")).splitlines()
    return "not available" + (f" ({reason[-1][:120]})" if reason else "")


def _verdict(ok: bool | None) -> str:
    return {True: "**met**", False: "**not met**", None: "not measured"}[ok]


# --------------------------------------------------------------------------- #
# Derived figures                                                             #
# --------------------------------------------------------------------------- #

def ceiling(r: dict[str, Any], cpus: int) -> dict[str, float] | None:
    """The throughput the machine could reach if the CPU were the only limit:
    ``cpus x 1e6 µs/s`` divided by the CPU all parts spend per message."""
    cpu = r.get("cpu") or {}
    parts = {p: _get(cpu, p, "us_per_msg") for p in ("router", "redis", "backend", "loadgen")}
    if any(v is None for v in parts.values()):
        return None
    total = sum(parts.values())
    no_gen = total - parts["loadgen"]
    return {"total_us": total, "ceiling": cpus * 1e6 / total,
            "fraction": r["msgs_per_s"] / (cpus * 1e6 / total),
            "ceiling_without_loadgen": cpus * 1e6 / no_gen if no_gen else 0.0}


def cpu_bound_rate(r: dict[str, Any], cores: int) -> float | None:
    """Throughput the CPU allows, a figure that does not drift with the other
    jobs on the machine: all measured parts share ``cores``, and a part with
    P busy processes (a single-threaded server, Redis) can use at most P cores.
    ``min(cores x 1e6 / Σ µs, min over parts of P x 1e6 / µs)``."""
    cpu = r.get("cpu") or {}
    par = r.get("parallelism") or {}
    us = {p: v["us_per_msg"] for p, v in cpu.items() if v.get("us_per_msg")}
    if not us:
        return None
    limit = cores * 1e6 / sum(us.values())
    for part, v in us.items():
        limit = min(limit, par.get(part, 1) * 1e6 / v)
    return limit


def goals(results: Path) -> list[tuple[str, str, str, str, str]]:
    """(goal, target, measured, anchors, verdict) rows."""
    e2e, idle, storm, echo = (_load(results, s) for s in ("e2e", "idle", "storm", "echo"))
    cpus = int(_get(e2e, "machine", "cpus") or 2)
    ours, pic, lib = _sys(e2e, ROUTER_FAST), _sys(e2e, PICOWS), _sys(e2e, OCPP_LIB)
    rows = []

    l_cpu = _get(lib, "cpu", "server", "us_per_msg")
    rs = e2e.get("rounds_summary") or {}
    if rs.get("cpu_ratio"):
        # The medians of the alternating rounds (bench.run.paired_rounds).
        r_cpu, p_cpu, ratio = rs["router"]["us_per_msg"], rs["picows"]["us_per_msg"], \
            rs["cpu_ratio"]
        per = rs.get("cpu_ratio_per_round") or [ratio]
        measured = (f"{r_cpu:.1f} µs = {ratio:.2f}x (median of {rs['rounds']} alternating "
                    f"rounds; rounds {min(per):.2f} to {max(per):.2f}x)")
        if rs.get("cpu_ratio_matched"):
            measured += (f"; at the router's rate the responder spends "
                         f"{rs['picows_matched']['us_per_msg']:.1f} µs = "
                         f"{rs['cpu_ratio_matched']:.2f}x")
    else:
        r_cpu = _get(ours, "cpu", "router", "us_per_msg")
        p_cpu = _get(pic, "cpu", "server", "us_per_msg")
        ratio = r_cpu / p_cpu if r_cpu and p_cpu else None
        measured = (f"{_num(r_cpu, '{:.1f}')} µs = {_num(ratio, '{:.2f}')}x" if r_cpu
                    else _why(ours))
    rows.append(("Router CPU per message (CALL in, validated, published, reply consumed, "
                 "CALLRESULT out)", "≤ 1.3x bare picows responder (closed loop, each at "
                 "its maximum)", measured,
                 f"picows {_num(p_cpu, '{:.1f}')} µs; ocpp-lib {_num(l_cpu, '{:.0f}')} µs",
                 _verdict(None if ratio is None else ratio <= 1.3)))

    r_tp, l_tp, p_tp = ours.get("msgs_per_s"), lib.get("msgs_per_s"), pic.get("msgs_per_s")
    rates = [x["router"]["msgs_per_s"] for x in e2e.get("rounds") or []
             if x.get("router", {}).get("available")]
    rates_note = ""
    if r_tp and rates:
        # The main series' closed loop and the rounds': the verdict is their median.
        rates.append(r_tp)
        r_tp = statistics.median(rates)
        rates_note = (f" (median of {len(rates)} measurements, {min(rates):,.0f} to "
                      f"{max(rates):,.0f})")
    tratio = r_tp / l_tp if r_tp and l_tp else None
    r_cb, l_cb, p_cb = (cpu_bound_rate(x, cpus) for x in (ours, lib, pic))
    cbratio = r_cb / l_cb if r_cb and l_cb else None
    verdict = _verdict(None if tratio is None else tratio >= 12)
    if cbratio is not None:
        verdict += f" (CPU-bound: {_verdict(cbratio >= 12)})"
    rows.append(("End-to-end throughput through Redis and a backend (200 chargers, closed "
                 "loop)", "≥ 12x ocpp-lib",
                 f"{_num(r_tp)} msg/s = {_num(tratio, '{:.1f}')}x{rates_note}; CPU-bound "
                 f"{_num(r_cb)} msg/s = {_num(cbratio, '{:.1f}')}x" if r_tp else _why(ours),
                 f"ocpp-lib {_num(l_tp)} msg/s (CPU-bound {_num(l_cb)}); picows {_num(p_tp)} "
                 f"msg/s (CPU-bound {_num(p_cb)})", verdict))

    c = ceiling(ours, cpus) if r_tp else None
    rows.append(("How close to the CPU ceiling (all parts share the cores)",
                 "report", f"{_num(c and c['fraction'] * 100, '{:.0f}')} % of "
                 f"{_num(c and c['ceiling'])} msg/s" if c else _why(ours),
                 f"{_num(c and c['total_us'], '{:.1f}')} µs/msg over router+redis+backend+"
                 "generator" if c else "—", "reported" if c else "not measured"))

    half = _sys(e2e, HALF)
    p99 = _get(half, "latency_ms", "p99")
    measured = (f"{_num(p99, '{:.2f}')} ms at {_num(half.get('msgs_per_s'))} msg/s" if p99
                is not None else _why(half))
    per_round = rs.get("p99_half_per_round") or []
    if per_round:
        # The main series' measurement and the rounds': the verdict is their median.
        samples = per_round + ([p99] if p99 is not None else [])
        p99 = statistics.median(samples)
        measured = (f"{p99:.2f} ms (median of {len(samples)} measurements, "
                    f"{min(samples):.2f} to {max(samples):.2f} ms; main series {measured})")
    rows.append(("p99 latency at half of the maximum throughput, end to end", "≤ 5 ms",
                 measured,
                 f"picows closed loop p99 {_num(_get(pic, 'latency_ms', 'p99'), '{:.2f}')} ms",
                 _verdict(None if p99 is None else p99 <= 5)))

    ours_i = _sys(idle, ROUTER_FAST)
    booted = _get(ours_i, "counters", "booted")
    per = _get(ours_i, "memory", "router", "rss_per_conn_kib")
    lib_m = _get(_sys(idle, OCPP_LIB), "memory", "server", "rss_per_conn_kib")
    pic_m = _get(_sys(idle, PICOWS), "memory", "server", "rss_per_conn_kib")
    rows.append(("Concurrent booted chargers on this machine", "≥ 50,000",
                 _num(booted) if booted is not None else _why(ours_i),
                 "anchors: one process each, fd limit 20,000",
                 _verdict(None if booted is None else booted >= 50000)))
    rows.append(("User-space memory per idle connection (RSS growth)", "≤ 4 KiB",
                 f"{_num(per, '{:.1f}')} KiB" if per is not None else _why(ours_i),
                 f"ocpp-lib {_num(lib_m, '{:.1f}')} KiB; picows {_num(pic_m, '{:.1f}')} KiB",
                 _verdict(None if per is None else per <= 4)))

    ours_s = _sys(storm, ROUTER_FAST)
    st = ours_s.get("storm") or {}
    secs, fails = st.get("seconds_to_all_booted"), st.get("handshake_failures")
    anchors = []
    for name in (OCPP_LIB, PICOWS):
        s = _sys(storm, name).get("storm") or {}
        if s:
            anchors.append(f"{name.split(' ')[0]} {_num(s.get('dropped'))}: "
                           f"{_num(s.get('seconds_to_all_booted'), '{:.1f}')} s, "
                           f"{_num(s.get('handshake_failures'))} failed")
    ok = None
    if st:
        ok = bool(st.get("completed")) and (st.get("dropped") or 0) >= 20000 \
            and secs is not None and secs <= 10 and fails == 0
    est = st.get("cpu_bound_estimate_s")
    verdict = _verdict(ok)
    if ok is False and est is not None and est <= 10 and fails == 0:
        verdict += f" as measured; CPU-bound estimate {est:.1f} s"
    rows.append(("Reconnect storm of 20,000 chargers", "all booted ≤ 10 s, 0 failed handshakes",
                 f"{_num(st.get('dropped'))}: {_num(secs, '{:.1f}')} s (CPU-bound estimate "
                 f"{_num(est, '{:.1f}')} s), {_num(fails)} failed" if st else _why(ours_s),
                 "; ".join(anchors) or "—", verdict))

    oe, pe, we = _sys(echo, OURS_ECHO), _sys(echo, PICOWS_ECHO), _sys(echo, WEBSOCKETS_ECHO)
    o_cpu, pe_cpu = _get(oe, "cpu", "server", "us_per_msg"), _get(pe, "cpu", "server",
                                                                  "us_per_msg")
    rows.append(("Codec alone: echo, 200 connections, CPU per message", "report (vs picows)",
                 f"{_num(oe.get('msgs_per_s'))} msg/s, {_num(o_cpu, '{:.1f}')} µs" if o_cpu
                 else _why(oe),
                 f"picows {_num(pe.get('msgs_per_s'))} msg/s, {_num(pe_cpu, '{:.1f}')} µs; "
                 f"websockets {_num(we.get('msgs_per_s'))} msg/s, "
                 f"{_num(_get(we, 'cpu', 'server', 'us_per_msg'), '{:.1f}')} µs",
                 "reported" if o_cpu else "not measured"))
    oi = _sys(echo, OURS_ECHO + " (idle)")
    o_mem = _get(oi, "memory", "server", "rss_per_conn_kib")
    rows.append(("Codec alone: RSS growth per idle connection", "≤ 4 KiB",
                 f"{_num(o_mem, '{:.1f}')} KiB" if o_mem is not None else _why(oi),
                 f"picows {_num(_get(_sys(echo, PICOWS_ECHO + ' (idle)'), 'memory', 'server', 'rss_per_conn_kib'), '{:.1f}')} KiB; "
                 f"websockets {_num(_get(_sys(echo, WEBSOCKETS_ECHO + ' (idle)'), 'memory', 'server', 'rss_per_conn_kib'), '{:.1f}')} KiB",
                 _verdict(None if o_mem is None else o_mem <= 4)))
    return rows


# --------------------------------------------------------------------------- #
# Tables                                                                      #
# --------------------------------------------------------------------------- #

def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def throughput_table(data: dict[str, Any]) -> str:
    rows = []
    cores = int(_get(data, "machine", "cpus") or 2)
    for name, r in data.get("systems", {}).items():
        if r.get("available") and "msgs_per_s" not in r:
            continue  # an idle measurement of the same scenario (memory table)
        if not r.get("available"):
            rows.append([name] + ["—"] * 10 + [_why(r)])
            continue
        lat, cpu, c = r.get("latency_ms", {}), r.get("cpu", {}), r["counters"]
        part = r.get("server_part", "server")
        mode = r["config"]["mode"]
        load = f"open {r['config']['rate']:,.0f}/s" if mode == "open" else mode
        rows.append([name, f"{r['config']['proto']}, {load}", _num(r.get("msgs_per_s")),
                     _num(cpu_bound_rate(r, cores)) if mode != "open" else "—",
                     _num(lat.get("p50"), "{:.2f}"), _num(lat.get("p99"), "{:.2f}"),
                     _num(lat.get("p99.9"), "{:.2f}"),
                     _num(_get(cpu, part, "us_per_msg"), "{:.1f}"),
                     " / ".join(_num(_get(cpu, p, "us_per_msg"), "{:.1f}")
                                for p in ("redis", "backend")) if part == "router" else "—",
                     _num(_get(cpu, "loadgen", "us_per_msg"), "{:.1f}"),
                     _num(_get(r, "machine_cores_busy", "other_processes"), "{:.2f}"),
                     f"{c['booted']}/{r['chargers']} booted, {c['call_errors']} CALLERROR"
                     + "".join(f" ({k} {v})" for k, v in c.get("callerror_codes", {}).items())
                     + f", {c['disconnects']} disc."])
    return _table(["system", "load", "msg/s", "CPU-bound msg/s", "p50 ms", "p99 ms", "p99.9 ms",
                   "server CPU µs/msg", "redis / backend µs/msg", "generator µs/msg",
                   "other jobs' cores", "checks"], rows)


def rounds_table(data: dict[str, Any]) -> str:
    """The alternating rounds of the e2e scenario (bench.run.paired_rounds)."""
    rows = []

    def cell(r: dict[str, Any]) -> list[str]:
        if not r.get("available"):
            return ["—", "—"]
        return [_num(r.get("msgs_per_s")), _num(r.get("us_per_msg"), "{:.1f}")]

    for i, rnd in enumerate(data.get("rounds") or [], 1):
        r, p, m, h = (rnd.get(k, {}) for k in ("router", "picows", "picows_matched",
                                                "router_half"))
        ratio = (r["us_per_msg"] / p["us_per_msg"] if r.get("available") and p.get("available")
                 else None)
        matched = (r["us_per_msg"] / m["us_per_msg"] if r.get("available") and
                   m.get("available") else None)
        others = [x.get("other_cores") for x in (r, p) if x.get("other_cores") is not None]
        rows.append([str(i), *cell(r), *cell(p), _num(ratio, "{:.2f}"), *cell(m),
                     _num(matched, "{:.2f}"), _num(h.get("p99_ms"), "{:.2f}"),
                     _num(max(others) if others else None, "{:.2f}")])
    return _table(["round", "router msg/s", "router µs/msg", "picows msg/s", "picows µs/msg",
                   "ratio", "picows at router's rate msg/s", "µs/msg", "ratio at equal rate",
                   "router p99 at 50 % load, ms", "other jobs' cores (max)"], rows)


def memory_table(datasets: list[dict[str, Any]]) -> str:
    rows = []
    for data in datasets:
        for name, r in data.get("systems", {}).items():
            if "memory" not in r and r.get("available"):
                continue
            if not r.get("available"):
                if "idle" in name or data.get("scenario") == "idle":
                    rows.append([name] + ["—"] * 7 + [_why(r)])
                continue
            part = r.get("server_part", "server")
            m = r["memory"][part]
            rows.append([name, _num(m["connections"]), _num(m.get("processes")),
                         _num(m["baseline_rss_kib"] / 1024, "{:.1f}"),
                         _num(m["rss_kib"] / 1024, "{:.1f}"),
                         _num(m.get("rss_per_conn_kib"), "{:.2f}"),
                         _num(m.get("anon_per_conn_kib"), "{:.2f}"),
                         _num(_get(r, "connect_cpu_us_per_conn", part), "{:.0f}"),
                         _num(r.get("handshake_rate_per_s"))])
    return _table(["system", "connections", "processes", "RSS before MiB", "RSS held MiB",
                   "RSS KiB/conn", "anon KiB/conn", "server CPU µs per connect+boot",
                   "connects/s"], rows)


def storm_table(data: dict[str, Any]) -> str:
    rows = []
    for name, r in data.get("systems", {}).items():
        if not r.get("available"):
            rows.append([name] + ["—"] * 10 + [_why(r)])
            continue
        s = r.get("storm", {})
        cpu = s.get("cpu_s", {})
        rows.append([name, _num(s.get("dropped")), _num(s.get("rebooted")),
                     _num(s.get("seconds_to_all_booted"), "{:.2f}"),
                     _num(s["rebooted"] / s["seconds_to_all_booted"]
                          if s.get("seconds_to_all_booted") else None),
                     _num(s.get("handshake_failures")),
                     _num(cpu.get(r.get("server_part", "server")), "{:.1f}"),
                     _num(cpu.get("loadgen"), "{:.1f}"),
                     _num(s.get("cpu_bound_estimate_s"), "{:.1f}"),
                     _num(_get(r, "machine_cores_busy", "other_processes"), "{:.2f}"),
                     _num(_get(r, "handshake_latency_ms", "p99"), "{:.0f}"),
                     _num(_get(r, "boot_latency_ms", "p99"), "{:.0f}")])
    return _table(["system", "dropped", "booted again", "seconds to all booted",
                   "reconnects/s", "failed handshakes", "server CPU s", "generator CPU s",
                   "CPU-bound estimate s", "other jobs' cores", "handshake p99 ms",
                   "boot p99 ms"], rows)


def validation_table(data: dict[str, Any]) -> str:
    """CPU µs per message of decoding + validation, from bench/bench_validation.py."""
    if not data.get("available"):
        return _why(data)
    rows_in = _get(data, "data", "rows") or []
    variants: list[str] = []
    for row in rows_in:
        variants += [v for v in row["us"] if v not in variants]
    rows = [[row["message"], _num(row.get("frame_bytes"))]
            + [_num(row["us"].get(v), "{:.2f}") for v in variants] for row in rows_in]
    return (f"`{data['command']}` (best of its rounds; CPU µs per message)\n\n"
            + _table(["message", "bytes", *variants], rows))


def render(results: Path) -> str:
    """The generated Markdown block (tables of every scenario that has results)."""
    out = []
    e2e, idle, storm, echo = (_load(results, s) for s in ("e2e", "idle", "storm", "echo"))
    any_data = next((d for d in (e2e, idle, storm, echo) if d), None)
    if any_data:
        m = any_data["machine"]
        out.append(f"Machine: {m['cpus']} x {m['cpu_model']}, {m['memory_gib']} GiB, Linux "
                   f"{m['kernel']}, Python {m['python']}, fd limit {m['nofile_limit'][0]:,}; "
                   f"commit `{m['git_commit']}`.")
    out.append("### Goals\n")
    out.append(_table(["goal", "target", "ocpp-router (measured)", "anchors (same run)",
                       "verdict"], [list(r) for r in goals(results)]))
    for title, data, table in (("End to end", e2e, throughput_table),
                               ("Codec alone (echo)", echo, throughput_table)):
        if data:
            out.append(f"\n### {title}\n\n`{data['command']}` — finished {data['finished']}, "
                       f"load average at start {data['machine']['load_avg_at_start'][0]:.2f}\n")
            out.append(table(data))
            if data.get("rounds"):
                out.append("\nAlternating rounds after the main series (fresh systems, one "
                           "right after the other; the goal verdicts use their medians):\n")
                out.append(rounds_table(data))
    mem = [d for d in (idle, echo) if d]
    if mem:
        out.append("\n### Memory per idle connection\n")
        for d in mem:
            out.append(f"`{d['command']}` — finished {d['finished']}  ")
        out.append("")
        out.append(memory_table(mem))
    if storm:
        out.append(f"\n### Reconnect storm\n\n`{storm['command']}` — finished "
                   f"{storm['finished']}\n")
        out.append(storm_table(storm))
    validation = _load(results, "validation")
    if validation:
        out.append("\n### Validation alone\n")
        out.append(validation_table(validation))
    plots = sorted(p.name for p in results.glob("*.png"))
    if plots:
        out.append("\n### Plots\n")
        out.extend(f"![{p}](results/{p})" for p in plots)
    return "\n".join(out) + "\n"


def update_results_md(results: Path, md: Path) -> None:
    """Replace the generated block of ``md`` (or append one), keep the rest."""
    block = f"{BEGIN}\n{render(results)}{END}"
    text = md.read_text() if md.exists() else "# Benchmark results\n\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    md.write_text(text)


def main() -> int:
    p = argparse.ArgumentParser(description="Markdown tables of bench/results.")
    p.add_argument("results", nargs="?", default=str(Path(__file__).parent / "results"))
    p.add_argument("--write", metavar="MD", help="update the generated block of this file")
    args = p.parse_args()
    if args.write:
        update_results_md(Path(args.results), Path(args.write))
    else:
        sys.stdout.write(render(Path(args.results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
