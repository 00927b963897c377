"""Delivery workers: one per endpoint, each with its own HTTP session, concurrency limit and timeout.

A worker leases due rows from the outbox, POSTs each one signed, and records
the outcome: a 2xx deletes the row, anything else (an HTTP error, a 3xx, a
timeout, a refused address) schedules the next attempt with exponential
backoff and jitter, or dead-letters the row after ``retry.max_attempts``.
Redirects are never followed: a receiver that moved must be reconfigured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from .config import EndpointConfig, RetryConfig, WebhooksConfig
from .netguard import ForbiddenAddressError, PublicOnlyResolver
from .outbox import Delivery, Outbox
from .signing import EVENT_ID_HEADER, EVENT_TYPE_HEADER, SIGNATURE_HEADER, sign

USER_AGENT = "ser-sdk-webhooks/0.1"
_POLL_S = 2.0  # also look for rows other processes queued or released this often
_LEASE_MARGIN_S = 5.0
_ERROR_BODY_CHARS = 200


def backoff_delay(attempts: int, retry: RetryConfig, rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait after the ``attempts``-th failure: base * 2^(attempts-1), capped, minus jitter."""
    exponent = min(max(attempts - 1, 0), 60)
    delay = min(retry.backoff_max_s, retry.backoff_base_s * 2.0**exponent)
    return delay * (1.0 - retry.jitter * rng())


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header given in seconds (an HTTP date is ignored)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


async def _wait(event: asyncio.Event, timeout: float) -> None:
    """Wait until ``event`` is set or ``timeout`` passes.

    ``asyncio.wait`` rather than ``wait_for``: before Python 3.12 a cancellation
    that coincides with ``wait_for``'s timeout can be lost, which would leave a
    worker running after ``close()``.
    """
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=timeout)
    finally:
        waiter.cancel()


@dataclass
class DeliveryStats:
    delivered: int = 0
    failed: int = 0
    dead: int = 0


