"""Voice activity detection: cut a live 16 kHz stream into utterances.

The segmenter follows the padded ring buffer of py-webrtcvad's ``example.py``:
it triggers when most frames in the last ``padding_ms`` are voiced (the ring's
frames become the utterance's pre-roll) and stops when most of them are
unvoiced (the trailing padding stays in the utterance). Unlike the example it
is incremental: it runs over an absolute frame index and keeps partial frames
between calls, so the events depend only on the signal, never on how it was
chunked. That lets the engine feed network packets of any size and still get
reproducible utterances.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ser_sdk.audio import SAMPLE_RATE, float_to_pcm16
from ser_sdk.errors import AudioFormatError, ConfigError, SessionClosedError

SILERO_MISSING = "backend 'silero' needs the optional extra: pip install 'ser-sdk[silero]'"


class VadConfig(BaseModel):
    """How speech is found and cut. Defaults suit conversational speech from a headset or phone."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["webrtc", "silero"] = "webrtc"
    aggressiveness: int = Field(2, ge=0, le=3, description="WebRTC VAD mode: 3 rejects the most non-speech.")
    frame_ms: Literal[10, 20, 30] = 30
    padding_ms: int = Field(
        300, gt=0, description="Ring buffer length (whole frames): pre-roll and trailing padding."
    )
    start_ratio: float = Field(
        0.9, gt=0.0, le=1.0, description="Share of voiced frames in the ring that triggers."
    )
    stop_ratio: float = Field(
        0.9, gt=0.0, le=1.0, description="Share of unvoiced frames in the ring that ends."
    )
    min_utterance_s: float = Field(
        0.4,
        ge=0.0,
        description="Utterances whose speech (start to end of last voiced frame) is shorter are dropped.",
    )
    max_utterance_s: float = Field(
        8.0, gt=0.0, description="Longer speech is cut here and continues in a new utterance."
    )
    silero_threshold: float = Field(0.5, gt=0.0, lt=1.0, description="Speech probability cut-off (silero).")

    @model_validator(mode="after")
    def _check_lengths(self) -> VadConfig:
        if self.padding_ms < self.frame_ms:
            raise ValueError(f"padding_ms ({self.padding_ms}) must be at least frame_ms ({self.frame_ms})")
        if self.max_utterance_s <= self.min_utterance_s:
            raise ValueError(
                f"max_utterance_s ({self.max_utterance_s}) must be greater than min_utterance_s"
                f" ({self.min_utterance_s})"
            )
        if self.max_utterance_s * 1000.0 < self.padding_ms + self.frame_ms:
            raise ValueError(
                f"max_utterance_s ({self.max_utterance_s}) must hold the padding ({self.padding_ms} ms)"
                f" every utterance starts with, plus one frame ({self.frame_ms} ms)"
            )
        return self


@runtime_checkable
class VadBackend(Protocol):
    """A frame classifier. Frames are int16, 16 kHz, exactly ``frame_ms`` long, fed in stream order."""

    frame_ms_supported: tuple[int, ...]

    def is_speech(self, frame: np.ndarray) -> bool: ...

    def reset(self) -> None: ...


