"""The playground page without Ray: `GET /` negotiated between the page (a browser) and the JSON index
(every other client), the page's files open with their content types while every data route needs the key,
`/apps` built from each task's playground form, and the files shipped as package data."""

from __future__ import annotations

import re
from fnmatch import fnmatch
from pathlib import Path

import pytest
import tomllib
from fastapi import FastAPI

from rayformers.serving.access import is_open
from rayformers.serving.args import GatewayApp, HttpArgs
from rayformers.serving.gateway import app_index, described_index
from rayformers.serving.page import PAGE_PATH, PUBLIC_FILES, install_page, prefers_html
from rayformers.serving.responses import install
from rayformers.tasks import TASK_NAMES, get_task
from rayformers.tasks.base import Playground
from tests.unit.serving.asgi_client import call

REPO = Path(__file__).resolve().parents[3]
KEY = "k" * 12 + "-playground-key"
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
APPS = [
    GatewayApp(name="sentiment", task="text-classification"),
    GatewayApp(name="gen", task="text-generation"),
]


def gateway_like(http: HttpArgs) -> FastAPI:
    """The gateway's HTTP stack as `gateway_deployment` builds it (the guard, then the page), with `/` and
    `/apps` answering the index without Serve behind them."""
    app = FastAPI()
    install(app, http)
    install_page(app)

    @app.get("/")
    async def index() -> dict:
        return app_index(APPS, "http://testserver")

    @app.get("/apps")
    async def apps() -> dict:
        return described_index(APPS, "http://testserver", [None, None])

    @app.post("/v1/completions")
    async def completions() -> dict:
        return {"ok": True}

    return app


def bearer(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (BROWSER, True),
        ("text/html", True),
        ("application/xhtml+xml", True),
        ("*/*", False),  # curl, requests, httpx
        ("", False),
        ("application/json", False),
        ("application/json, text/html;q=0.5", False),
        ("text/html;q=0.9, application/json", False),
        ("text/html;q=0", False),
        ("TEXT/HTML; q=1.0, */*; q=0.1", True),
        ("text/html;q=nonsense, */*", False),
    ],
)
def test_html_is_chosen_only_when_named_over_json(accept, html):
    assert prefers_html(accept) is html


def test_a_browser_gets_the_page_at_root_and_api_clients_keep_the_json_index():
    app = gateway_like(HttpArgs())
    page = call(app, "/", method="GET", headers={"Accept": BROWSER})
    assert page.status == 200 and page.content_type.startswith("text/html")
    assert b'<script src="playground.js"' in page.body and page.headers["vary"] == "Accept"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for accept in ("*/*", "application/json", None):
        answer = call(app, "/", method="GET", headers={"Accept": accept} if accept else {})
        assert answer.status == 200 and answer.content_type.startswith("application/json"), accept
        assert answer.headers["vary"] == "Accept"
        assert [a["name"] for a in answer.json()["apps"]] == ["sentiment", "gen"]
        assert answer.json() == app_index(APPS, "http://testserver")  # the index as it was before the page
    # Only `/` is negotiated: a browser asking for a data route still gets JSON.
    assert call(app, "/apps", method="GET", headers={"Accept": BROWSER}).content_type.startswith(
        "application/json"
    )


@pytest.mark.parametrize(
    ("path", "media_type", "marker"),
    [
        (PAGE_PATH, "text/html", b"<main"),
        ("/playground.js", "text/javascript", b"use strict"),
        ("/playground.css", "text/css", b"--accent"),
    ],
)
def test_the_page_files_are_open_with_their_content_types_when_keys_are_set(path, media_type, marker):
    app = gateway_like(HttpArgs(api_keys=[KEY], require_api_keys=True))
    answer = call(app, path, method="GET")
    assert answer.status == 200 and answer.content_type.startswith(media_type), answer.body[:200]
    assert marker in answer.body and answer.headers["x-content-type-options"] == "nosniff"


