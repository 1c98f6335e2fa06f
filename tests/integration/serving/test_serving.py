"""Ray Serve end to end over real HTTP: one app per task from tiny checkpoints, the gateway with the
OpenAI routes, dynamic batching, LoRA multiplexing, autoscaling, and every error class."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.integration.serving.examples import (
    BROKEN_WORD,
    EXAMPLES,
    LONG_CONTEXT,
    close,
    in_process,
    post,
)

pytestmark = pytest.mark.usefixtures("ray_cluster")


@pytest.mark.parametrize("task", list(EXAMPLES))
def test_every_task_answers_over_http_as_the_in_process_model_does(server, tiny_checkpoint, task):
    app, inputs, parameters = EXAMPLES[task]
    response = post(server, f"/{app}/predict", {"inputs": inputs, "parameters": parameters})
    assert response.status_code == 200, response.text
    served = response.json()
    assert len(served) == len(inputs)
    assert close(served, in_process(tiny_checkpoint(task), inputs, parameters)), (served, task)
    info = requests.get(f"{server}/{app}/info", timeout=30).json()
    assert info["task"] == task
    one = post(server, f"/{app}/predict", {"inputs": inputs[0], "parameters": parameters})
    assert one.status_code == 200 and close(one.json(), served[0])  # a single input gets a single answer


def test_shapes_are_the_pipelines_shapes(server):
    top2 = post(server, "/sentiment/predict", {"inputs": ["good"], "parameters": {"top_k": 2}}).json()[0]
    assert {d["label"] for d in top2} == {"negative", "positive"} and abs(
        sum(d["score"] for d in top2) - 1
    ) < 1e-5
    top1 = post(server, "/sentiment/predict", {"inputs": "good"}).json()
    assert set(top1) == {"label", "score"}
    context = "The team was led by Alice Novak. " + LONG_CONTEXT
    answer = post(server, "/qa/predict", {"inputs": {"question": "Who?", "context": context}}).json()
    assert context[answer["start"] : answer["end"]] == answer["answer"]
    text = "Alice Novak flew to Toronto ."
    for entity in post(server, "/ner/predict", {"inputs": text}).json():
        assert 0 <= entity["start"] < entity["end"] <= len(text) and entity["entity_group"] != "O"
    zero = post(
        server, "/zero-shot/predict", {"inputs": "x", "parameters": {"candidate_labels": ["a", "b"]}}
    ).json()
    assert sorted(zero["labels"]) == ["a", "b"] and abs(sum(zero["scores"]) - 1) < 1e-5
    vectors = post(server, "/embed/predict", {"inputs": ["a", "b c"]}).json()
    assert all(abs(sum(x * x for x in v) - 1) < 1e-4 for v in vectors)
    generated = post(server, "/gen/predict", {"inputs": "the", "parameters": {"max_new_tokens": 4}}).json()
    assert generated[0]["generated_text"].startswith("the")


def test_concurrent_requests_share_batches_and_each_gets_its_own_answer(server):
    texts = [f"review number {i} {'great' * (i % 3)} {'awful' * (i % 2)}" for i in range(16)]
    alone = [post(server, "/sentiment/predict", {"inputs": [t]}).json()[0] for t in texts]
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda t: post(server, "/sentiment/predict", {"inputs": [t]}), texts))
    assert all(r.status_code == 200 for r in responses)
    assert max(int(r.headers["X-Batch-Size"]) for r in responses) > 1
    for response, expected in zip(responses, alone, strict=True):
        assert close(response.json()[0], expected, 1e-5)


def test_two_adapters_on_one_base_answer_differently_and_an_unknown_one_is_404(server):
    body = {"inputs": ["an ordinary sentence"], "parameters": {"top_k": 2}}
    one = post(server, "/lora/predict", body, headers={"serve_multiplexed_model_id": "one"})
    two = post(server, "/lora/predict", body, headers={"serve_multiplexed_model_id": "two"})
    assert one.status_code == two.status_code == 200
    scores = [{d["label"]: d["score"] for d in r.json()[0]} for r in (one, two)]
    assert abs(scores[0]["positive"] - scores[1]["positive"]) > 1e-3
    missing = post(server, "/lora/predict", body, headers={"serve_multiplexed_model_id": "three"})
    assert missing.status_code == 404
    error = missing.json()["error"]
    assert (
        error["type"] == "unknown_adapter"
        and error["known"] == ["one", "two"]
        and "three" in error["message"]
    )


def _replicas(app: str) -> int:
    from ray import serve

    deployment = serve.status().applications[app].deployments["Model"]
    return int(deployment.replica_states.get("RUNNING", 0))


def test_an_app_scales_to_two_replicas_under_load_and_back_to_one(server):
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            post(server, "/scaling/predict", {"inputs": "the", "parameters": {"max_new_tokens": 40}})

    threads = [threading.Thread(target=load, daemon=True) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 90
        while _replicas("scaling") < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _replicas("scaling") == 2
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    deadline = time.monotonic() + 90
    while _replicas("scaling") > 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _replicas("scaling") == 1


def _error(response: requests.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()["error"]


def test_bad_requests_get_422_naming_the_field(server):
    raw = requests.post(
        f"{server}/sentiment/predict",
        data="{not json",
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert "malformed JSON" in _error(raw, 422)["message"]
    assert _error(post(server, "/sentiment/predict", {"parameters": {}}), 422)["field"] == "inputs"
    assert _error(post(server, "/sentiment/predict", {"inputs": []}), 422)["field"] == "inputs"
    assert _error(post(server, "/sentiment/predict", {"inputs": 42}), 422)["field"].startswith("inputs")
    unknown = _error(post(server, "/sentiment/predict", {"inputs": "x", "parameters": {"topk": 2}}), 422)
    assert "topk" in unknown["message"] and unknown["field"] == "parameters.topk"
    wrong_type = _error(
        post(server, "/sentiment/predict", {"inputs": "x", "parameters": {"top_k": "many"}}), 422
    )
    assert wrong_type["field"] == "parameters.top_k"
    no_mask = _error(post(server, "/fill-mask/predict", {"inputs": ["no mask here"]}), 422)
    assert "[MASK]" in no_mask["message"] and no_mask["field"].startswith("inputs")


def test_limits_get_413_with_the_limit(server):
    many = _error(post(server, "/busy/predict", {"inputs": ["a"] * 5}), 413)
    assert many["limit"] == 4 and "4" in many["message"]
    big = _error(post(server, "/sentiment/predict", {"inputs": "word " * 10_000}), 413)
    assert big["limit"] == 20_000
    # 64 texts times 64 labels is 4,096 model rows: more tokens than one call may hold (max_call_tokens).
    rows = {
        "inputs": [f"review {i}: " + "a fine film " * 10 for i in range(64)],
        "parameters": {"candidate_labels": [f"label {i}" for i in range(64)]},
    }
    tokens = _error(post(server, "/zero-shot/predict", rows), 413)
    assert tokens["type"] == "too_many_tokens" and tokens["field"] == "inputs"
    assert "65536" in tokens["message"] and "max_call_tokens" in tokens["message"]


def test_unknown_app_is_a_json_404_listing_the_apps(server):
    error = _error(requests.get(f"{server}/nope/predict", timeout=30), 404)
    assert "sentiment" in error["apps"] and "nope" in error["message"]


def test_a_full_queue_answers_503_with_retry_after(server):
    body = {"inputs": "the", "parameters": {"max_new_tokens": 60}}
    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda _: post(server, "/busy/predict", body), range(12)))
    statuses = [r.status_code for r in responses]
    assert 200 in statuses and 503 in statuses, statuses
    rejected = next(r for r in responses if r.status_code == 503)
    assert rejected.headers["Retry-After"] == "1" and _error(rejected, 503)["type"] == "overloaded"


def test_a_stream_the_full_queue_refuses_is_a_503_the_openai_client_sees_before_any_event(server):
    """Issue 12: the first SSE chunk went out before the replica answered, so a full queue arrived as a
    200 with an error event and clients did not retry."""
    import openai

    body = {"model": "busy", "prompt": "the", "max_tokens": 60, "stream": True}
    with ThreadPoolExecutor(12) as pool:
        responses = list(
            pool.map(lambda _: requests.post(f"{server}/v1/completions", json=body, timeout=120), range(12))
        )
    statuses = [r.status_code for r in responses]
    assert 200 in statuses and 503 in statuses, statuses
    refused = next(r for r in responses if r.status_code == 503)
    assert refused.headers["Retry-After"] == "1" and _error(refused, 503)["type"] == "overloaded"
    for answered in (r for r in responses if r.status_code == 200):  # whole streams, no error events
        events = [line for line in answered.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]" and not any('"error"' in e for e in events)

    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
    hold = threading.Event()

    def occupy() -> None:
        while not hold.is_set():
            post(server, "/busy/predict", {"inputs": "the", "parameters": {"max_new_tokens": 60}})

    holders = [threading.Thread(target=occupy, daemon=True) for _ in range(4)]
    for t in holders:
        t.start()
    seen = set()
    try:
        deadline = time.monotonic() + 60
        while "InternalServerError" not in seen and time.monotonic() < deadline:
            try:
                for _ in client.completions.create(model="busy", prompt="the", max_tokens=2, stream=True):
                    pass
                seen.add("ok")
            except openai.InternalServerError as err:  # the client's class for a 503 (it would retry it)
                assert err.status_code == 503 and err.response.headers["Retry-After"] == "1"
                seen.add("InternalServerError")
    finally:
        hold.set()
        for t in holders:
            t.join(timeout=120)
    assert "InternalServerError" in seen


def test_a_model_error_is_a_500_with_a_request_id_and_the_replica_keeps_serving(server):
    error = _error(post(server, "/broken/predict", {"inputs": f"a {BROKEN_WORD}"}), 500)
    assert error["type"] == "model_error" and error["request_id"]
    assert post(server, "/broken/predict", {"inputs": "Hello world."}).status_code == 200
    # The handler refuses what it can foresee as a bad request (422), before the model runs.
    too_long = post(server, "/gen/predict", {"inputs": "the", "parameters": {"max_new_tokens": 1000}})
    assert _error(too_long, 422)["field"] == "parameters.max_new_tokens"


def test_openai_routes(server):
    models = {m["id"] for m in requests.get(f"{server}/v1/models", timeout=30).json()["data"]}
    assert {"gen", "embed", "lora/one", "lora/two"} <= models
    completion = post(
        server, "/v1/completions", {"model": "gen", "prompt": "the film", "max_tokens": 5, "temperature": 0}
    )
    assert completion.status_code == 200, completion.text
    body = completion.json()
    expected = in_process_generation(server, "the film", 5)
    assert body["choices"][0]["text"] == expected and body["usage"]["prompt_tokens"] > 0
    chat = post(server, "/v1/chat/completions", {"model": "gen", "messages": [{"role": "user", "content": "hi"}],
                                                  "max_tokens": 4, "temperature": 0})  # fmt: skip
    assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["role"] == "assistant"
    streamed = requests.post(
        f"{server}/v1/completions",
        json={"model": "gen", "prompt": "the film", "max_tokens": 5, "temperature": 0, "stream": True},
        stream=True,
        timeout=60,
    )
    events = [line[6:] for line in streamed.iter_lines(decode_unicode=True) if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    text = "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1])
    assert text == expected
    embeddings = post(
        server, "/v1/embeddings", {"model": "embed", "input": ["a cat sat on the mat", "a dog"]}
    )
    vectors = [d["embedding"] for d in embeddings.json()["data"]]
    assert close(
        vectors, post(server, "/embed/predict", {"inputs": ["a cat sat on the mat", "a dog"]}).json()
    )
    wrong = _error(post(server, "/v1/completions", {"model": "sentiment", "prompt": "x"}), 400)
    assert wrong["field"] == "model"
    assert (
        _error(post(server, "/v1/embeddings", {"model": "nope", "input": "x"}), 404)["type"]
        == "unknown_model"
    )
    # The app's max_inputs_per_request holds on the OpenAI routes too (a 1 MB body is ~250k short inputs).
    many = _error(post(server, "/v1/embeddings", {"model": "embed", "input": ["x"] * 65}), 413)
    assert many["type"] == "too_many_inputs" and many["field"] == "input" and many["limit"] == 64
    prompts = _error(post(server, "/v1/completions", {"model": "gen", "prompt": ["x"] * 65}), 413)
    assert prompts["field"] == "prompt"


def test_concurrent_streams_and_completions_each_get_their_own_text(server):
    """Streams and whole completions of different lengths ride the same batched generate; each client
    still reads exactly the text its prompt and limit give alone."""
    prompts = [f"the film number {i} was" for i in range(6)]
    limits = [3 + i % 4 for i in range(6)]
    expected = [in_process_generation(server, p, n) for p, n in zip(prompts, limits, strict=True)]

    def ask(i: int) -> str:
        stream = i % 2 == 0
        body = {
            "model": "gen",
            "prompt": prompts[i],
            "max_tokens": limits[i],
            "temperature": 0,
            "stream": stream,
        }
        response = requests.post(f"{server}/v1/completions", json=body, stream=stream, timeout=120)
        assert response.status_code == 200, response.text
        if not stream:
            return str(response.json()["choices"][0]["text"])
        events = [line[6:] for line in response.iter_lines(decode_unicode=True) if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        return "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1])

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(ask, range(6))) == expected


def in_process_generation(server: str, prompt: str, tokens: int) -> str:
    body = {"inputs": prompt, "parameters": {"max_new_tokens": tokens, "return_full_text": False}}
    return str(post(server, "/gen/predict", body).json()[0]["generated_text"])


RANK_QUERY = "who founded the team"
RANK_TEXTS = ["Alice Novak founded the team in 1990.", "It rained on Tuesday.", "The team plays in Toronto."]


def test_rerank_answers_as_predict_does_in_the_shape_rerank_clients_read(server):
    documents = [RANK_TEXTS[0], {"text": RANK_TEXTS[1]}, RANK_TEXTS[2]]
    reply = post(
        server, "/v1/rerank", {"model": "rank", "query": RANK_QUERY, "documents": documents, "top_n": 2}
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert set(body) == {"id", "model", "results", "usage"} and body["model"] == "rank"
    predicted = post(server, "/rank/predict", {"inputs": {"query": RANK_QUERY, "texts": RANK_TEXTS}}).json()
    assert [r["index"] for r in body["results"]] == [p["index"] for p in predicted[:2]]
    assert close([r["relevance_score"] for r in body["results"]], [p["score"] for p in predicted[:2]])
    assert [r["document"] for r in body["results"]] == [
        {"text": RANK_TEXTS[r["index"]]} for r in body["results"]
    ]
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0
    bare = post(server, "/v1/rerank", {"model": "rank", "query": RANK_QUERY, "documents": RANK_TEXTS,
                                         "return_documents": False}).json()  # fmt: skip
    assert len(bare["results"]) == 3 and all(set(r) == {"index", "relevance_score"} for r in bare["results"])
    scores = [r["relevance_score"] for r in bare["results"]]
    assert scores == sorted(scores, reverse=True)
    not_a_ranker = _error(post(server, "/v1/rerank", {"model": "gen", "query": "x", "documents": ["y"]}), 400)
    assert not_a_ranker["field"] == "model" and "rank" in not_a_ranker["message"]
    assert _error(post(server, "/v1/rerank", {"model": "nope", "query": "x", "documents": ["y"]}), 404)
    assert _error(post(server, "/v1/rerank", {"model": "rank", "query": "x", "documents": []}), 400)


def test_a_ranking_checkpoint_scores_over_http_as_the_transformers_pipeline_does(server, tiny_checkpoint):
    from transformers import pipeline

    scorer = pipeline("text-classification", model=str(tiny_checkpoint("text-ranking")), device="cpu")
    theirs = scorer([{"text": RANK_QUERY, "text_pair": t} for t in RANK_TEXTS], function_to_apply="none")
    body = {"inputs": {"query": RANK_QUERY, "texts": RANK_TEXTS}}
    ours = {a["index"]: a["score"] for a in post(server, "/rank/predict", body).json()}
    assert close([ours[i] for i in range(len(RANK_TEXTS))], [t["score"] for t in theirs])


def test_the_official_openai_client_reads_every_route_and_raises_its_own_error_classes(server):
    """Issue 12, with the `openai` package users call us with (not hand-made JSON): completions and
    chat, whole and streamed (with `stream_options.include_usage`), `n`, `stop`, `logprobs: false`,
    content-part arrays, `name` and the `developer` role; embeddings as floats and as base64 (the
    client's own default); models; and the error classes it raises for 400, 404 and 413."""
    import openai

    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=60)
    expected = in_process_generation(server, "the film", 5)
    whole = client.completions.create(model="gen", prompt="the film", max_tokens=5, temperature=0, n=1)
    assert whole.choices[0].text == expected and 0 < whole.usage.completion_tokens <= 5
    chunks = list(
        client.completions.create(
            model="gen", prompt="the film", max_tokens=5, temperature=0, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    assert "".join(c.choices[0].text for c in chunks if c.choices) == expected
    last = chunks[-1]
    assert last.choices == [] and last.usage.completion_tokens == whole.usage.completion_tokens
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    messages = [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "the film "}, {"type": "text", "text": "was"}],
         "name": "ana"},
    ]  # fmt: skip
    chat = client.chat.completions.create(
        model="gen", messages=messages, max_tokens=4, temperature=0, stop=["\n\n"], logprobs=False
    )
    answer = chat.choices[0].message
    assert answer.role == "assistant" and chat.usage.completion_tokens <= 4
    streamed = list(
        client.chat.completions.create(
            model="gen", messages=messages, max_tokens=4, temperature=0, stop=["\n\n"], stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == answer.content
    assert streamed[-1].usage.completion_tokens == chat.usage.completion_tokens
    texts = ["a cat sat on the mat", "a dog"]
    direct = post(server, "/embed/predict", {"inputs": texts}).json()
    as_base64 = client.embeddings.create(model="embed", input=texts)  # the client asks for base64, decodes it
    as_floats = client.embeddings.create(model="embed", input=texts, encoding_format="float")
    assert close([d.embedding for d in as_base64.data], direct)
    assert close([d.embedding for d in as_floats.data], direct)
    assert {"gen", "embed"} <= {m.id for m in client.models.list()}
    with pytest.raises(openai.BadRequestError) as bad:  # a classifier cannot complete text
        client.completions.create(model="sentiment", prompt="x", max_tokens=2)
    assert bad.value.status_code == 400 and bad.value.param == "model"
    with pytest.raises(openai.BadRequestError):  # over the route's cap, refused by the route
        client.completions.create(model="gen", prompt="x", max_tokens=100_000)
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="nope", input="x")
    with pytest.raises(openai.APIStatusError) as too_many:
        client.embeddings.create(model="embed", input=["x"] * 65)
    assert too_many.value.status_code == 413 and too_many.value.param == "input"
    with pytest.raises(
        openai.APIStatusError
    ) as too_long:  # 64 prompts of 1,024 new tokens: one call's budget
        client.completions.create(model="gen", prompt=["Once upon"] * 64, max_tokens=1024)
    assert too_long.value.status_code == 413 and "max_call_tokens" in too_long.value.message


# Issue 12: hostile input at scale. Each route gets HOSTILE_EXAMPLES generated bad requests, made by
# breaking one thing in a valid request, so that every one of them must be refused with a JSON 4xx.
HOSTILE_EXAMPLES = 500
HOSTILE_ROUTES = {
    **{
        f"/{app}/predict": {"inputs": inputs, "parameters": params}
        for app, inputs, params in EXAMPLES.values()
    },
    "/lora/predict": {"inputs": ["a great film"], "parameters": {}},
    "/v1/completions": {"model": "gen", "prompt": "the film", "max_tokens": 4},
    "/v1/chat/completions": {
        "model": "gen",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4,
    },
    "/v1/embeddings": {"model": "embed", "input": ["a cat"]},
    "/v1/rerank": {"model": "rank", "query": "who", "documents": ["a", "b"]},
}
_HOSTILE_COUNTS: dict[str, dict[int, int]] = {}


def _leaves(value: object, path: tuple = ()) -> list[tuple]:
    """Paths to every value inside a JSON document (the document itself excluded)."""
    found = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, inner in items:
        found.append((*path, key))
        found.extend(_leaves(inner, (*path, key)))
    return found


def _replace(document: object, path: tuple, new: object) -> object:
    copied = json.loads(json.dumps(document))
    target = copied
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = new
    return copied


def _hostile_requests(valid: dict):
    """(body bytes, extra headers) for requests that break `valid` in one place."""
    from hypothesis import strategies as st

    paths = _leaves(valid)
    strings = [p for p in paths if isinstance(_get(valid, p), str)]
    numbers = [p for p in paths if type(_get(valid, p)) in (int, float)]
    containers = [()] + [p for p in paths if isinstance(_get(valid, p), dict)]
    name = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)

    def encoded(body: object) -> bytes:
        return json.dumps(body, allow_nan=True).encode()

    unknown_field = st.builds(
        lambda where, key, value: encoded(_put(valid, where, "zz_" + key, value)),
        st.sampled_from(containers),
        name,
        st.integers(),
    )
    # A value of a shape no field takes: an object of unknown keys, or a list of them.
    wrong_shape = st.builds(
        lambda where, key, as_list: encoded(
            _replace(valid, where, [{"zz_" + key: 1}] if as_list else {"zz_" + key: 1})
        ),
        st.sampled_from(paths),
        name,
        st.booleans(),
    )
    surrogate = st.builds(
        lambda where, text: encoded(_replace(valid, where, text + "\ud800")),
        st.sampled_from(strings),
        st.text(max_size=8),
    )
    bad_number = st.builds(
        lambda where, value: encoded(_replace(valid, where, value)),
        st.sampled_from(numbers or paths),
        st.sampled_from([float("nan"), float("inf"), float("-inf"), -1, -(10**30), 0.5]),
    )
    # Raw bytes that are not UTF-8 (or not JSON) where a string was.
    invalid_bytes = st.builds(
        lambda where, junk: encoded(_replace(valid, where, "@@")).replace(b'"@@"', b'"' + junk + b'"'),
        st.sampled_from(strings),
        st.sampled_from([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\x80abc", b"\\ud800", b"\x00"]),
    )
    deep = st.builds(
        lambda where, depth: encoded(_replace(valid, where, "@@")).replace(
            b'"@@"', b"[" * depth + b"]" * depth
        ),
        st.sampled_from(paths),
        st.integers(min_value=50, max_value=9_000),
    )
    emptied = st.builds(
        lambda where, empty: encoded(_replace(valid, where, empty)),
        # A list (or, where a request has none, its text) emptied, or a list of an empty text.
        st.sampled_from([p for p in paths if isinstance(_get(valid, p), list)] or strings),
        st.sampled_from([[], [""], [[]], [" "]]),
    )
    enormous = st.builds(
        lambda count: (
            encoded({**valid, **({"inputs": ["a"] * count} if "inputs" in valid else {})})
            if "inputs" in valid
            else encoded(_replace(valid, _first_list(valid), ["a"] * count))
        ),
        st.integers(min_value=5_000, max_value=200_000),
    )
    not_an_object = st.sampled_from([b"[]", b"null", b"42", b'"inputs"', b"", b"{", b"{}", b'{"inputs": }'])
    templates = st.builds(
        lambda template: (
            encoded(_put(valid, ("parameters",), "hypothesis_template", template))
            if "parameters" in valid
            else encoded(_put(valid, (), "zz_template", template))
        ),
        st.sampled_from(["{} {x}", "{0.__class__}", "{", "}", "{}{}", "no slot", "{!r}", "{:>99999999}"]),
    )
    body = st.one_of(
        unknown_field,
        wrong_shape,
        surrogate,
        bad_number,
        invalid_bytes,
        deep,
        emptied,
        enormous,
        not_an_object,
        templates,
    )
    adapter = st.sampled_from(
        ["../../etc/passwd", "one/../two", "/tmp/one", "s3://bucket/one", "%2e%2e%2fone", "one\\two", "nope"]
    )
    plain = st.builds(lambda b: (b, {}), body)
    # An unknown or path-like adapter, on an otherwise valid request.
    adapted = st.builds(lambda a: (encoded(valid), {"serve_multiplexed_model_id": a}), adapter)
    return st.one_of(plain, adapted) if "inputs" in valid else plain


def _get(document: object, path: tuple) -> object:
    for key in path:
        document = document[key]  # type: ignore[index]
    return document


def _put(document: object, where: tuple, key: str, value: object) -> object:
    copied = json.loads(json.dumps(document))
    _get(copied, where)[key] = value  # type: ignore[index]
    return copied


def _first_list(document: dict) -> tuple:
    """The first list in `document`, else its first text (which a list of texts then replaces)."""
    paths = _leaves(document)
    return next((p for p in paths if isinstance(_get(document, p), list)), None) or next(
        p for p in paths if isinstance(_get(document, p), str) and p[0] != "model"
    )


def _replica_actors() -> set[str]:
    import ray

    return {
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith("SERVE_REPLICA::")
    }


@pytest.fixture(scope="module")
def replicas_before_hostile(server):
    return _replica_actors()


@pytest.mark.parametrize("route", sorted(HOSTILE_ROUTES))
def test_hostile_requests_get_a_json_4xx_and_never_a_5xx(server, route, replicas_before_hostile):
    from hypothesis import HealthCheck, Phase, given, settings

    valid = HOSTILE_ROUTES[route]
    counts = _HOSTILE_COUNTS.setdefault(route, {})
    session = requests.Session()
    wrong: list[str] = []

    @settings(
        max_examples=HOSTILE_EXAMPLES,
        deadline=None,
        phases=[Phase.generate],
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(_hostile_requests(valid))
    def check(request: tuple[bytes, dict]) -> None:
        body, headers = request
        response = session.post(
            f"{server}{route}",
            data=body,
            headers={"content-type": "application/json", **headers},
            timeout=60,
        )
        counts[response.status_code] = counts.get(response.status_code, 0) + 1
        ok = 400 <= response.status_code < 500 and response.headers.get("content-type", "").startswith(
            "application/json"
        )
        if ok:
            try:
                ok = "error" in response.json()
            except ValueError:
                ok = False
        if not ok and len(wrong) < 5:
            wrong.append(f"{response.status_code} {response.text[:200]!r} for {body[:200]!r} {headers}")

    check()
    print(f"hostile {route}: {sum(counts.values())} requests, statuses {dict(sorted(counts.items()))}")
    assert not wrong, wrong
    assert sum(counts.values()) >= HOSTILE_EXAMPLES
    assert all(400 <= status < 500 for status in counts)
    # A valid request still gets its answer, from the replica that took all of the above.
    assert post(server, route, valid).status_code == 200
    assert _replica_actors() == replicas_before_hostile


SOAK_S = 60
SOAK_CONCURRENCY = 64


def _replica_rss(app: str) -> int:
    """Resident bytes of the app's replica processes."""
    import psutil

    total = 0
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if cmdline and cmdline[0].startswith(f"ray::ServeReplica:{app}:Model"):
            with contextlib.suppress(psutil.NoSuchProcess):
                total += process.memory_info().rss
    return total


def test_a_60_s_soak_at_concurrency_64_answers_everything_and_the_replica_does_not_grow(server):
    """Issue 12: a minute of 64 closed-loop clients on an app with default settings: every request is
    answered (200, or the configured 503 when the replica is full), and the replica's memory over the
    last ten seconds is within 10% of the first ten."""
    from benchmarks.load import run_load
    from benchmarks.models import texts

    pool = texts(512, seed=3)
    samples: list[tuple[float, int]] = []
    done = threading.Event()
    assert _replica_rss("embed") > 0

    def sample() -> None:
        start = time.monotonic()
        while not done.is_set():
            samples.append((time.monotonic() - start, _replica_rss("embed")))
            done.wait(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = run_load(
            f"{server}/embed/predict",
            lambda i: {"inputs": pool[i % len(pool)]},
            SOAK_CONCURRENCY,
            duration_s=SOAK_S,
            max_requests=1_000_000,
            timeout_s=60,
        )
    finally:
        done.set()
        sampler.join(timeout=10)
    summary = result.summary()
    first = [rss for t, rss in samples if t < 10]
    last = [rss for t, rss in samples if t >= samples[-1][0] - 10]
    growth = sum(last) / len(last) / (sum(first) / len(first)) - 1
    print(
        f"soak: {summary['requests']} requests in {result.duration_s:.0f} s at c={SOAK_CONCURRENCY}, "
        f"statuses {summary['statuses']}, errors {summary['errors']}, p50 {summary['p50_s'] * 1000:.0f} ms, "
        f"p99 {summary['p99_s'] * 1000:.0f} ms, replica memory {sum(first) / len(first) / 2**20:.0f} -> "
        f"{sum(last) / len(last) / 2**20:.0f} MiB ({growth:+.1%})"
    )
    assert result.duration_s >= SOAK_S - 1 and samples[-1][0] >= SOAK_S - 2
    assert not result.errors, result.errors  # no resets, no client timeouts
    assert set(result.statuses) <= {200, 503}, result.statuses
    assert result.ok >= SOAK_S  # it kept answering, not only refusing
    assert growth < 0.10


def test_killing_one_of_two_replicas_under_load_loses_only_its_requests_in_flight(server):
    """Issue 12: kill one replica of a 2-replica app under steady load. Serve replaces it; only the
    requests in flight on it may fail (counted), every request after the replacement succeeds, and no
    client hangs."""
    import ray

    clients, timeout_s = 8, 30.0
    counts = {"sent": 0, "failed": 0, "failed_after": 0, "ok_after": 0}
    failures: list[str] = []
    lock = threading.Lock()
    stop, recovered = threading.Event(), threading.Event()

    def client() -> None:
        session = requests.Session()
        while not stop.is_set():
            after = recovered.is_set()
            try:
                response = session.post(
                    f"{server}/pair/predict", json={"inputs": "a great film"}, timeout=timeout_s
                )
                ok, what = response.status_code == 200, f"{response.status_code} {response.text[:120]}"
            except requests.RequestException as err:
                ok, what = False, type(err).__name__
            with lock:
                counts["sent"] += 1
                if not ok:
                    counts["failed_after" if after else "failed"] += 1
                    failures.append(what)
                elif after:
                    counts["ok_after"] += 1

    before = {n for n in _replica_actors() if n.startswith("SERVE_REPLICA::pair#")}
    assert len(before) == 2
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        time.sleep(3)
        victim = sorted(before)[0]
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        killed_at = time.monotonic()
        deadline = killed_at + 120
        while time.monotonic() < deadline:
            now = {n for n in _replica_actors() if n.startswith("SERVE_REPLICA::pair#")}
            if victim not in now and len(now) == 2 and _replicas("pair") == 2:
                break
            time.sleep(0.5)
        replaced_after = time.monotonic() - killed_at
        assert victim not in now and len(now) == 2, now
        time.sleep(2)  # the proxy learns of the new replica
        recovered.set()
        time.sleep(5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=timeout_s + 5)
    assert not any(t.is_alive() for t in threads), "a client hung"
    print(
        f"replica kill: {counts['sent']} sent, {counts['failed']} failed around the kill, replaced in "
        f"{replaced_after:.1f} s, then {counts['ok_after']} ok and {counts['failed_after']} failed; "
        f"failures {failures[:5]}"
    )
    assert counts["failed"] <= clients, failures  # at most the requests in flight on the victim
    assert counts["failed_after"] == 0, failures
    assert counts["ok_after"] > 0