def _check_frame(frame: np.ndarray, supported: tuple[int, ...]) -> None:
    lengths = tuple(SAMPLE_RATE * ms // 1000 for ms in supported)
    if not isinstance(frame, np.ndarray) or frame.dtype != np.int16 or frame.ndim != 1:
        raise AudioFormatError("a VAD frame must be a 1-D int16 numpy array")
    if len(frame) not in lengths:
        raise AudioFormatError(f"a VAD frame must hold one of {lengths} samples, got {len(frame)}")


class WebRtcVadBackend:
    """The WebRTC VAD (GMM on sub-band energies): tiny, fast, no model files."""

    frame_ms_supported: tuple[int, ...] = (10, 20, 30)

    def __init__(self, aggressiveness: int = 2) -> None:
        import webrtcvad

        if isinstance(aggressiveness, bool) or aggressiveness not in (0, 1, 2, 3):
            raise ConfigError(f"aggressiveness must be 0, 1, 2 or 3, got {aggressiveness!r}")
        self._factory = webrtcvad.Vad
        self.aggressiveness = aggressiveness
        self._vad = self._factory(aggressiveness)

    def is_speech(self, frame: np.ndarray) -> bool:
        _check_frame(frame, self.frame_ms_supported)
        return bool(self._vad.is_speech(frame.tobytes(), SAMPLE_RATE))

    def reset(self) -> None:
        # The WebRTC VAD adapts its noise model as it goes; a new stream needs a fresh one.
        self._vad = self._factory(self.aggressiveness)


class SileroVadBackend:
    """Silero VAD (a small neural network shipped inside the ``silero-vad`` package; no download).

    Silero judges 512-sample (32 ms) windows and is stateful. Frames are queued
    until a window is complete; each frame gets the decision of the latest
    finished window (up to 32 ms late, and ``False`` before the first window).
    Decisions depend only on the frame sequence, so the segmenter's chunking
    invariance still holds.
    """

    frame_ms_supported: tuple[int, ...] = (10, 20, 30)
    WINDOW = 512

    def __init__(self, threshold: float = 0.5) -> None:
        try:
            import torch
        except ImportError as error:
            raise ConfigError(SILERO_MISSING) from error
        threads = torch.get_num_threads()
        try:
            import silero_vad
        except ImportError as error:
            raise ConfigError(SILERO_MISSING) from error
        finally:
            # Importing silero_vad pins torch to one thread for the whole process; undo that.
            torch.set_num_threads(threads)
        if not 0.0 < threshold < 1.0:
            raise ConfigError(f"silero_threshold must lie in (0, 1), got {threshold!r}")
        self._torch = torch
        self._model = silero_vad.load_silero_vad()
        self.threshold = threshold
        self._queue = np.zeros(0, dtype=np.float32)
        self._speech = False

    def is_speech(self, frame: np.ndarray) -> bool:
        _check_frame(frame, self.frame_ms_supported)
        self._queue = np.concatenate([self._queue, frame.astype(np.float32) / 32768.0])
        while len(self._queue) >= self.WINDOW:
            window, self._queue = self._queue[: self.WINDOW], self._queue[self.WINDOW :]
            self._speech = self._probability(window) >= self.threshold
        return self._speech

    def _probability(self, window: np.ndarray) -> float:
        # The network is tiny: more than one intra-op thread only adds synchronisation, and on a
        # busy machine that costs ~100 ms per window instead of ~0.2 ms. Use one, then restore.
        torch = self._torch
        threads = torch.get_num_threads()
        if threads != 1:
            torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                return float(self._model(torch.from_numpy(np.ascontiguousarray(window)), SAMPLE_RATE))
        finally:
            if threads != 1:
                torch.set_num_threads(threads)

    def reset(self) -> None:
        self._model.reset_states()
        self._queue = np.zeros(0, dtype=np.float32)
        self._speech = False


def make_backend(config: VadConfig) -> VadBackend:
    """The frame classifier a config asks for."""
    if config.backend == "webrtc":
        return WebRtcVadBackend(config.aggressiveness)
    if config.backend == "silero":
        return SileroVadBackend(config.silero_threshold)
    raise ConfigError(f"unknown VAD backend {config.backend!r} (expected 'webrtc' or 'silero')")


@dataclass(frozen=True)
class SpeechStarted:
    """Speech has begun at ``start`` seconds (pre-roll included); a SpeechSegment with that start follows."""

    start: float


@dataclass(frozen=True, eq=False)
class SpeechSegment:
    """One utterance: 16 kHz mono float32 samples from ``start`` to ``end`` seconds into the stream.

    ``truncated`` marks a piece cut at ``max_utterance_s``; the speech goes on in
    the next segment, which starts where this one ends.
    """

    start: float
    end: float
    samples: np.ndarray = field(repr=False)
    truncated: bool = False

    @property
    def duration(self) -> float:
        return self.end - self.start

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SpeechSegment):
            return NotImplemented
        return (
            self.start == other.start
            and self.end == other.end
            and self.truncated == other.truncated
            and np.array_equal(self.samples, other.samples)
        )

    __hash__ = None  # type: ignore[assignment]


