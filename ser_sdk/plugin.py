"""The ``Plugin`` base class: what a plugin author subclasses.

Every hook is an ``async`` no-op by default, so a plugin overrides only what it
needs. The host (``ser_sdk.plugins.PluginHost``) calls each hook under a timeout
and isolates failures: a plugin that raises or hangs is logged and skipped, and
the stream and the other plugins go on.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, ValidationInfo

from .events import (
    EmotionEvent,
    Event,
    ReplyAdvice,
    SessionEndEvent,
    SessionStartEvent,
    SessionState,
    SpeechStartEvent,
    Utterance,
)

CONFIG_DIR_KEY = "config_dir"


def resolve_config_path(path: Path, info: ValidationInfo) -> Path:
    """Resolve a relative path option against the config file's folder (when options came from a file).

    Use it in a plugin config's ``field_validator`` so that a YAML file means
    the same thing whatever the working directory of the process reading it.
    """
    path = path.expanduser()
    config_dir = (info.context or {}).get(CONFIG_DIR_KEY)
    if path.is_absolute() or config_dir is None:
        return path
    return Path(config_dir) / path


class PluginConfig(BaseModel):
    """Base of every plugin's configuration: unknown fields are errors, so typos fail at start-up."""

    model_config = ConfigDict(extra="forbid")


class PluginContext(Protocol):
    """What the engine lends a plugin when it starts."""

    logger: logging.Logger

    async def publish(self, event: Event) -> None:
        """Send a plugin's own event to the other plugins and to the session's event iterator."""

    def session_state(self, session_id: str) -> SessionState | None:
        """The live state of an open session, or ``None`` once it has ended."""


class Plugin:
    """Subclass, set ``name`` (and ``Config`` for options), override the hooks you need.

    ``timeout`` bounds each hook call in seconds (``None`` uses the host's default).
    """

    name: ClassVar[str] = "plugin"
    Config: ClassVar[type[PluginConfig]] = PluginConfig
    timeout: ClassVar[float | None] = None

    def __init__(self, config: PluginConfig | dict[str, Any] | None = None) -> None:
        if config is None:
            config = self.Config()
        elif isinstance(config, dict):
            config = self.Config.model_validate(config)
        self.config = config
        self.context: PluginContext | None = None

    async def start(self, context: PluginContext) -> None:
        """Called once before any session; keep ``context`` to publish events later."""
        self.context = context

    async def stop(self) -> None:
        """Called once when the engine closes: flush and release resources here."""

    async def on_session_start(self, event: SessionStartEvent, state: SessionState) -> None:
        """A new audio stream opened."""

    async def on_session_end(self, event: SessionEndEvent, state: SessionState) -> None:
        """A stream closed; its last utterance has already been classified."""

    async def on_speech_start(self, event: SpeechStartEvent) -> None:
        """The VAD heard speech begin."""

    async def on_utterance(self, utterance: Utterance) -> None:
        """A complete utterance (with its samples) was cut, before classification."""

    async def on_emotion(self, event: EmotionEvent, state: SessionState) -> None:
        """An utterance was classified; ``state.mood`` already includes it."""

    async def on_event(self, event: Event) -> None:
        """Every event of every type, including those other plugins publish (not those this one publishes)."""

    async def adapt_reply(self, advice: ReplyAdvice, state: SessionState) -> ReplyAdvice | None:
        """Rewrite or annotate the assistant's next reply; return ``None`` to leave it unchanged."""
        return None
