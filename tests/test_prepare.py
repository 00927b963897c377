"""Data preparation: corpus file names -> labels and speakers, duplicate audio, speaker-independent splits."""

from __future__ import annotations

import json
import sys
import zlib
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "recipes"))
from prepare import (
    PARSERS,
    SPLITS,
    Clip,
    collect_clips,
    drop_conflicting_duplicates,
    prepare,
    split_speakers,
)

RATIOS = (0.7, 0.15, 0.15)


def write_audio(path: Path, seed: int | None = None, seconds: float = 0.1) -> Path:
    """A tiny real audio file (format from the suffix); its content is unique unless ``seed`` repeats."""
    seed = zlib.crc32(str(path).encode()) if seed is None else seed
    samples = np.random.default_rng(seed).normal(0, 3000, int(16000 * seconds)).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, 16000)  # int16 is stored exactly, in WAV and FLAC alike
    return path


def parsed(corpus: str, root: Path, **options: object) -> dict[str, tuple[str, str, str | None]]:
    return {clip.path.name: (clip.speaker, clip.label, clip.sex) for clip in PARSERS[corpus](root, **options)}


# --------------------------------------------------------------------------- parsers


def test_cremad_names_and_demographics(tmp_path: Path) -> None:
    root = tmp_path / "cremad"
    for name in (
        "1001_DFA_ANG_XX",
        "1001_IEO_DIS_HI",  # disgust: not one of the four classes
        "1001_IOM_FEA_LO",  # fear: not one of the four classes
        "1002_TIE_HAP_MD",
        "1002_ITS_SAD_XX",
        "1003_MTI_NEU_XX",
        "1003_MTI",  # not a CREMA-D name
    ):
        write_audio(root / "AudioWAV" / f"{name}.flac")
    (root / "VideoDemographics.csv").write_text(
        "ActorID,Age,Sex,Race,Ethnicity\n"
        "1001,51,Male,Caucasian,Not Hispanic\n"
        "1002,21,Female,Asian,Not Hispanic\n"
    )
    assert parsed("cremad", root) == {
        "1001_DFA_ANG_XX.flac": ("cremad_1001", "angry", "M"),
        "1002_TIE_HAP_MD.flac": ("cremad_1002", "happy", "F"),
        "1002_ITS_SAD_XX.flac": ("cremad_1002", "sad", "F"),
        "1003_MTI_NEU_XX.flac": ("cremad_1003", "neutral", None),  # actor missing from the table
    }


def test_ravdess_names_calm_and_other_modalities(tmp_path: Path) -> None:
    root = tmp_path / "ravdess"
    for name in (
        "Actor_01/03-01-05-01-01-01-01",  # angry, odd actor: male
        "Actor_02/03-01-01-01-02-01-02",  # neutral, even actor: female
        "Actor_02/03-01-02-02-01-02-02",  # calm
        "Actor_03/03-01-06-01-01-01-03",  # fearful
        "Actor_03/03-01-07-02-01-01-03",  # disgust
        "Actor_03/03-01-08-01-02-02-03",  # surprised
        "Actor_04/03-02-03-01-01-01-04",  # song, not speech
        "Actor_04/01-01-03-01-01-01-04",  # audio-video release
        "Actor_05/03-01-03-02-02-02-05",  # happy
        "Actor_06/03-01-04-01-01-01-06",  # sad
    ):
        write_audio(root / f"{name}.flac")
    expected = {
        "03-01-05-01-01-01-01.flac": ("ravdess_01", "angry", "M"),
        "03-01-01-01-02-01-02.flac": ("ravdess_02", "neutral", "F"),
        "03-01-03-02-02-02-05.flac": ("ravdess_05", "happy", "M"),
        "03-01-04-01-01-01-06.flac": ("ravdess_06", "sad", "F"),
    }
    assert parsed("ravdess", root) == expected
    with_calm = parsed("ravdess", root, include_calm=True)
    assert with_calm == {**expected, "03-01-02-02-01-02-02.flac": ("ravdess_02", "neutral", "F")}


