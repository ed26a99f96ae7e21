"""Fixtures of the simulator tests."""

from tests.server.test_handshake import pki  # noqa: F401  (a CA and a server certificate)
