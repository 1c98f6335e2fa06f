"""A server that strangers can reach, over real Serve HTTP: API keys on every route (from the config and
from RAYFORMERS_API_KEYS, which reaches the replicas with their arguments), no storage paths in /info or
the docs, a 12 MB body answered 413 in JSON, a deadline answered 504 in JSON, and client mistakes
(a lone surrogate, an empty text, a chat the template refuses) answered 422, never as model failures.
One deployment of two tiny apps, shared by the module."""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from rayformers.config import ClusterConfig, ServeAppConfig, ServeConfig
from tests.integration.serving.examples import free_port as _free_port

pytestmark = pytest.mark.usefixtures("ray_cluster")

CONFIG_KEY = "config-key-" + "c" * 16
ENV_KEY = "env-key-" + "e" * 16
TIMEOUT_S = 1.0
TEMPLATE = (
    "{% if messages[0]['role'] != 'user' %}{{ raise_exception('the first message must be from the user') }}"
    "{% endif %}{% for m in messages %}{{ m['content'] }} {% endfor %}"
)


@pytest.fixture(scope="module")
def checkpoints(tiny_checkpoint, tmp_path_factory):
    chat = tmp_path_factory.mktemp("chat") / "checkpoint"
    shutil.copytree(tiny_checkpoint("text-generation"), chat)
    config = json.loads((chat / "tokenizer_config.json").read_text())
    config["chat_template"] = TEMPLATE
    (chat / "tokenizer_config.json").write_text(json.dumps(config))
    return {"cls": str(tiny_checkpoint("text-classification")), "gen": str(chat)}


