"""The flagging decision for one session, kept free of I/O so it can be tested on scripted sequences.

Times are the session's own clock (seconds of audio), not wall time, so a
recorded file and a live stream are judged the same way.
"""

from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass, field

from ser_sdk.events import EmotionEvent

from .config import ModerationConfig
from .events import SEVERITY_RANK, FlagEvidence, ModerationFlagEvent, Severity


@dataclass
class _Incident:
    incident_id: str
    start: float
    last_end: float
    severity: Severity
    angry_utterances: int
    evidence: deque[FlagEvidence] = field(default_factory=deque)


class SessionPolicy:
    """Decides, utterance by utterance, whether a session's speech warrants a flag."""

    def __init__(self, session_id: str, config: ModerationConfig) -> None:
        self.session_id = session_id
        self.config = config
        self._window: deque[float] = deque()  # end times of recent angry utterances
        self._incident: _Incident | None = None

    def is_angry(self, event: EmotionEvent) -> bool:
        """Whether the utterance counts as angry under the configured threshold and confidence floor."""
        return event.confidence >= self.config.min_confidence and event.scores.angry >= self.config.threshold

    def severity_for(self, angry_in_window: int) -> Severity:
        levels = self.config.escalation
        if angry_in_window >= levels.high:
            return "high"
        if angry_in_window >= levels.medium:
            return "medium"
        return "low"

    def observe(self, event: EmotionEvent, audio_path: str | None = None) -> ModerationFlagEvent | None:
        """Take the next classified utterance; return a flag when one is due, else ``None``."""
        if not self.is_angry(event):
            return None
        evidence = FlagEvidence(
            emotion_event_id=event.event_id,
            start=event.start,
            end=event.end,
            angry=event.scores.angry,
            label=event.label,
            confidence=event.confidence,
            audio_path=audio_path,
        )
        self._window.append(event.end)
        while self._window and self._window[0] < event.end - self.config.window_s:
            self._window.popleft()
        severity = self.severity_for(len(self._window))

        incident = self._incident
        if incident is not None and event.start - incident.last_end <= self.config.cooldown_s:
            incident.evidence.append(evidence)
            incident.angry_utterances += 1
            incident.last_end = max(incident.last_end, event.end)
            if SEVERITY_RANK[severity] <= SEVERITY_RANK[incident.severity]:
                return None
            incident.severity = severity
            return self._flag(incident, escalated=True)

        incident = _Incident(
            incident_id=uuid.uuid4().hex,
            start=event.start,
            last_end=event.end,
            severity=severity,
            angry_utterances=1,
            evidence=deque([evidence], maxlen=self.config.max_evidence),
        )
        self._incident = incident
        return self._flag(incident, escalated=False)

    def _flag(self, incident: _Incident, *, escalated: bool) -> ModerationFlagEvent:
        return ModerationFlagEvent(
            session_id=self.session_id,
            incident_id=incident.incident_id,
            start=incident.start,
            end=incident.last_end,
            severity=incident.severity,
            reason=self._reason(incident),
            angry_utterances=incident.angry_utterances,
            evidence=tuple(incident.evidence),
            escalated=escalated,
        )

    def _reason(self, incident: _Incident) -> str:
        peak = max(item.angry for item in incident.evidence)
        in_window = len(self._window)
        if in_window == 1:
            return (
                f"angry speech (angry probability {peak:.2f}, threshold {self.config.threshold:.2f}); "
                f"severity {incident.severity}"
            )
        return (
            f"{in_window} angry utterances within {self.config.window_s:g} s "
            f"(peak angry probability {peak:.2f}); severity {incident.severity}"
        )
