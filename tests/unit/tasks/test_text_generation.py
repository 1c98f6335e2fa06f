"""Text generation: greedy decoding equals the model's own, stop sequences cut, streaming agrees."""

from __future__ import annotations

import threading

import pydantic
import pytest
import torch

from rayformers.serving.checkpoint import build_handler, load_checkpoint
from rayformers.serving.errors import InputError
from rayformers.tasks.schemas import MAX_NEW_TOKENS
from rayformers.tasks.text_generation import GenerationParameters, TextGenerationHandler

PROMPT = "Once upon a time in Paris"


@pytest.fixture(scope="module")
def handler(tiny_checkpoint) -> TextGenerationHandler:
    return build_handler(load_checkpoint(str(tiny_checkpoint("text-generation"))))  # type: ignore[return-value]


def completion(handler, prompt: str = PROMPT, **parameters) -> str:
    return handler.predict([prompt], {"return_full_text": False, **parameters})[0][0]["generated_text"]


def test_greedy_generation_is_the_models_own(handler):
    (output,) = handler.predict([PROMPT], {"max_new_tokens": 10})
    ids = handler.prompt_ids([PROMPT], 10)[0]
    with torch.inference_mode():
        direct = handler.model.generate(
            torch.tensor([ids]),
            max_new_tokens=10,
            do_sample=False,
            pad_token_id=handler.tokenizer.pad_token_id,
        )
    expected = handler.tokenizer.decode(direct[0, len(ids) :], skip_special_tokens=True)
    assert output == [{"generated_text": PROMPT + expected}]
    assert completion(handler, max_new_tokens=10) == expected
    assert handler.predict([PROMPT], {"max_new_tokens": 10}) == [output]  # deterministic


def test_a_prompt_is_opened_not_closed_and_training_closes_each_text(handler):
    from rayformers.tasks.text_generation import tokenize_causal_lm

    (ids,) = handler.prompt_ids([PROMPT], 4)
    tok = handler.tokenizer
    # The sample BPE's template is `<s> $A </s>`; loaded for text generation it only opens a text, so
    # the prompt (here and in transformers.pipeline) does not say the text is over.
    assert ids == tok(PROMPT)["input_ids"] and ids[0] == tok.bos_token_id and ids[-1] != tok.eos_token_id
    (trained,) = tokenize_causal_lm({"text": [PROMPT]}, tok, handler.settings)["input_ids"]
    assert trained == [*ids, tok.eos_token_id]
    (empty,) = handler.prompt_ids([""], 4)
    assert empty == [handler.tokenizer.bos_token_id]  # an empty prompt starts from <s>


def test_long_prompts_keep_their_end(handler):
    long = " ".join(["cat"] * 200) + " the dog sat"
    (ids,) = handler.prompt_ids([long], 4)
    assert len(ids) == handler.settings.max_length
    assert handler.tokenizer.decode(ids[-3:]).strip() == "the dog sat"


