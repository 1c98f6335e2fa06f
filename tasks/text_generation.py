"""Text generation (causal language modelling): continue a text.

Training appends end-of-text to each text and learns every next token (perplexity); `packing` cuts the
concatenated texts into blocks. Serving runs batched `generate` with left padding, stop sequences, token
usage for OpenAI-style responses, and streaming. Outputs have the `text-generation` pipeline's shape:
`[{"generated_text": ...}]` per input. `predict_with_usage` returns the same outputs plus a
`GenerationUsage` per input (prompt and completion tokens, finish reason); `stream` yields text deltas
whose concatenation is exactly the completion `predict` returns with `return_full_text=False`, and holds
its usage once exhausted.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, PrivateAttr

from rayformers.data.preprocess import Columns, Mode, model_inputs, truncated_rows
from rayformers.manifest import PreprocessSettings
from rayformers.tasks.base import Playground, Task
from rayformers.tasks.evaluation import LanguageModelEvaluator
from rayformers.tasks.handler import Handler, InputError
from rayformers.tasks.schemas import MAX_NEW_TOKENS, SamplingParameters, StopString

__all__ = [
    "TASK",
    "GenerationParameters",
    "GenerationUsage",
    "TextGeneration",
    "TextGenerationHandler",
    "TextStream",
    "TokenSink",
    "tokenize_causal_lm",
]


class GenerationParameters(SamplingParameters):
    max_new_tokens: int | None = Field(  # type: ignore[assignment]
        default=32,
        ge=1,
        le=MAX_NEW_TOKENS,
        description=f"Most tokens to generate. null: as many as the model's positions leave after the prompt, "
        f"at most {MAX_NEW_TOKENS} (what an OpenAI chat without max_tokens asks for).",
    )
    stop: list[StopString] = Field(
        default_factory=list, max_length=16, description="Cut the text at the first of these strings."
    )
    return_full_text: bool = Field(default=True, description="Prefix the prompt to the generated text.")
    _sink: TokenSink | None = PrivateAttr(default=None)

    @property
    def sink(self) -> TokenSink | None:
        """Where this request's tokens stream to as they are generated (None: answered whole)."""
        return self._sink

    def streaming_to(self, sink: TokenSink) -> GenerationParameters:
        """These parameters, for a request streamed to `sink`."""
        copy = self.model_copy()
        copy._sink = sink
        return copy


def tokenize_causal_lm(
    batch: Mapping[str, Sequence[Any]], tokenizer: Any, settings: PreprocessSettings, mode: Mode = "train"
) -> Columns:
    """Causal LM. Training appends EOS to each text; with `packing`, a batch's texts are concatenated
    and cut into blocks of `max_length` (the last, shorter block is kept, so no token is lost)."""
    texts = list(batch["text"])
    if mode == "inference":
        encoding = tokenizer(
            texts,
            add_special_tokens=True,
            truncation=settings.truncation,
            max_length=settings.max_length if settings.truncation else None,
        )
        out = model_inputs(encoding)
        out["truncated"] = truncated_rows(encoding, settings.max_length, len(texts))
        return out
    ids = tokenizer(texts, add_special_tokens=True)["input_ids"]
    eos = tokenizer.eos_token_id
    if eos is not None:
        ids = [row if row and row[-1] == eos else [*row, eos] for row in ids]
    size = settings.max_length
    if settings.packing:
        stream = [t for row in ids for t in row]
        blocks = [stream[i : i + size] for i in range(0, len(stream), size)]
        truncated = [False] * len(blocks)
    else:
        truncated = [len(row) > size for row in ids]
        blocks = [row[:size] for row in ids]
    return {"input_ids": blocks, "attention_mask": [[1] * len(b) for b in blocks], "truncated": truncated}


def _no_trailing_eos(tokenizer: Any) -> None:
    """A causal LM's prompt must not end with an end-of-text token. A tokenizer whose template closes
    every text (`<s> $A </s>`, as RoBERTa/BART's do) gets one that only opens it (`<s> $A`), so that
    `transformers.pipeline("text-generation")` on a checkpoint continues a prompt rather than a
    finished text, and sees the same ids serving does. Training still ends each text with EOS."""
    from tokenizers import processors

    ids = tokenizer("a")["input_ids"]
    closers = {tokenizer.eos_token_id, tokenizer.sep_token_id} - {None}
    if len(ids) < 2 or ids[-1] not in closers:
        return
    opener = ids[0] if ids[0] in {tokenizer.bos_token_id, tokenizer.cls_token_id} - {None} else None
    if opener is None:
        tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B")
        return
    token = tokenizer.convert_ids_to_tokens(opener)
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{token} $A", pair=f"{token} $A $B", special_tokens=[(token, opener)]
    )