class EndpointWorker:
    """Delivers one endpoint's rows; at most ``max_concurrency`` at a time."""

    def __init__(
        self,
        endpoint: EndpointConfig,
        outbox: Outbox,
        retry: RetryConfig,
        stats: DeliveryStats,
        on_progress: Callable[[], None],
        logger: logging.Logger,
    ) -> None:
        self.endpoint = endpoint
        self._outbox = outbox
        self._retry = retry
        self._stats = stats
        self._on_progress = on_progress
        self._log = logger
        self._wakeup = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        resolver = None if self.endpoint.allow_private_network else PublicOnlyResolver()
        connector = aiohttp.TCPConnector(limit=self.endpoint.max_concurrency, resolver=resolver)
        self._session = aiohttp.ClientSession(connector=connector, headers={"User-Agent": USER_AGENT})
        self._task = asyncio.create_task(self._run(), name=f"ser-sdk-webhooks {self.endpoint.key}")

    def wake(self) -> None:
        self._wakeup.set()

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._inflight) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        key = self.endpoint.key
        lease_s = self.endpoint.timeout_s + _LEASE_MARGIN_S
        while True:
            self._wakeup.clear()
            free = self.endpoint.max_concurrency - len(self._inflight)
            claimed: list[Delivery] = []
            if free > 0:
                try:
                    claimed = await asyncio.to_thread(self._outbox.claim, key, free, lease_s)
                except Exception as exc:  # a locked or broken database: log, wait a poll interval, try again
                    self._log.error(
                        "webhooks: cannot read the outbox %s: %s", self._outbox.path, exc, exc_info=exc
                    )
                for delivery in claimed:
                    task = asyncio.create_task(self._deliver(delivery))
                    self._inflight.add(task)
                    task.add_done_callback(self._done)
                if claimed and len(claimed) == free:
                    continue
            await self._sleep()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wakeup.set()

    async def _sleep(self) -> None:
        delay = _POLL_S
        if len(self._inflight) < self.endpoint.max_concurrency:
            try:
                due = await asyncio.to_thread(self._outbox.next_due, self.endpoint.key)
            except sqlite3.Error:
                due = None
            if due is not None:
                delay = min(_POLL_S, max(due - time.time(), 0.005))
        await _wait(self._wakeup, delay)

    async def _deliver(self, delivery: Delivery) -> None:
        try:
            error, retry_after = await self._attempt(delivery)
        except asyncio.CancelledError:
            # Interrupted (the plugin is stopping): not a failed attempt, so give the row back now
            # (off the loop: another process may hold the database for a while).
            with contextlib.suppress(sqlite3.Error):
                await asyncio.to_thread(self._outbox.release, [delivery.id])
            raise
        attempts = delivery.attempts + 1
        try:
            if error is None:
                await asyncio.to_thread(self._outbox.delivered, delivery.id)
                self._stats.delivered += 1
            elif attempts >= self._retry.max_attempts:
                await asyncio.to_thread(self._outbox.dead, delivery.id, attempts, error)
                self._stats.dead += 1
                self._log.warning(
                    "webhooks: gave up on event %s for %s after %d attempts (%s); it is dead-lettered",
                    delivery.event_id,
                    self.endpoint.key,
                    attempts,
                    error,
                )
            else:
                delay = backoff_delay(attempts, self._retry)
                if retry_after is not None:
                    delay = min(max(delay, retry_after), self._retry.backoff_max_s)
                await asyncio.to_thread(
                    self._outbox.failed, delivery.id, attempts, error, time.time() + delay
                )
                self._stats.failed += 1
                self._log.warning(
                    "webhooks: delivery of event %s to %s failed (attempt %d: %s); retrying in %.1f s",
                    delivery.event_id,
                    self.endpoint.key,
                    attempts,
                    error,
                    delay,
                )
        except sqlite3.Error as exc:
            # The row keeps its lease, which expires: the event is sent again rather than lost.
            self._log.error("webhooks: cannot update the outbox %s: %s", self._outbox.path, exc)
        finally:
            self._on_progress()

    async def _attempt(self, delivery: Delivery) -> tuple[str | None, float | None]:
        """POST one delivery; ``(None, None)`` on a 2xx, else ``(error, retry_after_s)``."""
        assert self._session is not None
        headers = {
            "Content-Type": "application/json",
            EVENT_ID_HEADER: delivery.event_id,
            EVENT_TYPE_HEADER: delivery.event_type,
            SIGNATURE_HEADER: sign(self.endpoint.secret.get_secret_value(), delivery.body),
        }
        try:
            async with self._session.post(
                self.endpoint.url,
                data=delivery.body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.endpoint.timeout_s),
            ) as response:
                if 200 <= response.status < 300:
                    return None, None
                snippet = (await response.content.read(_ERROR_BODY_CHARS)).decode("utf-8", "replace")
                error = f"HTTP {response.status} {response.reason or ''}".rstrip()
                if snippet.strip():
                    error += f": {snippet.strip()}"
                return error, _retry_after(response.headers.get("Retry-After"))
        except asyncio.TimeoutError:
            return f"timed out after {self.endpoint.timeout_s:g} s", None
        except Exception as exc:  # any failure to get a response is a failed attempt, never a crash
            refused = getattr(exc, "os_error", None)  # aiohttp wraps the resolver's error
            if isinstance(refused, ForbiddenAddressError):
                return str(refused), None
            return f"{type(exc).__name__}: {exc}", None


class Dispatcher:
    """All endpoint workers of one outbox, plus draining and shutdown."""

    def __init__(self, config: WebhooksConfig, outbox: Outbox, logger: logging.Logger) -> None:
        self.stats = DeliveryStats()
        self._outbox = outbox
        self._progress = asyncio.Event()
        self._workers = {
            endpoint.key: EndpointWorker(
                endpoint, outbox, config.retry, self.stats, self._progress.set, logger
            )
            for endpoint in config.endpoints
        }

    async def start(self) -> None:
        for worker in self._workers.values():
            await worker.start()

    def notify(self, endpoint_keys: list[str]) -> None:
        """New rows were queued for these endpoints: look now instead of at the next poll."""
        for key in endpoint_keys:
            self._workers[key].wake()

    async def drain(self, timeout_s: float) -> bool:
        """Keep delivering until nothing is pending (``True``) or ``timeout_s`` runs out (``False``).

        Returns early when no pending delivery is due before the deadline, so a
        dead receiver does not hold a shutdown for the whole timeout.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        keys = list(self._workers)
        while True:
            self._progress.clear()
            if await asyncio.to_thread(self._outbox.pending_count, keys) == 0:
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            # Rows in flight were due when claimed, so they never trigger this early exit.
            soonest = await asyncio.to_thread(self._outbox.earliest_attempt, keys)
            if soonest is not None and soonest - time.time() > remaining:
                return False
            await _wait(self._progress, min(remaining, 0.25))

    async def close(self) -> None:
        """Stop every worker; attempts in flight are interrupted and their rows stay pending."""
        for worker in self._workers.values():
            await worker.close()
