"""Password hashes for dashboard users: scrypt from the standard library.

Encoded as ``scrypt$<log2 n>$<r>$<p>$<salt hex>$<hash hex>`` so the cost can grow
later without breaking stored hashes. Hashing costs ~50 ms of CPU: callers on the
event loop run it in a thread (``trio.to_thread.run_sync``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

LOG2_N = 14
R = 8
P = 1
SALT_BYTES = 16
KEY_BYTES = 32
MAX_PASSWORD_BYTES = 1024
"""Longer passwords are refused before hashing (no CPU spent on a megabyte of input)."""


MIN_PASSWORD = 12
"""The shortest password a dashboard user may have (the Users page and ``hash-password``)."""


def hash_password(password: str, *, salt: bytes | None = None, log2_n: int = LOG2_N) -> str:
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = _derive(password.encode("utf-8"), salt, log2_n, R, P)
    return f"scrypt${log2_n}${R}${P}${salt.hex()}${digest.hex()}"


def _derive(password: bytes, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    n = 1 << log2_n
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=256 * n * r + (1 << 20),
                          dklen=KEY_BYTES)  # fmt: skip


def is_password_hash(encoded: str) -> bool:
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return False
    try:
        log2_n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        bytes.fromhex(parts[4]), bytes.fromhex(parts[5])
    except ValueError:
        return False
    return 10 <= log2_n <= 20 and 1 <= r <= 32 and 1 <= p <= 16


def verify_password(password: str, encoded: str) -> bool:
    """True when ``password`` matches ``encoded``; False for any malformed hash."""
    raw = password.encode("utf-8")
    if len(raw) > MAX_PASSWORD_BYTES or not is_password_hash(encoded):
        return False
    _, log2_n, r, p, salt, digest = encoded.split("$")
    got = _derive(raw, bytes.fromhex(salt), int(log2_n), int(r), int(p))
    return hmac.compare_digest(got, bytes.fromhex(digest))


__all__ = [
    "MAX_PASSWORD_BYTES",
    "MIN_PASSWORD",
    "hash_password",
    "is_password_hash",
    "verify_password",
]
