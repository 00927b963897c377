from __future__ import annotations

import os
from pathlib import Path

import pytest

from ser_sdk.corpora import corpora_root

os.environ.setdefault("HF_HUB_OFFLINE", "1")


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
