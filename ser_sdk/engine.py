"""The async engine: live audio in, ordered events out, the model off the event loop.

Data path per session::

    feed(chunk) -> AudioStream -> VoiceSegmenter -> Utterance -> MicroBatcher (shared)
                                               \\-> SpeechStartEvent     |
                                                                        v
    events() <- event buffer <- sequencer (awaits scores in order) <- EmotionEvent
                                      \\-> SessionDispatcher (one lane per plugin)

Queues and what happens when they fill:

* the batcher queue (``queue_size``, shared by all sessions): ``feed()`` waits,
  so a slow model slows the producers instead of growing memory;
* each plugin lane (``dispatch_queue_size``): the sequencer waits, and through
  the session's pending queue so does ``feed()``; a plugin that only hangs is
  cut by its timeout, so this bites only when plugins fall far behind;
* the event buffer behind ``events()`` (``event_queue_size``): a consumer is
  optional, so when nobody reads, the oldest events are dropped with a warning
  (counted in ``Session.stats``) rather than ever blocking audio. Plugins see
  every event regardless.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel

from .audio import SAMPLE_RATE, AudioStream, load_audio, to_mono_16k
from .batcher import BatcherStats, MicroBatcher, classify_checked
from .config import EngineConfig, SdkConfig, load_config, prefix_lines
from .errors import ConfigError, EmptyAudioError, ModelError, PluginError, SerError, SessionClosedError
from .events import (
    EmotionEvent,
    EmotionScores,
    Event,
    ReplyAdvice,
    SessionEndEvent,
    SessionStartEvent,
    SessionState,
    SpeechStartEvent,
    Utterance,
)
from .plugin import Plugin
from .plugins import HostStats, PluginHost, SessionDispatcher, load_plugins
from .vad import SpeechSegment, SpeechStarted, VadConfig, VoiceSegmenter

if TYPE_CHECKING:
    from .model import Classifier

__all__ = [
    "BatcherStats",
    "EmotionEngine",
    "EngineConfig",
    "EngineStats",
    "MicroBatcher",
    "Session",
    "SessionStats",
]

logger = logging.getLogger("ser_sdk.engine")


# --------------------------------------------------------------------------- per-session event buffer


class _EventBuffer:
    """What ``Session.events()`` reads: bounded, dropping the oldest when nobody keeps up."""

    def __init__(self, maxsize: int, session_id: str) -> None:
        self._items: deque[Event] = deque()
        self._maxsize = maxsize
        self._session_id = session_id
        self._ready = asyncio.Event()
        self._closed = False
        self.dropped = 0

    def put(self, event: Event) -> None:
        if self._closed:
            logger.debug(
                "session %r has ended; %r not added to its event iterator", self._session_id, event.type
            )
            return
        if len(self._items) >= self._maxsize:
            self._items.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                logger.warning(
                    "session %r: events() is not being read; dropped %d oldest event(s) so far"
                    " (raise engine.event_queue_size or read session.events())",
                    self._session_id,
                    self.dropped,
                )
        self._items.append(event)
        self._ready.set()

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    async def iterate(self) -> AsyncIterator[Event]:
        while True:
            if self._items:
                yield self._items.popleft()
                continue
            if self._closed:
                return
            self._ready.clear()
            await self._ready.wait()


# --------------------------------------------------------------------------- session


class SessionStats(BaseModel):
    utterances_cut: int = 0
    utterances_classified: int = 0
    classification_failures: int = 0
    events_dropped: int = 0


_END = object()


class Session:
    """One live audio stream. Create with ``EmotionEngine.session()``.

    ``feed`` only runs the (cheap) audio conversion and VAD and queues work;
    the model and the plugins run elsewhere, so ``feed`` waits only when the
    engine is saturated (see the module docstring). Use as ``async with``, or
    call ``start()`` / ``close()``; ``feed`` also starts it.
    """

    def __init__(
        self,
        engine: EmotionEngine,
        *,
        sample_rate: int = SAMPLE_RATE,
        channels: int = 1,
        session_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.engine = engine
        self.session_id = session_id if session_id is not None else uuid.uuid4().hex
        if not isinstance(self.session_id, str) or not self.session_id:
            raise ValueError("session_id must be a non-empty string")
        self._stream = AudioStream(sample_rate, channels)
        self._segmenter = VoiceSegmenter(engine.vad_config)
        self.state = SessionState(
            session_id=self.session_id, sample_rate=self._stream.sample_rate, metadata=dict(metadata or {})
        )
        self._stats = SessionStats()
        self._events = _EventBuffer(engine.config.event_queue_size, self.session_id)
        # Work waiting for the sequencer; bounded like a plugin lane, whose backpressure it relays.
        self._pending: asyncio.Queue[Any] = asyncio.Queue(maxsize=engine.config.dispatch_queue_size)
        self._lock = asyncio.Lock()
        self._start_lock = asyncio.Lock()
        self._dispatcher: SessionDispatcher | None = None
        self._sequencer: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False
        self._close_task: asyncio.Future[None] | None = None

    # ----------------------------------------------------------------- public API

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def stats(self) -> SessionStats:
        return self._stats.model_copy(update={"events_dropped": self._events.dropped})

    def snapshot(self) -> SessionState:
        """A copy of the state that later updates will not change (what plugins receive)."""
        return self.state.model_copy(
            update={"recent": list(self.state.recent), "metadata": dict(self.state.metadata)}
        )

    async def start(self) -> None:
        """Start the engine if needed and announce the session (``session.start``)."""
        async with self._start_lock:
            if self._started:
                return
            if self._closed:
                raise SessionClosedError(f"session {self.session_id!r} is closed")
            await self.engine.start()
            self.engine._register(self)
            try:
                self._dispatcher = self.engine.host.open_session(
                    self.session_id, sink=self._events.put, state=self.snapshot
                )
            except BaseException:
                self.engine._forget(self)
                raise
            self._sequencer = asyncio.create_task(self._sequence(), name=f"ser-sdk-session-{self.session_id}")
            self._started = True
            await self._emit(
                SessionStartEvent(session_id=self.session_id, sample_rate=self.state.sample_rate)
            )

    async def feed(self, chunk: bytes | bytearray | memoryview | np.ndarray) -> None:
        """Add audio: PCM16 little-endian bytes or a numpy array (float in [-1, 1] or int16).

        A bad chunk raises its ``AudioError`` and changes nothing, so the
        session goes on with the next good chunk. Raises ``SessionClosedError``
        after ``close()``.
        """
        if self._closed:
            raise SessionClosedError(f"session {self.session_id!r} is closed; open a new one")
        if not self._started:
            await self.start()
        async with self._lock:
            if self._closed:
                raise SessionClosedError(f"session {self.session_id!r} is closed; open a new one")
            samples = self._stream.push(chunk)
            await self._segment(samples)

    def events(self) -> AsyncIterator[Event]:
        """Every event of the session in order, ending after ``session.end``.

        It may be started before or after feeding; it is meant for one reader.
        Events pile up to ``event_queue_size`` when unread, then the oldest go.
        """
        return self._events.iterate()

    async def settle(self) -> None:
        """Wait until every utterance the VAD has cut so far is scored and in ``state``.

        Speech the VAD still holds open (no trailing silence yet) is not included.
        """
        if self._started:
            await self._pending.join()

    async def adapt_reply(self, reply: str | ReplyAdvice, *, settle: bool = True) -> ReplyAdvice:
        """Run the assistant's next reply through the plugins' ``adapt_reply`` chain.

        With ``settle`` it first waits for utterances already cut to be scored,
        so the advice reflects everything the user has finished saying.
        """
        if not self._started and not self._closed:
            await self.start()
        if settle:
            await self.settle()
        advice = ReplyAdvice(text=reply) if isinstance(reply, str) else reply
        return await self.engine.host.adapt_reply(advice, self.snapshot())

    async def close(self) -> None:
        """End the stream gracefully: flush the VAD, score the last utterance, deliver, emit ``session.end``.

        Safe to call more than once and from several tasks.
        """
        if self._close_task is None:
            self._closed = True
            self._close_task = asyncio.ensure_future(self._close())
        await asyncio.shield(self._close_task)

    async def __aenter__(self) -> Session:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # ----------------------------------------------------------------- internals

    async def _segment(self, samples: np.ndarray) -> None:
        self.state.audio_seconds = self._stream.frames_in / self._stream.sample_rate
        if samples.size:
            for item in self._segmenter.push(samples):
                await self._route(item)

    async def _route(self, item: SpeechStarted | SpeechSegment) -> None:
        if isinstance(item, SpeechStarted):
            await self._pending.put(SpeechStartEvent(session_id=self.session_id, start=item.start))
            return
        utterance = Utterance(
            session_id=self.session_id,
            start=item.start,
            end=item.end,
            samples=item.samples,
            truncated=item.truncated,
        )
        self._stats.utterances_cut += 1
        future = await self.engine._submit(utterance.samples)
        await self._pending.put((utterance, future))

    async def _emit(self, event: Event, utterance: Utterance | None = None) -> None:
        self._events.put(event)
        assert self._dispatcher is not None
        state = self.snapshot() if self.engine.host.plugins else self.state
        await self._dispatcher.dispatch(event, state, utterance)

    async def _sequence(self) -> None:
        """Turn queued work into events, in the order the audio produced it."""
        while True:
            item = await self._pending.get()
            try:
                if item is _END:
                    return
                if isinstance(item, Event):
                    await self._emit(item)
                else:
                    await self._score(*item)
            except Exception:
                logger.exception("session %r: failed to deliver an event", self.session_id)
            finally:
                self._pending.task_done()

    async def _score(self, utterance: Utterance, future: asyncio.Future[EmotionScores]) -> None:
        await self._emit(utterance.to_event(), utterance)
        try:
            scores = await future
        except Exception as exc:
            self._stats.classification_failures += 1
            logger.error(
                "session %r: the utterance at %.2f-%.2f s could not be classified: %s",
                self.session_id,
                utterance.start,
                utterance.end,
                exc,
                exc_info=exc,
            )
            return
        event = EmotionEvent.from_scores(
            scores,
            session_id=self.session_id,
            start=utterance.start,
            end=utterance.end,
            model_id=self.engine.model_id or "",
        )
        self._update_state(event)
        self._stats.utterances_classified += 1
        await self._emit(event)

    def _update_state(self, event: EmotionEvent) -> None:
        """Fold a verdict into the running mood: an EMA whose step grows with the model's confidence."""
        weight = self.engine.config.mood_smoothing * event.confidence
        mood = (1.0 - weight) * self.state.mood.as_array() + weight * event.scores.as_array()
        self.state.mood = EmotionScores.from_probs(mood)
        self.state.utterances += 1
        self.state.last_emotion = event
        keep = self.engine.config.recent_events
        self.state.recent = [*self.state.recent, event][-keep:] if keep else []

    async def _close(self) -> None:
        # A start() in progress finishes first, so what it opened is closed here rather than leaked.
        async with self._start_lock:
            started = self._started
        if not started:
            self._events.close()
            return
        end: SessionEndEvent | None = None
        try:
            async with self._lock:  # let a feed() in progress finish first
                try:
                    tail = self._stream.flush(drop_partial=True)
                except SerError as exc:
                    logger.warning("session %r: audio tail dropped at close: %s", self.session_id, exc)
                    tail = np.zeros(0, dtype=np.float32)
                await self._segment(tail)
                for item in self._segmenter.flush():
                    await self._route(item)
        finally:
            try:
                await self._pending.put(_END)
                assert self._sequencer is not None
                await self._sequencer
                end = SessionEndEvent(
                    session_id=self.session_id,
                    duration=self.state.audio_seconds,
                    utterances=self.state.utterances,
                )
                assert self._dispatcher is not None
                await self._dispatcher.dispatch(end, self.snapshot())
            finally:
                assert self._dispatcher is not None
                # Drain the plugins first, so what they publish on the way out
                # (on_session_end included) still precedes session.end in events().
                await self._dispatcher.close()
                if end is not None:
                    self._events.put(end)
                self._events.close()
                self.engine._forget(self)


