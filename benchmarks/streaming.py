"""Streaming benchmark: real-time factor, SDK overhead, end-of-speech latency and memory.

The input is a conversation-like signal built from real emotional speech
(held-out test-split clips when ``results/manifests/test.json`` is there,
otherwise any CREMA-D / RAVDESS clips): clips joined by 0.4-1.5 s pauses, with
low background noise throughout.

Figures (medians over ``--runs`` runs unless said otherwise):

- **RTF**: ``ser-sdk analyze`` end to end, in-process: decode the file, feed
  20 ms chunks through one engine session as fast as it takes them
  (``ser_sdk.cli.stream_samples``), wait for the last event; time / audio length.
- **Overhead**: that pipeline time divided by the bare model forward time on
  the exact utterances the VAD produced, grouped in the exact batches the
  engine's batcher formed (replayed one after the other through
  ``model.classify``). The one-utterance-at-a-time forward is reported beside it.
- **Latency**: N sessions (1, then 16) each fed at real-time pace (20 ms chunks,
  ``asyncio.sleep`` pacing, each session its own clips, start offsets spread
  over one chunk period);
  for each utterance, the wall time from starting to feed the chunk that holds
  its end (where the VAD's stop trigger fires) to receiving its emotion event.
  Percentiles are over all utterances of all latency runs.
- **Peak RSS**: ``ru_maxrss`` of this process after the model loaded and at the end.

Run: ``python benchmarks/streaming.py [--model DIR] [--quick]``. Results are
printed as a table and written to ``results/benchmarks/streaming.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
try:
    import ser_sdk  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

from ser_sdk.audio import SAMPLE_RATE, float_to_pcm16, load_audio  # noqa: E402
from ser_sdk.cli import CHUNK_MS, stream_samples  # noqa: E402
from ser_sdk.corpora import corpora_root  # noqa: E402
from ser_sdk.engine import EmotionEngine  # noqa: E402
from ser_sdk.events import EmotionEvent, EmotionScores  # noqa: E402
from ser_sdk.model import EmotionModel  # noqa: E402

CHUNK = SAMPLE_RATE * CHUNK_MS // 1000
NOISE_RMS = 10 ** (-60 / 20)  # -60 dBFS background


# --------------------------------------------------------------------------- input


def find_clips() -> list[Path]:
    """Test-split clips when the manifest is there (held-out speakers), else every clip in the corpora."""
    manifest = REPO / "results" / "manifests" / "test.json"
    if manifest.is_file():
        entries = json.loads(manifest.read_text())
        paths = [Path(entry["path"]) for entry in entries.values()]
        paths = [path for path in paths if path.is_file()]
        if paths:
            return sorted(paths)
    root = corpora_root()
    paths = sorted((root / "cremad" / "AudioWAV").glob("*.flac")) + sorted(
        root.glob("ravdess/Actor_*/*.flac")
    )
    if not paths:
        raise SystemExit(f"no clips found: set SER_CORPORA (looked in {root})")
    return paths


def conversation(clips: Sequence[Path], rng: random.Random, noise_seed: int) -> np.ndarray:
    """Clips joined by 0.4-1.5 s pauses, 0.5 s of lead-in, 1.5 s of tail, low noise everywhere."""
    parts = [np.zeros(SAMPLE_RATE // 2, dtype=np.float32)]
    for number, clip in enumerate(clips):
        if number:
            parts.append(np.zeros(round(rng.uniform(0.4, 1.5) * SAMPLE_RATE), dtype=np.float32))
        parts.append(load_audio(clip))
    parts.append(np.zeros(round(1.5 * SAMPLE_RATE), dtype=np.float32))
    signal = np.concatenate(parts)
    noise = np.random.default_rng(noise_seed).standard_normal(len(signal)) * NOISE_RMS
    return np.clip(signal + noise, -1.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- instrumentation


class RecordingClassifier:
    """The model, with a record of the batches the engine's batcher handed it (references only)."""

    def __init__(self, model: EmotionModel) -> None:
        self.model = model
        self.model_id = model.model_id
        self.labels = model.labels
        self.batches: list[list[np.ndarray]] = []

    def classify(self, batch: Sequence[np.ndarray]) -> list[EmotionScores]:
        self.batches.append(list(batch))
        return self.model.classify(batch)


def forward_time(model: EmotionModel, batches: Sequence[Sequence[np.ndarray]]) -> float:
    began = time.perf_counter()
    for batch in batches:
        model.classify(batch)
    return time.perf_counter() - began


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else math.nan


# --------------------------------------------------------------------------- measurements


