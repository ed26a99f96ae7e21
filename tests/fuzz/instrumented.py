"""Run a fuzz target on the instrumented build (:mod:`tests.fuzz.build`).

Two halves:

- :func:`environment`: what the fuzzing process needs in its environment —
  atheris' ``asan_with_fuzzer.so`` preloaded (libFuzzer and the ASan/UBSan
  runtimes must be in the process before the instrumented shared objects are
  loaded, which call into them), sanitizer options, and the build directory;
- :func:`install`: inside that process, an import finder that loads every
  ``router.*`` extension module from the fuzzing build instead of the
  ``router/`` tree, so the pure-Python parts stay the worktree's and the
  compiled parts are the instrumented copies. :func:`check_loaded` refuses to
  fuzz if an uninstrumented copy slipped in.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

BUILD_ENV = "ROUTER_FUZZ_BUILD"

# ASan: CPython is not built with ASan and keeps its arenas for the life of the
# process, so leak detection reports only noise; a fuzz input that makes the
# parser allocate without bound must fail as out-of-memory (libFuzzer's
# -rss_limit_mb / -malloc_limit_mb), not as a null return. UBSan: the first
# report ends the run with a stack trace (the build has no recovery).
ASAN_OPTIONS = ("detect_leaks=0:allocator_may_return_null=1:handle_abort=1:"
                "detect_stack_use_after_return=0:symbolize=1:abort_on_error=1")
UBSAN_OPTIONS = "halt_on_error=1:print_stacktrace=1:abort_on_error=1"


def sanitizer_runtime() -> Path:
    """atheris' libFuzzer + ASan + UBSan runtime (``atheris.path()``)."""
    spec = importlib.util.find_spec("atheris")
    assert spec is not None and spec.origin is not None
    lib = Path(spec.origin).parent.parent / "asan_with_fuzzer.so"
    if not lib.exists():
        raise FileNotFoundError(f"{lib} not found: atheris is installed without its runtime")
    return lib


def environment(lib: Path, *, python_objects_on_malloc: bool = True) -> dict[str, str]:
    """The environment of a fuzzing process on the build in ``lib``.

    ``python_objects_on_malloc``: Python objects from malloc, so ASan sees
    the bounds of every object the compiled code reads (1.5x slower for
    code that is mostly Python; see ``PYMALLOC_TARGETS`` in tests/fuzz).
    """
    env = dict(os.environ)
    env.update(LD_PRELOAD=str(sanitizer_runtime()), ASAN_OPTIONS=ASAN_OPTIONS,
               UBSAN_OPTIONS=UBSAN_OPTIONS)
    if python_objects_on_malloc:
        env["PYTHONMALLOC"] = "malloc"
    else:
        env.pop("PYTHONMALLOC", None)
    env[BUILD_ENV] = str(lib)
    return env


class _BuildFinder(importlib.abc.MetaPathFinder):
    """Finds ``router.*`` extension modules in the fuzzing build."""

    def __init__(self, lib: Path) -> None:
        self.lib = lib

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if not fullname.startswith("router."):
            return None
        parts = fullname.split(".")
        folder = self.lib.joinpath(*parts[:-1])
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            candidate = folder / (parts[-1] + suffix)
            if candidate.exists():
                loader = importlib.machinery.ExtensionFileLoader(fullname, str(candidate))
                return importlib.util.spec_from_file_location(fullname, candidate, loader=loader)
        return None


def install(lib: Path) -> None:
    """Load ``router.*`` extensions from ``lib`` from now on."""
    if "router.ws._codec" in sys.modules:
        raise RuntimeError("an extension was imported before the fuzzing build was installed")
    sys.meta_path.insert(0, _BuildFinder(lib))


def check_loaded(lib: Path) -> list[str]:
    """Names of the loaded ``router`` extensions; all must come from ``lib``.

    Raises:
        RuntimeError: an uninstrumented copy is loaded.
    """
    loaded = []
    for name, module in list(sys.modules.items()):
        origin = getattr(module, "__file__", None) or ""
        if name.startswith("router.") and origin.endswith(".so"):
            if not origin.startswith(str(lib)):
                raise RuntimeError(f"{name} is not instrumented: {origin}")
            loaded.append(name)
    return sorted(loaded)
