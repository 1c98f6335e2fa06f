"""The serving stage: load a checkpoint directory and answer requests for its task over HTTP.

Plain Python below the Ray Serve deployments: `load_checkpoint` reads a checkpoint (and its
`rayformers.json`), `build_handler` builds the task's handler, and the handler's
`predict(inputs, parameters)` returns one JSON-able output per input:

    loaded = load_checkpoint("runs/sentiment/best")
    handler = build_handler(loaded)
    handler.predict(["what a great movie"], {"top_k": 2})

Names are resolved on first use, so importing `rayformers.serving.errors` (e.g. in the HTTP layer) does
not import torch or transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "CheckpointError",
    "InputError",
    "LoadedModel",
    "ServingError",
    "UnknownAdapterError",
    "build_handler",
    "load_checkpoint",
    "resolve_dtype",
]

_WHERE = {
    "CheckpointError": "rayformers.serving.errors",
    "InputError": "rayformers.serving.errors",
    "ServingError": "rayformers.serving.errors",
    "UnknownAdapterError": "rayformers.serving.errors",
    "LoadedModel": "rayformers.serving.checkpoint",
    "build_handler": "rayformers.serving.checkpoint",
    "load_checkpoint": "rayformers.serving.checkpoint",
    "resolve_dtype": "rayformers.serving.checkpoint",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'rayformers.serving' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)
