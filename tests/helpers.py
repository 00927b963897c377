"""Synthetic signals and a scripted model shared by the test modules."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ser_sdk.events import LABELS, EmotionScores

SR = 16000

PHRASES = [(0.6, 2.1), (3.1, 5.1), (6.0, 7.2)]
"""Where the three phrases of ``phrases_signal()`` are (seconds)."""


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SR), dtype=np.float32)


def speech_like(seconds: float, seed: int = 0, f0: float = 140.0) -> np.ndarray:
    """Voiced-speech stand-in that webrtcvad fires on: a harmonic-rich glottal tone with vibrato
    plus breath noise, amplitude-modulated at a syllable rate of 4 Hz."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.1 * np.sin(2 * np.pi * 1.3 * t))) / SR
    voice = sum(np.sin(k * phase) / k for k in range(1, 20))
    syllables = 0.75 - 0.25 * np.cos(2 * np.pi * 4.0 * t)
    return (0.12 * voice * syllables + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def phrases_signal() -> np.ndarray:
    """Three phrases of different pitch at ``PHRASES``, with silence between and after them."""
    parts, cursor = [], 0.0
    for number, (start, end) in enumerate(PHRASES):
        parts += [silence(start - cursor), speech_like(end - start, seed=number, f0=140 + 50 * number)]
        cursor = end
    parts.append(silence(0.8))
    return np.concatenate(parts)


def voiced_bursts(count: int, seconds: float = 1.2, gap: float = 1.0) -> np.ndarray:
    """``count`` harmonic bursts (the VAD hears them as speech), each preceded and followed by silence."""
    t = np.arange(int(seconds * SR)) / SR
    burst = sum(np.sin(2 * np.pi * 160.0 * k * t) / k for k in range(1, 8))
    burst = 0.15 * np.minimum(1.0, np.minimum(t, seconds - t) / 0.05) * burst
    gap_samples = np.zeros(int(gap * SR))
    return np.concatenate([gap_samples, *([burst, gap_samples] * count)]).astype(np.float32)


def angry_scores(angry: float) -> EmotionScores:
    """``angry`` on angry, the rest of the probability on neutral."""
    return EmotionScores.from_probs([angry, 0.0, 0.0, 1.0 - angry])


class ScriptedClassifier:
    """A model stand-in (the engine's edge) that gives the n-th utterance the n-th scores."""

    model_id = "scripted"
    labels = LABELS

    def __init__(self, scores: Sequence[EmotionScores]) -> None:
        self._scores = list(scores)

    @classmethod
    def angry(cls, probabilities: Sequence[float]) -> ScriptedClassifier:
        """Utterance n gets angry probability ``probabilities[n]``, the rest neutral."""
        return cls([angry_scores(p) for p in probabilities])

    def classify(self, batch: Sequence[np.ndarray]) -> list[EmotionScores]:
        return [self._scores.pop(0) for _ in batch]
