"""Run the fuzz targets on the instrumented build: ``python -m tests.fuzz``.

``--seconds N`` runs every target for N seconds (``make fuzz``, CI);
``--runs N`` runs every target for N executions and, with ``--results``,
writes executions, covered edges, corpus size and crashes to
bench/RESULTS.md (``make fuzz-long``).

Each target runs in its own process (libFuzzer owns the process) on the
instrumented extensions (:mod:`tests.fuzz.build`, built first when out of
date) with the sanitizer runtime preloaded (:mod:`tests.fuzz.instrumented`),
starting from the seed corpus and dictionary in the repository
(:mod:`tests.fuzz.corpus`). A finding makes that process fail and leaves a
``<target>-crash-*`` file with the input in ``--artifacts``; a finding's
input then goes to ``tests/fuzz/regressions/<target>/`` (replayed by
tests/fuzz/test_fuzz.py) with the fix.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.fuzz import build, instrumented
from tests.fuzz.corpus import GROWN

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
NAMES = ("upgrade", "frames", "frames_diff", "ocpp16", "ocpp201", "ocpp21", "resp", "soap")
# Longest input per target. Frames: 4 KiB holds many frames, the 16-bit
# length form and deflated messages; the 64-bit form is in the seeds (its
# header announces more than any input holds, which is the case to test).
# Longer inputs found nothing more and cost every execution (bench/RESULTS.md).
MAX_LEN = {"frames": 4096, "frames_diff": 2048, "upgrade": 8192}
# Targets whose subject is Python code (router.soap on the standard library's
# expat): their Python objects stay on CPython's own allocator. ASan on
# malloc'd objects would check CPython and expat, which are neither ours nor
# instrumented, at 1.5x the CPU per execution; the compiled validator they
# reach is fuzzed with Python objects on malloc by the ocpp* targets.
PYMALLOC_TARGETS = {"soap"}


@dataclass
class Outcome:
    """What one libFuzzer run reports (its final statistics)."""

    name: str
    rc: int
    executions: int = 0
    exec_per_s: int = 0
    edges: int = 0
    features: int = 0
    corpus: int = 0
    seconds: float = 0.0
    crashes: int = 0
    modules: int = 0
    counters: int = 0
    report: str = ""


def _findings(name: str, artifacts: Path) -> set[Path]:
    """The reproducers of ``name`` in ``artifacts`` (crash, out-of-memory, timeout)."""
    return {p for kind in ("crash", "oom", "timeout") for p in artifacts.glob(f"{name}-{kind}-*")}


def _parse(name: str, rc: int, log: str, seconds: float, new: set[Path]) -> Outcome:
    out = Outcome(name, rc, seconds=round(seconds, 1))
    if m := re.search(r"stat::number_of_executed_units: (\d+)", log):
        out.executions = int(m.group(1))
    if m := re.search(r"stat::average_exec_per_sec:\s+(\d+)", log):
        out.exec_per_s = int(m.group(1))
    # The last status line: "#N DONE cov: E ft: F corp: C/…" (or pulse/NEW).
    for m in re.finditer(r"cov: (\d+) ft: (\d+) corp: (\d+)", log):
        out.edges, out.features, out.corpus = (int(g) for g in m.groups())
    if m := re.search(r"Loaded (\d+) modules\s+\((\d+) inline 8-bit counters\)", log):
        out.modules, out.counters = int(m.group(1)), int(m.group(2))
    out.crashes = len(new)
    for marker in ("ERROR: AddressSanitizer", "runtime error:", "Uncaught Python exception",
                   "ERROR: libFuzzer"):
        if marker in log:
            i = log.index(marker)
            out.report = log[i:i + 2000]
            break
    return out


def _libfuzzer(name: str) -> list[str]:
    """The runner of target ``name`` and the libFuzzer options every run has."""
    return [sys.executable, "-m", "tests.fuzz.runner", name, "-rss_limit_mb=2048",
            f"-max_len={MAX_LEN.get(name, 8192)}", "-timeout=30"]


def _environment(name: str, lib: Path) -> dict[str, str]:
    return instrumented.environment(
        lib, python_objects_on_malloc=name not in PYMALLOC_TARGETS)


def minimize(name: str, lib: Path, sources: list[Path]) -> tuple[int, int]:
    """Replace ``tests/fuzz/grown/<name>`` by the smallest set of inputs from
    it and ``sources`` that covers all they cover beyond the seeds (libFuzzer
    ``-merge=1`` on the instrumented build: the seeds go first, then are
    dropped from the result).

    Returns:
        (inputs read, inputs kept).

    Raises:
        RuntimeError: the merge failed (an input crashed it: fuzz that first).
    """
    seeds = HERE / "seeds" / name
    dirs = [d for d in [*sources, GROWN / name] if d.is_dir()]
    read = sum(len(list(d.iterdir())) for d in dirs)    # before grown/<name> is replaced
    with tempfile.TemporaryDirectory(prefix=f"fuzz-merge-{name}-") as tmp:
        out = Path(tmp) / name
        shutil.copytree(seeds, out)
        seed_names = {p.name for p in out.iterdir()}
        proc = subprocess.run([*_libfuzzer(name), "-merge=1", str(out), *map(str, dirs)],
                              cwd=ROOT, env=_environment(name, lib), capture_output=True,
                              text=True, errors="replace", check=False)
        # libFuzzer reports a merge whose inner process died on every
        # attempt as "0 new files", with exit 0: success is its own line.
        if proc.returncode != 0 or "MERGE-OUTER: successful" not in proc.stderr + proc.stdout:
            raise RuntimeError(f"merge of {name} failed (exit {proc.returncode}): "
                               f"{proc.stdout[-1500:]}{proc.stderr[-1500:]}")
        kept = sorted(p for p in out.iterdir() if p.name not in seed_names)
        shutil.rmtree(GROWN / name, ignore_errors=True)
        (GROWN / name).mkdir(parents=True)
        for p in kept:
            shutil.copy(p, GROWN / name / p.name)
    return read, len(kept)


def run_target(name: str, lib: Path, artifacts: Path, *, seconds: int = 0, runs: int = 0,
               corpus: Path | None = None, jobs_log: Path | None = None) -> Outcome:
    """Fuzz one target (for ``seconds`` or ``runs`` executions).

    Args:
        name: a key of ``tests.fuzz.targets.TARGETS``.
        lib: the instrumented build.
        artifacts: directory for crash reproducers.
        seconds: libFuzzer ``-max_total_time`` (0: none).
        runs: libFuzzer ``-runs`` (0: none).
        corpus: working corpus directory (default: a temporary one); the
            seeds in the repository are read as a second, read-only corpus.
        jobs_log: where libFuzzer's output goes as well (default: only parsed).
    """
    temporary = corpus is None
    work = corpus or Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
    work.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    cmd = [*_libfuzzer(name), "-print_final_stats=1",
           f"-dict={HERE / 'dicts' / f'{name}.dict'}", f"-artifact_prefix={artifacts}/{name}-"]
    cmd += [f"-max_total_time={seconds}"] if seconds else []
    cmd += [f"-runs={runs}"] if runs else []
    cmd += [str(work), str(HERE / "seeds" / name)]
    cmd += [str(GROWN / name)] if (GROWN / name).is_dir() else []
    before = _findings(name, artifacts)     # an earlier run's are not this run's
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=_environment(name, lib),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace")
        assert proc.stdout is not None
        lines = []
        sink = jobs_log.open("a") if jobs_log else None
        for line in proc.stdout:
            lines.append(line)
            if sink:
                sink.write(line)
            # Progress lines only at powers of two and the pulses: enough to
            # watch without flooding the terminal.
            if not line.startswith("#") or "pulse" in line or "INITED" in line:
                print(f"[{name}] {line}", end="", flush=True)
        rc = proc.wait()
        if sink:
            sink.close()
        return _parse(name, rc, "".join(lines), time.monotonic() - t0,
                      _findings(name, artifacts) - before)
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)


def summary_line(o: Outcome) -> str:
    verdict = "ok" if o.rc == 0 and not o.crashes else f"FAILED (exit {o.rc})"
    return (f"fuzz {o.name}: {verdict}; {o.executions:,} executions ({o.exec_per_s:,}/s), "
            f"{o.edges:,} edges covered ({o.features:,} features) of {o.counters:,} "
            f"instrumented in {o.modules} modules, corpus {o.corpus:,}, crashes {o.crashes}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="fuzz the compiled parsers (libFuzzer + ASan "
                                                 "+ UBSan, atheris)")
    parser.add_argument("--seconds", type=int, default=0, help="per target")
    parser.add_argument("--runs", type=int, default=0, help="executions per target")
    parser.add_argument("--target", choices=[*NAMES, "all"], action="append")
    parser.add_argument("--artifacts", type=Path, default=ROOT / "bench/results/fuzz")
    parser.add_argument("--corpus", type=Path, default=None,
                        help="keep the grown corpora here (<dir>/<target>)")
    parser.add_argument("--results", type=Path, default=None,
                        help="write the figures as JSON (bench/results/fuzz.json)")
    parser.add_argument("--results-md", type=Path, default=None,
                        help="and as a table into this file's fuzzing section "
                             "(bench/RESULTS.md)")
    parser.add_argument("--minimize", type=Path, action="append", default=[], metavar="DIR",
                        help="instead of fuzzing: merge the corpora DIR/<target> (of "
                             "--corpus runs) into tests/fuzz/grown/<target>, minimized")
    args = parser.parse_args(argv)
    if not args.seconds and not args.runs:
        args.seconds = 60
    from tests.fuzz.targets import TARGETS
    names = tuple(n for n in NAMES if n in TARGETS) if not args.target or "all" in args.target \
        else tuple(args.target)
    t0 = time.monotonic()
    lib = build.build()
    build_s = time.monotonic() - t0
    print(f"fuzzing build up to date in {build_s:.0f} s: {', '.join(build.modules())}",
          flush=True)
    if args.minimize:
        for name in names:
            try:
                read, kept = minimize(name, lib, [d / name for d in args.minimize])
            except RuntimeError as exc:
                print(f"fuzz: {exc}", file=sys.stderr)
                return 1
            print(f"{name}: {read:,} inputs -> {kept:,} in {GROWN.relative_to(ROOT) / name}")
        return 0
    outcomes = []
    for name in names:
        corpus = args.corpus / name if args.corpus else None
        outcomes.append(run_target(name, lib, args.artifacts, seconds=args.seconds,
                                   runs=args.runs, corpus=corpus))
        print(summary_line(outcomes[-1]), flush=True)
        if outcomes[-1].report:
            print(outcomes[-1].report, flush=True)
    print("\n".join(summary_line(o) for o in outcomes))
    if args.results:
        import json
        from dataclasses import asdict
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps({
            "command": "python -m tests.fuzz " + " ".join(argv or sys.argv[1:]),
            "build_seconds": round(build_s, 1),
            "targets": [asdict(o) for o in outcomes]}, indent=2) + "\n")
    if args.results_md:
        write_results_md(args.results_md, outcomes, " ".join(argv or sys.argv[1:]))
    return 0 if all(o.rc == 0 and not o.crashes for o in outcomes) else 1


BEGIN, END = "<!-- fuzz-long: begin -->", "<!-- fuzz-long: end -->"


def write_results_md(path: Path, outcomes: list[Outcome], args: str) -> None:
    """Replace the generated table between the fuzz-long markers of ``path``
    (appended with a heading when the markers are not there yet)."""
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows = [f"| {o.name} | {o.executions:,} | {o.exec_per_s:,} | {o.seconds:,.0f} | {o.edges:,} "
            f"| {o.features:,} | {o.corpus:,} | {o.crashes} | "
            f"{'none' if o.rc == 0 and not o.report else o.report.splitlines()[0]} |"
            for o in outcomes]
    block = "\n".join([
        BEGIN,
        f"Run {stamp}: `nice -n 19 python -m tests.fuzz {args}` (libFuzzer via atheris, "
        "clang 14 build with ASan + UBSan + edge counters, the seeds and dictionaries of "
        "tests/fuzz/).",
        "",
        "| target | executions | exec/s | seconds | edges covered | features | corpus "
        "| crashes | sanitizer / assertion reports |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        *rows, END])
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n## Fuzzing the compiled parsers (make fuzz-long)\n\n" \
            + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
