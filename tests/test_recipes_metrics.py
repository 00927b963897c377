"""Evaluation recipes: metrics, noise mixing, model evaluation, the eGeMAPS baseline, export and resume.

The model tests use a model trained and exported by the recipes themselves
(the session fixture ``debug_run`` in conftest.py), never a file outside the repo.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "recipes"))
import baseline as bl
import evaluate as ev
from conftest import REPO_ROOT, DebugRun, run_recipe
from metrics import classification_report, expected_calibration_error, report_from_confusion

from ser_sdk.events import LABELS
from ser_sdk.model import EmotionModel

RATE = 16000


def voiced(seconds: float = 1.0, f0: float = 150.0, seed: int = 0, harmonics: int = 5) -> np.ndarray:
    """A harmonic sound with a speech-like rise and fall, plus a little noise."""
    t = np.arange(int(seconds * RATE)) / RATE
    voice = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, harmonics + 1))
    envelope = 0.5 * (1 - np.cos(2 * np.pi * t / seconds))
    noise = 0.005 * np.random.default_rng(seed).standard_normal(len(t))
    return (0.3 * envelope * voice + noise).astype(np.float32)


# --------------------------------------------------------------------------- metrics


def test_ua_and_wa_match_hand_computation() -> None:
    confusion = np.array(
        [
            [8, 1, 0, 1],  # angry:   10 clips, 8 right  -> recall 0.8
            [2, 5, 1, 2],  # happy:   10 clips, 5 right  -> recall 0.5
            [0, 0, 18, 2],  # sad:    20 clips, 18 right -> recall 0.9
            [1, 1, 2, 16],  # neutral: 20 clips, 16 right -> recall 0.8
        ]
    )
    report = report_from_confusion(confusion, LABELS)
    # UA = (0.8 + 0.5 + 0.9 + 0.8) / 4 = 3.0 / 4 = 0.75
    assert report.ua == pytest.approx(0.75)
    # WA = (8 + 5 + 18 + 16) / 60 = 47 / 60
    assert report.wa == pytest.approx(47 / 60)
    assert report.recall == pytest.approx({"angry": 0.8, "happy": 0.5, "sad": 0.9, "neutral": 0.8})
    assert report.support == {"angry": 10, "happy": 10, "sad": 20, "neutral": 20}

    targets = [t for t in range(4) for p in range(4) for _ in range(confusion[t, p])]
    predicted = [p for t in range(4) for p in range(4) for _ in range(confusion[t, p])]
    assert classification_report(targets, predicted, LABELS) == report


def test_ua_averages_only_classes_that_occur() -> None:
    # no sad clip: UA = (angry 1/2 + happy 2/2 + neutral 0/1) / 3 = 0.5; WA = 3 / 5
    report = classification_report([0, 0, 1, 1, 3], [0, 1, 1, 1, 0], LABELS)
    assert report.ua == pytest.approx(0.5)
    assert report.wa == pytest.approx(0.6)
    assert "sad" not in report.recall


def test_expected_calibration_error_by_hand() -> None:
    probs = np.array(
        [
            [0.90, 0.05, 0.03, 0.02],  # confidence 0.90, predicts angry, target angry: right
            [0.90, 0.05, 0.03, 0.02],  # confidence 0.90, predicts angry, target happy: wrong
            [0.05, 0.65, 0.20, 0.10],  # confidence 0.65, predicts happy, target happy: right
            [0.10, 0.10, 0.15, 0.65],  # confidence 0.65, predicts neutral, target neutral: right
        ]
    )
    targets = [0, 1, 1, 3]
    # bin of 0.90: accuracy 1/2, confidence 0.90 -> |0.5 - 0.9| = 0.40, weight 2/4 -> 0.200
    # bin of 0.65: accuracy 2/2, confidence 0.65 -> |1.0 - 0.65| = 0.35, weight 2/4 -> 0.175
    assert expected_calibration_error(probs, targets, n_bins=15) == pytest.approx(0.375)
    # always right with full confidence: perfectly calibrated
    assert expected_calibration_error(np.eye(4), [0, 1, 2, 3]) == pytest.approx(0.0)


# --------------------------------------------------------------------------- noise


def measured_snr(clean: np.ndarray, mixed: np.ndarray) -> float:
    noise = mixed.astype(np.float64) - clean.astype(np.float64)
    return 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise**2))


@pytest.mark.parametrize("snr", [20.0, 10.0, 5.0, 0.0, -5.0])
def test_white_noise_is_mixed_at_the_requested_snr(snr: float) -> None:
    clean = voiced(1.3)
    noise = ev.white_noise(len(clean), np.random.default_rng(3))
    mixed = ev.mix_at_snr(clean, noise, snr)
    assert mixed.dtype == np.float32 and mixed.shape == clean.shape
    assert measured_snr(clean, mixed) == pytest.approx(snr, abs=0.01)


def speaker_clips() -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Pure tones: speaker ``a`` at 1000 Hz, five others at 200..600 Hz, with clips of varied length."""
    clips = {"a1": voiced(1.0, 1000.0, harmonics=1), "a2": voiced(0.7, 1000.0, seed=1, harmonics=1)}
    speakers = {"a1": "a", "a2": "a"}
    for number, f0 in enumerate((200.0, 300.0, 400.0, 500.0, 600.0)):
        clips[f"s{number}"] = voiced(0.4 + 0.3 * number, f0, seed=10 + number, harmonics=1)
        speakers[f"s{number}"] = f"s{number}"
    return clips, speakers


