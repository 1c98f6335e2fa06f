"""The task table: a pure table of names and import paths, every entry a complete task."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
import transformers

from rayformers.tasks import TASK_NAMES, TASKS, get_task
from rayformers.tasks.base import Task
from rayformers.tasks.handler import Handler


@pytest.mark.parametrize("name", TASK_NAMES)
def test_entries_resolve_to_complete_tasks(name):
    task = get_task(name)
    assert isinstance(task, Task) and task.name == name and TASKS[name].startswith("rayformers.tasks.")
    assert type(task).preprocess is not Task.preprocess, "a task must preprocess"
    assert isinstance(task.evaluator_class, type), "a task must evaluate"
    assert list(inspect.signature(task.preprocess).parameters) == ["batch", "tokenizer", "settings", "mode"]
    assert task.auto_model_class() is getattr(transformers, task.auto_model)
    assert issubclass(task.handler, Handler)
    assert set(task.text_columns) <= set(task.all_columns)
    assert task.default_metric in task.metrics
    if task.label_column:
        assert task.label_column in task.columns
    assert task.capabilities <= {"generate", "embed", "rerank"}


def test_pipeline_tasks_exist_in_transformers_5():
    from transformers.pipelines import SUPPORTED_TASKS

    for name in TASK_NAMES:
        task = get_task(name)
        if task.pipeline_task:
            assert task.pipeline_task in SUPPORTED_TASKS, task.name


def test_a_task_pickles_as_its_one_instance():
    import pickle

    task = get_task("question-answering")
    assert pickle.loads(pickle.dumps(task)) is task


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(KeyError, match="text-classification"):
        get_task("sentiment")


def test_the_table_imports_no_task_module_and_the_vocabulary_neither_torch_nor_ray():
    code = (
        "import sys, rayformers.tasks, rayformers.loading, rayformers.manifest, rayformers.cli\n"
        "print(sorted(m for m in sys.modules if m in ('torch', 'ray', 'transformers') "
        "or m.startswith('rayformers.tasks.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
