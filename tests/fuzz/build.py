"""The fuzzing build of the compiled core: ``python -m tests.fuzz.build``.

Every Cython extension compiled again with clang and
``-fsanitize=fuzzer-no-link,address,undefined`` into ``build/fuzz/lib``
(objects in ``build/fuzz/tmp``), never into the ``router/`` tree that the test
suite imports. ``fuzzer-no-link`` inserts libFuzzer's coverage callbacks
(inline 8-bit edge counters, comparison tracing) into every function of the
generated C; the sanitizers check every memory access (AddressSanitizer) and
the C-level undefined behaviour (UBSan: signed overflow, shifts, misaligned
or null pointers, out-of-bounds array indices). The shared objects are linked
without the runtimes: atheris' ``asan_with_fuzzer.so`` — libFuzzer plus the
ASan and UBSan runtimes in one library — is preloaded into the fuzzing
process (:mod:`tests.fuzz.instrumented`), so the edges inside the C code are
the ones libFuzzer counts.

Rebuilds only what changed (distutils compares timestamps); a full build takes
about a minute of two cores here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "fuzz"
LIB = BUILD / "lib"

SANITIZE = "-fsanitize=fuzzer-no-link,address,undefined"
CFLAGS = (
    f"{SANITIZE} -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g "
    # Cython's generated code casts function pointers between compatible
    # signatures (PyCFunction): -fsanitize=function would report every call.
    # Its argument handling computes ``args + nargs`` with args == NULL and
    # nargs == 0 for calls without positional arguments (a no-op that the
    # pointer-overflow check reports; its runtime suppressions did not apply
    # to atheris' combined runtime here). Out-of-bounds accesses stay ASan's.
    "-fno-sanitize=function,pointer-overflow"
)


def build(quiet: bool = True) -> Path:
    """Build (or bring up to date) the instrumented extensions; return ``LIB``.

    Raises:
        subprocess.CalledProcessError: the compiler failed.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("ROUTER_EXT_ONLY", "ROUTER_DEBUG")}
    # distutils takes the compiler from CC / LDSHARED and prepends CFLAGS to
    # the interpreter's own flags (which are gcc's and clang's alike here).
    ldshared = sysconfig.get_config_var("LDSHARED").split(None, 1)
    env.update(CC="clang", CXX="clang++", CFLAGS=CFLAGS,
               LDSHARED="clang " + (ldshared[1] if len(ldshared) > 1 else "-shared"))
    cmd = [sys.executable, "setup.py", *(["-q"] if quiet else []), "build_ext",
           "--build-lib", str(LIB), "--build-temp", str(BUILD / "tmp"), "-j", "2"]
    # distutils rebuilds by timestamps only: new flags need --force.
    stamp = BUILD / "cflags"
    if not stamp.exists() or stamp.read_text() != CFLAGS:
        cmd.append("--force")
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    stamp.write_text(CFLAGS)
    return LIB


def modules() -> list[str]:
    """Dotted names of the extensions in the fuzzing build."""
    return sorted(".".join(p.relative_to(LIB).with_suffix("").with_suffix("").parts)
                  for p in LIB.rglob("*.so"))


if __name__ == "__main__":
    build(quiet=False)
    print("\n".join(modules()))