@pytest.fixture(scope="module")
def server(checkpoints, monkeypatch_module):
    from rayformers.serving.access import API_KEYS_ENV
    from rayformers.serving.app import checked
    from rayformers.serving.server import deploy

    # Set in this driver only: Ray's workers started before it, so the key reaches the replicas only
    # as `rayformers serve` passes it, resolved at deploy time.
    monkeypatch_module.setenv(API_KEYS_ENV, ENV_KEY)
    apps = [
        ServeAppConfig(name="cls", checkpoint=checkpoints["cls"], num_cpus=0.05),
        ServeAppConfig(name="gen", checkpoint=checkpoints["gen"], num_cpus=0.05, max_batch_size=1),
    ]
    serve_cfg = ServeConfig(
        port=_free_port(),
        api_keys=[CONFIG_KEY],
        open_routes=["/gen/info"],
        request_timeout_s=TIMEOUT_S,
    )
    served = deploy(serve_cfg, checked(serve_cfg, apps), ClusterConfig(), progress=lambda _: None)
    yield served.base
    served.shutdown()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def auth(key: str = CONFIG_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _error(response: requests.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.text
    return response.json()["error"]


ROUTES = [
    ("POST", "/cls/predict", {"inputs": "a fine film"}),
    ("GET", "/cls/info", None),
    ("GET", "/cls/docs", None),
    ("GET", "/cls/openapi.json", None),
    ("GET", "/", None),
    ("GET", "/v1/models", None),
    ("POST", "/v1/completions", {"model": "gen", "prompt": "the", "max_tokens": 2}),
    ("GET", "/nowhere", None),
]


def test_every_route_answers_401_without_a_key_and_answers_with_either_key(server):
    for method, path, body in ROUTES:
        bare = requests.request(method, f"{server}{path}", json=body, timeout=60)
        error = _error(bare, 401)
        assert bare.headers["WWW-Authenticate"] == "Bearer", path
        assert CONFIG_KEY not in bare.text and ENV_KEY not in bare.text
        if path.startswith("/v1/"):
            assert {"message", "type", "param", "code"} <= set(error), error
        wrong = requests.request(method, f"{server}{path}", json=body, headers=auth("x" * 20), timeout=60)
        assert _error(wrong, 401)["type"] == "invalid_api_key"
        for key in (CONFIG_KEY, ENV_KEY):
            answered = requests.request(method, f"{server}{path}", json=body, headers=auth(key), timeout=60)
            assert answered.status_code == (404 if path == "/nowhere" else 200), (path, answered.text)
    assert requests.get(f"{server}/gen/info", timeout=60).status_code == 200  # left open by config
    assert requests.get(f"{server}/-/healthz", timeout=60).status_code == 200  # Serve's own, always open


def test_info_and_docs_show_no_storage_paths(server, checkpoints):
    for app in ("cls", "gen"):
        info = requests.get(f"{server}/{app}/info", headers=auth(), timeout=60)
        docs = requests.get(f"{server}/{app}/openapi.json", headers=auth(), timeout=60)
        assert info.status_code == docs.status_code == 200
        assert info.json()["task"] and "checkpoint" not in info.json()
        for text in (info.text, docs.text):
            assert checkpoints[app] not in text and str(os.path.dirname(checkpoints[app])) not in text


def test_a_12_mb_body_is_a_json_413_and_the_next_request_is_answered(server):
    big = json.dumps({"inputs": "word " * 2_400_000}).encode()
    assert len(big) > 12_000_000
    declared = requests.post(
        f"{server}/cls/predict", data=big, headers={**auth(), "content-type": "application/json"}, timeout=120
    )
    assert _error(declared, 413)["limit"] == ServeConfig().max_body_bytes

    def chunks():
        for start in range(0, len(big), 1 << 20):
            yield big[start : start + (1 << 20)]

    chunked = requests.post(
        f"{server}/cls/predict",
        data=chunks(),
        headers={**auth(), "content-type": "application/json"},
        timeout=120,
    )
    assert _error(chunked, 413)["type"] == "payload_too_large"
    after = requests.post(f"{server}/cls/predict", json={"inputs": "a fine film"}, headers=auth(), timeout=60)
    assert after.status_code == 200 and set(after.json()) == {"label", "score"}


def _raw(server: str, path: str, text: str) -> requests.Response:
    """POST `text` as the body as written: JSON escapes such as \\ud800 reach the server as escapes."""
    return requests.post(
        f"{server}{path}",
        data=text.encode(),
        headers={**auth(), "content-type": "application/json"},
        timeout=60,
    )


def test_client_mistakes_are_422_and_never_count_against_the_replicas_health(server):
    from ray import serve

    for _ in range(4):  # more than the failures after which a replica reports itself unhealthy
        assert _error(_raw(server, "/cls/predict", '{"inputs": "\\ud800"}'), 422)["field"] == "inputs[0]"
        assert _error(_raw(server, "/cls/predict", '{"inputs": ["ok", ""]}'), 422)["field"] == "inputs[1]"
        assert _error(_raw(server, "/gen/predict", '{"inputs": ""}'), 422)["field"] == "inputs[0]"
        completion = _raw(server, "/v1/completions", '{"model": "gen", "prompt": "\\udfff", "max_tokens": 2}')
        assert set(_error(completion, 400)) >= {"message", "type", "param", "code"}  # OpenAI's status
    for app in ("cls", "gen"):
        serve.get_deployment_handle("Model", app_name=app).check_health.remote().result(timeout_s=30)
    assert _raw(server, "/cls/predict", '{"inputs": "a fine film"}').status_code == 200


def test_a_chat_the_template_refuses_is_a_400_and_a_stream_error_is_a_clean_event(server):
    refused = requests.post(
        f"{server}/v1/chat/completions",
        json={"model": "gen", "messages": [{"role": "system", "content": "be brief"}], "max_tokens": 2},
        headers=auth(),
        timeout=60,
    )
    error = _error(refused, 400)  # the OpenAI routes answer an invalid request 400, as OpenAI does
    assert "first message must be from the user" in error["message"] and error["param"] == "messages"
    assert "Traceback" not in refused.text and "pid=" not in refused.text
    chat = requests.post(
        f"{server}/v1/chat/completions",
        json={"model": "gen", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        headers=auth(),
        timeout=60,
    )
    assert chat.status_code == 200, chat.text
    # A stream refused before its first token is an HTTP error, not a 200 holding an error event.
    stream = _raw(
        server, "/v1/completions", '{"model": "gen", "prompt": "\\ud800", "max_tokens": 2, "stream": true}'
    )
    failure = _error(stream, 400)
    assert failure["type"] == "invalid_request" and failure["param"] == "inputs[0]"
    assert "Ray" not in stream.text and "Traceback" not in stream.text and "pid" not in stream.text


def test_a_request_over_the_deadline_is_a_json_504_and_the_app_keeps_answering(server):
    body = {"inputs": "the", "parameters": {"max_new_tokens": 100}}

    def ask(_: int) -> requests.Response:
        return requests.post(f"{server}/gen/predict", json=body, headers=auth(), timeout=120)

    with ThreadPoolExecutor(32) as pool:  # one at a time on the replica: the last ones wait for long
        responses = list(pool.map(ask, range(32)))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 504} and 504 in statuses, statuses
    late = next(r for r in responses if r.status_code == 504)
    assert _error(late, 504)["timeout_s"] == TIMEOUT_S
    quick = requests.post(f"{server}/gen/predict", json={"inputs": "the", "parameters": {"max_new_tokens": 2}},
                          headers=auth(), timeout=60)  # fmt: skip
    assert quick.status_code == 200, quick.text


def test_the_openai_client_without_the_key_gets_its_authentication_error(server):
    """Issue 12: the OpenAI routes answer 401 in the shape the `openai` client turns into
    AuthenticationError; with the key, the same call succeeds."""
    import openai

    def client(key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{server}/v1", api_key=key, max_retries=0, timeout=60)

    with pytest.raises(openai.AuthenticationError):
        client("not-" + CONFIG_KEY).models.list()
    assert "gen" in {m.id for m in client(ENV_KEY).models.list()}
