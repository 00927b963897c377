"""Model directories: what loads, what is refused with a ModelError, and ensembles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ser_sdk.errors import ModelError
from ser_sdk.events import LABELS, EmotionScores
from ser_sdk.model import EmotionModel


def speech_like(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    voiced = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 8))
    return (
        0.2 * voiced * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)) + 0.01 * rng.standard_normal(t.size)
    ).astype(np.float32)


def test_classify_gives_calibrated_scores_for_a_batch_of_different_lengths(debug_model_dir: Path) -> None:
    model = EmotionModel.load(debug_model_dir, num_threads=1)
    batch = [speech_like(1.2, 0), speech_like(3.0, 1), speech_like(0.6, 2)]
    scores = model.classify(batch)
    assert len(scores) == 3 and all(isinstance(s, EmotionScores) for s in scores)
    assert all(abs(sum(s.as_dict().values()) - 1) < 1e-6 for s in scores)
    alone = model.probabilities([batch[1]])[0]
    # Padding inside a batch barely moves an utterance's scores.
    assert np.allclose(scores[1].as_array(), alone, atol=0.02)
    assert model.classify([]) == []


def test_an_ensemble_of_identical_members_scores_like_the_member(
    debug_model_dir: Path, tmp_path: Path
) -> None:
    ensemble = tmp_path / "ensemble"
    ensemble.mkdir()
    for name in ("first", "second"):
        shutil.copytree(debug_model_dir, ensemble / name)
    info = json.loads((debug_model_dir / "model.json").read_text())
    info.update(
        model_id="test-ensemble", architecture="ensemble", temperature=1.0, members=["first", "second"]
    )
    (ensemble / "model.json").write_text(json.dumps(info))

    member = EmotionModel.load(debug_model_dir, num_threads=1)
    combined = EmotionModel.load(ensemble, num_threads=1)
    batch = [speech_like(1.5, 3), speech_like(2.5, 4)]
    assert combined.model_id == "test-ensemble" and len(combined.members) == 2
    assert np.allclose(combined.probabilities(batch), member.probabilities(batch), atol=1e-5)

    info["temperature"] = 2.0
    (ensemble / "model.json").write_text(json.dumps(info))
    softer = EmotionModel.load(ensemble, num_threads=1).probabilities(batch)
    assert (softer.max(axis=1) < member.probabilities(batch).max(axis=1)).all()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: shutil.rmtree(d), "not found"),
        (lambda d: (d / "model.json").unlink(), "missing model.json"),
        (lambda d: (d / "classifier.ckpt").unlink(), "missing classifier.ckpt"),
        (lambda d: (d / "model.json").write_text("{not json"), "model.json is invalid"),
        (lambda d: (d / "embedding_model.ckpt").write_bytes(b"garbage"), "could not load"),
        (
            lambda d: (d / "label_encoder.ckpt").write_text(
                "'sad' => 0\n'angry' => 1\n'happy' => 2\n'neutral' => 3\n"
                "================\n'starting_index' => 0\n"
            ),
            "order",
        ),
    ],
)
def test_broken_model_directories_raise_model_error(
    debug_model_dir: Path, tmp_path: Path, damage, message
) -> None:
    broken = tmp_path / "model"
    shutil.copytree(debug_model_dir, broken)
    damage(broken)
    with pytest.raises(ModelError, match=message):
        EmotionModel.load(broken)


def test_labels_other_than_the_four_are_refused(debug_model_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(debug_model_dir, model_dir)
    info = json.loads((model_dir / "model.json").read_text())
    info["labels"] = [*LABELS[:3], "calm"]
    (model_dir / "model.json").write_text(json.dumps(info))
    with pytest.raises(ModelError, match="labels"):
        EmotionModel.load(model_dir)