async def analyze_once(recorder: RecordingClassifier, path: Path) -> tuple[float, int]:
    """One ``analyze`` of ``path``: decode, stream, wait for the end. Returns (seconds, emotion events)."""
    engine = EmotionEngine(recorder)
    await engine.start()
    emotions = 0
    try:
        began = time.perf_counter()
        samples = await asyncio.to_thread(load_audio, path)
        session = engine.session(sample_rate=SAMPLE_RATE)

        async def read() -> int:
            return sum([isinstance(event, EmotionEvent) async for event in session.events()])

        async with session:
            reader = asyncio.create_task(read())
            await stream_samples(session, samples)
        emotions = await reader
        elapsed = time.perf_counter() - began
    finally:
        await engine.close()
    return elapsed, emotions


async def paced_session(
    engine: EmotionEngine, signal: np.ndarray, offset: float, t0: float, latencies: list[float]
) -> None:
    """Feed ``signal`` at real-time pace from ``t0 + offset`` and record end-of-speech-to-event latencies."""
    pcm = float_to_pcm16(signal).tobytes()
    chunk_bytes = CHUNK * 2
    chunks = [pcm[start : start + chunk_bytes] for start in range(0, len(pcm), chunk_bytes)]
    fed_at = [math.nan] * len(chunks)
    received: list[tuple[EmotionEvent, float]] = []
    session = engine.session(sample_rate=SAMPLE_RATE)

    async def read() -> None:
        async for event in session.events():
            if isinstance(event, EmotionEvent):
                received.append((event, time.perf_counter()))

    loop = asyncio.get_running_loop()
    async with session:
        reader = asyncio.create_task(read())
        start = loop.time() + (t0 - time.perf_counter()) + offset
        for index, chunk in enumerate(chunks):
            await asyncio.sleep(max(0.0, start + index * CHUNK_MS / 1000 - loop.time()))
            fed_at[index] = time.perf_counter()
            await session.feed(chunk)
    await reader
    for event, arrived in received:
        end_sample = round(event.end * SAMPLE_RATE)
        if end_sample >= len(signal):
            continue  # flushed at close, not cut by the VAD's stop trigger
        index = math.ceil(end_sample / CHUNK) - 1  # the chunk whose feed completed the last frame
        latencies.append(arrived - fed_at[index])


async def latency_run(model: EmotionModel, signals: Sequence[np.ndarray]) -> list[float]:
    engine = EmotionEngine(model)
    await engine.start()
    latencies: list[float] = []
    spread = CHUNK_MS / 1000
    try:
        t0 = time.perf_counter() + 0.1
        await asyncio.gather(
            *(
                paced_session(engine, signal, number * spread / len(signals), t0, latencies)
                for number, signal in enumerate(signals)
            )
        )
    finally:
        await engine.close()
    return latencies


def trimmed(clips: Sequence[Path], seconds: float) -> list[Path]:
    """The first clips of ``clips`` that make up about ``seconds`` of speech."""
    chosen: list[Path] = []
    total = 0.0
    for clip in clips:
        if total >= seconds:
            break
        chosen.append(clip)
        total += sf.info(str(clip)).duration + 0.95
    return chosen


# --------------------------------------------------------------------------- report


