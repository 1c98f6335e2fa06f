"""A replica's extra adapters under Serve's own multiplexing cache: loaded off the model thread, kept
while a request needs them, removed after, and a cloud adapter's download not left behind (issue 12)."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from rayformers.data.storage import Location


@pytest.fixture
def serve_cache(monkeypatch):
    """Serve's real `@serve.multiplexed` cache, outside a deployment: it only asks for the replica's
    names (and fails, quietly, to push its model ids to a controller there is not)."""
    import ray.serve.multiplex as multiplex

    context = SimpleNamespace(app_name="test", deployment="lora", replica_id=None)
    monkeypatch.setattr(multiplex, "_get_internal_replica_context", lambda: context)

    def limit(replica, most: int) -> None:
        getattr(replica, "__serve_multiplex_wrapper").max_num_models_per_replica = most

    return limit


def _replica(tiny_checkpoint, adapters: dict[str, str]):
    from rayformers.serving.args import AppArgs
    from rayformers.serving.replica import ModelReplica

    base = tiny_checkpoint("text-classification", method="lora", adapter_seed=1)
    return ModelReplica(AppArgs(name="lora", checkpoint=str(base), adapters=adapters).model_dump())


def test_an_adapter_evicted_while_its_request_waits_still_answers_it_and_goes_after(
    tiny_checkpoint, serve_cache
):
    """Serve evicts the least recently used adapter when it loads one more, at once. A request admitted
    with the evicted one that still waited in the batch queue got a 500 (the adapter was gone when its
    batch ran); the load itself ran on the model thread, behind every forward."""
    one = str(tiny_checkpoint("text-classification", method="lora", adapter_seed=2))
    two = str(tiny_checkpoint("text-classification", method="lora", adapter_seed=3))
    replica = _replica(tiny_checkpoint, {"one": one, "two": two})

    async def scenario():
        await replica._adapter("two")  # Serve's cache exists now; let it hold one adapter
        serve_cache(replica, 1)
        busy, release = threading.Event(), threading.Event()
        blocker = asyncio.get_running_loop().run_in_executor(
            replica._pool, lambda: (busy.set(), release.wait(30))
        )
        await asyncio.to_thread(busy.wait, 10)  # the model thread is in a long forward
        first = asyncio.ensure_future(replica.answer(["a fine film"], {}, "one"))
        for _ in range(200):  # "one" loads while the model thread is busy, and its request queues
            await asyncio.sleep(0.02)
            if replica._batcher._in_flight:
                break
        assert replica._batcher._in_flight == 1 and "one" in replica.loaded.adapter_names
        second = asyncio.ensure_future(replica.answer(["a fine film"], {}, "two"))  # evicts "one"
        await asyncio.sleep(0.5)
        assert "one" in replica.loaded.adapter_names  # held by the waiting request
        release.set()
        await blocker
        return await first, await second

    first, second = asyncio.run(scenario())
    assert first.error is None and second.error is None, (first.error, second.error)
    assert replica.handler.predict(["a fine film"], {})  # the default adapter is active again
    assert replica.loaded.adapter_names == ["default", "two"]  # "one" went once its request was answered
    assert replica._adapters.removed == 2  # "two" (evicted for "one") and then "one"
    # Each request got its own adapter's answer: the same scores its checkpoint gives alone.
    from rayformers.serving.checkpoint import build_handler, load_checkpoint

    alone = build_handler(load_checkpoint(one)).predict(["a fine film"], {})
    assert first.outputs == alone


def test_an_adapter_loaded_again_before_its_removal_stays(tiny_checkpoint, serve_cache):
    one = str(tiny_checkpoint("text-classification", method="lora", adapter_seed=2))
    replica = _replica(tiny_checkpoint, {"one": one})

    async def scenario():
        adapters = replica._adapters
        slot = await replica._adapter("one")
        with adapters.held("one"):
            await asyncio.to_thread(slot.__del__)  # Serve evicts it, from its executor, while held
            await asyncio.sleep(0)
            again = await adapters.load("one", one)  # ... and a new request loads it again
        await asyncio.sleep(0.2)
        return adapters.removed, list(replica.loaded.adapter_names), again  # Serve's cache holds `again`

    removed, names, _ = asyncio.run(scenario())
    assert removed == 0 and names == ["default", "one"]


def test_a_cloud_adapter_is_loaded_from_a_download_that_is_then_removed(
    tiny_checkpoint, s3_uri, monkeypatch, tmp_path
):
    from rayformers.serving.checkpoint import load_checkpoint

    remote = Location.parse(s3_uri("adapters/one"))
    remote.upload(tiny_checkpoint("text-classification", method="lora", adapter_seed=2))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    base = tiny_checkpoint("text-classification", method="lora", adapter_seed=1)
    loaded = load_checkpoint(str(base))
    seen: list[Path] = []
    load = type(loaded.model).load_adapter
    monkeypatch.setattr(
        type(loaded.model),
        "load_adapter",
        lambda model, path, **kw: (seen.append(Path(path)), load(model, path, **kw))[1],
    )
    loaded.add_adapter("one", str(remote))
    assert loaded.adapter_names == ["default", "one"]
    assert seen and seen[0].is_relative_to(tmp_path) and not seen[0].exists()
    assert list(tmp_path.iterdir()) == []  # nothing of the download is left


def test_a_request_cancelled_after_its_batch_formed_leaves_its_adapter_to_the_batch(
    tiny_checkpoint, serve_cache
):
    """Review finding: a request cancelled (client gone, deadline passed) once its batch had formed
    released its hold at once, so an evicted adapter could be removed before the batch's group for it
    ran: a 500 and a health strike. The batch holds its adapters until its last group ran."""
    one = str(tiny_checkpoint("text-classification", method="lora", adapter_seed=2))
    two = str(tiny_checkpoint("text-classification", method="lora", adapter_seed=3))
    replica = _replica(tiny_checkpoint, {"one": one, "two": two})

    async def scenario():
        await replica._adapter("two")
        await replica._adapter("one")  # both loaded: the two requests below queue together
        busy, release = threading.Event(), threading.Event()
        blocker = asyncio.get_running_loop().run_in_executor(
            replica._pool, lambda: (busy.set(), release.wait(30))
        )
        await asyncio.to_thread(busy.wait, 10)
        other = asyncio.ensure_future(replica.answer(["a fine film"], {}, "two"))  # its group runs first
        gone = asyncio.ensure_future(replica.answer(["a fine film"], {}, "one"))
        for _ in range(200):
            await asyncio.sleep(0.02)
            if replica._batcher._in_flight == 2 and not replica._batcher.waiting:
                break  # both are in one batch, waiting for the model thread
        assert replica._batcher._in_flight == 2 and not replica._batcher.waiting
        gone.cancel()
        slot = getattr(replica, "__serve_multiplex_wrapper").models["one"]
        await asyncio.to_thread(slot.__del__)  # Serve evicts "one" meanwhile
        await asyncio.sleep(0.3)  # a removal queued now would run before the batch's group for "one"
        release.set()
        await blocker
        answered = await other
        await asyncio.sleep(0.3)
        return answered

    answered = asyncio.run(scenario())
    assert answered.error is None and replica._failures == 0
    assert replica.loaded.adapter_names == ["default", "two"]  # "one" went, once the batch was done


def test_an_adapter_whose_load_was_cancelled_is_removed_once_loaded(
    tiny_checkpoint, serve_cache, monkeypatch
):
    """Review finding: Serve keeps no entry for a load whose request went away, so the adapter it loaded
    sat outside the LRU, never evicted."""
    import time

    one = str(tiny_checkpoint("text-classification", method="lora", adapter_seed=2))
    replica = _replica(tiny_checkpoint, {"one": one})
    add = replica.loaded.add_adapter
    monkeypatch.setattr(replica.loaded, "add_adapter", lambda *a: (time.sleep(0.5), add(*a))[1])

    async def scenario():
        request = asyncio.ensure_future(replica.answer(["a fine film"], {}, "one"))
        await asyncio.sleep(0.1)  # the load is under way
        request.cancel()
        await asyncio.sleep(1.5)
        return replica._adapters.removed

    assert asyncio.run(scenario()) == 1 and replica.loaded.adapter_names == ["default"]
