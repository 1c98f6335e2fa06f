"""The model deployment of one served app: a task handler behind dynamic batching and LoRA multiplexing.

One replica loads one checkpoint, warms it up before it reports healthy, and answers
`predict(inputs, parameters, adapter)` calls from the app's HTTP ingress (or the OpenAI gateway).
Calls are gathered by `@serve.batch`; a batch is split into groups that share an adapter and
parameters, each group is one handler call (the handler sorts by length to cut padding), and every
request gets back its own outputs plus the size of the batch it rode in. Model work runs on one
thread per replica, so adapter switches never interleave and the event loop stays free for health
checks and new requests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError
from ray import serve

from rayformers.serving.args import AppArgs
from rayformers.serving.errors import InputError, UnknownAdapterError

__all__ = ["MAX_ADAPTERS_PER_REPLICA", "ModelReplica", "Reply", "ReplyError"]

logger = logging.getLogger("ray.serve")

# Adapters kept loaded per replica (least recently used are unloaded past this).
MAX_ADAPTERS_PER_REPLICA = 16
# Consecutive model failures after which the replica reports itself unhealthy and Serve replaces it.
UNHEALTHY_AFTER = 3


class ReplyError(BaseModel):
    """Why one request failed: its own input, an unknown adapter, or the model."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["input", "adapter", "model"]
    message: str
    field: str | None = None
    known: list[str] | None = None


class Reply(BaseModel):
    """What one request gets back from the replica."""

    model_config = ConfigDict(extra="forbid")

    outputs: list[Any] = []
    usage: list[dict[str, Any]] | None = None
    """Per input, for generation: prompt/completion tokens and finish reason (OpenAI's `usage`)."""
    batch_size: int = 1
    error: ReplyError | None = None


class _Request(BaseModel):
    inputs: list[Any]
    parameters: dict[str, Any]
    adapter: str | None


class _AdapterSlot:
    """What `@serve.multiplexed` caches: an adapter loaded into the replica's model. Serve calls
    `__del__` when it evicts the least recently used one."""

    def __init__(self, loaded: Any, name: str) -> None:
        self.loaded, self.name, self._gone = loaded, name, False

    def __del__(self) -> None:
        if not self._gone:
            self._gone = True
            self.loaded.remove_adapter(self.name)


