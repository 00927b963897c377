"""Audio input: every source becomes 16 kHz mono float32 samples in [-1, 1].

The models and the VAD work at 16 kHz mono only, so conversion happens once, at
the edge. Files and in-memory blobs are decoded by libsndfile (through
``soundfile``), resampling is done by ``soxr``. Live audio goes through
:class:`AudioStream`, which keeps the resampler state between chunks so that a
stream cut into pieces converts to exactly the same samples as the whole signal.
"""

from __future__ import annotations

import io
import logging
import os
import re
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from ser_sdk.errors import AudioDecodeError, AudioFormatError, EmptyAudioError, SessionClosedError

logger = logging.getLogger(__name__)

SAMPLE_RATE: int = 16000
"""The one rate every model and the VAD work at."""

MIN_INPUT_RATE = 8000
MAX_INPUT_RATE = 192000
MAX_CHANNELS = 32
"""More channels than this almost always means a channel-first array, which we refuse rather than guess."""

FLOAT_PEAK_LIMIT = 2.0
"""Float input louder than this is integer PCM stored as float; scaling it silently would ruin it."""

_PCM16_SCALE = 32768.0
_PCM32_SCALE = 2147483648.0
_RESAMPLE_QUALITY = "HQ"

# libsndfile notes a header that promises more audio than the file holds as
# "data : 96000 (should be 71989)"; Ogg streams cut short say "ended unexpectedly".
# Only the audio data chunks count: some writers get the outer RIFF/FORM size wrong on intact files.
_SHORT_CHUNK = re.compile(r"^\s*(data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_STREAMING_SIZES = {0xFFFFFFFF, 0x7FFFFFFF}
"""Chunk sizes that streaming writers put in a header they never go back to fix; not truncation."""

_DECODER_HINTS = (
    (
        "format not recognised",
        "not a recognised audio format (WAV, FLAC, OGG and other libsndfile formats are)",
    ),
    ("unimplemented format", "an audio container with content this decoder does not support"),
    ("malformed", "a damaged audio file"),
    ("lost sync", "a truncated or damaged compressed stream"),
    ("psf_fseek", "a truncated or damaged file"),
    ("no 'data' chunk", "a WAV file without audio data (probably truncated)"),
)


def duration_seconds(samples: np.ndarray) -> float:
    """Length of 16 kHz samples in seconds."""
    return len(samples) / SAMPLE_RATE


def _check_rate(sample_rate: object) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise AudioFormatError(f"sample rate must be an integer number of Hz, got {sample_rate!r}")
    if not MIN_INPUT_RATE <= int(sample_rate) <= MAX_INPUT_RATE:
        raise AudioFormatError(
            f"unsupported sample rate {sample_rate} Hz (accepted: {MIN_INPUT_RATE}..{MAX_INPUT_RATE} Hz)"
        )
    return int(sample_rate)


def _check_channels(channels: object) -> int:
    if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)):
        raise AudioFormatError(f"channel count must be an integer, got {channels!r}")
    if not 1 <= int(channels) <= MAX_CHANNELS:
        raise AudioFormatError(f"unsupported channel count {channels} (accepted: 1..{MAX_CHANNELS})")
    return int(channels)


def _as_float_frames(samples: object, *, channels: int | None, strict_peak: bool) -> np.ndarray:
    """Validate an array and return it as float32 of shape (n, channels), scaled to [-1, 1].

    ``channels`` None accepts any count; otherwise the array must match it. Never
    mutates or aliases the caller's array.
    """
    if not isinstance(samples, np.ndarray):
        raise AudioFormatError(f"expected a numpy array of samples, got {type(samples).__name__}")
    if samples.ndim == 1:
        frames = samples[:, None]
    elif samples.ndim == 2:
        frames = samples
    else:
        raise AudioFormatError(f"expected shape (n,) or (n, channels), got {samples.shape}")
    n_channels = frames.shape[1]
    if n_channels < 1 or n_channels > MAX_CHANNELS:
        raise AudioFormatError(
            f"expected shape (n, channels) with 1..{MAX_CHANNELS} channels, got {samples.shape}"
            " (transpose channel-first arrays)"
        )
    if channels is not None and n_channels != channels:
        raise AudioFormatError(f"expected {channels} channel(s), got an array of shape {samples.shape}")
    if samples.ndim == 1 and channels not in (None, 1):
        raise AudioFormatError(
            f"a 1-D array is mono; this stream has {channels} channels: pass (n, channels)"
        )

    if samples.dtype == np.int16:
        return frames.astype(np.float32) / np.float32(_PCM16_SCALE)
    if samples.dtype == np.int32:
        return (frames.astype(np.float64) / _PCM32_SCALE).astype(np.float32)
    if samples.dtype in (np.float32, np.float64):
        if not np.isfinite(frames).all():
            raise AudioFormatError("samples contain NaN or infinite values")
        out = frames.astype(np.float32)  # always a copy
        if out.size:
            peak = float(np.abs(out).max())
            if strict_peak and peak > FLOAT_PEAK_LIMIT:
                raise AudioFormatError(
                    f"float samples must lie in [-1, 1], peak is {peak:g}: integer PCM stored as float"
                    " must be divided by 32768 (or passed as int16)"
                )
            if peak > 1.0:
                np.clip(out, -1.0, 1.0, out=out)
        return out
    raise AudioFormatError(
        f"unsupported sample type {samples.dtype} (accepted: int16, int32, float32, float64)"
    )


