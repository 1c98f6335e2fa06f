"""The HTTP layer every served route sits behind, driven as ASGI without Ray: API keys (401 in the
project's and OpenAI's error shapes), a body over the limit read to its end then answered 413, the
request deadline (504), and a JSON 500 without internal detail for what no route answered."""

from __future__ import annotations

import asyncio
import time

import pytest
from fastapi import FastAPI, Request

from rayformers.config import ServeConfig
from rayformers.serving.access import API_KEYS_ENV, ApiKeys, env_keys, resolve_keys
from rayformers.serving.args import HttpArgs
from rayformers.serving.errors import ServingError
from rayformers.serving.responses import install
from tests.unit.serving.asgi_client import call

KEY = "k" * 12 + "-config-key"
ENV_KEY = "e" * 12 + "-env-key"


def app_with(http: HttpArgs) -> FastAPI:
    app = FastAPI()
    install(app, http)

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @app.get("/info")
    async def info() -> dict[str, str]:
        return {"ok": "yes"}

    @app.post("/v1/completions")
    async def completions() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/slow")
    async def slow() -> dict[str, str]:
        await asyncio.sleep(30)
        return {"ok": "late"}

    @app.get("/boom")
    async def boom() -> dict[str, str]:
        raise RuntimeError("pid=4242 ip=10.0.0.7 secret internals")

    return app


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_with_keys_every_route_needs_one_and_the_answer_never_shows_a_key(monkeypatch):
    monkeypatch.setenv(API_KEYS_ENV, f" {ENV_KEY} ,")
    app = app_with(HttpArgs(api_keys=[KEY]))
    for path, method in (("/info", "GET"), ("/echo", "POST"), ("/nowhere", "GET"), ("/docs", "GET")):
        missing = call(app, path, method=method, root_path="/sentiment")
        assert missing.status == 401 and missing.headers["www-authenticate"] == "Bearer", path
        assert missing.content_type.startswith("application/json")
        error = missing.json()["error"]
        assert error["type"] == "invalid_api_key" and "Authorization: Bearer" in error["message"]
    wrong = call(app, "/info", method="GET", headers=bearer(KEY[:-1] + "X"))
    assert wrong.status == 401 and KEY[:-1] not in wrong.body.decode()
    assert call(app, "/info", method="GET", headers={"Authorization": KEY}).status == 401  # no scheme
    # Both sources are accepted, the scheme in any case.
    assert call(app, "/info", method="GET", headers=bearer(KEY)).status == 200
    assert call(app, "/info", method="GET", headers={"authorization": f"bearer {ENV_KEY}"}).status == 200


def test_the_openai_routes_answer_401_in_openai_error_shape():
    app = app_with(HttpArgs(api_keys=[KEY]))
    answer = call(app, "/v1/completions", body=b"{}")
    assert answer.status == 401 and answer.headers["www-authenticate"] == "Bearer"
    error = answer.json()["error"]
    assert {"message", "type", "param", "code"} <= set(error) and error["code"] == "invalid_api_key"
    assert call(app, "/v1/completions", body=b"{}", headers=bearer(KEY)).status == 200


def test_an_open_prefix_ends_at_a_path_segment():
    from rayformers.serving.access import is_open

    assert is_open("/sentiment", ["/sentiment*"]) and is_open("/sentiment/info", ["/sentiment*"])
    assert not is_open("/sentiment-internal/predict", ["/sentiment*"])
    assert not is_open("/sentiment2/info", ["/sentiment*"])
    assert is_open("/sentiment/info", ["/sentiment/*"]) and not is_open("/sentimental/x", ["/sentiment/*"])


def test_open_routes_answer_without_a_key_and_no_keys_means_open():
    app = app_with(HttpArgs(api_keys=[KEY], open_routes=["/sentiment/info"]))
    assert call(app, "/info", method="GET", root_path="/sentiment").status == 200
    assert call(app, "/info", method="GET", root_path="/other").status == 401
    prefix = app_with(HttpArgs(api_keys=[KEY], open_routes=["/sentiment/*"]))
    assert call(prefix, "/info", method="GET", root_path="/sentiment").status == 200
    assert call(app_with(HttpArgs()), "/info", method="GET").status == 200


def test_a_refused_body_is_read_to_its_end_before_the_answer():
    app = app_with(HttpArgs(api_keys=[KEY], max_body_bytes=4096))
    chunks = [b"x" * 1000] * 20
    unauthorized = call(app, "/echo", body=chunks)
    assert unauthorized.status == 401 and unauthorized.chunks_read_before_answer == 20
    too_big = call(app, "/echo", body=chunks, headers=bearer(KEY))
    assert too_big.status == 413 and too_big.chunks_read_before_answer == 20
    assert too_big.json()["error"]["limit"] == 4096 and too_big.content_type.startswith("application/json")
    declared = call(app, "/echo", body=b"x" * 5000, headers=bearer(KEY))  # refused by Content-Length
    assert declared.status == 413 and declared.chunks_read_before_answer == declared.chunks == 1
    fits = call(app, "/echo", body=[b"x" * 1000] * 4, headers=bearer(KEY))
    assert fits.status == 200 and fits.json() == {"bytes": 4000}


