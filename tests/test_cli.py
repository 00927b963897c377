"""The ``ser-sdk`` command line, run in-process through ``main(argv)`` (and once as a real process)."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import PHRASES, SR, phrases_signal, silence, speech_like

from ser_sdk import cli
from ser_sdk.cli import main, plan_batches
from ser_sdk.events import LABELS

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- fixtures and helpers


def write(path: Path, samples: np.ndarray, rate: int = SR, **kwargs: object) -> Path:
    sf.write(path, samples, rate, **kwargs)
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], list[str]]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def assert_clean_errors(err: list[str]) -> None:
    assert not any("Traceback" in line for line in err), err


def write_distribution(root: Path, module: str, source: str, entry_points: dict[str, dict[str, str]]) -> None:
    """An unpacked distribution on ``root`` (put on sys.path by the caller), as pip would leave it."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    sections = [
        f"[{group}]\n" + "\n".join(f"{name} = {target}" for name, target in items.items())
        for group, items in entry_points.items()
    ]
    (info / "entry_points.txt").write_text("\n\n".join(sections) + "\n")


PLUGIN_SOURCE = """
    import argparse

    from ser_sdk.events import Event
    from ser_sdk.plugin import Plugin, PluginConfig
    from pydantic import Field


    class TagEvent(Event):
        type: str = "test.tag"
        tag: str
        start: float
        end: float


    class TaggerOptions(PluginConfig):
        prefix: str = Field("mood", description="Put before the label.")
        min_confidence: float = 0.0


    class TaggerPlugin(Plugin):
        \"\"\"Publishes a tag for every emotion event.\"\"\"

        name = "tagger"
        Config = TaggerOptions

        async def on_emotion(self, event, state):
            await self.context.publish(
                TagEvent(
                    session_id=event.session_id,
                    tag=f"{self.config.prefix}:{event.label}",
                    start=event.start,
                    end=event.end,
                )
            )


    def register(subparsers: argparse._SubParsersAction) -> None:
        parser = subparsers.add_parser("hello", help="say hello")
        parser.add_argument("--name", default="world")
        parser.set_defaults(func=lambda args: print(f"hello {args.name}") or 0)
        interrupt = subparsers.add_parser("interrupt-me")
        interrupt.set_defaults(func=_interrupt)


    def _interrupt(args):
        raise KeyboardInterrupt


    def broken_register(subparsers):
        raise RuntimeError("this extension is broken")
"""


