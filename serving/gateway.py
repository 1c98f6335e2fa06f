"""The gateway app at `/`: an index of the served apps (JSON for API clients, the playground page for a
browser: `rayformers.serving.page`), the same index with each app's task, labels and metrics at `/apps`,
OpenAI-compatible routes under `/v1`, and a JSON 404 for any path no app owns (Ray Serve's own answer there
is plain text).

OpenAI `model` names pick the app (`sentiment`) or one of its LoRA adapters (`sentiment/legal`); the
gateway calls the app's model deployment directly, through the same batching as `/{app}/predict`. A route
that only some tasks can answer asks the app's task for the capability it needs (`generate` for
completions and chat, `embed` for embeddings, `rerank` for `/v1/rerank`), never for a task by name.
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations.
import asyncio
import base64
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.serve.exceptions import BackPressureError

from rayformers.serving import openai as oai
from rayformers.serving.access import resolve_keys
from rayformers.serving.args import GatewayApp, GatewayArgs
from rayformers.serving.errors import InputError, OverloadedError, TooManyTokensError, UnknownAdapterError
from rayformers.serving.ingress import RETRY_AFTER_S, call_model, overloaded, reply_error
from rayformers.serving.page import install_page
from rayformers.serving.replica import ModelFailure
from rayformers.serving.responses import ApiError, check_input_count, install, request_id
from rayformers.tasks import get_task

__all__ = ["app_index", "described_index", "gateway_deployment", "stream_error"]

logger = logging.getLogger("ray.serve")

INFO_TIMEOUT_S = 10.0
"""How long `/apps` waits for one app's `info` before it lists that app as unavailable."""


def stream_error(err: Exception) -> dict[str, Any]:
    """The error event a failed stream ends with, in OpenAI's error shape: the client's own mistake and
    a full queue say what to do; anything else says only that it failed (Ray's error text, with its
    process ids, addresses and traceback, goes to the log)."""
    cause = getattr(err, "cause", err)  # Ray wraps what a replica raised
    if isinstance(cause, InputError):
        error = {"type": "invalid_request", "message": str(cause), "param": cause.field}
    elif isinstance(cause, TooManyTokensError):
        error = {"type": "too_many_tokens", "message": str(cause), "param": "prompt"}
    elif isinstance(cause, (BackPressureError, OverloadedError)):
        error = {"type": "overloaded", "message": "the app's queue is full", "retry_after": RETRY_AFTER_S}
    else:
        rid = request_id()
        if isinstance(cause, ModelFailure):
            logger.warning("stream %s: the model failed (its replica's log has the details)", rid)
        else:
            logger.error("stream %s failed", rid, exc_info=err)
        error = {"type": "model_error", "message": "the model failed on this request", "request_id": rid}
    return {"error": {"param": None, **error, "code": error["type"]}}


def stream_refusal(err: Exception) -> Exception:
    """What a stream that failed before its first item answers instead of a stream: the client's
    mistake, a full queue and an unknown adapter as their HTTP errors; anything else as it is (the
    JSON 500 with a request id)."""
    cause = getattr(err, "cause", err)  # Ray wraps what a replica raised
    if isinstance(cause, InputError):
        return ApiError(422, "invalid_request", str(cause), field=cause.field)
    if isinstance(cause, (BackPressureError, OverloadedError)):
        return overloaded()
    if isinstance(cause, TooManyTokensError):
        return ApiError(413, "too_many_tokens", str(cause), field="prompt")
    if isinstance(cause, UnknownAdapterError):
        return ApiError(404, "unknown_adapter", str(cause), field="model", extra={"known": cause.known})
    return err


def _model_ids(apps: list[GatewayApp]) -> list[str]:
    return [i for a in apps for i in [a.name, *(f"{a.name}/{x}" for x in a.adapters)]]


def app_index(apps: list[GatewayApp], base: str) -> dict[str, Any]:
    """`GET /` for API clients: each app's routes, and where the OpenAI routes are."""
    return {"apps": [_routes(a, base) for a in apps], "openai": f"{base}/v1"}


def described_index(apps: list[GatewayApp], base: str, infos: list[dict[str, Any] | None]) -> dict[str, Any]:
    """`GET /apps`: the index, each app with what its task can do, how the playground page asks for it,
    and its replica's `/info` (labels, base model, metrics from the manifest), or `available: false`
    where `infos` has None (no replica answered)."""
    return {
        "apps": [_described(a, base, info) for a, info in zip(apps, infos, strict=True)],
        "openai": f"{base}/v1",
    }


def _routes(app: GatewayApp, base: str) -> dict[str, Any]:
    return {
        "name": app.name,
        "task": app.task,
        "adapters": app.adapters,
        "predict": f"{base}/{app.name}/predict",
        "info": f"{base}/{app.name}/info",
        "docs": f"{base}/{app.name}/docs",
    }


_INFO_SHOWN = ("labels", "base_model", "method", "metrics", "max_length", "pooling")


