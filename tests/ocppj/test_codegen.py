"""The committed generated validators are what the generator produces now."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.ocppj import codegen


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    written = codegen.write_all(tmp_path)
    assert {p.name for p in written} == {"__init__.py", "v16.py", "v201.py", "v21.py"}
    for path in written:
        committed = codegen.OUT / path.name
        assert committed.read_text(encoding="utf-8") == path.read_text(encoding="utf-8"), (
            f"{committed} is stale: run `python -m router.ocppj.codegen`")


@pytest.mark.parametrize("node", [
    {"type": "string", "pattern": "^a"},
    {"type": "string", "minLength": 1},
    {"type": "object", "patternProperties": {}},
    {"type": "integer", "exclusiveMinimum": 0},
    {"type": "object", "additionalProperties": {"type": "string"}},
    {"type": "string", "format": "email"},
    {"type": ["string", "null"]},
    {"anyOf": [{"type": "string"}]},
])
def test_unknown_keywords_fail_generation(node: dict[str, object]) -> None:
    gen = codegen._Generator("ocpp2.0.1")
    gen.root = {"type": "object", "properties": {"x": node}}
    gen.top = "T"
    with pytest.raises(codegen.SchemaError):
        gen.struct(gen.root, "TRequest", "test.json", top=True)


def test_unresolvable_ref_fails_generation() -> None:
    gen = codegen._Generator("ocpp2.0.1")
    gen.root = {"type": "object", "properties": {"x": {"$ref": "#/definitions/Missing"}}}
    with pytest.raises(codegen.SchemaError):
        gen.struct(gen.root, "TRequest", "test.json", top=True)
