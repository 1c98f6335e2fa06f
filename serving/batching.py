"""Dynamic batching that forms a batch when the model is free, not when the first request arrives.

Ray Serve's `@serve.batch` closes a batch as soon as its wait ends and then queues it behind the running
one: with a short wait, a busy replica runs a string of one-request batches (measured: batch sizes of 1
to 3 at 8 concurrent callers of a 40 ms model, and 26 requests/s where 200 were possible). Here one loop
per replica takes a batch only once the previous one is done, so whatever arrived meanwhile rides
together: an idle replica answers at once, a busy one batches up to `max_batch_size`.

With a wait (`wait_s`), a batch waits for more requests only while it holds fewer than were in flight
(queued or running) during the previous batch, and never longer than `wait_s`: requests that ended
together (generations) come back some ms apart and ride together again instead of splitting into
groups that take turns, while a lone caller never waits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

__all__ = ["BatchObserver", "Batcher"]

Item = TypeVar("Item")
Result = TypeVar("Result")


class BatchObserver(Protocol):
    """What a batcher reports as it goes (the app's metrics); it must not raise."""

    def batch(self, size: int) -> None: ...

    def queue_length(self, waiting: int) -> None: ...


class Batcher(Generic[Item, Result]):
    """`await submit(item)` answers `item` with the result `run(batch)` gives for it; one `run` at a time."""

    def __init__(
        self,
        run: Callable[[list[Item]], Awaitable[list[Result]]],
        max_batch_size: int,
        wait_s: float = 0.0,
        cost: Callable[[Item], int] | None = None,
        budget: int | None = None,
        observer: BatchObserver | None = None,
    ) -> None:
        self.run, self.max_batch_size, self.wait_s = run, max_batch_size, wait_s
        self.observer = observer
        """Told each batch's size, and the queue's length whenever it grows or a batch leaves it."""
        self.cost, self.budget = cost, budget
        """A batch stops growing before its items' `cost` would pass `budget` (its first item always
        rides): the next item waits, first in line, for the next batch."""
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future[Result]]] | None = None
        self._carried: tuple[Item, asyncio.Future[Result]] | None = None
        self._event_loop: asyncio.AbstractEventLoop | None = None
        self._worker: asyncio.Task[None] | None = None
        self._in_flight = 0
        self._peak = 0
        """Most items in flight since the current batch formed."""

    @property
    def waiting(self) -> int:
        """Items queued for the next batch."""
        return (self._queue.qsize() if self._queue is not None else 0) + (self._carried is not None)

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        if self._queue is None or self._event_loop is not loop:
            # A queue and its worker belong to one event loop (a replica has one; a test may run several).
            self._queue, self._event_loop, self._worker, self._carried = asyncio.Queue(), loop, None, None
            self._in_flight = self._peak = 0
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._loop(self._queue))
        future: asyncio.Future[Result] = loop.create_future()
        self._queue.put_nowait((item, future))
        self._in_flight += 1
        self._peak = max(self._peak, self._in_flight)
        if self.observer is not None:
            self.observer.queue_length(self.waiting)
        return await future

    def _cost(self, item: Item) -> int:
        return self.cost(item) if self.cost is not None else 0

    async def _loop(self, queue: asyncio.Queue[tuple[Item, asyncio.Future[Result]]]) -> None:
        while True:
            first = self._carried if self._carried is not None else await queue.get()
            self._carried = None
            batch = [first]
            spent = self._cost(first[0])
            deadline = time.monotonic() + self.wait_s
            target = min(self.max_batch_size, self._peak)
            while len(batch) < self.max_batch_size:
                if queue.empty():
                    left = deadline - time.monotonic()
                    if left <= 0 or len(batch) >= target:
                        break
                    try:
                        entry = await asyncio.wait_for(queue.get(), left)
                    except asyncio.TimeoutError:
                        continue
                else:
                    entry = queue.get_nowait()
                if entry[1].cancelled():  # its caller left: it costs the batch nothing
                    self._in_flight -= 1
                    continue
                spent += self._cost(entry[0])
                if self.budget is not None and spent > self.budget:
                    self._carried = entry
                    break
                batch.append(entry)
            live = [(item, future) for item, future in batch if not future.cancelled()]
            self._in_flight -= len(batch) - len(live)
            self._peak = self._in_flight
            if not live:
                continue
            if self.observer is not None:
                self.observer.batch(len(live))
                self.observer.queue_length(self.waiting)
            try:
                results = await self.run([item for item, _ in live])
            except Exception as err:  # every caller of the batch gets the error, and the loop goes on
                for _, future in live:
                    if not future.done():
                        future.set_exception(err)
                continue
            finally:
                self._in_flight -= len(live)
            for (_, future), result in zip(live, results, strict=True):
                if not future.done():
                    future.set_result(result)
