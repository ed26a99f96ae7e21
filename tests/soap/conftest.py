"""Fixtures of the OCPP-S tests: the PKI of the WebSocket TLS tests."""

from tests.server.test_handshake import pki

__all__ = ["pki"]
