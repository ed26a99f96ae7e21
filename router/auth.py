"""Charger passwords for OCPP security profiles 1 and 2 (HTTP Basic auth).

Stored in Redis at ``<prefix>:auth:<identity>`` as
``pbkdf2_sha256$<iterations>$<salt, base64>$<hash, base64>``. Passwords are
never logged. Verification runs on every handshake, so the default work factor
is moderate (OCPP 2.0.1 A00.FR.205 asks the CSMS to generate 16-40 character
random passwords, whose entropy does the heavy lifting), and successful checks
are remembered per process so a reconnect storm does not recompute them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections import OrderedDict

SCHEME = "pbkdf2_sha256"
DEFAULT_ITERATIONS = 10_000


class PasswordFormatError(ValueError):
    """A stored password hash is not in the expected format."""


def hash_password(password: str, *, iterations: int = DEFAULT_ITERATIONS,
                  salt: bytes | None = None) -> str:
    """Return the storable salted hash of ``password``."""
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    b64 = base64.b64encode
    return f"{SCHEME}${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str | bytes, stored: str | bytes) -> bool:
    """Check ``password`` against a value made by :func:`hash_password`.

    Raises:
        PasswordFormatError: ``stored`` is not a hash this module wrote.
    """
    if isinstance(stored, bytes):
        stored = stored.decode("ascii", "replace")
    if isinstance(password, str):
        password = password.encode()
    try:
        scheme, iters, salt_b64, hash_b64 = stored.split("$")
        if scheme != SCHEME:
            raise ValueError(scheme)
        iterations = int(iters)
        salt = base64.b64decode(salt_b64, validate=True)
        expected = base64.b64decode(hash_b64, validate=True)
    except ValueError as exc:
        raise PasswordFormatError("stored password hash has an unknown format") from exc
    digest = hashlib.pbkdf2_hmac("sha256", password, salt, iterations)
    return hmac.compare_digest(digest, expected)


class VerifiedCache:
    """Remembers (stored hash, password) pairs that verified, bounded LRU.

    The key is a SHA-256 over both, so neither is kept in memory in clear.
    A changed stored hash (``auth set``) misses the cache at once.
    """

    def __init__(self, size: int = 65536) -> None:
        self._size = size
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    @staticmethod
    def _key(password: bytes, stored: bytes) -> bytes:
        return hashlib.sha256(stored + b"\0" + password).digest()

    def verify(self, password: bytes, stored: bytes) -> bool:
        key = self._key(password, stored)
        if key in self._seen:
            self._seen.move_to_end(key)
            return True
        if not verify_password(password, stored):
            return False
        self._seen[key] = None
        if len(self._seen) > self._size:
            self._seen.popitem(last=False)
        return True