def test_tess_odd_names_and_folder_casing(tmp_path: Path) -> None:
    root = tmp_path / "tess"
    for name in (
        "OAF_angry/OAF_back_angry",
        "OAF_Sad/OAF_bite_sad",  # capitalised folder
        "YAF_sad/YAF_bite_sad",
        "OAF_neutral/OA_bite_neutral",  # the one file with a two-letter prefix
        "YAF_happy/YAF_chair_happy",
        "YAF_disgust/YAF_back_disgust",
        "OAF_Pleasant_surprise/OAF_back_ps",
        "YAF_fear/YAF_dog_fear",
    ):
        write_audio(root / f"{name}.wav")
    assert parsed("tess", root) == {
        "OAF_back_angry.wav": ("tess_OAF", "angry", "F"),
        "OAF_bite_sad.wav": ("tess_OAF", "sad", "F"),
        "YAF_bite_sad.wav": ("tess_YAF", "sad", "F"),
        "OA_bite_neutral.wav": ("tess_OAF", "neutral", "F"),
        "YAF_chair_happy.wav": ("tess_YAF", "happy", "F"),
    }


def test_savee_two_letter_codes_and_flat_layout(tmp_path: Path) -> None:
    root = tmp_path / "savee"
    for name in (
        "DC/a01",
        "JE/sa01",  # sadness: two-letter code
        "JK/su01",  # surprise: two-letter code, not used
        "KL/h02",
        "KL/n03",
        "DC/d01",  # disgust
        "DC/f01",  # fear
        "XX/a01",  # not a SAVEE speaker
        "flat/JE_a05",  # the flattened repack
    ):
        write_audio(root / f"{name}.wav")
    assert parsed("savee", root) == {
        "a01.wav": ("savee_DC", "angry", "M"),
        "sa01.wav": ("savee_JE", "sad", "M"),
        "h02.wav": ("savee_KL", "happy", "M"),
        "n03.wav": ("savee_KL", "neutral", "M"),
        "JE_a05.wav": ("savee_JE", "angry", "M"),
    }


def test_emodb_codes_and_boredom(tmp_path: Path) -> None:
    root = tmp_path / "emodb"
    for name in ("03a01Fa", "08a01Wa", "09b02Tb", "10a04Nc", "11a01Lb", "12a01Ea", "13a01Ab"):
        write_audio(root / "wav" / f"{name}.wav")
    assert parsed("emodb", root) == {
        "03a01Fa.wav": ("emodb_03", "happy", "M"),
        "08a01Wa.wav": ("emodb_08", "angry", "F"),
        "09b02Tb.wav": ("emodb_09", "sad", "F"),
        "10a04Nc.wav": ("emodb_10", "neutral", "M"),
    }


def test_collect_clips_skips_absent_corpora_and_refuses_unknown_ones(tmp_path: Path) -> None:
    write_audio(tmp_path / "emodb" / "wav" / "03a01Fa.wav")
    clips = collect_clips(tmp_path, list(PARSERS))
    assert [(clip.corpus, clip.label) for clip in clips] == [("emodb", "happy")]
    with pytest.raises(ValueError, match="unknown corpus"):
        collect_clips(tmp_path, ["iemocap"])


# --------------------------------------------------------------------------- duplicates


