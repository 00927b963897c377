"""``WebhooksPlugin``: chosen events go to HTTP endpoints, signed, through a durable outbox."""

from __future__ import annotations

import asyncio
import logging
from typing import ClassVar

from pydantic import BaseModel

from ser_sdk.errors import PluginError
from ser_sdk.events import Event
from ser_sdk.plugin import Plugin, PluginConfig, PluginContext

from .config import WebhooksConfig
from .dispatcher import Dispatcher
from .outbox import Outbox

_log = logging.getLogger("ser_sdk_webhooks")


class FlushResult(BaseModel):
    """What one ``flush`` did and what it left behind."""

    delivered: int
    failed_attempts: int
    dead_lettered: int
    pending: int
    dead: int


class WebhooksPlugin(Plugin):
    """Queues every matching event in the outbox, then delivers it in the background (see ``WebhooksConfig``).

    ``on_event`` returns once the event is committed to SQLite, so a slow or
    dead receiver never holds up the stream. Deliveries pending from an earlier
    run go out as soon as the plugin starts.
    """

    name: ClassVar[str] = "webhooks"
    Config: ClassVar[type[PluginConfig]] = WebhooksConfig
    config: WebhooksConfig

    def __init__(self, config: WebhooksConfig | dict | None = None) -> None:
        super().__init__(config)
        self._outbox: Outbox | None = None
        self._dispatcher: Dispatcher | None = None

    @property
    def logger(self) -> logging.Logger:
        return self.context.logger if self.context is not None else _log

    @property
    def endpoint_keys(self) -> list[str]:
        return [endpoint.key for endpoint in self.config.endpoints]

    async def start(self, context: PluginContext) -> None:
        await super().start(context)
        await self._open()

    async def stop(self) -> None:
        """Keep delivering for up to ``drain_timeout_s``, then leave the rest in the outbox."""
        if self._dispatcher is None or self._outbox is None:
            return
        try:
            await self._dispatcher.drain(self.config.drain_timeout_s)
            left = await asyncio.to_thread(self._outbox.pending_count, self.endpoint_keys)
            if left:
                self.logger.warning(
                    "webhooks: %d deliveries still pending in %s; they go out on the next start "
                    "or with `ser-sdk webhooks flush`",
                    left,
                    self._outbox.path,
                )
        finally:
            await self._close()

    async def on_event(self, event: Event) -> None:
        keys = [endpoint.key for endpoint in self.config.endpoints if endpoint.accepts(event.type)]
        if not keys:
            return
        if self._outbox is None or self._dispatcher is None:
            raise PluginError("WebhooksPlugin was not started: the host must call start(context) first")
        body = event.model_dump_json().encode("utf-8")
        await asyncio.to_thread(self._outbox.enqueue, event.event_id, event.type, body, keys)
        self._dispatcher.notify(keys)

    async def flush(self, timeout_s: float) -> FlushResult:
        """Deliver everything pending now (ignoring backoff schedules) for up to ``timeout_s``."""
        opened_here = self._dispatcher is None
        if opened_here:
            await self._open()
        else:
            assert self._outbox is not None and self._dispatcher is not None
            await asyncio.to_thread(self._outbox.make_due, self.endpoint_keys)
            self._dispatcher.notify(self.endpoint_keys)
        assert self._outbox is not None and self._dispatcher is not None
        outbox, dispatcher = self._outbox, self._dispatcher
        before = dispatcher.stats.delivered, dispatcher.stats.failed, dispatcher.stats.dead
        try:
            await dispatcher.drain(timeout_s)
            pending = await asyncio.to_thread(outbox.pending_count, self.endpoint_keys)
            stats = await asyncio.to_thread(outbox.stats)
        finally:
            if opened_here:
                await self._close()
        keys = set(self.endpoint_keys)
        return FlushResult(
            delivered=dispatcher.stats.delivered - before[0],
            failed_attempts=dispatcher.stats.failed - before[1],
            dead_lettered=dispatcher.stats.dead - before[2],
            pending=pending,
            dead=sum(item.dead for item in stats if item.endpoint in keys),
        )

    async def _open(self) -> None:
        outbox = await asyncio.to_thread(Outbox, self.config.outbox)
        dispatcher = Dispatcher(self.config, outbox, self.logger)
        try:
            await asyncio.to_thread(outbox.make_due, self.endpoint_keys)
            waiting = await asyncio.to_thread(outbox.pending_count, self.endpoint_keys)
            await dispatcher.start()
        except BaseException:
            await dispatcher.close()
            await asyncio.to_thread(outbox.close)
            raise
        if waiting:
            self.logger.info("webhooks: %d deliveries pending in %s; sending them now", waiting, outbox.path)
        self._outbox, self._dispatcher = outbox, dispatcher

    async def _close(self) -> None:
        dispatcher, outbox = self._dispatcher, self._outbox
        self._dispatcher = self._outbox = None
        if dispatcher is not None:
            await dispatcher.close()
        if outbox is not None:
            await asyncio.to_thread(outbox.close)
