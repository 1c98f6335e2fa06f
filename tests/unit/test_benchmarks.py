"""The benchmark harness measures what it says: the load generator counts every answer by status and
reads batch sizes, and a result becomes its JSON, Markdown table and plot (what `make bench` writes)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator

import pytest
from aiohttp import web

from benchmarks import load, report


@pytest.fixture()
def fake_server() -> Iterator[str]:
    """Answers /predict after 5 ms with X-Batch-Size 3; every 4th request is a 503."""
    seen = [0]

    async def predict(request: web.Request) -> web.Response:
        seen[0] += 1
        number = seen[0]
        await asyncio.sleep(0.005)
        if number % 4 == 0:
            return web.json_response({"error": "overloaded"}, status=503)
        return web.json_response([{"label": "x"}], headers={"X-Batch-Size": "3"})

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/predict", predict)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}/predict"
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def test_the_load_generator_counts_every_answer(fake_server):
    result = load.run_load(fake_server, lambda i: {"inputs": str(i)}, 4, duration_s=1.0, max_requests=40)
    summary = result.summary()
    assert summary["requests"] == 40 == sum(summary["statuses"].values())
    assert summary["statuses"][503] >= 8 and summary["ok"] == summary["statuses"][200]
    assert len(result.latencies) == summary["ok"] and 0.005 <= summary["p50_s"] < 1.0
    assert summary["batch_sizes"] == {3: summary["ok"]}


def test_a_result_becomes_json_a_table_and_a_plot(tmp_path):
    run = {"concurrency": 1, "req_per_s": 10.0, "p50_s": 0.1, "p95_s": 0.2, "p99_s": 0.3, "statuses": {200: 5},
           "errors": {}, "batch_sizes": {1: 5}, "cpu_percent": 50.0}  # fmt: skip
    result = {
        "name": "fake", "title": "A fake benchmark", "model": {},
        "throughput": {"key": "req_per_s", "label": "req/s", "unit": "seq/s"},
        "servers": {"rayformers": [run], "naive": [{**run, "req_per_s": 5.0}]},
        "roof": {"best": 20.0, "by_batch": {"16": 20.0}},
        "ratios": {"concurrency": [1], "values": {"rayformers / naive": [2.0]}},
    }  # fmt: skip
    table = report.write(result, tmp_path).read_text()
    assert "| rayformers | 1 | 10.0 | 100 ms | 200 ms | 300 ms |" in table
    assert "| rayformers / naive | 2.00 |" in table and "20.0 seq/s" in table
    saved = json.loads((tmp_path / "fake.json").read_text())
    assert saved["servers"]["naive"][0]["req_per_s"] == 5.0 and "torch" in saved["machine"]["versions"]
    assert (tmp_path / "fake.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_steady_state_leaves_out_the_warm_up_steps():
    from benchmarks.training import steady_samples_per_s

    # three slow warm-up steps, then 32 rows every 0.5 s: 64 samples/s, whatever the warm-up took
    ends = [5.0, 9.0, 10.0, 10.5, 11.0, 11.5, 12.0]
    assert steady_samples_per_s(ends, [32] * 7, warmup=3) == 64.0
    with pytest.raises(ValueError, match="more than 3 timed steps"):
        steady_samples_per_s(ends[:3], [32] * 3, warmup=3)
