"""The HTTP layer's one place for errors and limits: every error is a JSON body with a type, a message
that says what to fix, the field at fault where there is one, and the request id; bodies over the limit
are refused before they are parsed. Later middleware (API keys, metrics) goes in `install`."""

from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = ["ApiError", "error_response", "install", "request_id"]


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
) -> JSONResponse:
    rid = request_id()
    error: dict[str, Any] = {"type": type_, "message": message, "request_id": rid}
    if field is not None:
        error["field"] = field
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


class _BodyLimit:
    """Refuse bodies over `limit` bytes with 413, by Content-Length or while reading a chunked body."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                await self._refuse(scope, receive, send)
                return
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        response = error_response(
            413,
            "payload_too_large",
            f"the request body is over the limit of {self.limit} bytes; send fewer or shorter inputs "
            "(serve.max_body_bytes sets the limit)",
            extra={"limit": self.limit},
        )
        await response(scope, receive, send)


def install(app: FastAPI, max_body_bytes: int) -> None:
    """JSON errors for validation, HTTP and API errors, and the body limit."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, fields = _describe(list(exc.errors()))
        return error_response(
            422, "invalid_request", message, field=fields[0]["field"], extra={"fields": fields}
        )

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(
            exc.status, exc.type, exc.message, field=exc.field, headers=exc.headers, extra=exc.extra
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, kind, str(exc.detail))

    app.add_middleware(_BodyLimit, limit=max_body_bytes)