def test_identical_audio_conflicting_labels_dropped_same_label_kept_once(tmp_path: Path) -> None:
    cremad = tmp_path / "cremad" / "AudioWAV"
    write_audio(cremad / "1006_TIE_HAP_XX.flac", seed=1)
    write_audio(cremad / "1006_TIE_NEU_XX.flac", seed=1)  # same audio, other label: both go
    write_audio(cremad / "1006_DFA_ANG_XX.flac", seed=2)
    ravdess = tmp_path / "ravdess" / "Actor_07"
    write_audio(ravdess / "03-01-05-01-01-01-07.flac", seed=3)
    write_audio(ravdess / "03-01-05-01-01-02-07.wav", seed=3)  # same samples in another container, same label
    write_audio(ravdess / "03-01-04-01-01-01-07.flac", seed=4)

    kept = drop_conflicting_duplicates(collect_clips(tmp_path, ["cremad", "ravdess"]))
    names = sorted(clip.path.name for clip in kept)
    assert "1006_TIE_HAP_XX.flac" not in names and "1006_TIE_NEU_XX.flac" not in names
    assert "1006_DFA_ANG_XX.flac" in names and "03-01-04-01-01-01-07.flac" in names
    assert len([n for n in names if n.startswith("03-01-05-01-01")]) == 1
    assert len(names) == 3


# --------------------------------------------------------------------------- splits


def synthetic_clips() -> list[Clip]:
    """Speakers only (splitting reads no audio): mixed sexes, one sex, TESS-like, and sex unknown."""
    clips = []

    def add(corpus: str, speaker: str, sex: str | None, count: int = 4) -> None:
        for n in range(count):
            label = ("angry", "happy", "sad", "neutral")[n % 4]
            clips.append(
                Clip(Path(f"/{corpus}/{speaker}_{n}.wav"), corpus, f"{corpus}_{speaker}", label, sex)
            )

    for number in range(10):
        add("mixed", f"m{number}", "M")
        add("mixed", f"f{number}", "F")
    for number in range(3):
        add("three", f"s{number}", "M")
    add("tess", "OAF", "F")
    add("tess", "YAF", "F")
    for number in range(6):
        add("unknown", f"u{number}", None)
    return clips


def check_splits(clips: list[Clip], assignment: dict[str, str]) -> None:
    """Every speaker in exactly one split; every corpus with both sexes has both in every split."""
    assert set(assignment) == {clip.speaker for clip in clips}
    assert set(assignment.values()) <= set(SPLITS)
    sexes: dict[tuple[str, str], set[str]] = defaultdict(set)
    corpus_sexes: dict[str, set[str]] = defaultdict(set)
    corpus_speakers: dict[str, set[str]] = defaultdict(set)
    for clip in clips:
        corpus_speakers[clip.corpus].add(clip.speaker)
        if clip.sex:
            corpus_sexes[clip.corpus].add(clip.sex)
            sexes[(clip.corpus, assignment[clip.speaker])].add(clip.sex)
    for corpus, both in corpus_sexes.items():
        if len(both) == 2 and len(corpus_speakers[corpus]) >= 6:
            for split in SPLITS:
                assert sexes[(corpus, split)] == both, (corpus, split)


def test_synthetic_splits_are_speaker_disjoint_stratified_and_seeded() -> None:
    clips = synthetic_clips()
    assignment = split_speakers(clips, RATIOS, seed=1234)
    check_splits(clips, assignment)
    by_corpus = defaultdict(Counter)
    for speaker, split in assignment.items():
        by_corpus[speaker.split("_")[0]][split] += 1
    assert by_corpus["mixed"] == Counter(train=14, valid=3, test=3)
    assert by_corpus["three"] == Counter(train=1, valid=1, test=1)
    assert by_corpus["tess"] == Counter(train=2)  # fewer than three speakers: all train
    assert by_corpus["unknown"]["valid"] >= 1 and by_corpus["unknown"]["test"] >= 1

    assert split_speakers(clips, RATIOS, seed=1234) == assignment
    assert split_speakers(list(reversed(clips)), RATIOS, seed=1234) == assignment
    assert split_speakers(clips, RATIOS, seed=99) != assignment


