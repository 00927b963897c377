#!/usr/bin/env python3
"""Train a four-class speech emotion model with SpeechBrain.

    python recipes/train.py recipes/hparams/ecapa.yaml --data_folder ../shared/corpora
    python recipes/train.py recipes/hparams/crnn.yaml --data_folder ../shared/corpora

Any hparam can be overridden on the command line (``--number_of_epochs 5``).
Training resumes from the newest checkpoint in ``<output_folder>/save``; the
checkpoint with the best validation UA is kept for ``recipes/export.py``.
``--limit_files 16 --number_of_epochs 2`` (plus a small ``--channels``) gives a
run of a few seconds for tests.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.dataio.sampler import BalancingDataSampler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from metrics import classification_report
from prepare import prepare

logger = logging.getLogger(__name__)
LABELS = ("angry", "happy", "sad", "neutral")


class EmotionBrain(sb.Brain):
    """Waveform -> (augment) -> features -> per-utterance normalisation -> encoder -> class logits."""

    def compute_forward(self, batch, stage):
        batch = batch.to(self.device)
        wavs, lens = batch.sig
        if stage == sb.Stage.TRAIN and getattr(self.hparams, "wav_augment", None) is not None:
            wavs, lens = self.hparams.wav_augment(wavs, lens)
        feats = self.modules.compute_features(wavs)
        feats = self.modules.mean_var_norm(feats, lens)
        embeddings = self.modules.embedding_model(feats, lens)
        return self.modules.classifier(embeddings), lens

    def compute_objectives(self, predictions, batch, stage):
        outputs, lens = predictions
        labels, _ = batch.label_encoded
        if stage == sb.Stage.TRAIN and getattr(self.hparams, "wav_augment", None) is not None:
            labels = self.hparams.wav_augment.replicate_labels(labels)
        loss = self.hparams.compute_cost(outputs, labels, lens)
        if stage != sb.Stage.TRAIN:
            self.predicted.extend(outputs.squeeze(1).argmax(dim=-1).tolist())
            self.targets.extend(labels.squeeze(1).tolist())
        return loss

    def on_stage_start(self, stage, epoch=None):
        self.predicted: list[int] = []
        self.targets: list[int] = []

    def on_stage_end(self, stage, stage_loss, epoch=None):
        if stage == sb.Stage.TRAIN:
            self.train_loss = stage_loss
            return
        names = [self.hparams.label_encoder.decode_ndim(i) for i in range(len(LABELS))]
        report = classification_report(self.targets, self.predicted, names)
        stats = {"loss": stage_loss, "UA": round(report.ua, 4), "WA": round(report.wa, 4)}
        stats.update({f"recall_{k}": round(v, 3) for k, v in report.recall.items()})
        if stage == sb.Stage.VALID:
            old_lr, new_lr = self.hparams.lr_annealing(epoch)
            sb.nnet.schedulers.update_learning_rate(self.optimizer, new_lr)
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": old_lr},
                train_stats={"loss": self.train_loss},
                valid_stats=stats,
            )
            self.checkpointer.save_and_keep_only(meta={"UA": stats["UA"], "WA": stats["WA"]}, max_keys=["UA"])
        else:
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current}, test_stats=stats
            )


def dataio_prepare(hparams: dict) -> dict[str, DynamicItemDataset]:
    """Manifests -> datasets with a (randomly cropped, for training) signal and an encoded label."""
    sample_rate = hparams["sample_rate"]
    crop = int(hparams["crop_seconds"] * sample_rate)

    @sb.utils.data_pipeline.takes("path", "duration")
    @sb.utils.data_pipeline.provides("sig")
    def full_signal(path, duration):
        return sb.dataio.dataio.read_audio(path)

    @sb.utils.data_pipeline.takes("path", "duration")
    @sb.utils.data_pipeline.provides("sig")
    def cropped_signal(path, duration):
        """Exactly ``crop_seconds``: a random window of a longer clip, a shorter one looped.

        Every training batch then holds equal lengths and no zero padding, so
        batch-norm statistics describe real speech only, as at inference, where
        an utterance is classified unpadded.
        """
        frames = int(duration * sample_rate)
        if frames <= crop:
            return sb.dataio.dataio.read_audio(path).repeat(crop // max(frames, 1) + 1)[:crop]
        start = random.randint(0, frames - crop)
        return sb.dataio.dataio.read_audio({"file": path, "start": start, "stop": start + crop})

    label_encoder = hparams["label_encoder"]

    @sb.utils.data_pipeline.takes("label")
    @sb.utils.data_pipeline.provides("label", "label_encoded")
    def label_pipeline(label):
        yield label
        yield label_encoder.encode_label_torch(label)

    datasets = {}
    for split in ("train", "valid", "test"):
        with open(Path(hparams["manifest_folder"]) / f"{split}.json") as handle:
            data = json.load(handle)
        if hparams.get("limit_files"):
            ids = sorted(data)
            step = max(1, len(ids) // hparams["limit_files"])
            data = {key: data[key] for key in ids[::step][: hparams["limit_files"]]}
        for entry in data.values():
            entry["balance_key"] = "/".join(str(entry[field]) for field in hparams["balance_by"])
        signal = cropped_signal if split == "train" else full_signal
        datasets[split] = DynamicItemDataset(
            data, dynamic_items=[signal, label_pipeline], output_keys=["id", "sig", "label_encoded", "label"]
        )
    # A fixed label order (LABELS) makes every exported model's outputs line up with ser_sdk's scores.
    label_encoder.load_or_create(Path(hparams["save_folder"]) / "label_encoder.txt", from_iterables=[LABELS])
    label_encoder.expect_len(len(LABELS))
    return datasets


def main(argv: list[str]) -> None:
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    with open(hparams_file) as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"], hyperparams_to_save=hparams_file, overrides=overrides
    )
    logging.getLogger("speechbrain").setLevel(logging.INFO)
    sb.utils.distributed.run_on_main(
        prepare,
        kwargs={
            "data_folder": hparams["data_folder"],
            "output_folder": hparams["manifest_folder"],
            "corpora": hparams["corpora"],
            "seed": hparams["split_seed"],
            "include_calm": hparams["include_calm"],
        },
    )
    datasets = dataio_prepare(hparams)
    train_opts = dict(hparams["train_dataloader_opts"])
    # Equal draws per balance_by group (label, or corpus and label) so neither a frequent
    # class nor the largest corpus sets the decision boundaries alone.
    train_opts["sampler"] = BalancingDataSampler(datasets["train"], key="balance_key", seed=hparams["seed"])
    train_opts.pop("shuffle", None)
    if len(datasets["train"]) < train_opts["batch_size"]:
        train_opts["drop_last"] = False

    brain = EmotionBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.fit(
        brain.hparams.epoch_counter,
        datasets["train"],
        datasets["valid"],
        train_loader_kwargs=train_opts,
        valid_loader_kwargs=hparams["test_dataloader_opts"],
    )
    brain.evaluate(datasets["test"], max_key="UA", test_loader_kwargs=hparams["test_dataloader_opts"])


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("SER_TRAIN_THREADS", torch.get_num_threads())))
    main(sys.argv[1:])