@dataclass
class GenerationUsage:
    """Token counts of one completion, as OpenAI's `usage` and `finish_reason` report them."""

    prompt_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length"]

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class _Finished:
    """Marks each row done at end-of-text, one of its stop strings, its own token limit, or when its
    consumer is gone, and remembers after how many new tokens: that count is the usage, and the text is
    cut there. Rows of one `generate` call may ask for different limits and stops."""

    def __init__(
        self,
        prompt_length: int,
        limits: list[int],
        stops: list[list[str]],
        eos: set[int],
        tokenizer: Any,
        cancelled: list[threading.Event | None],
    ) -> None:
        self.prompt_length = prompt_length
        self.limits, self.stops, self.eos, self.tokenizer = limits, stops, eos, tokenizer
        self.cancelled = cancelled
        self.finished_at: list[int | None] = [None] * len(limits)
        self.stopped = [False] * len(limits)
        """Ended by end-of-text or a stop string (finish reason "stop"), not by its limit."""
        # tokens: enough to hold any stop string
        self.tails = [max((len(x) for x in s), default=0) + 8 for s in stops]

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        new = input_ids[:, self.prompt_length :]
        count = new.shape[1]
        for row in range(len(new)):
            if self.finished_at[row] is not None:
                continue
            cancel = self.cancelled[row]
            stops = self.stops[row]
            last = int(new[row, -1])
            text = (
                self.tokenizer.decode(new[row, -self.tails[row] :].tolist(), skip_special_tokens=True)
                if stops
                else ""
            )
            if last in self.eos or any(s in text for s in stops):
                self.finished_at[row], self.stopped[row] = count, True
            elif count >= self.limits[row] or (cancel is not None and cancel.is_set()):
                self.finished_at[row] = count
        return torch.tensor([f is not None for f in self.finished_at], device=input_ids.device)


class TokenSink:
    """Where one streamed row's text goes as it is generated: `emit(delta)` for each settled piece of
    text, then `done(usage)` once. Setting `cancelled` (the client is gone) ends that row's generation
    at the next token, without touching the other rows of its batch."""

    def __init__(
        self, emit: Callable[[str], None], done: Callable[[GenerationUsage | BaseException], None]
    ) -> None:
        self.emit, self.done = emit, done
        self.cancelled = threading.Event()


class _RowDeltas:
    """Turns one row's new tokens into settled text deltas for its sink; their concatenation is exactly
    the completion `predict` returns."""

    def __init__(self, handler: TextGenerationHandler, sink: TokenSink, stops: list[str]) -> None:
        self.handler, self.sink, self.stops = handler, sink, stops
        self.tokens: list[int] = []
        self.emitted = ""

    def add(self, token: int) -> None:
        self.tokens.append(token)
        text, stopped = self.handler.completion(self.tokens, self.stops)
        safe = text if stopped else _settled(text, self.stops)
        self._emit(safe)

    def close(self, text: str) -> None:
        self._emit(text)

    def _emit(self, text: str) -> None:
        if len(text) > len(self.emitted) and text.startswith(self.emitted):
            self.sink.emit(text[len(self.emitted) :])
            self.emitted = text


class _BatchStreamer:
    """What `generate` asks of a streamer (`put`, `end`), for a whole batch: each step's token of each
    streamed row goes to that row's deltas until the row is finished."""

    def __init__(self, rows: list[_RowDeltas | None], finished: _Finished) -> None:
        self.rows, self.finished = rows, finished
        self.prompt_seen = False
        self.step = 0

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # generate() first pushes the prompt
            self.prompt_seen = True
            return
        self.step += 1
        tokens = value.reshape(-1).tolist()
        for row, deltas in enumerate(self.rows):
            end = self.finished.finished_at[row]
            if deltas is not None and (end is None or self.step <= end):
                deltas.add(int(tokens[row]))

    def end(self) -> None:
        pass


def _settled(text: str, stops: list[str]) -> str:
    """The part of `text` later tokens cannot change: trailing whitespace (decoders may fold it into the
    next token), an incomplete character, and a partial stop string are held back."""
    end = len(text.rstrip().rstrip("\ufffd"))
    for stop in stops:
        for size in range(min(len(stop) - 1, end), 0, -1):
            if text[:end].endswith(stop[:size]):
                end -= size
                break
    return text[:end]


