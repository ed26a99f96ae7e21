"""Autobahn TestSuite compliance of the echo server, through kosoku.

    python -m tests.compliance --groups all --report bench/results/autobahn

starts ``bench/echo_server.py`` on a free port, runs the selected case groups
with the ``kosoku`` fuzzing client (a Python 3 runner of the Autobahn case
files; no Docker) and writes the Autobahn-format report (``index.json``,
``index.html``, one file per case) under ``--report``. Every case must end
OK, NON-STRICT or INFORMATIONAL (behaviour and close behaviour); the exit
status is 0 only then. ``make compliance`` runs all groups; ``make test`` runs
the fast groups through ``tests/ws/test_autobahn.py``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

GROUPS = {
    # Everything the issue asks for: framing (1-7), limits and fragmentation
    # (9, 10), permessage-deflate (12, 13).
    "all": ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*", "12.*", "13.*"],
    # The groups that finish in seconds (part of make test).
    "fast": ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "10.*", "12.1.*", "13.1.*"],
}
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}


def start_echo_server(extra: list[str] | None = None) -> tuple[subprocess.Popen[str], int]:
    """Start ``bench/echo_server.py`` on a free port; return (process, port).

    Raises:
        RuntimeError: the server did not report that it listens.
    """
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "echo_server.py"), "--port", "0",
         "--compression-threshold", "0", *(extra or [])],
        stdout=subprocess.PIPE, stderr=None, text=True, cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        proc.wait()
        proc.stdout.close()
        raise RuntimeError(f"echo server did not start: {line!r}")
    return proc, int(line.rsplit(":", 1)[1])


def stop(proc: subprocess.Popen[str]) -> None:
    """Stop a child process (SIGTERM, then SIGKILL after 10 s)."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def run(cases: list[str], report: Path, parallelism: int = 2, timeout: float = 3600.0,
        echo_args: list[str] | None = None) -> dict[str, dict[str, str]]:
    """Run ``cases`` against a fresh echo server; return {case: verdicts}.

    Args:
        cases: case ids or globs (kosoku ``-i``).
        report: directory for the Autobahn-format report.
        parallelism: cases run at once.
        timeout: seconds for the whole run.
        echo_args: extra ``bench/echo_server.py`` arguments.

    Raises:
        RuntimeError: kosoku wrote no report.
    """
    kosoku = Path(sys.executable).with_name("kosoku")
    proc, port = start_echo_server(echo_args)
    try:
        args = [str(kosoku), f"127.0.0.1:{port}", "-p", str(parallelism), "-o", str(report)]
        for case in cases:
            args += ["-i", case]
        # kosoku exits 1 when a case fails; the verdicts come from its report.
        subprocess.run(args, cwd=ROOT, timeout=timeout, check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    finally:
        stop(proc)
    index = report / "index.json"
    if not index.exists():
        raise RuntimeError("kosoku wrote no report")
    verdicts: dict[str, dict[str, str]] = {}
    for agent_cases in json.loads(index.read_text()).values():
        for case_id, entry in agent_cases.items():
            verdicts[case_id] = {"behavior": entry["behavior"],
                                 "behaviorClose": entry["behaviorClose"]}
    return verdicts


def failures(verdicts: dict[str, dict[str, str]]) -> list[str]:
    """Case ids whose behaviour or close behaviour is not acceptable."""
    return sorted(
        (c for c, v in verdicts.items()
         if v["behavior"] not in PASSING or v["behaviorClose"] not in PASSING),
        key=lambda c: [int(x) for x in c.split(".")],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Autobahn compliance of the echo server")
    parser.add_argument("--groups", default="all",
                        help="'all', 'fast' or comma-separated case globs (e.g. '1.*,9.1.1')")
    parser.add_argument("--report", default=None,
                        help="report directory (default: a temporary directory)")
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--echo-arg", action="append", default=[], metavar="ARG",
                        help="pass ARG to bench/echo_server.py (repeatable), e.g. "
                        "--echo-arg=--context-takeover")
    args = parser.parse_args(argv)
    cases = GROUPS.get(args.groups) or [c.strip() for c in args.groups.split(",") if c.strip()]
    report = Path(args.report or tempfile.mkdtemp(prefix="autobahn-"))
    started = time.monotonic()
    verdicts = run(cases, report, args.parallelism, echo_args=args.echo_arg)
    bad = failures(verdicts)
    counts = Counter(v["behavior"] for v in verdicts.values())
    print(f"{len(verdicts)} cases in {time.monotonic() - started:.0f} s: "
          + ", ".join(f"{k} {n}" for k, n in sorted(counts.items())))
    for case_id in bad:
        print(f"  {case_id}: {verdicts[case_id]}")
    print(f"report: {report / 'index.html'}")
    return 1 if bad or not verdicts else 0


if __name__ == "__main__":
    sys.exit(main())
