#!/usr/bin/env python3
"""Leave-one-corpus-out: train on one corpus, test on every clip of another.

    python recipes/loco.py --recipe ecapa --pairs cremad:ravdess ravdess:cremad --number_of_epochs 12

Within-corpus test figures flatter a model: same microphones, same sentences,
same acting direction. Scoring a corpus the model never heard a clip of shows
how far it generalises. Each pair trains (resuming if interrupted), exports,
evaluates, and adds a row to ``results/loco/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

RECIPES = Path(__file__).resolve().parent
REPO = RECIPES.parent
sys.path.insert(0, str(RECIPES))
sys.path.insert(0, str(REPO))

from evaluate import EvaluationReport  # noqa: E402


class LocoRow(BaseModel):
    recipe: str
    train_corpus: str
    test_corpus: str
    clips: int
    ua: float
    wa: float
    recall: dict[str, float]
    within_corpus_valid_ua: float


def run_pair(
    recipe: str, train: str, test: str, data_folder: Path, extra: Sequence[str], root: Path
) -> LocoRow:
    folder = root / f"{recipe}_{train}"
    args = [
        f"recipes/hparams/{recipe}.yaml",
        "--data_folder",
        str(data_folder),
        "--corpora",
        f"[{train}]",
        "--manifest_folder",
        str(folder / "manifests"),
        "--output_folder",
        str(folder / "train"),
        *extra,
    ]
    for step in (
        ["recipes/train.py", *args],
        ["recipes/export.py", *args, "--export_dir", str(folder / "model")],
    ):
        print("+", " ".join(step), flush=True)
        subprocess.run([sys.executable, *step], check=True, cwd=REPO)
    evaluation = folder / f"eval_{test}"
    command = ["recipes/evaluate.py", "--model", str(folder / "model"), "--loco", test]
    command += ["--data_folder", str(data_folder), "--output_folder", str(evaluation), "--snr"]
    subprocess.run([sys.executable, *command], check=True, cwd=REPO)
    report = EvaluationReport.model_validate_json((evaluation / "evaluation.json").read_text())
    scores = report.clean_for(test)
    info = json.loads((folder / "model" / "model.json").read_text())
    return LocoRow(
        recipe=recipe,
        train_corpus=train,
        test_corpus=test,
        clips=scores.clips,
        ua=scores.report.ua,
        wa=scores.report.wa,
        recall=scores.report.recall,
        within_corpus_valid_ua=info["metrics"]["valid"]["UA"],
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="ecapa", choices=("ecapa", "crnn"))
    parser.add_argument("--pairs", nargs="+", default=["cremad:ravdess", "ravdess:cremad"], help="TRAIN:TEST")
    parser.add_argument("--data_folder", type=Path, default=REPO.parent / "shared" / "corpora")
    parser.add_argument("--output_folder", type=Path, default=REPO / "results" / "loco")
    args, extra = parser.parse_known_args(argv)
    summary = args.output_folder / "summary.json"
    rows = (
        [LocoRow.model_validate(row) for row in json.loads(summary.read_text())] if summary.is_file() else []
    )
    for pair in args.pairs:
        train, test = pair.split(":")
        row = run_pair(args.recipe, train, test, args.data_folder, extra, args.output_folder)
        rows = [r for r in rows if (r.recipe, r.train_corpus, r.test_corpus) != (row.recipe, train, test)]
        rows.append(row)
        summary.parent.mkdir(parents=True, exist_ok=True)
        summary.write_text(json.dumps([r.model_dump() for r in rows], indent=2) + "\n")
        print(f"{row.recipe} trained on {train}, tested on all of {test}: UA {row.ua:.3f}, WA {row.wa:.3f}")


if __name__ == "__main__":
    main()
