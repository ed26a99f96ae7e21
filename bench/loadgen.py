"""Moved to :mod:`router.sim.loadgen`: the bench and ``ocpp-router simulate`` share one
load generator. This name stays so ``python -m bench.loadgen`` and old imports work."""

import sys

from router.sim import loadgen as _module

if __name__ == "__main__":
    sys.exit(_module.main())  # type: ignore[attr-defined]
sys.modules[__name__] = _module
