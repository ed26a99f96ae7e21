"""Build the compiled core: every ``ext/router/**/_*.pyx`` becomes a private
module of the ``router`` package (``ext/router/ws/_codec.pyx`` -> ``router.ws._codec``).

Cython finds a module's ``.pxd`` by its dotted name, so ``ext/`` mirrors the
package layout and carries ``__init__.pxd`` files: ``ext/router/ws/_codec.pxd``
is the declaration file of ``router.ws._codec`` and nothing else.

Environment:
  ROUTER_DEBUG=1          line tracing + bounds checks (coverage, debugging)
  ROUTER_EXT_ONLY=a,b     build only these modules (dotted names); for parallel work
"""

from __future__ import annotations

import os
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent
EXT_ROOT = HERE / "ext"
DEBUG = os.environ.get("ROUTER_DEBUG") == "1"
ONLY = {m for m in os.environ.get("ROUTER_EXT_ONLY", "").split(",") if m}


def _extensions() -> list[Extension]:
    exts = []
    for pyx in sorted(EXT_ROOT.rglob("*.pyx")):
        rel = pyx.relative_to(EXT_ROOT).with_suffix("")
        name = ".".join(rel.parts)
        if ONLY and name not in ONLY:
            continue
        macros = [("CYTHON_TRACE_NOGIL", "1")] if DEBUG else []
        exts.append(
            Extension(
                name,
                [str(pyx.relative_to(HERE))],
                include_dirs=[str(EXT_ROOT)],
                define_macros=macros,
                extra_compile_args=["-O2"] + ([] if DEBUG else ["-DNDEBUG"]),
                # zlib for permessage-deflate (RFC 7692) in the WebSocket codec.
                libraries=["z"] if name == "router.ws._codec" else [],
            )
        )
    return exts


setup(
    ext_modules=cythonize(
        _extensions(),
        include_path=[str(EXT_ROOT)],
        language_level=3,
        compiler_directives={
            "boundscheck": DEBUG,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": DEBUG,
            "linetrace": DEBUG,
            "embedsignature": True,
        },
        annotate=os.environ.get("ROUTER_ANNOTATE") == "1",
    ),
)
