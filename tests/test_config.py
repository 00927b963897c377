"""YAML configuration: defaults, path resolution, and errors that name the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field, ValidationError

import ser_sdk.plugins
from ser_sdk.config import EngineConfig, SdkConfig, load_config
from ser_sdk.engine import EmotionEngine
from ser_sdk.errors import ConfigError, ModelError, PluginError
from ser_sdk.plugin import Plugin, PluginConfig


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_full_config_loads_and_resolves_the_model_dir_against_the_file(tmp_path: Path):
    (tmp_path / "conf").mkdir()
    path = write(
        tmp_path / "conf",
        """
model: ../models/ser-v2
vad:
  frame_ms: 20
  aggressiveness: 3
engine:
  max_batch_size: 4
  plugin_timeout_s: 0.5
plugins:
  moderation: {threshold: 0.7}
  reply:
""",
    )
    config = load_config(path)
    assert config.model == str((tmp_path / "models" / "ser-v2").resolve())
    assert config.vad.frame_ms == 20 and config.vad.aggressiveness == 3
    assert config.engine.max_batch_size == 4 and config.engine.plugin_timeout_s == 0.5
    assert config.engine.queue_size == EngineConfig().queue_size
    assert config.plugins == {"moderation": {"threshold": 0.7}, "reply": None}


def test_absolute_and_home_model_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    absolute = tmp_path / "elsewhere" / "model"
    assert load_config(write(tmp_path, f"model: {absolute}\n")).model == str(absolute)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert load_config(write(tmp_path, "model: ~/m\n")).model == str(tmp_path / "home" / "m")


@pytest.mark.parametrize("text", ["", "# only a comment\n", "vad:\nengine:\nplugins:\n"])
def test_empty_file_and_empty_sections_mean_defaults(tmp_path: Path, text: str):
    assert load_config(write(tmp_path, text)).model_dump() == SdkConfig().model_dump()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("vad:\n  frame_ms: 25\n", "vad.frame_ms: Input should be 10, 20 or 30"),
        ("vad:\n  aggressiveness: 5\n", "vad.aggressiveness: Input should be less than or equal to 3"),
        ("engine:\n  queue_size: 0\n", "engine.queue_size: Input should be greater than or equal to 1"),
        ("engine:\n  max_batch: 8\n", "engine.max_batch: Extra inputs are not permitted"),
        ("vda:\n  frame_ms: 20\n", "vda: Extra inputs are not permitted"),
        ("plugins:\n  moderation: 5\n", "plugins.moderation: Input should be a valid dictionary"),
        ("plugins: [moderation]\n", "plugins: Input should be a valid dictionary"),
        ("model: [a, b]\n", "model: Input should be a valid string"),
    ],
)
def test_validation_errors_name_the_file_and_the_field(tmp_path: Path, text: str, message: str):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: {message}"


def test_cross_field_errors_and_several_errors_at_once(tmp_path: Path):
    path = write(tmp_path, "vad:\n  min_utterance_s: 3\n  max_utterance_s: 2\n")
    with pytest.raises(ConfigError, match=r"config\.yaml: vad: Value error, max_utterance_s \(2\.0\)"):
        load_config(path)

    path = write(tmp_path, "vad: {frame_ms: 25}\nengine: {mood_smoothing: 2}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).splitlines() == [
        f"{path}: vad.frame_ms: Input should be 10, 20 or 30",
        f"{path}: engine.mood_smoothing: Input should be less than or equal to 1",
    ]


def test_unreadable_files_are_config_errors(tmp_path: Path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope\.yaml: file not found"):
        load_config(missing)
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match=r"binary\.yaml: not a UTF-8 text file"):
        load_config(binary)


def test_bad_yaml_names_the_line(tmp_path: Path):
    path = write(tmp_path, "vad:\n  frame_ms: 20\n engine: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"{path.name}:3:\d+: invalid YAML: "):
        load_config(path)
    with pytest.raises(ConfigError, match="top level must be a mapping of sections, not list"):
        load_config(write(tmp_path, "- vad\n- engine\n"))


def test_engine_config_forbids_unknown_fields():
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        EngineConfig(max_batch=3)


# --------------------------------------------------------------------------- EmotionEngine.from_config


class Options(PluginConfig):
    threshold: float = 0.6
    endpoints: list[str] = Field(default_factory=list)


class Configurable(Plugin):
    name = "configurable"
    Config = Options


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """What entry-point discovery would find with one plugin distribution installed."""
    monkeypatch.setattr(
        ser_sdk.plugins, "discover_plugins", lambda group="ser_sdk.plugins": {"mod": Configurable}
    )


def test_from_config_builds_the_engine_with_its_plugins(tmp_path: Path, installed):
    path = write(
        tmp_path,
        "vad: {frame_ms: 10}\nengine: {max_batch_size: 2}\nplugins:\n  mod: {threshold: 0.9}\n",
    )
    engine = EmotionEngine.from_config(path)
    assert engine.vad_config.frame_ms == 10 and engine.config.max_batch_size == 2
    (plugin,) = engine.plugins
    assert isinstance(plugin, Configurable) and plugin.config.threshold == 0.9

    from_model = EmotionEngine.from_config(SdkConfig(plugins={"mod": None}))
    assert from_model.plugins[0].config.threshold == 0.6


def test_from_config_plugin_errors_name_the_file_and_the_plugin_field(tmp_path: Path, installed):
    path = write(tmp_path, "plugins:\n  mod:\n    threshold: high\n    endpoints: [1]\n")
    with pytest.raises(ConfigError) as info:
        EmotionEngine.from_config(path)
    assert str(info.value).splitlines() == [
        f"{path}: plugins.mod.threshold: Input should be a valid number, unable to parse string as a number",
        f"{path}: plugins.mod.endpoints.0: Input should be a valid string",
    ]

    with pytest.raises(PluginError, match=rf"{path.name}: unknown plugin 'moderation' \(available: mod\)"):
        EmotionEngine.from_config(write(tmp_path, "plugins:\n  moderation: {}\n"))

    with pytest.raises(ConfigError, match=r"plugins\.mod\.threshold"):
        EmotionEngine.from_config(SdkConfig(plugins={"mod": {"threshold": "high"}}))


async def test_a_missing_model_directory_fails_when_the_engine_starts(tmp_path: Path):
    engine = EmotionEngine.from_config(write(tmp_path, "model: no-such-model\n"))
    with pytest.raises(ModelError, match="no-such-model"):
        await engine.start()
    await engine.close()


def test_plugin_path_options_resolve_against_the_config_file(tmp_path, monkeypatch):
    from ser_sdk_webhooks import WebhooksPlugin

    from ser_sdk.plugins import load_plugins

    folder = tmp_path / "deploy"
    folder.mkdir()
    config_file = folder / "ser.yaml"
    config_file.write_text(
        "plugins:\n"
        "  webhooks:\n"
        "    outbox: data/outbox.sqlite\n"
        "    endpoints:\n"
        "      - {url: 'http://127.0.0.1:9/hooks', secret: s, events: ['*'], allow_private_network: true}\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(config_file)
    assert config.config_dir == folder.resolve()
    (plugin,) = load_plugins(config.plugins, {"webhooks": WebhooksPlugin}, config_dir=config.config_dir)
    assert plugin.config.outbox == folder.resolve() / "data" / "outbox.sqlite"
    (plain,) = load_plugins(config.plugins, {"webhooks": WebhooksPlugin})
    assert plain.config.outbox == Path("data/outbox.sqlite")
