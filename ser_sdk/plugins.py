"""Finding, configuring and running plugins.

``discover_plugins`` and ``load_plugins`` turn entry points plus a config mapping
into plugin instances. ``PluginHost`` calls their hooks, each call under a
timeout and isolated: a plugin that raises or hangs is logged, counted and
skipped, and neither the stream nor the other plugins notice.

Each open session gets a ``SessionDispatcher`` with one ordered lane (a bounded
queue and a task) per plugin. A plugin therefore sees one session's events in
order, and a slow plugin delays only its own lane, never the audio path or the
other plugins. When a lane is full the engine waits (backpressure) rather than
buffering without bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from .config import format_validation_error
from .errors import ConfigError, PluginError
from .events import (
    EmotionEvent,
    Event,
    ReplyAdvice,
    SessionEndEvent,
    SessionStartEvent,
    SessionState,
    SpeechStartEvent,
    Utterance,
    UtteranceEvent,
)
from .plugin import CONFIG_DIR_KEY, Plugin

logger = logging.getLogger("ser_sdk.plugins")

ENTRY_POINT_GROUP = "ser_sdk.plugins"
DEFAULT_TIMEOUT_S = 2.0
DEFAULT_LIFECYCLE_TIMEOUT_S = 30.0
DEFAULT_MAX_PUBLISH_DEPTH = 4
DEFAULT_LANE_SIZE = 256

# How many publications deep the hook now running sits: 0 for the engine's own
# events, n + 1 for an event a plugin published while handling a depth-n event.
# Lane workers set it per item; tasks a hook spawns inherit it.
_PUBLISH_DEPTH: ContextVar[int] = ContextVar("ser_sdk_publish_depth", default=0)


# --------------------------------------------------------------------------- discovery


def discover_plugins(group: str = ENTRY_POINT_GROUP) -> dict[str, type[Plugin]]:
    """Plugin classes registered under the entry-point ``group``, by entry-point name.

    One broken distribution must not take the others down, so an entry point
    that fails to import or is not a ``Plugin`` subclass is logged and skipped.
    """
    found: dict[str, type[Plugin]] = {}
    for ep in entry_points(group=group):
        cls = _load_entry_point(ep)
        if cls is None:
            continue
        if ep.name in found and found[ep.name] is not cls:
            logger.warning("plugin name %r is registered twice (%s); keeping the first", ep.name, ep.value)
            continue
        found[ep.name] = cls
    return found


def _load_entry_point(ep: EntryPoint) -> type[Plugin] | None:
    try:
        obj = ep.load()
    except Exception as exc:
        logger.warning("plugin entry point %r (%s) failed to load: %s", ep.name, ep.value, exc, exc_info=exc)
        return None
    if not (isinstance(obj, type) and issubclass(obj, Plugin)):
        logger.warning(
            "plugin entry point %r (%s) is not a ser_sdk.plugin.Plugin subclass", ep.name, ep.value
        )
        return None
    return obj


def load_plugins(
    configs: Mapping[str, Mapping[str, Any] | None],
    available: Mapping[str, type[Plugin]] | None = None,
    *,
    config_dir: Path | None = None,
) -> list[Plugin]:
    """Instantiate the named plugins with their options, in the mapping's order.

    ``available`` defaults to ``discover_plugins()``. An unknown name raises
    ``PluginError`` listing the names that exist; invalid options raise
    ``ConfigError`` naming each field as ``plugins.<name>.<field>: <problem>``.
    Options are validated with ``config_dir`` in the pydantic validation
    context, so a plugin's path options can resolve against the config file's
    folder (see ``ser_sdk.plugin.resolve_config_path``).
    """
    if not configs:
        return []
    if available is None:
        available = discover_plugins()
    plugins: list[Plugin] = []
    for name, options in configs.items():
        cls = available.get(name)
        if cls is None:
            names = ", ".join(sorted(available)) or "none installed"
            raise PluginError(f"unknown plugin {name!r} (available: {names})")
        if options is not None and not isinstance(options, Mapping):
            raise ConfigError(f"plugins.{name}: expected a mapping of options, got {type(options).__name__}")
        try:
            validated = cls.Config.model_validate(dict(options or {}), context={CONFIG_DIR_KEY: config_dir})
            plugins.append(cls(validated))
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, prefix=("plugins", name))) from exc
        except Exception as exc:
            raise PluginError(f"plugin {name!r} could not be created: {exc}") from exc
    return plugins


# --------------------------------------------------------------------------- stats


class PluginStats(BaseModel):
    """How one plugin has behaved; ``failures`` counts exceptions and timeouts alike."""

    name: str
    calls: int = 0
    failures: int = 0
    timeouts: int = 0
    last_error: str | None = None


class HostStats(BaseModel):
    plugins: dict[str, PluginStats] = Field(default_factory=dict)
    publications_dropped: int = Field(0, description="Published events over the depth limit or lane bound.")


# --------------------------------------------------------------------------- context


class HostContext:
    """The ``PluginContext`` the host lends each plugin."""

    def __init__(self, host: PluginHost, plugin: Plugin) -> None:
        self._host = host
        self._plugin = plugin
        self.logger = logging.getLogger(f"ser_sdk.plugins.{plugin.name}")

    async def publish(self, event: Event) -> None:
        await self._host.publish(event, source=self._plugin)

    def session_state(self, session_id: str) -> SessionState | None:
        return self._host.session_state(session_id)


# --------------------------------------------------------------------------- host


@dataclass(frozen=True)
class _Delivery:
    event: Event
    state: SessionState | None
    utterance: Utterance | None
    source: Plugin | None
    depth: int


_CLOSE = object()


class PluginHost:
    """Runs every plugin's hooks with a timeout each, isolating failures.

    ``timeout`` applies to each hook call unless the plugin sets its own
    ``Plugin.timeout``; ``lifecycle_timeout`` bounds ``start``/``stop`` (a
    plugin may legitimately drain work on stop). ``max_publish_depth`` stops
    plugins that answer each other's events from looping forever.
    """

    def __init__(
        self,
        plugins: Iterable[Plugin] = (),
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        lifecycle_timeout: float = DEFAULT_LIFECYCLE_TIMEOUT_S,
        max_publish_depth: int = DEFAULT_MAX_PUBLISH_DEPTH,
        lane_size: int = DEFAULT_LANE_SIZE,
    ) -> None:
        self.timeout = timeout
        self.lifecycle_timeout = lifecycle_timeout
        self.max_publish_depth = max_publish_depth
        self.lane_size = lane_size
        self._plugins: list[Plugin] = []
        self._stats: dict[str, PluginStats] = {}
        self._publications_dropped = 0
        self._sessions: dict[str, SessionDispatcher] = {}
        self._started = False
        for plugin in plugins:
            self.add(plugin)

    @property
    def plugins(self) -> tuple[Plugin, ...]:
        return tuple(self._plugins)

    @property
    def started(self) -> bool:
        return self._started

    def add(self, plugin: Plugin) -> None:
        """Register a plugin; it must come before ``start`` so that it sees every session whole."""
        if not isinstance(plugin, Plugin):
            raise PluginError(f"{plugin!r} is not a ser_sdk.plugin.Plugin instance")
        if self._started:
            raise PluginError(f"cannot add plugin {plugin.name!r}: add plugins before the engine starts")
        if plugin.name in self._stats:
            raise PluginError(f"a plugin named {plugin.name!r} is already registered; names must be unique")
        self._plugins.append(plugin)
        self._stats[plugin.name] = PluginStats(name=plugin.name)

    def stats(self) -> HostStats:
        return HostStats(
            plugins={name: s.model_copy() for name, s in self._stats.items()},
            publications_dropped=self._publications_dropped,
        )

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start every plugin in order; the first that fails stops those already started.

        Unlike a hook failure, a start failure is a set-up problem (a bad
        secret, an unwritable outbox), so it is raised as ``PluginError``.
        """
        if self._started:
            return
        started: list[Plugin] = []
        for plugin in self._plugins:
            try:
                await asyncio.wait_for(plugin.start(HostContext(self, plugin)), self.lifecycle_timeout)
            except Exception as exc:
                for done in reversed(started):
                    await self._stop_one(done)
                reason = "timed out" if isinstance(exc, asyncio.TimeoutError) else str(exc)
                raise PluginError(f"plugin {plugin.name!r} failed to start: {reason}") from exc
            started.append(plugin)
        self._started = True

    async def stop(self) -> None:
        """Stop every plugin (in reverse order); failures are logged, never raised."""
        if not self._started:
            return
        for plugin in reversed(self._plugins):
            await self._stop_one(plugin)
        self._started = False

    async def _stop_one(self, plugin: Plugin) -> None:
        try:
            await asyncio.wait_for(plugin.stop(), self.lifecycle_timeout)
        except Exception as exc:
            self._record_failure(plugin, "stop", exc)

    # ----------------------------------------------------------------- calling hooks

    def _timeout_for(self, plugin: Plugin) -> float:
        return plugin.timeout if plugin.timeout is not None else self.timeout

    def _record_failure(self, plugin: Plugin, hook: str, exc: BaseException) -> None:
        stats = self._stats[plugin.name]
        stats.failures += 1
        if isinstance(exc, asyncio.TimeoutError):
            stats.timeouts += 1
            stats.last_error = f"{hook}: timed out"
            logger.warning(
                "plugin %r timed out in %s after %.3g s; skipped",
                plugin.name,
                hook,
                self._timeout_for(plugin),
            )
        else:
            stats.last_error = f"{hook}: {type(exc).__name__}: {exc}"
            logger.error("plugin %r failed in %s: %s", plugin.name, hook, exc, exc_info=exc)

    async def _invoke(self, plugin: Plugin, hook: str, *args: Any) -> Any:
        """Call one hook under its timeout; on failure log, count and return ``None``."""
        self._stats[plugin.name].calls += 1
        try:
            return await asyncio.wait_for(getattr(plugin, hook)(*args), self._timeout_for(plugin))
        except asyncio.CancelledError as exc:
            # A hook that awaited something cancelled raises CancelledError of its own; letting it
            # through would end the lane worker and stall the session. Only a real cancellation
            # of the caller (engine shutdown) goes on.
            if _being_cancelled():
                raise
            self._record_failure(plugin, hook, exc)
            return None
        except Exception as exc:
            self._record_failure(plugin, hook, exc)
            return None

    async def event(self, event: Event, *, exclude: Plugin | None = None) -> None:
        """Deliver ``event`` to every plugin's ``on_event`` (but ``exclude``'s), all at once."""
        await asyncio.gather(*(self._invoke(p, "on_event", event) for p in self._plugins if p is not exclude))

    async def dispatch(
        self, event: Event, state: SessionState | None = None, utterance: Utterance | None = None
    ) -> None:
        """Deliver an engine event to every plugin at once: its typed hook, then ``on_event``."""
        delivery = _Delivery(event, state, utterance, source=None, depth=0)
        await asyncio.gather(*(self._deliver(p, delivery) for p in self._plugins))

    async def _deliver(self, plugin: Plugin, delivery: _Delivery) -> None:
        if delivery.source is None:
            typed = _typed_hook(delivery)
            if typed is not None:
                await self._invoke(plugin, *typed)
        await self._invoke(plugin, "on_event", delivery.event)

    async def adapt_reply(self, advice: ReplyAdvice, state: SessionState) -> ReplyAdvice:
        """Pass the advice through every plugin's ``adapt_reply`` in order.

        Each link gets its own copy, so a link that fails or times out after
        mutating it cannot leak half a change: the advice from before it passes on.
        """
        current = advice
        for plugin in self._plugins:
            result = await self._invoke(plugin, "adapt_reply", current.model_copy(deep=True), state)
            if result is None:
                continue
            if not isinstance(result, ReplyAdvice):
                self._record_failure(
                    plugin,
                    "adapt_reply",
                    TypeError(f"returned {type(result).__name__}, expected ReplyAdvice or None"),
                )
                continue
            if result.model_dump(exclude={"applied_by"}) != current.model_dump(exclude={"applied_by"}):
                current = result.model_copy(update={"applied_by": [*current.applied_by, plugin.name]})
        return current

    # ----------------------------------------------------------------- sessions and publishing

    def open_session(
        self,
        session_id: str,
        *,
        sink: Callable[[Event], None],
        state: Callable[[], SessionState],
    ) -> SessionDispatcher:
        """Open ordered per-plugin lanes for a session.

        ``sink`` receives the events plugins publish for it (the session's
        event iterator); ``state`` returns a snapshot for ``session_state``.
        """
        if session_id in self._sessions:
            raise ValueError(f"session {session_id!r} is already open")
        dispatcher = SessionDispatcher(self, session_id, sink=sink, state=state)
        self._sessions[session_id] = dispatcher
        return dispatcher

    def _forget(self, dispatcher: SessionDispatcher) -> None:
        if self._sessions.get(dispatcher.session_id) is dispatcher:
            del self._sessions[dispatcher.session_id]

    def session_state(self, session_id: str) -> SessionState | None:
        dispatcher = self._sessions.get(session_id)
        return dispatcher.state() if dispatcher is not None else None

    async def publish(self, event: Event, source: Plugin | None = None) -> None:
        """Send a plugin's event to the other plugins and its session's event iterator.

        Events published in answer to published events nest one level deeper;
        past ``max_publish_depth`` they are dropped with a warning, so two
        plugins that answer each other cannot loop forever.
        """
        if not isinstance(event, Event):
            raise PluginError(f"can only publish ser_sdk.events.Event instances, not {type(event).__name__}")
        depth = _PUBLISH_DEPTH.get() + 1
        source_name = source.name if source is not None else "host"
        if depth > self.max_publish_depth:
            self._publications_dropped += 1
            logger.warning(
                "dropped event %r published by plugin %r: publish depth %d exceeds %d (a loop?)",
                event.type,
                source_name,
                depth,
                self.max_publish_depth,
            )
            return
        dispatcher = self._sessions.get(event.session_id)
        if dispatcher is not None and not dispatcher.closed:
            dispatcher.publish(event, source, depth)
            return
        logger.info(
            "plugin %r published %r for session %r, which is not open; delivered to plugins only",
            source_name,
            event.type,
            event.session_id,
        )
        token = _PUBLISH_DEPTH.set(depth)
        try:
            await self.event(event, exclude=source)
        finally:
            _PUBLISH_DEPTH.reset(token)


