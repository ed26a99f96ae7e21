"""libFuzzer entry point for one target: ``python -m tests.fuzz.runner NAME [libFuzzer args]``.

Started by :mod:`tests.fuzz` with the environment of
:func:`tests.fuzz.instrumented.environment`: then every compiled module comes
from the instrumented build and libFuzzer (preloaded) counts the edges of the
C code. Without that environment it fuzzes the regular build with coverage of
the Python code only (``--plain``).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from tests.fuzz import instrumented


def main() -> None:
    build = os.environ.get(instrumented.BUILD_ENV)
    if build:
        instrumented.install(Path(build))
    import atheris

    if build:
        # The C parsers are the subject: atheris' bytecode instrumentation
        # only for the one parser written in Python (router.soap, on expat).
        with atheris.instrument_imports(include=["router.soap"]):
            from tests.fuzz.targets import TARGETS
        loaded = instrumented.check_loaded(Path(build))
        print(f"instrumented modules: {', '.join(loaded)}", file=sys.stderr, flush=True)
    else:
        with atheris.instrument_imports():
            from tests.fuzz.targets import TARGETS
    target = TARGETS[sys.argv[1]]
    # libFuzzer starts its merge (-merge=1) and fork workers as "argv[0]
    # options..." through the shell: argv[0] is the command that starts this
    # runner for this target (the environment and directory are inherited).
    this = shlex.join([sys.executable, "-m", "tests.fuzz.runner", sys.argv[1]])
    atheris.Setup([this, *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
