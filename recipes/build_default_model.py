#!/usr/bin/env python3
"""Retrain the bundled default model in one command.

    python recipes/build_default_model.py --data_folder ../shared/corpora

Trains every recipe (resuming where a run stopped), exports each run's best
checkpoint with its fitted temperature, builds their ensemble, keeps the one
with the best validation UA (the ensemble only when it gains at least a point
over the best single model; test speakers play no part in the choice), copies it into
``ser_sdk/models/default``, runs ``benchmarks/accuracy.py`` on it and writes
the model card beside it. When new corpora appear in the data folder, this is
the only command to run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

RECIPES = Path(__file__).resolve().parent
REPO = RECIPES.parent
sys.path.insert(0, str(RECIPES))
sys.path.insert(0, str(REPO))

from model_card import write_model_card  # noqa: E402

from ser_sdk.model import ModelInfo, default_model_dir  # noqa: E402

ARCHITECTURES = ("ecapa", "crnn")
ENSEMBLE_MIN_GAIN = 0.01


def run(command: Sequence[str]) -> None:
    """Run a recipe step; its own progress bars go to the terminal."""
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=REPO)


def build(data_folder: Path, architectures: Sequence[str], destination: Path, extra: Sequence[str]) -> Path:
    candidates: dict[str, Path] = {}
    for architecture in architectures:
        common = [f"recipes/hparams/{architecture}.yaml", "--data_folder", str(data_folder), *extra]
        run([sys.executable, "recipes/train.py", *common])
        candidates[architecture] = REPO / "results" / "export" / architecture
        run([sys.executable, "recipes/export.py", *common, "--export_dir", str(candidates[architecture])])
    if len(candidates) > 1:
        candidates["ensemble"] = REPO / "results" / "export" / "ensemble"
        members = [str(candidates[name]) for name in architectures]
        run([sys.executable, "recipes/ensemble.py", *members, "--export_dir", str(candidates["ensemble"])])
    infos = {
        name: ModelInfo.model_validate_json((folder / "model.json").read_text())
        for name, folder in candidates.items()
    }
    scores = {name: info.metrics["valid"]["UA"] for name, info in infos.items()}
    print("validation UA:", json.dumps(scores))
    best = max(architectures, key=scores.get)
    # An ensemble costs one forward pass per member: it has to earn that on the validation split.
    if scores.get("ensemble", 0.0) >= scores[best] + ENSEMBLE_MIN_GAIN:
        best = "ensemble"
    if destination.exists():
        shutil.rmtree(destination)
    shutil.copytree(candidates[best], destination)
    chosen = infos[best].model_copy(deep=True)
    chosen.training["compared_on_valid"] = scores
    (destination / "model.json").write_text(chosen.model_dump_json(indent=2) + "\n")
    accuracy_folder = REPO / "results" / "accuracy"
    benchmark = ["benchmarks/accuracy.py", "--model", str(destination), "--corpora", str(data_folder)]
    run([sys.executable, *benchmark])
    write_model_card(destination, accuracy_folder)
    return destination


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_folder", type=Path, default=REPO.parent / "shared" / "corpora")
    parser.add_argument("--architectures", nargs="+", choices=ARCHITECTURES, default=list(ARCHITECTURES))
    parser.add_argument("--destination", type=Path, default=default_model_dir())
    args, extra = parser.parse_known_args(argv)
    print(f"default model written to {build(args.data_folder, args.architectures, args.destination, extra)}")


if __name__ == "__main__":
    main()
