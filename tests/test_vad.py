"""VAD segmentation: exact trigger/stop semantics, chunk invariance, cutting, dropping, real speech."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import silence, speech_like
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ser_sdk.audio import SAMPLE_RATE, float_to_pcm16, load_audio
from ser_sdk.errors import AudioFormatError, ConfigError, SessionClosedError
from ser_sdk.vad import (
    SpeechSegment,
    SpeechStarted,
    VadBackend,
    VadConfig,
    VoiceSegmenter,
    WebRtcVadBackend,
    make_backend,
    segment_signal,
)

FRAME = 480  # 30 ms


def run(samples: np.ndarray, sizes: list[int] | None = None, config: VadConfig | None = None) -> list:
    """All events for a signal fed whole (sizes None) or in chunks cycling through ``sizes``."""
    segmenter = VoiceSegmenter(config)
    events: list = []
    if sizes is None:
        events += segmenter.push(samples)
    else:
        pos, i = 0, 0
        while pos < len(samples):
            size = sizes[i % len(sizes)]
            events += segmenter.push(samples[pos : pos + size])
            pos += size
            i += 1
    assert segmenter.samples_seen == len(samples)
    return events + segmenter.flush()


def segments(events: list) -> list[SpeechSegment]:
    return [event for event in events if isinstance(event, SpeechSegment)]


class EnergyBackend:
    """Voiced means 'not digital silence': makes the segmenter's timing exactly predictable."""

    frame_ms_supported = (10, 20, 30)

    def __init__(self) -> None:
        self.frames = 0

    def is_speech(self, frame: np.ndarray) -> bool:
        self.frames += 1
        return bool(np.any(frame != 0))

    def reset(self) -> None:
        self.frames = 0


@pytest.fixture(scope="module")
def synthetic() -> np.ndarray:
    """Three phrases (1.5 s, 2 s, 0.9 s) separated by silence."""
    return np.concatenate(
        [
            silence(0.7),
            speech_like(1.5, seed=1),
            silence(1.0),
            speech_like(2.0, seed=2, f0=210.0),
            silence(0.8),
            speech_like(0.9, seed=3),
            silence(0.6),
        ]
    )


# ---------------------------------------------------------------- backends


def test_webrtc_backend_fires_on_the_synthetic_speech() -> None:
    backend = WebRtcVadBackend(2)
    voiced = float_to_pcm16(speech_like(1.0)[: 33 * FRAME]).reshape(33, FRAME)
    quiet = np.zeros((33, FRAME), dtype=np.int16)
    assert sum(backend.is_speech(frame) for frame in voiced) >= 30
    backend.reset()
    assert not any(backend.is_speech(frame) for frame in quiet)


def test_webrtc_backend_checks_frames_and_mode() -> None:
    backend = WebRtcVadBackend()
    assert isinstance(backend, VadBackend)
    with pytest.raises(AudioFormatError, match="samples"):
        backend.is_speech(np.zeros(400, dtype=np.int16))
    with pytest.raises(AudioFormatError, match="int16"):
        backend.is_speech(np.zeros(FRAME, dtype=np.float32))
    with pytest.raises(ConfigError, match="aggressiveness"):
        WebRtcVadBackend(4)


def test_silero_backend_explains_the_missing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "silero_vad", None)  # makes the import fail
    with pytest.raises(ConfigError, match=r"pip install 'ser-sdk\[silero\]'"):
        make_backend(VadConfig(backend="silero"))


def test_backend_must_support_the_frame_length() -> None:
    class TenMsOnly(EnergyBackend):
        frame_ms_supported = (10,)

    with pytest.raises(ConfigError, match="frame_ms=30"):
        VoiceSegmenter(VadConfig(), TenMsOnly())


# ---------------------------------------------------------------- exact semantics


