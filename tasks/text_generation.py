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

import queue
import threading
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from rayformers.data.preprocess import Columns, Mode, model_inputs, truncated_rows
from rayformers.manifest import PreprocessSettings
from rayformers.tasks.base import Task
from rayformers.tasks.evaluation import LanguageModelEvaluator
from rayformers.tasks.handler import Handler, InputError
from rayformers.tasks.schemas import SamplingParameters, StopString

__all__ = [
    "TASK",
    "GenerationParameters",
    "GenerationUsage",
    "TextGeneration",
    "TextGenerationHandler",
    "TextStream",
    "tokenize_causal_lm",
]


class GenerationParameters(SamplingParameters):
    stop: list[StopString] = Field(
        default_factory=list, max_length=16, description="Cut the text at the first of these strings."
    )
    return_full_text: bool = Field(default=True, description="Prefix the prompt to the generated text.")


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
    """Marks a row done at end-of-text or a stop string, and remembers after how many new tokens:
    that count is the usage, and the text is cut there. `cancel` stops every row (client gone)."""

    def __init__(
        self, prompt_length: int, rows: int, eos: set[int], stops: list[str], tokenizer: Any
    ) -> None:
        self.prompt_length = prompt_length
        self.finished_at: list[int | None] = [None] * rows
        self.eos, self.stops, self.tokenizer = eos, stops, tokenizer
        self.tail = max((len(s) for s in stops), default=0) + 8  # tokens: enough to hold any stop string
        self.cancel = threading.Event()

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        new = input_ids[:, self.prompt_length :]
        for row in range(len(new)):
            if self.finished_at[row] is not None:
                continue
            last = int(new[row, -1])
            tail = new[row, -self.tail :].tolist() if self.stops else []
            text = self.tokenizer.decode(tail, skip_special_tokens=True) if tail else ""
            if last in self.eos or any(s in text for s in self.stops):
                self.finished_at[row] = new.shape[1]
        done = [f is not None or self.cancel.is_set() for f in self.finished_at]
        return torch.tensor(done, device=input_ids.device)


