"""Moderation of aggressive speech: ``moderation.flag`` events for a moderation queue."""

from .config import EscalationLevels, ModerationConfig
from .events import FlagEvidence, ModerationFlagEvent, Severity
from .plugin import ModerationPlugin
from .policy import SessionPolicy

__all__ = [
    "EscalationLevels",
    "FlagEvidence",
    "ModerationConfig",
    "ModerationFlagEvent",
    "ModerationPlugin",
    "SessionPolicy",
    "Severity",
]
