"""Moved to :mod:`router.sim.messages`: the bench and ``ocpp-router simulate`` share one
load generator. This name stays so that old imports work."""

import sys

from router.sim import messages as _module

sys.modules[__name__] = _module
