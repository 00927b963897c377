"""Signed webhooks with a durable SQLite outbox, retries, dead-lettering and address checks."""

from .config import EndpointConfig, RetryConfig, WebhooksConfig
from .outbox import Delivery, EndpointStats, Outbox
from .plugin import FlushResult, WebhooksPlugin
from .signing import (
    EVENT_ID_HEADER,
    EVENT_TYPE_HEADER,
    SIGNATURE_HEADER,
    compute_signature,
    sign,
    verify_signature,
)

__all__ = [
    "EVENT_ID_HEADER",
    "EVENT_TYPE_HEADER",
    "SIGNATURE_HEADER",
    "Delivery",
    "EndpointConfig",
    "EndpointStats",
    "FlushResult",
    "Outbox",
    "RetryConfig",
    "WebhooksConfig",
    "WebhooksPlugin",
    "compute_signature",
    "sign",
    "verify_signature",
]
