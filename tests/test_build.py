"""The compiled modules keep their .pxd declarations.

Cython finds a module's .pxd only beside its .pyx at the path of its dotted
name; a misplaced one is silently ignored, and cdef fields then turn into
Python attribute lookups that fail at run time. These tests fail if that
happens to the WebSocket modules.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXT = ROOT / "ext"
MODULES = ["router.ws._codec", "router.server._wsconn", "router.server._charger",
           "router.ocppj._envelope", "router.streams._resp", "router.streams._cluster"]


@pytest.mark.parametrize("name", MODULES)
def test_module_is_a_compiled_extension(name: str) -> None:
    module = importlib.import_module(name)
    assert isinstance(module.__loader__, importlib.machinery.ExtensionFileLoader)
    assert module.__file__ is not None
    assert module.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


@pytest.mark.parametrize("name", MODULES)
def test_pxd_sits_beside_the_pyx_at_the_dotted_path(name: str) -> None:
    base = EXT.joinpath(*name.split("."))
    assert base.with_suffix(".pyx").is_file()
    assert base.with_suffix(".pxd").is_file()
    # ...and every package on the way has an __init__.pxd (Cython's package lookup).
    for parent in base.relative_to(EXT).parents:
        if parent != Path("."):
            assert (EXT / parent / "__init__.pxd").is_file()


def test_cdef_functions_declared_in_the_pxd_are_exported() -> None:
    # Only functions declared in the .pxd land in __pyx_capi__ (what
    # router.server._wsconn cimports).
    codec = importlib.import_module("router.ws._codec")
    assert {"encode_frame", "encode_close", "frames_in_total"} <= set(codec.__pyx_capi__)


def test_cdef_fields_are_c_fields_not_python_attributes() -> None:
    from router.server._wsconn import WebSocketProtocol
    from router.ws import OP_TEXT, Connection
    from tests.ws.helpers import client_frame

    conn = Connection(max_message_size=100)
    # The class works: its fields exist...
    assert conn.receive_data(client_frame(OP_TEXT, b"ok")) == [(OP_TEXT, b"ok")]
    # ...as C struct members, invisible from Python (declared in the .pxd only).
    for field in ("rstate", "m_buf", "max_message_size", "f_remaining", "pmd"):
        assert not hasattr(conn, field)
        with pytest.raises(AttributeError):
            setattr(conn, field, 0)
    proto = WebSocketProtocol()
    for field in ("close_code", "read_pause", "deadline", "settings", "sweeper"):
        assert not hasattr(proto, field)
    assert proto.state == 0 and proto.transport is None and proto.request is None


def _cythonize(src: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cython", "-3", str(src), "-o", str(out)],
        capture_output=True, text=True, cwd=src.parent, timeout=120,
    )


@pytest.mark.slow
def test_codec_does_not_compile_without_its_pxd(tmp_path: Path) -> None:
    # The sources without _codec.pxd must not compile, proving the .pyx relies
    # on the .pxd for its cdef class fields and types; with it they do.
    src = tmp_path / "router" / "ws"
    src.mkdir(parents=True)
    for f in (EXT / "router" / "ws").iterdir():
        if f.suffix in (".pyx", ".pxi"):
            shutil.copy(f, src / f.name)
    missing = _cythonize(src / "_codec.pyx", tmp_path / "missing.c")
    assert missing.returncode != 0
    assert "is not a type identifier" in missing.stderr + missing.stdout
    shutil.copy(EXT / "router" / "ws" / "_codec.pxd", src / "_codec.pxd")
    present = _cythonize(src / "_codec.pyx", tmp_path / "present.c")
    assert present.returncode == 0, present.stderr


def test_charger_state_is_in_c_fields() -> None:
    # ChargerConnection keeps no __dict__: its state is ChargerCore's C fields
    # (declared in ext/router/server/_charger.pxd), tens of thousands per process.
    from router.server.connection import ChargerConnection

    assert "__dict__" not in dir(ChargerConnection)
    assert not hasattr(ChargerConnection, "__dictoffset__") or \
        ChargerConnection.__dictoffset__ == 0
