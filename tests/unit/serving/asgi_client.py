"""A minimal ASGI client for unit tests of the HTTP layer without Ray, a server or httpx: it sends one
request as body chunks and records what the app read and answered."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    chunks_read_before_answer: int
    """Body chunks the app had read when it sent its first response message."""
    chunks: int

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


@dataclass
class _Request:
    chunks: list[bytes]
    read: int = 0
    read_at_start: int | None = None
    sent: list[dict[str, Any]] = field(default_factory=list)


def call(
    app: Any,
    path: str,
    *,
    method: str = "POST",
    body: bytes | list[bytes] = b"",
    headers: dict[str, str] | None = None,
    root_path: str = "",
) -> Answer:
    """One request to `app` at `root_path + path` (Serve hands an app its route prefix as `root_path`)."""
    chunks = body if isinstance(body, list) else [body]
    request = _Request(chunks)
    sent_headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    if isinstance(body, bytes):
        sent_headers.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": root_path + path,
        "raw_path": (root_path + path).encode(),
        "root_path": root_path,
        "query_string": b"",
        "headers": sent_headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }

    async def receive() -> dict[str, Any]:
        if request.read < len(chunks):
            request.read += 1
            return {
                "type": "http.request",
                "body": chunks[request.read - 1],
                "more_body": request.read < len(chunks),
            }
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if request.read_at_start is None:
            request.read_at_start = request.read
        request.sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in request.sent if m["type"] == "http.response.start")
    return Answer(
        status=start["status"],
        headers={k.decode().lower(): v.decode() for k, v in start.get("headers", [])},
        body=b"".join(m.get("body", b"") for m in request.sent if m["type"] == "http.response.body"),
        chunks_read_before_answer=request.read_at_start or 0,
        chunks=len(chunks),
    )
