"""``ReplyPlugin``: the session's running mood becomes tone, prosody and escalation advice.

It reads only the ``SessionState`` the host passes to ``adapt_reply`` (the
mood and the recent verdicts), so it holds no state of its own and any number
of sessions can share one instance.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ser_sdk.events import ReplyAdvice, SessionState
from ser_sdk.plugin import Plugin, PluginConfig

from .config import ReplyConfig


class ReplyPlugin(Plugin):
    """Adapts the assistant's next reply to how the user sounds (see ``ReplyConfig``)."""

    name: ClassVar[str] = "reply"
    Config: ClassVar[type[PluginConfig]] = ReplyConfig
    config: ReplyConfig

    async def adapt_reply(self, advice: ReplyAdvice, state: SessionState) -> ReplyAdvice | None:
        mood = state.mood
        confident = state.utterances > 0 and mood.confidence >= self.config.min_confidence
        escalation = self.escalation_reason(state)
        if not confident and escalation is None:
            return None

        update: dict[str, Any] = {
            "tone_instructions": list(advice.tone_instructions),
            "hints": dict(advice.hints),
            "applied_by": [*advice.applied_by, self.name],
        }
        if confident:
            template = self.config.templates[mood.label]
            update["tone_instructions"].extend(template.tone)
            if template.prosody is not None:
                update["prosody"] = template.prosody.to_prosody()
            update["hints"]["mood"] = {
                "label": mood.label,
                "confidence": round(mood.confidence, 4),
                "scores": {label: round(value, 4) for label, value in mood.as_dict().items()},
            }
        if escalation is not None:
            update["tone_instructions"].append(self.config.escalation_instruction)
            update["escalate"] = True
            update["escalation_reason"] = escalation
        return advice.model_copy(update=update)

    def escalation_reason(self, state: SessionState) -> str | None:
        """Why a human should take over (the last ``escalate_after`` utterances all angry), or ``None``."""
        count = self.config.escalate_after
        if count == 0 or len(state.recent) < count:
            return None
        last = state.recent[-count:]
        angry = [event.scores.angry for event in last]
        if min(angry) < self.config.escalate_min_angry:
            return None
        return (
            f"sustained anger: the last {count} utterances were angry "
            f"(angry probability {min(angry):.2f}-{max(angry):.2f})"
        )
