#!/usr/bin/env python3
"""The moderation plugin on held-out clips: how many angry utterances it flags, and how many
neutral, happy and sad ones it flags wrongly, per corpus.

    python benchmarks/moderation.py [--model DIR] [--manifest results/manifests/test.json] \
        [--sweep] [--output results/moderation.json]

Each clip is classified by the model, and its emotion event goes through
``ModerationPlugin`` as a session of its own (so cooldowns and escalation never
carry over from one clip to the next) at the plugin's default settings, or at
the options given with ``--options '{"threshold": 0.6}'``.

``--sweep`` also prints the figures over a range of thresholds. Choose
defaults on the validation manifest (``results/manifests/valid.json``) and
report them on the test manifest, whose speakers the model never saw.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "plugins"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from pydantic import BaseModel, TypeAdapter
from ser_sdk_moderation import ModerationConfig, ModerationPlugin
from tqdm import tqdm

from ser_sdk import EmotionEvent, EmotionScores, SessionState, load_audio
from ser_sdk.corpora import corpora_root
from ser_sdk.model import EmotionModel
from ser_sdk.testing import RecordingContext

REPO = Path(__file__).resolve().parent.parent
TARGET_ANGRY_FLAGGED = 0.80
TARGET_OTHERS_FLAGGED = 0.05
OTHER_LABELS = ("neutral", "happy", "sad")


class Clip(BaseModel):
    path: str
    label: str
    speaker: str
    corpus: str
    duration: float


def load_manifest(path: Path) -> dict[str, Clip]:
    clips = TypeAdapter(dict[str, Clip]).validate_json(path.read_bytes())
    # Manifests store absolute paths under the data folder they were made from; follow a moved corpus.
    options = path.parent / "options.json"
    old_root = json.loads(options.read_text()).get("data_folder") if options.exists() else None
    new_root = corpora_root()
    for clip in clips.values():
        if not Path(clip.path).exists() and old_root and clip.path.startswith(old_root):
            clip.path = str(new_root / Path(clip.path).relative_to(old_root))
    missing = [clip.path for clip in clips.values() if not Path(clip.path).exists()]
    if missing:
        raise SystemExit(f"{len(missing)} clips of {path} are missing, e.g. {missing[0]} (set SER_CORPORA)")
    return clips


def classify(model: EmotionModel, clips: dict[str, Clip], batch_size: int) -> dict[str, EmotionScores]:
    """Scores per clip id; clips are batched by length so padding stays small."""
    ids = sorted(clips, key=lambda key: clips[key].duration)
    scores: dict[str, EmotionScores] = {}
    with tqdm(total=len(ids), unit="clip", desc="classifying", file=sys.stderr) as progress:
        for start in range(0, len(ids), batch_size):
            batch = ids[start : start + batch_size]
            audio = [load_audio(clips[key].path) for key in batch]
            for key, result in zip(batch, model.classify(audio), strict=True):
                scores[key] = result
            progress.update(len(batch))
    return scores


async def flagged_clips(
    clips: dict[str, Clip], scores: dict[str, EmotionScores], options: dict[str, Any], model_id: str
) -> set[str]:
    """Ids of the clips the plugin flags, each clip its own session."""
    plugin = ModerationPlugin(options)
    context = RecordingContext(logging.getLogger("benchmarks.moderation"))
    await plugin.start(context)
    for key, clip in clips.items():
        score = scores[key]
        event = EmotionEvent.from_scores(
            score, session_id=key, start=0.0, end=clip.duration, model_id=model_id
        )
        await plugin.on_emotion(event, SessionState(session_id=key, sample_rate=16000))
    await plugin.stop()
    return {event.session_id for event in context.published}


def rates(clips: dict[str, Clip], flagged: set[str]) -> dict[str, dict[str, Any]]:
    """Per corpus (and ``all``): share flagged per label and for the three non-angry labels together."""
    groups: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for key, clip in clips.items():
        for corpus in (clip.corpus, "all"):
            groups[corpus][clip.label].append(key in flagged)
            if clip.label in OTHER_LABELS:
                groups[corpus]["others"].append(key in flagged)
    return {
        corpus: {label: {"flagged": float(np.mean(v)), "n": len(v)} for label, v in labels.items()}
        for corpus, labels in sorted(groups.items(), key=lambda item: (item[0] == "all", item[0]))
    }


def print_table(table: dict[str, dict[str, Any]]) -> None:
    print(f"{'corpus':<10}{'angry flagged':>16}{'others wrongly':>16}   neutral / happy / sad wrongly")
    for corpus, labels in table.items():
        angry = labels.get("angry", {"flagged": float("nan"), "n": 0})
        others = labels.get("others", {"flagged": float("nan"), "n": 0})
        detail = " / ".join(
            f"{labels[label]['flagged']:.1%} (n={labels[label]['n']})" if label in labels else "-"
            for label in OTHER_LABELS
        )
        print(
            f"{corpus:<10}{angry['flagged']:>9.1%} n={angry['n']:<4}"
            f"{others['flagged']:>9.1%} n={others['n']:<4}   {detail}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", metavar="DIR", help="model directory (default: the bundled model)")
    parser.add_argument("--manifest", type=Path, default=REPO / "results" / "manifests" / "test.json")
    parser.add_argument("--options", default="{}", help="moderation options as JSON (default: the defaults)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--limit", type=int, default=0, help="only the first N clips (a quick look)")
    parser.add_argument("--sweep", action="store_true", help="also print the figures over thresholds")
    parser.add_argument("--output", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)

    options = json.loads(args.options)
    config = ModerationConfig.model_validate(options)
    clips = load_manifest(args.manifest)
    if args.limit:
        clips = dict(list(clips.items())[: args.limit])
    model = EmotionModel.load(args.model)
    print(f"model {model.model_id}; {len(clips)} clips from {args.manifest}", file=sys.stderr)
    scores = classify(model, clips, args.batch_size)

    flagged = asyncio.run(flagged_clips(clips, scores, options, model.model_id))
    table = rates(clips, flagged)
    print(
        f"\nModeration at threshold {config.threshold}, min_confidence {config.min_confidence} "
        f"(targets: angry flagged >= {TARGET_ANGRY_FLAGGED:.0%}, others <= {TARGET_OTHERS_FLAGGED:.0%})"
    )
    print_table(table)
    overall = table["all"]
    met = (
        overall["angry"]["flagged"] >= TARGET_ANGRY_FLAGGED
        and overall["others"]["flagged"] <= TARGET_OTHERS_FLAGGED
    )
    print(f"targets {'met' if met else 'NOT met'} overall")

    sweep: dict[str, Any] = {}
    if args.sweep:
        print("\nthreshold  angry flagged  others wrongly flagged (all corpora)")
        for threshold in np.round(np.arange(0.30, 0.851, 0.05), 2):
            swept = {**options, "threshold": float(threshold)}
            result = rates(clips, asyncio.run(flagged_clips(clips, scores, swept, model.model_id)))["all"]
            sweep[f"{threshold:.2f}"] = result
            angry, others = result["angry"]["flagged"], result["others"]["flagged"]
            print(f"{threshold:9.2f}  {angry:13.1%}  {others:22.1%}")

    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "model_id": model.model_id,
            "manifest": str(args.manifest),
            "config": config.model_dump(mode="json"),
            "rates": table,
            "targets_met": met,
            "sweep": sweep,
        }
        args.output.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
