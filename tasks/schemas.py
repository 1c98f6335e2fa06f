"""What the tasks' HTTP schemas share: base models that refuse unknown fields, the decoding parameters
every generating task takes, and the hints error messages show.

Pure pydantic (no torch, transformers or handlers), like every task's own `Input` and `Parameters`: the
HTTP ingress builds its typed request model, and its OpenAPI docs, from them without the model stack.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["TEXT_HINT", "InputModel", "ParametersModel", "SamplingParameters", "StopString"]

TEXT_HINT = "a string"
"""How a plain-text input looks, for error messages."""


class ParametersModel(BaseModel):
    """Base of every task's `Parameters`: unknown names are errors, so a typo is not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class InputModel(BaseModel):
    """Base of structured inputs (text pairs, question + context, query + texts)."""

    model_config = ConfigDict(extra="forbid")


MAX_NEW_TOKENS = 1024
"""The most tokens one request may ask a generating task for, on every route (OpenAI's included)."""


class SamplingParameters(ParametersModel):
    """Decoding controls shared by every generating task."""

    max_new_tokens: int = Field(default=32, ge=1, le=MAX_NEW_TOKENS, description="Most tokens to generate.")
    do_sample: bool = Field(default=False, description="Sample (true) or decode greedily (false).")
    temperature: float | None = Field(
        default=None, ge=0.0, le=100.0, description="Sampling temperature; 0 decodes greedily."
    )
    top_p: float | None = Field(default=None, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    top_k: int | None = Field(default=None, ge=0, description="Sample among the k likeliest tokens (0: all).")
    repetition_penalty: float | None = Field(default=None, gt=0.0, description="Above 1 discourages repeats.")
    seed: int | None = Field(
        default=None, description="Seed for sampling, for repeatable outputs of one batch."
    )

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `model.generate`; sampling knobs only when sampling (temperature 0 is
        greedy, as OpenAI-style clients expect), so greedy calls do not warn about ignored settings."""
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens}
        sample = self.do_sample and self.temperature != 0.0
        kwargs["do_sample"] = sample
        if sample:
            for name in ("temperature", "top_p", "top_k"):
                if getattr(self, name) is not None:
                    kwargs[name] = getattr(self, name)
        if self.repetition_penalty is not None:
            kwargs["repetition_penalty"] = self.repetition_penalty
        return kwargs


StopString = Annotated[str, Field(min_length=1)]