def test_babble_is_four_other_speakers_at_the_requested_snr() -> None:
    clips, speakers = speaker_clips()
    maker = ev.NoiseMaker(clips, speakers, seed=5)
    babble = maker.noise("a1", "babble")
    assert babble.shape == clips["a1"].shape
    spectrum = np.abs(np.fft.rfft(babble))  # 1 s at 16 kHz: bin k is k Hz
    assert spectrum[1000] < 0.01 * spectrum.max()  # nothing of the speaker's own voice
    talkers = [f0 for f0 in (200, 300, 400, 500, 600) if spectrum[f0] > 0.1 * spectrum.max()]
    assert len(talkers) == ev.BABBLE_TALKERS
    for snr in (20.0, 10.0, 5.0):
        assert measured_snr(clips["a1"], ev.mix_at_snr(clips["a1"], babble, snr)) == pytest.approx(
            snr, abs=0.01
        )


def test_noise_depends_only_on_seed_clip_and_kind() -> None:
    clips, speakers = speaker_clips()
    first = ev.NoiseMaker(clips, speakers, seed=5)
    again = ev.NoiseMaker(clips, speakers, seed=5)
    again.noise("s3", "babble")  # asking for other noise first changes nothing
    for kind in ev.NOISES:
        np.testing.assert_array_equal(first.noise("a1", kind), again.noise("a1", kind))
    assert not np.array_equal(first.noise("a1", "white")[:8000], first.noise("a2", "white")[:8000])
    other_seed = ev.NoiseMaker(clips, speakers, seed=6)
    assert not np.array_equal(first.noise("a1", "white"), other_seed.noise("a1", "white"))


def test_bad_mixing_requests_are_refused() -> None:
    clean = voiced(0.5)
    with pytest.raises(ValueError, match="silent clip"):
        ev.mix_at_snr(np.zeros(100, np.float32), np.ones(100), 10.0)
    with pytest.raises(ValueError, match="shape"):
        ev.mix_at_snr(clean, np.ones(10), 10.0)
    lone = ev.NoiseMaker({"x": clean}, {"x": "only"}, seed=0)
    with pytest.raises(ValueError, match="other speakers"):
        lone.noise("x", "babble")
    with pytest.raises(ValueError, match="unknown noise"):
        lone.noise("x", "pink")


def test_fit_length_crops_long_and_loops_short_sources() -> None:
    rng = np.random.default_rng(0)
    source = np.arange(10, dtype=np.float32)
    cropped = ev.fit_length(source, 4, rng)
    assert len(cropped) == 4 and np.all(np.diff(cropped) == 1)
    looped = ev.fit_length(source, 25, rng)
    assert len(looped) == 25 and set(looped.tolist()) == set(range(10))


class LengthModel:
    """Edge stand-in for a classifier: its probabilities encode each clip's length, to check the order."""

    model_id = "length"

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def probabilities(self, batch: list[np.ndarray]) -> np.ndarray:
        self.batches.append([len(x) for x in batch])
        return np.array([[len(x), 0, 0, 0] for x in batch], dtype=np.float64)


