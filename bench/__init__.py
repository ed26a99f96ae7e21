"""Benchmarks of ocpp-router: the load generator, the anchors and the scenarios.

Plain scripts with argparse (``python -m bench.run --help``); the method and
the machine are in ``bench/README.md``, the figures in ``bench/RESULTS.md``.
"""
