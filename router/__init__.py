"""ocpp-router: a stateless OCPP-J front tier.

Charger WebSockets in, Redis Streams out; backend replies and commands back to
whichever node holds the charger's socket. See docs/architecture.md.
"""

__version__ = "0.1.0"