def test_predict_batches_by_length_and_keeps_input_order() -> None:
    lengths = [50, 10, 40, 20, 30, 60, 5]
    model = LengthModel()
    probs = ev.predict(model, [np.zeros(n, np.float32) for n in lengths], batch_size=3)
    assert probs[:, 0].tolist() == lengths
    assert model.batches == [[5, 10, 20], [30, 40, 50], [60]]


# --------------------------------------------------------------------------- evaluation of a trained model


@pytest.fixture(scope="module")
def test_entries(debug_run: DebugRun) -> dict[str, dict]:
    """A seeded sample of the debug run's test split (a stride could pick a single speaker)."""
    entries = json.loads((debug_run.manifest_folder / "test.json").read_text())
    ids = random.Random(0).sample(sorted(entries), min(24, len(entries)))
    assert len({entries[i]["speaker"] for i in ids}) > 1
    return {i: entries[i] for i in sorted(ids)}


def test_evaluate_model_end_to_end(debug_model_dir: Path, test_entries: dict, tmp_path: Path) -> None:
    model = EmotionModel.load(debug_model_dir, num_threads=1)
    broken = tmp_path / "broken.flac"
    broken.write_bytes(b"not audio at all")
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(RATE, np.float32), RATE)
    like = next(iter(test_entries.values()))
    entries = dict(
        test_entries, broken_clip=dict(like, path=str(broken)), silent_clip=dict(like, path=str(silent))
    )

    report = ev.evaluate_model(
        model, entries, snrs=[10.0, 5.0], noises=["white", "babble"], seed=1, batch_size=1
    )

    assert sorted(report.skipped) == ["broken_clip", "silent_clip"]
    assert report.clips == len(test_entries)
    corpora = sorted({e["corpus"] for e in test_entries.values()})
    assert report.corpora == [*corpora, ev.ALL]
    pooled = report.clean_for(ev.ALL)
    assert int(np.sum(pooled.report.confusion)) == len(test_entries)

    # The same figures from an independent pass, one clip at a time.
    ids = sorted(test_entries)
    probs = np.concatenate([model.probabilities([ev.load_audio(test_entries[i]["path"])]) for i in ids])
    targets = [LABELS.index(test_entries[i]["label"]) for i in ids]
    expected = classification_report(targets, probs.argmax(axis=1), LABELS)
    assert pooled.report.ua == pytest.approx(expected.ua)
    assert pooled.report.wa == pytest.approx(expected.wa)
    assert pooled.ece == pytest.approx(expected_calibration_error(probs, targets), abs=1e-4)

    assert len(report.noisy) == len(report.corpora) * 2 * 2
    for noisy in report.noisy:
        clean = report.clean_for(noisy.corpus).report
        assert noisy.ua_drop == pytest.approx(clean.ua - noisy.ua)
        assert noisy.wa_drop == pytest.approx(clean.wa - noisy.wa)
        assert 0.0 <= noisy.ua <= 1.0
    again = ev.evaluate_model(model, test_entries, snrs=[5.0], noises=["babble"], seed=1, batch_size=1)
    assert again.noisy_for(ev.ALL, "babble", 5.0) == report.noisy_for(ev.ALL, "babble", 5.0)

    written = ev.write_outputs(report, tmp_path / "out")
    names = sorted(path.name for path in written)
    assert names == sorted(
        ["evaluation.json", "ua_vs_snr.png", *[f"confusion_{corpus}.png" for corpus in report.corpora]]
    )
    for path in written:
        if path.suffix == ".png":
            import matplotlib.image

            assert matplotlib.image.imread(path).ndim == 3
    assert (
        ev.EvaluationReport.model_validate_json((tmp_path / "out" / "evaluation.json").read_text()) == report
    )


def test_a_wrong_label_fails_before_any_audio_is_read(tmp_path: Path) -> None:
    entry = {"path": str(tmp_path / "absent.wav"), "corpus": "x", "speaker": "s"}
    entries = {"a": dict(entry, label="angry"), "b": dict(entry, label="bored")}
    with pytest.raises(ValueError, match="'bored' is not one of"):  # not "no readable clips"
        ev.evaluate_model(LengthModel(), entries, snrs=[], noises=[])


