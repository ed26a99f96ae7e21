"""A short atheris run of each fuzz target (``make fuzz`` runs them long),
and the seed corpus replayed in process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.targets import TARGETS, seeds

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_seeds_replay(name: str) -> None:
    for seed in seeds()[name]:
        TARGETS[name](seed)
        for cut in range(0, len(seed), 7):       # truncated inputs too
            TARGETS[name](seed[:cut])


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_short_fuzz_run(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.fuzz", "--seconds", "10", "--artifacts", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=80, check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert list(tmp_path.iterdir()) == []       # no crash reproducer written