def _being_cancelled() -> bool:
    """Whether the running task itself has been asked to cancel (always assumed so before Python 3.11)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return cancelling is None or cancelling() > 0


def _typed_hook(delivery: _Delivery) -> tuple[Any, ...] | None:
    """The specific hook (name and arguments) an engine event maps to, if any."""
    event, state = delivery.event, delivery.state
    if isinstance(event, EmotionEvent) and state is not None:
        return ("on_emotion", event, state)
    if isinstance(event, UtteranceEvent) and delivery.utterance is not None:
        return ("on_utterance", delivery.utterance)
    if isinstance(event, SpeechStartEvent):
        return ("on_speech_start", event)
    if isinstance(event, SessionStartEvent) and state is not None:
        return ("on_session_start", event, state)
    if isinstance(event, SessionEndEvent) and state is not None:
        return ("on_session_end", event, state)
    return None


class SessionDispatcher:
    """One session's ordered delivery: a bounded lane and a worker task per plugin."""

    def __init__(
        self,
        host: PluginHost,
        session_id: str,
        *,
        sink: Callable[[Event], None],
        state: Callable[[], SessionState],
    ) -> None:
        self.host = host
        self.session_id = session_id
        self.state = state
        self._sink = sink
        self.closed = False
        self._queued = 0  # deliveries queued or running, over all lanes
        self._idle = asyncio.Event()
        self._idle.set()
        self._lanes: dict[Plugin, asyncio.Queue[Any]] = {
            plugin: asyncio.Queue(maxsize=host.lane_size) for plugin in host.plugins
        }
        self._workers = [
            asyncio.create_task(self._work(plugin, lane), name=f"ser-sdk-plugin-{plugin.name}-{session_id}")
            for plugin, lane in self._lanes.items()
        ]

    async def dispatch(
        self, event: Event, state: SessionState | None = None, utterance: Utterance | None = None
    ) -> None:
        """Queue an engine event for every plugin; waits only while a lane is full (backpressure)."""
        if self.closed:
            raise RuntimeError(f"session {self.session_id!r} dispatcher is closed")
        delivery = _Delivery(event, state, utterance, source=None, depth=0)
        for lane in self._lanes.values():
            self._enqueued()
            try:
                await lane.put(delivery)
            except BaseException:
                self._finished()
                raise

    def publish(self, event: Event, source: Plugin | None, depth: int) -> None:
        """Queue a published event for the other plugins and hand it to the session's iterator.

        Never waits: the publisher may itself be a lane worker, and waiting on
        another full lane could deadlock two plugins. A full lane drops the
        event for that plugin, with a warning.
        """
        self._sink(event)
        delivery = _Delivery(event, None, None, source=source, depth=depth)
        for plugin, lane in self._lanes.items():
            if plugin is source:
                continue
            if lane.full():
                self.host._publications_dropped += 1
                logger.warning(
                    "plugin %r is %d events behind in session %r; dropped published event %r for it",
                    plugin.name,
                    lane.qsize(),
                    self.session_id,
                    event.type,
                )
                continue
            self._enqueued()
            lane.put_nowait(delivery)

    def _enqueued(self) -> None:
        self._queued += 1
        self._idle.clear()

    def _finished(self) -> None:
        self._queued -= 1
        if self._queued == 0:
            self._idle.set()

    async def _work(self, plugin: Plugin, lane: asyncio.Queue[Any]) -> None:
        while True:
            item = await lane.get()
            if item is _CLOSE:
                return
            token = _PUBLISH_DEPTH.set(item.depth)
            try:
                await self.host._deliver(plugin, item)
            finally:
                _PUBLISH_DEPTH.reset(token)
                self._finished()

    async def drain(self) -> None:
        """Wait until every lane is empty and idle, including events published meanwhile."""
        while self._queued:
            await self._idle.wait()

    async def close(self) -> None:
        """Deliver everything queued, then stop the lanes and unregister the session."""
        if self.closed:
            return
        await self.drain()
        self.closed = True
        for lane in self._lanes.values():
            lane.put_nowait(_CLOSE)
        await asyncio.gather(*self._workers)
        self.host._forget(self)
