"""The async engine end to end: real AudioStream, real webrtcvad, real batcher and plugin host.

The classifier is the edge: a deterministic stand-in that scores an utterance
by its peak level, so every expected label is known from the signal alone.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ser_sdk.config import EngineConfig
from ser_sdk.engine import EmotionEngine, Session
from ser_sdk.errors import AudioFormatError, EmptyAudioError, ModelError, PluginError, SessionClosedError
from ser_sdk.events import LABELS, EmotionEvent, EmotionScores, Event
from ser_sdk.plugin import Plugin

SR = 16000

# Peak level of a synthetic burst -> the label the level classifier gives it.
LEVELS = {"angry": 0.8, "happy": 0.4, "neutral": 0.15, "sad": 0.06}


def burst(seconds: float, peak: float, seed: int = 0) -> np.ndarray:
    """Speech-like sound: a 140 Hz harmonic tone, amplitude-modulated at syllable rate, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    tone = sum(np.sin(2 * np.pi * 140.0 * k * t) / k for k in range(1, 8))
    x = tone * (0.6 + 0.4 * np.sin(2 * np.pi * 4.0 * t)) + 0.05 * rng.standard_normal(len(t))
    return (peak * x / np.abs(x).max()).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR), dtype=np.float32)


def speech(labels: Sequence[str], *, trail: float = 0.8, seed: int = 0) -> np.ndarray:
    """Half a second of silence, then one 0.8 s burst per label, each followed by ``trail`` s of silence."""
    parts = [silence(0.5)]
    for i, label in enumerate(labels):
        parts += [burst(0.8, LEVELS[label], seed=seed + i), silence(trail if i == len(labels) - 1 else 0.8)]
    return np.concatenate(parts)


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


class LevelClassifier:
    """Scores by peak level (the unit test's stand-in for the neural model)."""

    model_id = "level-test"
    labels = LABELS

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []

    def label_of(self, samples: np.ndarray) -> str:
        peak = float(np.abs(samples).max())
        if peak > 0.6:
            return "angry"
        if peak > 0.25:
            return "happy"
        if peak > 0.1:
            return "neutral"
        return "sad"

    def classify(self, batch: Sequence[np.ndarray]) -> list[EmotionScores]:
        self.batch_sizes.append(len(batch))
        out = []
        for samples in batch:
            probs = np.full(len(LABELS), 0.05)
            probs[LABELS.index(self.label_of(samples))] = 0.85
            out.append(EmotionScores.from_probs(probs))
        return out


async def feed_all(session: Session, samples: np.ndarray, chunk_bytes: int = 3200) -> None:
    data = pcm16(samples)
    for i in range(0, len(data), chunk_bytes):
        await session.feed(data[i : i + chunk_bytes])


async def run_session(engine: EmotionEngine, samples: np.ndarray, **kwargs) -> list[Event]:
    """Feed a whole signal through one session, reading its events concurrently."""
    async with engine.session(**kwargs) as session:
        reader = asyncio.create_task(collect(session))
        await feed_all(session, samples)
    return await reader


async def collect(session: Session) -> list[Event]:
    return [event async for event in session.events()]


def of_type(events: Sequence[Event], kind: str) -> list[Event]:
    return [e for e in events if e.type == kind]


