"""A/B of two router builds, side by side with the picows responder, in
alternating rounds of one run.

    python -m bench.ab --base REV [--rounds 4] [--duration 6] [--chargers 200]

Builds git revision REV in a temporary worktree (compiled modules in place,
with this checkout's interpreter), then measures in every round, one after the
other: the bare picows responder, the router at REV, and the router of this
checkout (each with Redis and the fast backend, closed loop, OCPP 1.6). It
prints every measurement and then the medians: the router's CPU µs per message
(from /proc) and its ratio to the responder's.

On a shared machine all absolute figures drift between runs, often by more
than a code change moves them; alternating rounds in one run is what tells two
builds apart. bench/RESULTS.md quotes the figures of this tool.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import run, services
from router.sim.loadgen import LoadConfig

REPO = Path(__file__).resolve().parent.parent


class ABError(Exception):
    """Setting up the comparison failed (one line for the user)."""


@contextlib.contextmanager
def built_worktree(rev: str) -> Iterator[Path]:
    """A temporary git worktree of ``rev`` with its compiled modules built."""
    tmp = Path(tempfile.mkdtemp(prefix="ocpp-router-ab-"))
    tree = tmp / "tree"
    try:
        done = subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree),
                               rev], capture_output=True, text=True)
        if done.returncode:
            raise ABError(f"cannot check out {rev!r}: {done.stderr.strip().splitlines()[-1]}")
        build = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace",
                                "-j", "2"], cwd=tree, capture_output=True, text=True)
        if build.returncode:
            tail = (build.stderr or build.stdout).strip().splitlines()[-1:]
            raise ABError(f"building {rev!r} failed: {' '.join(tail)}")
        yield tree
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                       capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def code_from(tree: Path) -> Iterator[None]:
    """Start the services of this block (router, backend) from ``tree``."""
    saved_repo, saved_path = services.REPO, os.environ.get("PYTHONPATH")
    services.REPO = tree
    os.environ["PYTHONPATH"] = str(tree)
    try:
        yield
    finally:
        services.REPO = saved_repo
        if saved_path is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved_path


def summary(samples: dict[str, list[float]], anchor: str = "picows") -> dict[str, Any]:
    """Median CPU µs per message of each system and its ratio to ``anchor``."""
    out: dict[str, Any] = {}
    base = statistics.median(samples[anchor]) if samples.get(anchor) else None
    for name, values in samples.items():
        if not values:
            continue
        med = statistics.median(values)
        out[name] = {"median_us": round(med, 2), "samples": values,
                     "ratio": round(med / base, 3) if base else None}
    return out


async def compare(base_tree: Path, rounds: int, cfg_args: dict[str, Any]) -> dict[str, Any]:
    systems = [("picows", None), ("base", base_tree), ("head", REPO)]
    samples: dict[str, list[float]] = {name: [] for name, _ in systems}
    for rnd in range(rounds):
        for name, tree in systems:
            cfg = LoadConfig(url="", mode="closed", proto="ocpp1.6", progress=False, **cfg_args)
            if tree is None:
                result = await run.measure(name, lambda: run.anchor(
                    "bench.anchors.picows_responder"), cfg)
            else:
                with code_from(tree):
                    result = await run.measure(name, lambda: run.router_stack("fast", 1), cfg)
            if not result.get("available"):
                raise ABError(f"{name}: {result.get('reason', 'not available')}")
            cpu = result["cpu"][result["server_part"]]["us_per_msg"]
            samples[name].append(cpu)
            print(f"round {rnd + 1}/{rounds}  {name:6s}  {result['msgs_per_s']:9,.0f} msg/s  "
                  f"{cpu:6.2f} µs/msg  p99 {result['latency_ms'].get('p99')} ms", flush=True)
    return summary(samples)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="git revision to compare this checkout with")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--duration", type=float, default=6.0, help="measurement window, s")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--chargers", type=int, default=200)
    p.add_argument("--json", metavar="PATH", help="also write the samples and medians here")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0 or args.chargers < 1:
        p.error("--rounds, --duration and --chargers must be positive")
    try:
        with built_worktree(args.base) as tree:
            result = asyncio.run(compare(tree, args.rounds, {
                "chargers": args.chargers, "duration": args.duration, "warmup": args.warmup,
                "procs": 1}))
    except ABError as exc:
        print(f"bench.ab: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    for name, row in result.items():
        ratio = f"{row['ratio']:.3f}x picows" if row["ratio"] else ""
        print(f"{name:6s} median {row['median_us']:6.2f} µs/msg  {ratio}")
    if args.json:
        Path(args.json).write_text(json.dumps({"base": args.base, "result": result}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
