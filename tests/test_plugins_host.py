"""Plugin discovery, configuration and the host's isolation of failing plugins."""

from __future__ import annotations

import asyncio
import logging
import sys
import textwrap
from pathlib import Path

import pytest

from ser_sdk.errors import ConfigError, PluginError
from ser_sdk.events import (
    EmotionEvent,
    EmotionScores,
    Event,
    ReplyAdvice,
    SessionStartEvent,
    SessionState,
    SpeechStartEvent,
)
from ser_sdk.plugin import Plugin, PluginConfig
from ser_sdk.plugins import PluginHost, discover_plugins, load_plugins
from ser_sdk.testing import RecordingContext

# --------------------------------------------------------------------------- helpers


class Recorder(Plugin):
    name = "recorder"

    def __init__(self, name: str = "recorder") -> None:
        super().__init__()
        self.name = name  # type: ignore[misc]
        self.calls: list[tuple[str, str]] = []
        self.stopped = False

    async def on_session_start(self, event, state):
        self.calls.append(("on_session_start", event.type))

    async def on_speech_start(self, event):
        self.calls.append(("on_speech_start", event.type))

    async def on_emotion(self, event, state):
        self.calls.append(("on_emotion", event.type))

    async def on_event(self, event):
        self.calls.append(("on_event", event.type))

    async def stop(self):
        self.stopped = True


class Raiser(Plugin):
    name = "raiser"

    async def on_emotion(self, event, state):
        raise RuntimeError("boom in on_emotion")

    async def on_event(self, event):
        raise ValueError("boom in on_event")


class Hanger(Plugin):
    name = "hanger"
    timeout = 0.05

    async def on_emotion(self, event, state):
        await asyncio.Event().wait()


class Flag(Event):
    type: str = "test.flag"
    depth: int = 0


def state(session_id: str = "s1") -> SessionState:
    return SessionState(session_id=session_id, sample_rate=16000)


def emotion(session_id: str = "s1", label: str = "angry") -> EmotionEvent:
    probs = {"angry": 0.1, "happy": 0.1, "sad": 0.1, "neutral": 0.1}
    probs[label] = 0.7
    scores = EmotionScores(**probs)
    return EmotionEvent(
        session_id=session_id,
        start=0.0,
        end=1.0,
        label=label,
        confidence=0.7,
        scores=scores,
        model_id="test",
    )


# --------------------------------------------------------------------------- discovery


class Options(PluginConfig):
    threshold: float = 0.5
    window: int = 3


def write_distribution(root: Path, dist: str, module: str, entry_points: dict[str, str]) -> None:
    """A real (unpacked) distribution on sys.path, as pip would leave it, with its entry points."""
    (root / f"{module}.py").write_text(
        textwrap.dedent(
            """
            from ser_sdk.plugin import Plugin, PluginConfig

            class Options(PluginConfig):
                threshold: float = 0.5
                window: int = 3

            class GoodPlugin(Plugin):
                name = "good"
                Config = Options

            class NotAPlugin:
                pass
            """
        )
    )
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[ser_sdk.test_plugins]\n{lines}\n")


