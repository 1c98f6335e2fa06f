"""The HTTP layer's one place for errors and limits: every error is a JSON body with a type, a message
that says what to fix, the field at fault where there is one, and the request id (on the OpenAI routes
also OpenAI's `param` and `code`). Before a route sees a request, `install`'s guard checks its API key,
refuses a body over the limit, holds the route to the request deadline, and answers any failure the
routes left unanswered as a JSON 500 without internal detail. It also counts every request, with its
route template, status and latency (`rayformers.serving.metrics`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from asyncio import FIRST_COMPLETED
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rayformers.serving.access import full_path, is_open, resolve_keys
from rayformers.serving.args import HttpArgs
from rayformers.serving.metrics import CLIENT_GONE, ServingMetrics, app_label, route_label

__all__ = ["OPENAI_PREFIX", "ApiError", "check_input_count", "error_response", "install", "request_id"]

logger = logging.getLogger("ray.serve")
OPENAI_PREFIX = "/v1"


class ApiError(Exception):
    """An error answered as JSON with `status`."""

    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.type, self.message, self.field = status, type_, message, field
        self.headers, self.extra = headers or {}, extra or {}


def check_input_count(count: int, limit: int, field: str) -> None:
    """A 413 naming `field` when a request carries more than `limit` inputs (every route, OpenAI's too:
    a 1 MB body of short strings is some 250k inputs)."""
    if count > limit:
        raise ApiError(
            413,
            "too_many_inputs",
            f"{field}: {count} inputs, over the limit of {limit} per request; split the request "
            "(serve.apps[].max_inputs_per_request sets the limit)",
            field=field,
            extra={"limit": limit},
        )


def request_id() -> str:
    """Serve's id for the current request (the proxy also returns it as `X-Request-Id`)."""
    try:
        from ray.serve.context import _get_serve_request_context

        found = _get_serve_request_context().request_id
    except Exception:
        found = ""
    return found or uuid.uuid4().hex


def error_response(
    status: int,
    type_: str,
    message: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
    openai: bool = False,
) -> JSONResponse:
    """`{"error": {"type", "message", "field", "request_id", ...}}`; on the OpenAI routes also the
    `param` and `code` OpenAI clients read (`code` is the type), and an invalid request is a 400, as
    OpenAI answers one (the `openai` client raises `BadRequestError` only for a 400; a 422 is its
    `UnprocessableEntityError`)."""
    if openai and status == 422:
        status = 400
    rid = request_id()
    error: dict[str, Any] = {"type": type_, "message": message, "request_id": rid}
    if field is not None:
        error["field"] = field
    if openai:
        error.update(param=field, code=type_)
    error.update(extra or {})
    return JSONResponse(
        {"error": error}, status_code=status, headers={"X-Request-Id": rid, **(headers or {})}
    )


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    # Union members appear in pydantic's location (e.g. `inputs.list[str].0`): drop the type names.
    parts = [p for p in parts if not any(c in p for c in "[]()") and p not in ("str", "int")]
    return ".".join(parts) or "body"


