"""Refresh the OCA JSON schemas shipped in ``router/ocppj/schemas/``.

The schemas come from the ``ocpp`` package on PyPI (The Mobility House), which
carries the Open Charge Alliance's files for OCPP 1.6 (with the 1.6 security
extension), 2.0.1 and 2.1. They are copied byte for byte — the OCPP 2.1 schemas
are licensed CC BY-ND 4.0 and must not be modified (see NOTICE) — and
``schemas/MANIFEST.json`` records the source package, its version and the
SHA-256 of every file, so a reviewer can check provenance and
``tests/ocppj/test_schemas.py`` can check that nobody edited a file.

After a refresh, regenerate the validators:

    .venv/bin/python scripts/refresh_schemas.py
    .venv/bin/python -m router.ocppj.codegen

Usage: refresh_schemas.py [--check]  (--check: compare only, exit 1 on difference)
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import shutil
import sys
from pathlib import Path

import ocpp

DEST = Path(__file__).resolve().parents[1] / "router" / "ocppj" / "schemas"
# Our folder name -> folder of the ocpp package.
VERSIONS = {"v16": "v16", "v201": "v201", "v21": "v21"}


def _source_dir(folder: str) -> Path:
    return Path(ocpp.__file__).resolve().parent / folder / "schemas"


def build_manifest() -> dict[str, object]:
    """Describe the files as they are in the installed ``ocpp`` package."""
    files: dict[str, dict[str, str]] = {}
    for ours, theirs in VERSIONS.items():
        for src in sorted(_source_dir(theirs).glob("*.json")):
            digest = hashlib.sha256(src.read_bytes()).hexdigest()
            files[f"{ours}/{src.name}"] = {"sha256": digest, "from": f"ocpp/{theirs}/schemas/{src.name}"}
    return {
        "source": {
            "package": "ocpp",
            "version": importlib.metadata.version("ocpp"),
            "url": "https://pypi.org/project/ocpp/",
            "upstream": "Open Charge Alliance (https://openchargealliance.org/)",
        },
        "files": files,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 if the copy differs")
    args = parser.parse_args(argv)
    manifest = build_manifest()
    if args.check:
        current = json.loads((DEST / "MANIFEST.json").read_text(encoding="utf-8"))
        if current["files"] != manifest["files"]:
            print("schemas differ from the installed ocpp package", file=sys.stderr)
            return 1
        return 0
    for ours, theirs in VERSIONS.items():
        out = DEST / ours
        if out.exists():
            for old in out.glob("*.json"):
                old.unlink()
        out.mkdir(parents=True, exist_ok=True)
        for src in sorted(_source_dir(theirs).glob("*.json")):
            shutil.copyfile(src, out / src.name)
    (DEST / "MANIFEST.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"copied {len(manifest['files'])} schemas from ocpp {manifest['source']['version']}")  # type: ignore[index]
    return 0


if __name__ == "__main__":
    sys.exit(main())