@pytest.fixture
def test_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    module = f"ser_test_plugin_{tmp_path.name.replace('-', '_')}"
    write_distribution(
        tmp_path,
        "ser-test-plugin",
        module,
        {
            "good": f"{module}:GoodPlugin",
            "missing": "no_such_module_for_ser_tests:Plugin",
            "wrong": f"{module}:NotAPlugin",
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield module
    sys.modules.pop(module, None)


def test_discovery_loads_good_entry_points_and_logs_broken_ones(test_distribution, caplog):
    with caplog.at_level(logging.WARNING, logger="ser_sdk.plugins"):
        found = discover_plugins("ser_sdk.test_plugins")
    assert list(found) == ["good"]
    assert issubclass(found["good"], Plugin)
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert "'missing'" in messages and "failed to load" in messages
    assert "'wrong'" in messages and "not a ser_sdk.plugin.Plugin subclass" in messages


def test_discovery_of_an_empty_group_is_empty():
    assert discover_plugins("ser_sdk.no_such_group_anywhere") == {}


def test_load_plugins_validates_options_and_names_the_field(test_distribution):
    available = discover_plugins("ser_sdk.test_plugins")
    (plugin,) = load_plugins({"good": {"threshold": 0.8}}, available)
    assert plugin.config.threshold == 0.8 and plugin.config.window == 3
    (default,) = load_plugins({"good": None}, available)
    assert default.config.threshold == 0.5

    with pytest.raises(ConfigError) as info:
        load_plugins({"good": {"threshold": "high", "windw": 2}}, available)
    lines = str(info.value).splitlines()
    assert any(line.startswith("plugins.good.threshold: Input should be a valid number") for line in lines)
    assert "plugins.good.windw: Extra inputs are not permitted" in lines

    with pytest.raises(ConfigError, match=r"plugins\.good: expected a mapping"):
        load_plugins({"good": [1, 2]}, available)


def test_load_plugins_unknown_name_lists_the_available_ones(test_distribution):
    available = discover_plugins("ser_sdk.test_plugins")
    with pytest.raises(PluginError, match=r"unknown plugin 'modration' \(available: good\)"):
        load_plugins({"modration": {}}, available)
    assert load_plugins({}, available) == []


# --------------------------------------------------------------------------- isolation


async def test_raising_and_hanging_plugins_are_isolated_logged_and_counted(caplog):
    recorder = Recorder()
    host = PluginHost([Raiser(), Hanger(), recorder], timeout=1.0)
    await host.start()
    with caplog.at_level(logging.WARNING, logger="ser_sdk.plugins"):
        for _ in range(3):
            await host.dispatch(emotion(), state())
    await host.stop()

    assert recorder.calls == [("on_emotion", "emotion"), ("on_event", "emotion")] * 3
    assert recorder.stopped
    stats = host.stats().plugins
    assert stats["raiser"].failures == 6 and stats["raiser"].timeouts == 0
    assert stats["raiser"].last_error == "on_event: ValueError: boom in on_event"
    assert stats["hanger"].failures == 3 and stats["hanger"].timeouts == 3
    assert stats["recorder"].failures == 0 and stats["recorder"].calls == 6
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and all("'raiser'" in r.getMessage() for r in errors)
    assert errors[0].exc_info is not None
    timeouts = [r for r in caplog.records if "timed out" in r.getMessage()]
    assert len(timeouts) == 3 and all("'hanger'" in r.getMessage() for r in timeouts)


async def test_typed_hook_then_on_event_per_event_type():
    recorder = Recorder()
    host = PluginHost([recorder])
    await host.start()
    await host.dispatch(SessionStartEvent(session_id="s1", sample_rate=16000), state())
    await host.dispatch(SpeechStartEvent(session_id="s1", start=0.5))
    await host.dispatch(Flag(session_id="s1"))
    await host.event(Flag(session_id="s1"), exclude=recorder)
    assert recorder.calls == [
        ("on_session_start", "session.start"),
        ("on_event", "session.start"),
        ("on_speech_start", "speech.start"),
        ("on_event", "speech.start"),
        ("on_event", "test.flag"),
    ]


async def test_start_failure_raises_and_stops_the_plugins_already_started():
    class Broken(Plugin):
        name = "broken"

        async def start(self, context):
            raise OSError("outbox is read-only")

    first = Recorder("first")
    host = PluginHost([first, Broken()])
    with pytest.raises(PluginError, match="plugin 'broken' failed to start: outbox is read-only"):
        await host.start()
    assert first.stopped and not host.started


async def test_add_rules():
    host = PluginHost([Recorder()])
    with pytest.raises(PluginError, match="already registered"):
        host.add(Recorder())
    with pytest.raises(PluginError, match=r"not a ser_sdk\.plugin\.Plugin"):
        host.add(object())  # type: ignore[arg-type]
    await host.start()
    with pytest.raises(PluginError, match="before the engine starts"):
        host.add(Recorder("late"))
    await host.stop()


async def test_a_plugin_that_fails_to_stop_does_not_stop_the_others(caplog):
    class BadStop(Plugin):
        name = "bad-stop"

        async def stop(self):
            raise RuntimeError("cannot flush")

    recorder = Recorder()
    host = PluginHost([recorder, BadStop()])
    await host.start()
    with caplog.at_level(logging.ERROR, logger="ser_sdk.plugins"):
        await host.stop()
    assert recorder.stopped
    assert host.stats().plugins["bad-stop"].last_error == "stop: RuntimeError: cannot flush"


# --------------------------------------------------------------------------- reply chain


class Prefix(Plugin):
    def __init__(self, name: str, prefix: str) -> None:
        super().__init__()
        self.name = name  # type: ignore[misc]
        self.prefix = prefix

    async def adapt_reply(self, advice, state):
        advice.text = self.prefix + advice.text
        advice.tone_instructions.append(f"from {self.name}")
        return advice


class Identity(Plugin):
    name = "identity"

    async def adapt_reply(self, advice, state):
        return advice


class MutateThenRaise(Plugin):
    name = "mutate-then-raise"

    async def adapt_reply(self, advice, state):
        advice.text = "CORRUPTED"
        raise RuntimeError("half-way")


class SlowReply(Plugin):
    name = "slow-reply"
    timeout = 0.05

    async def adapt_reply(self, advice, state):
        advice.text = "TOO LATE"
        await asyncio.sleep(10)
        return advice


class WrongType(Plugin):
    name = "wrong-type"

    async def adapt_reply(self, advice, state):
        return "a string"


async def test_adapt_reply_runs_in_order_and_records_who_changed_it():
    host = PluginHost(
        [
            Prefix("a", "A:"),
            Identity(),
            MutateThenRaise(),
            SlowReply(),
            WrongType(),
            Prefix("b", "B:"),
        ]
    )
    await host.start()
    original = ReplyAdvice(text="hello")
    advice = await host.adapt_reply(original, state())
    await host.stop()

    assert advice.text == "B:A:hello"
    assert advice.tone_instructions == ["from a", "from b"]
    assert advice.applied_by == ["a", "b"]
    assert original.text == "hello" and original.applied_by == []
    stats = host.stats().plugins
    assert stats["mutate-then-raise"].failures == 1
    assert stats["slow-reply"].timeouts == 1
    assert stats["wrong-type"].last_error.startswith("adapt_reply: TypeError: returned str")
    assert stats["identity"].failures == 0


async def test_adapt_reply_without_plugins_returns_the_advice_unchanged():
    host = PluginHost()
    advice = await host.adapt_reply(ReplyAdvice(text="hi"), state())
    assert advice == ReplyAdvice(text="hi")


# --------------------------------------------------------------------------- publishing


class Publisher(Plugin):
    """Publishes a Flag for every emotion."""

    name = "publisher"

    async def on_emotion(self, event, state):
        await self.context.publish(Flag(session_id=event.session_id))

    async def on_event(self, event):
        self.seen = [*getattr(self, "seen", []), event.type]


class PingPong(Plugin):
    """Answers every Flag with a deeper Flag: without a depth limit this would never end."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name  # type: ignore[misc]
        self.seen: list[int] = []

    async def on_event(self, event):
        if isinstance(event, Flag):
            self.seen.append(event.depth)
            await self.context.publish(Flag(session_id=event.session_id, depth=event.depth + 1))


async def test_published_events_reach_other_plugins_and_the_session_sink_not_the_publisher():
    publisher, recorder = Publisher(), Recorder()
    host = PluginHost([publisher, recorder])
    await host.start()
    sink: list[Event] = []
    dispatcher = host.open_session("s1", sink=sink.append, state=state)
    await dispatcher.dispatch(emotion(), state())
    await dispatcher.close()
    await host.stop()

    assert [e.type for e in sink] == ["test.flag"]
    assert recorder.calls == [("on_emotion", "emotion"), ("on_event", "emotion"), ("on_event", "test.flag")]
    assert publisher.seen == ["emotion"]
    assert host.session_state("s1") is None


async def test_publish_loops_are_cut_at_the_depth_limit(caplog):
    ping, pong = PingPong("ping"), PingPong("pong")
    host = PluginHost([ping, pong], max_publish_depth=4)
    await host.start()
    sink: list[Event] = []
    dispatcher = host.open_session("s1", sink=sink.append, state=state)
    with caplog.at_level(logging.WARNING, logger="ser_sdk.plugins"):
        await ping.context.publish(Flag(session_id="s1", depth=1))
        await dispatcher.close()
    await host.stop()

    assert [e.depth for e in sink] == [1, 2, 3, 4]
    assert pong.seen == [1, 3] and ping.seen == [2, 4]
    assert host.stats().publications_dropped == 1
    assert any("publish depth 5 exceeds 4" in r.getMessage() for r in caplog.records)


async def test_publishing_for_a_session_that_is_not_open_still_reaches_other_plugins():
    publisher, recorder = Publisher(), Recorder()
    host = PluginHost([publisher, recorder])
    await host.start()
    await publisher.context.publish(Flag(session_id="gone"))
    with pytest.raises(PluginError, match=r"only publish ser_sdk\.events\.Event"):
        await publisher.context.publish({"type": "dict"})  # type: ignore[arg-type]
    await host.stop()
    assert recorder.calls == [("on_event", "test.flag")]


async def test_a_slow_plugin_only_delays_its_own_lane():
    release = asyncio.Event()

    class Slow(Plugin):
        name = "slow"
        timeout = 30.0

        async def on_event(self, event):
            await release.wait()

    recorder = Recorder()
    host = PluginHost([Slow(), recorder])
    await host.start()
    dispatcher = host.open_session("s1", sink=lambda event: None, state=state)
    for _ in range(5):
        await dispatcher.dispatch(SpeechStartEvent(session_id="s1", start=0.0))
    # The recorder's lane drains while the slow plugin still holds its first event.
    while len(recorder.calls) < 10:
        await asyncio.sleep(0.01)
    assert not release.is_set()
    release.set()
    await dispatcher.close()
    await host.stop()
    assert recorder.calls == [("on_speech_start", "speech.start"), ("on_event", "speech.start")] * 5


async def test_context_gives_a_named_logger_and_session_state():
    recorder = Recorder()
    host = PluginHost([recorder])
    await host.start()
    live = state("s9")
    dispatcher = host.open_session("s9", sink=lambda event: None, state=lambda: live)
    assert recorder.context.logger.name == "ser_sdk.plugins.recorder"
    assert recorder.context.session_state("s9") is live
    assert recorder.context.session_state("other") is None
    with pytest.raises(ValueError, match="already open"):
        host.open_session("s9", sink=lambda event: None, state=lambda: live)
    await dispatcher.close()
    assert recorder.context.session_state("s9") is None
    await host.stop()


async def test_a_hook_raising_cancelled_error_is_isolated_and_its_lane_goes_on():
    """A hook that awaited something cancelled must not end its lane (the session would stall)."""

    class Cancelled(Plugin):
        name = "cancelled"

        def __init__(self) -> None:
            super().__init__()
            self.seen = 0

        async def on_event(self, event):
            self.seen += 1
            raise asyncio.CancelledError

    cancelled, recorder = Cancelled(), Recorder()
    host = PluginHost([cancelled, recorder], lane_size=1)
    await host.start()
    dispatcher = host.open_session("s1", sink=lambda event: None, state=state)

    async def feed_and_close() -> None:
        for _ in range(3):  # more than the lane holds: a dead lane would block here
            await dispatcher.dispatch(SpeechStartEvent(session_id="s1", start=0.0))
        await dispatcher.close()

    await asyncio.wait_for(feed_and_close(), 10.0)  # a stalled lane fails instead of hanging
    await host.stop()
    assert cancelled.seen == 3
    assert recorder.calls == [("on_speech_start", "speech.start"), ("on_event", "speech.start")] * 3
    stats = host.stats().plugins["cancelled"]
    assert stats.failures == 3 and stats.last_error == "on_event: CancelledError: "


async def test_recording_context_drives_a_plugin_without_an_engine():
    publisher = Publisher()
    context = RecordingContext()
    await publisher.start(context)
    await publisher.on_emotion(emotion("s1"), state("s1"))
    assert [(e.type, e.session_id) for e in context.published] == [("test.flag", "s1")]
    assert context.session_state("s1") is None
    context.states["s1"] = live = state("s1")
    assert context.session_state("s1") is live