@pytest.fixture
def fake_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A distribution with a plugin and CLI commands, installed on sys.path for this test."""
    module = f"ser_cli_test_{tmp_path.name.replace('-', '_')}"
    site = tmp_path / "site"
    site.mkdir()
    write_distribution(
        site,
        module,
        PLUGIN_SOURCE,
        {
            "ser_sdk.plugins": {"tagger": f"{module}:TaggerPlugin"},
            "ser_sdk.commands": {"hello": f"{module}:register", "broken": f"{module}:broken_register"},
        },
    )
    monkeypatch.syspath_prepend(str(site))
    return module


# --------------------------------------------------------------------------- batching plan


def test_plan_batches_groups_similar_lengths_and_keeps_every_clip() -> None:
    lengths = [50, 10, 40, 20, 30, 10_000, 25]
    batches = plan_batches(lengths, batch_size=2, max_batch_samples=200)
    flat = [index for batch in batches for index in batch]
    assert sorted(flat) == list(range(len(lengths)))
    assert all(len(batch) <= 2 for batch in batches)
    assert [lengths[i] for i in flat] == sorted(lengths)  # shortest first, so neighbours are alike
    assert [5] in batches  # longer than the padded cap on its own: a batch of one, not dropped
    for batch in batches:
        if len(batch) > 1:
            assert len(batch) * max(lengths[i] for i in batch) <= 200


def test_plan_batches_caps_padded_size() -> None:
    batches = plan_batches([100] * 10, batch_size=8, max_batch_samples=300)
    assert [len(batch) for batch in batches] == [3, 3, 3, 1]
    assert plan_batches([], 4, 100) == []
    with pytest.raises(ValueError):
        plan_batches([1], 0, 100)


# --------------------------------------------------------------------------- classify


def test_classify_json_one_line_per_file_in_input_order(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Lengths, rates and channel counts differ, so the length-sorted batches reorder them internally.
    paths = [
        write(tmp_path / "long.wav", speech_like(2.5, seed=1)),
        write(tmp_path / "short.flac", speech_like(0.6, seed=2)),
        write(tmp_path / "stereo44k.wav", np.stack([speech_like(1.5, 3)] * 2, axis=1), rate=44100),
        write(tmp_path / "mid8k.ogg", speech_like(1.2, seed=4)[::2], rate=8000),
        write(tmp_path / "tiny.wav", speech_like(0.3, seed=5)),
    ]
    code, out, err = run_cli(
        capsys, "classify", "--json", "--model", str(model_dir), "--batch-size", "2", *map(str, paths)
    )
    assert code == 0, err
    assert_clean_errors(err)
    rows = [json.loads(line) for line in out]
    assert [row["path"] for row in rows] == [str(path) for path in paths]
    for row in rows:
        assert set(row) == {"path", "label", "confidence", "scores"}
        assert list(row["scores"]) == list(LABELS)
        assert sum(row["scores"].values()) == pytest.approx(1.0, abs=1e-4)
        assert row["scores"][row["label"]] == max(row["scores"].values())  # (ties are possible)
        assert row["confidence"] == pytest.approx(max(row["scores"].values()), abs=1e-6)


def test_classify_list_file_and_aligned_plain_output(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = [write(tmp_path / f"clip{i}.wav", speech_like(0.5 + 0.4 * i, seed=i)) for i in range(3)]
    listing = tmp_path / "files.txt"
    listing.write_text(f"# clips to score\n{paths[1]}\n\n{paths[2]}\n")
    code, out, err = run_cli(
        capsys, "classify", "--model", str(model_dir), "--list", str(listing), str(paths[0])
    )
    assert code == 0, err
    assert [line.split()[-1] for line in out] == [str(paths[0]), str(paths[1]), str(paths[2])]
    for line in out:
        fields = line.split()
        assert fields[0] in LABELS
        assert fields[2::2][:4] == list(LABELS)
    # Every column starts at the same place on every line.
    assert len({line.index("angry ", 9) for line in out}) == 1
    assert len({line.index(" /") for line in out}) == 1


def test_classify_reports_each_bad_file_and_keeps_the_good_ones(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write(tmp_path / "good.wav", speech_like(1.0))
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n")
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    whole = write(tmp_path / "whole.flac", speech_like(2.0))
    truncated = tmp_path / "truncated.flac"
    truncated.write_bytes(whole.read_bytes()[:200])
    missing = tmp_path / "missing.wav"
    bad = [text, empty, truncated, missing]
    code, out, err = run_cli(
        capsys, "classify", "--json", "--model", str(model_dir), str(text), str(good), *map(str, bad[1:])
    )
    assert code == 1
    assert_clean_errors(err)
    assert [json.loads(line)["path"] for line in out] == [str(good)]
    assert len(err) == len(bad)
    for path, line in zip(bad, err, strict=True):
        assert line.startswith(f"ser-sdk: error: {path}: ")
    assert "not a recognised audio format" in err[0]
    assert "file not found" in err[-1]


def test_classify_with_a_missing_model_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = write(tmp_path / "clip.wav", speech_like(1.0))
    code, out, err = run_cli(capsys, "classify", "--model", str(tmp_path / "nowhere"), str(clip))
    assert code == 2
    assert out == []
    assert err == [f"ser-sdk: error: model directory not found: {tmp_path / 'nowhere'}"]


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["classify", "--batch-size", "many", "x.wav"]) == 2
    assert main(["no-such-command"]) == 2
    assert "invalid choice: 'no-such-command'" in capsys.readouterr().err
    code, _, err = run_cli(capsys, "classify")
    assert code == 2
    assert err == ["ser-sdk: error: no input files: give paths or --list FILE"]
    code, _, err = run_cli(capsys, "classify", "--batch-size", "0", "x.wav")
    assert code == 2
    assert err == ["ser-sdk: error: --batch-size must be at least 1, got 0"]
    code, _, err = run_cli(capsys, "classify", "--list", "/nonexistent/list.txt")
    assert code == 2
    assert err == ["ser-sdk: error: /nonexistent/list.txt: list file not found"]
    assert main(["--version"]) == 0
    assert "ser-sdk" in capsys.readouterr().out


# --------------------------------------------------------------------------- analyze


def test_analyze_prints_one_emotion_event_per_phrase(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    audio = write(tmp_path / "talk.wav", phrases_signal())
    code, out, err = run_cli(capsys, "analyze", "--json", "--model", str(model_dir), str(audio))
    assert code == 0, err
    events = [json.loads(line) for line in out]
    assert [event["type"] for event in events] == ["emotion"] * len(PHRASES)
    for event, (start, end) in zip(events, PHRASES, strict=True):
        assert event["path"] == str(audio)
        # The VAD keeps up to 300 ms of padding on either side of the speech.
        assert start - 0.45 <= event["start"] <= start + 0.2
        assert end - 0.2 <= event["end"] <= end + 0.45
        assert event["label"] in LABELS
        assert event["confidence"] == pytest.approx(event["scores"][event["label"]])
        assert sum(event["scores"].values()) == pytest.approx(1.0, abs=1e-4)
        assert event["session_id"] == events[0]["session_id"]


def test_analyze_all_events_and_plain_output(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    audio = write(tmp_path / "talk.flac", phrases_signal())
    code, out, err = run_cli(
        capsys, "analyze", "--json", "--all-events", "--model", str(model_dir), str(audio)
    )
    assert code == 0, err
    types = [json.loads(line)["type"] for line in out]
    assert types[0] == "session.start"
    assert types[-1] == "session.end"
    assert types.count("speech.start") == types.count("utterance") == types.count("emotion") == len(PHRASES)
    end = json.loads(out[-1])
    assert end["utterances"] == len(PHRASES)
    assert end["duration"] == pytest.approx(len(phrases_signal()) / SR, abs=0.01)

    code, out, err = run_cli(capsys, "analyze", "--model", str(model_dir), str(audio))
    assert code == 0, err
    assert len(out) == len(PHRASES)
    for line in out:
        fields = line.split()
        assert fields[0] == str(audio)
        assert re.fullmatch(r"\d+\.\d\d-\d+\.\d\ds", fields[1])
        assert fields[2] in LABELS


def test_analyze_several_files_keeps_input_order_and_survives_bad_ones(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signal = phrases_signal()
    first = write(tmp_path / "a.wav", signal)
    second = write(tmp_path / "b.wav", signal[: round(5.5 * SR)], rate=SR)  # the first two phrases
    third = write(tmp_path / "c.wav", np.stack([signal] * 2, axis=1), rate=SR)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00")
    paths = [first, broken, second, third]
    code, out, err = run_cli(
        capsys, "analyze", "--json", "--jobs", "3", "--model", str(model_dir), *map(str, paths)
    )
    assert code == 1
    assert_clean_errors(err)
    assert len(err) == 1 and err[0].startswith(f"ser-sdk: error: {broken}: ")
    files = [json.loads(line)["path"] for line in out]
    expected = [str(first)] * 3 + [str(second)] * 2 + [str(third)] * 3
    assert files == expected  # concurrent sessions, yet grouped per file in input order
    sessions = {json.loads(line)["session_id"] for line in out}
    assert len(sessions) == 3


def test_analyze_realtime_gives_the_same_events(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    audio = write(tmp_path / "short.wav", np.concatenate([silence(0.3), speech_like(0.9), silence(0.5)]))

    def spans(*extra: str) -> list[tuple[float, float, str]]:
        code, out, err = run_cli(capsys, "analyze", "--json", "--model", str(model_dir), *extra, str(audio))
        assert code == 0, err
        return [(e["start"], e["end"], e["label"]) for e in map(json.loads, out)]

    fast = spans()
    assert len(fast) == 1
    assert spans("--realtime") == fast


def test_analyze_with_a_config_shows_plugin_events(
    tmp_path: Path, model_dir: Path, fake_plugin: str, capsys: pytest.CaptureFixture[str]
) -> None:
    audio = write(tmp_path / "talk.wav", phrases_signal())
    config = tmp_path / "ser.yaml"
    config.write_text(f"model: {model_dir}\nvad:\n  aggressiveness: 3\nplugins:\n  tagger: {{prefix: x}}\n")
    code, out, err = run_cli(capsys, "analyze", "--json", "--config", str(config), str(audio))
    assert code == 0, err
    events = [json.loads(line) for line in out]
    emotions = [event for event in events if event["type"] == "emotion"]
    tags = [event for event in events if event["type"] == "test.tag"]
    assert len(emotions) == len(tags) == len(PHRASES)
    assert [tag["tag"] for tag in tags] == [f"x:{event['label']}" for event in emotions]
    assert all(tag["path"] == str(audio) for tag in tags)

    code, out, _ = run_cli(capsys, "analyze", "--config", str(config), str(audio))
    assert code == 0
    tag_lines = [line for line in out if " test.tag " in line]
    assert len(tag_lines) == len(PHRASES)
    assert tag_lines[0].startswith(str(audio)) and '"tag":"x:' in tag_lines[0]


def test_analyze_config_errors_name_the_file_and_field(
    tmp_path: Path, fake_plugin: str, capsys: pytest.CaptureFixture[str]
) -> None:
    audio = write(tmp_path / "talk.wav", speech_like(1.0))
    config = tmp_path / "bad.yaml"
    config.write_text("vad:\n  frame_ms: 25\n")
    code, out, err = run_cli(capsys, "analyze", "--config", str(config), str(audio))
    assert code == 2 and out == []
    errors = [line for line in err if line.startswith("ser-sdk: error:")]
    assert len(errors) == 1
    assert errors[0].startswith(f"ser-sdk: error: {config}: vad.frame_ms: ")

    config.write_text("plugins:\n  tagger: {prefix: 3, colour: red}\n")
    code, _, err = run_cli(capsys, "analyze", "--config", str(config), str(audio))
    assert code == 2
    assert_clean_errors(err)
    assert any(f"{config}: plugins.tagger.colour" in line for line in err)

    config.write_text("plugins:\n  nosuchplugin: {}\n")
    code, _, err = run_cli(capsys, "analyze", "--config", str(config), str(audio))
    errors = [line for line in err if line.startswith("ser-sdk: error:")]
    assert code == 2
    assert len(errors) == 1 and "unknown plugin 'nosuchplugin'" in errors[0] and "tagger" in errors[0]


# --------------------------------------------------------------------------- plugins, info, extensions


def test_plugins_lists_discovered_plugins_with_their_options(
    fake_plugin: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "plugins")
    assert code == 0
    text = "\n".join(out)
    assert f"tagger  {fake_plugin}.TaggerPlugin" in text
    assert "Publishes a tag for every emotion event." in text
    assert '  prefix: str = "mood"  # Put before the label.' in text
    assert "  min_confidence: float = 0.0" in text

    code, out, _ = run_cli(capsys, "plugins", "--json")
    assert code == 0
    tagger = next(item for item in json.loads("\n".join(out)) if item["name"] == "tagger")
    assert tagger["module"] == fake_plugin and tagger["class"] == "TaggerPlugin"
    assert tagger["config"][0] == {
        "name": "prefix",
        "type": "str",
        "required": False,
        "default": "mood",
        "description": "Put before the label.",
    }


def test_info_shows_model_and_vad_settings(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_json = json.loads((model_dir / "model.json").read_text())
    config = tmp_path / "ser.yaml"
    config.write_text(f"model: {model_dir}\nvad:\n  aggressiveness: 3\n  frame_ms: 20\n")
    code, out, err = run_cli(capsys, "info", "--config", str(config))
    assert code == 0, err
    rows = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in out)
    assert rows["model"] == model_json["model_id"]
    assert rows["architecture"] == model_json["architecture"]
    assert rows["labels"] == "angry, happy, sad, neutral"
    assert rows["temperature"].startswith(f"{model_json['temperature']:g}")
    assert rows["vad.aggressiveness"] == "3" and rows["vad.frame_ms"] == "20"
    assert rows["model dir"] == str(model_dir.resolve())

    code, out, _ = run_cli(capsys, "info", "--json", "--model", str(model_dir))
    report = json.loads("\n".join(out))
    assert code == 0
    assert report["model_dir"] == str(model_dir.resolve())
    assert report["metrics"] == model_json["metrics"]
    assert report["vad"]["aggressiveness"] == 2  # the default without a config


def test_extension_commands_load_and_a_broken_one_is_skipped(
    fake_plugin: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "hello", "--name", "there")
    assert code == 0
    assert out == ["hello there"]
    assert any("'broken'" in line and "this extension is broken" in line for line in err)
    assert_clean_errors(err)


def test_keyboard_interrupt_is_one_line(fake_plugin: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "interrupt-me")
    assert code == 130
    assert err[-1] == "ser-sdk: interrupted"


def test_broken_pipe_to_head_exits_quietly(tmp_path: Path, model_dir: Path) -> None:
    # Far more output than a pipe holds, so the writes after the reader leaves must hit the closed pipe.
    folder = tmp_path / ("a-rather-long-folder-name-" * 8)
    folder.mkdir()
    clip = write(folder / "clip.wav", speech_like(0.3))
    listing = tmp_path / "list.txt"
    listing.write_text(f"{clip}\n" * 400)  # about 180 kB of JSON lines
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "plugins")])}
    command = [sys.executable, "-m", "ser_sdk.cli", "classify", "--json", "--batch-size", "32"]
    process = subprocess.Popen(
        [*command, "--model", str(model_dir), "--list", str(listing)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline()
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=300) == cli.EXIT_BROKEN_PIPE
    assert json.loads(first)["path"] == str(clip)
    assert "Traceback" not in stderr and "Exception ignored" not in stderr


# --------------------------------------------------------------------------- serve


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_runs_the_service_until_interrupted(tmp_path: Path, model_dir: Path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "plugins")])}
    process = subprocess.Popen(
        [sys.executable, "-m", "ser_sdk.cli", "serve", "--port", str(port), "--model", str(model_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    try:
        health = None
        deadline = time.monotonic() + 120
        while health is None and time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
                    health = json.loads(response.read())
            except OSError:
                time.sleep(0.2)
        assert health is not None, (
            process.stderr.read().decode() if process.poll() is not None else "no answer"
        )
        assert health["status"] == "ok" and health["open_sessions"] == 0
        body = io.BytesIO()
        sf.write(body, speech_like(1.0), SR, format="WAV")
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/classify", data=body.getvalue())
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.loads(response.read())["label"] in LABELS
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0
    text = stderr.decode()
    assert f"serving on http://127.0.0.1:{port}" in text
    assert "Traceback" not in text


def test_serve_with_a_bad_config_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "ser.yaml"
    config.write_text("engine:\n  max_batch_size: 0\n")
    code, out, err = run_cli(capsys, "serve", "--config", str(config))
    assert code == 2 and out == []
    assert err == [
        f"ser-sdk: error: {config}: engine.max_batch_size: Input should be greater than or equal to 1"
    ]
