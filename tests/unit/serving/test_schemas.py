"""The task schemas the HTTP ingress builds its request models from: the very models the handlers
validate with, importable without torch or transformers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pydantic
import pytest

from rayformers.serving.schemas import TASK_SCHEMAS, ParametersModel, TaskSchema, schema_for
from rayformers.tasks import TASK_NAMES, get_task

REPO = Path(__file__).resolve().parents[3]


def test_every_task_has_a_schema():
    assert set(TASK_SCHEMAS) == set(TASK_NAMES)
    for task in TASK_NAMES:
        assert isinstance(schema_for(task), TaskSchema)
        assert issubclass(schema_for(task).parameters, ParametersModel)


@pytest.mark.parametrize("task", TASK_NAMES)
def test_schema_is_what_the_handler_validates_with(task):
    handler = get_task(task).load_handler()
    schema = TASK_SCHEMAS[task]
    assert schema.parameters is handler.Parameters
    assert schema.input is handler.Input
    assert schema.input_hint == handler.input_hint


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(KeyError, match="known tasks: text-classification"):
        schema_for("nope")


def test_schema_is_frozen():
    with pytest.raises(AttributeError):
        schema_for("fill-mask").input_hint = "x"  # type: ignore[misc]


@pytest.mark.parametrize("task", TASK_NAMES)
def test_request_model_from_schema(task):
    from rayformers.serving.ingress import request_model

    model = request_model(schema_for(task), "App")
    one = {"question": "Who?", "context": "Alice."} if task == "question-answering" else "hello"
    single = model.model_validate({"inputs": one})
    assert isinstance(single.parameters, schema_for(task).parameters)
    assert len(model.model_validate({"inputs": [one, one], "parameters": {}}).inputs) == 2
    with pytest.raises(pydantic.ValidationError):
        model.model_validate({"inputs": []})
    with pytest.raises(pydantic.ValidationError):
        model.model_validate({"inputs": one, "parameters": {"no_such_parameter": 1}})


def _modules_after(code: str) -> set[str]:
    env = dict(os.environ)
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_schemas_import_no_model_stack():
    loaded = _modules_after("import rayformers.serving.schemas")
    heavy = {"torch", "transformers", "numpy", "rayformers.data", "rayformers.serving.handlers"}
    assert not loaded & heavy, sorted(loaded & heavy)


def test_ingress_imports_neither_torch_nor_transformers():
    loaded = _modules_after("import rayformers.serving.schemas, rayformers.serving.ingress")
    assert "rayformers.serving.ingress" in loaded
    assert not loaded & {"torch", "transformers", "rayformers.serving.handlers"}, sorted(
        loaded & {"torch", "transformers", "rayformers.serving.handlers"}
    )
