"""What a replica decides before any model runs, and what its /info lets a client see."""

from __future__ import annotations

import os

from rayformers.serving.replica import client_mistake, is_storage_path
from rayformers.tasks.text_classification import TextPair


def test_empty_texts_and_lone_surrogates_are_the_clients_mistake_naming_the_field():
    empty = client_mistake(["fine", ""], {})
    assert empty is not None and empty.field == "inputs[1]" and "empty" in empty.message
    assert client_mistake(["  \n"], {}).field == "inputs[0]"
    surrogate = client_mistake(["\ud800"], {})
    assert surrogate is not None and surrogate.field == "inputs[0]"
    surrogate.message.encode("utf-8")  # the message itself can be sent as JSON
    nested = client_mistake([{"query": "q", "texts": ["ok", "bad \udfff"]}], {})
    assert nested is not None and nested.field == "inputs[0].texts[1]"
    pair = client_mistake([TextPair(text="a", text_pair="\ud83d")], {})
    assert pair is not None and pair.field == "inputs[0].text_pair"
    parameter = client_mistake(["x"], {"candidate_labels": ["a", "\ud800"]})
    assert parameter is not None and parameter.field == "parameters.candidate_labels[1]"
    # A text over the app's character limit, wherever it sits, names itself and the limit.
    long = client_mistake([{"query": "q", "texts": ["ok", "x" * 11]}], {}, max_chars=10)
    assert long is not None and long.field == "inputs[0].texts[1]" and "11 characters" in long.message
    assert "limit of 10" in long.message and "max_input_chars" in long.message
    assert client_mistake(["x" * 10], {}, max_chars=10) is None
    # Empty texts inside structured inputs too: a document to rank, a QA context, a sentence pair's second.
    document = client_mistake([{"query": "q", "texts": ["ok", " "]}], {})
    assert document is not None and document.field == "inputs[0].texts[1]" and "empty" in document.message
    assert client_mistake([{"question": "q", "context": ""}], {}).field == "inputs[0].context"
    assert client_mistake([TextPair(text="a", text_pair="")], {}).field == "inputs[0].text_pair"
    assert client_mistake(["a text", {"question": "q", "context": "c"}], {"top_k": 2}) is None


def test_storage_paths_are_told_from_model_ids():
    for path in (
        "/mnt/runs/best",
        "./runs/x",
        "~/models/m",
        "s3://bucket/runs/best",
        "gs://b/x",
        "C:\\models",
    ):
        assert is_storage_path(path), path
    for name in ("bert-base-uncased", "org/model", "base_model", "gpt2", None):
        assert not is_storage_path(name), name


def test_a_replica_turns_rust_tokenizer_threads_off_however_it_was_deployed(tiny_checkpoint, monkeypatch):
    """Issue 12: only `rayformers serve` set TOKENIZERS_PARALLELISM (through its Ray's environment), so a
    `serve build` deployment or a RayService tokenized on Rust threads competing with torch's. The
    replica sets it itself; an operator's explicit value is kept."""
    from rayformers.serving.args import AppArgs
    from rayformers.serving.replica import ModelReplica

    checkpoint = str(tiny_checkpoint("text-classification"))
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    replica = ModelReplica(AppArgs(name="tok", checkpoint=checkpoint).model_dump())
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
    assert replica.handler.predict(["a fine film"], {})[0]["label"]  # and it still answers
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")
    ModelReplica(AppArgs(name="tok", checkpoint=checkpoint).model_dump())
    assert os.environ["TOKENIZERS_PARALLELISM"] == "true"


def test_an_over_long_chat_is_refused_naming_messages_not_cut_from_the_front(tiny_checkpoint):
    """Issue 12: a chat longer than the model reads lost its system message and first turns silently
    (a prompt keeps its last max_length tokens)."""

    from rayformers.serving.args import AppArgs
    from rayformers.serving.replica import ModelReplica

    replica = ModelReplica(
        AppArgs(name="gen", checkpoint=str(tiny_checkpoint("text-generation"))).model_dump()
    )
    short = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the film was"}]
    assert replica.chat_prompt(short).outputs[0].endswith("assistant:")
    long = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the film " * 400}]
    refused = replica.chat_prompt(long).error
    assert refused is not None and refused.kind == "input" and refused.field == "messages"
    assert "drop or shorten" in refused.message
    # A lone surrogate in a message is the client's mistake naming it (it was a 500 from the tokenizer).
    bad = replica.chat_prompt([{"role": "user", "content": "fine"}, {"role": "user", "content": "m\ud800"}])
    assert (
        bad.error is not None and bad.error.field == "messages[1].content" and "Unicode" in bad.error.message
    )
    # A chat message over the app's character limit is refused naming it.
    replica.args = replica.args.model_copy(update={"max_input_chars": 20})
    over = replica.chat_prompt([{"role": "user", "content": "x" * 21}]).error
    assert over is not None and over.field == "messages[0].content" and "max_input_chars" in over.message


