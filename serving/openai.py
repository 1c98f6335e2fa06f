"""OpenAI-compatible request and response schemas, how chat messages become one prompt, and the
rerank API that Jina, Cohere-compatible clients and vLLM share.

Only what the served tasks can honour is accepted: `n` must be 1, `logprobs` unset; fields that
clients commonly send and that do not change the answer (`user`, zero penalties) are taken and ignored.
Anything else is a 422 that names it, like every other route.
"""

from __future__ import annotations

import time
import uuid
import weakref
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rayformers.tasks.schemas import MAX_NEW_TOKENS

__all__ = [
    "ChatCompletionRequest",
    "ChatMessage",
    "CompletionRequest",
    "EmbeddingRequest",
    "RerankDocument",
    "RerankRequest",
    "chat_prompt",
    "completion_response",
    "generation_parameters",
    "rerank_response",
    "stream_chunk",
]


class _OpenAIRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="An app name, or `app/adapter` for a LoRA adapter of that app.")
    user: str | None = Field(default=None, description="Accepted and ignored.")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = Field(
        default=False, description="Send a last chunk with the stream's token usage (and no choices)."
    )


class _Sampling(_OpenAIRequest):
    max_tokens: int | None = Field(
        default=None, ge=1, le=MAX_NEW_TOKENS, description="Most tokens to generate."
    )
    temperature: float = Field(default=1.0, ge=0.0, le=2.0, description="0 decodes greedily.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: Literal[1] = Field(default=1, description="Only one choice per prompt is produced.")
    stream: bool = Field(default=False, description="Stream deltas as server-sent events.")
    stream_options: StreamOptions | None = Field(
        default=None, description="With `stream`: what else to send."
    )
    stop: str | list[str] | None = Field(
        default=None, description="Stop sequences (not included in the text)."
    )
    seed: int | None = None
    presence_penalty: Literal[0, 0.0] = 0.0
    frequency_penalty: Literal[0, 0.0] = 0.0
    logprobs: Literal[False, 0] | None = Field(
        default=None, description="Log-probabilities are not returned: only false, 0 or null."
    )


class CompletionRequest(_Sampling):
    prompt: str | list[str] = Field(description="A prompt, or several (not with stream).")
    echo: bool = Field(default=False, description="Prefix each choice's text with its prompt.")


class TextPart(BaseModel):
    """One part of a message's content; only text parts (images and audio have no model here)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant", "tool"] = Field(
        description="`developer` is read as `system` (OpenAI's newer name for it)."
    )
    content: str | list[TextPart] = Field(description="A text, or text parts (joined).")
    name: str | None = Field(default=None, description="Accepted and ignored.")
    tool_call_id: str | None = Field(default=None, description="With role `tool`: accepted and ignored.")

    def for_template(self) -> dict[str, str]:
        """The message as chat templates read it: a role they know and one text."""
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_NEW_TOKENS)


class EmbeddingRequest(_OpenAIRequest):
    input: str | list[str] = Field(description="A text, or a non-empty list of texts.")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: None = None


class RerankDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="The document's text.")


class RerankRequest(_OpenAIRequest):
    query: str = Field(min_length=1, description="What the documents are ranked for.")
    documents: list[str | RerankDocument] = Field(
        description="Texts to rank (strings, or objects with a `text`); results name them by index."
    )
    top_n: int | None = Field(default=None, ge=1, description="Return only the n best (all when unset).")
    return_documents: bool = Field(default=True, description="Include each document's text in its result.")


COMPLETION_MAX_TOKENS = 16
"""OpenAI's default for a completion without max_tokens. A chat without it has none: it runs to the end
of its text or of the model's positions (at most MAX_NEW_TOKENS), as OpenAI's and vLLM's do."""


def generation_parameters(request: _Sampling, max_tokens: int | None, chat: bool = False) -> dict[str, Any]:
    """OpenAI sampling fields as text-generation handler parameters."""
    stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    params: dict[str, Any] = {
        "max_new_tokens": max_tokens or (None if chat else COMPLETION_MAX_TOKENS),
        "do_sample": request.temperature > 0,
        "return_full_text": False,
        "stop": stop,
    }
    if request.temperature > 0:
        params.update(temperature=request.temperature, top_p=request.top_p)
    if request.seed is not None:
        params["seed"] = request.seed
    return params


def chat_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The model's own chat template when its tokenizer has one; else a plain transcript that ends
    where the assistant speaks. The prompt is encoded as any prompt is, with the tokenizer's special
    tokens: a template that writes the BOS token itself (Llama's, Mistral's) loses that one, so the
    model sees one BOS, not two."""
    if getattr(tokenizer, "chat_template", None):
        text = str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        bos = tokenizer.bos_token
        if bos and text.startswith(bos) and _encodes_bos(tokenizer):
            text = text[len(bos) :]
        return text
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n".join([*lines, "assistant:"])


_ENCODES_BOS: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def _encodes_bos(tokenizer: Any) -> bool:
    """Whether encoding a text adds the BOS token: asked once per tokenizer, not once per chat."""
    if tokenizer not in _ENCODES_BOS:
        _ENCODES_BOS[tokenizer] = tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]
    return _ENCODES_BOS[tokenizer]


def _ids(prefix: str) -> tuple[str, int]:
    return f"{prefix}-{uuid.uuid4().hex[:24]}", int(time.time())


def completion_response(
    kind: Literal["text_completion", "chat.completion"],
    model: str,
    texts: list[str],
    finish: list[str],
    prompt_tokens: int,
    completion_tokens: int,
) -> dict[str, Any]:
    rid, created = _ids("cmpl" if kind == "text_completion" else "chatcmpl")
    if kind == "text_completion":
        choices = [
            {"index": i, "text": t, "logprobs": None, "finish_reason": f}
            for i, (t, f) in enumerate(zip(texts, finish, strict=True))
        ]
    else:
        choices = [
            {"index": i, "message": {"role": "assistant", "content": t}, "logprobs": None, "finish_reason": f}
            for i, (t, f) in enumerate(zip(texts, finish, strict=True))
        ]
    return {
        "id": rid,
        "object": kind,
        "created": created,
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def stream_chunk(
    kind: Literal["text_completion", "chat.completion"],
    rid: str,
    created: int,
    model: str,
    delta: str | None,
    finish: str | None = None,
    role: bool = False,
) -> dict[str, Any]:
    """One server-sent event's payload, in the shape OpenAI clients parse."""
    if kind == "text_completion":
        choice: dict[str, Any] = {"index": 0, "text": delta or "", "logprobs": None, "finish_reason": finish}
        obj = "text_completion"
    else:
        content: dict[str, Any] = {"role": "assistant"} if role else {}
        if delta:
            content["content"] = delta
        choice = {"index": 0, "delta": content, "logprobs": None, "finish_reason": finish}
        obj = "chat.completion.chunk"
    return {"id": rid, "object": obj, "created": created, "model": model, "choices": [choice]}


def usage_chunk(
    kind: Literal["text_completion", "chat.completion"],
    rid: str,
    created: int,
    model: str,
    usage: dict[str, Any],
) -> dict[str, Any]:
    """The last chunk of a stream asked for `stream_options.include_usage`: no choices, the usage."""
    obj = "text_completion" if kind == "text_completion" else "chat.completion.chunk"
    counts = {
        "prompt_tokens": usage["prompt_tokens"],
        "completion_tokens": usage["completion_tokens"],
        "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"],
    }
    return {"id": rid, "object": obj, "created": created, "model": model, "choices": [], "usage": counts}


def rerank_response(
    request: RerankRequest, texts: list[str], ranked: list[dict[str, Any]], prompt_tokens: int
) -> dict[str, Any]:
    """A rerank answer: `results` best first (`index` into the request's documents, `relevance_score`,
    the `document` unless `return_documents` is false), cut to `top_n`."""
    results = []
    for item in ranked[: request.top_n] if request.top_n else ranked:
        result: dict[str, Any] = {"index": item["index"], "relevance_score": item["score"]}
        if request.return_documents:
            result["document"] = {"text": texts[item["index"]]}
        results.append(result)
    rid, _ = _ids("rerank")
    return {
        "id": rid,
        "model": request.model,
        "results": results,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
