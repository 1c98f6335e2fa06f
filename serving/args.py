"""Typed arguments of the Serve application builders: what `rayformers serve build` writes into a Ray
Serve config file (and a RayService's `serveConfigV2`), validated by Serve against these models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rayformers.config import ServeAppConfig
from rayformers.tasks import TaskName

__all__ = ["DEPLOYMENT_FIELDS", "AppArgs", "GatewayApp", "GatewayArgs", "HttpArgs"]

# Requests a replica takes from Serve beyond what it admits itself, so that it, not Serve's proxy (whose
# 503 is plain text), answers the overflow with a JSON 503 and Retry-After.
_SLACK = 64
_UNBOUNDED = 100_000
# The app fields that only Ray Serve reads, as the model deployment's options: `serve build` writes them
# in the `deployments:` section (where Serve and a RayService apply an edit to autoscaling or
# max_ongoing_requests without restarting replicas), not in the app's arguments, whose every edit
# restarts them. A replica finds its GPUs in what Ray reserved for it; `num_cpus` stays in the arguments
# too, since a replica sizes torch's threads by it (unset: every core), and the queue limits do, since a
# replica admits requests by them.
DEPLOYMENT_FIELDS = frozenset({"autoscaling", "num_gpus"})


class HttpArgs(BaseModel):
    """What every served route shares: access, limits, and what clients may see (from `serve`)."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(default=1_000_000, ge=1024, description="Largest request body before 413.")
    request_timeout_s: float = Field(
        default=60.0, gt=0.0, description="Longest wait for an answer before 504."
    )
    api_keys: list[str] = Field(
        default_factory=list,
        repr=False,
        description="Keys from the config; each replica adds those of its RAYFORMERS_API_KEYS.",
    )
    require_api_keys: bool = Field(
        default=False,
        description="Keys were configured when this was built: a replica that finds none refuses to start "
        "rather than serve without them.",
    )
    open_routes: list[str] = Field(default_factory=list, description="Paths answered without an API key.")
    expose_paths: bool = Field(default=False, description="Show storage paths in /info and the docs.")


class AppArgs(ServeAppConfig):
    """`rayformers.serving.app:build_app` arguments: one app's serve config plus what all routes share."""

    http: HttpArgs = Field(default_factory=HttpArgs, description="Access, limits and visibility.")

    @property
    def ongoing_limit(self) -> int:
        """Requests a replica works on at once."""
        return self.max_ongoing_requests or 2 * self.max_batch_size

    @property
    def admission_limit(self) -> int | None:
        """Requests a replica holds at once before it answers 503; None: no limit."""
        return None if self.max_queued_requests < 0 else self.ongoing_limit + self.max_queued_requests

    def deployment_options(self) -> dict[str, Any]:
        """The model deployment's Ray Serve options (`@serve.deployment` keywords, and the `deployments:`
        entry of a Serve config): autoscaling, what Serve sends a replica, and the resources it reserves.

        The replica admits what it can hold and answers the rest 503 itself, in JSON, at once. Serve sends
        it a little more than that (so the overflow reaches it) and queues nothing of its own: Serve's
        router counts requests being routed as queued, and would drop them in plain text. A replica
        reserves 1 CPU where `num_cpus` is unset (and then runs torch on every core it may use)."""
        scaling = self.autoscaling
        autoscaling: dict[str, Any] = {
            "min_replicas": scaling.min_replicas,
            "max_replicas": scaling.max_replicas,
            "target_ongoing_requests": scaling.target_ongoing_requests,
            "upscale_delay_s": scaling.upscale_delay_s,
            "downscale_delay_s": scaling.downscale_delay_s,
            "look_back_period_s": scaling.look_back_period_s,
        }
        if scaling.initial_replicas is not None:
            autoscaling["initial_replicas"] = scaling.initial_replicas
        admitted = self.admission_limit
        return {
            "autoscaling_config": autoscaling,
            "max_ongoing_requests": _UNBOUNDED if admitted is None else admitted + _SLACK,
            "max_queued_requests": -1,
            "ray_actor_options": {"num_cpus": self.num_cpus or 1.0, "num_gpus": self.num_gpus},
        }


class GatewayApp(BaseModel):
    """One app as the gateway knows it: where OpenAI-style `model` names lead."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="App name (its route prefix).")
    task: TaskName = Field(description="The app's task.")
    adapters: list[str] = Field(default_factory=list, description="LoRA adapters the app serves.")
    max_inputs_per_request: int = Field(
        default=64, ge=1, description="The app's inputs per request (prompts, texts, documents) before 413."
    )


class GatewayArgs(BaseModel):
    """`rayformers.serving.app:build_gateway` arguments: the apps behind `/v1/*` and the app index at `/`."""

    model_config = ConfigDict(extra="forbid")

    apps: list[GatewayApp] = Field(description="Served apps.")
    http: HttpArgs = Field(default_factory=HttpArgs, description="Access, limits and visibility.")
