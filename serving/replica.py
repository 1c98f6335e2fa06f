"""The model replica of one served app: a task handler behind dynamic batching and LoRA multiplexing.

One replica loads one checkpoint, warms it up before it reports healthy, and answers
`answer(inputs, parameters, adapter)`: from its own HTTP routes (`rayformers.serving.ingress`, one hop
from HAProxy or Serve's proxy to the model) and, through `predict`, from the gateway's OpenAI routes. Calls are
gathered into batches: a batch is whatever waited while the model worked (so an idle replica answers
at once and a busy one batches: `rayformers.serving.batching`), split only by what changes the forward
(the adapter, and parameters for tasks whose forward depends on them), and each group is one handler
call that cuts its inputs into length-sorted forwards under the token budget. Every request gets back
its own outputs plus the size of the batch it rode in. A replica admits `max_ongoing_requests + max_queued_requests` requests at once and
answers the rest 503 at once, so a client is told to come back instead of waiting without end. Model
work runs on one thread per replica, so adapter switches never interleave and the event loop stays free
for health checks and new requests; torch's intra-op threads use the CPUs the replica was given.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError
from ray import serve

from rayformers.serving.access import resolve_keys
from rayformers.serving.adapters import AdapterSlot, ResidentAdapters
from rayformers.serving.args import AppArgs
from rayformers.serving.batching import Batcher
from rayformers.serving.errors import InputError, OverloadedError, TooManyTokensError, UnknownAdapterError
from rayformers.serving.metrics import ServingMetrics, app_label
from rayformers.tasks.handler import DEFAULT_CALL_TOKENS

__all__ = [
    "MAX_ADAPTERS_PER_REPLICA",
    "ModelFailure",
    "ModelReplica",
    "Reply",
    "ReplyError",
    "client_mistake",
    "is_storage_path",
    "torch_threads",
]

logger = logging.getLogger("ray.serve")

# Adapters kept loaded per replica (least recently used are unloaded past this).
MAX_ADAPTERS_PER_REPLICA = 16
# Consecutive model failures after which the replica reports itself unhealthy and Serve replaces it.
UNHEALTHY_AFTER = 3


class ReplyError(BaseModel):
    """Why one request failed: its own input, its size (more tokens than one model call may hold), an
    unknown adapter, a full replica, or the model."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["input", "too_large", "adapter", "overloaded", "model"]
    message: str
    field: str | None = None
    known: list[str] | None = None


class Reply(BaseModel):
    """What one request gets back from the replica."""

    model_config = ConfigDict(extra="forbid")

    outputs: list[Any] = []
    usage: list[dict[str, Any]] | None = None
    """Per input, where the task counts tokens (generation, ranking): OpenAI's `usage`."""
    batch_size: int = 1
    error: ReplyError | None = None


@dataclass
class _Request:
    inputs: list[Any]
    parameters: Any
    """The handler's validated `Parameters`."""
    adapter: str | None
    tokens: int = 0
    """The handler's estimate of the tokens its forwards hold (`call_tokens`)."""


def torch_threads(num_cpus: float | None) -> int:
    """torch's intra-op threads for a replica: the CPUs it reserves (rounded up), or, when it names none,
    every core its process may run on. Ray itself sets OMP_NUM_THREADS=1 for a 1-CPU actor."""
    if num_cpus is not None:
        return max(1, math.ceil(num_cpus))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def reserved_gpus(configured: float) -> float:
    """The GPUs Ray reserved for this replica: its deployment's `ray_actor_options`, which a Serve
    config's `deployments:` section sets over the app's arguments; `configured` outside a Ray worker."""
    import ray

    context = ray.get_runtime_context() if ray.is_initialized() else None
    if context is None or context.worker.mode != ray.WORKER_MODE:  # a driver has no reserved resources
        return configured
    return float(context.get_assigned_resources().get("GPU", 0.0))


