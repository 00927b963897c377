"""``ModerationPlugin``: publishes ``moderation.flag`` events for aggressive speech."""

from __future__ import annotations

import asyncio
import logging
from typing import ClassVar

from ser_sdk.errors import PluginError
from ser_sdk.events import EmotionEvent, SessionEndEvent, SessionState, Utterance
from ser_sdk.plugin import Plugin, PluginConfig

from .audio import EvidenceAudio
from .config import ModerationConfig
from .events import ModerationFlagEvent
from .policy import SessionPolicy

_log = logging.getLogger("ser_sdk_moderation")


class ModerationPlugin(Plugin):
    """Flags angry speech per session, one escalating flag per incident (see ``ModerationConfig``)."""

    name: ClassVar[str] = "moderation"
    Config: ClassVar[type[PluginConfig]] = ModerationConfig
    config: ModerationConfig

    def __init__(self, config: ModerationConfig | dict | None = None) -> None:
        super().__init__(config)
        self._sessions: dict[str, SessionPolicy] = {}
        self._audio = EvidenceAudio(self.config.audio_dir) if self.config.audio_dir is not None else None

    @property
    def logger(self) -> logging.Logger:
        return self.context.logger if self.context is not None else _log

    async def on_utterance(self, utterance: Utterance) -> None:
        if self._audio is not None:
            self._audio.hold(utterance)

    async def on_emotion(self, event: EmotionEvent, state: SessionState) -> None:
        policy = self._sessions.get(event.session_id)
        if policy is None:
            policy = self._sessions[event.session_id] = SessionPolicy(event.session_id, self.config)
        audio_path = await self._keep_audio(event, policy.is_angry(event))
        flag = policy.observe(event, audio_path=audio_path)
        if flag is not None:
            await self._publish(flag)

    async def on_session_end(self, event: SessionEndEvent, state: SessionState) -> None:
        self._sessions.pop(event.session_id, None)
        if self._audio is not None:
            self._audio.forget_session(event.session_id)

    async def _keep_audio(self, event: EmotionEvent, angry: bool) -> str | None:
        if self._audio is None:
            return None
        samples = self._audio.take(event)
        if not angry or samples is None:
            return None
        try:
            path = await asyncio.to_thread(self._audio.write, event, samples)
        except OSError as exc:
            self.logger.error("moderation: could not write evidence audio to %s: %s", self._audio.folder, exc)
            return None
        return str(path)

    async def _publish(self, flag: ModerationFlagEvent) -> None:
        if self.context is None:
            raise PluginError("ModerationPlugin was not started: the host must call start(context) first")
        self.logger.info(
            "moderation: %s flag for session %s (%s)", flag.severity, flag.session_id, flag.reason
        )
        await self.context.publish(flag)