def _downmix(frames: np.ndarray) -> np.ndarray:
    mono = frames[:, 0] if frames.shape[1] == 1 else frames.mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32)


def _finish(samples: np.ndarray) -> np.ndarray:
    """Clip resampler overshoot so the [-1, 1] promise holds."""
    return np.clip(samples, -1.0, 1.0, out=samples) if samples.size else samples


def to_mono_16k(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Convert an array of shape (n,) or (n, channels) at any accepted rate to 16 kHz mono float32.

    int16 and int32 are scaled to [-1, 1]; channels are averaged; resampling uses
    soxr's high quality filter. An empty input gives an empty output.
    """
    rate = _check_rate(sample_rate)
    mono = _downmix(_as_float_frames(samples, channels=None, strict_peak=True))
    if rate == SAMPLE_RATE or mono.size == 0:
        return mono
    out = soxr.resample(mono, rate, SAMPLE_RATE, quality=_RESAMPLE_QUALITY)
    return _finish(np.ascontiguousarray(out, dtype=np.float32))


def pcm16_bytes_to_float(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Little-endian 16-bit PCM bytes to float32 in [-1, 1] (no resampling, no downmix)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise AudioFormatError(f"expected PCM16 bytes, got {type(data).__name__}")
    raw = memoryview(data).cast("B")
    if len(raw) % 2:
        raise AudioFormatError(f"PCM16 data must have an even number of bytes, got {len(raw)}")
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / np.float32(_PCM16_SCALE)


def float_to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] to int16 (rounded, clipped): the VAD reads 16-bit frames."""
    values = np.asarray(samples)
    if not np.issubdtype(values.dtype, np.floating):
        raise AudioFormatError(f"expected float samples, got {values.dtype}")
    if not np.isfinite(values).all():
        raise AudioFormatError("samples contain NaN or infinite values")
    return np.clip(np.rint(values * _PCM16_SCALE), -32768, 32767).astype(np.int16)


# ---------------------------------------------------------------- files and blobs


def _describe(source: object) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)  # type: ignore[return-value]
    name = getattr(source, "name", None)
    return name if isinstance(name, str) else "<in-memory audio>"


def _user_reason(error: Exception) -> str:
    said = str(getattr(error, "error_string", "") or error).strip()
    lowered = said.lower()
    for needle, meaning in _DECODER_HINTS:
        if needle in lowered:
            return f"{meaning}; the decoder said: {said}"
    return f"the decoder said: {said}"


def _truncation(log: str) -> str | None:
    """What libsndfile's open log says is missing from the file, if anything."""
    for chunk, declared, present in _SHORT_CHUNK.findall(log):
        declared_n, present_n = int(declared), int(present)
        if declared_n > present_n and declared_n not in _STREAMING_SIZES:
            return (
                f"the file is truncated: its {chunk!r} chunk declares {declared_n} bytes,"
                f" only {present_n} are there"
            )
    if "ended unexpectedly" in log:
        return "the file is truncated: the stream ends before its last page"
    return None


def _read_bytes(source: str | os.PathLike | bytes | bytearray | memoryview | BinaryIO, name: str) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise AudioDecodeError(f"{name}: file not found")
        if os.path.isdir(path):
            raise AudioDecodeError(f"{name}: is a directory, not an audio file")
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except OSError as error:
            raise AudioDecodeError(f"{name}: cannot read the file ({error.strerror or error})") from error
    read = getattr(source, "read", None)
    if not callable(read):
        raise AudioDecodeError(
            f"cannot read audio from a {type(source).__name__}: pass a path, bytes or a binary file object"
        )
    try:
        data = read()
    except OSError as error:
        raise AudioDecodeError(f"{name}: cannot read the stream ({error})") from error
    if not isinstance(data, (bytes, bytearray)):
        raise AudioDecodeError(
            f"{name}: the file object returned {type(data).__name__}, open it in binary mode"
        )
    return bytes(data)


def load_audio(source: str | os.PathLike | bytes | BinaryIO) -> np.ndarray:
    """Decode a file, bytes or binary file object (WAV, FLAC, OGG, anything libsndfile reads) to 16 kHz mono.

    Raises AudioDecodeError for missing, unreadable, corrupt or truncated input,
    EmptyAudioError when there are no samples, AudioFormatError for NaN/inf
    samples or an unsupported sample rate. Messages start with the file name.
    """
    name = _describe(source)
    data = _read_bytes(source, name)
    if not data:
        raise EmptyAudioError(f"{name}: empty input (0 bytes)")
    try:
        with sf.SoundFile(io.BytesIO(data)) as handle:
            truncated = _truncation(handle.extra_info)
            if truncated:
                raise AudioDecodeError(f"{name}: {truncated}")
            frames = handle.read(dtype="float32", always_2d=True)
            rate = handle.samplerate
    except sf.SoundFileError as error:
        raise AudioDecodeError(f"{name}: cannot decode audio: {_user_reason(error)}") from error
    if frames.shape[0] == 0:
        raise EmptyAudioError(f"{name}: the file holds no audio frames")
    if not np.isfinite(frames).all():
        raise AudioFormatError(f"{name}: audio contains NaN or infinite samples")
    try:
        return to_mono_16k(frames, rate)
    except AudioFormatError as error:
        raise AudioFormatError(f"{name}: {error}") from error