class _TokenQueue:
    """Hands each new token from the generating thread to the consuming one (what `generate` asks of a
    streamer: `put` and `end`)."""

    def __init__(self) -> None:
        self.queue: queue.Queue[list[int] | None] = queue.Queue()
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # generate() first pushes the prompt
            self.prompt_seen = True
            return
        self.queue.put([int(t) for t in value.reshape(-1)])

    def end(self) -> None:
        self.queue.put(None)


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
    """Continues each prompt; one `generate` call per predict, prompts left-padded."""

    warmup_parameters = {"max_new_tokens": 2}

    def _predict(self, inputs: list[str], parameters: GenerationParameters) -> list[Any]:
        return [output for output, _ in self._generate(inputs, parameters)]

    def predict_with_usage(
        self, inputs: list[str], parameters: GenerationParameters | dict[str, Any] | None = None
    ) -> tuple[list[Any], list[GenerationUsage]]:
        """`predict`'s outputs and, per input, its token usage and finish reason."""
        items = self.parse_inputs(inputs)
        params = self.parse_parameters(parameters)
        pairs = self.in_length_order(items, lambda batch: self._generate(batch, params))
        return [o for o, _ in pairs], [u for _, u in pairs]

    def prompt_ids(self, inputs: list[str], max_new_tokens: int) -> list[list[int]]:
        """Prompt token ids through the preprocessing function. Two differences from training rows,
        both because a prompt is to be continued: a trailing end-of-text token is dropped, and an
        over-long prompt loses its beginning, not its end (keeping the last `max_length` tokens)."""
        untruncated = self.settings.model_copy(update={"truncation": False})
        rows = self.tokenize({"text": inputs}, untruncated)["input_ids"]
        limit = getattr(self.model.config, "max_position_embeddings", None) or self.settings.max_length + 1024
        prompts = []
        for i, row in enumerate(rows):
            if len(row) > 1 and row[-1] == self.tokenizer.eos_token_id:
                row = row[:-1]
            row = row[-self.settings.max_length :]
            if not row:
                raise InputError(f"inputs[{i}]", "the prompt is empty and this tokenizer adds no start token")
            if len(row) + max_new_tokens > limit:
                raise InputError(
                    "parameters.max_new_tokens",
                    f"{max_new_tokens} new tokens after a {len(row)}-token prompt exceed the model's {limit} "
                    f"positions; ask for at most {limit - len(row)}",
                )
            prompts.append(row)
        return prompts

    def _start(
        self, inputs: list[str], parameters: GenerationParameters, streamer: Any = None
    ) -> tuple[Any, _Finished, int]:
        """Everything `generate` needs, left-padded (a decoder continues from the right end)."""
        import torch
        from transformers import StoppingCriteriaList

        prompts = self.prompt_ids(inputs, parameters.max_new_tokens)
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        eos_ids |= {self.tokenizer.eos_token_id} - {None}
        finished = _Finished(width, len(prompts), eos_ids, parameters.stop, self.tokenizer)
        kwargs = {
            "input_ids": input_ids,
            "attention_mask": attention,
            "pad_token_id": pad,
            "stopping_criteria": StoppingCriteriaList([finished]),
            "streamer": streamer,
            **parameters.generate_kwargs(),
        }
        return kwargs, finished, width

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
        self, inputs: list[str], parameters: GenerationParameters
    ) -> list[tuple[Any, GenerationUsage]]:
        kwargs, finished, width = self._start(inputs, parameters)
        sequences = self._run(kwargs, parameters.seed)[:, width:].cpu().tolist()
        results = []
        for row, (text, tokens) in enumerate(zip(inputs, sequences, strict=True)):
            count = finished.finished_at[row] or len(tokens)
            new, stopped = self.completion(tokens[:count], parameters.stop)
            usage = GenerationUsage(
                prompt_tokens=int(kwargs["attention_mask"][row].sum()),
                completion_tokens=count,
                finish_reason="stop" if finished.finished_at[row] is not None or stopped else "length",
            )
            results.append(([{"generated_text": text + new if parameters.return_full_text else new}], usage))
        return results

    def stream(
        self, input: str, parameters: GenerationParameters | dict[str, Any] | None = None
    ) -> TextStream:
        """Text deltas of `input`'s completion as they are generated (the prompt is not repeated)."""
        (text,) = self.parse_inputs([input])
        params = self.parse_parameters(parameters)
        tokens = _TokenQueue()
        kwargs, finished, _ = self._start([text], params, streamer=tokens)
        stream = TextStream(
            self._deltas(kwargs, finished, tokens, params, lambda usage: setattr(stream, "usage", usage))
        )
        return stream

    def _deltas(
        self,
        kwargs: dict[str, Any],
        finished: _Finished,
        tokens: _TokenQueue,
        parameters: GenerationParameters,
        on_usage: Callable[[GenerationUsage], None],
    ) -> Generator[str, None, None]:
        """Runs `generate` in a thread (it blocks) and turns its tokens into settled text deltas."""
        failure: list[BaseException] = []

        def target() -> None:
            try:
                self._run(kwargs, parameters.seed)
            except BaseException as err:  # re-raised in the consumer, which owns the request
                failure.append(err)
                tokens.end()

        worker = threading.Thread(target=target, name="rayformers-generate", daemon=True)
        worker.start()
        new: list[int] = []
        emitted = ""
        try:
            while (step := tokens.queue.get()) is not None:
                new.extend(step)
                text, stopped = self.completion(new, parameters.stop)
                safe = text if stopped else self._settled(text, parameters.stop)
                if len(safe) > len(emitted) and safe.startswith(emitted):
                    yield safe[len(emitted) :]
                    emitted = safe
                if stopped:
                    finished.cancel.set()
            if failure:
                raise failure[0]
            count = finished.finished_at[0] or len(new)
            text, stopped = self.completion(new[:count], parameters.stop)
            if len(text) > len(emitted):
                yield text[len(emitted) :]
            reason = "stop" if finished.finished_at[0] is not None or stopped else "length"
            on_usage(GenerationUsage(int(kwargs["attention_mask"][0].sum()), count, reason))
        finally:
            finished.cancel.set()
            worker.join()

    @staticmethod
    def _settled(text: str, stops: list[str]) -> str:
        """The part of `text` later tokens cannot change: trailing whitespace (decoders may fold it
        into the next token), an incomplete character, and a partial stop string are held back."""
        end = len(text.rstrip().rstrip("\ufffd"))
        for stop in stops:
            for size in range(min(len(stop) - 1, end), 0, -1):
                if text[:end].endswith(stop[:size]):
                    end -= size
                    break
        return text[:end]


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
    handler = TextGenerationHandler
    preprocess = staticmethod(tokenize_causal_lm)
    evaluator_class = CausalLanguageModelEvaluator

    def prepare_tokenizer(self, tokenizer: Any, reload: Callable[..., Any]) -> Any:
        _no_trailing_eos(tokenizer)
        return tokenizer


TASK = TextGeneration()