def test_evaluate_command_line(debug_run: DebugRun, test_entries: dict, tmp_path: Path) -> None:
    manifest = tmp_path / "few.json"
    manifest.write_text(json.dumps(dict(list(test_entries.items())[:8])))
    out = tmp_path / "eval"
    args = ["--model", str(debug_run.model_dir), "--manifest", str(manifest), "--output_folder", str(out)]
    result = run_recipe("evaluate.py", [*args, "--snr", "10", "--noise", "white", "--threads", "1"])
    report = ev.EvaluationReport.model_validate_json((out / "evaluation.json").read_text())
    assert report.clips == 8
    assert [(n.noise, n.snr_db) for n in report.noisy if n.corpus == ev.ALL] == [("white", 10.0)]
    assert "UA %" in result.stdout and (out / "ua_vs_snr.png").is_file()


def write_emodb(root: Path) -> Path:
    """A small EmoDB-named corpus: three speakers, four emotions, plus a boredom clip that is not used."""
    folder = root / "emodb" / "wav"
    folder.mkdir(parents=True)
    for number, speaker in enumerate(("03", "08", "09")):
        for code, f0 in (("W", 220.0), ("F", 260.0), ("T", 110.0), ("N", 150.0), ("L", 130.0)):
            sf.write(folder / f"{speaker}a01{code}a.wav", voiced(0.8, f0 + 7 * number, seed=number), RATE)
    return root


def test_leave_one_corpus_out(debug_run: DebugRun, tmp_path: Path) -> None:
    model = EmotionModel.load(debug_run.model_dir, num_threads=1)
    assert model.info.training["corpora"] == [debug_run.corpus]
    with pytest.raises(ValueError, match="trained on"):
        ev.evaluate_loco(model, debug_run.data_folder, debug_run.corpus)

    data = write_emodb(tmp_path)
    entries = ev.corpus_entries(data, "emodb")
    assert len(entries) == 12 and {e["speaker"] for e in entries.values()} == {
        "emodb_03",
        "emodb_08",
        "emodb_09",
    }
    report = ev.evaluate_loco(model, data, "emodb", snrs=[10.0], noises=["babble"], seed=0)
    assert report.corpora == ["emodb", ev.ALL]
    assert report.clean_for("emodb").clips == 12
    assert report.clean_for("emodb").report.support == {label: 3 for label in LABELS}
    with pytest.raises(FileNotFoundError):
        ev.corpus_entries(data, "savee")


# --------------------------------------------------------------------------- export and resume


OFFLINE_LOAD = """
import json, sys
import numpy as np, torch
from ser_sdk.audio import load_audio
from ser_sdk.model import EmotionModel
from speechbrain.inference.classifiers import EncoderClassifier

directory, clip = sys.argv[1], sys.argv[2]
samples = load_audio(clip)
model = EmotionModel.load(directory, num_threads=1)
probs = model.probabilities([samples])[0]
sb_model = EncoderClassifier.from_hparams(source=directory, savedir=directory)
out, _, _, text = sb_model.classify_batch(torch.from_numpy(samples)[None])
sb_probs = torch.softmax(out[0] * model.info.logit_scale / model.info.temperature, dim=-1).numpy()
print(json.dumps({"label": model.classify([samples])[0].label, "sb_label": text[0],
                  "probs": probs.tolist(), "sb_probs": sb_probs.tolist()}))
"""


def load_offline(model_dir: Path, clip: Path, tmp_path: Path) -> dict:
    """Load a copy of the model directory both ways in a fresh interpreter that cannot reach any network."""
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HTTP_PROXY="http://127.0.0.1:9",
        HTTPS_PROXY="http://127.0.0.1:9",
        PYTHONPATH=str(REPO_ROOT),
    )
    command = [sys.executable, "-c", OFFLINE_LOAD, str(copy), str(clip)]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def check_same_classification(loaded: dict) -> None:
    assert loaded["label"] in LABELS
    assert loaded["sb_label"] == loaded["label"]
    np.testing.assert_allclose(loaded["sb_probs"], loaded["probs"], atol=1e-4)
    assert sum(loaded["probs"]) == pytest.approx(1.0)


def test_exported_model_loads_offline_with_sdk_and_speechbrain(debug_model_dir: Path, tmp_path: Path) -> None:
    clip = tmp_path / "voice.wav"
    sf.write(clip, voiced(1.5, 180.0), RATE)
    check_same_classification(load_offline(debug_model_dir, clip, tmp_path))


