"""Webhook signatures: ``X-SER-Signature: t=<unix seconds>,v1=<hex>``.

``<hex>`` is HMAC-SHA256 with the endpoint's secret over ``b"<t>."`` followed
by the exact request body. The timestamp is signed too, so a captured request
cannot be replayed after the receiver's tolerance window; several ``v1=``
entries may appear (a receiver accepts any), which allows rotating secrets.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-SER-Signature"
EVENT_ID_HEADER = "X-SER-Event-Id"
EVENT_TYPE_HEADER = "X-SER-Event-Type"


def _as_bytes(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def compute_signature(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``b"<timestamp>." + body``."""
    message = str(int(timestamp)).encode("ascii") + b"." + body
    return hmac.new(_as_bytes(secret), message, hashlib.sha256).hexdigest()


def sign(secret: str | bytes, body: bytes, timestamp: int | None = None) -> str:
    """The ``X-SER-Signature`` header value for ``body`` (signed now unless ``timestamp`` is given)."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={t},v1={compute_signature(secret, t, body)}"


def parse_signature_header(header: str) -> tuple[int, list[str]] | None:
    """``(t, [v1, ...])`` from a header value, or ``None`` when it is malformed."""
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            return None
        if key == "t":
            if not value.isdigit():
                return None
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value.lower())
    if timestamp is None or not signatures:
        return None
    return timestamp, signatures


def verify_signature(
    secret: str | bytes,
    header: str | None,
    body: bytes,
    tolerance_s: float = 300,
    now: float | None = None,
) -> bool:
    """Whether ``header`` is a valid signature of ``body`` made with ``secret`` within ``tolerance_s``.

    Pass the raw request body exactly as received (before any JSON parsing).
    """
    if not header:
        return False
    parsed = parse_signature_header(header)
    if parsed is None:
        return False
    timestamp, signatures = parsed
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = compute_signature(secret, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in signatures)