@serve.deployment(name="Model")
class ModelReplica:
    """One replica: checkpoint loaded, handler warmed, batched and multiplexed."""

    def __init__(self, args: dict[str, Any]) -> None:
        import torch

        from rayformers.serving.checkpoint import build_handler, load_checkpoint

        self.args = AppArgs.model_validate(args)
        device = "cuda" if self.args.num_gpus > 0 and torch.cuda.is_available() else "cpu"
        self.loaded = load_checkpoint(
            self.args.checkpoint,
            self.args.task,
            device=device,
            dtype=self.args.dtype,
            merge_lora=self.args.merge_lora,
        )
        self.handler = build_handler(self.loaded)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self.handler.warmup()
        self._failures = 0
        self._batched.set_max_batch_size(self.args.max_batch_size)
        self._batched.set_batch_wait_timeout_s(self.args.batch_wait_timeout_s)
        from ray.serve.metrics import Histogram

        self._batch_sizes = Histogram(
            "rayformers_batch_size",
            description="Requests answered by one batched model call.",
            boundaries=[1, 2, 4, 8, 16, 32, 64, 128],
            tag_keys=("app",),
        )
        self._batch_sizes.set_default_tags({"app": self.args.name})

    def info(self) -> dict[str, Any]:
        """Task, labels, base model, metrics: what `GET /{app}/info` shows."""
        return {"app": self.args.name, **self.loaded.info(), "adapters": sorted(self.args.adapters)}

    def count_tokens(self, texts: list[str], special: bool = True) -> list[int]:
        """Token counts, for OpenAI `usage`."""
        tokenizer = self.loaded.tokenizer
        return [len(tokenizer(t, add_special_tokens=special)["input_ids"]) for t in texts]

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """Chat messages as this model's prompt (its chat template, if it has one)."""
        from rayformers.serving.openai import chat_prompt

        return chat_prompt(self.loaded.tokenizer, messages)

    def check_health(self) -> None:
        """Serve replaces a replica whose model keeps failing."""
        if self._failures >= UNHEALTHY_AFTER:
            raise RuntimeError(f"the model failed {self._failures} requests in a row")

    @serve.multiplexed(max_num_models_per_replica=MAX_ADAPTERS_PER_REPLICA)
    async def _adapter(self, name: str) -> _AdapterSlot:
        directory = self.args.adapters[name]
        await asyncio.get_running_loop().run_in_executor(self._pool, self.loaded.add_adapter, name, directory)
        return _AdapterSlot(self.loaded, name)

    async def predict(self, inputs: list[Any], parameters: dict[str, Any], adapter: str | None) -> Reply:
        """Answer one request's inputs (batched with other callers' requests)."""
        if adapter and adapter not in self.args.adapters:
            error = UnknownAdapterError(adapter, sorted(self.args.adapters))
            return Reply(error=ReplyError(kind="adapter", message=str(error), known=error.known))
        if adapter:
            await self._adapter(adapter)
        return await self._batched(_Request(inputs=inputs, parameters=parameters, adapter=adapter))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _batched(self, requests: list[_Request]) -> list[Reply]:
        self._batch_sizes.observe(len(requests))
        groups: dict[tuple[str | None, str], list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault((request.adapter, json.dumps(request.parameters, sort_keys=True)), []).append(i)
        replies: list[Reply | None] = [None] * len(requests)
        loop = asyncio.get_running_loop()
        for (adapter, _), members in groups.items():
            group = [requests[i] for i in members]
            answered = await loop.run_in_executor(self._pool, self._run_group, group, adapter)
            for i, reply in zip(members, answered, strict=True):
                replies[i] = reply.model_copy(update={"batch_size": len(requests)})
        return [
            r if r is not None else Reply(error=ReplyError(kind="model", message="lost")) for r in replies
        ]

    def _run_group(self, group: list[_Request], adapter: str | None) -> list[Reply]:
        """One handler call for requests that share parameters and adapter; if it fails on input, each
        request is answered alone so one bad input never costs the others their answers."""
        try:
            parameters = self.handler.Parameters.model_validate(group[0].parameters)
        except ValidationError as err:
            first = err.errors()[0]
            message = f"parameters.{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
            return [Reply(error=ReplyError(kind="input", message=message, field="parameters"))] * len(group)
        flat = [x for request in group for x in request.inputs]
        usage: list[dict[str, Any]] | None = None
        try:
            with self.loaded.using(adapter):
                if hasattr(self.handler, "predict_with_usage"):
                    outputs, counted = self.handler.predict_with_usage(flat, parameters)
                    usage = [dataclasses.asdict(u) for u in counted]
                else:
                    outputs = self.handler.predict(flat, parameters)
        except InputError as err:
            if len(group) == 1:
                return [Reply(error=ReplyError(kind="input", message=str(err), field=err.field))]
            return [reply for request in group for reply in self._run_group([request], adapter)]
        except Exception as err:  # a model failure: answer 500, keep serving, count it for health
            self._failures += 1
            logger.exception("model failure on %d inputs", len(flat))
            return [Reply(error=ReplyError(kind="model", message=f"{type(err).__name__}: {err}"))] * len(
                group
            )
        self._failures = 0
        replies, start = [], 0
        for request in group:
            end = start + len(request.inputs)
            replies.append(Reply(outputs=outputs[start:end], usage=usage[start:end] if usage else None))
            start = end
        return replies

    async def stream(
        self, text: str, parameters: dict[str, Any], adapter: str | None
    ) -> AsyncIterator[dict[str, Any]]:
        """`{"delta": text}` items of one generation as they are produced, then `{"usage": {...}}`
        (text-generation apps)."""
        if adapter and adapter not in self.args.adapters:
            raise UnknownAdapterError(adapter, sorted(self.args.adapters))
        if adapter:
            await self._adapter(adapter)
        params = self.handler.Parameters.model_validate(parameters)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def produce() -> None:
            try:
                with self.loaded.using(adapter):
                    stream = self.handler.stream(text, params)
                    for delta in stream:
                        loop.call_soon_threadsafe(queue.put_nowait, ("delta", {"delta": delta}))
                usage = dataclasses.asdict(stream.usage) if stream.usage is not None else None
                loop.call_soon_threadsafe(queue.put_nowait, ("delta", {"usage": usage}))
                loop.call_soon_threadsafe(queue.put_nowait, ("end", None))
            except Exception as err:
                loop.call_soon_threadsafe(queue.put_nowait, ("error", err))

        self._pool.submit(produce)
        while True:
            kind, value = await queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
