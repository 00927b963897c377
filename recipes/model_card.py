"""Write ``MODEL_CARD.md`` beside an exported model from the figures ``benchmarks/accuracy.py`` measured.

The card is generated, never typed: every number in it comes from
``model.json`` (training and validation) and ``accuracy.json`` (held-out test
speakers, noise, speed), so retraining cannot leave a stale card behind.

    python recipes/model_card.py --model ser_sdk/models/default --accuracy results/accuracy
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
from collections.abc import Mapping
from pathlib import Path

CORPUS_NAMES = {"cremad": "CREMA-D", "ravdess": "RAVDESS", "tess": "TESS", "savee": "SAVEE", "emodb": "EmoDB"}
LICENSES = {
    "cremad": "ODbL 1.0 (database) / DbCL 1.0 (contents)",
    "ravdess": "CC BY-NC-SA 4.0 (non-commercial)",
    "tess": "CC BY-NC-ND 4.0",
    "savee": "free for research use",
    "emodb": "free for research use",
}
LABELS = ("angry", "happy", "sad", "neutral")


def pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def corpus_name(key: str) -> str:
    return "all test clips" if key == "all" else CORPUS_NAMES.get(key, key)


def split_table(manifest_folder: Path) -> tuple[str, list[str]]:
    """Clips and speakers per split and corpus, read from the manifests the model was trained on."""
    corpora: set[str] = set()
    counts: dict[str, dict[str, tuple[int, set[str]]]] = {}
    for split in ("train", "valid", "test"):
        entries = json.loads((manifest_folder / f"{split}.json").read_text())
        for entry in entries.values():
            clips, speakers = counts.setdefault(split, {}).get(entry["corpus"], (0, set()))
            speakers.add(entry["speaker"])
            counts[split][entry["corpus"]] = (clips + 1, speakers)
            corpora.add(entry["corpus"])
    header = "| split | " + " | ".join(corpus_name(c) for c in sorted(corpora)) + " |"
    rows = [header, "|---|" + "---|" * len(corpora)]
    for split in ("train", "valid", "test"):
        cells = []
        for corpus in sorted(corpora):
            clips, speakers = counts.get(split, {}).get(corpus, (0, set()))
            cells.append(f"{clips} clips, {len(speakers)} speakers")
        rows.append(f"| {split} | " + " | ".join(cells) + " |")
    return "\n".join(rows), sorted(corpora)


def confusion_markdown(report: Mapping) -> str:
    lines = ["| true \\ predicted | " + " | ".join(LABELS) + " | recall |", "|---|---|---|---|---|---|"]
    for label, row in zip(LABELS, report["confusion"], strict=True):
        recall = report["recall"].get(label)
        shown = pct(recall) if recall is not None else "-"
        lines.append(f"| {label} | " + " | ".join(str(v) for v in row) + f" | {shown} |")
    return "\n".join(lines)


def loco_markdown(summary: Path) -> list[str]:
    """The leave-one-corpus-out table, when ``recipes/loco.py`` has been run."""
    if not summary.is_file():
        return []
    rows = json.loads(summary.read_text())
    lines = [
        "### Across corpora",
        "",
        "Leave-one-corpus-out (`python recipes/loco.py --number_of_epochs 10`): the recipe trained on one "
        "corpus alone, then scored on every clip of a corpus it never heard. The gap to the within-corpus "
        "figures is what a new microphone, new sentences and new actors cost.",
        "",
        "| recipe | trained on | tested on (all clips) | clips | UA | WA | within-corpus validation UA |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['recipe']} | {corpus_name(row['train_corpus'])} | {corpus_name(row['test_corpus'])} "
            f"| {row['clips']} | {pct(row['ua'])} | {pct(row['wa'])} | {pct(row['within_corpus_valid_ua'])} |"
        )
    return [*lines, ""]


def write_model_card(model_dir: Path, accuracy_folder: Path, loco_summary: Path | None = None) -> Path:
    info = json.loads((model_dir / "model.json").read_text())
    bench = json.loads((accuracy_folder / "accuracy.json").read_text())
    targets = bench["targets"]
    table, corpora = split_table(Path(bench["manifest_folder"]))

    for png in sorted(accuracy_folder.glob("*.png")):
        shutil.copy(png, model_dir / png.name)

    training = info["training"]
    train_minutes = training.get("wall_minutes")
    validation_ua = training.get("compared_on_valid")
    runs = training.get("members") or {info["architecture"]: training}
    commands = []
    for run in runs.values():
        overrides = " ".join(
            f"--{k} {v}" for k, v in (run.get("overrides") or {}).items() if k != "data_folder"
        )
        recipe = f"recipes/hparams/{run['hparams']}"
        commands.append(f"python recipes/train.py {recipe} --data_folder ../shared/corpora {overrides}")
    if info.get("members"):
        commands.append(
            "python recipes/ensemble.py "
            + " ".join(f"results/export/{m}" for m in info["members"])
            + " --export_dir results/export/ensemble"
        )
    described = (
        "an **ensemble** of " + " and ".join(m.upper() for m in info["members"])
        if info.get("members")
        else f"a **{info['architecture'].upper()}** classifier"
    )
    lines = [
        f"# Model card: `{info['model_id']}`",
        "",
        f"The default emotion model bundled with ser-sdk: {described} of **angry, happy, sad, neutral** "
        "on 16 kHz speech, trained from scratch in this repository with the SpeechBrain recipes in "
        f"`recipes/hparams/` ({bench['size']['parameters']:,} parameters, "
        f"{bench['size']['bytes_on_disk'] / 1e6:.1f} MB on disk).",
        "",
        "## Data",
        "",
        "Acted emotional speech, four classes; other emotions of the corpora are not used. Splits are by "
        "speaker (no speaker is in two splits), per corpus, seeded and stratified by sex "
        f"(split seed {bench['split_seed']}).",
        "",
        table,
        "",
        "| corpus | license |",
        "|---|---|",
        *[f"| {corpus_name(c)} | {LICENSES.get(c, 'see the corpus')} |" for c in corpora],
        "",
        "RAVDESS is licensed for non-commercial use only (CC BY-NC-SA 4.0): the weights trained on it "
        "inherit that restriction. Retrain on corpora whose licenses fit your use (`--corpora`).",
        "",
        "## Training",
        "",
        "```bash",
        *[command.rstrip() for command in commands],
        "```",
        "",
        "Or all of it, choice and model card included: `python recipes/build_default_model.py`.",
        "",
        f"Best epoch by validation UA: {training['epoch']}.",
    ]
    if train_minutes:
        lines.append(
            f"Wall time of the training run: {train_minutes:.0f} min on a 2-core {platform.machine()} CPU, "
            "no GPU, one torch thread (the two recipes trained side by side)."
        )
    if validation_ua:
        lines += [
            "",
            "Recipes compared on the validation split (the choice never looks at test speakers): "
            + ", ".join(f"{name} UA {pct(ua)}" for name, ua in validation_ua.items())
            + ".",
        ]
    valid = info["metrics"]["valid"]
    lines += [
        "",
        f"Calibration: temperature {info['temperature']} fitted on the validation split "
        f"(ECE {valid['ECE_before_scaling']:.3f} before, {valid['ECE_after_scaling']:.3f} after).",
        "",
        "## Held-out test speakers",
        "",
        "UA is the mean of the four per-class recalls, WA plain accuracy. The eGeMAPS + SVM baseline "
        "(openSMILE eGeMAPSv02 functionals, RBF SVM, C and gamma chosen on the validation split) is trained "
        "and scored on the same splits in the same run.",
        "",
        "| test corpus | clips | UA | WA | ECE | baseline UA | baseline WA | UA gain |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in bench["rows"]:
        lines.append(
            f"| {corpus_name(row['corpus'])} | {row['clips']} | {pct(row['model_ua'])} "
            f"| {pct(row['model_wa'])} | {row['model_ece']:.3f} | {pct(row['baseline_ua'])} "
            f"| {pct(row['baseline_wa'])} "
            f"| {100 * row['ua_gain']:+.1f} |"
        )
    noises = sorted({noise for row in bench["rows"] for noise in row["ua_at_snr"]})
    snrs = {snr for row in bench["rows"] for by_snr in row["ua_at_snr"].values() for snr in by_snr}
    snrs = sorted(snrs, key=float, reverse=True)
    lines += [
        "",
        f"Targets: UA ≥ {pct(targets['ua_min'])} per corpus and "
        f"≥ {100 * targets['ua_gain_over_baseline_min']:.0f} points above the baseline.",
        "",
        "### Under noise",
        "",
        "Noise added over the whole clip at the given SNR: white Gaussian, and babble made of four "
        "clips of other test speakers.",
        "",
        "| test corpus | noise | clean | " + " | ".join(f"{snr} dB" for snr in snrs) + " | drop at 10 dB |",
        "|---|---|---|" + "---|" * len(snrs) + "---|",
    ]
    for row in bench["rows"]:
        for noise in noises:
            at = row["ua_at_snr"].get(noise, {})
            lines.append(
                f"| {corpus_name(row['corpus'])} | {noise} | {pct(row['model_ua'])} | "
                + " | ".join(pct(at[snr]) if snr in at else "-" for snr in snrs)
                + f" | {100 * row['ua_drop_at_10db'].get(noise, float('nan')):.1f} points |"
            )
    lines += [
        "",
        f"Target: a drop of at most {100 * targets['ua_drop_at_10db_max']:.0f} points at 10 dB.",
        "",
        "### Confusion matrices",
        "",
    ]
    for scores in bench["evaluation"]["clean"]:
        lines += [f"**{corpus_name(scores['corpus'])}**", "", confusion_markdown(scores["report"]), ""]
        image = f"confusion_{scores['corpus']}.png"
        if (model_dir / image).is_file():
            lines += [f"![confusion matrix, {corpus_name(scores['corpus'])}]({image})", ""]
    if (model_dir / "ua_vs_snr.png").is_file():
        lines += ["![UA against SNR](ua_vs_snr.png)", ""]
    lines += loco_markdown(loco_summary or accuracy_folder.parent / "loco" / "summary.json")
    speed = bench["speed"]
    lines += [
        "## Speed",
        "",
        f"Classifying one {speed['utterance_seconds']:.0f} s utterance: median "
        f"{speed['cpu_ms_median']:.1f} ms of CPU ({speed['wall_ms_median']:.1f} ms wall) over "
        f"{speed['repeats']} runs, {speed['threads']} torch thread, batch of one "
        f"(target < {targets['cpu_ms_per_3s_max']:.0f} ms).",
        "",
        "## Known limits",
        "",
        "- Trained on acted speech by North American English speakers reading fixed sentences; spontaneous "
        "speech, other languages and accents, children and telephone-band audio are out of its training "
        "distribution and will score lower.",
        "- CREMA-D's acted labels disagree with what listeners perceive for a good share of clips (see its "
        "`summaryTable.csv`); the figures above count the acted label as the truth.",
        "- Happy and neutral are the hardest pair; read low-confidence verdicts as 'unsure', which the reply "
        "and moderation plugins already do.",
        "- Four classes only: fear, disgust, surprise and calm speech are forced into one of them.",
        "",
        "Reproduce every figure above: `python benchmarks/accuracy.py` (the model card itself: "
        "`python recipes/model_card.py`).",
        "",
    ]
    card = model_dir / "MODEL_CARD.md"
    card.write_text("\n".join(lines))
    return card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_model = Path(__file__).resolve().parent.parent / "ser_sdk" / "models" / "default"
    parser.add_argument("--model", type=Path, default=default_model)
    parser.add_argument("--accuracy", type=Path, default=Path("results/accuracy"))
    args = parser.parse_args()
    print(write_model_card(args.model, args.accuracy))


if __name__ == "__main__":
    main()
