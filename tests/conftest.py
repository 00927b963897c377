from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ser_sdk.corpora import corpora_root
from ser_sdk.model import default_model_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _drop_unimportable_lazy_modules() -> None:
    """SpeechBrain registers optional integrations (k2, ...) as lazy modules in ``sys.modules``.

    Hypothesis scans ``sys.modules`` for constants and so touches them, which
    tries the import and fails where the optional package is absent. They are
    never used here, so the ones that cannot load are taken out.
    """
    try:
        from speechbrain.utils.importutils import LazyModule
    except ImportError:
        return
    for name, module in list(sys.modules.items()):
        if isinstance(module, LazyModule) and not getattr(module, "lazy_module", None):
            try:
                module.ensure_module(1)
            except Exception:
                del sys.modules[name]


@pytest.fixture(scope="session")
def corpora_dir() -> Path:
    root = corpora_root()
    if not (root / "cremad").is_dir() and not (root / "ravdess").is_dir():
        pytest.skip(f"emotional speech corpora not found at {root} (set SER_CORPORA)")
    return root


@pytest.fixture(scope="session")
def cremad_clips(corpora_dir: Path) -> dict[str, list[Path]]:
    """CREMA-D clips by label, sorted for determinism."""
    folder = corpora_dir / "cremad" / "AudioWAV"
    if not folder.is_dir():
        pytest.skip("CREMA-D is not in the corpora folder")
    codes = {"ANG": "angry", "HAP": "happy", "SAD": "sad", "NEU": "neutral"}
    clips: dict[str, list[Path]] = {label: [] for label in codes.values()}
    for path in sorted(folder.glob("*.flac")):
        code = path.stem.split("_")[2]
        if code in codes:
            clips[codes[code]].append(path)
    return clips


# --------------------------------------------------------------------------- trained debug model

REPO_ROOT = Path(__file__).resolve().parent.parent
RAVDESS_CODES = {"neutral": "01", "happy": "03", "sad": "04", "angry": "05"}


def write_synthetic_ravdess(root: Path, actors: int = 6, seconds: float = 1.0) -> Path:
    """A RAVDESS-named folder of generated voiced sounds, for recipe tests where the corpora are absent.

    Each emotion gets its own pitch and loudness and each clip its own noise, so
    the clips are distinct audio (duplicate detection keeps them all) and the
    labels are learnable.
    """
    rate = 16000
    t = np.arange(int(seconds * rate)) / rate
    pitch = {"neutral": 120.0, "happy": 260.0, "sad": 90.0, "angry": 200.0}
    level = {"neutral": 0.2, "happy": 0.35, "sad": 0.1, "angry": 0.6}
    rng = np.random.default_rng(7)
    for actor in range(1, actors + 1):
        folder = root / "ravdess" / f"Actor_{actor:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for label, code in RAVDESS_CODES.items():
            for statement in (1, 2):
                f0 = pitch[label] * (1 + 0.05 * actor) * (1 + 0.03 * statement)
                voice = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
                envelope = 0.5 * (1 - np.cos(2 * np.pi * t / seconds))
                samples = level[label] * envelope * voice / 2 + 0.01 * rng.standard_normal(len(t))
                name = f"03-01-{code}-01-{statement:02d}-01-{actor:02d}.flac"
                sf.write(folder / name, samples.astype(np.float32), rate)
    return root


class DebugRun:
    """A finished two-epoch debug training run and its exported model directory."""

    def __init__(self, root: Path, data_folder: Path, corpus: str) -> None:
        self.root = root
        self.data_folder = data_folder
        self.corpus = corpus
        self.output_folder = root / "train"
        self.manifest_folder = root / "manifests"
        self.model_dir = root / "model"

    def train_args(self, output_folder: Path | None = None, epochs: int = 2) -> list[str]:
        return [
            str(REPO_ROOT / "recipes" / "hparams" / "ecapa.yaml"),
            "--limit_files=16",
            f"--number_of_epochs={epochs}",
            "--channels=16",
            "--batch_size=4",
            "--num_workers=0",
            f"--output_folder={output_folder or self.output_folder}",
            f"--manifest_folder={self.manifest_folder}",
            f"--data_folder={self.data_folder}",
            f"--corpora=[{self.corpus}]",
        ]


def run_recipe(script: str, args: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run a recipe in a fresh interpreter (offline, one thread); a failure fails the test with its output."""
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, HF_HUB_OFFLINE="1", SER_TRAIN_THREADS="1", PYTHONPATH=path)
    command = [sys.executable, str(REPO_ROOT / "recipes" / script), *args]
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        output = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        pytest.fail(f"{script} failed ({result.returncode}):\n{output}")
    return result


@pytest.fixture(scope="session")
def debug_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> DebugRun:
    """Train (2 epochs, 16 clips per split, 16 channels) and export once per test session.

    Uses the real corpora when present and a generated RAVDESS-named folder
    otherwise, so the recipe tests never skip.
    """
    try:
        data_folder = request.getfixturevalue("corpora_dir")
    except pytest.skip.Exception:
        data_folder = write_synthetic_ravdess(tmp_path_factory.mktemp("synthetic_corpora"))
    corpus = "ravdess" if (data_folder / "ravdess").is_dir() else "cremad"
    run = DebugRun(tmp_path_factory.mktemp("debug_run"), data_folder, corpus)
    run_recipe("train.py", run.train_args())
    run_recipe("export.py", [*run.train_args(), f"--export_dir={run.model_dir}"])
    return run


@pytest.fixture(scope="session")
def debug_model_dir(debug_run: DebugRun) -> Path:
    return debug_run.model_dir


@pytest.fixture(scope="session")
def model_dir(request: pytest.FixtureRequest) -> Path:
    """The bundled model when it is there, else the small model trained for the test session."""
    bundled = default_model_dir()
    if (bundled / "model.json").is_file():
        return bundled
    return request.getfixturevalue("debug_model_dir")