def test_trigger_and_stop_follow_the_padded_ring_buffer() -> None:
    # 33 silent frames, 50 voiced, 40 silent; ring of 10 frames, 9 needed either way.
    signal = np.concatenate([silence(33 * 0.03), np.full(50 * FRAME, 0.25, np.float32), silence(40 * 0.03)])
    segmenter = VoiceSegmenter(VadConfig(), EnergyBackend())
    events = segmenter.push(signal) + segmenter.flush()

    # The 9th voiced frame (index 41) triggers; the ring then holds frames 32..41: pre-roll of one
    # silent frame. The 9th silent frame after the speech (index 91) stops it, trailing padding kept.
    assert events[0] == SpeechStarted(start=32 * 0.03)
    (segment,) = segments(events)
    assert segment.start == pytest.approx(0.96)
    assert segment.end == pytest.approx(92 * 0.03)
    np.testing.assert_array_equal(segment.samples, signal[32 * FRAME : 92 * FRAME])
    assert not segment.truncated


def test_speech_started_comes_once_the_utterance_is_sure_to_be_kept() -> None:
    config = VadConfig(min_utterance_s=0.6)
    segmenter = VoiceSegmenter(config, EnergyBackend())
    signal = np.concatenate([silence(0.3), np.full(30 * FRAME, 0.25, np.float32), silence(0.6)])
    events: list = []
    announced_at = None
    for start in range(0, len(signal), FRAME):
        events += segmenter.push(signal[start : start + FRAME])
        if announced_at is None and events:
            announced_at = segmenter.samples_seen
    events += segmenter.flush()
    # Speech starts at frame 10; the trigger (frame 18) opens the utterance at frame 9, and 0.6 s of
    # it (20 frames: frame 28) must be voiced before it is announced.
    assert announced_at == 29 * FRAME
    assert [type(event) for event in events] == [SpeechStarted, SpeechSegment]
    assert events[0].start == events[1].start == pytest.approx(0.27)


def test_flush_keeps_the_open_utterance_and_its_partial_frame() -> None:
    signal = np.concatenate([silence(0.5), np.full(40 * FRAME + 123, 0.25, np.float32)])
    segmenter = VoiceSegmenter(VadConfig(), EnergyBackend())
    assert segments(segmenter.push(signal)) == []
    assert segmenter.triggered
    (segment,) = segments(segmenter.flush())
    assert segment.end == pytest.approx(len(signal) / SAMPLE_RATE)
    np.testing.assert_array_equal(segment.samples, signal[round(segment.start * SAMPLE_RATE) :])


def test_min_length_drops_short_blips() -> None:
    # A 0.2 s blip does trigger (webrtc's hangover stretches it), so only the minimum drops it.
    blip = np.concatenate([silence(1.0), speech_like(0.2), silence(1.0)])
    assert run(blip) == []
    kept = segments(run(blip, config=VadConfig(min_utterance_s=0.0)))
    assert len(kept) == 1
    phrase = np.concatenate([silence(1.0), speech_like(0.6), silence(1.0)])
    assert len(segments(run(phrase))) == 1


@pytest.mark.parametrize(
    "signal",
    [
        silence(4.0),
        (0.003 * np.random.default_rng(1).standard_normal(4 * SAMPLE_RATE)).astype(np.float32),
        (0.01 * np.random.default_rng(2).standard_normal(4 * SAMPLE_RATE)).astype(np.float32),
    ],
    ids=["zeros", "noise-50dB", "noise-40dB"],
)
def test_silence_and_low_noise_give_no_events(signal: np.ndarray) -> None:
    assert run(signal) == []


def test_long_speech_is_cut_at_the_maximum_and_nothing_is_dropped() -> None:
    config = VadConfig(max_utterance_s=2.0)
    signal = np.concatenate([silence(1.0), speech_like(7.0), silence(1.0)])
    events = run(signal, config=config)
    pieces = segments(events)

    assert len(pieces) == 4
    assert [piece.truncated for piece in pieces] == [True, True, True, False]
    max_samples = (2 * SAMPLE_RATE) // FRAME * FRAME
    assert all(len(piece.samples) == max_samples for piece in pieces[:-1])
    for before, after in itertools.pairwise(pieces):
        assert after.start == before.end
    # Every piece was announced, in order, right before it could be emitted.
    starts = [event.start for event in events if isinstance(event, SpeechStarted)]
    assert starts == [piece.start for piece in pieces]
    # Together they are exactly the signal from the first start to the last end, covering the speech.
    first, last = round(pieces[0].start * SAMPLE_RATE), round(pieces[-1].end * SAMPLE_RATE)
    np.testing.assert_array_equal(np.concatenate([piece.samples for piece in pieces]), signal[first:last])
    assert pieces[0].start <= 1.0 and pieces[-1].end >= 8.0


