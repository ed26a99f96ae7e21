"""The fuzz targets in the test suite: every seed, the grown corpus of the
long runs and every past finding replayed in process (regular build), the RESP overflow found by the fuzzer as
a unit test, and a short libFuzzer run of every target on the instrumented
build (``make fuzz`` / ``make fuzz-long`` run them long)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from router.streams._resp import ReplyReader
from router.streams.errors import RedisProtocolError
from tests.conftest import timeout
from tests.fuzz.corpus import GROWN, all_seeds
from tests.fuzz.targets import TARGETS

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_seeds_replay(name: str) -> None:
    seeds = all_seeds()[name]
    stored = sorted((HERE / "seeds" / name).iterdir())
    assert [p.read_bytes() for p in stored] == seeds, "run python -m tests.fuzz.corpus"
    for seed in seeds:
        TARGETS[name](seed)
        for cut in range(0, len(seed), max(7, len(seed) // 20)):   # truncated inputs too
            TARGETS[name](seed[:cut])


@pytest.mark.parametrize("name", sorted(p.name for p in GROWN.iterdir() if p.name in TARGETS))
def test_grown_corpus_replays(name: str) -> None:
    # What the long runs reached (python -m tests.fuzz --minimize), on the
    # regular build: every input still passes the target's checks.
    inputs = sorted((GROWN / name).iterdir())
    assert inputs
    for path in inputs:
        TARGETS[name](path.read_bytes())


def _regressions() -> list[object]:
    return [pytest.param(p.parent.name, p, id=f"{p.parent.name}/{p.name}")
            for p in sorted((HERE / "regressions").glob("*/*"))]


@pytest.mark.parametrize(("name", "path"), _regressions())
def test_finding_replays_clean(name: str, path: Path) -> None:
    TARGETS[name](path.read_bytes())


def test_bulk_length_near_2_63_waits_for_data() -> None:
    # Found by the fuzzer (UBSan): "$9223372036854775807" made the scanner
    # compute eol + 4 + n, which overflowed and read past the buffer.
    reader = ReplyReader()
    reader.feed(b"$9223372036854775807\r\nabc\r\n")
    assert reader.gets() is False
    reader = ReplyReader()
    reader.feed(b"*1\r\n$9223372036854775800\r\n")
    assert reader.gets() is False


def test_array_lengths_that_overflow_the_count_are_rejected() -> None:
    reader = ReplyReader()
    reader.feed(b"*2\r\n*9223372036854775807\r\n")
    with pytest.raises(RedisProtocolError, match="array length out of range"):
        reader.gets()


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.skipif(shutil.which("clang") is None, reason="clang is not installed")
def test_short_instrumented_fuzz_run(tmp_path: Path) -> None:
    # The fuzzing build (clang, ASan + UBSan + libFuzzer coverage) and a few
    # seconds of every target: the build works, the C code is instrumented
    # (edges in the hundreds, not the handful Python alone shows), and the
    # seeds plus a few thousand mutations find nothing.
    seconds = os.environ.get("FUZZ_TEST_SECONDS", "4")
    result = subprocess.run(
        [sys.executable, "-m", "tests.fuzz", "--seconds", seconds, "--artifacts", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout(540), check=False,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-6000:]
    assert list(tmp_path.iterdir()) == []       # no crash reproducer written
    lines = [line for line in result.stdout.splitlines() if line.startswith("fuzz ")]
    assert len(lines) >= 2 * len(TARGETS), out[-3000:]
    for line in lines[-len(TARGETS):]:
        edges = int(line.split(" edges covered")[0].rsplit(" ", 1)[1].replace(",", ""))
        assert edges >= 100, line


def test_nesting_past_pythons_recursion_limit() -> None:
    # Found by the ocpp201 target: under the fuzzing build ~1,000 nested
    # arrays made Python's json (the oracle) raise RecursionError. For the
    # oracle that is not JSON (the router stops at 256 levels); the router
    # answers FormatViolation.
    from tests.ocppj.test_fuzz import oracle

    data = b"[" * 100_000 + b"]" * 100_000
    assert oracle(data) == (False, None)
    TARGETS["ocpp201"](b"\x00" + data)
