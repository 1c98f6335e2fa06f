"""The replica's batcher, on a fake model: a batch forms from what waited while the model worked, each
caller gets its own result, a failure reaches every caller of its batch only, and a wait gathers the
requests that were in flight together without ever delaying a lone caller."""

from __future__ import annotations

import asyncio
import time

import pytest

from rayformers.serving.batching import Batcher


class FakeModel:
    """Answers each item with itself doubled, taking `seconds` per batch; records the batches."""

    def __init__(self, seconds: float = 0.05, fail_on: int | None = None) -> None:
        self.seconds, self.fail_on = seconds, fail_on
        self.batches: list[list[int]] = []

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        await asyncio.sleep(self.seconds)
        if self.fail_on in items:
            raise RuntimeError(f"item {self.fail_on}")
        return [2 * i for i in items]


def test_an_idle_batcher_answers_at_once_and_a_busy_one_batches():
    async def main() -> None:
        model = FakeModel()
        batcher = Batcher(model, max_batch_size=8)
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.01)  # the model is busy with [0]
        rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 11)]
        assert await first == 0
        assert await asyncio.gather(*rest) == [2 * i for i in range(1, 11)]
        assert model.batches == [[0], list(range(1, 9)), [9, 10]]

    asyncio.run(main())


def test_a_failure_reaches_only_its_own_batch():
    async def main() -> None:
        model = FakeModel(fail_on=3)
        batcher = Batcher(model, max_batch_size=4)
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.01)
        failing = [asyncio.ensure_future(batcher.submit(i)) for i in (3, 4)]
        results = await asyncio.gather(first, *failing, return_exceptions=True)
        assert results[0] == 0 and all(isinstance(r, RuntimeError) for r in results[1:])
        assert await batcher.submit(5) == 10  # the loop goes on

    asyncio.run(main())


def test_a_wait_regathers_requests_that_were_in_flight_together():
    """Two groups that take turns (a lone request, then seven) merge into one batch once the wait lets
    the seven come back; a lone caller never waits."""

    async def client(batcher: Batcher[int, int], item: int, rounds: int, gap_s: float) -> None:
        for _ in range(rounds):
            await batcher.submit(item)
            await asyncio.sleep(gap_s)  # the client's round trip before its next request

    async def run(wait_s: float) -> list[list[int]]:
        model = FakeModel(seconds=0.05)
        batcher = Batcher(model, max_batch_size=32, wait_s=wait_s)
        lone = asyncio.ensure_future(client(batcher, 0, 6, 0.005))
        await asyncio.sleep(0.01)
        await asyncio.gather(lone, *(client(batcher, i, 6, 0.005) for i in range(1, 8)))
        return model.batches

    without = asyncio.run(run(0.0))
    assert max(len(b) for b in without[2:]) < 8  # the groups keep taking turns
    gathered = asyncio.run(run(0.03))
    # the lone first round, then every round of all eight together, then the seven's last round
    assert [len(b) for b in gathered] == [1, 8, 8, 8, 8, 8, 7]
    assert len(gathered) < len(without)

    async def lone() -> float:
        batcher = Batcher(FakeModel(seconds=0.0), max_batch_size=32, wait_s=1.0)
        started = time.perf_counter()
        for i in range(3):
            await batcher.submit(i)
        return time.perf_counter() - started

    assert asyncio.run(lone()) < 0.5  # a wait of 1 s, never taken by a caller alone


@pytest.mark.parametrize("size", [1, 3])
def test_max_batch_size_caps_a_batch(size):
    async def main() -> list[list[int]]:
        model = FakeModel(seconds=0.02)
        batcher = Batcher(model, max_batch_size=size)
        await asyncio.gather(*(batcher.submit(i) for i in range(7)))
        return model.batches

    assert all(len(b) <= size for b in asyncio.run(main()))


def test_a_token_budget_cuts_a_batch_and_the_item_over_it_leads_the_next():
    """`serve.apps[].max_call_tokens` (issue 12): a batch stops before its items' cost passes the
    budget, the item that would pass it leads the next batch (first come, first served), and an item
    over the budget alone still rides alone (the replica refuses those before they queue)."""

    async def main() -> list[list[int]]:
        model = FakeModel(seconds=0.02)
        batcher = Batcher(model, max_batch_size=8, cost=lambda i: i, budget=10)
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.005)  # the model is busy with [0]: the rest queue in this order
        rest = [asyncio.ensure_future(batcher.submit(i)) for i in (4, 5, 6, 3, 1, 12, 2)]
        assert await first == 0
        assert await asyncio.gather(*rest) == [8, 10, 12, 6, 2, 24, 4]
        return model.batches

    assert asyncio.run(main()) == [[0], [4, 5], [6, 3, 1], [12], [2]]


def test_a_batcher_answers_in_a_second_event_loop():
    """Its queue and worker belong to the loop that made them: a second loop (a test's second
    asyncio.run) got a worker that died on the first loop's queue, and 'Task exception was never
    retrieved' logged from garbage collection, which on Python 3.11 broke an ast.parse running then."""
    model = FakeModel(seconds=0.01)
    batcher = Batcher(model, max_batch_size=4)
    assert asyncio.run(batcher.submit(1)) == 2
    assert asyncio.run(asyncio.wait_for(batcher.submit(2), 5)) == 4
