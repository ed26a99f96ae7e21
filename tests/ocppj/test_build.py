"""router.ocppj._envelope is compiled with its .pxd declarations."""

from __future__ import annotations

import importlib.machinery
from pathlib import Path

import pytest

from router.ocppj import _envelope

EXT = Path(__file__).resolve().parents[2] / "ext"


def test_compiled_extension() -> None:
    assert isinstance(_envelope.__loader__, importlib.machinery.ExtensionFileLoader)


def test_pxd_beside_pyx() -> None:
    base = EXT / "router" / "ocppj" / "_envelope"
    assert base.with_suffix(".pyx").is_file() and base.with_suffix(".pxd").is_file()
    assert (EXT / "router" / "ocppj" / "__init__.pxd").is_file()
    assert (EXT / "router" / "__init__.pxd").is_file()


def test_message_fields_are_c_fields() -> None:
    # With the .pxd lost, the fields would be missing or writable attributes.
    m = _envelope.Message.__new__(_envelope.Message)
    assert not hasattr(m, "__dict__")
    assert m.msgtype == 0 and m.id is None
    with pytest.raises(AttributeError):
        m.msgtype = 2  # type: ignore[misc]
