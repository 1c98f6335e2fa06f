"""The serving metrics without Ray: each request is counted once with its route template (never the raw
path), its status and latency, whoever answered it; the batcher reports batch sizes and its queue; a
metric that cannot be recorded never fails a request."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi import FastAPI, Request

from rayformers.serving import metrics as metrics_module
from rayformers.serving.args import HttpArgs
from rayformers.serving.batching import Batcher
from rayformers.serving.metrics import CLIENT_GONE, METRICS, UNKNOWN_ROUTE, ServingMetrics
from rayformers.serving.responses import install
from tests.unit.serving.asgi_client import call

KEY = "k" * 12 + "-config-key"
JSON = {"content-type": "application/json"}


class Recorded(ServingMetrics):
    """What the guard records, kept here instead of in Ray."""

    seen: list[tuple[str, int, float]] = []

    def request(self, route: str, status: int, seconds: float) -> None:
        Recorded.seen.append((route, status, seconds))


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, float]]:
    monkeypatch.setattr("rayformers.serving.responses.ServingMetrics", Recorded)
    Recorded.seen = []
    return Recorded.seen


def app_with(http: HttpArgs, catch_all: bool = False) -> FastAPI:
    app = FastAPI()
    install(app, http)

    @app.post("/predict")
    async def predict(body: dict[str, int]) -> dict[str, int]:
        return body

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @app.get("/boom")
    async def boom() -> dict[str, str]:
        raise RuntimeError("internals")

    @app.get("/slow")
    async def slow() -> dict[str, str]:
        await asyncio.sleep(30)
        return {"ok": "late"}

    if catch_all:

        @app.api_route("/{path:path}", methods=["GET", "POST"])
        async def unknown(path: str) -> dict[str, str]:
            return {"path": path}

    return app


def test_each_request_is_counted_once_by_route_template_and_status(recorded):
    app = app_with(HttpArgs(max_body_bytes=2048))
    answers = [
        call(app, "/predict", body=b'{"a": 1}', headers=JSON, root_path="/sentiment"),
        call(app, "/predict", body=b'{"a": "not a number"}', headers=JSON, root_path="/sentiment"),
        call(app, "/items/41", method="GET", root_path="/sentiment"),
        call(app, "/items/4242", method="GET", root_path="/sentiment"),
        call(app, "/boom", method="GET", root_path="/sentiment"),
        call(app, "/predict", method="GET", root_path="/sentiment"),
        call(app, "/echo", body=b"x" * 4096, root_path="/sentiment"),
    ]
    assert [a.status for a in answers] == [200, 422, 200, 200, 500, 405, 413]
    assert [(route, status) for route, status, _ in recorded] == [
        ("/predict", 200),
        ("/predict", 422),
        ("/items/{item_id}", 200),
        ("/items/{item_id}", 200),
        ("/boom", 500),
        ("/predict", 405),
        ("/echo", 413),  # answered by the guard before routing: the route is matched for the label
    ]
    assert all(0 < seconds < 5 for _, _, seconds in recorded)


def test_paths_no_route_serves_share_one_label_however_many_a_client_makes_up(recorded):
    for app in (app_with(HttpArgs()), app_with(HttpArgs(), catch_all=True)):
        for path in ("/nowhere", "/../../etc/passwd", "/" + "a" * 2000, "/items/1/more", "/%00%ff"):
            call(app, path, method="GET", root_path="/sentiment")
    assert {route for route, _, _ in recorded} == {UNKNOWN_ROUTE}
    assert {status for _, status, _ in recorded} == {404, 200}  # the catch-all app answers them itself


def test_refused_keys_and_deadlines_are_counted_with_their_route(recorded):
    keyed = app_with(HttpArgs(api_keys=[KEY]))
    assert call(keyed, "/predict", body=b"{}", root_path="/sentiment").status == 401
    assert call(keyed, "/made-up", method="GET", root_path="/sentiment").status == 401
    late = app_with(HttpArgs(request_timeout_s=0.05))
    assert call(late, "/slow", method="GET").status == 504
    assert [(route, status) for route, status, _ in recorded] == [
        ("/predict", 401),
        (UNKNOWN_ROUTE, 401),
        ("/slow", 504),
    ]


def test_a_client_that_leaves_before_any_answer_is_counted_as_499(recorded):
    app = app_with(HttpArgs())

    async def leave() -> None:
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/slow",
            "raw_path": b"/slow",
            "root_path": "",
            "query_string": b"",
            "headers": [],
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            pass

        task = asyncio.ensure_future(app(scope, receive, send))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(leave())
    assert [(route, status) for route, status, _ in recorded] == [("/slow", CLIENT_GONE)]


class Broken:
    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"the metrics backend is gone ({name})")


def test_a_metric_that_cannot_be_recorded_never_fails_the_request_and_is_logged_once(monkeypatch):
    monkeypatch.setattr(metrics_module, "_registered", lambda: {spec.name: Broken() for spec in METRICS})
    monkeypatch.setattr(metrics_module, "_warned", False)
    warned: list[str] = []
    monkeypatch.setattr(
        metrics_module.logger, "warning", lambda message, *args, **_: warned.append(message % args)
    )
    app = app_with(HttpArgs())
    for _ in range(3):
        assert call(app, "/predict", body=b'{"a": 1}', headers=JSON).status == 200
    recording = ServingMetrics("sentiment")
    recording.batch(4)
    recording.queue_length(2)
    recording.model_errors(1)
    assert len(warned) == 1 and "metric failed" in warned[0]


def test_registration_that_fails_leaves_metrics_off_without_failing(monkeypatch):
    def refuse() -> dict[str, Any]:
        raise RuntimeError("no metrics here")

    monkeypatch.setattr(metrics_module, "_registered", refuse)
    monkeypatch.setattr(metrics_module, "_warned", False)
    quiet = ServingMetrics("sentiment")
    quiet.request("/predict", 200, 0.01)
    quiet.adapter_loaded()


def test_the_real_ray_metrics_record_outside_ray_too():
    recording = ServingMetrics("sentiment")
    recording.request("/predict", 200, 0.01)
    recording.batch(3)
    recording.batch_tokens(300)
    recording.queue_length(0)
    recording.adapter_loaded()
    recording.adapter_evicted()
    recording.model_errors(2)


def test_metric_names_are_prefixed_unique_and_every_one_carries_the_app():
    names = [spec.name for spec in METRICS]
    assert len(set(names)) == len(names)
    assert all(name.startswith("rayformers_") for name in names)
    assert all(spec.tags[0] == "app" for spec in METRICS)
    assert all(list(spec.boundaries) == sorted(spec.boundaries) for spec in METRICS)
    assert all(bool(spec.boundaries) == (spec.kind == "histogram") for spec in METRICS)


class Observer:
    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.queue: list[int] = []

    def batch(self, size: int) -> None:
        self.sizes.append(size)

    def queue_length(self, waiting: int) -> None:
        self.queue.append(waiting)


def test_the_batcher_reports_each_batch_size_and_its_queue():
    observer = Observer()

    async def run(items: list[int]) -> list[int]:
        await asyncio.sleep(0.05)
        return items

    async def main() -> None:
        batcher = Batcher(run, max_batch_size=4, observer=observer)
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.01)  # the first batch runs alone; six more wait for it
        rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 7)]
        assert await asyncio.gather(first, *rest) == list(range(7))

    asyncio.run(main())
    assert observer.sizes == [1, 4, 2]
    assert max(observer.queue) == 6  # the six that waited behind the first batch
    assert observer.queue[-1] == 0  # the last batch left the queue empty
