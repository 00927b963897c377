#!/usr/bin/env python3
"""The classic baseline: openSMILE eGeMAPS functionals + standardisation + RBF SVM.

    python recipes/baseline.py --manifest_folder results/manifests --output_folder results/baseline

This is what a practitioner would build without a neural model (Eyben et al.,
2016), so the project's models are compared against it on the same
speaker-independent split. C and gamma are chosen on the validation split only;
the test split is scored once. Feature extraction (88 functionals per clip)
costs minutes for a few thousand clips, so features are cached per clip path
under ``results/egemaps_cache`` and recomputed when the file changes.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel
from sklearn.calibration import CalibratedClassifierCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from evaluate import corpus_scores, label_targets
from metrics import classification_report

from ser_sdk.audio import SAMPLE_RATE, load_audio
from ser_sdk.errors import AudioError
from ser_sdk.events import LABELS

logger = logging.getLogger(__name__)

Entries = Mapping[str, Mapping[str, Any]]
DEFAULT_CACHE = Path(__file__).resolve().parent.parent / "results" / "egemaps_cache"
FEATURE_SET = "eGeMAPSv02"
C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0)
GAMMA_FACTORS = (0.25, 1.0, 4.0)
"""Multiples of 1 / n_features, sklearn's ``gamma="scale"`` for standardised features."""


class EgemapsExtractor:
    """eGeMAPSv02 functionals of a signal or a file, with a per-file cache keyed on path, size and mtime."""

    def __init__(self, cache_folder: str | Path | None = DEFAULT_CACHE) -> None:
        import opensmile

        self._smile = opensmile.Smile(
            feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals
        )
        self.names: list[str] = list(self._smile.feature_names)
        self.cache_folder = Path(cache_folder) if cache_folder is not None else None

    def from_signal(self, samples: np.ndarray) -> np.ndarray:
        """88 functionals of 16 kHz mono samples."""
        frame = self._smile.process_signal(np.asarray(samples, dtype=np.float32), SAMPLE_RATE)
        return frame.to_numpy(dtype=np.float64).reshape(-1)

    def _cache_file(self, path: Path) -> Path | None:
        if self.cache_folder is None:
            return None
        key = hashlib.sha1(f"{FEATURE_SET}:{path}".encode()).hexdigest()
        return self.cache_folder / key[:2] / f"{key}.npz"

    def from_path(self, path: str | Path) -> np.ndarray:
        """Functionals of an audio file; raises :class:`AudioError` when it cannot be decoded."""
        path = Path(path).resolve()
        stat = path.stat()
        stamp = np.array([stat.st_size, stat.st_mtime_ns], dtype=np.int64)
        cache_file = self._cache_file(path)
        if cache_file is not None and cache_file.is_file():
            try:
                with np.load(cache_file) as cached:
                    if str(cached["path"]) == str(path) and np.array_equal(cached["stamp"], stamp):
                        return cached["features"]
            except (OSError, ValueError, KeyError) as error:
                logger.warning("ignoring unreadable feature cache %s: %s", cache_file, error)
        features = self.from_signal(load_audio(path))
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            # Written beside and renamed, so a run that is stopped never leaves a half-written entry.
            with tempfile.NamedTemporaryFile(dir=cache_file.parent, suffix=".npz", delete=False) as handle:
                np.savez(handle, features=features, path=str(path), stamp=stamp)
            os.replace(handle.name, cache_file)
        return features

    def from_entries(self, entries: Entries, desc: str = "eGeMAPS") -> tuple[list[str], np.ndarray]:
        """Features of every readable clip of a manifest, in sorted id order; unreadable clips are logged."""
        ids, rows = [], []
        for utterance_id in tqdm(sorted(entries), desc=desc, unit="clip", leave=False):
            try:
                rows.append(self.from_path(entries[utterance_id]["path"]))
            except AudioError as error:
                logger.warning("skipping %s: %s", utterance_id, error)
                continue
            ids.append(utterance_id)
        return ids, np.stack(rows) if rows else np.zeros((0, len(self.names)))


class GridPoint(BaseModel):
    C: float
    gamma: float
    valid_ua: float


class BaselineInfo(BaseModel):
    """How the baseline was fitted: the chosen point and the whole validation grid."""

    model_id: str = "egemaps-svm"
    feature_set: str = FEATURE_SET
    train_clips: int
    valid_clips: int
    C: float
    gamma: float
    valid_ua: float
    grid: list[GridPoint]


def make_svm(C: float, gamma: float, probability: bool) -> Pipeline:
    """Standardised features into an RBF SVM; with ``probability``, Platt-scaled by 5-fold cross-fitting."""
    svm = SVC(kernel="rbf", C=C, gamma=gamma, class_weight="balanced")
    if probability:
        return make_pipeline(
            StandardScaler(), CalibratedClassifierCV(svm, method="sigmoid", cv=5, ensemble=False)
        )
    return make_pipeline(StandardScaler(), svm)


