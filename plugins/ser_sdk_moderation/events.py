"""The ``moderation.flag`` event: what a moderation queue receives."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ser_sdk.events import Event

Severity = Literal["low", "medium", "high"]
SEVERITY_RANK: dict[str, int] = {"low": 0, "medium": 1, "high": 2}


class FlagEvidence(BaseModel):
    """One angry utterance behind a flag (its audio only when ``audio_dir`` is configured)."""

    model_config = ConfigDict(frozen=True)

    emotion_event_id: str = Field(description="The ``event_id`` of the EmotionEvent this came from.")
    start: float
    end: float
    angry: float = Field(description="The model's angry probability for the utterance.")
    label: str
    confidence: float
    audio_path: str | None = None


class ModerationFlagEvent(Event):
    """Aggressive speech for a moderation queue.

    A shouting match is one *incident*: it is flagged once, then flagged again
    (same ``incident_id``, ``escalated`` true) only when its severity rises, so
    a queue keyed on ``incident_id`` shows one entry with the latest severity.
    """

    type: Literal["moderation.flag"] = "moderation.flag"
    incident_id: str
    start: float = Field(description="Seconds into the session where the incident's first evidence begins.")
    end: float = Field(description="Seconds into the session where its newest evidence ends.")
    severity: Severity
    reason: str
    angry_utterances: int = Field(description="Angry utterances in the incident so far.")
    evidence: tuple[FlagEvidence, ...] = Field(description="The incident's newest angry utterances.")
    escalated: bool = Field(False, description="True when this raises the severity of an earlier flag.")
