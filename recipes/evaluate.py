#!/usr/bin/env python3
"""Evaluate an exported model on a manifest: UA/WA per corpus, calibration, and robustness to noise.

    python recipes/evaluate.py --model ser_sdk/models/default --manifest results/manifests/test.json
    python recipes/evaluate.py --model results/models/cremad --loco ravdess --data_folder ../shared/corpora

Clean figures are computed per corpus and over all clips (a pooled figure hides
a weak corpus behind a big one). Noise robustness re-scores every clip with
white noise or babble mixed in at fixed SNRs; the noise realisation of a clip
depends only on the seed and the clip id, so runs are reproducible and every
SNR of a clip uses the same noise, only louder. ``--loco`` scores a model
trained on some corpora on every clip of a corpus it never saw.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
from pydantic import BaseModel, Field
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from metrics import ClassificationReport, classification_report, expected_calibration_error
from prepare import collect_clips, drop_conflicting_duplicates, manifest_entry

from ser_sdk.audio import load_audio
from ser_sdk.errors import AudioError
from ser_sdk.events import LABELS

logger = logging.getLogger(__name__)

ALL = "all"
"""Corpus name of the figures pooled over every clip."""
NOISES = ("white", "babble")
BABBLE_TALKERS = 4
ECE_BINS = 15

Entries = Mapping[str, Mapping[str, Any]]


class ProbabilisticClassifier(Protocol):
    """What evaluation needs: an id and calibrated class probabilities in ``LABELS`` order."""

    model_id: str

    def probabilities(self, batch: Sequence[np.ndarray]) -> np.ndarray: ...


class CorpusScores(BaseModel):
    """Clean-speech figures of one corpus (or ``all``)."""

    corpus: str
    clips: int
    report: ClassificationReport
    ece: float = Field(description=f"expected calibration error, {ECE_BINS} equal-width bins")


class NoisyScores(BaseModel):
    """Figures of one corpus under one noise condition; drops are clean minus noisy (fractions)."""

    corpus: str
    noise: str
    snr_db: float
    ua: float
    wa: float
    ua_drop: float
    wa_drop: float


class EvaluationReport(BaseModel):
    model_id: str
    labels: list[str] = Field(default_factory=lambda: list(LABELS))
    seed: int
    clips: int
    skipped: list[str] = Field(default_factory=list, description="clip ids whose audio could not be read")
    clean: list[CorpusScores]
    noisy: list[NoisyScores] = Field(default_factory=list)

    def clean_for(self, corpus: str) -> CorpusScores:
        for scores in self.clean:
            if scores.corpus == corpus:
                return scores
        raise KeyError(corpus)

    def noisy_for(self, corpus: str, noise: str, snr_db: float) -> NoisyScores:
        for scores in self.noisy:
            if (scores.corpus, scores.noise, scores.snr_db) == (corpus, noise, float(snr_db)):
                return scores
        raise KeyError((corpus, noise, snr_db))

    @property
    def corpora(self) -> list[str]:
        return [scores.corpus for scores in self.clean]


# --------------------------------------------------------------------------- audio


def load_clips(entries: Entries) -> tuple[dict[str, np.ndarray], list[str]]:
    """Decode every clip to 16 kHz mono float32; unreadable, empty or silent clips are logged and listed.

    A silent clip has no SNR, so it could not take part in the noise conditions.
    """
    clips: dict[str, np.ndarray] = {}
    skipped: list[str] = []
    for utterance_id, entry in tqdm(entries.items(), desc="loading audio", unit="clip", leave=False):
        try:
            samples = load_audio(entry["path"])
        except AudioError as error:
            logger.warning("skipping %s: %s", utterance_id, error)
            skipped.append(utterance_id)
            continue
        if signal_power(samples) == 0.0:
            logger.warning("skipping %s: the clip is digital silence", utterance_id)
            skipped.append(utterance_id)
            continue
        clips[utterance_id] = samples
    return clips, skipped


def signal_power(samples: np.ndarray) -> float:
    return float(np.mean(np.square(samples, dtype=np.float64))) if samples.size else 0.0


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``clean`` plus ``noise`` scaled so that the power ratio over the whole clip is ``snr_db``.

    Powers are means over every sample, silences included, which is how a
    listener's SNR is usually stated for short clips. The result is not clipped:
    clipping would change the SNR that is being measured.
    """
    if noise.shape != clean.shape:
        raise ValueError(f"noise shape {noise.shape} differs from clip shape {clean.shape}")
    clean_power, noise_power = signal_power(clean), signal_power(noise)
    if clean_power == 0.0:
        raise ValueError("a silent clip has no SNR")
    if noise_power == 0.0:
        raise ValueError("silent noise cannot reach a finite SNR")
    gain = np.sqrt(clean_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    return (clean.astype(np.float64) + gain * noise).astype(np.float32)


def fit_length(samples: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``length``-sample stretch of ``samples``, looped when it is shorter."""
    if len(samples) >= length:
        start = int(rng.integers(0, len(samples) - length + 1))
        return samples[start : start + length]
    repeats = -(-length // len(samples))
    looped = np.tile(samples, repeats)
    start = int(rng.integers(0, len(samples)))
    return np.roll(looped, -start)[:length]


def white_noise(length: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(length)


def babble_noise(sources: Sequence[np.ndarray], length: int, rng: np.random.Generator) -> np.ndarray:
    """Sum of talkers, each brought to unit RMS first so that no single voice dominates."""
    mix = np.zeros(length, dtype=np.float64)
    for source in sources:
        part = fit_length(source, length, rng).astype(np.float64)
        power = signal_power(part)
        if power > 0.0:
            mix += part / np.sqrt(power)
    return mix


def clip_rng(seed: int, utterance_id: str, noise: str) -> np.random.Generator:
    """One generator per (seed, clip, noise): the noise of a clip does not depend on the others."""
    return np.random.default_rng([seed, zlib.crc32(utterance_id.encode()), zlib.crc32(noise.encode())])


class NoiseMaker:
    """Noise signals for the clips of one manifest (babble is drawn from its other speakers)."""

    def __init__(self, clips: Mapping[str, np.ndarray], speakers: Mapping[str, str], seed: int) -> None:
        self.clips, self.speakers, self.seed = clips, speakers, seed
        ids = sorted(clips)
        self._others = {
            speaker: [i for i in ids if speakers[i] != speaker] for speaker in {speakers[i] for i in ids}
        }

    def noise(self, utterance_id: str, kind: str) -> np.ndarray:
        """The same signal for the same (seed, clip, kind), whatever else is asked for in between."""
        length = len(self.clips[utterance_id])
        rng = clip_rng(self.seed, utterance_id, kind)
        if kind == "white":
            return white_noise(length, rng)
        if kind == "babble":
            others = self._others[self.speakers[utterance_id]]
            if not others:
                raise ValueError(f"babble for {utterance_id} needs clips of other speakers in the manifest")
            chosen = rng.choice(len(others), size=min(BABBLE_TALKERS, len(others)), replace=False)
            return babble_noise([self.clips[others[int(i)]] for i in chosen], length, rng)
        raise ValueError(f"unknown noise {kind!r}; known: {', '.join(NOISES)}")


# --------------------------------------------------------------------------- scoring


def predict(
    model: ProbabilisticClassifier,
    clips: Sequence[np.ndarray] | Sequence[int],
    batch_size: int = 16,
    desc: str = "classifying",
    fetch: Callable[[int], np.ndarray] | None = None,
) -> np.ndarray:
    """Probabilities ``[n, 4]`` in input order; batches hold clips of similar length to limit padding.

    With ``fetch``, ``clips`` gives the lengths and ``fetch(i)`` makes clip ``i``
    when its batch comes, so noisy copies of a whole corpus never sit in memory.
    """
    lengths = [len(clip) for clip in clips] if fetch is None else list(clips)
    get = fetch or (lambda i: clips[i])
    probs = np.zeros((len(lengths), len(LABELS)), dtype=np.float64)
    order = np.argsort(lengths, kind="stable")
    with tqdm(total=len(lengths), desc=desc, unit="clip", leave=False) as progress:
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            probs[index] = model.probabilities([get(int(i)) for i in index])
            progress.update(len(index))
    return probs


def label_targets(entries: Entries, ids: Sequence[str]) -> np.ndarray:
    targets = []
    for utterance_id in ids:
        label = entries[utterance_id]["label"]
        if label not in LABELS:
            raise ValueError(f"{utterance_id}: label {label!r} is not one of {LABELS}")
        targets.append(LABELS.index(label))
    return np.array(targets, dtype=np.int64)


def corpus_groups(corpora: Sequence[str]) -> dict[str, np.ndarray]:
    """Index arrays per corpus (sorted) and ``all``."""
    names = np.asarray(corpora)
    groups = {corpus: np.flatnonzero(names == corpus) for corpus in sorted(set(corpora))}
    groups[ALL] = np.arange(len(corpora))
    return groups


def corpus_scores(corpora: Sequence[str], targets: np.ndarray, probs: np.ndarray) -> list[CorpusScores]:
    """Clean figures per corpus and overall from probabilities (used for the model and the baseline)."""
    scores = []
    for corpus, index in corpus_groups(corpora).items():
        report = classification_report(targets[index], probs[index].argmax(axis=1), LABELS)
        ece = expected_calibration_error(probs[index], targets[index], n_bins=ECE_BINS)
        scores.append(CorpusScores(corpus=corpus, clips=len(index), report=report, ece=round(ece, 4)))
    return scores


def noisy_scores(
    corpora: Sequence[str],
    targets: np.ndarray,
    probs: np.ndarray,
    clean: Sequence[CorpusScores],
    noise: str,
    snr_db: float,
) -> list[NoisyScores]:
    clean_by_corpus = {scores.corpus: scores.report for scores in clean}
    results = []
    for corpus, index in corpus_groups(corpora).items():
        report = classification_report(targets[index], probs[index].argmax(axis=1), LABELS)
        reference = clean_by_corpus[corpus]
        results.append(
            NoisyScores(
                corpus=corpus,
                noise=noise,
                snr_db=float(snr_db),
                ua=report.ua,
                wa=report.wa,
                ua_drop=reference.ua - report.ua,
                wa_drop=reference.wa - report.wa,
            )
        )
    return results


def evaluate_model(
    model: ProbabilisticClassifier,
    manifest_entries: Entries,
    snrs: Iterable[float] = (20.0, 10.0, 5.0),
    noises: Iterable[str] = NOISES,
    seed: int = 0,
    batch_size: int = 16,
) -> EvaluationReport:
    """Score ``model`` on every clip of a manifest, clean and under each (noise, SNR) condition."""
    noises, snrs = list(noises), [float(snr) for snr in snrs]
    unknown = sorted(set(noises) - set(NOISES))
    if unknown:
        raise ValueError(f"unknown noise {unknown}; known: {', '.join(NOISES)}")
    label_targets(manifest_entries, list(manifest_entries))  # a bad label fails before any audio is read
    clips, skipped = load_clips(manifest_entries)
    if not clips:
        raise ValueError("no readable clips in the manifest")
    ids = sorted(clips)
    corpora = [manifest_entries[i]["corpus"] for i in ids]
    targets = label_targets(manifest_entries, ids)
    probs = predict(model, [clips[i] for i in ids], batch_size, desc="clean")
    clean = corpus_scores(corpora, targets, probs)

    noisy: list[NoisyScores] = []
    maker = NoiseMaker(clips, {i: str(manifest_entries[i]["speaker"]) for i in ids}, seed)
    lengths = [len(clips[i]) for i in ids]
    for noise in noises:
        for snr in snrs:

            def noisy_clip(index: int, noise: str = noise, snr: float = snr) -> np.ndarray:
                return mix_at_snr(clips[ids[index]], maker.noise(ids[index], noise), snr)

            noisy_probs = predict(model, lengths, batch_size, desc=f"{noise} {snr:g} dB", fetch=noisy_clip)
            noisy.extend(noisy_scores(corpora, targets, noisy_probs, clean, noise, snr))
    return EvaluationReport(
        model_id=model.model_id, seed=seed, clips=len(ids), skipped=skipped, clean=clean, noisy=noisy
    )


# --------------------------------------------------------------------------- leave one corpus out


def corpus_entries(data_folder: str | Path, corpus: str) -> dict[str, dict[str, object]]:
    """Manifest entries for every clip of ``corpus`` (all speakers), duplicates handled as in prepare."""
    clips = drop_conflicting_duplicates(collect_clips(Path(data_folder), [corpus]))
    if not clips:
        raise FileNotFoundError(f"no clips of corpus {corpus!r} under {data_folder}")
    return {clip.utterance_id: manifest_entry(clip) for clip in clips}


def evaluate_loco(
    model: ProbabilisticClassifier,
    data_folder: str | Path,
    corpus: str,
    snrs: Iterable[float] = (),
    noises: Iterable[str] = (),
    seed: int = 0,
    batch_size: int = 16,
) -> EvaluationReport:
    """Cross-corpus figures: every clip of ``corpus`` scored by a model that was not trained on it.

    Refuses a model whose ``model.json`` lists ``corpus`` among its training corpora,
    since its speakers would then be partly seen in training.
    """
    info = getattr(model, "info", None)
    trained_on = list(getattr(info, "training", {}).get("corpora", [])) if info is not None else []
    if corpus in trained_on:
        raise ValueError(f"model {model.model_id} was trained on {corpus}: not a leave-one-corpus-out test")
    return evaluate_model(model, corpus_entries(data_folder, corpus), snrs, noises, seed, batch_size)


# --------------------------------------------------------------------------- output


def plot_confusion(scores: CorpusScores, path: Path, title_prefix: str = "") -> None:
    """Row-normalised confusion matrix (recall per true class) with the raw counts written in each cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(scores.report.confusion, dtype=np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    labels = scores.report.labels
    fig, ax = plt.subplots(figsize=(4.6, 4.0))
    image = ax.imshow(normalised, vmin=0.0, vmax=1.0, cmap="Blues")
    for r in range(len(labels)):
        for c in range(len(labels)):
            colour = "white" if normalised[r, c] > 0.6 else "black"
            text = f"{normalised[r, c]:.2f}\n({int(counts[r, c])})"
            ax.text(c, r, text, ha="center", va="center", color=colour)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(
        f"{title_prefix}{scores.corpus} (n={scores.clips}): "
        f"UA {100 * scores.report.ua:.1f} %, WA {100 * scores.report.wa:.1f} %",
        fontsize=9,
    )
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ua_vs_snr(report: EvaluationReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    snrs = sorted({scores.snr_db for scores in report.noisy}, reverse=True)
    noises = sorted({scores.noise for scores in report.noisy})
    x_labels = ["clean", *[f"{snr:g}" for snr in snrs]]
    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    for number, corpus in enumerate(report.corpora):
        clean_ua = report.clean_for(corpus).report.ua
        for noise, style in zip(noises, ("-o", "--s", ":^", "-.d"), strict=False):
            values = [clean_ua, *[report.noisy_for(corpus, noise, snr).ua for snr in snrs]]
            x, y = range(len(x_labels)), [100 * v for v in values]
            ax.plot(x, y, style, color=f"C{number}", label=f"{corpus}, {noise}")
    ax.set_xticks(range(len(x_labels)), x_labels)
    ax.set_xlabel("SNR (dB)")
    ax.set_ylabel("UA (%)")
    ax.set_title(f"{report.model_id}: UA under noise", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(report: EvaluationReport, output_folder: str | Path, prefix: str = "") -> list[Path]:
    """``{prefix}evaluation.json``, a confusion PNG per corpus and, with noise results, a UA-vs-SNR PNG."""
    folder = Path(output_folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / f"{prefix}evaluation.json"]
    written[0].write_text(report.model_dump_json(indent=2) + "\n")
    for scores in report.clean:
        path = folder / f"{prefix}confusion_{scores.corpus}.png"
        plot_confusion(scores, path, title_prefix=f"{report.model_id}\n")
        written.append(path)
    if report.noisy:
        path = folder / f"{prefix}ua_vs_snr.png"
        plot_ua_vs_snr(report, path)
        written.append(path)
    return written


def summary(report: EvaluationReport) -> str:
    snrs = sorted({scores.snr_db for scores in report.noisy}, reverse=True)
    noises = sorted({scores.noise for scores in report.noisy})
    header = f"{'corpus':<10}{'clips':>7}{'UA %':>8}{'WA %':>8}{'ECE':>7}"
    header += "".join(f"{f'{noise[:5]} {snr:g}dB':>14}" for noise in noises for snr in snrs)
    lines = [f"model {report.model_id}", header]
    for scores in report.clean:
        ua, wa = 100 * scores.report.ua, 100 * scores.report.wa
        line = f"{scores.corpus:<10}{scores.clips:>7}{ua:>8.1f}{wa:>8.1f}{scores.ece:>7.3f}"
        for noise in noises:
            for snr in snrs:
                noisy = report.noisy_for(scores.corpus, noise, snr)
                line += f"{f'{100 * noisy.ua:.1f} ({-100 * noisy.ua_drop:+.1f})':>14}"
        lines.append(line)
    if report.skipped:
        lines.append(f"skipped {len(report.skipped)} unreadable clips: {', '.join(report.skipped[:5])}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> EvaluationReport:
    import json

    from ser_sdk.corpora import corpora_root
    from ser_sdk.model import EmotionModel

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="model directory (default: bundled)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest", type=Path, help="a manifest written by recipes/prepare.py")
    source.add_argument("--loco", metavar="CORPUS", help="score every clip of this corpus")
    parser.add_argument("--data_folder", type=Path, default=None, help="corpora folder for --loco")
    parser.add_argument("--output_folder", type=Path, default=Path("results/evaluation"))
    parser.add_argument("--snr", type=float, nargs="*", default=[20.0, 10.0, 5.0])
    parser.add_argument("--noise", nargs="*", choices=NOISES, default=list(NOISES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    model = EmotionModel.load(args.model, num_threads=args.threads)
    if args.loco:
        folder = args.data_folder or corpora_root()
        report = evaluate_loco(model, folder, args.loco, args.snr, args.noise, args.seed, args.batch_size)
    else:
        entries = json.loads(args.manifest.read_text())
        report = evaluate_model(model, entries, args.snr, args.noise, args.seed, args.batch_size)
    written = write_outputs(report, args.output_folder)
    print(summary(report))
    print(f"wrote {', '.join(str(path) for path in written)}")
    return report


if __name__ == "__main__":
    main()
