import tomllib
from pathlib import Path

import router


def test_version_matches_pyproject() -> None:
    meta = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert router.__version__ == meta["project"]["version"]