def _described(app: GatewayApp, base: str, info: dict[str, Any] | None) -> dict[str, Any]:
    task = get_task(app.task)
    described = {
        **_routes(app, base),
        "summary": task.summary,
        "capabilities": sorted(task.capabilities),
        "playground": task.playground.as_json(),
        "max_inputs_per_request": app.max_inputs_per_request,
        "available": info is not None,
    }
    if info is not None:
        described.update({k: info.get(k) for k in _INFO_SHOWN})
    return described


def gateway_deployment(args: GatewayArgs) -> Any:
    app = FastAPI(
        title="rayformers",
        description="Served apps, and OpenAI-compatible routes that pick an app by `model`.",
        version="1",
    )
    install(app, args.http)
    install_page(app)
    apps = {a.name: a for a in args.apps}

    def capable(app: GatewayApp, capability: str) -> bool:
        return capability in get_task(app.task).capabilities

    def resolve(model: str, capability: str, route: str) -> tuple[GatewayApp, str | None]:
        name, _, adapter = model.partition("/")
        found = apps.get(name)
        if found is None or (adapter and adapter not in found.adapters):
            raise ApiError(
                404,
                "unknown_model",
                f"model: {model!r} is not served; known models: {', '.join(_model_ids(args.apps)) or 'none'}",
                field="model",
                extra={"known": _model_ids(args.apps)},
            )
        if not capable(found, capability):
            fitting = [a.name for a in args.apps if capable(a, capability)]
            raise ApiError(
                422,
                "invalid_request",
                f"model: {model!r} is a {found.task} app, which cannot {capability}; {route} needs an app "
                f"that can ({', '.join(fitting) or 'none is served'})",
                field="model",
            )
        return found, adapter or None

    @serve.ingress(app)
    class Gateway:
        def __init__(self) -> None:
            resolve_keys(args.http)  # no keys where the build had some: refuse to start

        def _handle(self, name: str) -> Any:
            return serve.get_deployment_handle("Model", app_name=name)

        async def _info(self, name: str) -> dict[str, Any] | None:
            """The app's `/info` (what its checkpoint's manifest says), or None when no replica answers in
            time: the index still lists the app, and the rest of the apps."""
            response = None
            try:
                response = self._handle(name).info.remote()
                return dict(await asyncio.wait_for(response, INFO_TIMEOUT_S))
            except Exception as err:  # a missing, failing or slow app: listed as unavailable
                if response is not None:
                    response.cancel()
                logger.warning("/apps: app %r did not answer info (%s)", name, type(err).__name__)
                return None

        @app.get("/", summary="The served apps and their routes (a browser gets the playground page).")
        async def index(self, request: Request) -> dict[str, Any]:
            return app_index(args.apps, str(request.base_url).rstrip("/"))

        @app.get(
            "/apps", summary="The served apps: routes, task, labels, metrics, and the playground's form."
        )
        async def apps_index(self, request: Request) -> dict[str, Any]:
            base = str(request.base_url).rstrip("/")
            infos = await asyncio.gather(*(self._info(a.name) for a in args.apps))
            return described_index(args.apps, base, list(infos))

        @app.get("/v1/models", summary="OpenAI: the models (apps and adapters) served.")
        async def models(self) -> dict[str, Any]:
            created = int(time.time())
            return {
                "object": "list",
                "data": [
                    {"id": i, "object": "model", "created": created, "owned_by": "rayformers"}
                    for i in _model_ids(args.apps)
                ],
            }

        @app.post("/v1/completions", summary="OpenAI: complete a prompt (text-generation apps).")
        async def completions(self, body: oai.CompletionRequest) -> Any:
            target, adapter = resolve(body.model, "generate", "/v1/completions")
            prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
            if not prompts:
                raise ApiError(
                    422, "invalid_request", "prompt: an empty list; send at least one prompt", field="prompt"
                )
            check_input_count(len(prompts), target.max_inputs_per_request, "prompt")
            params = oai.generation_parameters(body, body.max_tokens)
            handle = self._handle(target.name)
            if body.stream:
                if len(prompts) != 1:
                    raise ApiError(422, "invalid_request", "prompt: stream takes one prompt", field="prompt")
                prefix = prompts[0] if body.echo else ""
                return await self._stream(
                    "text_completion", body.model, handle, prompts[0], params, adapter, prefix,
                    include_usage=bool(body.stream_options and body.stream_options.include_usage),
                )  # fmt: skip
            texts, finish, used = await self._complete(handle, prompts, params, adapter)
            if body.echo:
                texts = [p + t for p, t in zip(prompts, texts, strict=True)]
            return oai.completion_response("text_completion", body.model, texts, finish, *used)

        @app.post("/v1/chat/completions", summary="OpenAI: answer a chat (text-generation apps).")
        async def chat(self, body: oai.ChatCompletionRequest) -> Any:
            target, adapter = resolve(body.model, "generate", "/v1/chat/completions")
            handle = self._handle(target.name)
            templated = await handle.chat_prompt.remote([m.for_template() for m in body.messages])
            if templated.error is not None:
                raise reply_error(templated)
            prompt = templated.outputs[0]
            params = oai.generation_parameters(body, body.max_completion_tokens or body.max_tokens, chat=True)
            if body.stream:
                return await self._stream(
                    "chat.completion", body.model, handle, prompt, params, adapter, "",
                    include_usage=bool(body.stream_options and body.stream_options.include_usage),
                )  # fmt: skip
            texts, finish, used = await self._complete(handle, [prompt], params, adapter)
            return oai.completion_response("chat.completion", body.model, texts, finish, *used)

        @app.post("/v1/embeddings", summary="OpenAI: embed texts (feature-extraction apps).")
        async def embeddings(self, body: oai.EmbeddingRequest) -> dict[str, Any]:
            target, adapter = resolve(body.model, "embed", "/v1/embeddings")
            texts = [body.input] if isinstance(body.input, str) else body.input
            if not texts:
                raise ApiError(
                    422, "invalid_request", "input: an empty list; send at least one text", field="input"
                )
            check_input_count(len(texts), target.max_inputs_per_request, "input")
            handle = self._handle(target.name)
            reply = await call_model(handle, texts, {}, adapter)
            tokens = sum(await handle.count_tokens.remote(texts))
            data = []
            for i, vector in enumerate(reply.outputs):
                value: Any = vector
                if body.encoding_format == "base64":
                    value = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
                data.append({"object": "embedding", "index": i, "embedding": value})
            return {
                "object": "list",
                "data": data,
                "model": body.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }

        @app.post("/v1/rerank", summary="Rerank documents by relevance to a query (rerank apps).")
        async def rerank(self, body: oai.RerankRequest) -> dict[str, Any]:
            target, adapter = resolve(body.model, "rerank", "/v1/rerank")
            texts = [d if isinstance(d, str) else d.text for d in body.documents]
            if not texts:
                raise ApiError(
                    422, "invalid_request", "documents: an empty list; send at least one", field="documents"
                )
            check_input_count(len(texts), target.max_inputs_per_request, "documents")
            reply = await call_model(
                self._handle(target.name), [{"query": body.query, "texts": texts}], {}, adapter
            )
            tokens = int((reply.usage or [{}])[0].get("prompt_tokens", 0))
            return oai.rerank_response(body, texts, reply.outputs[0], tokens)

        @app.api_route(
            "/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False
        )
        async def unknown(self, path: str) -> JSONResponse:
            raise ApiError(
                404,
                "not_found",
                f"no app serves '/{path}'; served apps: {', '.join(apps) or 'none'} (GET / lists their routes)",
                extra={"apps": list(apps)},
            )

        async def _complete(
            self, handle: Any, prompts: list[str], params: dict[str, Any], adapter: str | None
        ) -> tuple[list[str], list[str], tuple[int, int]]:
            reply = await call_model(handle, prompts, params, adapter)
            texts = [out[0]["generated_text"] for out in reply.outputs]
            usage = reply.usage or []
            finish = [u["finish_reason"] for u in usage]
            return (
                texts,
                finish,
                (sum(u["prompt_tokens"] for u in usage), sum(u["completion_tokens"] for u in usage)),
            )

        async def _stream(
            self, kind: Any, model: str, handle: Any, prompt: str, params: dict[str, Any], adapter: str | None,
            prefix: str, include_usage: bool = False,
        ) -> StreamingResponse:  # fmt: skip
            """The stream's response once the replica has answered its first item: until then a refusal
            (a bad request, a full queue, an unknown adapter) is still an HTTP status that clients act
            on (a 503 they retry), not a 200 whose body holds an error event."""
            rid, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())
            chunks = handle.options(stream=True, multiplexed_model_id=adapter or "").stream.remote(
                prompt, params, adapter
            )
            try:
                first: list[dict[str, Any]] = [await chunks.__anext__()]
            except StopAsyncIteration:
                first = []
            except Exception as err:
                raise stream_refusal(err) from None

            async def items() -> AsyncIterator[dict[str, Any]]:
                for item in first:
                    yield item
                async for item in chunks:
                    yield item

            async def events() -> AsyncIterator[str]:
                def event(payload: dict[str, Any]) -> str:
                    return f"data: {json.dumps(payload)}\n\n"

                finish, usage = "stop", None
                try:
                    yield event(oai.stream_chunk(kind, rid, created, model, prefix or None, role=True))
                    async for item in items():
                        if "delta" in item:
                            yield event(oai.stream_chunk(kind, rid, created, model, item["delta"]))
                        elif item.get("usage"):
                            usage = item["usage"]
                            finish = usage["finish_reason"]
                    yield event(oai.stream_chunk(kind, rid, created, model, None, finish))
                    if include_usage and usage is not None:
                        yield event(oai.usage_chunk(kind, rid, created, model, usage))
                except Exception as err:  # the stream has begun: the error goes in the stream
                    yield event(stream_error(err))
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")

    return serve.deployment(
        Gateway, name="Gateway", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000
    )
