"""The HTTP routes of one served app, on its model replicas: `POST /{app}/predict` and `GET /{app}/info`.

One hop: HAProxy (or, where a cluster runs it, Serve's proxy) hands each request to a model replica,
whose FastAPI app validates it, enforces the limits, answers it through the replica's batching and turns errors into HTTP statuses with JSON
bodies. The request schema is built from the task's own `Input` and `Parameters` (the very models its
handler validates with), so the OpenAPI docs at `/{app}/docs` show exactly what the task takes. The
gateway's OpenAI routes reach the same replicas through a deployment handle (`call_model`).
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations, and the request model
# is a local of `app_deployment`.
from typing import Annotated, Any, Union

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, create_model
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from rayformers.serving.args import AppArgs
from rayformers.serving.replica import ModelReplica, Reply
from rayformers.serving.responses import ApiError, check_input_count, install
from rayformers.tasks.base import Task

__all__ = ["ADAPTER_HEADER", "app_deployment", "call_model", "overloaded", "reply_error", "request_model"]

# The header Ray Serve routes multiplexed requests by; it names the LoRA adapter.
ADAPTER_HEADER = "serve_multiplexed_model_id"
RETRY_AFTER_S = 1


def request_model(task: Task, name: str) -> type[BaseModel]:
    """`{"inputs": one or a non-empty list, "parameters": {...}}`, typed by the task's schemas."""
    one = task.Input
    return create_model(
        f"{name}Request",
        __config__=ConfigDict(extra="forbid"),
        inputs=(
            Union[one, Annotated[list[one], Field(min_length=1)]],  # noqa: UP007 (a runtime type)
            Field(description="One input, or a list of inputs answered in order."),
        ),
        parameters=(
            task.Parameters,
            Field(default_factory=task.Parameters, description="Task parameters (all optional)."),
        ),
    )


def overloaded() -> ApiError:
    return ApiError(
        503,
        "overloaded",
        "the app's request queue is full; retry after the delay in Retry-After",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def reply_error(reply: Reply) -> ApiError:
    """The HTTP error a failed reply becomes."""
    error = reply.error
    assert error is not None
    if error.kind == "input":
        return ApiError(422, "invalid_request", error.message, field=error.field or "inputs")
    if error.kind == "too_large":
        return ApiError(413, "too_many_tokens", error.message, field=error.field or "inputs")
    if error.kind == "adapter":
        return ApiError(
            404, "unknown_adapter", error.message, field=ADAPTER_HEADER, extra={"known": error.known}
        )
    if error.kind == "overloaded":
        return overloaded()
    return ApiError(
        500, "model_error", f"{error.message}; the replica keeps serving (its log has the details)"
    )


async def call_model(
    model: DeploymentHandle, inputs: list[Any], parameters: dict[str, Any], adapter: str | None
) -> Reply:
    """One request through an app's model deployment (from another deployment); a full replica and
    Serve's own backpressure become a 503 with Retry-After."""
    try:
        reply: Reply = await model.options(multiplexed_model_id=adapter or "").predict.remote(
            inputs, parameters, adapter
        )
    except BackPressureError:
        raise overloaded() from None
    if reply.error is not None:
        raise reply_error(reply)
    return reply


def app_deployment(args: AppArgs, task: Task) -> Any:
    """The app's model deployment, serving its HTTP routes itself."""
    where = f" from {args.checkpoint}" if args.http.expose_paths else ""
    app = FastAPI(
        title=f"rayformers: {args.name}", description=f"{task.name} served by rayformers{where}", version="1"
    )
    install(app, args.http)
    body_model = request_model(task, "".join(p.title() for p in args.name.split("-")))
    max_inputs = args.max_inputs_per_request

    @serve.ingress(app)
    class Model(ModelReplica):
        @app.post("/predict", summary=f"Run {task.name} on one input or a list of inputs.")
        async def predict_route(self, body: body_model, request: Request) -> JSONResponse:  # type: ignore[valid-type]
            single = not isinstance(body.inputs, list)  # type: ignore[attr-defined]
            inputs = [body.inputs] if single else list(body.inputs)  # type: ignore[attr-defined]
            check_input_count(len(inputs), max_inputs, "inputs")
            adapter = request.headers.get(ADAPTER_HEADER) or None
            reply = await self.answer(inputs, body.parameters, adapter)  # type: ignore[attr-defined]
            if reply.error is not None:
                raise reply_error(reply)
            outputs = reply.outputs[0] if single else reply.outputs
            return JSONResponse(outputs, headers={"X-Batch-Size": str(reply.batch_size)})

        @app.get("/info", summary="Task, labels, base model and metrics of the served checkpoint.")
        async def info_route(self) -> dict[str, Any]:
            return self.info()

    return serve.deployment(Model, name="Model", **args.deployment_options())
