"""Configuration: the engine's knobs and the YAML file that sets them all.

Every model here forbids unknown fields, so a typo fails at start-up with a
message that names the file and the dotted path of the field, instead of being
silently ignored.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from .errors import ConfigError
from .vad import VadConfig


class EngineConfig(BaseModel):
    """How the engine batches, buffers and smooths."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(16, ge=1, le=1024, description="Utterances the model scores in one call.")
    max_batch_wait_ms: float = Field(
        20.0, ge=0.0, le=10_000.0, description="How long the batcher waits for a batch to fill."
    )
    queue_size: int = Field(
        64,
        ge=1,
        description="Utterances waiting for the model, over all sessions; feed() waits when it is full.",
    )
    event_queue_size: int = Field(
        256,
        ge=1,
        description="Events a session buffers for its iterator; when nobody reads, the oldest are dropped.",
    )
    dispatch_queue_size: int = Field(
        256, ge=1, description="Events queued per plugin and session; feed() waits when a lane is full."
    )
    mood_smoothing: float = Field(
        0.3, gt=0.0, le=1.0, description="EMA weight of one fully confident utterance in the running mood."
    )
    plugin_timeout_s: float = Field(2.0, gt=0.0, description="Default bound on each plugin hook call.")
    plugin_lifecycle_timeout_s: float = Field(
        30.0, gt=0.0, description="Bound on a plugin's start() and stop() (stop may drain work)."
    )
    max_publish_depth: int = Field(
        4, ge=1, description="How deep plugins may publish events in answer to published events."
    )
    recent_events: int = Field(20, ge=0, description="Emotion events kept in SessionState.recent.")


class SdkConfig(BaseModel):
    """Everything a deployment configures, usually read from YAML with ``load_config``."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="Model directory; None uses the bundled default.")
    vad: VadConfig = Field(default_factory=VadConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    plugins: dict[str, dict[str, Any] | None] = Field(
        default_factory=dict, description="Plugin name -> its options (None for defaults)."
    )
    _config_dir: Path | None = PrivateAttr(None)

    @property
    def config_dir(self) -> Path | None:
        """The folder of the file this came from: relative paths in plugin options resolve against it."""
        return self._config_dir

    @model_validator(mode="before")
    @classmethod
    def _empty_sections_mean_defaults(cls, data: Any) -> Any:
        # In YAML an empty section (`vad:`) is null; treat it as "all defaults".
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (v is None and k in ("vad", "engine", "plugins"))}
        return data


def format_validation_error(error: ValidationError, prefix: Sequence[str] = ()) -> str:
    """One ``dotted.path: problem`` line per error, the path starting with ``prefix``."""
    lines = []
    for item in error.errors():
        path = ".".join(str(part) for part in (*prefix, *item["loc"]))
        lines.append(f"{path}: {item['msg']}" if path else item["msg"])
    return "\n".join(lines)


def prefix_lines(source: str, message: str) -> str:
    """``message`` with ``source: `` before each line, so each line of a multi-line error names its file."""
    return "\n".join(f"{source}: {line}" for line in message.splitlines())


def load_config(path: str | os.PathLike[str]) -> SdkConfig:
    """Read and validate a YAML config file.

    Every failure is a ``ConfigError`` whose message starts with the file name;
    a relative ``model`` path is resolved against the file's folder, so a
    config means the same thing whatever the working directory.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, not {type(data).__name__}")

    try:
        config = SdkConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(prefix_lines(str(path), format_validation_error(exc))) from None

    if config.model is not None:
        model_dir = Path(config.model).expanduser()
        if not model_dir.is_absolute():
            model_dir = (path.parent / model_dir).resolve()
        config = config.model_copy(update={"model": str(model_dir)})
    config._config_dir = path.parent.resolve()
    return config
