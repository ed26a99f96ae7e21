"""CPU time and memory of process trees, read from /proc (Linux only).

CPU per message is ``(utime + stime)`` of a process and all its descendants
(router workers, CSMS workers) over the measurement window, divided by the
messages handled in that window — proc(5), ``/proc/<pid>/stat`` fields 14 and
15, in clock ticks of ``sysconf(SC_CLK_TCK)``. Memory is ``VmRSS`` /
``RssAnon`` from ``/proc/<pid>/status`` (kB): user-space resident memory;
kernel socket buffers are not in it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split
    # after the last ')'. Fields from there start at field 3 (state).
    return raw[raw.rfind(")") + 2:].split()


def descendants(pid: int) -> list[int]:
    """``pid`` and every live descendant of it."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fields = _stat_fields(int(name))
        if fields is None:
            continue
        children.setdefault(int(fields[1]), []).append(int(name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (0.0 if it is gone)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # fields[11], fields[12] are stat fields 14 (utime) and 15 (stime).
    return (int(fields[11]) + int(fields[12])) / _TICK


def _status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


@dataclass(frozen=True)
class TreeSample:
    """One reading of a process tree."""

    pids: tuple[int, ...]
    cpu_s: float
    rss_kib: int
    anon_kib: int


def sample_tree(pid: int) -> TreeSample:
    """CPU seconds and resident memory of ``pid`` and its descendants, now."""
    pids = descendants(pid)
    return TreeSample(
        pids=tuple(pids),
        cpu_s=sum(cpu_seconds(p) for p in pids),
        rss_kib=sum(_status_kb(p, "VmRSS:") for p in pids),
        anon_kib=sum(_status_kb(p, "RssAnon:") for p in pids),
    )


def cpu_of(pids: tuple[int, ...]) -> float:
    """CPU seconds of exactly these processes (a tree sampled earlier)."""
    return sum(cpu_seconds(p) for p in pids)


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (``/proc/stat`` ``cpu`` line:
    user, nice, system, irq, softirq, steal — not idle or iowait). Compared
    with the CPU of the measured processes it shows how much other work shared
    the machine during a measurement."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / _TICK
