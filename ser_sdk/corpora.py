"""Where the emotional speech corpora live: ``$SER_CORPORA`` or ``../shared/corpora`` beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

CORPORA_ENV = "SER_CORPORA"
REPO_ROOT = Path(__file__).resolve().parent.parent


def corpora_root() -> Path:
    """The corpora folder (it may not exist: callers decide whether that is an error)."""
    configured = os.environ.get(CORPORA_ENV)
    if configured:
        return Path(configured).expanduser()
    return (REPO_ROOT / ".." / "shared" / "corpora").resolve()