def table(rows: Sequence[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"  {name:<{width}}  {value}" for name, value in rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model directory (default: the bundled model)")
    parser.add_argument("--quick", action="store_true", help="a short run: fewer clips, runs and seconds")
    parser.add_argument("--clips", type=int, help="clips in the conversation (default 40, quick 12)")
    parser.add_argument("--runs", type=int, help="runs per measurement (default 5, quick 2)")
    parser.add_argument(
        "--latency-seconds", type=float, help="audio per session in the paced runs (default 45, quick 12)"
    )
    parser.add_argument("--latency-runs", type=int, help="paced runs per concurrency (default 2, quick 1)")
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 16], help="concurrency levels")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", type=Path, default=REPO / "results" / "benchmarks" / "streaming.json")
    args = parser.parse_args(argv)
    clips_n = args.clips or (12 if args.quick else 40)
    runs = args.runs or (2 if args.quick else 5)
    latency_seconds = args.latency_seconds or (12.0 if args.quick else 45.0)
    latency_runs = args.latency_runs or (1 if args.quick else 2)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rng = random.Random(args.seed)
    pool = find_clips()
    clips = rng.sample(pool, min(clips_n, len(pool)))
    signal = conversation(clips, rng, args.seed)
    duration = len(signal) / SAMPLE_RATE

    model = EmotionModel.load(args.model)
    model.classify([signal[: 2 * SAMPLE_RATE]])  # warm up, so the first run is not charged for it
    rss_after_load = rss_mb()
    print(
        f"model {model.model_id} ({model.info.architecture}); {len(clips)} clips, {duration:.1f} s of audio"
    )

    # RTF and overhead, through the same path as `ser-sdk analyze`.
    rtfs, ratios, ratios_single, pipeline_times, forwards, singles = [], [], [], [], [], []
    batch_sizes: list[int] = []
    utterances = 0
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "conversation.flac"
        sf.write(path, signal, SAMPLE_RATE)
        for run in range(runs):
            recorder = RecordingClassifier(model)
            elapsed, emotions = asyncio.run(analyze_once(recorder, path))
            forward = forward_time(model, recorder.batches)
            single = forward_time(model, [[u] for batch in recorder.batches for u in batch])
            utterances = emotions
            batch_sizes = [len(batch) for batch in recorder.batches]
            rtfs.append(elapsed / duration)
            pipeline_times.append(elapsed)
            forwards.append(forward)
            singles.append(single)
            ratios.append(elapsed / forward)
            ratios_single.append(elapsed / single)
            print(
                f"  run {run + 1}/{runs}: {elapsed:.2f} s for {emotions} utterances in"
                f" {len(batch_sizes)} batches, forward {forward:.2f} s (one by one {single:.2f} s)"
            )

    # Latency at real-time pace.
    latency: dict[str, Any] = {}
    for sessions in args.sessions:
        values: list[float] = []
        for run in range(latency_runs):
            signals = []
            for number in range(sessions):
                order = random.Random(args.seed * 1000 + run * 100 + number).sample(pool, len(pool))
                signals.append(conversation(trimmed(order, latency_seconds), rng, number))
            values += asyncio.run(latency_run(model, signals))
        latency[str(sessions)] = {
            "p50_ms": percentile(values, 50) * 1000,
            "p95_ms": percentile(values, 95) * 1000,
            "max_ms": (max(values) if values else math.nan) * 1000,
            "utterances": len(values),
        }
        print(f"  latency with {sessions} session(s): {len(values)} utterances measured")

    import torch

    results: dict[str, Any] = {
        "model_id": model.model_id,
        "architecture": model.info.architecture,
        "audio_seconds": round(duration, 2),
        "clips": len(clips),
        "utterances": utterances,
        "runs": runs,
        "rtf": statistics.median(rtfs),
        "pipeline_seconds": statistics.median(pipeline_times),
        "forward_batched_seconds": statistics.median(forwards),
        "forward_single_seconds": statistics.median(singles),
        "overhead_vs_batched_forward": statistics.median(ratios),
        "overhead_vs_single_forward": statistics.median(ratios_single),
        "batch_sizes": batch_sizes,
        "latency": latency,
        "latency_seconds_per_session": latency_seconds,
        "latency_runs": latency_runs,
        "rss_after_model_load_mb": round(rss_after_load, 1),
        "peak_rss_mb": round(rss_mb(), 1),
        "environment": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "machine": platform.machine(),
        },
        "quick": args.quick,
    }
    rows = [
        ("audio", f"{duration:.1f} s, {len(clips)} clips, {utterances} utterances"),
        (
            "real-time factor (analyze)",
            f"{results['rtf']:.4f}  ({1 / results['rtf']:.0f}x faster than real time)",
        ),
        ("pipeline time", f"{results['pipeline_seconds']:.2f} s"),
        (
            "bare forward, same batches",
            f"{results['forward_batched_seconds']:.2f} s  (batch sizes {sorted(set(batch_sizes))})",
        ),
        ("bare forward, one by one", f"{results['forward_single_seconds']:.2f} s"),
        (
            "SDK overhead (pipeline / forward)",
            f"{results['overhead_vs_batched_forward']:.3f}  (target <= 1.25)",
        ),
        ("  vs one-by-one forward", f"{results['overhead_vs_single_forward']:.3f}"),
    ]
    for sessions, figures in latency.items():
        rows.append(
            (
                f"latency, {sessions} session(s) p50 / p95",
                f"{figures['p50_ms']:.0f} / {figures['p95_ms']:.0f} ms  ({figures['utterances']} utterances)",
            )
        )
    rows += [
        ("RSS after model load", f"{results['rss_after_model_load_mb']:.0f} MB"),
        ("peak RSS", f"{results['peak_rss_mb']:.0f} MB"),
    ]
    setup = f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}"
    print(f"\nstreaming benchmark (medians of {runs} runs; {setup})")
    print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