def write_small_corpora(root: Path) -> None:
    """Eight RAVDESS actors (four of each sex) and TESS's two speakers, four clips each."""
    for actor in range(1, 9):
        for emotion in ("01", "03", "04", "05"):
            write_audio(
                root / "ravdess" / f"Actor_{actor:02d}" / f"03-01-{emotion}-01-01-01-{actor:02d}.flac"
            )
    for speaker in ("OAF", "YAF"):
        for emotion in ("angry", "happy", "sad", "neutral"):
            write_audio(root / "tess" / f"{speaker}_{emotion}" / f"{speaker}_back_{emotion}.wav")


def read_manifests(folder: Path) -> dict[str, dict[str, dict]]:
    return {split: json.loads((folder / f"{split}.json").read_text()) for split in SPLITS}


def test_prepare_writes_speaker_independent_manifests(tmp_path: Path) -> None:
    write_small_corpora(tmp_path / "corpora")
    out = tmp_path / "manifests"
    paths = prepare(tmp_path / "corpora", out, seed=7)
    manifests = read_manifests(out)
    assert {split: path.name for split, path in paths.items()} == {s: f"{s}.json" for s in SPLITS}

    speakers = {split: {e["speaker"] for e in entries.values()} for split, entries in manifests.items()}
    assert not speakers["train"] & speakers["valid"]
    assert not speakers["train"] & speakers["test"]
    assert not speakers["valid"] & speakers["test"]
    assert sum(len(entries) for entries in manifests.values()) == 8 * 4 + 2 * 4
    assert {"tess_OAF", "tess_YAF"} <= speakers["train"]
    for split in ("valid", "test"):
        assert {e["sex"] for e in manifests[split].values()} == {"F", "M"}

    entry = manifests["train"]["tess_OAF_back_angry"]
    assert entry["label"] == "angry" and entry["corpus"] == "tess" and entry["sex"] == "F"
    assert entry["duration"] == pytest.approx(0.1)
    assert Path(entry["path"]).is_absolute() and Path(entry["path"]).is_file()

    # Up to date: nothing is rewritten. Another seed: new splits.
    stamps = {split: path.stat().st_mtime_ns for split, path in paths.items()}
    prepare(tmp_path / "corpora", out, seed=7)
    assert {split: path.stat().st_mtime_ns for split, path in paths.items()} == stamps
    prepare(tmp_path / "corpora", out, seed=8)
    assert json.loads((out / "options.json").read_text())["seed"] == 8
    reshuffled = read_manifests(out)
    assert sorted(i for m in reshuffled.values() for i in m) == sorted(
        i for m in manifests.values() for i in m
    )


def test_prepare_refuses_a_folder_without_clips(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no labelled clips"):
        prepare(tmp_path, tmp_path / "manifests")


def test_real_corpora_splits(corpora_dir: Path, tmp_path: Path) -> None:
    paths = prepare(corpora_dir, tmp_path / "manifests", seed=1234)
    manifests = {split: json.loads(path.read_text()) for split, path in paths.items()}
    speakers = {split: {e["speaker"] for e in entries.values()} for split, entries in manifests.items()}
    assert not speakers["train"] & speakers["valid"]
    assert not speakers["train"] & speakers["test"]
    assert not speakers["valid"] & speakers["test"]
    clips = [
        Clip(Path(e["path"]), e["corpus"], e["speaker"], e["label"], e["sex"])
        for entries in manifests.values()
        for e in entries.values()
    ]
    assignment = {e["speaker"]: split for split, entries in manifests.items() for e in entries.values()}
    check_splits(clips, assignment)
    for corpus in {clip.corpus for clip in clips}:
        corpus_clips = [clip for clip in clips if clip.corpus == corpus]
        if len({clip.speaker for clip in corpus_clips}) >= 3:
            for split in SPLITS:
                labels = {e["label"] for e in manifests[split].values() if e["corpus"] == corpus}
                assert labels == {"angry", "happy", "sad", "neutral"}, (corpus, split)
    # The same seed gives the same split as the one written.
    assert split_speakers(clips, RATIOS, seed=1234) == assignment
