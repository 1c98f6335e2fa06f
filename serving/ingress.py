"""The HTTP front of one served app: `POST /{app}/predict` and `GET /{app}/info` with typed schemas.

The ingress is a light deployment (no CPU reserved) that validates requests, enforces the limits and
turns the model replica's answers and Ray Serve's backpressure into HTTP statuses with JSON bodies.
The request schema is built from the task's own `Input` and `Parameters` (the very models its handler
validates with; importing a task module imports neither torch nor transformers), so the OpenAPI docs
at `/{app}/docs` show exactly what the task takes.
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations, and the request model
# is a local of `ingress_deployment`.
from typing import Annotated, Any, Union

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, create_model
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from rayformers.serving.args import AppArgs
from rayformers.serving.replica import Reply
from rayformers.serving.responses import ApiError, install
from rayformers.tasks.base import Task

__all__ = ["ADAPTER_HEADER", "call_model", "ingress_deployment", "request_model"]

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


def _reply_error(reply: Reply) -> ApiError:
    error = reply.error
    assert error is not None
    if error.kind == "input":
        return ApiError(422, "invalid_request", error.message, field=error.field or "inputs")
    if error.kind == "adapter":
        return ApiError(
            404, "unknown_adapter", error.message, field=ADAPTER_HEADER, extra={"known": error.known}
        )
    return ApiError(500, "model_error", f"the model failed on this request: {error.message}")


async def call_model(
    model: DeploymentHandle, inputs: list[Any], parameters: dict[str, Any], adapter: str | None
) -> Reply:
    """One request through the model deployment; Serve's backpressure becomes a 503 with Retry-After."""
    try:
        reply: Reply = await model.options(multiplexed_model_id=adapter or "").predict.remote(
            inputs, parameters, adapter
        )
    except BackPressureError:
        raise ApiError(
            503,
            "overloaded",
            "the app's request queue is full; retry after the delay in Retry-After",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        ) from None
    if reply.error is not None:
        raise _reply_error(reply)
    return reply


def ingress_deployment(args: AppArgs, task: Task) -> Any:
    """The app's FastAPI ingress deployment, for its `task`."""
    app = FastAPI(
        title=f"rayformers: {args.name}",
        description=f"{task.name} served by rayformers from {args.checkpoint}",
        version="1",
    )
    install(app, args.max_body_bytes)
    body_model = request_model(task, "".join(p.title() for p in args.name.split("-")))
    max_inputs = args.max_inputs_per_request

    @serve.ingress(app)
    class Ingress:
        def __init__(self, model: DeploymentHandle) -> None:
            self.model = model

        @app.post("/predict", summary=f"Run {task.name} on one input or a list of inputs.")
        async def predict(self, body: body_model, request: Request) -> JSONResponse:  # type: ignore[valid-type]
            single = not isinstance(body.inputs, list)  # type: ignore[attr-defined]
            inputs = [body.inputs] if single else list(body.inputs)  # type: ignore[attr-defined]
            if len(inputs) > max_inputs:
                raise ApiError(
                    413,
                    "too_many_inputs",
                    f"inputs: {len(inputs)} inputs, over the limit of {max_inputs} per request; split the "
                    "request (serve.apps[].max_inputs_per_request sets the limit)",
                    field="inputs",
                    extra={"limit": max_inputs},
                )
            adapter = request.headers.get(ADAPTER_HEADER) or None
            reply = await call_model(
                self.model,
                [x.model_dump(mode="json") if isinstance(x, BaseModel) else x for x in inputs],
                body.parameters.model_dump(mode="json"),  # type: ignore[attr-defined]
                adapter,
            )
            outputs = reply.outputs[0] if single else reply.outputs
            return JSONResponse(outputs, headers={"X-Batch-Size": str(reply.batch_size)})

        @app.get("/info", summary="Task, labels, base model and metrics of the served checkpoint.")
        async def info(self) -> dict[str, Any]:
            return await self.model.info.remote()  # type: ignore[no-any-return]

    return serve.deployment(
        Ingress,
        name="Ingress",
        ray_actor_options={"num_cpus": 0},
        # The ingress only awaits the model: it takes many requests at once and leaves the queueing
        # (and backpressure) to the model deployment.
        max_ongoing_requests=1000,
        autoscaling_config={
            "min_replicas": 1,
            "max_replicas": max(1, args.autoscaling.max_replicas),
            "target_ongoing_requests": 100,
        },
    )