def _describe(errors: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    fields = []
    for e in errors:
        where = _location(tuple(e.get("loc", ())))
        item: dict[str, Any] = {"field": where, "message": e.get("msg", "")}
        if e.get("type") == "json_invalid":
            item = {
                "field": "body",
                "message": f"malformed JSON: {e.get('ctx', {}).get('error', e.get('msg'))}",
            }
        elif e.get("type") == "extra_forbidden":
            item["message"] = (
                f"unknown field {where!r}; remove it (see the OpenAPI docs at /docs for the fields)"
            )
        elif "input" in e and e.get("type") != "missing":
            item["value"] = _short(e["input"])
        fields.append(item)
    first = fields[0]
    message = f"{first['field']}: {first['message']}"
    if "value" in first:
        message += f" (got {first['value']})"
    return message, fields


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


class _Guard:
    """What every request passes before a route sees it, in this order: its API key (401), its body size
    (413), then the route under the request deadline (504), with any failure the routes did not answer
    turned into a JSON 500 without internal detail. A refused body is read to its end first, so the
    client reads the answer instead of a reset connection. Every request, however it was answered, is
    counted once with its route template, status and latency."""

    def __init__(self, app: Any, http: HttpArgs, router: Any = None) -> None:
        # Built in the replica's own process (Starlette builds its middleware on first use), so the keys
        # are that process's: the config's and its RAYFORMERS_API_KEYS; and so is the app's name.
        self.app, self.http, self.keys = app, http, resolve_keys(http)
        self.router = router
        """The app's router: its routes name the requests the guard answers before routing."""
        self.metrics = ServingMetrics(app_label("local"))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = CLIENT_GONE

        async def sending(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._guard(scope, receive, sending)
        finally:
            # Once per request, whatever answered it (a route, an error handler, the guard itself).
            routes = self.router.routes if self.router is not None else ()
            self.metrics.request(route_label(scope, routes), status, time.perf_counter() - began)

    async def _guard(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = full_path(scope)
        openai = _is_openai(path)
        headers = dict(scope.get("headers") or [])
        if (
            self.keys
            and not is_open(path, self.http.open_routes)
            and not self.keys.allows(headers.get(b"authorization"))
        ):
            # A stranger's body is read only so far, and no longer than a request may take.
            whole = await _drain(
                receive, _DRAIN_FACTOR * self.http.max_body_bytes, self.http.request_timeout_s
            )
            given = b"authorization" in headers
            await error_response(
                401,
                "invalid_api_key",
                "the API key is not valid; send one of the server's keys as `Authorization: Bearer <key>`"
                if given
                else "this server needs an API key: send it as `Authorization: Bearer <key>`",
                headers={"WWW-Authenticate": "Bearer", **({} if whole else _CLOSE)},
                openai=openai,
            )(scope, receive, send)
            return
        limit = self.http.max_body_bytes
        declared = headers.get(b"content-length")
        chunks: list[bytes] = []
        size, more = 0, True
        if declared is not None and declared.isdigit() and int(declared) > limit:
            size = int(declared)
        deadline = asyncio.get_running_loop().time() + self.http.request_timeout_s
        try:
            async with asyncio.timeout_at(deadline):  # a body trickled slowly holds no slot past the deadline
                while more and size <= limit:
                    message = await receive()
                    if message["type"] != "http.request":
                        break
                    chunks.append(message.get("body", b""))
                    size += len(chunks[-1])
                    more = message.get("more_body", False)
        except TimeoutError:
            await error_response(
                408,
                "request_timeout",
                f"the request body did not arrive within {self.http.request_timeout_s:g} s "
                "(serve.request_timeout_s)",
                headers=_CLOSE,
                openai=openai,
            )(scope, receive, send)
            return
        if size > limit:
            whole = not more or await _drain(
                receive, _DRAIN_FACTOR * limit, max(deadline - asyncio.get_running_loop().time(), 0.0)
            )
            await error_response(
                413,
                "payload_too_large",
                f"the request body is over the limit of {limit} bytes; send fewer or shorter inputs "
                "(serve.max_body_bytes sets the limit)",
                extra={"limit": limit},
                headers=None if whole else _CLOSE,
                openai=openai,
            )(scope, receive, send)
            return
        await self._answer(scope, _replay(b"".join(chunks), receive), send, openai)

    async def _answer(self, scope: dict[str, Any], receive: Any, send: Any, openai: bool) -> None:
        started = asyncio.Event()

        async def tracked(message: dict[str, Any]) -> None:
            started.set()
            await send(message)

        route = asyncio.ensure_future(self.app(scope, receive, tracked))
        began = asyncio.ensure_future(started.wait())
        try:
            await asyncio.wait(
                {route, began}, timeout=self.http.request_timeout_s, return_when=FIRST_COMPLETED
            )
            if not route.done() and not started.is_set():  # the deadline passed before any answer
                route.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await route
                if not started.is_set():
                    await error_response(
                        504,
                        "timeout",
                        f"no answer within {self.http.request_timeout_s:g} s (serve.request_timeout_s); "
                        "retry later, or send fewer or shorter inputs",
                        extra={"timeout_s": self.http.request_timeout_s},
                        openai=openai,
                    )(scope, receive, send)
                return
            await route  # answered, or streaming: a stream's events may go on past the deadline
        except Exception:
            logger.exception("request %s failed in %s", request_id(), full_path(scope))
            if started.is_set():  # the answer has begun: it can only be cut short
                raise
            await error_response(
                500,
                "internal_error",
                "the server failed on this request; report its request_id to the server's operator",
                openai=openai,
            )(scope, receive, send)
        finally:
            began.cancel()
            if not route.done():
                route.cancel()


def _is_openai(path: str) -> bool:
    return path == OPENAI_PREFIX or path.startswith(OPENAI_PREFIX + "/")


_DRAIN_FACTOR = 16
"""A refused body is read up to this many times `max_body_bytes`, so that its client reads the JSON answer;
past that (or past the deadline) the answer closes the connection instead."""
_CLOSE = {"Connection": "close"}


async def _drain(receive: Any, budget: int, timeout_s: float) -> bool:
    """Read and drop what is left of a request body, at most `budget` bytes within `timeout_s`: True when
    the body ended, False when reading stopped first (the answer then closes the connection)."""

    async def read() -> bool:
        left = budget
        while True:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                return True
            left -= len(message.get("body", b""))
            if left < 0:
                return False

    try:
        return await asyncio.wait_for(read(), timeout_s)
    except TimeoutError:
        return False


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def install(app: FastAPI, http: HttpArgs) -> None:
    """JSON errors for validation, HTTP and API errors; API keys, the body limit, the deadline, a JSON
    500 for anything else, and the request metrics (`_Guard`)."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, fields = _describe(list(exc.errors()))
        return error_response(
            422,
            "invalid_request",
            message,
            field=fields[0]["field"],
            extra={"fields": fields},
            openai=_is_openai(full_path(request.scope)),
        )

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(
            exc.status,
            exc.type,
            exc.message,
            field=exc.field,
            headers=exc.headers,
            extra=exc.extra,
            openai=_is_openai(full_path(request.scope)),
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(
            exc.status_code, kind, str(exc.detail), openai=_is_openai(full_path(request.scope))
        )

    app.add_middleware(_Guard, http=http, router=app.router)