class BaselineModel:
    """A fitted eGeMAPS + SVM classifier; ``probabilities`` makes it usable by ``evaluate.evaluate_model``."""

    def __init__(self, pipeline: Pipeline, extractor: EgemapsExtractor, info: BaselineInfo) -> None:
        self.pipeline, self.extractor, self.info = pipeline, extractor, info
        self.model_id = info.model_id

    def proba_from_features(self, features: np.ndarray) -> np.ndarray:
        """``[n, 4]`` in ``LABELS`` order (a class absent from training gets probability 0)."""
        probs = np.zeros((len(features), len(LABELS)))
        if len(features):
            probs[:, self.pipeline.classes_] = self.pipeline.predict_proba(features)
        return probs

    def predict_proba(self, entries: Entries) -> tuple[list[str], np.ndarray]:
        """Ids of the readable clips (sorted) and their probabilities; features come from the cache."""
        ids, features = self.extractor.from_entries(entries, desc="eGeMAPS (scoring)")
        return ids, self.proba_from_features(features)

    def probabilities(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities for in-memory 16 kHz signals (noisy copies, which have no file to cache)."""
        if len(batch) == 0:
            return np.zeros((0, len(LABELS)))
        return self.proba_from_features(np.stack([self.extractor.from_signal(x) for x in batch]))


def train_baseline(
    train: Entries,
    valid: Entries,
    cache_folder: str | Path | None = DEFAULT_CACHE,
    c_grid: Sequence[float] = C_GRID,
    gamma_factors: Sequence[float] = GAMMA_FACTORS,
) -> BaselineModel:
    """Fit on ``train``, pick (C, gamma) by validation UA, refit the winner with probability outputs."""
    extractor = EgemapsExtractor(cache_folder)
    train_ids, x_train = extractor.from_entries(train, desc="eGeMAPS (train)")
    valid_ids, x_valid = extractor.from_entries(valid, desc="eGeMAPS (valid)")
    if not train_ids or not valid_ids:
        raise ValueError("the baseline needs readable clips in both the train and the valid split")
    y_train, y_valid = label_targets(train, train_ids), label_targets(valid, valid_ids)
    if len(set(y_train.tolist())) < 2:
        raise ValueError("the train split holds a single class: nothing to learn")
    grid = []
    points = list(itertools.product(c_grid, [factor / x_train.shape[1] for factor in gamma_factors]))
    for C, gamma in tqdm(points, desc="SVM grid (valid UA)", leave=False):
        predicted = make_svm(C, gamma, probability=False).fit(x_train, y_train).predict(x_valid)
        grid.append(
            GridPoint(C=C, gamma=gamma, valid_ua=classification_report(y_valid, predicted, LABELS).ua)
        )
    best = max(grid, key=lambda point: point.valid_ua)
    logger.info("baseline: C=%g gamma=%.4g valid UA %.3f", best.C, best.gamma, best.valid_ua)
    pipeline = make_svm(best.C, best.gamma, probability=True).fit(x_train, y_train)
    info = BaselineInfo(
        train_clips=len(train_ids),
        valid_clips=len(valid_ids),
        C=best.C,
        gamma=best.gamma,
        valid_ua=best.valid_ua,
        grid=grid,
    )
    return BaselineModel(pipeline, extractor, info)


def predict_proba(model: BaselineModel, entries: Entries) -> tuple[list[str], np.ndarray]:
    """Module-level alias of :meth:`BaselineModel.predict_proba`."""
    return model.predict_proba(entries)


def main(argv: Sequence[str] | None = None) -> None:
    import joblib

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest_folder", type=Path, default=Path("results/manifests"))
    parser.add_argument("--cache_folder", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--output_folder", type=Path, default=Path("results/baseline"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    splits = {
        name: json.loads((args.manifest_folder / f"{name}.json").read_text())
        for name in ("train", "valid", "test")
    }
    model = train_baseline(splits["train"], splits["valid"], args.cache_folder)
    test = splits["test"]
    ids, probs = model.predict_proba(test)
    scores = corpus_scores([test[i]["corpus"] for i in ids], label_targets(test, ids), probs)
    args.output_folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(model.pipeline, args.output_folder / "egemaps_svm.joblib")
    result = {"info": model.info.model_dump(), "test": [s.model_dump() for s in scores]}
    (args.output_folder / "baseline.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"C={model.info.C:g} gamma={model.info.gamma:.4g} valid UA {100 * model.info.valid_ua:.1f} %")
    for s in scores:
        print(
            f"test {s.corpus:<8} n={s.clips:<5} UA {100 * s.report.ua:5.1f} %  WA {100 * s.report.wa:5.1f} %"
        )


if __name__ == "__main__":
    main()
