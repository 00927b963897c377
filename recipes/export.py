#!/usr/bin/env python3
"""Best checkpoint of a training run -> a model directory that ser_sdk loads offline.

    python recipes/export.py recipes/hparams/ecapa.yaml --output_folder results/ecapa/1986 \
        --export_dir ser_sdk/models/default

Takes the same hparams file and overrides as the training run, recovers the
checkpoint with the best validation UA, fits a temperature on the validation
split (so a confidence of 0.8 is right about 80 % of the time) and writes
``hyperparams.yaml`` (from ``recipes/hparams/inference/<architecture>.yaml``,
sizes filled in, references resolved), the two module checkpoints, the label
encoder and ``model.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from datetime import datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import speechbrain as sb
import torch
import yaml
from hyperpyyaml import load_hyperpyyaml, resolve_references
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from metrics import classification_report, expected_calibration_error
from train import LABELS, dataio_prepare

from ser_sdk.model import ModelInfo, log_softmax

INFERENCE_TEMPLATES = Path(__file__).resolve().parent / "hparams" / "inference"


def architecture_of(hparams: dict) -> str:
    name = type(hparams["embedding_model"]).__name__
    return {"ECAPA_TDNN": "ecapa", "CRNN": "crnn"}[name]


@torch.inference_mode()
def split_logits(hparams: dict, dataset) -> tuple[np.ndarray, np.ndarray]:
    """Raw (logit-scaled) outputs and targets over a split, one utterance at a time (no padding effects)."""
    modules = {
        name: hparams[name].eval()
        for name in ("compute_features", "mean_var_norm", "embedding_model", "classifier")
    }
    logits, targets = [], []
    for item in tqdm(dataset, desc="scoring validation split", unit="clip", leave=False):
        wav = item["sig"].unsqueeze(0)
        lens = torch.ones(1)
        feats = modules["mean_var_norm"](modules["compute_features"](wav), lens)
        out = modules["classifier"](modules["embedding_model"](feats, lens)).squeeze(1)
        logits.append(out.squeeze(0).numpy() * hparams["logit_scale"])
        targets.append(int(item["label_encoded"]))
    return np.stack(logits), np.array(targets)


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """Temperature scaling (Guo et al., 2017): the T > 0 minimising validation NLL of softmax(logits / T)."""
    log_t = torch.zeros(1, requires_grad=True)
    x, y = torch.from_numpy(logits).double(), torch.from_numpy(targets).long()
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200)

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


def validation_metrics(logits: np.ndarray, targets: np.ndarray, temperature: float) -> dict[str, float]:
    """UA, WA and calibration error before and after temperature scaling, as model.json records them."""
    report = classification_report(targets, logits.argmax(axis=1), LABELS)
    before = expected_calibration_error(np.exp(log_softmax(logits)), targets)
    after = expected_calibration_error(np.exp(log_softmax(logits / temperature)), targets)
    return {
        "UA": round(report.ua, 4),
        "WA": round(report.wa, 4),
        "ECE_before_scaling": round(before, 4),
        "ECE_after_scaling": round(after, 4),
    }


def is_plain_value(value: object) -> bool:
    scalars = (int, float, str, bool)
    return isinstance(value, scalars) or (
        isinstance(value, list) and all(isinstance(v, scalars) for v in value)
    )


def write_inference_hparams(hparams: dict, architecture: str, destination: Path) -> None:
    template = INFERENCE_TEMPLATES / f"{architecture}.yaml"
    with open(template) as handle:
        names = [line.split(":")[0] for line in handle if line and not line[0].isspace() and ":" in line]
    overrides = {name: hparams[name] for name in names if is_plain_value(hparams.get(name))}
    with open(template) as handle:
        resolved = resolve_references(handle, overrides=overrides).getvalue()
    destination.write_text(resolved)


def training_wall_minutes(output_folder: Path) -> float | None:
    """From the experiment's first start to its last finished epoch, read from SpeechBrain's ``log.txt``.

    A resumed run counts the pause too; the log is the only record that survives resumes.
    """
    log = output_folder / "log.txt"
    if not log.is_file():
        return None
    stamps = [
        datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
        for line in log.read_text().splitlines()
        if "Beginning experiment!" in line or "train_logger - INFO - epoch:" in line
    ]
    return round((stamps[-1] - stamps[0]).total_seconds() / 60, 1) if len(stamps) > 1 else None


def export(hparams_file: str, overrides: dict, export_dir: Path, model_id: str | None = None) -> ModelInfo:
    with open(hparams_file) as handle:
        hparams = load_hyperpyyaml(handle, overrides)
    checkpoint = hparams["checkpointer"].recover_if_possible(max_key="UA")
    if checkpoint is None:
        raise SystemExit(f"no checkpoint in {hparams['save_folder']}: train first")
    datasets = dataio_prepare(hparams)
    architecture = architecture_of(hparams)

    logits, targets = split_logits(hparams, datasets["valid"])
    temperature = fit_temperature(logits, targets)

    export_dir.mkdir(parents=True, exist_ok=True)
    for name in ("embedding_model", "classifier"):
        torch.save(hparams[name].state_dict(), export_dir / f"{name}.ckpt")
    # SpeechBrain's Pretrainer finds every loadable at <source>/<name>.ckpt, the encoder included.
    shutil.copy(Path(hparams["save_folder"]) / "label_encoder.txt", export_dir / "label_encoder.ckpt")
    write_inference_hparams(hparams, architecture, export_dir / "hyperparams.yaml")
    size = sum(p.numel() for name in ("embedding_model", "classifier") for p in hparams[name].parameters())
    info = ModelInfo(
        model_id=model_id or f"ser-{architecture}-{Path(checkpoint.path).name.split('+', 1)[1]}",
        architecture=architecture,
        labels=list(LABELS),
        sample_rate=hparams["sample_rate"],
        logit_scale=hparams["logit_scale"],
        temperature=round(temperature, 4),
        metrics={"valid": validation_metrics(logits, targets, temperature)},
        training={
            "hparams": Path(hparams_file).name,
            "overrides": overrides,
            "epoch": hparams["epoch_counter"].current,
            "corpora": list(hparams["corpora"]),
            "parameters": size,
            "wall_minutes": training_wall_minutes(Path(hparams["output_folder"])),
        },
    )
    (export_dir / "model.json").write_text(info.model_dump_json(indent=2) + "\n")
    return info


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export_dir", required=True, type=Path)
    parser.add_argument("--model_id", default=None)
    args, rest = parser.parse_known_args(argv)
    hparams_file, _, overrides = sb.parse_arguments(rest)
    overrides = yaml.safe_load(overrides) or {} if isinstance(overrides, str) else overrides
    info = export(hparams_file, overrides, args.export_dir, args.model_id)
    print(json.dumps(info.model_dump(), indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
