"""Driving a plugin without an engine: for plugin unit tests and offline benchmarks.

A plugin started with a ``RecordingContext`` can be fed events by hand, and
whatever it publishes is kept for the test to check::

    plugin = MyPlugin({"threshold": 0.6})
    context = RecordingContext()
    await plugin.start(context)
    await plugin.on_emotion(event, state)
    assert context.published == [...]
"""

from __future__ import annotations

import logging

from .events import Event, SessionState


class RecordingContext:
    """A ``PluginContext`` that keeps what the plugin publishes instead of delivering it.

    ``session_state`` answers from ``states``, which the caller fills as the
    scenario needs (a session missing from it reads as ended).
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger if logger is not None else logging.getLogger("ser_sdk.testing")
        self.published: list[Event] = []
        self.states: dict[str, SessionState] = {}

    async def publish(self, event: Event) -> None:
        self.published.append(event)

    def session_state(self, session_id: str) -> SessionState | None:
        return self.states.get(session_id)