def check_order(events: Sequence[Event]) -> None:
    """session.start first, session.end last, speech.start -> utterance -> emotion for every utterance."""
    assert events[0].type == "session.start" and events[-1].type == "session.end"
    core = [e for e in events if e.type in ("speech.start", "utterance", "emotion")]
    assert [e.type for e in core] == ["speech.start", "utterance", "emotion"] * (len(core) // 3)
    for start, utterance, verdict in zip(core[::3], core[1::3], core[2::3], strict=True):
        assert start.start == utterance.start == verdict.start
        assert utterance.end == verdict.end


class Recorder(Plugin):
    name = "recorder"

    def __init__(self, name: str = "recorder") -> None:
        super().__init__()
        self.name = name  # type: ignore[misc]
        self.hooks: list[tuple[str, str]] = []
        self.events: list[Event] = []
        self.utterance_samples: list[int] = []

    async def on_session_start(self, event, state):
        self.hooks.append(("session_start", event.session_id))

    async def on_session_end(self, event, state):
        self.hooks.append(("session_end", event.session_id))

    async def on_speech_start(self, event):
        self.hooks.append(("speech_start", event.session_id))

    async def on_utterance(self, utterance):
        self.utterance_samples.append(len(utterance.samples))
        self.hooks.append(("utterance", utterance.session_id))

    async def on_emotion(self, event, state):
        assert state.last_emotion == event  # the state handed over already includes this verdict
        self.hooks.append(("emotion", event.session_id))

    async def on_event(self, event):
        self.events.append(event)


class Raiser(Plugin):
    name = "raiser"

    async def on_session_start(self, event, state):
        raise RuntimeError("raiser broke on start")

    async def on_emotion(self, event, state):
        raise RuntimeError("raiser broke on emotion")

    async def on_event(self, event):
        raise RuntimeError("raiser broke on event")


class Hanger(Plugin):
    name = "hanger"
    timeout = 0.05

    async def on_speech_start(self, event):
        await asyncio.Event().wait()

    async def on_emotion(self, event, state):
        await asyncio.Event().wait()


# --------------------------------------------------------------------------- the stream


async def test_speech_gives_ordered_events_with_the_expected_labels():
    engine = EmotionEngine(LevelClassifier())
    async with engine:
        events = await run_session(engine, speech(["angry", "sad", "happy"]), session_id="call-1")
    check_order(events)
    emotions = of_type(events, "emotion")
    assert [e.label for e in emotions] == ["angry", "sad", "happy"]
    assert all(e.session_id == "call-1" for e in events)
    assert all(e.model_id == "level-test" for e in emotions)
    assert all(abs(sum(e.scores.as_dict().values()) - 1) < 1e-9 for e in emotions)
    end = events[-1]
    assert end.utterances == 3
    assert end.duration == pytest.approx(len(speech(["angry", "sad", "happy"])) / SR)


async def test_raising_and_hanging_plugins_do_not_stop_the_stream(caplog):
    recorder = Recorder()
    engine = EmotionEngine(LevelClassifier(), plugins=[Raiser(), Hanger(), recorder])
    with caplog.at_level(logging.WARNING, logger="ser_sdk.plugins"):
        async with engine:
            events = await run_session(engine, speech(["angry", "neutral", "sad"]), session_id="s")
            stats = engine.stats().plugins.plugins

    assert [e.label for e in of_type(events, "emotion")] == ["angry", "neutral", "sad"]
    assert [e.event_id for e in recorder.events] == [e.event_id for e in events]
    assert [h for h, _ in recorder.hooks] == (
        ["session_start"] + ["speech_start", "utterance", "emotion"] * 3 + ["session_end"]
    )
    assert stats["raiser"].failures == 1 + 3 + len(events)
    assert stats["hanger"].timeouts == 6
    assert stats["recorder"].failures == 0
    logged = [r.getMessage() for r in caplog.records]
    assert sum("plugin 'hanger' timed out" in m for m in logged) == 6
    assert any("plugin 'raiser' failed in on_emotion: raiser broke on emotion" in m for m in logged)


async def test_sixteen_concurrent_sessions_each_get_exactly_their_own_events():
    classifier = LevelClassifier()
    recorder = Recorder()
    engine = EmotionEngine(classifier, plugins=[recorder])
    cycle = ["angry", "happy", "neutral", "sad"]
    expected = {f"s{i:02d}": [cycle[(i + k) % 4] for k in range(1 + i % 3)] for i in range(16)}

    async def one(session_id: str, labels: list[str], seed: int) -> list[Event]:
        async with engine.session(session_id=session_id) as session:
            reader = asyncio.create_task(collect(session))
            await feed_all(session, speech(labels, seed=seed), chunk_bytes=1600 + 64 * seed)
        return await reader

    async with engine:
        results = await asyncio.gather(
            *(one(sid, labels, i) for i, (sid, labels) in enumerate(expected.items()))
        )
        stats = engine.stats()

    for (session_id, labels), events in zip(expected.items(), results, strict=True):
        assert {e.session_id for e in events} == {session_id}
        check_order(events)
        assert [e.label for e in of_type(events, "emotion")] == labels
        assert events[-1].utterances == len(labels)
        mine = [e for e in recorder.events if e.session_id == session_id]
        assert [e.event_id for e in mine] == [e.event_id for e in events]
    total = sum(len(labels) for labels in expected.values())
    assert stats.batcher.items == total == sum(classifier.batch_sizes)
    assert stats.open_sessions == 0


async def test_silence_and_faint_noise_give_no_emotion_events():
    rng = np.random.default_rng(3)
    noise = (0.002 * rng.standard_normal(3 * SR)).astype(np.float32)
    async with EmotionEngine(LevelClassifier()) as engine:
        for signal in (silence(3.0), noise):
            events = await run_session(engine, signal)
            assert [e.type for e in events] == ["session.start", "session.end"]
            assert events[-1].duration == pytest.approx(3.0)


async def test_close_flushes_the_last_utterance():
    signal = np.concatenate([silence(0.5), burst(1.0, LEVELS["angry"])])  # no trailing silence
    async with EmotionEngine(LevelClassifier()) as engine:
        session = engine.session()
        reader = asyncio.create_task(collect(session))
        await feed_all(session, signal)
        await session.settle()
        assert session.state.utterances == 0  # the VAD still holds it open
        await session.close()
        events = await reader
        with pytest.raises(SessionClosedError):
            await session.feed(b"\x00\x00")
        await session.close()  # idempotent
    assert [e.type for e in events][-3:] == ["utterance", "emotion", "session.end"]
    assert of_type(events, "emotion")[0].label == "angry"
    assert session.state.utterances == 1


async def test_engine_close_ends_open_sessions_gracefully():
    engine = EmotionEngine(LevelClassifier())
    session = engine.session()
    reader = asyncio.create_task(collect(session))
    await feed_all(session, np.concatenate([silence(0.5), burst(1.0, LEVELS["happy"])]))
    await engine.close()
    events = await reader
    assert [e.label for e in of_type(events, "emotion")] == ["happy"]
    assert session.closed and events[-1].type == "session.end"
    with pytest.raises(SessionClosedError, match="engine is closed"):
        engine.session()


class SlowStart(Plugin):
    """Holds ``start`` (and so the engine's start) until released."""

    name = "slow-start"

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.stopped = False

    async def start(self, context):
        await super().start(context)
        self.entered.set()
        await self.release.wait()

    async def stop(self):
        self.stopped = True


async def close_while_starting(slow: SlowStart, start, close) -> None:
    """Call ``close()`` while ``start()`` is held inside the slow plugin, then let both finish."""
    starting = asyncio.create_task(start())
    await slow.entered.wait()
    closing = asyncio.create_task(close())
    await asyncio.sleep(0)
    slow.release.set()
    await asyncio.gather(starting, closing)


async def test_closing_a_session_while_it_starts_still_ends_it():
    slow = SlowStart()
    engine = EmotionEngine(LevelClassifier(), plugins=[slow])
    session = engine.session()
    await close_while_starting(slow, session.start, session.close)
    events = await collect(session)
    assert [e.type for e in events] == ["session.start", "session.end"]
    assert engine.sessions == ()
    await engine.close()


async def test_closing_the_engine_while_it_starts_stops_what_started():
    slow = SlowStart()
    engine = EmotionEngine(LevelClassifier(), plugins=[slow])
    await close_while_starting(slow, engine.start, engine.close)
    assert slow.stopped
    assert [t for t in asyncio.all_tasks() if t.get_name() == "ser-sdk-batcher" and not t.done()] == []


async def test_bad_chunks_raise_typed_errors_and_lose_nothing():
    signal = speech(["angry", "sad"])
    data = pcm16(signal)
    async with EmotionEngine(LevelClassifier()) as engine:
        session = engine.session()
        reader = asyncio.create_task(collect(session))
        half = len(data) // 2 + 1  # odd: a partial sample waits for the next chunk
        await session.feed(data[:half])
        with pytest.raises(AudioFormatError):
            await session.feed(np.zeros(160, dtype=np.float32))  # numpy after half a sample
        with pytest.raises(AudioFormatError):
            await session.feed("not audio")  # type: ignore[arg-type]
        await session.feed(data[half:])
        with pytest.raises(AudioFormatError):
            await session.feed(np.array([0.1, np.nan], dtype=np.float32))
        with pytest.raises(AudioFormatError):
            await session.feed(np.zeros((10, 2), dtype=np.float32))  # stereo into a mono session
        await session.close()
        events = await reader
    assert [e.label for e in of_type(events, "emotion")] == ["angry", "sad"]
    assert events[-1].duration == pytest.approx(len(signal) / SR)


async def test_48_khz_stereo_input_is_resampled_and_segmented():
    mono = speech(["happy", "angry"])
    # Resample by a whole factor (3x, by repetition) and put it on both channels.
    stereo = np.repeat(mono, 3)[:, None].repeat(2, axis=1)
    async with EmotionEngine(LevelClassifier()) as engine:
        async with engine.session(sample_rate=48000, channels=2) as session:
            reader = asyncio.create_task(collect(session))
            for i in range(0, len(stereo), 4800):
                await session.feed((stereo[i : i + 4800] * 32767).astype(np.int16))
        events = await reader
    assert [e.label for e in of_type(events, "emotion")] == ["happy", "angry"]
    assert events[0].sample_rate == 48000
    assert events[-1].duration == pytest.approx(len(mono) / SR)


async def test_unread_events_drop_oldest_but_plugins_see_everything(caplog):
    recorder = Recorder()
    engine = EmotionEngine(LevelClassifier(), config=EngineConfig(event_queue_size=3), plugins=[recorder])
    async with engine:
        session = engine.session()
        with caplog.at_level(logging.WARNING, logger="ser_sdk.engine"):
            await feed_all(session, speech(["angry", "happy", "sad"]))  # nobody reads: must not block
            await session.close()
        late = await collect(session)
    assert [e.type for e in late] == ["utterance", "emotion", "session.end"]
    assert len(recorder.events) == 11
    assert session.stats.events_dropped == 8
    assert any("events() is not being read" in r.getMessage() for r in caplog.records)


async def test_mood_is_a_confidence_weighted_moving_average():
    config = EngineConfig(mood_smoothing=0.5, recent_events=2)
    async with EmotionEngine(LevelClassifier(), config=config) as engine, engine.session() as session:
        await feed_all(session, speech(["sad", "happy", "angry"]))
        await session.settle()
        state = session.state
    uniform = np.full(4, 0.25)
    angry = EmotionScores.from_probs([0.85, 0.05, 0.05, 0.05]).as_array()
    happy = EmotionScores.from_probs([0.05, 0.85, 0.05, 0.05]).as_array()
    sad = EmotionScores.from_probs([0.05, 0.05, 0.85, 0.05]).as_array()
    w = 0.5 * 0.85
    expected = uniform
    for scores in (sad, happy, angry):
        expected = (1 - w) * expected + w * scores
    np.testing.assert_allclose(state.mood.as_array(), expected, atol=1e-9)
    assert state.mood_label == "angry"
    assert state.utterances == 3
    assert [e.label for e in state.recent] == ["happy", "angry"]
    assert state.last_emotion.label == "angry"


# --------------------------------------------------------------------------- batching and backpressure


class GatedClassifier(LevelClassifier):
    """Holds every batch until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def classify(self, batch):
        self.gate.wait(timeout=60)
        return super().classify(batch)


async def test_feed_waits_when_the_model_falls_behind():
    classifier = GatedClassifier()
    config = EngineConfig(queue_size=2, max_batch_size=1, max_batch_wait_ms=0)
    async with EmotionEngine(classifier, config=config) as engine:
        session = engine.session()
        reader = asyncio.create_task(collect(session))
        labels = ["angry", "happy", "neutral", "sad"] * 2
        feeder = asyncio.create_task(feed_all(session, speech(labels)))
        # One batch held by the model, two queued, one more cut and waiting to be queued: then
        # feed() must stop there. (A bounded poll for that state, not a timing assertion.)
        for _ in range(2000):
            if (engine.stats().batcher.queued, session.stats.utterances_cut) == (2, 4) or feeder.done():
                break
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)  # give it every chance to go further
        assert not feeder.done()
        assert engine.stats().batcher.queued == 2
        assert session.stats.utterances_cut == 4
        classifier.gate.set()
        await feeder
        await session.close()
        events = await reader
        stats = engine.stats().batcher
    assert [e.label for e in of_type(events, "emotion")] == labels
    assert stats.peak_queued == 2 and stats.largest_batch == 1 and stats.items == 8


class PoisonClassifier(LevelClassifier):
    """Fails any batch that holds a 'sad' utterance, as a model might on one malformed clip."""

    def classify(self, batch):
        if any(self.label_of(samples) == "sad" for samples in batch):
            raise ValueError("cannot score this clip")
        return super().classify(batch)


async def test_a_failing_utterance_fails_alone(caplog):
    engine = EmotionEngine(PoisonClassifier(), config=EngineConfig(max_batch_wait_ms=50))
    with caplog.at_level(logging.ERROR, logger="ser_sdk.engine"):
        async with engine:
            sessions = [engine.session(session_id=f"p{i}") for i in range(3)]
            signals = [speech(["angry", "sad", "happy"]), speech(["happy"]), speech(["sad", "neutral"])]
            readers = [asyncio.create_task(collect(s)) for s in sessions]
            await asyncio.gather(*(feed_all(s, x) for s, x in zip(sessions, signals, strict=True)))
            await asyncio.gather(*(s.close() for s in sessions))
            results = [await r for r in readers]
    labels = [[e.label for e in of_type(events, "emotion")] for events in results]
    assert labels == [["angry", "happy"], ["happy"], ["neutral"]]
    assert [len(of_type(events, "utterance")) for events in results] == [3, 1, 2]
    assert [s.stats.classification_failures for s in sessions] == [1, 0, 1]
    assert sum("could not be classified" in r.getMessage() for r in caplog.records) == 2


class WrongCountClassifier(LevelClassifier):
    def classify(self, batch):
        return super().classify(batch)[:-1]


async def test_a_model_that_answers_wrongly_is_a_model_error():
    async with EmotionEngine(WrongCountClassifier()) as engine:
        with pytest.raises(ModelError, match="returned 0 results for a batch of 1"):
            await engine.classify(burst(1.0, 0.5))


# --------------------------------------------------------------------------- plugins through the engine


class Flag(Event):
    type: str = "test.flag"
    label: str = ""


class Flagger(Plugin):
    name = "flagger"

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    async def on_emotion(self, event, state):
        if event.label == "angry":
            await self.context.publish(Flag(session_id=event.session_id, label=event.label))

    async def on_event(self, event):
        self.seen.append(event.type)


async def test_published_events_reach_other_plugins_and_the_iterator():
    flagger, recorder = Flagger(), Recorder()
    async with EmotionEngine(LevelClassifier(), plugins=[flagger, recorder]) as engine:
        events = await run_session(engine, speech(["angry", "sad", "angry"]))
    flags = of_type(events, "test.flag")
    assert len(flags) == 2 and all(isinstance(f, Flag) for f in flags)
    assert events.index(flags[0]) < len(events) - 1  # before session.end
    assert [e.event_id for e in of_type(recorder.events, "test.flag")] == [f.event_id for f in flags]
    assert "test.flag" not in flagger.seen


class Summary(Plugin):
    """Publishes a summary when a session ends."""

    name = "summary"

    async def on_session_end(self, event, state):
        await self.context.publish(Flag(session_id=event.session_id, label=state.mood_label))


async def test_session_end_is_the_last_event_even_when_plugins_publish_late():
    class LateFlagger(Flagger):
        name = "late-flagger"

        async def on_emotion(self, event, state):
            await asyncio.sleep(0.02)  # still busy when the stream ends
            await super().on_emotion(event, state)

    recorder = Recorder()
    plugins = [LateFlagger(), Summary(), recorder]
    async with EmotionEngine(LevelClassifier(), plugins=plugins) as engine:
        events = await run_session(engine, speech(["angry", "angry"]))
    assert [e.type for e in events[-4:]] == ["test.flag", "test.flag", "test.flag", "session.end"]
    assert sorted(e.label for e in of_type(events, "test.flag")) == ["angry", "angry", "angry"]
    assert recorder.events[-1].type == "test.flag"  # the summary reached the other plugins too
    assert len(of_type(recorder.events, "test.flag")) == 3


class Echo(Plugin):
    """Answers every Flag with another: a loop the engine must cut."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name  # type: ignore[misc]

    async def on_event(self, event):
        if isinstance(event, Flag):
            await self.context.publish(Flag(session_id=event.session_id, label=self.name))


async def test_plugins_answering_each_other_cannot_loop_forever():
    config = EngineConfig(max_publish_depth=3)
    plugins = [Flagger(), Echo("echo-a"), Echo("echo-b")]
    async with EmotionEngine(LevelClassifier(), config=config, plugins=plugins) as engine:
        events = await run_session(engine, speech(["angry"]))
        dropped = engine.stats().plugins.publications_dropped
    # depth 1: the flagger's flag; 2: both echoes answer; 3: each answers the other; 4: dropped.
    assert len(of_type(events, "test.flag")) == 1 + 2 + 2
    assert dropped == 2


class Tone(Plugin):
    name = "tone"

    async def adapt_reply(self, advice, state):
        if state.mood.angry > 0.5:
            advice.tone_instructions.append("The user sounds upset: be calm and brief.")
            return advice
        return None


async def test_adapt_reply_sees_the_settled_mood():
    async with EmotionEngine(LevelClassifier(), plugins=[Tone(), Recorder()]) as engine:
        async with engine.session() as session:
            await feed_all(session, speech(["angry", "angry"]))
            advice = await session.adapt_reply("Let me check that.")
        calm = await engine.session().adapt_reply("Hello.")
    assert advice.text == "Let me check that."
    assert advice.tone_instructions == ["The user sounds upset: be calm and brief."]
    assert advice.applied_by == ["tone"]
    assert calm.applied_by == [] and calm.tone_instructions == []


async def test_plugins_are_added_before_start_and_a_failing_start_is_reported():
    class Broken(Plugin):
        name = "broken"

        async def start(self, context):
            raise RuntimeError("no credentials")

    engine = EmotionEngine(LevelClassifier())
    engine.add_plugin(Broken())
    with pytest.raises(PluginError, match="plugin 'broken' failed to start: no credentials"):
        async with engine.session():
            pass
    await engine.close()

    running = EmotionEngine(LevelClassifier())
    async with running:
        with pytest.raises(PluginError, match="before the engine starts"):
            running.add_plugin(Recorder())


# --------------------------------------------------------------------------- one-off clips and construction


async def test_classify_whole_clips(tmp_path: Path):
    engine = EmotionEngine(LevelClassifier())
    path = tmp_path / "clip.wav"
    sf.write(path, burst(1.0, LEVELS["sad"]), SR, subtype="PCM_16")
    assert engine.classify_file(path).label == "sad"
    async with engine:
        assert (await engine.classify(burst(1.0, LEVELS["angry"]))).label == "angry"
        quiet_44k = np.repeat(burst(1.0, LEVELS["neutral"]), 3)
        assert (await engine.classify(quiet_44k, sample_rate=48000)).label == "neutral"
        with pytest.raises(EmptyAudioError):
            await engine.classify(np.zeros(0, dtype=np.float32))


def test_model_argument_is_checked():
    with pytest.raises(ModelError, match="model must be a Classifier"):
        EmotionEngine(model=42)  # type: ignore[arg-type]


async def test_duplicate_session_ids_are_refused():
    async with EmotionEngine(LevelClassifier()) as engine:
        async with engine.session(session_id="same"):
            with pytest.raises(ValueError, match="already open"):
                async with engine.session(session_id="same"):
                    pass
        async with engine.session(session_id="same"):  # free again once closed
            pass


# --------------------------------------------------------------------------- real speech


async def test_real_clips_become_one_verdict_each(cremad_clips):
    clips = [cremad_clips[label][0] for label in ("angry", "neutral", "sad")]
    parts, spans, t = [silence(0.5)], [], 0.5
    for path in clips:
        audio, rate = sf.read(path, dtype="float32")
        assert rate == SR
        parts += [audio, silence(1.0)]
        spans.append((t, t + len(audio) / SR))
        t += len(audio) / SR + 1.0
    recorder = Recorder()
    async with EmotionEngine(LevelClassifier(), plugins=[recorder]) as engine:
        events = await run_session(engine, np.concatenate(parts))
    check_order(events)
    utterances = of_type(events, "utterance")
    assert len(of_type(events, "emotion")) == len(utterances) >= len(clips)
    # Every utterance lies within one clip (give or take the VAD's padding), and every clip has one.
    owner = [
        [i for i, (a, b) in enumerate(spans) if u.start >= a - 0.5 and u.end <= b + 0.5] for u in utterances
    ]
    assert all(len(o) == 1 for o in owner)
    assert {o[0] for o in owner} == set(range(len(clips)))
    assert sum(recorder.utterance_samples) == pytest.approx(
        sum((u.end - u.start) * SR for u in utterances), abs=1
    )


async def test_bundled_model_end_to_end(cremad_clips):
    from ser_sdk.model import EmotionModel, default_model_dir

    if not default_model_dir().is_dir():
        pytest.skip("the bundled model is not in this checkout")
    model = EmotionModel.load()
    clips = [cremad_clips[label][1] for label in ("angry", "happy")]
    signal = np.concatenate(
        [silence(0.5)] + [np.concatenate([sf.read(p, dtype="float32")[0], silence(1.0)]) for p in clips]
    )
    async with EmotionEngine(model) as engine:
        events = await run_session(engine, signal)
        one_off = await engine.classify(sf.read(clips[0], dtype="float32")[0])
    emotions = of_type(events, "emotion")
    assert len(emotions) >= 2
    assert all(isinstance(e, EmotionEvent) and e.model_id == model.model_id for e in emotions)
    assert all(e.label in LABELS and 0.25 <= e.confidence <= 1 for e in emotions)
    assert abs(sum(one_off.as_dict().values()) - 1) < 1e-6