def test_a_short_continuation_is_kept_even_below_the_minimum() -> None:
    config = VadConfig(max_utterance_s=1.5, min_utterance_s=1.0)
    # The whole utterance lasts 1.5 s plus a few frames: the tail piece is far shorter than min.
    signal = np.concatenate([silence(0.5), np.full(52 * FRAME, 0.25, np.float32), silence(0.6)])
    pieces = segments(VoiceSegmenter(config, EnergyBackend()).push(signal))
    assert [piece.truncated for piece in pieces] == [True, False]
    assert pieces[1].duration < 1.0


# ---------------------------------------------------------------- chunk invariance


def test_synthetic_phrases_are_found(synthetic: np.ndarray) -> None:
    pieces = segments(run(synthetic))
    truth = [(0.7, 2.2), (3.2, 5.2), (6.0, 6.9)]
    assert len(pieces) == len(truth)
    for piece, (start, end) in zip(pieces, truth, strict=True):
        assert start - 0.35 <= piece.start <= start + 0.1
        assert end <= piece.end <= end + 0.6


@settings(max_examples=60, deadline=None)
@given(
    first=st.integers(min_value=1, max_value=4000),
    rest=st.lists(st.integers(min_value=0, max_value=4000), max_size=19),
)
def test_synthetic_chunked_equals_whole(synthetic: np.ndarray, first: int, rest: list[int]) -> None:
    # Empty chunks are allowed anywhere, but one size must be positive for the feed to advance.
    assert run(synthetic, [first, *rest]) == run(synthetic)


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=10),
    frame_ms=st.sampled_from([10, 20, 30]),
    max_s=st.sampled_from([0.8, 1.7, 8.0]),
)
def test_chunk_invariance_holds_for_every_frame_length_and_cut(
    synthetic: np.ndarray, sizes: list[int], frame_ms: int, max_s: float
) -> None:
    config = VadConfig(frame_ms=frame_ms, max_utterance_s=max_s, min_utterance_s=0.3)
    assert run(synthetic, sizes, config) == run(synthetic, None, config)


def test_caller_may_reuse_its_buffer(synthetic: np.ndarray) -> None:
    segmenter = VoiceSegmenter()
    buffer = np.empty(1000, dtype=np.float32)
    events: list = []
    for start in range(0, len(synthetic), 1000):
        piece = synthetic[start : start + 1000]
        buffer[: len(piece)] = piece
        events += segmenter.push(buffer[: len(piece)])
        buffer.fill(0.5)  # scribble over it, as a capture loop would
    assert events + segmenter.flush() == run(synthetic)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros(100, dtype=np.int16),
        np.zeros((100, 2), dtype=np.float32),
        np.array([0.0, np.nan], dtype=np.float32),
        [0.0] * 100,
    ],
)
def test_bad_input_is_refused_and_the_stream_goes_on(synthetic: np.ndarray, bad: object) -> None:
    segmenter = VoiceSegmenter()
    events = segmenter.push(synthetic[:12345])
    with pytest.raises(AudioFormatError):
        segmenter.push(bad)  # type: ignore[arg-type]
    assert segmenter.samples_seen == 12345
    events += segmenter.push(synthetic[12345:]) + segmenter.flush()
    assert events == run(synthetic)


def test_push_after_flush_needs_reset(synthetic: np.ndarray) -> None:
    segmenter = VoiceSegmenter()
    first = segmenter.push(synthetic) + segmenter.flush()
    assert segmenter.flush() == []
    with pytest.raises(SessionClosedError):
        segmenter.push(synthetic)
    segmenter.reset()
    assert segmenter.samples_seen == 0 and not segmenter.triggered
    assert segmenter.push(synthetic) + segmenter.flush() == first


