"""Simulated OCPP-J chargers: the load generator behind ``ocpp-router simulate``
and the benchmarks (``bench/``).

- :mod:`router.sim.messages`: pre-encoded, schema-valid charger CALLs for 1.6,
  2.0.1 and 2.1, and the chargers' answers to CSMS CALLs;
- :mod:`router.sim.loadgen`: the multi-process picows load generator
  (:class:`~router.sim.loadgen.LoadConfig`, :func:`~router.sim.loadgen.run_load`);
- :mod:`router.sim.procstat`: CPU and memory of process trees from /proc;
- :mod:`router.sim.plot`: the PNG of a run (matplotlib).

picows (and matplotlib for the plot) come with the ``sim`` extra:
``pip install 'ocpp-router[sim]'``.
"""
