from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import ScriptedClassifier, angry_scores, voiced_bursts
from pydantic import ValidationError
from ser_sdk_moderation import ModerationConfig, ModerationFlagEvent, ModerationPlugin

from ser_sdk import load_audio
from ser_sdk.events import EmotionEvent, EmotionScores, Event, SessionEndEvent, SessionState, Utterance
from ser_sdk.plugin import Plugin
from ser_sdk.testing import RecordingContext


def emotion(session_id: str, start: float, angry: float, *, length: float = 2.0) -> EmotionEvent:
    """An utterance whose non-angry probability mass is neutral."""
    return EmotionEvent.from_scores(
        angry_scores(angry), session_id=session_id, start=start, end=start + length, model_id="scripted"
    )


def state(session_id: str) -> SessionState:
    return SessionState(session_id=session_id, sample_rate=16000)


async def started(config: dict | None = None) -> tuple[ModerationPlugin, RecordingContext]:
    plugin = ModerationPlugin(config or {})
    context = RecordingContext()
    await plugin.start(context)
    return plugin, context


def flags(context: RecordingContext) -> list[ModerationFlagEvent]:
    assert all(isinstance(event, ModerationFlagEvent) for event in context.published)
    return list(context.published)  # type: ignore[arg-type]


async def test_shouting_match_gives_one_incident_that_escalates() -> None:
    plugin, context = await started()
    st = state("call-1")
    await plugin.on_emotion(emotion("call-1", 0.0, 0.05), st)  # calm opening
    # Fifty angry utterances, one every three seconds.
    for i in range(50):
        await plugin.on_emotion(emotion("call-1", 10.0 + 3 * i, 0.9), st)

    published = flags(context)
    assert [flag.severity for flag in published] == ["low", "medium", "high"]
    assert [flag.escalated for flag in published] == [False, True, True]
    assert len({flag.incident_id for flag in published}) == 1
    assert [flag.angry_utterances for flag in published] == [1, 2, 4]
    high = published[-1]
    assert high.start == pytest.approx(10.0)
    assert high.end == pytest.approx(10.0 + 3 * 3 + 2.0)
    assert all(item.angry == pytest.approx(0.9) for item in high.evidence)
    assert high.session_id == "call-1"
    assert "4 angry utterances within 60 s" in high.reason


async def test_after_the_cooldown_a_new_incident_starts_low() -> None:
    plugin, context = await started({"cooldown_s": 20, "window_s": 30})
    st = state("s")
    for t in (0.0, 3.0):
        await plugin.on_emotion(emotion("s", t, 0.8), st)
    # 19 s after the last angry utterance ended: still the same incident, no new flag.
    await plugin.on_emotion(emotion("s", 24.0, 0.8), st)
    assert [flag.severity for flag in flags(context)] == ["low", "medium"]
    # Then quiet (neutral speech only) for well over the cooldown and the window.
    for t in range(30, 90, 5):
        await plugin.on_emotion(emotion("s", float(t), 0.02), st)
    await plugin.on_emotion(emotion("s", 100.0, 0.8), st)

    published = flags(context)
    assert [flag.severity for flag in published] == ["low", "medium", "low"]
    assert published[2].incident_id != published[0].incident_id
    assert published[2].escalated is False
    assert published[2].angry_utterances == 1


async def test_escalation_counts_only_utterances_inside_the_window() -> None:
    # Angry utterances 25 s apart never share a 20 s window, so the severity stays low,
    # and with a 30 s cooldown they stay one incident: one flag in total.
    plugin, context = await started({"window_s": 20, "cooldown_s": 30})
    st = state("s")
    for t in (0.0, 25.0, 50.0, 75.0):
        await plugin.on_emotion(emotion("s", t, 0.95), st)
    published = flags(context)
    assert [flag.severity for flag in published] == ["low"]


