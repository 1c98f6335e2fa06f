"""Typed arguments of the Serve application builders: what `rayformers serve build` writes into a Ray
Serve config file (and a RayService's `serveConfigV2`), validated by Serve against these models."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from rayformers.config import ServeAppConfig
from rayformers.tasks import TaskName

__all__ = ["AppArgs", "GatewayApp", "GatewayArgs", "HttpArgs"]


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