# --------------------------------------------------------------------------- engine


class EngineStats(BaseModel):
    open_sessions: int
    model_id: str | None
    batcher: BatcherStats | None
    plugins: HostStats


def _load_model(path: str | os.PathLike[str] | None) -> Classifier:
    from .model import EmotionModel

    return EmotionModel.load(path)


class EmotionEngine:
    """Speech emotion recognition for many concurrent audio streams.

    ``model`` is a ``Classifier``, a model directory, or ``None`` for the
    bundled default; a directory is loaded (in the worker thread) when the
    engine starts. Sessions start the engine lazily; ``close()`` ends open
    sessions gracefully, drains the model queue and stops the plugins.
    """

    def __init__(
        self,
        model: Classifier | str | Path | None = None,
        *,
        vad: VadConfig | None = None,
        config: EngineConfig | None = None,
        plugins: Iterable[Plugin] = (),
    ) -> None:
        self.config = config if config is not None else EngineConfig()
        self.vad_config = vad if vad is not None else VadConfig()
        self._classifier: Classifier | None = None
        self._model_path: str | os.PathLike[str] | None = None
        if model is None or isinstance(model, (str, os.PathLike)):
            self._model_path = model
        elif callable(getattr(model, "classify", None)) and isinstance(getattr(model, "model_id", None), str):
            self._classifier = model
        else:
            raise ModelError(
                f"model must be a Classifier (with model_id and classify), a model directory or None,"
                f" not {type(model).__name__}"
            )
        self.host = PluginHost(
            plugins,
            timeout=self.config.plugin_timeout_s,
            lifecycle_timeout=self.config.plugin_lifecycle_timeout_s,
            max_publish_depth=self.config.max_publish_depth,
            lane_size=self.config.dispatch_queue_size,
        )
        # One thread owns the model: torch inference is not re-entrant-friendly, and
        # a single worker keeps one batch at a time on the CPU cores torch itself uses.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ser-sdk-model")
        self._batcher: MicroBatcher | None = None
        self._sessions: dict[str, Session] = {}
        self._start_lock = asyncio.Lock()
        self._running = False
        self._closed = False

    @classmethod
    def from_config(
        cls, config: SdkConfig | str | os.PathLike[str], *, source: str | None = None
    ) -> EmotionEngine:
        """Build an engine from an ``SdkConfig`` or a YAML file, loading plugins by name.

        Plugin errors name ``source`` (by default the file read, if any) on each line.
        """
        if not isinstance(config, SdkConfig):
            source = source or str(config)
            config = load_config(config)
        try:
            plugins = load_plugins(config.plugins, config_dir=config.config_dir)
        except (ConfigError, PluginError) as exc:
            if source is None:
                raise
            raise type(exc)(prefix_lines(source, str(exc))) from exc
        return cls(config.model, vad=config.vad, config=config.engine, plugins=plugins)

    # ----------------------------------------------------------------- properties

    @property
    def model_id(self) -> str | None:
        """The loaded model's id (``None`` until a model directory has been loaded)."""
        return self._classifier.model_id if self._classifier is not None else None

    @property
    def classifier(self) -> Classifier | None:
        return self._classifier

    @property
    def plugins(self) -> tuple[Plugin, ...]:
        return self.host.plugins

    @property
    def sessions(self) -> tuple[Session, ...]:
        """The sessions now open."""
        return tuple(self._sessions.values())

    def stats(self) -> EngineStats:
        return EngineStats(
            open_sessions=len(self._sessions),
            model_id=self.model_id,
            batcher=self._batcher.stats() if self._batcher is not None else None,
            plugins=self.host.stats(),
        )

    # ----------------------------------------------------------------- lifecycle

    def add_plugin(self, plugin: Plugin) -> None:
        """Register a plugin; only before the engine starts (its first session, or ``start()``)."""
        self.host.add(plugin)

    async def start(self) -> None:
        """Load the model, start the batcher and the plugins. Idempotent."""
        async with self._start_lock:
            if self._running:
                return
            if self._closed:
                raise SessionClosedError("this engine is closed; create a new EmotionEngine")
            if self._classifier is None:
                loop = asyncio.get_running_loop()
                self._classifier = await loop.run_in_executor(self._executor, _load_model, self._model_path)
            batcher = MicroBatcher(
                self._classifier,
                executor=self._executor,
                max_batch_size=self.config.max_batch_size,
                max_wait_s=self.config.max_batch_wait_ms / 1000.0,
                queue_size=self.config.queue_size,
            )
            batcher.start()
            try:
                await self.host.start()
            except BaseException:
                await batcher.close()
                raise
            self._batcher = batcher
            self._running = True

    async def close(self) -> None:
        """Close open sessions (gracefully), drain the model queue, stop the plugins."""
        if self._closed:
            return
        self._closed = True
        results = await asyncio.gather(
            *(session.close() for session in list(self._sessions.values())), return_exceptions=True
        )
        for result in results:
            if isinstance(result, Exception):
                logger.error("a session failed to close cleanly: %s", result, exc_info=result)
        # A start() in progress finishes first, so the batcher and plugins it starts are stopped here.
        async with self._start_lock:
            if self._batcher is not None:
                await self._batcher.close()
            if self._running:
                await self.host.stop()
                self._running = False
        self._executor.shutdown(wait=False)

    async def __aenter__(self) -> EmotionEngine:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # ----------------------------------------------------------------- sessions

    def session(
        self,
        sample_rate: int = SAMPLE_RATE,
        channels: int = 1,
        session_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Session:
        """A new session for one stream of ``sample_rate`` Hz, ``channels``-channel audio."""
        if self._closed:
            raise SessionClosedError("this engine is closed; create a new EmotionEngine")
        return Session(
            self, sample_rate=sample_rate, channels=channels, session_id=session_id, metadata=metadata
        )

    def _register(self, session: Session) -> None:
        if self._closed:
            raise SessionClosedError("this engine is closed; create a new EmotionEngine")
        if session.session_id in self._sessions:
            raise ValueError(f"a session with id {session.session_id!r} is already open")
        self._sessions[session.session_id] = session

    def _forget(self, session: Session) -> None:
        if self._sessions.get(session.session_id) is session:
            del self._sessions[session.session_id]

    async def _submit(self, samples: np.ndarray) -> asyncio.Future[EmotionScores]:
        if self._batcher is None:
            raise SessionClosedError("the engine is not running")
        return await self._batcher.submit(samples)

    # ----------------------------------------------------------------- one-off clips

    async def classify(self, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> EmotionScores:
        """Scores for one whole clip (no VAD), batched with the live traffic."""
        audio = to_mono_16k(samples, sample_rate)
        if audio.size == 0:
            raise EmptyAudioError("cannot classify an empty clip")
        await self.start()
        return await (await self._submit(audio))

    def classify_file(self, path: str | os.PathLike[str]) -> EmotionScores:
        """Scores for one whole audio file (no VAD), for scripts.

        Blocking: it runs the model in the engine's worker thread and waits.
        From async code use ``await engine.classify(load_audio(path))``.
        """
        if self._closed:
            raise SessionClosedError("this engine is closed; create a new EmotionEngine")
        samples = load_audio(path)
        if self._classifier is None:
            self._classifier = self._executor.submit(_load_model, self._model_path).result()
        return self._executor.submit(classify_checked, self._classifier, [samples]).result()[0]