# ---------------------------------------------------------------- live streams


class AudioStream:
    """Incremental conversion of live audio to 16 kHz mono float32.

    ``push`` takes interleaved little-endian PCM16 bytes of any length (a partial
    sample or multi-channel frame waits for the next chunk) or numpy arrays of
    shape (n,) / (n, channels) as int16 or float in [-1, 1]. The soxr stream
    keeps its filter state between chunks, so any chunking of a signal yields
    the same samples as pushing it whole.

    A bad chunk raises AudioFormatError and leaves the stream as it was.
    ``flush`` ends the stream and drains the resampler; if bytes of an
    incomplete frame are still waiting it raises AudioFormatError (again
    changing nothing) unless ``drop_partial=True``. After ``flush``, ``push``
    raises SessionClosedError and ``flush`` returns nothing more until
    ``reset()`` starts a fresh stream with the same format.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE, channels: int = 1) -> None:
        self.sample_rate = _check_rate(sample_rate)
        self.channels = _check_channels(channels)
        self._frame_bytes = 2 * self.channels
        self._resampler = (
            None
            if self.sample_rate == SAMPLE_RATE
            else soxr.ResampleStream(
                self.sample_rate, SAMPLE_RATE, 1, dtype="float32", quality=_RESAMPLE_QUALITY
            )
        )
        self._pending = b""
        self._closed = False
        self._frames_in = 0

    @property
    def closed(self) -> bool:
        """True after ``flush`` until ``reset``."""
        return self._closed

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete PCM16 frame waiting for the rest of it."""
        return len(self._pending)

    @property
    def frames_in(self) -> int:
        """Input frames (one sample per channel) accepted so far, at the input rate."""
        return self._frames_in

    def _frames_from_bytes(self, chunk: bytes | bytearray | memoryview) -> tuple[np.ndarray, bytes]:
        raw = memoryview(chunk).cast("B")
        data = self._pending + raw.tobytes() if self._pending else raw.tobytes()
        usable = len(data) - len(data) % self._frame_bytes
        pcm = np.frombuffer(data, dtype="<i2", count=usable // 2)
        frames = pcm.reshape(-1, self.channels).astype(np.float32) / np.float32(_PCM16_SCALE)
        return frames, data[usable:]

    def push(self, chunk: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
        """Convert one chunk; returns the 16 kHz mono samples that are ready (possibly none)."""
        if self._closed:
            raise SessionClosedError("the audio stream was flushed; call reset() to start a new one")
        if isinstance(chunk, (bytes, bytearray, memoryview)):
            frames, pending = self._frames_from_bytes(chunk)
        elif isinstance(chunk, np.ndarray):
            if self._pending:
                raise AudioFormatError(
                    f"a numpy chunk cannot follow {len(self._pending)} bytes of an incomplete PCM16 frame;"
                    " send the rest of that frame first"
                )
            frames, pending = _as_float_frames(chunk, channels=self.channels, strict_peak=True), b""
        else:
            raise AudioFormatError(
                f"audio chunks must be PCM16 bytes or a numpy array, got {type(chunk).__name__}"
            )
        # Everything below cannot fail on user input: commit the new state.
        self._pending = pending
        self._frames_in += frames.shape[0]
        mono = _downmix(frames)
        if self._resampler is None:
            return mono
        if mono.size == 0:
            return np.zeros(0, dtype=np.float32)
        return _finish(
            np.ascontiguousarray(self._resampler.resample_chunk(mono, last=False), dtype=np.float32)
        )

    def flush(self, *, drop_partial: bool = False) -> np.ndarray:
        """End the stream and return the resampler's remaining samples."""
        if self._closed:
            return np.zeros(0, dtype=np.float32)
        if self._pending:
            if not drop_partial:
                raise AudioFormatError(
                    f"the stream ends inside a PCM16 frame: {len(self._pending)} byte(s) of a"
                    f" {self._frame_bytes}-byte frame are missing their rest;"
                    " push them or call flush(drop_partial=True)"
                )
            logger.warning(
                "dropping %d byte(s) of an incomplete PCM16 frame at end of stream", len(self._pending)
            )
            self._pending = b""
        self._closed = True
        if self._resampler is None:
            return np.zeros(0, dtype=np.float32)
        tail = self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        return _finish(np.ascontiguousarray(tail, dtype=np.float32))

    def reset(self) -> None:
        """Forget everything and accept a new stream in the same format."""
        if self._resampler is not None:
            self._resampler.clear()
        self._pending = b""
        self._closed = False
        self._frames_in = 0