VadEvent = SpeechStarted | SpeechSegment


class _Ring:
    """Fixed-length window of recent voiced flags with a running count (O(1) per frame)."""

    def __init__(self, length: int) -> None:
        self.flags: deque[bool] = deque(maxlen=length)
        self.voiced = 0

    def add(self, voiced: bool) -> None:
        if len(self.flags) == self.flags.maxlen:
            self.voiced -= self.flags[0]
        self.flags.append(voiced)
        self.voiced += voiced

    @property
    def unvoiced(self) -> int:
        return len(self.flags) - self.voiced

    def clear(self) -> None:
        self.flags.clear()
        self.voiced = 0


class VoiceSegmenter:
    """Incremental, chunk-invariant utterance segmenter over 16 kHz mono float32 audio.

    ``push`` returns the events its samples complete: SpeechStarted once an
    utterance is sure to be kept, then exactly one SpeechSegment with the same
    start. An utterance is kept when its speech, from its start to the end of
    its last voiced frame, lasts ``min_utterance_s`` (the trailing padding does
    not count, or every trigger would pass). Speech longer than
    ``max_utterance_s`` is cut there and goes on, still triggered, in a new
    utterance; such continuations are always kept, whatever their length.
    ``flush`` ends the stream and emits the open utterance (with any trailing
    partial frame); afterwards ``push`` raises SessionClosedError until ``reset``.
    """

    def __init__(self, config: VadConfig | None = None, backend: VadBackend | None = None) -> None:
        self.config = config if config is not None else VadConfig()
        self.backend = backend if backend is not None else make_backend(self.config)
        if self.config.frame_ms not in self.backend.frame_ms_supported:
            raise ConfigError(
                f"frame_ms={self.config.frame_ms} is not supported by {type(self.backend).__name__}"
                f" (supported: {self.backend.frame_ms_supported})"
            )
        self.frame_len = SAMPLE_RATE * self.config.frame_ms // 1000
        ring_len = self.config.padding_ms // self.config.frame_ms
        self._ring_len = ring_len
        self._start_count = max(1, math.ceil(self.config.start_ratio * ring_len - 1e-9))
        self._stop_count = max(1, math.ceil(self.config.stop_ratio * ring_len - 1e-9))
        self._min_samples = round(self.config.min_utterance_s * SAMPLE_RATE)
        self._max_frames = round(self.config.max_utterance_s * SAMPLE_RATE) // self.frame_len
        self.reset()

    def reset(self) -> None:
        """Forget the stream; the next sample pushed is at time zero again."""
        self.backend.reset()
        self._leftover = np.zeros(0, dtype=np.float32)
        self._next_frame = 0
        self._samples_seen = 0
        self._closed = False
        self._ring = _Ring(self._ring_len)
        self._preroll: deque[np.ndarray] = deque(maxlen=self._ring_len)
        self._triggered = False
        self._frames: list[np.ndarray] = []
        self._utt_len = 0
        self._voiced_len = 0
        self._utt_start = 0
        self._announced = False
        self._continuation = False

    @property
    def triggered(self) -> bool:
        """True while inside an utterance."""
        return self._triggered

    @property
    def samples_seen(self) -> int:
        """Samples pushed since the start of the stream (partial frames included)."""
        return self._samples_seen

    def push(self, samples: np.ndarray) -> list[VadEvent]:
        """Feed 16 kHz mono float samples of any length; returns the events they complete."""
        if self._closed:
            raise SessionClosedError("the segmenter was flushed; call reset() to start a new stream")
        chunk = self._validate(samples)
        self._samples_seen += len(chunk)
        data = np.concatenate([self._leftover, chunk]) if self._leftover.size else chunk
        n_frames = len(data) // self.frame_len
        used = n_frames * self.frame_len
        self._leftover = data[used:].copy()
        if not n_frames:
            return []
        frames = data[:used].reshape(n_frames, self.frame_len)
        pcm = float_to_pcm16(frames)
        events: list[VadEvent] = []
        for row in range(n_frames):
            self._step(frames[row], self.backend.is_speech(pcm[row]), events)
        return events

    def flush(self) -> list[VadEvent]:
        """End the stream: emit the open utterance if it is kept, with the trailing partial frame."""
        if self._closed:
            return []
        self._closed = True
        events: list[VadEvent] = []
        if self._triggered:
            if self._leftover.size:
                self._frames.append(self._leftover)
                self._utt_len += len(self._leftover)
            self._close(events, truncated=False)
        self._leftover = np.zeros(0, dtype=np.float32)
        return events

    # ------------------------------------------------------------ internals

    @staticmethod
    def _validate(samples: object) -> np.ndarray:
        if not isinstance(samples, np.ndarray):
            raise AudioFormatError(f"expected a numpy array of 16 kHz samples, got {type(samples).__name__}")
        if samples.ndim != 1:
            raise AudioFormatError(f"expected 1-D mono samples, got shape {samples.shape}")
        if samples.dtype not in (np.float32, np.float64):
            raise AudioFormatError(f"expected float32 samples in [-1, 1], got {samples.dtype}")
        if not np.isfinite(samples).all():
            raise AudioFormatError("samples contain NaN or infinite values")
        # A private copy: callers may reuse their buffer for the next packet.
        return samples.astype(np.float32, copy=True)

    def _announce(self, events: list[VadEvent]) -> None:
        if not self._announced:
            self._announced = True
            events.append(SpeechStarted(start=self._utt_start / SAMPLE_RATE))

    def _open(self, start_sample: int, frames: list[np.ndarray], *, continuation: bool) -> None:
        self._triggered = True
        self._frames = frames
        self._utt_len = sum(len(frame) for frame in frames)
        self._voiced_len = self._utt_len
        self._utt_start = start_sample
        self._announced = False
        self._continuation = continuation

    def _close(self, events: list[VadEvent], *, truncated: bool) -> None:
        """Emit the open utterance (if kept) and leave the triggered state."""
        keep = self._utt_len > 0 and (self._continuation or self._voiced_len >= self._min_samples)
        if keep:
            self._announce(events)
            samples = np.concatenate(self._frames)
            start = self._utt_start / SAMPLE_RATE
            events.append(
                SpeechSegment(
                    start=start,
                    end=(self._utt_start + len(samples)) / SAMPLE_RATE,
                    samples=samples,
                    truncated=truncated,
                )
            )
        self._triggered = False
        self._frames = []
        self._utt_len = 0
        self._voiced_len = 0
        self._announced = False
        self._continuation = False

    def _step(self, frame: np.ndarray, voiced: bool, events: list[VadEvent]) -> None:
        index = self._next_frame
        self._next_frame += 1
        if not self._triggered:
            self._preroll.append(frame)
            self._ring.add(voiced)
            if self._ring.voiced >= self._start_count:
                first = index - len(self._preroll) + 1
                self._open(first * self.frame_len, list(self._preroll), continuation=False)
                self._preroll.clear()
                self._ring.clear()
                if self._voiced_len >= self._min_samples:
                    self._announce(events)
            return

        self._frames.append(frame)
        self._utt_len += len(frame)
        if voiced:
            self._voiced_len = self._utt_len
        self._ring.add(voiced)
        if self._continuation:
            self._announce(events)
        if self._ring.unvoiced >= self._stop_count:
            self._close(events, truncated=False)
            self._ring.clear()
        elif len(self._frames) >= self._max_frames:
            self._close(events, truncated=True)
            # Still talking: the next frame opens the continuation; the ring keeps its history.
            self._open((index + 1) * self.frame_len, [], continuation=True)
        elif self._voiced_len >= self._min_samples:
            self._announce(events)


def segment_signal(samples: np.ndarray, config: VadConfig | None = None) -> list[SpeechSegment]:
    """Segment a whole 16 kHz mono signal; a convenience over VoiceSegmenter for files."""
    segmenter = VoiceSegmenter(config)
    events = segmenter.push(samples) + segmenter.flush()
    return [event for event in events if isinstance(event, SpeechSegment)]
