"""Autobahn TestSuite cases (through kosoku) against the echo server: the fast
groups 1-7, 10, 12.1 and 13.1. ``make compliance`` runs all groups."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.compliance import GROUPS, failures, run


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_autobahn_fast_groups(tmp_path: Path) -> None:
    verdicts = run(GROUPS["fast"], tmp_path / "autobahn", parallelism=4, timeout=280)
    # Every selected case ran: 1.x-7.x, 10.1.1 and the 36 deflate cases.
    assert len(verdicts) >= 280
    assert {c.split(".")[0] for c in verdicts} == {"1", "2", "3", "4", "5", "6", "7", "10", "12", "13"}
    assert failures(verdicts) == []
