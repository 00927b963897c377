"""Reply adaptation options: per-emotion templates, the confidence bound and the escalation rule."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ser_sdk.events import Prosody
from ser_sdk.plugin import PluginConfig

Label = Literal["angry", "happy", "sad", "neutral"]

# SSML 1.1 <prosody> values: a keyword or the relative forms TTS engines accept.
_RATE = re.compile(r"^(x-slow|slow|medium|fast|x-fast|default|\d+(\.\d+)?%)$")
_PITCH = re.compile(r"^(x-low|low|medium|high|x-high|default|[+-]\d+(\.\d+)?(%|Hz|st)|\d+(\.\d+)?Hz)$")
_VOLUME = re.compile(r"^(silent|x-soft|soft|medium|loud|x-loud|default|[+-]\d+(\.\d+)?dB)$")


class ProsodyHint(BaseModel):
    """SSML ``<prosody>`` values for the TTS, checked against the SSML grammar."""

    model_config = ConfigDict(extra="forbid")

    rate: str = Field("medium", description="x-slow … x-fast, or a percentage such as 90%.")
    pitch: str = Field("medium", description="x-low … x-high, or relative such as -5%, +2st, -20Hz.")
    volume: str = Field("medium", description="silent, x-soft … x-loud, or relative such as -3dB.")

    @field_validator("rate")
    @classmethod
    def _rate(cls, value: str) -> str:
        return _check(value, _RATE, "rate", "x-slow, slow, medium, fast, x-fast or a percentage like 90%")

    @field_validator("pitch")
    @classmethod
    def _pitch(cls, value: str) -> str:
        return _check(value, _PITCH, "pitch", "x-low, low, medium, high, x-high or relative like -5%, +2st")

    @field_validator("volume")
    @classmethod
    def _volume(cls, value: str) -> str:
        return _check(value, _VOLUME, "volume", "silent, x-soft, soft, medium, loud, x-loud or like -3dB")

    def to_prosody(self) -> Prosody:
        return Prosody(rate=self.rate, pitch=self.pitch, volume=self.volume)


def _check(value: str, pattern: re.Pattern[str], name: str, allowed: str) -> str:
    value = value.strip()
    if not pattern.match(value):
        raise ValueError(f"{value!r} is not an SSML prosody {name}; use {allowed}")
    return value


class ReplyTemplate(BaseModel):
    """What to advise when the session's mood is one emotion."""

    model_config = ConfigDict(extra="forbid")

    tone: list[str] = Field(default_factory=list, description="Lines for the LLM's system prompt.")
    prosody: ProsodyHint | None = Field(None, description="TTS prosody; unset leaves the TTS default.")


DEFAULT_TEMPLATES: dict[str, ReplyTemplate] = {
    "angry": ReplyTemplate(
        tone=[
            "The user sounds angry or frustrated. Stay calm, polite and brief.",
            "Acknowledge the frustration in one sentence first, then offer one concrete next step.",
            "Do not argue, joke, blame the user or use exclamation marks.",
        ],
        prosody=ProsodyHint(rate="90%", pitch="low", volume="soft"),
    ),
    "happy": ReplyTemplate(
        tone=["The user sounds happy. Match the upbeat mood with a warm, friendly tone; keep it light."],
        prosody=ProsodyHint(rate="105%", pitch="+5%", volume="medium"),
    ),
    "sad": ReplyTemplate(
        tone=[
            "The user sounds sad or low. Be gentle and warm, and acknowledge how they feel.",
            "Keep sentences short and simple; do not push cheerfulness.",
        ],
        prosody=ProsodyHint(rate="90%", pitch="-5%", volume="soft"),
    ),
    "neutral": ReplyTemplate(),
}


class ReplyConfig(PluginConfig):
    """Options of the ``reply`` plugin (YAML: ``plugins: {reply: {...}}``)."""

    min_confidence: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Below this probability of the session's mood, the reply is left alone.",
    )
    templates: dict[Label, ReplyTemplate] = Field(
        default_factory=lambda: dict(DEFAULT_TEMPLATES),
        description="Per-emotion advice; emotions named here replace the built-in templates, the rest stay.",
    )
    escalate_after: int = Field(
        3, ge=0, description="Consecutive angry utterances that suggest a human takes over (0: never)."
    )
    escalate_min_angry: float = Field(
        0.5, gt=0.0, le=1.0, description="Angry probability at or above which an utterance counts as angry."
    )
    escalation_instruction: str = Field(
        "The user has been angry for several turns: offer to hand the conversation to a human colleague.",
        description="Tone line added when escalation is suggested.",
    )

    @field_validator("templates", mode="after")
    @classmethod
    def _merge_defaults(cls, value: dict[str, ReplyTemplate]) -> dict[str, ReplyTemplate]:
        return {**DEFAULT_TEMPLATES, **value}
