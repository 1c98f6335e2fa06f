"""The tasks' HTTP schemas, which the ingress builds its request models from: the very models the
handlers validate with, importable (with the task modules themselves) without torch or transformers."""

from __future__ import annotations

import json
import subprocess
import sys

import pydantic
import pytest

from rayformers.tasks import TASK_NAMES, get_task
from rayformers.tasks.schemas import ParametersModel


@pytest.mark.parametrize("name", TASK_NAMES)
def test_parameters_refuse_unknown_names(name):
    task = get_task(name)
    assert issubclass(task.Parameters, ParametersModel)
    with pytest.raises(pydantic.ValidationError, match="no_such_parameter"):
        task.Parameters.model_validate({"no_such_parameter": 1})


@pytest.mark.parametrize("name", TASK_NAMES)
def test_request_model_is_built_from_the_tasks_own_schemas(name):
    from rayformers.serving.ingress import request_model

    task = get_task(name)
    model = request_model(task, "App")
    one = task.handler.warmup_inputs[0]
    single = model.model_validate({"inputs": one})
    assert isinstance(single.parameters, task.Parameters)
    assert len(model.model_validate({"inputs": [one, one], "parameters": {}}).inputs) == 2
    with pytest.raises(pydantic.ValidationError):
        model.model_validate({"inputs": []})
    with pytest.raises(pydantic.ValidationError):
        model.model_validate({"inputs": one, "parameters": {"no_such_parameter": 1}})


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_task_modules_and_the_ingress_import_no_model_stack():
    code = (
        "from rayformers.tasks import TASK_NAMES, get_task\n"
        "tasks = [get_task(n) for n in TASK_NAMES]\n"
        "import rayformers.serving.ingress, rayformers.serving.gateway"
    )
    loaded = _modules_after(code)
    assert "rayformers.serving.ingress" in loaded and "rayformers.tasks.text_generation" in loaded
    heavy = {"torch", "transformers", "peft"}
    assert not loaded & heavy, sorted(loaded & heavy)
