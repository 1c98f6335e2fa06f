"""The playground page on the shared deployment, over real Serve HTTP: `GET /` gives a browser the page and
every other client the JSON index, `/apps` lists each app with its task's form and its manifest's labels,
and the page, driven in headless Chromium (Debian's `chromium` and `chromium-driver`, through Selenium,
which is pointed at them and never downloads a browser), classifies a text, highlights entities and
streams a generation. Screenshots go to the test's own tmp_path; their paths are printed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

pytestmark = pytest.mark.usefixtures("ray_cluster")

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
WAIT_S = 60


def test_root_is_the_page_for_a_browser_and_the_json_index_for_api_clients(server):
    page = requests.get(f"{server}/", headers={"Accept": BROWSER_ACCEPT}, timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), page.text[:300]
    assert page.headers["vary"] == "Accept" and '<script src="playground.js"' in page.text
    index = requests.get(f"{server}/", timeout=30)
    assert index.status_code == 200 and index.headers["content-type"].startswith("application/json")
    apps = {a["name"]: a for a in index.json()["apps"]}
    assert (
        apps["sentiment"]["predict"] == f"{server}/sentiment/predict"
        and index.json()["openai"] == f"{server}/v1"
    )
    for path, kind in (("/playground.js", "text/javascript"), ("/playground.css", "text/css")):
        asset = requests.get(f"{server}{path}", timeout=30)
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind), path


def test_apps_lists_each_apps_form_and_what_its_manifest_says(server):
    listed = requests.get(f"{server}/apps", timeout=60)
    assert listed.status_code == 200, listed.text
    apps = {a["name"]: a for a in listed.json()["apps"]}
    sentiment, gen, ner = apps["sentiment"], apps["gen"], apps["ner"]
    info = requests.get(f"{server}/sentiment/info", timeout=30).json()
    assert sentiment["available"] and sentiment["labels"] == info["labels"] and sentiment["labels"]
    assert sentiment["metrics"] == info["metrics"] and sentiment["task"] == "text-classification"
    assert sentiment["playground"]["form"] == "text-pair" and ner["playground"]["result"] == "entities"
    assert gen["capabilities"] == ["generate"] and gen["playground"]["form"] == "prompt"
    assert apps["lora"]["adapters"] == ["one", "two"]


# --- in the browser --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        pytest.skip(
            f"the playground's browser test needs Debian's Chromium and its driver ({', '.join(missing)} not "
            "found): apt-get install chromium chromium-driver"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager, should anything call it, must not download
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium skips Selenium Manager, so nothing is looked up or downloaded.
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser, server, tmp_path) -> Iterator[Any]:
    """The page, freshly opened, and where its screenshots go."""
    browser.get(f"{server}/")
    wait(browser, lambda d: d.find_elements("css selector", ".app-button"), "the app list")
    browser.shots = tmp_path / "screenshots"  # type: ignore[attr-defined]
    browser.shots.mkdir()
    yield browser
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors  # no script error, no refused request, no CSP violation


def wait(driver: Any, condition: Any, what: str, timeout: float = WAIT_S) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(
        condition, f"timed out waiting for {what}"
    )


def open_app(driver: Any, name: str, **fields: str) -> None:
    driver.find_element("css selector", f'.app-button[data-app="{name}"]').click()
    wait(driver, lambda d: d.find_element("id", "app-title").text == name, f"the {name} form")
    for field, value in fields.items():
        control = driver.find_element("id", f"field-{field}")
        control.clear()
        control.send_keys(value)


def run(driver: Any) -> None:
    driver.find_element("id", "run").click()


def finished(driver: Any) -> bool:
    return driver.find_element("id", "run").is_enabled() and driver.find_element(
        "id", "run-state"
    ).text not in ("", "Running…")


def screenshot(driver: Any, name: str) -> Path:
    path: Path = driver.shots / f"{name}.png"
    driver.execute_script("window.scrollTo(0, 0)")
    assert driver.save_screenshot(str(path)) and path.stat().st_size > 0
    print(f"screenshot: {path}")
    return path


def test_the_page_classifies_a_text_and_shows_each_label_with_a_score_bar(page, server):
    labels = requests.get(f"{server}/sentiment/info", timeout=30).json()["labels"]
    open_app(page, "sentiment", text="a great film, I loved it")
    facts = page.find_element("id", "app-facts").text  # what the manifest says, from /apps
    assert "text-classification" in facts and all(label in facts for label in labels), facts
    run(page)
    wait(page, finished, "the classification")
    rows = page.find_elements("css selector", "#result-body .scores li")
    shown = [r.find_element("css selector", ".label").text for r in rows]
    assert sorted(shown) == sorted(labels), shown  # every label (top_k: null), best first
    bars = [float(r.find_element("tag name", "meter").get_attribute("value")) for r in rows]
    assert bars == sorted(bars, reverse=True) and abs(sum(bars) - 1) < 1e-3, bars
    answer = requests.post(
        f"{server}/sentiment/predict", json={"inputs": "a great film, I loved it"}, timeout=30
    )
    assert shown[0] == answer.json()["label"]  # the page shows what the API answers
    screenshot(page, "classification")


def test_the_page_highlights_the_entities_in_the_text(page, server):
    text = "Alice Novak flew to Toronto ."
    expected = requests.post(f"{server}/ner/predict", json={"inputs": text}, timeout=30).json()
    assert expected, "the tiny NER model found no entity to highlight"
    open_app(page, "ner", text=text)
    run(page)
    wait(page, finished, "the entities")
    marks = page.find_elements("css selector", "#result-body .marked mark")
    assert len(marks) == len(expected)
    for mark, entity in zip(marks, expected, strict=True):
        assert mark.find_element("css selector", ".tag").text == entity["entity_group"]
        assert mark.text.startswith(text[entity["start"] : entity["end"]])
    screenshot(page, "entities")


def test_the_page_streams_a_generation_as_it_comes(page):
    prompt = "the film was"
    open_app(page, "gen", text=prompt, max_new_tokens="48")
    run(page)
    generated = wait(
        page,
        lambda d: next(iter(d.find_elements("css selector", "#result-body .generated")), None),
        "the stream to start",
    )
    wait(page, lambda d: generated.get_attribute("data-streaming") == "false", "the stream to end")
    # One text node per server-sent event: the text arrived in pieces, as the tokens were made.
    pieces = page.execute_script("return arguments[0].childNodes.length", generated)
    assert pieces > 1 and generated.text, (pieces, generated.text)
    assert page.find_element("css selector", "#result-body .prompt").text == prompt
    status = page.find_element("css selector", "#result-body p.muted").text
    assert status.startswith("Done (") and "tokens" in status, status
    screenshot(page, "generation")


def test_an_api_error_is_shown_with_its_type_message_and_field(page):
    open_app(page, "fill-mask", text="a text without the mask token")
    run(page)
    wait(page, finished, "the error")
    error = page.find_element("css selector", "#result-body .error").text
    assert "422 invalid_request" in error and "inputs[0]" in error and "mask" in error, error
    # The refused request is the one SEVERE console line this test expects.
    logs = page.get_log("browser")
    assert all("422" in e["message"] for e in logs if e["level"] == "SEVERE"), logs
    screenshot(page, "error")