class TextStream(Iterator[str]):
    """Text deltas of one completion; `usage` is set once the stream is exhausted. `close()` (or
    leaving a `for` loop early and dropping the stream) stops generation."""

    def __init__(self, deltas: Generator[str, None, None]) -> None:
        self._deltas = deltas
        self.usage: GenerationUsage | None = None

    def __next__(self) -> str:
        return next(self._deltas)

    def close(self) -> None:
        self._deltas.close()


class TextGenerationHandler(Handler):
    """Continues each prompt. Requests that sample alike share one `generate` call, prompts left-padded,
    each row with its own token limit, stop strings and return_full_text, and, when streamed, its own
    sink: so concurrent streams are generated together, a token of each per step."""

    warmup_parameters = {"max_new_tokens": 2}
    reports_usage = True
    # A generation takes seconds and concurrent ones end together, so their clients' next requests
    # arrive some ms apart: waiting for them (up to 100 ms, only while fewer than the last batch held
    # are queued) gathers them into one pass instead of two.
    batch_wait_s = 0.1

    def forward_key(self, parameters: Any) -> str:
        """Rows share a `generate` call when they decode alike; limits, stops and return_full_text are
        per row."""
        kwargs = parameters.generate_kwargs()
        kwargs.pop("max_new_tokens")
        return json.dumps([kwargs, parameters.seed], sort_keys=True)

    def call_tokens(self, inputs: Sequence[Any], parameters: GenerationParameters) -> int:
        """Each prompt (its last max_length tokens at most) and the tokens it may generate."""
        new = parameters.max_new_tokens or MAX_NEW_TOKENS
        return sum(self.row_tokens(item) + new for item in inputs)

    def _predict(self, inputs: list[str], parameters: list[GenerationParameters]) -> list[Any]:
        return self._generate(inputs, parameters)

    @property
    def positions(self) -> int:
        """The most tokens, prompt and new ones together, the model can attend to."""
        limit = getattr(self.model.config, "max_position_embeddings", None)
        return int(limit) if limit else self.settings.max_length + MAX_NEW_TOKENS

    def new_token_limits(self, prompts: list[list[int]], wanted: list[int | None]) -> list[int]:
        """Each row's token limit: as asked, or (None) what the model's positions leave after its prompt,
        at most MAX_NEW_TOKENS."""
        return [
            w if w is not None else min(MAX_NEW_TOKENS, self.positions - len(p))
            for p, w in zip(prompts, wanted, strict=True)
        ]

    def prompt_ids(self, inputs: list[str], max_new_tokens: int | list[int | None] | None) -> list[list[int]]:
        """Prompt token ids through the preprocessing function. Two differences from training rows,
        both because a prompt is to be continued: a trailing end-of-text token is dropped, and an
        over-long prompt loses its beginning, not its end (keeping the last `max_length` tokens)."""
        untruncated = self.settings.model_copy(update={"truncation": False})
        rows = self.tokenize({"text": inputs}, untruncated)["input_ids"]
        limit = self.positions
        wanted = max_new_tokens if isinstance(max_new_tokens, list) else [max_new_tokens] * len(rows)
        prompts = []
        for i, (row, asked) in enumerate(zip(rows, wanted, strict=True)):
            if len(row) > 1 and row[-1] == self.tokenizer.eos_token_id:
                row = row[:-1]
            row = row[-self.settings.max_length :]
            if not row:
                raise InputError(f"inputs[{i}]", "the prompt is empty and this tokenizer adds no start token")
            new_tokens = 1 if asked is None else asked  # unset: whatever room is left, but some
            if len(row) + new_tokens > limit:
                raise InputError(
                    "parameters.max_new_tokens",
                    f"{new_tokens} new tokens after a {len(row)}-token prompt exceed the model's {limit} "
                    f"positions; ask for at most {limit - len(row)}",
                )
            prompts.append(row)
        return prompts

    def _run(self, kwargs: dict[str, Any], seed: int | None) -> Any:
        import torch

        if seed is not None:
            torch.manual_seed(seed)
        with torch.inference_mode():
            return self.model.generate(**kwargs)

    def completion(self, new_tokens: list[int], stops: list[str]) -> tuple[str, bool]:
        """Decoded new tokens cut at the earliest stop string, and whether one was found."""
        text = self.tokenizer.decode(new_tokens, skip_special_tokens=True)
        cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
        return (text[: min(cuts)], True) if cuts else (text, False)

    def _generate(
        self, inputs: list[str], parameters: list[GenerationParameters]
    ) -> list[tuple[Any, GenerationUsage]]:
        """One `generate` call for every row (left-padded: a decoder continues from the right end)."""
        import torch
        from transformers import StoppingCriteriaList

        wanted = [p.max_new_tokens for p in parameters]
        prompts = self.prompt_ids(inputs, wanted)
        limits = self.new_token_limits(prompts, wanted)
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        eos_ids |= {self.tokenizer.eos_token_id} - {None}
        sinks = [p.sink for p in parameters]
        stops = [p.stop for p in parameters]
        finished = _Finished(
            width, limits, stops, eos_ids, self.tokenizer, [s.cancelled if s else None for s in sinks]
        )
        rows = [_RowDeltas(self, s, stop) if s else None for s, stop in zip(sinks, stops, strict=True)]
        kwargs = {
            **parameters[0].generate_kwargs(),
            "max_new_tokens": max(limits),
            "input_ids": input_ids,
            "attention_mask": attention,
            "pad_token_id": pad,
            "stopping_criteria": StoppingCriteriaList([finished]),
            "streamer": _BatchStreamer(rows, finished) if any(sinks) else None,
        }
        try:
            sequences = self._run(kwargs, parameters[0].seed)[:, width:].cpu().tolist()
        except BaseException as err:
            for sink in sinks:
                if sink is not None:
                    sink.done(err)
            raise
        results = []
        for row, (text, tokens) in enumerate(zip(inputs, sequences, strict=True)):
            count = finished.finished_at[row] or min(len(tokens), limits[row])
            new, stopped = self.completion(tokens[:count], stops[row])
            usage = GenerationUsage(
                prompt_tokens=len(prompts[row]),
                completion_tokens=count,
                finish_reason="stop" if finished.stopped[row] or stopped else "length",
            )
            deltas = rows[row]
            if deltas is not None:
                deltas.close(new)
                deltas.sink.done(usage)
            full = parameters[row].return_full_text
            results.append(([{"generated_text": text + new if full else new}], usage))
        return results

    def stream(
        self, input: str, parameters: GenerationParameters | dict[str, Any] | None = None
    ) -> TextStream:
        """Text deltas of `input`'s completion as they are generated (the prompt is not repeated); the
        in-process form of what a replica does for many streams at once."""
        events: queue.Queue[tuple[str, Any]] = queue.Queue()
        sink = TokenSink(lambda delta: events.put(("delta", delta)), lambda end: events.put(("end", end)))
        params = self.parse_parameters(parameters).streaming_to(sink)
        failure: list[BaseException] = []

        def target() -> None:
            try:
                self.predict([input], params)
            except BaseException as err:  # re-raised in the consumer, which owns the request
                failure.append(err)
                events.put(("end", err))

        worker = threading.Thread(target=target, name="rayformers-generate", daemon=True)

        def deltas() -> Generator[str, None, None]:
            worker.start()
            try:
                while True:
                    kind, value = events.get()
                    if kind == "delta":
                        yield value
                        continue
                    if isinstance(value, BaseException):
                        raise failure[0] if failure else value
                    stream.usage = value
                    return
            finally:
                sink.cancelled.set()
                worker.join()

        stream = TextStream(deltas())
        return stream


class CausalLanguageModelEvaluator(LanguageModelEvaluator):
    shifted = True


class TextGeneration(Task):
    name = "text-generation"
    summary = "Causal language modelling: continue a text."
    columns = ("text",)
    auto_model = "AutoModelForCausalLM"
    peft_task_type = "CAUSAL_LM"
    metrics = ("perplexity",)
    default_metric = "perplexity"
    lower_is_better = frozenset({"loss", "perplexity"})
    pipeline_task = "text-generation"
    capabilities = frozenset({"generate"})
    causal_lm = True
    Parameters = GenerationParameters
    playground = Playground(form="prompt", result="text")
    handler = TextGenerationHandler
    preprocess = staticmethod(tokenize_causal_lm)
    evaluator_class = CausalLanguageModelEvaluator

    def prepare_tokenizer(self, tokenizer: Any, reload: Callable[..., Any]) -> Any:
        _no_trailing_eos(tokenizer)
        return tokenizer


TASK = TextGeneration()
