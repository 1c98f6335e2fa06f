"""The playground page: the static files in `serving/playground/` (HTML, JavaScript, CSS; no CDN, so it works
offline) and the content negotiation that shows it at `GET /` to a browser while every other client keeps
the JSON index there.

The files hold no data and are open to anyone (`rayformers.serving.access.is_open`): a browser fetches
them before it has a key. Everything the page shows comes from the API it calls with the key typed into
it (`/apps`, `/{app}/predict`, `/v1/completions`), under the same checks as any client's calls.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response

__all__ = ["PAGE_PATH", "PUBLIC_FILES", "install_page", "prefers_html"]

PAGE_PATH = "/playground.html"
"""Where the page itself is answered: `GET /` from a browser is routed here before any check sees it."""
_FILES = {
    PAGE_PATH: ("index.html", "text/html; charset=utf-8"),
    "/playground.js": ("playground.js", "text/javascript; charset=utf-8"),
    "/playground.css": ("playground.css", "text/css; charset=utf-8"),
}
PUBLIC_FILES: frozenset[str] = frozenset(_FILES)
"""The page's paths. A dot is never in an app name (`serve.apps[].name`), so no app's route prefix can
take one of them from the gateway."""

# The page runs only its own script and talks only to its own origin: a model's output that slipped into
# markup could run nothing.
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_HTML_TYPES = ("text/html", "application/xhtml+xml")


def prefers_html(accept: str) -> bool:
    """Whether an `Accept` header asks for HTML over JSON: HTML named outright (a wildcard is not a
    preference: `*/*` from curl or requests keeps JSON) with a higher quality than JSON gets."""
    html = json = 0.0
    named = False
    for part in accept.split(","):
        kind, *params = (p.strip() for p in part.split(";"))
        kind = kind.lower()
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        if kind in _HTML_TYPES:
            named = named or q > 0
            html = max(html, q)
        elif kind in ("application/json", "application/*", "*/*"):
            json = max(json, q)
    return named and html > json


class _Negotiation:
    """Routes `GET /` (and `HEAD /`) from a client that prefers HTML to the page, and marks every answer
    to `/` as depending on `Accept`, so no cache hands one kind of client the other's. It sits outside the
    guard, so the guard sees the page's path (open) and API clients' `/` (which needs a key) as they are."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") not in ("", "/"):
            await self.app(scope, receive, send)
            return
        if scope.get("method") in ("GET", "HEAD") and prefers_html(_header(scope, b"accept")):
            scope = {**scope, "path": PAGE_PATH, "raw_path": PAGE_PATH.encode()}

        async def varied(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"vary"]
                message = {**message, "headers": [*headers, (b"vary", b"Accept")]}
            await send(message)

        await self.app(scope, receive, varied)


def _header(scope: dict[str, Any], name: bytes) -> str:
    values = [v for k, v in scope.get("headers") or [] if k.lower() == name]
    return b",".join(values).decode("latin-1")


def _read(name: str) -> bytes:
    return (resources.files("rayformers.serving") / "playground" / name).read_bytes()


def install_page(app: FastAPI) -> None:
    """The page's files as routes of `app`, and `GET /` negotiated between the page and the app's own `/`.
    Call it after `rayformers.serving.responses.install`, so the negotiation runs before the guard."""
    for path, (name, media_type) in _FILES.items():
        # Read once, where the app is built (the driver that deploys, or Serve's controller for a config
        # file), from the installed package; the bytes travel with the app to the gateway's replicas.
        app.add_api_route(
            path, _file(_read(name), media_type), methods=["GET", "HEAD"], include_in_schema=False
        )
    app.add_middleware(_Negotiation)


def _file(body: bytes, media_type: str) -> Callable[[], Response]:
    def answer() -> Response:
        return Response(body, media_type=media_type, headers=_HEADERS)

    return answer
