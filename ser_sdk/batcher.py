"""The shared micro-batcher: utterances from every session, one model worker thread.

Batching across sessions is what keeps the SDK's overhead small when many
streams are open: sixteen quiet callers cost a few forward passes, not
sixteen, and the event loop never runs the model itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel

from .errors import ModelError, SessionClosedError
from .events import EmotionScores

if TYPE_CHECKING:
    from .model import Classifier

logger = logging.getLogger("ser_sdk.batcher")


@dataclass(eq=False)
class _Job:
    samples: np.ndarray
    future: asyncio.Future[EmotionScores]


_STOP = object()


class BatcherStats(BaseModel):
    queue_size: int
    queued: int = 0
    peak_queued: int = 0
    batches: int = 0
    items: int = 0
    largest_batch: int = 0
    failures: int = 0


def classify_checked(classifier: Classifier, batch: Sequence[np.ndarray]) -> list[EmotionScores]:
    """Run the model (in the worker thread) and check it answered once per utterance."""
    results = list(classifier.classify(batch))
    if len(results) != len(batch):
        raise ModelError(f"the model returned {len(results)} results for a batch of {len(batch)}")
    for result in results:
        if not isinstance(result, EmotionScores):
            raise ModelError(f"the model returned {type(result).__name__}, expected EmotionScores")
    return results


class MicroBatcher:
    """Gathers utterances from every session into batches for one model worker thread.

    Sharing one batcher lets many quiet sessions ride in the same forward pass.
    The queue is bounded, so ``submit`` waits while the model is behind. A
    batch that fails is retried one utterance at a time, so one bad clip fails
    alone instead of taking its neighbours with it.
    """

    def __init__(
        self,
        classifier: Classifier,
        *,
        executor: ThreadPoolExecutor,
        max_batch_size: int = 16,
        max_wait_s: float = 0.02,
        queue_size: int = 64,
    ) -> None:
        self.classifier = classifier
        self._executor = executor
        self._max_batch = max_batch_size
        self._max_wait = max_wait_s
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=queue_size)
        self._stats = BatcherStats(queue_size=queue_size)
        self._task: asyncio.Task[None] | None = None
        self._inflight: list[_Job] = []
        self._closed = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ser-sdk-batcher")

    def stats(self) -> BatcherStats:
        return self._stats.model_copy(update={"queued": self._queue.qsize()})

    async def submit(self, samples: np.ndarray) -> asyncio.Future[EmotionScores]:
        """Queue one utterance (waiting while the queue is full); the future resolves to its scores."""
        if self._closed or self._task is None:
            raise SessionClosedError("the engine's batcher is not running (engine closed or not started)")
        future: asyncio.Future[EmotionScores] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(samples, future))
        self._stats.peak_queued = max(self._stats.peak_queued, self._queue.qsize())
        return future

    async def close(self) -> None:
        """Score everything already queued, then stop."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None and not self._task.done():
            await self._queue.put(_STOP)
            await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        try:
            while not stopping:
                first = await self._queue.get()
                if first is _STOP:
                    break
                batch: list[_Job] = [first]
                self._inflight = batch
                deadline = loop.time() + self._max_wait
                while len(batch) < self._max_batch:
                    try:
                        job = self._queue.get_nowait()
                    except asyncio.QueueEmpty:
                        remaining = deadline - loop.time()
                        if remaining <= 0:
                            break
                        try:
                            job = await asyncio.wait_for(self._queue.get(), remaining)
                        except asyncio.TimeoutError:
                            break
                    if job is _STOP:
                        stopping = True
                        break
                    batch.append(job)
                await self._run_batch(batch)
                self._inflight = []
        finally:
            # Whatever stopped the loop (even cancellation), nobody may wait forever on an utterance.
            leftovers = list(self._inflight)
            while not self._queue.empty():
                leftovers.append(self._queue.get_nowait())
            for job in leftovers:
                if isinstance(job, _Job) and not job.future.done():
                    job.future.set_exception(SessionClosedError("the engine stopped before this was scored"))

    async def _run_batch(self, batch: list[_Job]) -> None:
        live = [job for job in batch if not job.future.done()]
        if not live:
            return
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(
                self._executor, classify_checked, self.classifier, [job.samples for job in live]
            )
        except Exception as exc:
            if len(live) > 1:
                logger.warning("a batch of %d failed (%s); scoring its utterances one by one", len(live), exc)
                for job in live:
                    await self._run_batch([job])
                return
            self._stats.failures += 1
            if not live[0].future.done():
                live[0].future.set_exception(exc)
            return
        self._stats.batches += 1
        self._stats.items += len(live)
        self._stats.largest_batch = max(self._stats.largest_batch, len(live))
        for job, scores in zip(live, results, strict=True):
            if not job.future.done():
                job.future.set_result(scores)