def test_segment_signal_returns_the_segments(synthetic: np.ndarray) -> None:
    assert segment_signal(synthetic) == segments(run(synthetic))
    assert segment_signal(np.zeros(0, dtype=np.float32)) == []


# ---------------------------------------------------------------- real speech


@pytest.fixture(scope="module")
def real_signal(
    cremad_clips: dict[str, list[Path]],
) -> tuple[np.ndarray, list[tuple[float, float, float, float]]]:
    """Three CREMA-D clips with 1 s of silence around each, and per clip:
    (clip start, clip end, start and end of its loud core) in seconds."""
    parts, truth, offset = [silence(1.0)], [], 1.0
    for label in ("angry", "sad", "happy"):
        clip = load_audio(cremad_clips[label][0])
        frames = len(clip) // FRAME
        rms = np.sqrt((clip[: frames * FRAME].reshape(frames, FRAME) ** 2).mean(axis=1))
        loud = np.flatnonzero(rms > rms.max() * 0.1)  # within 20 dB of the loudest frame
        duration = len(clip) / SAMPLE_RATE
        truth.append((offset, offset + duration, offset + loud[0] * 0.03, offset + (loud[-1] + 1) * 0.03))
        parts += [clip, silence(1.0)]
        offset += duration + 1.0
    return np.concatenate(parts), truth


def test_real_clips_give_one_segment_each_near_the_truth(real_signal) -> None:
    signal, truth = real_signal
    pieces = segment_signal(signal)
    assert len(pieces) == len(truth)
    padding = VadConfig().padding_ms / 1000
    for piece, (clip_start, clip_end, loud_start, loud_end) in zip(pieces, truth, strict=True):
        assert clip_start - padding <= piece.start <= loud_start + 0.1
        assert loud_end <= piece.end <= clip_end + 2 * padding
        assert not piece.truncated


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=6000), min_size=1, max_size=15))
def test_real_speech_chunked_equals_whole(real_signal, sizes: list[int]) -> None:
    signal, _ = real_signal
    assert run(signal, sizes) == run(signal)


def test_silero_backend_on_real_speech(real_signal) -> None:
    pytest.importorskip("silero_vad")
    signal, truth = real_signal
    config = VadConfig(backend="silero")
    whole = run(signal, None, config)
    assert len(segments(whole)) == len(truth)
    for piece, (clip_start, clip_end, _, _) in zip(segments(whole), truth, strict=True):
        assert clip_start - 0.35 <= piece.start and piece.end <= clip_end + 0.7
    assert run(signal, [777, 5000, 13], config) == whole


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "fields",
    [
        {"frame_ms": 25},
        {"aggressiveness": 5},
        {"aggressiveness": -1},
        {"min_utterance_s": 3.0, "max_utterance_s": 2.0},
        {"min_utterance_s": 2.0, "max_utterance_s": 2.0},
        {"padding_ms": 20},
        {"max_utterance_s": 0.32, "min_utterance_s": 0.1},
        {"start_ratio": 0.0},
        {"stop_ratio": 1.5},
        {"backend": "energy"},
        {"silero_threshold": 1.0},
        {"agressiveness": 2},
    ],
)
def test_invalid_configs_are_refused(fields: dict) -> None:
    with pytest.raises(ValidationError):
        VadConfig(**fields)


def test_shortest_allowed_maximum_still_cuts_at_the_maximum() -> None:
    config = VadConfig(max_utterance_s=0.33, min_utterance_s=0.1)
    signal = np.concatenate([silence(0.3), np.full(40 * FRAME, 0.25, np.float32), silence(0.6)])
    pieces = segments(VoiceSegmenter(config, EnergyBackend()).push(signal))
    assert all(len(piece.samples) <= 11 * FRAME for piece in pieces)
    assert sum(len(piece.samples) for piece in pieces) >= 40 * FRAME


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValidationError, match="max_utterance_s"):
        VadConfig(min_utterance_s=3.0, max_utterance_s=2.0)
    with pytest.raises(ValidationError, match="frame_ms"):
        VadConfig(frame_ms=25)