def test_a_request_over_the_token_budget_is_refused_before_it_queues_naming_the_limit(tiny_checkpoint):
    """Issue 12: 64 texts times 64 candidate labels was one model call of 4,096 rows, however long it
    took; `serve.apps[].max_call_tokens` refuses a request that alone needs more (a 413), and cuts
    batches of several requests at it."""
    import asyncio

    from rayformers.serving.args import AppArgs
    from rayformers.serving.ingress import reply_error
    from rayformers.serving.replica import ModelReplica

    checkpoint = str(tiny_checkpoint("zero-shot-classification"))
    replica = ModelReplica(AppArgs(name="zs", checkpoint=checkpoint, max_call_tokens=2_000).model_dump())
    labels = {"candidate_labels": [f"label {i}" for i in range(64)]}
    estimate = replica.handler.call_tokens(["a fine film"] * 64, replica.handler.parse_parameters(labels))
    assert estimate > 2_000
    refused = asyncio.run(replica.answer(["a fine film"] * 64, labels, None))
    assert refused.error is not None and refused.error.kind == "too_large"
    assert f"about {estimate} tokens" in refused.error.message and "max_call_tokens" in refused.error.message
    error = reply_error(refused)
    assert (error.status, error.type, error.field) == (413, "too_many_tokens", "inputs")
    answered = asyncio.run(replica.answer(["a fine film"] * 2, {"candidate_labels": ["good", "bad"]}, None))
    assert answered.error is None and [len(o["labels"]) for o in answered.outputs] == [2, 2]
    assert replica._batcher.budget == 2_000


def test_a_stream_whose_client_leaves_stops_generating_while_the_batch_beside_it_goes_on(tiny_checkpoint):
    """Issue 12, streams: Serve closes a stream's generator (or cancels the task reading it) when its
    HTTP client goes away; the row must stop at the next token, not generate to its limit, while a
    request batched beside it is still answered in full. The model here takes 10 ms a step and can
    never end a text by itself (end-of-text is masked), so only the stop can end the stream early."""
    import asyncio
    import time

    from rayformers.serving.args import AppArgs
    from rayformers.serving.replica import ModelReplica

    replica = ModelReplica(
        AppArgs(
            name="gen", checkpoint=str(tiny_checkpoint("text-generation")), batch_wait_timeout_s=0.05
        ).model_dump()
    )
    eos = replica.loaded.tokenizer.eos_token_id
    steps: list[int] = []

    def slow_and_endless(module, args, output):
        steps.append(output.logits.shape[0])
        output.logits[..., eos] = float("-inf")
        time.sleep(0.01)

    replica.loaded.model.register_forward_hook(slow_and_endless)
    limit = 100

    async def leave(beside_too: bool) -> tuple[int, object]:
        stream = replica.stream("Once upon", {"max_new_tokens": limit}, None)
        beside = (
            asyncio.ensure_future(replica.answer(["Once upon"], {"max_new_tokens": limit}, None))
            if beside_too
            else None
        )
        first = await stream.__anext__()
        assert first["delta"]
        await stream.aclose()  # the client left
        at_close = len(steps)
        reply = await beside if beside is not None else None
        await asyncio.sleep(0.3)  # what a stream that went on would generate meanwhile: some 30 steps
        return len(steps) - at_close, reply

    # Alone, the stream's generation ends a step or two after its client left, not at its limit.
    after, _ = asyncio.run(leave(beside_too=False))
    assert after <= 2, after
    # Batched beside another request, that request still gets every token it asked for.
    steps.clear()
    _, reply = asyncio.run(leave(beside_too=True))
    assert reply.error is None and reply.usage[0]["completion_tokens"] == limit
    assert max(steps) == 2  # they did share the forwards
