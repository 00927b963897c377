#!/usr/bin/env python3
"""Combine exported models into one ensemble directory, calibrated on the validation split.

    python recipes/ensemble.py results/export/ecapa results/export/crnn \
        --manifest results/manifests/valid.json --export_dir results/export/ensemble

The ensemble's logits are the mean of its members' calibrated log-probabilities;
one more temperature, fitted on the validation split, keeps its confidences
honest. The members are copied in whole, so each still loads on its own.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from export import fit_temperature, validation_metrics
from train import LABELS

from ser_sdk.audio import load_audio
from ser_sdk.model import EmotionModel, ModelInfo, log_softmax


def member_logprobs(
    members: Sequence[EmotionModel], entries: dict[str, dict]
) -> tuple[np.ndarray, np.ndarray]:
    """Mean calibrated log-probabilities of the members and the targets, one clip at a time (no padding)."""
    rows, targets = [], []
    for entry in tqdm(entries.values(), desc="scoring validation split", unit="clip", leave=False):
        samples = load_audio(entry["path"])
        rows.append(np.mean([log_softmax(member.logits([samples]))[0] for member in members], axis=0))
        targets.append(LABELS.index(entry["label"]))
    return np.stack(rows), np.array(targets)


def build_ensemble(member_dirs: Sequence[Path], manifest: Path, export_dir: Path) -> ModelInfo:
    members = [EmotionModel.load(path, num_threads=1) for path in member_dirs]
    entries = json.loads(manifest.read_text())
    logprobs, targets = member_logprobs(members, entries)
    temperature = fit_temperature(logprobs, targets)

    if export_dir.exists():
        shutil.rmtree(export_dir)
    export_dir.mkdir(parents=True)
    names = []
    for member in members:
        name = member.info.architecture
        shutil.copytree(member.directory, export_dir / name)
        names.append(name)
    info = ModelInfo(
        model_id="ser-ensemble-" + "-".join(m.model_id.removeprefix("ser-") for m in members),
        architecture="ensemble",
        labels=list(LABELS),
        temperature=round(temperature, 4),
        members=names,
        metrics={
            "valid": validation_metrics(logprobs, targets, temperature),
            "members_valid_UA": {m.info.architecture: m.info.metrics["valid"]["UA"] for m in members},
        },
        training={
            "hparams": " + ".join(m.info.training["hparams"] for m in members),
            "members": {m.info.architecture: m.info.training for m in members},
            "corpora": members[0].info.training.get("corpora", []),
            "overrides": members[0].info.training.get("overrides", {}),
            "epoch": {m.info.architecture: m.info.training.get("epoch") for m in members},
            "parameters": sum(m.info.training.get("parameters", 0) for m in members),
            "wall_minutes": max((m.info.training.get("wall_minutes") or 0) for m in members) or None,
        },
    )
    (export_dir / "model.json").write_text(info.model_dump_json(indent=2) + "\n")
    return info


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("members", nargs="+", type=Path, help="exported model directories")
    parser.add_argument("--manifest", type=Path, default=Path("results/manifests/valid.json"))
    parser.add_argument("--export_dir", type=Path, required=True)
    args = parser.parse_args(argv)
    info = build_ensemble(args.members, args.manifest, args.export_dir)
    print(json.dumps(info.metrics, indent=2))


if __name__ == "__main__":
    main()