class ModelReplica:
    """One replica: checkpoint loaded, handler warmed, batched and multiplexed. Serve wraps it (with its
    HTTP routes) in `rayformers.serving.ingress.app_deployment`."""

    def __init__(self, args: dict[str, Any]) -> None:
        import torch

        from rayformers.serving.checkpoint import build_handler, load_checkpoint

        self.args = AppArgs.model_validate(args)
        resolve_keys(self.args.http)  # no keys where the build had some: fail before loading the model
        # Requests are tokenized on the model thread, next to torch's own threads; Rust's thread pool
        # would compete with them. Set here, not only by `rayformers serve`'s Ray, so that `serve build`
        # deployments and RayServices tokenize alike; an operator's own setting stays.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        on_gpu = reserved_gpus(self.args.num_gpus) > 0 and torch.cuda.is_available()
        threads = torch_threads(self.args.num_cpus)
        # torch's intra-op thread count is the calling thread's (OpenMP): set it where the model runs.
        self._pool = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="model", initializer=torch.set_num_threads, initargs=(threads,)
        )
        self.loaded = load_checkpoint(
            self.args.checkpoint,
            self.args.task,
            device="cuda" if on_gpu else "cpu",
            dtype=self.args.dtype,
            merge_lora=self.args.merge_lora,
        )
        self.handler = build_handler(self.loaded, max_batch_tokens=self.args.max_batch_tokens)
        # Labelled as the guard labels this app's requests: by its Serve application's name.
        self._metrics = ServingMetrics(app_label(self.args.name))
        self._adapters = ResidentAdapters(self.loaded, self._metrics)
        self._pool.submit(self.handler.warmup).result()
        self._failures = 0
        self._pending = 0
        self._admit = self.args.admission_limit
        self._call_tokens = self.args.max_call_tokens or DEFAULT_CALL_TOKENS.get(
            self.handler.device.type, DEFAULT_CALL_TOKENS["cpu"]
        )
        self._batcher: Batcher[_Request, Reply] = Batcher(
            self._batched,
            self.args.max_batch_size,
            self.handler.batch_wait_s
            if self.args.batch_wait_timeout_s is None
            else self.args.batch_wait_timeout_s,
            cost=lambda request: request.tokens,
            budget=self._call_tokens,
            observer=self._metrics,
        )

    def info(self) -> dict[str, Any]:
        """Task, labels, base model, metrics: what `GET /{app}/info` shows; where the checkpoint is
        stored only when `serve.expose_paths` is set."""
        shown = {"app": self.args.name, **self.loaded.info(), "adapters": sorted(self.args.adapters)}
        if self.args.http.expose_paths:
            return {**shown, "checkpoint": self.args.checkpoint}
        if is_storage_path(shown.get("base_model")):
            shown["base_model"] = None
        return shown

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Token counts, for OpenAI `usage`."""
        tokenizer = self.loaded.tokenizer
        return [len(tokenizer(t)["input_ids"]) for t in texts]

    def chat_prompt(self, messages: list[dict[str, str]]) -> Reply:
        """Chat messages as this model's prompt (its chat template, if it has one): a reply whose one
        output is the prompt. What the client got wrong (text that is not Unicode, messages the
        template refuses with `raise_exception`, as many do for roles out of order, a chat longer than
        the model reads) is the reply's input error, as `answer`'s are; a template that is itself
        broken stays a server failure."""
        try:
            return Reply(outputs=[self._chat_prompt(messages)])
        except InputError as err:
            return Reply(error=ReplyError(kind="input", message=str(err), field=err.field))

    def _chat_prompt(self, messages: list[dict[str, str]]) -> str:
        from jinja2.exceptions import TemplateError

        from rayformers.serving.openai import chat_prompt

        for where, text in _strings(messages, "messages"):
            if len(text) > self.args.max_input_chars:
                raise _too_long(where, len(text), self.args.max_input_chars)
            if not _is_unicode(text):
                raise InputError(where, _NOT_UNICODE)
        try:
            prompt = chat_prompt(self.loaded.tokenizer, messages)
        except TemplateError as err:
            if type(err) is not TemplateError:  # a syntax or undefined-name error in the template
                raise
            raise InputError("messages", f"the model's chat template refuses these messages: {err}") from None
        # A prompt keeps its last max_length tokens; a chat cut so would lose its system message and
        # first turns without a word, so it is refused instead, as OpenAI's context limit is.
        tokens = len(self.loaded.tokenizer(prompt)["input_ids"])
        limit = self.handler.settings.max_length
        if tokens > limit:
            raise InputError(
                "messages",
                f"the chat is {tokens} tokens in this model's template; it reads at most {limit}: drop or "
                "shorten earlier messages",
            )
        return prompt

    def check_health(self) -> None:
        """Serve replaces a replica whose model keeps failing."""
        if self._failures >= UNHEALTHY_AFTER:
            raise RuntimeError(f"the model failed {self._failures} requests in a row")

    @serve.multiplexed(max_num_models_per_replica=MAX_ADAPTERS_PER_REPLICA)
    async def _adapter(self, name: str) -> AdapterSlot:
        return await self._adapters.load(name, self.args.adapters[name])

    async def predict(self, inputs: list[Any], parameters: dict[str, Any], adapter: str | None) -> Reply:
        """`answer`, for callers that reach the replica through a deployment handle (the gateway)."""
        return await self.answer(inputs, parameters, adapter)

    async def answer(self, inputs: list[Any], parameters: Any, adapter: str | None) -> Reply:
        """Answer one request's inputs (batched with other callers' requests)."""
        if adapter and adapter not in self.args.adapters:
            error = UnknownAdapterError(adapter, sorted(self.args.adapters))
            return Reply(error=ReplyError(kind="adapter", message=str(error), known=error.known))
        mistake = client_mistake(inputs, parameters, self.args.max_input_chars)
        if mistake is not None:
            return Reply(error=ReplyError(kind="input", message=str(mistake), field=mistake.field))
        try:
            params = self.handler.parse_parameters(parameters)
        except ValidationError as err:
            path, problem = _parameter_problem(err)
            return Reply(error=ReplyError(kind="input", message=f"{path}: {problem}", field="parameters"))
        tokens = self.handler.call_tokens(inputs, params)
        if tokens > self._call_tokens:
            message = (
                f"this request needs about {tokens} tokens in one model call (estimated from its "
                f"characters), over this app's limit of {self._call_tokens} "
                "(serve.apps[].max_call_tokens); send fewer or shorter inputs (fewer candidate labels, "
                "documents or new tokens), over several requests"
            )
            return Reply(error=ReplyError(kind="too_large", message=message, field="inputs"))
        if self._admit is not None and self._pending >= self._admit:
            message = (
                f"the replica already holds {self._pending} requests; retry after the delay in Retry-After"
            )
            return Reply(error=ReplyError(kind="overloaded", message=message))
        self._pending += 1
        try:
            with self._adapters.held(adapter):  # an eviction meanwhile waits for this request's answer
                if adapter and not await self._load(adapter):
                    self._metrics.model_errors(1)
                    message = f"adapter {adapter!r} could not be loaded on this replica; its log says why"
                    return Reply(error=ReplyError(kind="model", message=message))
                request = _Request(inputs=inputs, parameters=params, adapter=adapter, tokens=tokens)
                return await self._batcher.submit(request)
        finally:
            self._pending -= 1

    async def _load(self, adapter: str) -> bool:
        """Whether the adapter is (now) loaded. One the operator configured that cannot be loaded (a
        missing directory, another base, a storage error) fails its requests with a 500, and the next
        request tries again; it is no health strike, since a new replica would fail alike."""
        try:
            await self._adapter(adapter)
        except Exception:
            logger.exception("loading adapter %r failed", adapter)
            return False
        return True

    async def _batched(self, requests: list[_Request]) -> list[Reply]:
        groups: dict[tuple[str | None, str], list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault((request.adapter, self.handler.forward_key(request.parameters)), []).append(i)
        replies: list[Reply | None] = [None] * len(requests)
        loop = asyncio.get_running_loop()
        padded = 0
        with contextlib.ExitStack() as holds:
            # The batch holds its adapters until its last group ran: a request of it cancelled meanwhile
            # (its client gone, its deadline passed) releases only its own hold.
            for adapter in dict.fromkeys(a for a, _ in groups):
                holds.enter_context(self._adapters.held(adapter))
            for (adapter, _), members in groups.items():
                group = [requests[i] for i in members]
                answered, tokens = await loop.run_in_executor(self._pool, self._run_group, group, adapter)
                padded += tokens
                for i, reply in zip(members, answered, strict=True):
                    replies[i] = reply.model_copy(update={"batch_size": len(requests)})
        if padded:
            self._metrics.batch_tokens(padded)
        lost = Reply(error=ReplyError(kind="model", message="lost"))
        self._metrics.model_errors(replies.count(None))
        return [r if r is not None else lost for r in replies]

    def _run_group(self, group: list[_Request], adapter: str | None) -> tuple[list[Reply], int]:
        """One handler call for requests that can share forwards; if it fails on input, each request is
        answered alone so one bad input never costs the others their answers. Also returns the padded
        tokens its forwards held."""
        try:
            with self.loaded.using(adapter):
                outputs, usage = self.handler.predict_many_with_usage(
                    [(r.inputs, r.parameters) for r in group]
                )
        except InputError as err:
            if len(group) == 1:
                return [Reply(error=ReplyError(kind="input", message=str(err), field=err.field))], 0
            alone = [self._run_group([request], adapter) for request in group]
            return [replies[0] for replies, _ in alone], sum(tokens for _, tokens in alone)
        except Exception:  # a model failure: answer 500, keep serving, count it for health
            self._failures += 1
            self._metrics.model_errors(len(group))
            logger.exception("model failure on %d requests", len(group))
            # What failed stays in the replica's log: clients learn that it failed, not its internals.
            failed = Reply(error=ReplyError(kind="model", message="the model failed on this request"))
            return [failed] * len(group), 0
        self._failures = 0
        replies = [
            Reply(
                outputs=answer,
                usage=[dataclasses.asdict(u) for u in counted]
                if counted and counted[0] is not None
                else None,
            )
            for answer, counted in zip(outputs, usage, strict=True)
        ]
        return replies, self.handler.stats.padded_tokens

    async def stream(
        self, text: str, parameters: dict[str, Any], adapter: str | None
    ) -> AsyncIterator[dict[str, Any]]:
        """`{"delta": text}` items of one generation as they are produced, then `{"usage": {...}}`
        (text-generation apps). A stream is a request like any other: admitted, batched with the
        requests that decode alike, so concurrent streams are generated together, a token of each per
        step, and the model thread is never held by one of them."""
        from rayformers.tasks.text_generation import TokenSink

        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue[str] = asyncio.Queue()
        sink = TokenSink(lambda delta: loop.call_soon_threadsafe(deltas.put_nowait, delta), lambda end: None)
        mistake = client_mistake([text], parameters, self.args.max_input_chars)
        if mistake is not None:
            raise mistake
        try:
            params = self.handler.parse_parameters(parameters).streaming_to(sink)
        except ValidationError as err:
            raise InputError(*_parameter_problem(err)) from None
        answer = asyncio.ensure_future(self.answer([text], params, adapter))
        try:
            while not answer.done() or not deltas.empty():
                if deltas.empty():
                    waiting = asyncio.ensure_future(deltas.get())
                    await asyncio.wait({waiting, answer}, return_when=asyncio.FIRST_COMPLETED)
                    if not waiting.done():
                        waiting.cancel()
                        continue
                    pieces = [waiting.result()]
                else:
                    pieces = []
                while not deltas.empty():  # what arrived meanwhile goes as one item
                    pieces.append(deltas.get_nowait())
                yield {"delta": "".join(pieces)}
            reply = answer.result()
            if reply.error is not None:
                raise _stream_error(reply.error, adapter)
            yield {"usage": reply.usage[0] if reply.usage else None}
        finally:
            sink.cancelled.set()  # the client left: its row stops at the next token, the batch goes on


_NOT_UNICODE = "not valid Unicode text (a lone surrogate escape such as \\ud800)"


def client_mistake(inputs: list[Any], parameters: Any, max_chars: int | None = None) -> InputError | None:
    """What makes a request the client's mistake before any model sees it: an empty text anywhere in
    its inputs (the contract's 422; a model given nothing to read fails or answers noise), a text over
    `max_chars`, and text that is not Unicode anywhere in it (a lone surrogate such as `"\\ud800"`
    parses as JSON but no tokenizer can encode it)."""
    for where, text in _strings(inputs, "inputs"):
        if not text.strip():
            return InputError(where, "an empty text; send some text to read")
        if max_chars is not None and len(text) > max_chars:
            return _too_long(where, len(text), max_chars)
        if not _is_unicode(text):
            return InputError(where, _NOT_UNICODE)
    for where, text in _strings(parameters, "parameters"):
        if not _is_unicode(text):
            return InputError(where, _NOT_UNICODE)
    return None


def _too_long(where: str, length: int, limit: int) -> InputError:
    return InputError(
        where,
        f"a text of {length} characters, over this app's limit of {limit}; shorten or split it "
        "(serve.apps[].max_input_chars sets the limit)",
    )


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    """Every string under `value` (dict keys included) with its dotted path: `inputs[0].texts[1]`."""
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and not _is_unicode(key):
                yield where, key
            yield from _strings(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _strings(item, f"{where}[{i}]")


def is_storage_path(value: Any) -> bool:
    """Whether `value` names a place in storage (a local path or a cloud URI) rather than a model id
    such as `bert-base-uncased` or `org/model`."""
    if not isinstance(value, str):
        return False
    return (
        value.startswith(("/", "./", "../", "~", "\\"))
        or "://" in value
        or (len(value) > 1 and value[1] == ":")
    )


def _parameter_problem(err: ValidationError) -> tuple[str, str]:
    """The first bad parameter's dotted path (`parameters.top_k`) and what is wrong with it."""
    first = err.errors()[0]
    return f"parameters.{'.'.join(str(p) for p in first['loc'])}", str(first["msg"])


def _stream_error(error: ReplyError, adapter: str | None) -> Exception:
    """A failed stream's reply as the exception the gateway turns into an error event."""
    if error.kind == "adapter":
        return UnknownAdapterError(adapter or "", error.known or [])
    if error.kind == "input":
        return InputError(error.field or "inputs", error.message)
    if error.kind == "overloaded":
        return OverloadedError(error.message)
    if error.kind == "too_large":
        return TooManyTokensError(error.message)
    return ModelFailure(error.message)


class ModelFailure(Exception):
    """A streamed request the model failed on; its message holds no internal detail."""
