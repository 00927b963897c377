"""Audio input: decoding, conversion to 16 kHz mono, live streams, and every kind of bad input."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from ser_sdk.audio import (
    SAMPLE_RATE,
    AudioStream,
    duration_seconds,
    float_to_pcm16,
    load_audio,
    pcm16_bytes_to_float,
    to_mono_16k,
)
from ser_sdk.errors import (
    AudioDecodeError,
    AudioError,
    AudioFormatError,
    EmptyAudioError,
    SessionClosedError,
)


def tone(rate: int, seconds: float = 1.0, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def encoded(samples: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def chunk_bounds(total: int, sizes: list[int]) -> list[tuple[int, int]]:
    """Cut [0, total) into pieces of the given sizes, cycling through them."""
    bounds, pos, i = [], 0, 0
    while pos < total:
        size = sizes[i % len(sizes)]
        bounds.append((pos, min(total, pos + size)))
        pos += size
        i += 1
    return bounds


# ---------------------------------------------------------------- files


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG"])
@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_stereo_file_round_trip_becomes_16k_mono(tmp_path: Path, fmt: str, rate: int) -> None:
    left = tone(rate)
    stereo = np.stack([left, left], axis=1)
    path = tmp_path / f"clip.{fmt.lower()}"
    sf.write(path, stereo, rate, format=fmt)

    out = load_audio(path)

    assert out.dtype == np.float32 and out.ndim == 1
    assert len(out) == SAMPLE_RATE
    assert np.abs(out).max() <= 1.0
    expected = tone(SAMPLE_RATE)
    inner = slice(400, -400)  # skip the filter's edges
    if fmt == "OGG":  # lossy: compare loudness, not samples
        assert np.sqrt(np.mean(out[inner] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)
    else:
        assert np.abs(out[inner] - expected[inner]).max() < 2e-3


def test_bytes_file_object_and_path_decode_the_same(tmp_path: Path) -> None:
    data = encoded(tone(22050), 22050, "FLAC")
    path = tmp_path / "a.flac"
    path.write_bytes(data)
    from_path = load_audio(str(path))
    np.testing.assert_array_equal(load_audio(data), from_path)
    np.testing.assert_array_equal(load_audio(io.BytesIO(data)), from_path)
    with open(path, "rb") as handle:
        np.testing.assert_array_equal(load_audio(handle), from_path)


def test_downmix_averages_channels(tmp_path: Path) -> None:
    left = tone(16000)
    path = tmp_path / "opposite.wav"
    sf.write(path, np.stack([left, -left, np.zeros_like(left)], axis=1), 16000, subtype="FLOAT")
    assert np.abs(load_audio(path)).max() < 1e-6
    sf.write(path, np.stack([left, left * 0.5], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), left * 0.75, atol=1e-6)


def test_streaming_writer_header_is_not_taken_for_truncation() -> None:
    data = bytearray(encoded(tone(16000), 16000, "WAV", "PCM_16"))
    at = data.find(b"data")
    data[4:8] = data[at + 4 : at + 8] = struct.pack("<I", 0xFFFFFFFF)  # size never filled in
    assert len(load_audio(bytes(data))) == 16000


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioDecodeError, match=r"nope\.wav: file not found"):
        load_audio(path)


def test_directory_is_a_decode_error(tmp_path: Path) -> None:
    with pytest.raises(AudioDecodeError, match="directory"):
        load_audio(tmp_path)


def test_empty_file_and_zero_bytes(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(EmptyAudioError, match=r"empty\.wav"):
        load_audio(path)
    with pytest.raises(EmptyAudioError):
        load_audio(b"")
    with pytest.raises(EmptyAudioError):
        load_audio(io.BytesIO(b""))


def test_valid_file_without_frames_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros((0, 1), dtype=np.float32), 16000)
    with pytest.raises(EmptyAudioError, match="no audio frames"):
        load_audio(path)


@pytest.mark.parametrize(
    ("fmt", "subtype"), [("WAV", "PCM_16"), ("WAV", "FLOAT"), ("FLAC", None), ("OGG", None)]
)
@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_files_are_decode_errors(
    tmp_path: Path, fmt: str, subtype: str | None, keep: float
) -> None:
    data = encoded(tone(48000), 48000, fmt, subtype)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(AudioDecodeError, match=r"cut\.") as info:
        load_audio(path)
    assert "truncated" in str(info.value) or "damaged" in str(info.value)


def test_wav_cut_inside_its_header_is_a_decode_error() -> None:
    data = encoded(tone(16000), 16000, "WAV")
    with pytest.raises(AudioDecodeError, match="truncated"):
        load_audio(data[:30])


def test_random_bytes_are_not_audio() -> None:
    noise = np.random.default_rng(7).bytes(4096)
    with pytest.raises(AudioDecodeError, match="not a recognised audio format"):
        load_audio(noise)


def test_text_file_named_wav_is_not_audio(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("meeting notes: call back on Tuesday\n" * 20)
    with pytest.raises(AudioDecodeError, match=r"notes\.wav: cannot decode audio"):
        load_audio(path)


def test_text_mode_file_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("hello")
    with open(path) as handle, pytest.raises(AudioDecodeError, match="binary mode"):
        load_audio(handle)  # type: ignore[arg-type]


def test_nan_samples_in_a_float_wav(tmp_path: Path) -> None:
    samples = tone(16000)
    samples[100] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, samples, 16000, subtype="FLOAT")
    with pytest.raises(AudioFormatError, match=r"nan\.wav: .*NaN"):
        load_audio(path)


def test_file_at_an_unsupported_rate(tmp_path: Path) -> None:
    path = tmp_path / "low.wav"
    sf.write(path, tone(4000), 4000)
    with pytest.raises(AudioFormatError, match=r"low\.wav: unsupported sample rate 4000"):
        load_audio(path)


def test_every_audio_error_is_one_family() -> None:
    for error in (AudioDecodeError, EmptyAudioError, AudioFormatError):
        assert issubclass(error, AudioError)


# ---------------------------------------------------------------- arrays


def test_to_mono_16k_scales_integer_types() -> None:
    full = np.array([-32768, 0, 16384], dtype=np.int16)
    np.testing.assert_array_equal(to_mono_16k(full, 16000), [-1.0, 0.0, 0.5])
    wide = np.array([-(2**31), 2**30], dtype=np.int32)
    np.testing.assert_array_equal(to_mono_16k(wide, 16000), [-1.0, 0.5])
    as_column = to_mono_16k(tone(16000)[:, None].astype(np.float64), 16000)
    np.testing.assert_allclose(as_column, tone(16000), atol=1e-7)


def test_to_mono_16k_resamples_to_the_right_length() -> None:
    assert len(to_mono_16k(tone(44100, seconds=2.0), 44100)) == 32000
    assert len(to_mono_16k(np.zeros((0, 2), np.float32), 48000)) == 0


def test_to_mono_16k_never_changes_its_input() -> None:
    samples = np.array([0.5, 1.5, -1.2], dtype=np.float32)
    before = samples.copy()
    out = to_mono_16k(samples, 16000)
    np.testing.assert_array_equal(samples, before)
    np.testing.assert_array_equal(out, [0.5, 1.0, -1.0])


@pytest.mark.parametrize("rate", [7999, 192001, 0, -16000, 16000.0, True, "16000"])
def test_to_mono_16k_rejects_rates(rate: object) -> None:
    with pytest.raises(AudioFormatError, match="sample rate"):
        to_mono_16k(tone(16000), rate)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("samples", "message"),
    [
        (np.zeros((10, 2, 2), np.float32), "shape"),
        (np.zeros((10, 0), np.float32), "channels"),
        (np.zeros((2, 4000), np.float32), "channel-first"),
        (np.zeros(10, np.uint8), "sample type"),
        (np.zeros(10, np.complex64), "sample type"),
        (np.array([0.1, np.inf], np.float32), "NaN or infinite"),
        (np.array([0.0, 12000.0], np.float32), "divided by 32768"),
        ([0.0, 0.1], "numpy array"),
    ],
)
def test_to_mono_16k_rejects_arrays(samples: object, message: str) -> None:
    with pytest.raises(AudioFormatError, match=message):
        to_mono_16k(samples, 16000)  # type: ignore[arg-type]


def test_pcm16_bytes_round_trip() -> None:
    pcm = np.array([-32768, -1, 0, 1, 32767], dtype="<i2")
    floats = pcm16_bytes_to_float(pcm.tobytes())
    assert floats.dtype == np.float32
    np.testing.assert_array_equal(float_to_pcm16(floats), pcm)
    np.testing.assert_array_equal(pcm16_bytes_to_float(bytearray(pcm.tobytes())), floats)
    with pytest.raises(AudioFormatError, match="even number of bytes"):
        pcm16_bytes_to_float(pcm.tobytes()[:-1])
    with pytest.raises(AudioFormatError, match="PCM16 bytes"):
        pcm16_bytes_to_float("abcd")  # type: ignore[arg-type]


def test_float_to_pcm16_rounds_and_clips() -> None:
    out = float_to_pcm16(np.array([2.0, -2.0, 0.5, 1.6e-5], dtype=np.float32))
    np.testing.assert_array_equal(out, [32767, -32768, 16384, 1])
    assert out.dtype == np.int16
    with pytest.raises(AudioFormatError):
        float_to_pcm16(np.array([np.nan], dtype=np.float32))
    with pytest.raises(AudioFormatError):
        float_to_pcm16(np.array([1, 2], dtype=np.int16))


def test_duration_seconds() -> None:
    assert duration_seconds(np.zeros(24000, np.float32)) == 1.5


# ---------------------------------------------------------------- live streams


def pcm_bytes(samples: np.ndarray) -> bytes:
    return float_to_pcm16(samples).astype("<i2").tobytes()


def stream_in_chunks(stream: AudioStream, data: bytes, sizes: list[int]) -> np.ndarray:
    out = [stream.push(data[a:b]) for a, b in chunk_bounds(len(data), sizes)]
    out.append(stream.flush())
    return np.concatenate(out)


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=3001), min_size=1, max_size=12))
def test_16k_bytes_in_any_chunks_equal_whole_conversion(sizes: list[int]) -> None:
    data = pcm_bytes(tone(16000, seconds=0.5) + 0.1 * tone(16000, seconds=0.5, freq=97.0))
    chunked = stream_in_chunks(AudioStream(16000), data, sizes)
    np.testing.assert_array_equal(chunked, pcm16_bytes_to_float(data))


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=5001), min_size=1, max_size=12))
def test_48k_stereo_bytes_in_any_chunks_resample_continuously(sizes: list[int]) -> None:
    left, right = tone(48000, seconds=0.5), tone(48000, seconds=0.5, freq=300.0)
    interleaved = np.stack([left, right], axis=1)
    data = pcm_bytes(interleaved)

    chunked = stream_in_chunks(AudioStream(48000, channels=2), data, sizes)
    whole = stream_in_chunks(AudioStream(48000, channels=2), data, [len(data)])
    one_shot = to_mono_16k(float_to_pcm16(interleaved), 48000)

    assert len(chunked) == len(whole) == len(one_shot) == 8000
    np.testing.assert_array_equal(chunked, whole)
    np.testing.assert_allclose(chunked, one_shot, atol=1e-4)


def test_stream_accepts_numpy_chunks() -> None:
    stream = AudioStream(16000, channels=2)
    stereo = np.stack([tone(16000, 0.1), tone(16000, 0.1)], axis=1)
    np.testing.assert_allclose(stream.push(stereo), tone(16000, 0.1), atol=1e-7)
    as_int = float_to_pcm16(stereo)
    np.testing.assert_array_equal(stream.push(as_int), as_int[:, 0] / np.float32(32768))
    assert stream.frames_in == 2 * len(stereo)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros(10, np.float32),  # mono shape on a stereo stream
        np.zeros((10, 3), np.float32),
        np.array([[0.1, np.nan]], np.float32),
        np.zeros((10, 2), np.uint8),
        [0, 1, 2],
        "pcm",
        None,
    ],
)
def test_bad_chunk_is_refused_and_nothing_is_lost(bad: object) -> None:
    stereo = pcm_bytes(np.stack([tone(16000, 0.05), -tone(16000, 0.05)], axis=1))
    reference = stream_in_chunks(AudioStream(16000, channels=2), stereo, [len(stereo)])

    stream = AudioStream(16000, channels=2)
    first = stream.push(stereo[:7])  # one full frame, three bytes of the next wait
    assert stream.pending_bytes == 3
    with pytest.raises(AudioFormatError):
        stream.push(bad)  # type: ignore[arg-type]
    assert stream.pending_bytes == 3
    rest = stream.push(stereo[7:])
    np.testing.assert_array_equal(np.concatenate([first, rest, stream.flush()]), reference)


def test_flush_inside_a_frame_is_an_error_that_keeps_the_bytes() -> None:
    data = pcm_bytes(tone(16000, 0.01))
    stream = AudioStream(16000)
    head = stream.push(data[:-1])
    with pytest.raises(AudioFormatError, match="inside a PCM16 frame"):
        stream.flush()
    assert not stream.closed
    tail = stream.push(data[-1:])
    np.testing.assert_array_equal(np.concatenate([head, tail, stream.flush()]), pcm16_bytes_to_float(data))


def test_flush_can_drop_the_incomplete_frame() -> None:
    stream = AudioStream(44100)
    out = stream.push(pcm_bytes(tone(44100, 0.2)) + b"\x01")
    out = np.concatenate([out, stream.flush(drop_partial=True)])
    assert len(out) == 3200
    assert stream.closed and stream.pending_bytes == 0


def test_push_after_flush_needs_reset() -> None:
    stream = AudioStream(48000)
    first = np.concatenate([stream.push(tone(48000, 0.1)), stream.flush()])
    assert stream.flush().size == 0
    with pytest.raises(SessionClosedError, match="reset"):
        stream.push(tone(48000, 0.1))
    stream.reset()
    again = np.concatenate([stream.push(tone(48000, 0.1)), stream.flush()])
    np.testing.assert_array_equal(first, again)


def test_stream_rejects_bad_settings() -> None:
    with pytest.raises(AudioFormatError, match="sample rate"):
        AudioStream(4000)
    with pytest.raises(AudioFormatError, match="channel count"):
        AudioStream(16000, channels=0)
    with pytest.raises(AudioFormatError, match="channel count"):
        AudioStream(16000, channels=1.5)  # type: ignore[arg-type]


def test_numpy_chunk_cannot_follow_half_a_frame() -> None:
    stream = AudioStream(16000)
    stream.push(b"\x00")
    with pytest.raises(AudioFormatError, match="incomplete PCM16 frame"):
        stream.push(np.zeros(4, np.float32))
    assert stream.pending_bytes == 1