def test_exported_model_classifies_a_real_clip_offline(
    debug_model_dir: Path, cremad_clips: dict[str, list[Path]], tmp_path: Path
) -> None:
    check_same_classification(load_offline(debug_model_dir, cremad_clips["angry"][0], tmp_path))


def test_training_resumes_from_the_last_epoch(debug_run: DebugRun, tmp_path: Path) -> None:
    output = tmp_path / "train"
    shutil.copytree(debug_run.output_folder, output)
    result = run_recipe("train.py", debug_run.train_args(output_folder=output, epochs=3))
    log = result.stdout + result.stderr
    assert "Going into epoch 3" in log
    assert "Going into epoch 1" not in log and "Going into epoch 2" not in log
    epochs = [
        line.split(",")[0] for line in (output / "train_log.txt").read_text().splitlines() if "epoch:" in line
    ]
    assert epochs == ["epoch: 1", "epoch: 2", "epoch: 3"]


# --------------------------------------------------------------------------- eGeMAPS + SVM baseline


def separable_split(root: Path, speakers: list[str]) -> dict[str, dict]:
    """Entries whose emotion sets pitch and loudness, so a working baseline separates them."""
    pitch = {"angry": 230.0, "happy": 300.0, "sad": 100.0, "neutral": 150.0}
    level = {"angry": 1.8, "happy": 1.2, "sad": 0.4, "neutral": 0.8}
    entries = {}
    for number, speaker in enumerate(speakers):
        for label in LABELS:
            for take in range(2):
                seed = zlib.crc32(f"{speaker}{label}{take}".encode())
                samples = level[label] * voiced(0.8, pitch[label] * (1 + 0.04 * number + 0.02 * take), seed)
                path = root / f"{speaker}_{label}_{take}.wav"
                sf.write(path, samples, RATE)
                entries[path.stem] = {
                    "path": str(path),
                    "corpus": "synthetic",
                    "speaker": speaker,
                    "label": label,
                }
    return entries


def test_baseline_learns_and_picks_parameters_on_valid(tmp_path: Path) -> None:
    train = separable_split(tmp_path, ["s1", "s2", "s3", "s4"])
    valid = separable_split(tmp_path, ["s5"])
    test = separable_split(tmp_path, ["s6"])
    cache = tmp_path / "cache"
    model = bl.train_baseline(train, valid, cache_folder=cache, c_grid=(0.1, 10.0), gamma_factors=(1.0,))

    assert model.info.train_clips == 32 and model.info.valid_clips == 8
    assert len(model.info.grid) == 2
    assert model.info.valid_ua == max(point.valid_ua for point in model.info.grid)
    ids, probs = bl.predict_proba(model, test)
    assert ids == sorted(test) and probs.shape == (8, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    targets = [LABELS.index(test[i]["label"]) for i in ids]
    assert classification_report(targets, probs.argmax(axis=1), LABELS).ua >= 0.75

    # In-memory signals give the same probabilities as the cached file features.
    signal_probs = model.probabilities([ev.load_audio(test[i]["path"]) for i in ids])
    np.testing.assert_allclose(signal_probs, probs, atol=1e-6)


def test_baseline_features_are_cached_per_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "clip.wav"
    sf.write(path, voiced(0.8, 200.0), RATE)
    extractor = bl.EgemapsExtractor(tmp_path / "cache")
    features = extractor.from_path(path)
    assert features.shape == (88,) and len(extractor.names) == 88
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == 1

    calls: list[int] = []
    real = extractor.from_signal
    monkeypatch.setattr(extractor, "from_signal", lambda x: calls.append(1) or real(x))
    np.testing.assert_array_equal(extractor.from_path(path), features)
    assert calls == []  # served from the cache

    sf.write(path, voiced(1.2, 120.0), RATE)  # the file changes: the cache entry is stale
    changed = extractor.from_path(path)
    assert calls == [1] and not np.allclose(changed, features)


def test_baseline_skips_unreadable_clips(tmp_path: Path) -> None:
    good = tmp_path / "good.wav"
    sf.write(good, voiced(0.8), RATE)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVE")
    extractor = bl.EgemapsExtractor(None)
    ids, features = extractor.from_entries({"good": {"path": str(good)}, "bad": {"path": str(bad)}})
    assert ids == ["good"] and features.shape == (1, 88)
