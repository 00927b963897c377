"""Corpus folders -> SpeechBrain JSON manifests with speaker-independent splits.

One parser per corpus reads the labels and speaker ids from the original file
names (see ``../shared/corpora/README.md``). Adding a corpus means adding a
parser to ``PARSERS``; nothing else changes. Splits are made per corpus over
speakers, seeded and stratified by sex, so no speaker is in two splits and
every split holds every corpus that has enough speakers.

    python recipes/prepare.py --data_folder ../shared/corpora --output_folder results/manifests
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

logger = logging.getLogger(__name__)

LABELS = ("angry", "happy", "sad", "neutral")
SPLITS = ("train", "valid", "test")
AUDIO_SUFFIXES = (".wav", ".flac")


@dataclass(frozen=True)
class Clip:
    """One labelled recording, as a parser sees it (before audio is read)."""

    path: Path
    corpus: str
    speaker: str
    label: str
    sex: str | None = None  # "F", "M" or None when the corpus does not say

    @property
    def utterance_id(self) -> str:
        return f"{self.corpus}_{self.path.stem}"


def _audio_files(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file():
            yield path


# --- CREMA-D ---------------------------------------------------------------
CREMAD_EMOTIONS = {"ANG": "angry", "HAP": "happy", "SAD": "sad", "NEU": "neutral"}
CREMAD_NAME = re.compile(
    r"^(?P<actor>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<level>[A-Z]{2})$"
)


def _cremad_sexes(root: Path) -> dict[str, str]:
    table = root / "VideoDemographics.csv"
    if not table.is_file():
        return {}
    with table.open(newline="") as handle:
        return {row["ActorID"]: row["Sex"][:1].upper() for row in csv.DictReader(handle)}


def parse_cremad(root: Path, **_: object) -> Iterator[Clip]:
    """``AudioWAV/{actor}_{sentence}_{emotion}_{level}``; sex from ``VideoDemographics.csv``."""
    sexes = _cremad_sexes(root)
    for path in _audio_files(root / "AudioWAV" if (root / "AudioWAV").is_dir() else root):
        match = CREMAD_NAME.match(path.stem)
        if not match or match["emotion"] not in CREMAD_EMOTIONS:
            continue
        actor = match["actor"]
        yield Clip(path, "cremad", f"cremad_{actor}", CREMAD_EMOTIONS[match["emotion"]], sexes.get(actor))


# --- RAVDESS ---------------------------------------------------------------
RAVDESS_EMOTIONS = {"01": "neutral", "03": "happy", "04": "sad", "05": "angry"}
RAVDESS_NAME = re.compile(
    r"^03-01-(?P<emotion>\d{2})-(?P<intensity>\d{2})-(?P<statement>\d{2})-\d{2}-(?P<actor>\d{2})$"
)


def parse_ravdess(root: Path, include_calm: bool = False, **_: object) -> Iterator[Clip]:
    """``Actor_NN/03-01-{emotion}-{intensity}-{statement}-{repetition}-{actor}``; odd actors male.

    Only audio-only speech (03-01) is used. ``include_calm`` maps calm (02) to neutral.
    """
    emotions = dict(RAVDESS_EMOTIONS, **({"02": "neutral"} if include_calm else {}))
    for path in _audio_files(root):
        match = RAVDESS_NAME.match(path.stem)
        if not match or match["emotion"] not in emotions:
            continue
        actor = match["actor"]
        sex = "M" if int(actor) % 2 else "F"
        yield Clip(path, "ravdess", f"ravdess_{actor}", emotions[match["emotion"]], sex)


# --- TESS ------------------------------------------------------------------
TESS_EMOTIONS = {"angry": "angry", "happy": "happy", "sad": "sad", "neutral": "neutral"}
TESS_NAME = re.compile(r"^(?P<speaker>OAF|YAF|OA|YA)_(?P<word>[A-Za-z]+)_(?P<emotion>[A-Za-z]+)$")


def parse_tess(root: Path, **_: object) -> Iterator[Clip]:
    """``{OAF|YAF}_{emotion}/{OAF|YAF}_{word}_{emotion}``; two female speakers.

    Folder casing varies upstream and one file is named ``OA_bite_neutral``, so
    the speaker is read from the name prefix's first letter and the emotion
    case-insensitively.
    """
    for path in _audio_files(root):
        match = TESS_NAME.match(path.stem)
        if not match:
            continue
        emotion = match["emotion"].lower()
        if emotion not in TESS_EMOTIONS:
            continue
        speaker = "OAF" if match["speaker"].startswith("O") else "YAF"
        yield Clip(path, "tess", f"tess_{speaker}", TESS_EMOTIONS[emotion], "F")


# --- SAVEE -----------------------------------------------------------------
SAVEE_EMOTIONS = {"a": "angry", "h": "happy", "sa": "sad", "n": "neutral"}
SAVEE_NAME = re.compile(r"^(?:(?P<prefix>DC|JE|JK|KL)_)?(?P<code>[a-z]{1,2})(?P<number>\d{2})$")
SAVEE_SPEAKERS = ("DC", "JE", "JK", "KL")


def parse_savee(root: Path, **_: object) -> Iterator[Clip]:
    """``{DC|JE|JK|KL}/{code}{NN}``; four male speakers; codes a, d, f, h, n, sa, su.

    The Kaggle repack flattens to ``DC_a01.wav``; both layouts are read.
    """
    for path in _audio_files(root):
        match = SAVEE_NAME.match(path.stem)
        if not match:
            continue
        speaker = match["prefix"] or path.parent.name
        if speaker not in SAVEE_SPEAKERS or match["code"] not in SAVEE_EMOTIONS:
            continue
        yield Clip(path, "savee", f"savee_{speaker}", SAVEE_EMOTIONS[match["code"]], "M")


# --- EmoDB -----------------------------------------------------------------
EMODB_EMOTIONS = {"W": "angry", "F": "happy", "T": "sad", "N": "neutral"}
EMODB_NAME = re.compile(r"^(?P<speaker>\d{2})(?P<text>[ab]\d{2})(?P<emotion>[A-Z])(?P<version>[a-z])$")
EMODB_SEXES = {
    "03": "M",
    "08": "F",
    "09": "F",
    "10": "M",
    "11": "M",
    "12": "M",
    "13": "F",
    "14": "F",
    "15": "M",
    "16": "F",
}


def parse_emodb(root: Path, **_: object) -> Iterator[Clip]:
    """``wav/{speaker:2}{text:3}{emotion:1}{version:1}``; German; W anger, F joy, T sadness, N neutral."""
    for path in _audio_files(root / "wav" if (root / "wav").is_dir() else root):
        match = EMODB_NAME.match(path.stem)
        if not match or match["emotion"] not in EMODB_EMOTIONS:
            continue
        speaker = match["speaker"]
        yield Clip(
            path, "emodb", f"emodb_{speaker}", EMODB_EMOTIONS[match["emotion"]], EMODB_SEXES.get(speaker)
        )


Parser = Callable[..., Iterator[Clip]]
PARSERS: dict[str, Parser] = {
    "cremad": parse_cremad,
    "ravdess": parse_ravdess,
    "tess": parse_tess,
    "savee": parse_savee,
    "emodb": parse_emodb,
}


def collect_clips(data_folder: Path, corpora: Iterable[str], include_calm: bool = False) -> list[Clip]:
    """Every clip of the named corpora that are present under ``data_folder`` (absent ones are skipped)."""
    clips: list[Clip] = []
    for corpus in corpora:
        if corpus not in PARSERS:
            raise ValueError(f"unknown corpus {corpus!r}; known: {', '.join(PARSERS)}")
        folder = data_folder / corpus
        if not folder.is_dir():
            logger.info("corpus %s not found at %s, skipped", corpus, folder)
            continue
        found = list(PARSERS[corpus](folder, include_calm=include_calm))
        logger.info("corpus %s: %d clips", corpus, len(found))
        clips.extend(found)
    return clips


def audio_fingerprint(path: Path) -> str:
    """Hash of the decoded samples, so identical audio is found whatever its container."""
    data, rate = sf.read(path, dtype="int16", always_2d=True)
    digest = hashlib.sha1(data.tobytes())
    digest.update(str(rate).encode())
    return digest.hexdigest()


def drop_conflicting_duplicates(
    clips: Sequence[Clip], fingerprint: Callable[[Path], str] = audio_fingerprint
) -> list[Clip]:
    """Keep one copy of identical audio; drop every copy when the copies disagree on the label."""
    groups: dict[str, list[Clip]] = defaultdict(list)
    for clip in tqdm(clips, desc="fingerprinting audio", unit="clip", leave=False):
        groups[fingerprint(clip.path)].append(clip)
    kept: list[Clip] = []
    for group in groups.values():
        labels = {clip.label for clip in group}
        if len(labels) > 1:
            logger.warning(
                "dropping identical audio with labels %s: %s", sorted(labels), [c.path.name for c in group]
            )
            continue
        if len(group) > 1:
            logger.info("keeping one of %d identical clips: %s", len(group), [c.path.name for c in group])
        kept.append(group[0])
    return sorted(kept, key=lambda clip: clip.utterance_id)


def split_speakers(clips: Sequence[Clip], ratios: tuple[float, float, float], seed: int) -> dict[str, str]:
    """Speaker -> split, per corpus and per sex, seeded.

    Within each (corpus, sex) group the shuffled speakers are cut by the
    ratios, with at least one speaker in valid and test where the group has
    three or more. A corpus with fewer than three speakers in total (TESS) goes
    to train whole: it cannot give a speaker-independent test on its own.
    """
    speakers_by_corpus: dict[str, dict[str, str | None]] = defaultdict(dict)
    for clip in clips:
        speakers_by_corpus[clip.corpus][clip.speaker] = clip.sex
    assignment: dict[str, str] = {}
    rng = random.Random(seed)
    for corpus in sorted(speakers_by_corpus):
        speakers = speakers_by_corpus[corpus]
        if len(speakers) < 3:
            assignment.update({speaker: "train" for speaker in speakers})
            continue
        by_sex: dict[str, list[str]] = defaultdict(list)
        for speaker, sex in sorted(speakers.items()):
            by_sex[sex or "?"].append(speaker)
        # Fractional targets carried across sex groups keep small corpora balanced overall.
        carry = [0.0, 0.0]
        for sex in sorted(by_sex):
            group = by_sex[sex]
            rng.shuffle(group)
            n = len(group)
            wanted = [n * ratios[1] + carry[0], n * ratios[2] + carry[1]]
            n_valid, n_test = (round(w) for w in wanted)
            if n >= 3:
                n_valid, n_test = max(n_valid, 1), max(n_test, 1)
            n_valid = min(n_valid, max(n - 1, 0))
            n_test = min(n_test, max(n - 1 - n_valid, 0))
            carry = [wanted[0] - n_valid, wanted[1] - n_test]
            for index, speaker in enumerate(group):
                split = "valid" if index < n_valid else "test" if index < n_valid + n_test else "train"
                assignment[speaker] = split
    return assignment


def manifest_entry(clip: Clip) -> dict[str, object]:
    info = sf.info(str(clip.path))
    entry = asdict(clip)
    entry["path"] = str(clip.path.resolve())
    entry["duration"] = round(info.frames / info.samplerate, 4)
    return entry


def prepare(
    data_folder: str | Path,
    output_folder: str | Path,
    corpora: Sequence[str] = tuple(PARSERS),
    ratios: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 1234,
    include_calm: bool = False,
    skip_if_prepared: bool = True,
) -> dict[str, Path]:
    """Write ``train.json``, ``valid.json`` and ``test.json`` to ``output_folder``; return their paths."""
    data_folder, output_folder = Path(data_folder).resolve(), Path(output_folder)
    output_folder.mkdir(parents=True, exist_ok=True)
    paths = {split: output_folder / f"{split}.json" for split in SPLITS}
    options = {
        "data_folder": str(data_folder),
        "corpora": list(corpora),
        "ratios": list(ratios),
        "seed": seed,
        "include_calm": include_calm,
    }
    options_file = output_folder / "options.json"
    prepared = options_file.is_file() and all(p.is_file() for p in paths.values())
    if skip_if_prepared and prepared and json.loads(options_file.read_text()) == options:
        logger.info("manifests in %s are up to date", output_folder)
        return paths
    clips = drop_conflicting_duplicates(collect_clips(data_folder, corpora, include_calm))
    if not clips:
        raise FileNotFoundError(f"no labelled clips of {list(corpora)} under {data_folder}")
    assignment = split_speakers(clips, ratios, seed)
    manifests: dict[str, dict[str, dict[str, object]]] = {split: {} for split in SPLITS}
    for clip in tqdm(clips, desc="writing manifests", unit="clip", leave=False):
        manifests[assignment[clip.speaker]][clip.utterance_id] = manifest_entry(clip)
    for split, path in paths.items():
        path.write_text(json.dumps(manifests[split], indent=1))
        counts = defaultdict(int)
        for entry in manifests[split].values():
            counts[entry["label"]] += 1
        logger.info("%s: %d clips %s", split, len(manifests[split]), dict(sorted(counts.items())))
    options_file.write_text(json.dumps(options, indent=1))
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_folder", default="../shared/corpora")
    parser.add_argument("--output_folder", default="results/manifests")
    parser.add_argument("--corpora", nargs="+", default=list(PARSERS))
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--include_calm", action="store_true", help="map RAVDESS calm to neutral")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    prepare(
        args.data_folder, args.output_folder, args.corpora, seed=args.seed, include_calm=args.include_calm
    )


if __name__ == "__main__":
    main()
