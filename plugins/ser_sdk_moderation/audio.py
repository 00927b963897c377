"""Evidence audio, kept only when ``audio_dir`` is configured.

Samples arrive in ``on_utterance`` before the utterance is classified, so a few
recent utterances per session are held in memory until their verdict arrives;
only those that become evidence are written, as 16-bit WAV files.
"""

from __future__ import annotations

import re
from collections import deque
from pathlib import Path

import numpy as np
import soundfile as sf

from ser_sdk.events import EmotionEvent, Utterance

_PENDING_PER_SESSION = 8
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def _span_key(start: float, end: float) -> tuple[int, int]:
    return round(start * 1000), round(end * 1000)


class EvidenceAudio:
    """Holds the samples of recent utterances and writes the ones that become evidence."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._pending: dict[str, deque[tuple[tuple[int, int], np.ndarray]]] = {}

    def hold(self, utterance: Utterance) -> None:
        queue = self._pending.setdefault(utterance.session_id, deque(maxlen=_PENDING_PER_SESSION))
        queue.append((_span_key(utterance.start, utterance.end), utterance.samples))

    def take(self, event: EmotionEvent) -> np.ndarray | None:
        """The samples of the utterance ``event`` classified, removed from memory (``None`` if unseen)."""
        queue = self._pending.get(event.session_id)
        if not queue:
            return None
        key = _span_key(event.start, event.end)
        for index, (span, samples) in enumerate(queue):
            if span == key:
                del queue[index]
                return samples
        return None

    def forget_session(self, session_id: str) -> None:
        self._pending.pop(session_id, None)

    def write(self, event: EmotionEvent, samples: np.ndarray) -> Path:
        """Write one evidence clip (blocking: call it off the event loop)."""
        folder = self.folder / _UNSAFE.sub("_", event.session_id)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{event.start:010.3f}-{event.event_id}.wav"
        sf.write(path, np.asarray(samples, dtype=np.float32), Utterance.SAMPLE_RATE, subtype="PCM_16")
        return path
