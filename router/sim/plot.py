"""The PNG of a simulator run: throughput and latency over time (matplotlib)."""

from __future__ import annotations

import math
from typing import Any


def plot_run(result: dict[str, Any], path: str, title: str = "") -> None:
    """Write ``path``: msg/s and booted chargers (top), p50/p99 latency (bottom).

    Args:
        result: what :func:`router.sim.loadgen.run_load` returned; its
            ``timeline`` rows are ``[t, msg/s, booted, p50 ms, p99 ms, errors]``.
        path: the PNG file to write.
        title: the figure's title.

    Raises:
        ImportError: matplotlib is not installed (the ``sim`` extra).
        OSError: the file cannot be written.
    """
    import matplotlib

    matplotlib.use("Agg")   # a file, never a window
    import matplotlib.pyplot as plt

    rows = result.get("timeline", [])
    nan = math.nan

    def column(i: int) -> list[float]:
        return [nan if row[i] is None else float(row[i]) for row in rows]

    t = column(0)
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(10, 6.5))
    top.plot(t, column(1), color="tab:blue", label="answered CALLs / s")
    top.set_ylabel("msg/s")
    top.grid(alpha=0.3)
    booted = top.twinx()
    booted.plot(t, column(2), color="tab:green", linestyle="--", label="booted chargers")
    booted.set_ylabel("booted chargers")
    lines = top.get_legend_handles_labels()
    more = booted.get_legend_handles_labels()
    top.legend(lines[0] + more[0], lines[1] + more[1], loc="lower right")
    bottom.plot(t, column(3), label="p50")
    bottom.plot(t, column(4), label="p99")
    bottom.set_ylabel("CALL → answer, ms")
    bottom.set_xlabel("seconds since start")
    bottom.grid(alpha=0.3)
    bottom.legend(loc="upper right")
    fig.suptitle(title or "ocpp-router simulate")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