async def test_threshold_and_minimum_confidence() -> None:
    plugin, context = await started({"threshold": 0.6})
    st = state("s")
    await plugin.on_emotion(emotion("s", 0.0, 0.59), st)
    assert context.published == []
    await plugin.on_emotion(emotion("s", 5.0, 0.6), st)
    assert len(context.published) == 1

    # Angry above a low threshold, but the model is unsure of everything: nothing is flagged.
    plugin, context = await started({"threshold": 0.3, "min_confidence": 0.5})
    unsure = EmotionScores.from_probs([0.35, 0.2, 0.15, 0.3])
    event = EmotionEvent.from_scores(unsure, session_id="s", start=0.0, end=1.0, model_id="scripted")
    await plugin.on_emotion(event, st)
    assert context.published == []


async def test_sessions_are_judged_separately_and_forgotten_at_the_end() -> None:
    plugin, context = await started()
    a, b = state("a"), state("b")
    await plugin.on_emotion(emotion("a", 0.0, 0.9), a)
    await plugin.on_emotion(emotion("b", 0.0, 0.9), b)
    await plugin.on_emotion(emotion("a", 3.0, 0.9), a)
    published = flags(context)
    assert [(f.session_id, f.severity) for f in published] == [("a", "low"), ("b", "low"), ("a", "medium")]

    await plugin.on_session_end(SessionEndEvent(session_id="a", duration=5.0, utterances=2), a)
    await plugin.on_emotion(emotion("a", 0.0, 0.9), state("a"))  # a new session reusing the id
    assert flags(context)[-1].severity == "low"
    assert flags(context)[-1].incident_id != published[0].incident_id


async def test_evidence_is_bounded_and_the_flag_round_trips_as_json() -> None:
    plugin, context = await started({"max_evidence": 3, "escalation": {"medium": 2, "high": 5}})
    st = state("s")
    for i in range(5):
        await plugin.on_emotion(emotion("s", 2.5 * i, 0.7 + 0.05 * i), st)
    high = flags(context)[-1]
    assert high.severity == "high"
    assert high.angry_utterances == 5
    assert [round(item.start, 1) for item in high.evidence] == [5.0, 7.5, 10.0]
    assert ModerationFlagEvent.model_validate_json(high.model_dump_json()) == high
    assert high.model_dump(mode="json")["type"] == "moderation.flag"


async def test_no_audio_is_kept_unless_an_audio_dir_is_configured(tmp_path: Path) -> None:
    samples = np.sin(np.linspace(0, 200 * np.pi, 32000)).astype(np.float32) * 0.5
    plugin, context = await started()
    await plugin.on_utterance(Utterance(session_id="s", start=0.0, end=2.0, samples=samples))
    await plugin.on_emotion(emotion("s", 0.0, 0.9), state("s"))
    assert all(item.audio_path is None for item in flags(context)[0].evidence)

    audio_dir = tmp_path / "evidence"
    plugin, context = await started({"audio_dir": str(audio_dir)})
    await plugin.on_utterance(Utterance(session_id="call/7", start=0.0, end=2.0, samples=samples))
    await plugin.on_utterance(Utterance(session_id="call/7", start=3.0, end=5.0, samples=samples))
    await plugin.on_emotion(emotion("call/7", 0.0, 0.9), state("call/7"))
    await plugin.on_emotion(emotion("call/7", 3.0, 0.1), state("call/7"))  # not angry: not written

    written = sorted(audio_dir.rglob("*.wav"))
    assert len(written) == 1
    evidence = flags(context)[0].evidence[0]
    assert evidence.audio_path == str(written[0])
    audio, rate = sf.read(written[0], dtype="float32")
    assert rate == 16000
    np.testing.assert_allclose(audio, samples, atol=1e-4)


