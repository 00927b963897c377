"""Emotion classifiers: a SpeechBrain model directory loaded fully offline.

A model directory (what ``recipes/export.py`` writes) holds:

- ``hyperparams.yaml``: HyperPyYAML with ``compute_features``, ``mean_var_norm``,
  ``embedding_model``, ``classifier``, ``label_encoder`` and a ``pretrainer``,
  so ``speechbrain.inference.EncoderClassifier`` can load it too;
- ``embedding_model.ckpt``, ``classifier.ckpt``, ``label_encoder.ckpt``;
- ``model.json``: :class:`ModelInfo` (id, labels, logit scale, the temperature
  fitted on the validation split, and the measured figures).

An *ensemble* directory holds only ``model.json`` (with ``members``) and one
such directory per member; its logits are the mean of the members' calibrated
log-probabilities, divided by a temperature of its own. Each member still
loads on its own, in ser_sdk and in ``speechbrain.inference``.

Loading reads the checkpoints directly with ``torch.load`` instead of going
through SpeechBrain's fetching, so nothing is written next to the model (the
bundled one lives in ``site-packages``) and nothing can reach for the network.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from .errors import ModelError
from .events import LABELS, EmotionScores

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODEL_SAMPLE_RATE = 16000
_REQUIRED_FILES = (
    "hyperparams.yaml",
    "model.json",
    "embedding_model.ckpt",
    "classifier.ckpt",
    "label_encoder.ckpt",
)


def default_model_dir() -> Path:
    """The model bundled inside the package."""
    return Path(__file__).resolve().parent / "models" / "default"


@runtime_checkable
class Classifier(Protocol):
    """What the engine needs from a model: a synchronous, CPU-bound batch classifier."""

    model_id: str
    labels: tuple[str, ...]

    def classify(self, batch: Sequence[np.ndarray]) -> list[EmotionScores]: ...


class ModelInfo(BaseModel):
    """``model.json``: what a model is and how to turn its outputs into calibrated probabilities."""

    model_id: str
    architecture: str
    labels: list[str]
    sample_rate: int = MODEL_SAMPLE_RATE
    logit_scale: float = Field(
        1.0, gt=0, description="Multiplies the classifier output (AAM heads give cosines)."
    )
    temperature: float = Field(1.0, gt=0, description="Divides the logits; fitted on the validation split.")
    members: list[str] = Field(
        default_factory=list, description="Sub-directories of an ensemble's member models (empty: one model)."
    )
    metrics: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


class EmotionModel:
    """A loaded model directory. ``classify`` is thread-safe and never touches the event loop."""

    def __init__(self, directory: str | Path, *, num_threads: int | None = None) -> None:
        self.directory = Path(directory).expanduser().resolve()
        self.info = self._read_info(self.directory)
        self.model_id = self.info.model_id
        self.labels = tuple(self.info.labels)
        if self.labels != LABELS:
            raise ModelError(f"{self.directory}: model labels {self.labels} differ from {LABELS}")
        self._lock = threading.Lock()
        self.members = tuple(
            EmotionModel(self.directory / name, num_threads=num_threads) for name in self.info.members
        )
        if not self.members:
            self._load_modules(num_threads)

    @classmethod
    def load(cls, path: str | Path | None = None, *, num_threads: int | None = None) -> EmotionModel:
        """Load ``path``, or the bundled default model when ``path`` is ``None``."""
        return cls(path if path is not None else default_model_dir(), num_threads=num_threads)

    @staticmethod
    def _read_info(directory: Path) -> ModelInfo:
        if not directory.is_dir():
            raise ModelError(f"model directory not found: {directory}")
        if not (directory / "model.json").is_file():
            raise ModelError(f"{directory} is not a ser-sdk model directory: missing model.json")
        try:
            info = ModelInfo.model_validate(json.loads((directory / "model.json").read_text()))
        except (json.JSONDecodeError, ValidationError) as error:
            raise ModelError(f"{directory / 'model.json'} is invalid: {error}") from error
        needed = [f"{member}/" for member in info.members] or list(_REQUIRED_FILES)
        missing = [name for name in needed if not (directory / name).exists()]
        if missing:
            raise ModelError(f"{directory} is not a ser-sdk model directory: missing {', '.join(missing)}")
        return info

    def _load_modules(self, num_threads: int | None) -> None:
        import torch
        from hyperpyyaml import load_hyperpyyaml
        from speechbrain.dataio.encoder import CategoricalEncoder

        if num_threads:
            torch.set_num_threads(num_threads)
        try:
            with open(self.directory / "hyperparams.yaml") as handle:
                hparams = load_hyperpyyaml(handle, overrides={"pretrainer": None})
            for name in ("embedding_model", "classifier"):
                state = torch.load(self.directory / f"{name}.ckpt", map_location="cpu", weights_only=True)
                hparams[name].load_state_dict(state)
            encoder = CategoricalEncoder()
            encoder.expect_len(len(LABELS))
            encoder.load(self.directory / "label_encoder.ckpt")
        except Exception as error:  # a broken file can fail in YAML, torch or the module itself
            raise ModelError(f"could not load the model in {self.directory}: {error}") from error
        order = tuple(encoder.ind2lab[index] for index in range(len(LABELS)))
        if order != LABELS:
            raise ModelError(f"{self.directory}: label encoder order {order} differs from {LABELS}")
        self._features = hparams["compute_features"].eval()
        self._normalize = hparams["mean_var_norm"].eval()
        self._encoder = hparams["embedding_model"].eval()
        self._head = hparams["classifier"].eval()
        self._torch = torch

    def logits(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        """Calibrated logits ``[len(batch), 4]`` (``logit_scale * output / temperature``)."""
        if len(batch) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        if self.members:
            member_logprobs = [log_softmax(member.logits(batch)) for member in self.members]
            return np.mean(member_logprobs, axis=0) / self.info.temperature
        torch = self._torch
        lengths = np.array([len(samples) for samples in batch])
        if (lengths == 0).any():
            raise ValueError("cannot classify an empty utterance")
        longest = int(lengths.max())
        padded = np.zeros((len(batch), longest), dtype=np.float32)
        for row, samples in enumerate(batch):
            padded[row, : len(samples)] = samples
        wavs = torch.from_numpy(padded)
        relative = torch.from_numpy(lengths / longest).float()
        with self._lock, torch.inference_mode():
            feats = self._normalize(self._features(wavs), relative)
            outputs = self._head(self._encoder(feats, relative)).squeeze(1)
        scale = self.info.logit_scale / self.info.temperature
        return (outputs * scale).numpy()

    def probabilities(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        return np.exp(log_softmax(self.logits(batch)))

    def classify(self, batch: Sequence[np.ndarray]) -> list[EmotionScores]:
        """Scores for each 16 kHz mono float32 utterance; lengths may differ within a batch."""
        return [EmotionScores.from_probs(row) for row in self.probabilities(batch)]

    def __repr__(self) -> str:
        return f"EmotionModel({self.model_id!r}, {self.directory})"