def test_with_keys_every_data_route_needs_one_and_the_page_does_not():
    app = gateway_like(HttpArgs(api_keys=[KEY], require_api_keys=True))
    assert call(app, "/", method="GET", headers={"Accept": BROWSER}).status == 200
    for path, method, accept in (
        ("/", "GET", "*/*"),
        ("/", "GET", "application/json"),
        ("/apps", "GET", BROWSER),
        ("/sentiment/info", "GET", "*/*"),
        ("/v1/completions", "POST", "*/*"),
        ("/playground.js/../apps", "GET", "*/*"),
    ):
        refused = call(app, path, method=method, headers={"Accept": accept})
        assert refused.status == 401 and refused.content_type.startswith("application/json"), path
        assert refused.json()["error"]["type"] == "invalid_api_key"
        assert refused.headers["www-authenticate"] == "Bearer"
    assert call(app, "/apps", method="GET", headers=bearer()).status == 200
    assert call(app, "/", method="GET", headers=bearer()).json()["apps"][0]["name"] == "sentiment"
    assert call(app, "/v1/completions", body=b"{}", headers=bearer()).status == 200


def test_only_the_page_files_are_opened_by_it():
    assert all(is_open(path, []) for path in PUBLIC_FILES)
    for path in ("/", "/apps", "/v1/models", "/playground", "/playground.json", "/sentiment/playground.js"):
        assert not is_open(path, []), path
    # No app can take a page file from the gateway: an app's route prefix is its name, which has no dot.
    assert all("." in path.strip("/") and path.count("/") == 1 for path in PUBLIC_FILES)


def test_apps_lists_each_apps_task_form_and_manifest_facts():
    info = {
        "task": "text-classification",
        "labels": ["negative", "positive"],
        "base_model": "bert-tiny",
        "method": "lora",
        "metrics": {"accuracy": 0.91},
        "max_length": 128,
        "pooling": None,
        "device": "cpu",
    }
    index = described_index(APPS, "http://h", [info, None])
    sentiment, gen = index["apps"]
    assert sentiment["labels"] == ["negative", "positive"] and sentiment["metrics"] == {"accuracy": 0.91}
    assert sentiment["base_model"] == "bert-tiny" and sentiment["available"] is True
    assert sentiment["playground"] == {"form": "text-pair", "result": "labels", "parameters": {"top_k": None}}
    assert sentiment["predict"] == "http://h/sentiment/predict" and "device" not in sentiment
    assert gen["available"] is False and "labels" not in gen
    assert gen["capabilities"] == ["generate"] and gen["playground"]["form"] == "prompt"
    assert index["openai"] == "http://h/v1"


FORMS = {"text", "text-pair", "question-context", "text-labels", "query-documents", "prompt", "two-texts"}
VIEWS = {"labels", "fills", "entities", "answer", "text", "ranking", "embedding", "json"}


def test_every_task_has_a_form_and_a_view_the_page_knows():
    script = (REPO / "serving" / "playground" / "playground.js").read_text(encoding="utf-8")
    forms_in_script = set(re.findall(r'^    "?([a-z-]+)"?: \(\) => \[', script, re.M))
    views_in_script = set(
        re.search(r"const VIEWS = \{([^}]*)\}", script).group(1).replace(" ", "").split(",")
    )
    assert forms_in_script == FORMS and views_in_script == VIEWS
    for name in TASK_NAMES:
        playground = get_task(name).playground
        assert isinstance(playground, Playground)
        assert playground.form in FORMS and playground.result in VIEWS, name
    # A task's own parameters must be ones its request model takes.
    for name in TASK_NAMES:
        task = get_task(name)
        task.Parameters.model_validate(task.playground.parameters)


def test_the_page_never_writes_markup_from_strings():
    script = (REPO / "serving" / "playground" / "playground.js").read_text(encoding="utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink
    page = (REPO / "serving" / "playground" / "index.html").read_text(encoding="utf-8")
    assert not re.search(r"<script>|\son[a-z]+=|https?://", page)  # no inline script or handler, no CDN


def test_the_page_files_are_package_data():
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "rayformers.serving.playground" in config["tool"]["setuptools"]["packages"]
    patterns = config["tool"]["setuptools"]["package-data"]["rayformers.serving.playground"]
    files = sorted(p.name for p in (REPO / "serving" / "playground").iterdir())
    assert files == ["index.html", "playground.css", "playground.js"]
    for name in files:
        assert any(fnmatch(name, pattern) for pattern in patterns), name