def test_a_relative_audio_dir_is_resolved_against_the_config_file_folder(tmp_path: Path) -> None:
    from ser_sdk.plugins import load_plugins

    options = {"moderation": {"audio_dir": "evidence"}}
    (plugin,) = load_plugins(options, available={"moderation": ModerationPlugin}, config_dir=tmp_path)
    assert plugin.config.audio_dir == tmp_path / "evidence"
    assert ModerationPlugin(options["moderation"]).config.audio_dir == Path("evidence")  # no file: as given


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValidationError, match="treshold"):
        ModerationPlugin({"treshold": 0.6})
    with pytest.raises(ValidationError, match="high"):
        ModerationPlugin({"escalation": {"medium": 4, "high": 3}})
    with pytest.raises(ValidationError, match="threshold"):
        ModerationPlugin({"threshold": 1.5})
    assert ModerationPlugin({"threshold": 0.7}).config == ModerationConfig(threshold=0.7)


# ----------------------------------------------------------------------------- real clips


def _bundled_model():
    try:
        from ser_sdk.model import EmotionModel, default_model_dir
    except ImportError:
        pytest.skip("ser_sdk.model is not available")
    if not Path(default_model_dir()).exists():
        pytest.skip("no bundled model to score real clips with")
    return EmotionModel.load()


def _spread(paths: list[Path], count: int) -> list[Path]:
    """``count`` clips spread over the sorted list, so several actors and sentences are covered."""
    step = max(1, len(paths) // count)
    return paths[::step][:count]


async def test_real_angry_clips_are_flagged_and_neutral_ones_are_not(
    cremad_clips: dict[str, list[Path]],
) -> None:
    model = _bundled_model()
    per_label = 16
    results: dict[str, float] = {}
    for label in ("angry", "neutral"):
        paths = _spread(cremad_clips[label], per_label)
        audio = [load_audio(path) for path in paths]
        scores = model.classify(audio)
        flagged = 0
        for index, (path, score) in enumerate(zip(paths, scores, strict=True)):
            plugin, context = await started()  # defaults; one independent session per clip
            session_id = f"{label}-{index}"
            event = EmotionEvent.from_scores(
                score, session_id=session_id, start=0.0, end=len(audio[index]) / 16000, model_id="bundled"
            )
            await plugin.on_emotion(event, state(session_id))
            flagged += bool(context.published)
            assert path.exists()
        results[label] = flagged / len(paths)
    assert results["angry"] >= 0.75, results
    assert results["neutral"] <= 0.125, results


# ----------------------------------------------------------------------------- through the engine


class Recorder(Plugin):
    """Records every event it is given, including those other plugins publish."""

    name = "recorder"

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Event] = []

    async def on_event(self, event: Event) -> None:
        self.seen.append(event)


async def test_flags_reach_the_session_events_and_other_plugins() -> None:
    from ser_sdk import EmotionEngine

    # One neutral utterance, then four angry ones.
    classifier = ScriptedClassifier.angry([0.05, 0.9, 0.9, 0.9, 0.9])
    recorder = Recorder()
    async with EmotionEngine(classifier, plugins=[ModerationPlugin(), recorder]) as engine:
        session = engine.session(session_id="call-42")
        audio = voiced_bursts(5)
        async with session:
            for offset in range(0, len(audio), 320):
                await session.feed(audio[offset : offset + 320])
        events = [event async for event in session.events()]

    emotions = [e for e in events if isinstance(e, EmotionEvent)]
    published = [e for e in events if isinstance(e, ModerationFlagEvent)]
    assert len(emotions) == 5
    assert [flag.severity for flag in published] == ["low", "medium", "high"]
    assert len({flag.incident_id for flag in published}) == 1
    assert [item.emotion_event_id for item in published[-1].evidence] == [e.event_id for e in emotions[1:]]
    assert published[0].start == pytest.approx(emotions[1].start)
    # Flags come before the session ends, and the other plugin saw each of them.
    assert events[-1].type == "session.end"
    assert [e.event_id for e in recorder.seen if e.type == "moderation.flag"] == [
        f.event_id for f in published
    ]
