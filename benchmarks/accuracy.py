#!/usr/bin/env python3
"""The model card figures in one command: accuracy per corpus against the eGeMAPS + SVM baseline,
calibration, robustness to noise, CPU time per utterance and model size.

    python benchmarks/accuracy.py [--model DIR] [--corpora ../shared/corpora] \
        [--output_folder results/accuracy]

Manifests are (re)made with the training run's corpora and split seed, so the
test speakers are the ones the model never saw; nothing here is tuned on them
(the baseline picks C and gamma on the validation split). Prints the tables,
writes ``accuracy.json`` and the plots to the output folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "recipes"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from baseline import DEFAULT_CACHE, BaselineInfo, BaselineModel, train_baseline
from evaluate import (
    NOISES,
    CorpusScores,
    EvaluationReport,
    corpus_scores,
    evaluate_model,
    label_targets,
    plot_confusion,
    write_outputs,
)
from prepare import PARSERS, prepare

from ser_sdk.audio import SAMPLE_RATE, load_audio
from ser_sdk.corpora import corpora_root
from ser_sdk.model import EmotionModel, default_model_dir

REPO = Path(__file__).resolve().parent.parent
UTTERANCE_SECONDS = 3.0


class Targets(BaseModel):
    """What the model card promises; every figure is printed next to its target."""

    ua_min: float = 0.75
    ua_gain_over_baseline_min: float = 0.05
    ua_drop_at_10db_max: float = 0.10
    cpu_ms_per_3s_max: float = 30.0


class CorpusRow(BaseModel):
    corpus: str
    clips: int
    model_ua: float
    model_wa: float
    model_ece: float
    baseline_ua: float
    baseline_wa: float
    baseline_ece: float
    ua_gain: float
    ua_at_snr: dict[str, dict[str, float]]  # noise -> "20" dB -> UA
    baseline_ua_at_snr: dict[str, dict[str, float]] = {}
    ua_drop_at_10db: dict[str, float]


class Speed(BaseModel):
    utterance_seconds: float
    repeats: int
    threads: int
    cpu_ms_median: float
    wall_ms_median: float


class Size(BaseModel):
    parameters: int
    bytes_on_disk: int


class AccuracyBenchmark(BaseModel):
    model_id: str
    model_dir: str
    manifest_folder: str
    split_seed: int
    noise_seed: int
    targets: Targets
    rows: list[CorpusRow]
    speed: Speed
    size: Size
    evaluation: EvaluationReport
    baseline: BaselineInfo
    baseline_clean: list[CorpusScores]
    baseline_noisy: EvaluationReport | None = None


def training_split_options(model: EmotionModel) -> dict:
    """Corpora, split seed and calm handling of the run that trained ``model`` (recipe defaults otherwise)."""
    training = model.info.training
    overrides = training.get("overrides") or {}
    return {
        "corpora": list(training.get("corpora") or PARSERS),
        "seed": int(overrides.get("split_seed", 1234)),
        "include_calm": bool(overrides.get("include_calm", False)),
    }


def training_manifest_folder(model: EmotionModel) -> Path:
    """The training run's manifest folder: a model trained on other corpora must not rewrite the default."""
    folder = Path((model.info.training.get("overrides") or {}).get("manifest_folder", "results/manifests"))
    return folder if folder.is_absolute() else REPO / folder


def parameter_count(model_dir: Path) -> int:
    """Trainable parameters of the encoder and head, built from the directory's own ``hyperparams.yaml``.

    An ensemble counts the parameters of all its members.
    """
    from hyperpyyaml import load_hyperpyyaml

    members = json.loads((model_dir / "model.json").read_text()).get("members") or []
    if members:
        return sum(parameter_count(model_dir / member) for member in members)
    with open(model_dir / "hyperparams.yaml") as handle:
        hparams = load_hyperpyyaml(handle, overrides={"pretrainer": None})
    return sum(p.numel() for name in ("embedding_model", "classifier") for p in hparams[name].parameters())


def size_on_disk(model_dir: Path) -> int:
    return sum(path.stat().st_size for path in model_dir.rglob("*") if path.is_file())


def utterance_of(samples: np.ndarray, seconds: float = UTTERANCE_SECONDS) -> np.ndarray:
    """Exactly ``seconds`` of real speech: the clip looped or cut."""
    length = int(seconds * SAMPLE_RATE)
    return np.resize(samples, length).astype(np.float32)


