"""Run the atheris fuzz targets: ``python -m tests.fuzz --seconds 600``.

Each target runs in its own process (libFuzzer owns the process) with a seed
corpus; a finding makes that process fail and leaves a ``crash-*`` file with
the input in the working directory (``--artifacts``).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_target(name: str, seconds: int, artifacts: Path, corpus: Path | None = None) -> int:
    """Fuzz one target for ``seconds``; return the process exit status.

    Args:
        name: a key of ``tests.fuzz.targets.TARGETS``.
        seconds: libFuzzer ``-max_total_time``.
        artifacts: directory for crash reproducers.
        corpus: corpus directory (default: a fresh one seeded from ``seeds()``).
    """
    from tests.fuzz.targets import seeds

    temporary = corpus is None
    if corpus is None:
        corpus = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
    try:
        corpus.mkdir(parents=True, exist_ok=True)
        for i, seed in enumerate(seeds()[name]):
            (corpus / f"seed-{i}").write_bytes(seed)
        artifacts.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "tests.fuzz.runner", name,
               f"-max_total_time={seconds}", "-rss_limit_mb=1024", "-max_len=70000",
               f"-artifact_prefix={artifacts}/{name}-", "-print_final_stats=1", str(corpus)]
        return subprocess.run(cmd, cwd=ROOT, check=False).returncode
    finally:
        if temporary:
            shutil.rmtree(corpus, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="fuzz the WebSocket parsers with atheris")
    parser.add_argument("--seconds", type=int, default=600, help="per target")
    parser.add_argument("--target", choices=["frames", "upgrade", "all"], default="all")
    parser.add_argument("--artifacts", type=Path, default=Path("bench/results/fuzz"))
    args = parser.parse_args(argv)
    names = ["frames", "upgrade"] if args.target == "all" else [args.target]
    status = 0
    for name in names:
        rc = run_target(name, args.seconds, args.artifacts)
        print(f"fuzz {name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'}", flush=True)
        status = status or rc
    return status


if __name__ == "__main__":
    sys.exit(main())