def test_stop_cuts_at_the_first_stop_sequence(handler):
    free = completion(handler, max_new_tokens=16)
    stop = free[len(free) // 2 : len(free) // 2 + 3]
    assert stop.strip() and free.find(stop) > 0
    cut = completion(handler, max_new_tokens=16, stop=[stop, "never-generated"])
    assert cut == free[: free.find(stop)]
    outputs, usages = handler.predict_with_usage([PROMPT], {"max_new_tokens": 16, "stop": [stop]})
    assert usages[0].finish_reason == "stop" and usages[0].completion_tokens < 16
    assert outputs[0][0]["generated_text"] == PROMPT + cut


def test_usage_counts_tokens(handler):
    outputs, usages = handler.predict_with_usage([PROMPT, "The"], {"max_new_tokens": 5})
    assert len(outputs) == 2
    prompt_tokens = [len(ids) for ids in handler.prompt_ids([PROMPT, "The"], 5)]
    assert [u.prompt_tokens for u in usages] == prompt_tokens
    for usage in usages:
        assert (
            usage.completion_tokens <= 5
            and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
        )
        assert usage.finish_reason in ("stop", "length")


@pytest.mark.parametrize("with_stop", [False, True])
def test_stream_concatenates_to_the_completion(handler, with_stop):
    free = completion(handler, max_new_tokens=16)
    parameters = {"max_new_tokens": 16, "stop": [free[5:8]] if with_stop else []}
    expected = completion(handler, **parameters)
    stream = handler.stream(PROMPT, parameters)
    deltas = list(stream)
    assert "".join(deltas) == expected and len(deltas) > 1
    (usage,) = handler.predict_with_usage([PROMPT], parameters)[1]
    assert stream.usage == usage


def test_closing_a_stream_stops_generation(handler):
    before = threading.active_count()
    stream = handler.stream(PROMPT, {"max_new_tokens": 100})
    next(stream)
    stream.close()
    assert threading.active_count() == before  # the generating thread was joined


def test_seeded_sampling_repeats(handler):
    parameters = {"max_new_tokens": 12, "do_sample": True, "temperature": 1.5, "top_k": 50, "seed": 7}
    first = completion(handler, **parameters)
    assert completion(handler, **parameters) == first
    others = {completion(handler, **{**parameters, "seed": s}) for s in range(8, 12)}
    assert others - {first}  # other seeds sample other texts
    assert completion(handler, **{**parameters, "temperature": 0.0}) == completion(handler, max_new_tokens=12)


def test_too_many_new_tokens_for_the_model_positions(handler):
    with pytest.raises(InputError, match="at most") as caught:
        handler.predict([PROMPT], {"max_new_tokens": 1000})
    assert caught.value.field == "parameters.max_new_tokens"


def test_parameter_guards():
    with pytest.raises(pydantic.ValidationError, match="max_new_tokens"):
        GenerationParameters(max_new_tokens=0)
    with pytest.raises(pydantic.ValidationError, match="top_p"):
        GenerationParameters(top_p=1.5)
    assert GenerationParameters().generate_kwargs() == {"max_new_tokens": 32, "do_sample": False}


def _counting_generate(handler, monkeypatch) -> list[int]:
    """Patches the model's generate to record the batch size of each call."""
    calls: list[int] = []
    original = handler.model.generate

    def generate(**kwargs):
        calls.append(len(kwargs["input_ids"]))
        return original(**kwargs)

    monkeypatch.setattr(handler.model, "generate", generate)
    return calls


def test_requests_that_decode_alike_share_one_generate_and_keep_their_own_answers(handler, monkeypatch):
    prompts = [PROMPT, "The weather in the mountains was cold and the road", "Hello"]
    free = completion(handler, prompts[1], max_new_tokens=12)
    parameters = [
        {"max_new_tokens": 4},
        {"max_new_tokens": 12, "stop": [free[4:7]], "return_full_text": False},
        {"max_new_tokens": 8, "return_full_text": False},
    ]
    alone = [handler.predict_with_usage([p], q) for p, q in zip(prompts, parameters, strict=True)]
    calls = _counting_generate(handler, monkeypatch)
    outputs, usage = handler.predict_many_with_usage(
        [([p], q) for p, q in zip(prompts, parameters, strict=True)]
    )
    assert calls == [3]  # one generate call for all three
    assert [(o, u) for o, u in zip(outputs, usage, strict=True)] == alone
    assert [u[0].completion_tokens for u in usage][::2] == [4, 8]
    stop = free[4:7]
    assert usage[1][0].finish_reason == "stop"
    assert outputs[1][0][0]["generated_text"] == free[: free.find(stop)]
    # sampling alike but with another seed is another generate call
    seeded = [{"do_sample": True, "seed": 1}, {"do_sample": True, "seed": 2}]
    calls.clear()
    handler.predict_many([([PROMPT], seeded[0]), ([PROMPT], seeded[1])])
    assert calls == [1, 1]


def test_streams_in_one_batch_each_get_their_own_text(handler, monkeypatch):
    from rayformers.tasks.text_generation import TokenSink

    prompts = [PROMPT, "A long story about a dog who walked to the sea every morning"]
    parameters = [{"max_new_tokens": 10}, {"max_new_tokens": 6}]
    expected = [completion(handler, p, **q) for p, q in zip(prompts, parameters, strict=True)]
    received: list[list[str]] = [[], []]
    ended: list[object] = [None, None]

    def sink(row: int) -> TokenSink:
        return TokenSink(received[row].append, lambda end, row=row: ended.__setitem__(row, end))

    streamed = [handler.parse_parameters(q).streaming_to(sink(i)) for i, q in enumerate(parameters)]
    calls = _counting_generate(handler, monkeypatch)
    _, usage = handler.predict_many_with_usage([([p], q) for p, q in zip(prompts, streamed, strict=True)])
    assert calls == [2]
    assert ["".join(r) for r in received] == expected
    assert all(len(r) > 1 for r in received)  # text arrived in pieces, not at the end
    assert ended == [u[0] for u in usage]


def test_unset_max_new_tokens_takes_the_room_the_models_positions_leave(handler, monkeypatch):
    """Issue 12: an OpenAI chat without max_tokens stopped at 16 tokens. Unset (null), a row may run to
    the end of the model's positions after its prompt, capped at MAX_NEW_TOKENS."""
    seen = []
    run = handler._run
    monkeypatch.setattr(
        handler, "_run", lambda kwargs, seed: (seen.append(kwargs["max_new_tokens"]), run(kwargs, seed))[1]
    )
    _, (usage,) = handler.predict_with_usage([PROMPT], {"max_new_tokens": None, "return_full_text": False})
    room = handler.positions - usage.prompt_tokens
    assert room > 32  # more than /predict's default, so the test tells the two apart
    assert seen == [min(MAX_NEW_TOKENS, room)]
    assert usage.completion_tokens <= room
    assert usage.finish_reason == "length" or usage.completion_tokens < room


def test_openai_routes_cap_max_tokens_as_the_handler_does_and_chat_has_no_default_of_16():
    """Issue 12: the routes took max_tokens up to 4096, which the handler refused above 1024 (a 422
    blaming `parameters`); a chat without max_tokens got 16 tokens."""
    from rayformers.serving import openai as oai

    with pytest.raises(pydantic.ValidationError, match="max_tokens"):
        oai.CompletionRequest(model="gen", prompt="the", max_tokens=MAX_NEW_TOKENS + 1)
    with pytest.raises(pydantic.ValidationError, match="max_completion_tokens"):
        oai.ChatCompletionRequest(
            model="gen",
            messages=[{"role": "user", "content": "hi"}],
            max_completion_tokens=MAX_NEW_TOKENS + 1,
        )
    chat = oai.ChatCompletionRequest(model="gen", messages=[{"role": "user", "content": "hi"}])
    assert oai.generation_parameters(chat, None, chat=True)["max_new_tokens"] is None
    completion_ = oai.CompletionRequest(model="gen", prompt="the")
    assert oai.generation_parameters(completion_, None)["max_new_tokens"] == oai.COMPLETION_MAX_TOKENS == 16
    assert GenerationParameters(max_new_tokens=MAX_NEW_TOKENS).max_new_tokens == MAX_NEW_TOKENS


def test_a_chat_template_that_writes_bos_gives_the_prompt_one_bos(handler):
    """Issue 12: a template carrying `{{ bos_token }}` (Llama's, Mistral's) rendered "<s>..." and the
    prompt's encoding added another BOS."""
    from rayformers.serving.openai import chat_prompt

    tok = handler.tokenizer
    saved = getattr(tok, "chat_template", None)
    tok.chat_template = (
        "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    )
    try:
        prompt = chat_prompt(tok, [{"role": "user", "content": "hello there"}])
    finally:
        tok.chat_template = saved
    (ids,) = handler.prompt_ids([prompt], 4)
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert "hello there" in tok.decode(ids)
