"""The extra LoRA adapters a replica holds: loaded off the model thread, removed only once unused.

Serve's multiplexing (`@serve.multiplexed`) keeps at most N adapters per replica and, to load one more,
evicts the least recently used by calling its cache entry's `__del__` at once. Requests admitted with
that adapter may still wait in the batch queue then: removing the adapter there cost them their answers
(a 500 from the model thread). So here eviction only marks the adapter; it is removed when the last
request holding it is answered, and a name loaded again before that simply stays.

Loads and removals run on one thread of their own, in order: a download or a weight file read never
holds up the model thread's forwards (only peft's brief injection takes the model's lock), and a
removal queued before a reload of the same name always runs before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rayformers.serving.metrics import ServingMetrics

__all__ = ["AdapterSlot", "ResidentAdapters"]

logger = logging.getLogger("ray.serve")


class AdapterSlot:
    """What Serve's multiplexing cache holds for one load of an adapter. Serve calls `__del__` (from a
    thread of its executor) when it evicts the entry; Python may call it again at collection."""

    def __init__(self, owner: ResidentAdapters, name: str, generation: int) -> None:
        self.owner, self.name, self.generation, self._gone = owner, name, generation, False

    def __del__(self) -> None:
        if not self._gone:
            self._gone = True
            self.owner.evicted(self)


class ResidentAdapters:
    """Loads, holds and removes a replica's extra adapters in `loaded` (a `LoadedModel`). Every method
    but `evicted` runs on the replica's event loop."""

    def __init__(self, loaded: Any, metrics: ServingMetrics | None = None) -> None:
        self.loaded, self.metrics = loaded, metrics
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="adapters")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._generation = 0
        self._current: dict[str, int] = {}
        """The generation of the slot Serve holds now for each name it holds."""
        self._dropped: dict[str, int] = {}
        """Names Serve evicted, by the generation evicted: removed once no request holds them."""
        self._holds: Counter[str] = Counter()
        self.removed = 0
        """Adapters removed since the replica started (what eviction has freed)."""

    async def load(self, name: str, directory: str) -> AdapterSlot:
        """Load `name` from `directory` (a no-op when it is still resident) and return its slot."""
        self._loop = asyncio.get_running_loop()
        self._generation += 1
        self._current[name] = self._generation
        self._dropped.pop(name, None)  # evicted, not yet removed: it stays, as Serve's entry again
        generation = self._generation
        loading = self._loop.run_in_executor(self._thread, self.loaded.add_adapter, name, directory)
        loading.add_done_callback(self._count_load)  # a load whose request went away counts too
        try:
            await asyncio.shield(loading)
        except asyncio.CancelledError:
            # Serve keeps no entry for a load whose request went away: once loaded, the adapter is
            # dropped as if evicted (unless a later load of the name is what Serve holds by then).
            loading.add_done_callback(lambda _: self._drop(name, generation))
            raise
        return AdapterSlot(self, name, generation)

    def _count_load(self, loading: asyncio.Future[None]) -> None:
        if self.metrics is not None and not loading.cancelled() and loading.exception() is None:
            self.metrics.adapter_loaded()

    @contextlib.contextmanager
    def held(self, name: str | None) -> Iterator[None]:
        """The block's request needs `name`: it is not removed until the block ends. Enter it before
        the request asks Serve for the adapter, so that no eviction can fall between the two."""
        if name is None:
            yield
            return
        self._holds[name] += 1
        try:
            yield
        finally:
            self._holds[name] -= 1
            if not self._holds[name]:
                del self._holds[name]
                self._remove_if_dropped(name)

    def evicted(self, slot: AdapterSlot) -> None:
        """Serve evicted `slot` (called from any thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: the replica is going away
            loop.call_soon_threadsafe(self._drop, slot.name, slot.generation)

    def _drop(self, name: str, generation: int) -> None:
        if self._current.get(name) != generation:
            return  # a later load of the same name is what Serve holds now
        del self._current[name]
        self._dropped[name] = generation
        self._remove_if_dropped(name)

    def _remove_if_dropped(self, name: str) -> None:
        if name not in self._dropped or self._holds[name]:
            return
        del self._dropped[name]
        assert self._loop is not None
        self._loop.run_in_executor(self._thread, self._remove, name)

    def _remove(self, name: str) -> None:
        try:
            self.loaded.remove_adapter(name)
            self.removed += 1
            if self.metrics is not None:
                self.metrics.adapter_evicted()
        except Exception:  # a failed removal leaks one adapter's memory; it never fails a request
            logger.exception("removing the evicted adapter %r failed", name)
