"""Pydantic models for everything that leaves the engine: events, scores, session state, reply advice.

Every event has a ``type`` string and a unique ``event_id``, so that the CLI, the
server and the webhooks plugin can serialise any event (including the ones
plugins publish) the same way, with ``event.model_dump(mode="json")``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

LABELS: tuple[str, ...] = ("angry", "happy", "sad", "neutral")
"""The four classes, in the order every model and score vector uses."""


def new_event_id() -> str:
    return uuid.uuid4().hex


class EmotionScores(BaseModel):
    """Probabilities of the four emotions; they sum to one."""

    model_config = ConfigDict(frozen=True)

    angry: float = Field(ge=0.0, le=1.0)
    happy: float = Field(ge=0.0, le=1.0)
    sad: float = Field(ge=0.0, le=1.0)
    neutral: float = Field(ge=0.0, le=1.0)

    @classmethod
    def from_probs(cls, probs: Sequence[float] | np.ndarray) -> EmotionScores:
        """Build from a probability vector in ``LABELS`` order (renormalised to sum to one)."""
        values = np.asarray(probs, dtype=np.float64).reshape(-1)
        if values.shape != (len(LABELS),):
            raise ValueError(f"expected {len(LABELS)} probabilities, got {values.shape}")
        values = np.clip(values, 0.0, None)
        total = float(values.sum())
        values = values / total if total > 0 else np.full(len(LABELS), 1.0 / len(LABELS))
        return cls(**{label: float(v) for label, v in zip(LABELS, values, strict=False)})

    @classmethod
    def uniform(cls) -> EmotionScores:
        return cls.from_probs(np.ones(len(LABELS)))

    def as_array(self) -> np.ndarray:
        return np.array([getattr(self, label) for label in LABELS], dtype=np.float64)

    def as_dict(self) -> dict[str, float]:
        return {label: getattr(self, label) for label in LABELS}

    @property
    def label(self) -> str:
        """The most probable emotion."""
        return LABELS[int(np.argmax(self.as_array()))]

    @property
    def confidence(self) -> float:
        """The probability of the most probable emotion."""
        return float(self.as_array().max())


class Event(BaseModel):
    """Base of every event delivered to plugins and to a session's event iterator.

    Plugins publish their own events by subclassing this with a new ``type``
    (for example ``"moderation.flag"``).
    """

    model_config = ConfigDict(frozen=True)

    type: str
    session_id: str
    event_id: str = Field(default_factory=new_event_id)
    created_at: float = Field(default_factory=time.time, description="Unix time the event was made.")


class SessionStartEvent(Event):
    type: Literal["session.start"] = "session.start"
    sample_rate: int


class SessionEndEvent(Event):
    type: Literal["session.end"] = "session.end"
    duration: float = Field(description="Seconds of audio the session received.")
    utterances: int


class SpeechStartEvent(Event):
    """The VAD has triggered: someone started talking at ``start`` seconds into the session."""

    type: Literal["speech.start"] = "speech.start"
    start: float


class UtteranceEvent(Event):
    """A complete utterance cut by the VAD, before classification."""

    type: Literal["utterance"] = "utterance"
    start: float
    end: float
    truncated: bool = Field(False, description="True when the VAD cut it at the maximum length.")


class EmotionEvent(Event):
    """The model's verdict on one utterance."""

    type: Literal["emotion"] = "emotion"
    start: float
    end: float
    label: str
    confidence: float
    scores: EmotionScores
    model_id: str

    @classmethod
    def from_scores(
        cls, scores: EmotionScores, *, session_id: str, start: float, end: float, model_id: str
    ) -> EmotionEvent:
        """The verdict for ``scores``, its ``label`` and ``confidence`` taken from them."""
        return cls(
            session_id=session_id,
            start=start,
            end=end,
            label=scores.label,
            confidence=scores.confidence,
            scores=scores,
            model_id=model_id,
        )


class Utterance(BaseModel):
    """One utterance with its audio: 16 kHz mono float32 samples in [-1, 1].

    Handed to ``Plugin.on_utterance``; the samples never leave the process unless
    a plugin chooses to keep them.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    SAMPLE_RATE: ClassVar[int] = 16000

    session_id: str
    start: float
    end: float
    samples: np.ndarray = Field(repr=False, exclude=True)
    truncated: bool = False

    @property
    def duration(self) -> float:
        return self.end - self.start

    def to_event(self) -> UtteranceEvent:
        return UtteranceEvent(
            session_id=self.session_id, start=self.start, end=self.end, truncated=self.truncated
        )


class SessionState(BaseModel):
    """The running picture of one session that plugins may read (never write).

    ``mood`` is an exponential moving average of the emotion scores, weighted by
    confidence, so one stray utterance does not flip it.
    """

    session_id: str
    sample_rate: int
    started_at: float = Field(default_factory=time.time)
    audio_seconds: float = 0.0
    utterances: int = 0
    mood: EmotionScores = Field(default_factory=EmotionScores.uniform)
    last_emotion: EmotionEvent | None = None
    recent: list[EmotionEvent] = Field(default_factory=list, description="Newest last, bounded.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Free-form, set by the host.")

    @property
    def mood_label(self) -> str:
        """The running mood's emotion; ``"neutral"`` until something has been heard."""
        return self.mood.label if self.utterances else "neutral"


class Prosody(BaseModel):
    """TTS prosody hints, in SSML ``<prosody>`` terms (rate and pitch as SSML strings)."""

    rate: str = "medium"
    pitch: str = "medium"
    volume: str = "medium"

    def to_ssml(self, text: str) -> str:
        from xml.sax.saxutils import escape

        return (
            f'<speak><prosody rate="{self.rate}" pitch="{self.pitch}" volume="{self.volume}">'
            f"{escape(text)}</prosody></speak>"
        )


class ReplyAdvice(BaseModel):
    """The assistant's next reply plus the hints plugins attached to it.

    ``adapt_reply`` plugins form a chain: each receives the advice so far and
    returns it (possibly rewritten) for the next.
    """

    text: str
    tone_instructions: list[str] = Field(default_factory=list, description="Lines for an LLM system prompt.")
    prosody: Prosody | None = None
    escalate: bool = Field(False, description="Suggest handing the conversation to a human.")
    escalation_reason: str | None = None
    hints: dict[str, Any] = Field(default_factory=dict)
    applied_by: list[str] = Field(default_factory=list, description="Plugins that changed the advice.")

    def ssml(self) -> str:
        """The reply text wrapped in SSML prosody (neutral prosody when none was advised)."""
        return (self.prosody or Prosody()).to_ssml(self.text)


def event_to_json_dict(event: Event, **extra: Any) -> dict[str, Any]:
    """The JSON-ready dict of an event, with ``extra`` fields (such as a file path) merged in."""
    data = event.model_dump(mode="json")
    data.update(extra)
    return data
