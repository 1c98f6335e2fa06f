"""Prometheus metrics as an operator scrapes them: Ray's metrics agent on each node, after a counted set
of requests to the shared deployment, shows exactly those counts by app, route and status, the latency
and batch-size histograms moved by as much, and the model errors, queue and adapter metrics are there."""

from __future__ import annotations

import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.integration.serving.examples import BROKEN_WORD, post

Series = tuple[str, frozenset[tuple[str, str]]]
QUEUE = ("ray_rayformers_queue_length", frozenset({("app", "sentiment")}))


def scrape() -> dict[Series, float]:
    """Every sample of every alive node's metrics agent, summed over the series that differ only by
    replica, worker or node (what a dashboard's `sum by (...)` shows)."""
    import ray
    from prometheus_client.parser import text_string_to_metric_families

    kept = {"app", "route", "status", "le"}
    totals: dict[Series, float] = defaultdict(float)
    for node in ray.nodes():
        if not node["Alive"]:
            continue
        url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
        text = requests.get(url, timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.startswith("ray_rayformers_"):
                    labels = frozenset((k, v) for k, v in sample.labels.items() if k in kept)
                    totals[(sample.name, labels)] += sample.value
    return totals


def value(samples: dict[Series, float], name: str, **labels: str) -> float:
    return sum(v for (n, tags), v in samples.items() if n == name and set(labels.items()) <= tags)


def test_a_scrape_after_a_counted_set_of_requests_finds_exactly_those_counts(server):
    expected = {
        ("ray_rayformers_requests_total", "sentiment", "/predict", "200"): 7,
        ("ray_rayformers_requests_total", "sentiment", "/predict", "422"): 3,
        ("ray_rayformers_requests_total", "broken", "/predict", "500"): 2,
        ("ray_rayformers_requests_total", "broken", "/predict", "200"): 1,
        ("ray_rayformers_requests_total", "gateway", "/v1/embeddings", "200"): 2,
        ("ray_rayformers_requests_total", "gateway", "/v1/chat/completions", "404"): 1,
        ("ray_rayformers_requests_total", "gateway", "unknown", "404"): 2,
        ("ray_rayformers_request_latency_seconds_count", "sentiment", "/predict", None): 10,
        ("ray_rayformers_request_latency_seconds_count", "gateway", "/v1/embeddings", None): 2,
        ("ray_rayformers_model_errors_total", "broken", None, None): 2,
        # The two embeddings requests, one after the other, reached the embedding app's batcher through
        # the gateway as a batch each.
        ("ray_rayformers_batch_size_count", "embed", None, None): 2,
    }

    def measured(samples: dict[Series, float]) -> dict[tuple[str, str, str | None, str | None], float]:
        out = {}
        for key in expected:
            name, app, route, status = key
            labels = {
                "app": app,
                **({"route": route} if route else {}),
                **({"status": status} if status else {}),
            }
            out[key] = value(samples, name, **labels)
        return out

    first = scrape()
    before, batches_before = measured(first), value(first, "ray_rayformers_batch_size_count", app="sentiment")
    with ThreadPoolExecutor(7) as pool:  # together, so that the batcher may ride some of them together
        answers = list(
            pool.map(lambda i: post(server, "/sentiment/predict", {"inputs": f"film {i}"}), range(7))
        )
    assert [a.status_code for a in answers] == [200] * 7
    # Ray drops a gauge's series two export intervals after it was last set: look while it is fresh.
    queue_seen: list[float] = []
    fresh = time.monotonic() + 15
    while not queue_seen and time.monotonic() < fresh:
        queue_seen = [v for series, v in scrape().items() if series == QUEUE]
        time.sleep(0.0 if queue_seen else 0.5)
    for _ in range(3):
        assert post(server, "/sentiment/predict", {"inputs": "   "}).status_code == 422
    for _ in range(2):
        assert post(server, "/broken/predict", {"inputs": f"a {BROKEN_WORD}"}).status_code == 500
    # A success after the failures: the replica's failure streak ends here, not in a later module.
    assert post(server, "/broken/predict", {"inputs": "Hello world."}).status_code == 200
    for _ in range(2):
        assert post(server, "/v1/embeddings", {"model": "embed", "input": "a cat"}).status_code == 200
    chat = {"model": "nobody", "messages": [{"role": "user", "content": "hi"}]}
    assert post(server, "/v1/chat/completions", chat).status_code == 404
    for hostile in ("/../../etc/passwd", "/" + "x" * 500):  # made-up paths: one label, not one each
        assert requests.get(f"{server}{hostile}", timeout=30).status_code == 404

    deadline = time.monotonic() + 60  # Ray's agent exports what replicas record every few seconds
    while True:
        now = measured(scrape())
        deltas = {key: now[key] - before[key] for key in expected}
        if deltas == expected or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert deltas == expected

    samples = scrape()
    # The 7 answered predicts rode in 1 to 7 batches, however they were grouped. (Ray exports a
    # histogram's `_sum` from its buckets' midpoints, so only the counts are exact.)
    assert 1 <= value(samples, "ray_rayformers_batch_size_count", app="sentiment") - batches_before <= 7
    assert not any(
        ("route", path) in tags for (_, tags) in samples for path in ("/../../etc/passwd", "/" + "x" * 500)
    )
    # The latency histogram's buckets hold every sentiment request.
    assert value(
        samples, "ray_rayformers_request_latency_seconds_bucket", app="sentiment", route="/predict", le="+Inf"
    ) == (value(samples, "ray_rayformers_request_latency_seconds_count", app="sentiment", route="/predict"))
    assert value(samples, "ray_rayformers_request_latency_seconds_sum", app="sentiment", route="/predict") > 0
    assert value(samples, "ray_rayformers_batch_tokens_count", app="sentiment") > 0
    assert queue_seen and all(0 <= length <= 7 for length in queue_seen)


def test_an_adapter_request_is_counted_as_a_load_on_its_app(server):
    assert post(
        server, "/lora/predict", {"inputs": "a film"}, headers={"serve_multiplexed_model_id": "two"}
    ).ok
    deadline = time.monotonic() + 60
    while value(scrape(), "ray_rayformers_adapter_loads_total", app="lora") < 1:
        assert time.monotonic() < deadline, "no adapter load was exported for app lora"
        time.sleep(1)