def test_an_endless_or_trickled_body_holds_no_slot():
    """A refused body is drained only up to 16x the limit, then the answer closes the connection; a body
    that never ends in time is answered 408 at the deadline."""
    app = app_with(HttpArgs(api_keys=[KEY], max_body_bytes=1024, request_timeout_s=0.3))
    endless = [b"z" * 1000] * 500  # 500 kB, far past 16 x 1024
    for headers in ({}, bearer(KEY)):  # a stranger's 401 and a keyed 413 alike
        answer = call(app, "/echo", body=endless, headers=headers)
        assert answer.status in (401, 413) and answer.headers.get("connection") == "close"
        assert answer.chunks_read_before_answer <= 20
    received: list[dict] = []

    async def trickle() -> dict:
        if not received:
            received.append({})
            return {"type": "http.request", "body": b"x", "more_body": True}
        await asyncio.sleep(60)  # the rest never comes
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        received.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/echo", "raw_path": b"/echo", "root_path": "", "query_string": b"",
             "headers": [(b"authorization", f"Bearer {KEY}".encode())], "server": ("t", 80), "client": ("c", 1)}  # fmt: skip
    began = time.perf_counter()
    asyncio.run(app(scope, trickle, send))
    assert time.perf_counter() - began < 5
    start = next(m for m in received if m.get("type") == "http.response.start")
    assert start["status"] == 408 and (b"connection", b"close") in start["headers"]


def test_a_body_of_many_chunks_is_read_in_linear_time():
    """40,000 chunks of 100 bytes: appending to one bytes object copies it each time (80 GB here)."""
    app = app_with(HttpArgs(max_body_bytes=8_000_000))
    began = time.perf_counter()
    answer = call(app, "/echo", body=[b"y" * 100] * 40_000)
    assert answer.status == 200 and answer.json() == {"bytes": 4_000_000}
    assert time.perf_counter() - began < 3.0


def test_a_route_over_the_deadline_answers_504_in_json():
    app = app_with(HttpArgs(request_timeout_s=0.2))
    began = time.perf_counter()
    answer = call(app, "/slow", method="GET")
    assert answer.status == 504 and time.perf_counter() - began < 5
    error = answer.json()["error"]
    assert (
        error["type"] == "timeout"
        and error["timeout_s"] == 0.2
        and "serve.request_timeout_s" in error["message"]
    )
    assert call(app, "/info", method="GET").status == 200


def test_an_unexpected_failure_is_a_json_500_without_internal_detail():
    answer = call(app_with(HttpArgs()), "/boom", method="GET")
    assert answer.status == 500 and answer.content_type.startswith("application/json")
    error = answer.json()["error"]
    assert error["type"] == "internal_error" and error["request_id"] == answer.headers["x-request-id"]
    assert "pid" not in answer.body.decode() and "10.0.0.7" not in answer.body.decode()


def test_keys_merge_from_config_and_environment_and_bad_ones_are_named_not_shown():
    keys = resolve_keys(HttpArgs(api_keys=[KEY]), {API_KEYS_ENV: f"{ENV_KEY},{KEY}"})
    assert keys.allows(f"Bearer {KEY}") and keys.allows(f"Bearer {ENV_KEY}") and not keys.allows("Bearer x")
    assert KEY not in repr(keys) and env_keys({}) == []
    with pytest.raises(ServingError, match=rf"{API_KEYS_ENV}\[1\] \(a key of 5 characters\)") as err:
        env_keys({API_KEYS_ENV: f"{ENV_KEY},short"})
    assert "short" not in str(err.value)
    with pytest.raises(ValueError, match=r"api_keys\[0\] \(a key of 6 characters\)") as config_err:
        ServeConfig(api_keys=["secret"])
    assert "secret" not in str(config_err.value)
    with pytest.raises(ValueError, match="not a path"):
        ServeConfig(open_routes=["health"])


def test_a_replica_built_with_keys_refuses_to_start_without_any():
    with pytest.raises(ServingError, match=f"set {API_KEYS_ENV}"):
        resolve_keys(HttpArgs(require_api_keys=True), {})
    assert resolve_keys(HttpArgs(require_api_keys=True), {API_KEYS_ENV: ENV_KEY})
    assert not ApiKeys([])


def test_every_key_is_compared_in_constant_time(monkeypatch):
    import hmac

    compared = []
    real = hmac.compare_digest

    def spy(a, b):
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    keys = ApiKeys([KEY, ENV_KEY])
    assert keys.allows(f"Bearer {KEY}")
    assert compared == [KEY.encode(), ENV_KEY.encode()]  # the match on the first did not stop the loop
