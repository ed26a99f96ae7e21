"""router.streams._resp is compiled, with its .pxd where Cython finds it."""

from __future__ import annotations

import importlib.machinery
from pathlib import Path

from router.streams import _resp

EXT = Path(__file__).resolve().parents[2] / "ext"


def test_resp_is_a_compiled_extension() -> None:
    assert isinstance(_resp.__loader__, importlib.machinery.ExtensionFileLoader)


def test_pxd_beside_pyx_at_the_dotted_path() -> None:
    base = EXT / "router" / "streams" / "_resp"
    assert base.with_suffix(".pyx").is_file()
    assert base.with_suffix(".pxd").is_file()
    assert (EXT / "router" / "streams" / "__init__.pxd").is_file()
    assert (EXT / "router" / "__init__.pxd").is_file()


def test_buffer_state_is_c_level() -> None:
    # Fields declared in the .pxd are C fields: no instance dict, not visible
    # from Python. (Were the .pxd ignored, the .pyx would not even compile.)
    buf = _resp.CommandBuffer()
    assert not hasattr(buf, "__dict__")
    assert not hasattr(buf, "_len")