def time_classification(model: EmotionModel, utterance: np.ndarray, repeats: int, threads: int) -> Speed:
    """Median CPU (process) and wall time of one batch-of-one classification, after warm-up."""
    for _ in range(5):
        model.classify([utterance])
    cpu, wall = [], []
    for _ in range(repeats):
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        model.classify([utterance])
        cpu.append(time.process_time() - cpu_start)
        wall.append(time.perf_counter() - wall_start)
    return Speed(
        utterance_seconds=len(utterance) / SAMPLE_RATE,
        repeats=repeats,
        threads=threads,
        cpu_ms_median=round(1000 * statistics.median(cpu), 3),
        wall_ms_median=round(1000 * statistics.median(wall), 3),
    )


def ua_by_snr(report: EvaluationReport, corpus: str) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {}
    for scores in report.noisy:
        if scores.corpus == corpus:
            table.setdefault(scores.noise, {})[f"{scores.snr_db:g}"] = scores.ua
    return table


def build_rows(
    evaluation: EvaluationReport, baseline: Sequence[CorpusScores], baseline_noisy: EvaluationReport | None
) -> list[CorpusRow]:
    by_corpus = {scores.corpus: scores for scores in baseline}
    rows = []
    for scores in evaluation.clean:
        base = by_corpus[scores.corpus]
        drops = {
            s.noise: s.ua_drop for s in evaluation.noisy if s.corpus == scores.corpus and s.snr_db == 10.0
        }
        rows.append(
            CorpusRow(
                corpus=scores.corpus,
                clips=scores.clips,
                model_ua=scores.report.ua,
                model_wa=scores.report.wa,
                model_ece=scores.ece,
                baseline_ua=base.report.ua,
                baseline_wa=base.report.wa,
                baseline_ece=base.ece,
                ua_gain=scores.report.ua - base.report.ua,
                ua_at_snr=ua_by_snr(evaluation, scores.corpus),
                baseline_ua_at_snr=ua_by_snr(baseline_noisy, scores.corpus) if baseline_noisy else {},
                ua_drop_at_10db=drops,
            )
        )
    return rows


def mark(ok: bool) -> str:
    return "ok" if ok else "MISS"


def render(result: AccuracyBenchmark) -> str:
    """Plain-text tables, one line per test corpus plus the pooled line; percentages are UA/WA x 100."""
    t = result.targets
    lines = [
        f"model {result.model_id} ({result.model_dir})",
        f"test split of {result.manifest_folder} (split seed {result.split_seed}), "
        f"noise seed {result.noise_seed}",
        "",
        f"accuracy vs eGeMAPS+SVM baseline; targets: UA >= {100 * t.ua_min:.0f} % per corpus, "
        f">= {100 * t.ua_gain_over_baseline_min:+.0f} points over the baseline",
        f"{'corpus':<9}{'clips':>6}{'UA model':>10}{'UA base':>9}{'diff':>7}{'WA model':>10}{'WA base':>9}"
        f"{'ECE model':>11}{'ECE base':>10}  targets",
    ]
    for row in result.rows:
        checks = (
            f"UA {mark(row.model_ua >= t.ua_min)}, diff {mark(row.ua_gain >= t.ua_gain_over_baseline_min)}"
        )
        lines.append(
            f"{row.corpus:<9}{row.clips:>6}{100 * row.model_ua:>10.1f}{100 * row.baseline_ua:>9.1f}"
            f"{100 * row.ua_gain:>+7.1f}{100 * row.model_wa:>10.1f}{100 * row.baseline_wa:>9.1f}"
            f"{row.model_ece:>11.3f}{row.baseline_ece:>10.3f}  {checks}"
        )
    noises = sorted({noise for row in result.rows for noise in row.ua_at_snr})
    snrs = sorted(
        {snr for row in result.rows for table in row.ua_at_snr.values() for snr in table}, key=float
    )[::-1]
    if noises and snrs:
        lines += [
            "",
            f"UA (%) under noise; target: drop at 10 dB <= {100 * t.ua_drop_at_10db_max:.0f} points",
        ]
        header = f"{'corpus':<9}{'noise':<8}{'clean':>7}" + "".join(f"{f'{snr} dB':>8}" for snr in snrs)
        lines.append(header + f"{'drop@10':>9}  target")
        for row in result.rows:
            for noise in noises:
                values = "".join(f"{100 * row.ua_at_snr[noise][snr]:>8.1f}" for snr in snrs)
                drop = row.ua_drop_at_10db.get(noise)
                tail = (
                    f"{100 * drop:>9.1f}  {mark(drop <= t.ua_drop_at_10db_max)}" if drop is not None else ""
                )
                lines.append(f"{row.corpus:<9}{noise:<8}{100 * row.model_ua:>7.1f}{values}{tail}")
                base = row.baseline_ua_at_snr.get(noise)
                if base:
                    base_values = "".join(f"{100 * base[snr]:>8.1f}" for snr in snrs)
                    lines.append(f"{'':<9}{'(base)':<8}{100 * row.baseline_ua:>7.1f}{base_values}")
    s = result.speed
    lines += [
        "",
        f"speed: {s.utterance_seconds:g} s utterance, batch of 1, {s.threads} thread(s), "
        f"median of {s.repeats}: "
        f"CPU {s.cpu_ms_median:.1f} ms (target < {t.cpu_ms_per_3s_max:.0f} ms: "
        f"{mark(s.cpu_ms_median < t.cpu_ms_per_3s_max)}), wall {s.wall_ms_median:.1f} ms",
        f"size: {result.size.parameters:,} parameters, {result.size.bytes_on_disk / 1e6:.2f} MB on disk",
    ]
    return "\n".join(lines)


