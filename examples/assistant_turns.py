#!/usr/bin/env python3
"""An assistant's turn loop with reply adaptation.

Each user turn is an audio clip. The clip goes through an ``EmotionEngine``
session in 20 ms chunks, as a microphone would deliver it; before answering,
the assistant passes its reply through ``session.adapt_reply`` and gets back
tone instructions for its LLM, SSML prosody for its TTS and, after sustained
anger, the suggestion to hand over to a human.

    python examples/assistant_turns.py                       # a scripted call from the corpora
    python examples/assistant_turns.py turn1.wav turn2.wav   # your own turns, in order
    python examples/assistant_turns.py --model DIR --config ser.yaml

``--config`` takes the ``plugins.reply`` options of a ser-sdk YAML file. The
scripted call uses one CREMA-D (or RAVDESS) speaker from ``$SER_CORPORA``
(default ``../shared/corpora``): calm, then angry three times, then sad.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import ValidationError

try:
    from ser_sdk_reply import ReplyPlugin
except ImportError:  # running from a checkout without installing: the plugins live in plugins/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "plugins"))
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from ser_sdk_reply import ReplyPlugin

from ser_sdk import EmotionEngine, EmotionEvent, SerError, load_audio, load_config
from ser_sdk.corpora import corpora_root

CHUNK = 320  # 20 ms at 16 kHz
PAUSE = np.zeros(16000 * 3 // 4, dtype=np.float32)  # the user stops talking: the VAD closes the utterance

# (emotion the speaker acts, what the assistant then wants to say)
SCRIPT = [
    ("neutral", "Thanks for calling. Let me pull up your order."),
    ("angry", "I see the parcel was delayed. I can check where it is now."),
    ("angry", "I understand. The carrier shows it at the local depot."),
    ("angry", "I'm sorry this keeps going wrong. I can arrange a redelivery for tomorrow."),
    ("sad", "That sounds really disappointing. Let's sort it out together."),
]
CREMAD_CODES = {"neutral": "NEU", "happy": "HAP", "sad": "SAD", "angry": "ANG"}
RAVDESS_CODES = {"neutral": "01", "happy": "03", "sad": "04", "angry": "05"}


def _pick(clips_of: Callable[[str], list[Path]]) -> list[tuple[Path, str]] | None:
    """One clip per line of ``SCRIPT`` from one speaker's clips by emotion, or ``None`` if one is missing."""
    turns = []
    for index, (emotion, reply) in enumerate(SCRIPT):
        clips = clips_of(emotion)
        if not clips:
            return None
        turns.append((clips[index % len(clips)], reply))
    return turns


def scripted_call() -> list[tuple[Path, str]]:
    """One speaker's clips in the order of ``SCRIPT``, with the assistant's reply after each."""
    root = corpora_root()
    cremad = root / "cremad" / "AudioWAV"
    actors = sorted({path.name.split("_")[0] for path in cremad.glob("*.flac")}) if cremad.is_dir() else []
    for actor in actors:
        turns = _pick(
            lambda emotion, actor=actor: sorted(cremad.glob(f"{actor}_*_{CREMAD_CODES[emotion]}_*.flac"))
        )
        if turns:
            return turns
    for folder in sorted((root / "ravdess").glob("Actor_*")):
        turns = _pick(
            lambda emotion, folder=folder: sorted(folder.glob(f"03-01-{RAVDESS_CODES[emotion]}-*.flac"))
        )
        if turns:
            return turns
    raise SystemExit(f"no CREMA-D or RAVDESS clips under {root}; set SER_CORPORA or pass audio files")


def describe(event: EmotionEvent | None) -> str:
    if event is None:
        return "no speech heard"
    return f"{event.label} ({event.confidence:.2f})"


async def run(turns: list[tuple[Path, str]], model: str | None, reply_options: dict) -> None:
    engine = EmotionEngine(model, plugins=[ReplyPlugin(reply_options)])
    async with engine, engine.session(metadata={"example": "assistant_turns"}) as session:
        for number, (path, reply) in enumerate(turns, start=1):
            audio = np.concatenate([load_audio(path), PAUSE])
            for offset in range(0, len(audio), CHUNK):
                await session.feed(audio[offset : offset + CHUNK])
            advice = await session.adapt_reply(reply)  # waits until the turn is scored

            state = session.state
            print(f"\nturn {number}: {path.name}")
            print(
                f"  heard      {describe(state.last_emotion)}; mood {state.mood_label} "
                f"({state.mood.confidence:.2f}) over {state.utterances} utterances"
            )
            print(f"  reply      {advice.text}")
            if not advice.applied_by:
                print("  advice     none: the mood is not clear enough to act on")
            for line in advice.tone_instructions:
                print(textwrap.fill(line, 100, initial_indent="  tone       ", subsequent_indent=" " * 13))
            if advice.prosody is not None:
                print(f"  ssml       {advice.ssml()}")
            if advice.escalate:
                print(f"  escalate   hand over to a human: {advice.escalation_reason}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("files", nargs="*", type=Path, help="the user's turns, one audio file each")
    parser.add_argument("--model", help="model directory (default: the bundled model)")
    parser.add_argument("--config", type=Path, help="ser-sdk YAML whose plugins.reply options to use")
    args = parser.parse_args(argv)

    try:
        options = (load_config(args.config).plugins.get("reply") or {}) if args.config else {}
        if args.files:
            turns = [(path, "Sure, let me check that for you.") for path in args.files]
        else:
            turns = scripted_call()
        asyncio.run(run(turns, args.model, options))
    except (SerError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
