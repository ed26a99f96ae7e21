"""bench.ab: the summary it prints and its one-line errors (the full A/B
builds a worktree and runs minutes of load: run it by hand, see
bench/RESULTS.md)."""

from __future__ import annotations

import pytest

from bench import ab


def test_summary_medians_and_ratios() -> None:
    out = ab.summary({"picows": [9.0, 10.0, 11.0], "base": [14.0, 13.0, 20.0],
                      "head": [12.0, 12.5], "none": []})
    assert out["picows"] == {"median_us": 10.0, "samples": [9.0, 10.0, 11.0], "ratio": 1.0}
    assert out["base"]["median_us"] == 14.0 and out["base"]["ratio"] == 1.4
    assert out["head"]["median_us"] == 12.25 and out["head"]["ratio"] == 1.225
    assert "none" not in out


def test_unknown_revision_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert ab.main(["--base", "no-such-revision-xyz", "--rounds", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("bench.ab: cannot check out 'no-such-revision-xyz'")
    assert "\n" not in err


def test_bad_arguments_exit_2() -> None:
    with pytest.raises(SystemExit) as info:
        ab.main(["--base", "HEAD", "--rounds", "0"])
    assert info.value.code == 2
