"""Fuzz targets (atheris) for the WebSocket frame parser and upgrade parser.

``python -m tests.fuzz --seconds N`` runs every target for N seconds each;
``make fuzz`` runs them long, ``tests/fuzz/test_fuzz.py`` briefly.
"""
