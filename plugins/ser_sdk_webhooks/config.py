"""Webhook endpoints, retry policy and outbox location, validated at start-up."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator

from ser_sdk.plugin import PluginConfig, resolve_config_path

from .netguard import describe, is_forbidden, literal_address


class EndpointConfig(BaseModel):
    """One receiver: where to POST, which events, how to sign, how hard to push."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="http:// or https:// URL the events are POSTed to.")
    secret: SecretStr = Field(min_length=1, description="Shared secret for the X-SER-Signature HMAC.")
    events: list[str] = Field(
        min_length=1,
        description="Event types to deliver; shell-style patterns work ('moderation.*', '*').",
    )
    name: str | None = Field(None, description="Key of this endpoint in the outbox (default: the URL).")
    timeout_s: float = Field(10.0, gt=0.0, description="Timeout of one delivery attempt.")
    max_concurrency: int = Field(4, ge=1, description="Deliveries in flight to this endpoint at once.")
    allow_private_network: bool = Field(
        False, description="Allow private, loopback and link-local addresses (refused by default)."
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip()
        try:
            url = urlsplit(value)
            url.port  # noqa: B018 - raises on a malformed port
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a valid URL: {exc}") from exc
        if url.scheme not in ("http", "https"):
            raise ValueError(f"{value!r} must start with http:// or https://")
        if not url.hostname:
            raise ValueError(f"{value!r} has no host")
        return value

    @field_validator("events")
    @classmethod
    def _events(cls, value: list[str]) -> list[str]:
        cleaned = [item.strip() for item in value]
        if any(not item for item in cleaned):
            raise ValueError("event types must not be empty strings")
        return cleaned

    @model_validator(mode="after")
    def _public_literal(self) -> EndpointConfig:
        address = literal_address(urlsplit(self.url).hostname or "")
        if address is not None and is_forbidden(address) and not self.allow_private_network:
            raise ValueError(
                f"url {self.url} points at {describe(address)}; "
                "set allow_private_network: true on this endpoint to allow it"
            )
        return self

    @property
    def key(self) -> str:
        return self.name or self.url

    def accepts(self, event_type: str) -> bool:
        return any(fnmatch.fnmatchcase(event_type, pattern) for pattern in self.events)


class RetryConfig(BaseModel):
    """Exponential backoff with jitter; after ``max_attempts`` failures a delivery is dead-lettered."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(10, ge=1, description="Attempts before a delivery is dead-lettered.")
    backoff_base_s: float = Field(1.0, gt=0.0, description="Wait after the first failure; doubles each time.")
    backoff_max_s: float = Field(600.0, gt=0.0, description="Longest wait between two attempts.")
    jitter: float = Field(
        0.5, ge=0.0, le=1.0, description="Each wait is shortened by a random share up to this fraction."
    )


class WebhooksConfig(PluginConfig):
    """Options of the ``webhooks`` plugin (YAML: ``plugins: {webhooks: {...}}``)."""

    outbox: Path = Field(
        Path("ser-outbox.sqlite"),
        description="SQLite file of undelivered events (a relative path: from the config file's folder).",
    )
    endpoints: list[EndpointConfig] = Field(
        min_length=1, description="Receivers: url, secret, events and per-endpoint limits."
    )
    retry: RetryConfig = Field(
        default_factory=RetryConfig, description="Backoff between attempts and when to dead-letter."
    )

    drain_timeout_s: float = Field(
        10.0,
        ge=0.0,
        description="On stop, how long to keep delivering before leaving the rest in the outbox.",
    )

    @field_validator("outbox")
    @classmethod
    def _outbox_beside_config(cls, outbox: Path, info: ValidationInfo) -> Path:
        return resolve_config_path(outbox, info)

    @model_validator(mode="after")
    def _unique_keys(self) -> WebhooksConfig:
        keys = [endpoint.key for endpoint in self.endpoints]
        duplicates = sorted({key for key in keys if keys.count(key) > 1})
        if duplicates:
            raise ValueError(f"endpoints repeat {', '.join(duplicates)}; give each a distinct name")
        return self
