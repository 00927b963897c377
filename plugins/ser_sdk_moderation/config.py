"""Moderation policy options, validated at start-up so a typo or an impossible policy fails early."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from ser_sdk.plugin import PluginConfig, resolve_config_path


class EscalationLevels(BaseModel):
    """How many angry utterances inside ``window_s`` raise an incident to each severity.

    One angry utterance is ``low``; the counts here step it up.
    """

    model_config = ConfigDict(extra="forbid")

    medium: int = Field(2, ge=2, description="Angry utterances within the window for severity 'medium'.")
    high: int = Field(4, ge=2, description="Angry utterances within the window for severity 'high'.")

    @model_validator(mode="after")
    def _ordered(self) -> EscalationLevels:
        if self.high < self.medium:
            raise ValueError(f"high ({self.high}) must be at least medium ({self.medium})")
        return self


class ModerationConfig(PluginConfig):
    """Options of the ``moderation`` plugin (YAML: ``plugins: {moderation: {...}}``)."""

    # 0.65 was chosen on the validation speakers: the lowest threshold that still flags
    # over 80 % of angry utterances while wrongly flagging the fewest others.
    threshold: float = Field(
        0.65,
        gt=0.0,
        le=1.0,
        description="An utterance counts as angry when its angry probability is at least this.",
    )
    min_confidence: float = Field(
        0.4,
        ge=0.0,
        le=1.0,
        description=(
            "Nothing is flagged when the model's top probability for the utterance is below this "
            "(it matters once threshold is lowered below 0.5)."
        ),
    )
    window_s: float = Field(
        60.0, gt=0.0, description="Angry utterances this many seconds apart or closer count together."
    )
    escalation: EscalationLevels = Field(
        default_factory=EscalationLevels,
        description="Angry utterances within window_s that raise the severity to medium and to high.",
    )
    cooldown_s: float = Field(
        30.0,
        ge=0.0,
        description=(
            "After a flag, angry utterances join that flag's incident (re-flagged only when the severity "
            "rises) until this many seconds pass without one."
        ),
    )
    max_evidence: int = Field(20, ge=1, description="Newest utterances kept as evidence per incident.")
    audio_dir: Path | None = Field(
        None,
        description=(
            "Where to write the evidence utterances as WAV files (a relative path: from the config "
            "file's folder). Unset (the default), no audio is kept."
        ),
    )

    @field_validator("audio_dir")
    @classmethod
    def _audio_dir_beside_config(cls, audio_dir: Path | None, info: ValidationInfo) -> Path | None:
        return resolve_config_path(audio_dir, info) if audio_dir is not None else None