def run(
    model_dir: Path,
    corpora: Path,
    output_folder: Path,
    manifest_folder: Path | None,
    snrs: Sequence[float],
    noises: Sequence[str],
    seed: int,
    repeats: int,
    threads: int,
    cache_folder: Path,
    baseline_noise: bool,
) -> AccuracyBenchmark:
    model = EmotionModel.load(model_dir, num_threads=threads)
    options = training_split_options(model)
    manifest_folder = manifest_folder or training_manifest_folder(model)
    paths = prepare(corpora, manifest_folder, **options)
    splits = {name: json.loads(path.read_text()) for name, path in paths.items()}
    test = splits["test"]
    if not test:
        raise SystemExit(
            f"the test split in {manifest_folder} is empty: no corpus has three or more speakers"
        )

    evaluation = evaluate_model(model, test, snrs, noises, seed)
    baseline: BaselineModel = train_baseline(splits["train"], splits["valid"], cache_folder)
    # Both systems are scored on the same clips: those the model's evaluation could read.
    scored = {i: test[i] for i in sorted(test) if i not in set(evaluation.skipped)}
    ids, probs = baseline.predict_proba(scored)
    baseline_clean = corpus_scores([test[i]["corpus"] for i in ids], label_targets(test, ids), probs)
    baseline_noisy = evaluate_model(baseline, scored, snrs, noises, seed) if baseline_noise else None

    first = sorted(scored)[0]
    utterance = utterance_of(load_audio(test[first]["path"]))
    result = AccuracyBenchmark(
        model_id=model.model_id,
        model_dir=str(model.directory),
        manifest_folder=str(manifest_folder),
        split_seed=options["seed"],
        noise_seed=seed,
        targets=Targets(),
        rows=build_rows(evaluation, baseline_clean, baseline_noisy),
        speed=time_classification(model, utterance, repeats, threads),
        size=Size(parameters=parameter_count(model.directory), bytes_on_disk=size_on_disk(model.directory)),
        evaluation=evaluation,
        baseline=baseline.info,
        baseline_clean=baseline_clean,
        baseline_noisy=baseline_noisy,
    )
    write_outputs(evaluation, output_folder)
    for scores in baseline_clean:
        plot_confusion(scores, output_folder / f"baseline_confusion_{scores.corpus}.png", "eGeMAPS + SVM\n")
    (output_folder / "accuracy.json").write_text(result.model_dump_json(indent=2) + "\n")
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=default_model_dir())
    parser.add_argument("--corpora", type=Path, default=corpora_root())
    parser.add_argument("--output_folder", type=Path, default=REPO / "results" / "accuracy")
    parser.add_argument("--manifest_folder", type=Path, default=None, help="default: the training run's")
    parser.add_argument("--cache_folder", type=Path, default=DEFAULT_CACHE, help="eGeMAPS feature cache")
    parser.add_argument("--snr", type=float, nargs="*", default=[20.0, 10.0, 5.0])
    parser.add_argument("--noise", nargs="*", choices=NOISES, default=list(NOISES))
    parser.add_argument("--seed", type=int, default=0, help="noise seed")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the model")
    parser.add_argument("--baseline_noise", action="store_true", help="also score the baseline under noise")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    result = run(
        args.model,
        args.corpora,
        args.output_folder,
        args.manifest_folder,
        args.snr,
        args.noise,
        args.seed,
        args.repeats,
        args.threads,
        args.cache_folder,
        args.baseline_noise,
    )
    print(render(result))
    print(f"\nwrote {args.output_folder / 'accuracy.json'} and plots")


if __name__ == "__main__":
    main()
