"""The task registry resolves: every function, collator and Auto class it names exists."""

from __future__ import annotations

import inspect

import pytest
import transformers

from rayformers.tasks import TASK_NAMES, TASKS, get_task


@pytest.mark.parametrize("name", TASK_NAMES)
def test_entries_resolve(name):
    task = TASKS[name]
    fn = task.load_preprocess()
    assert list(inspect.signature(fn).parameters) == ["batch", "tokenizer", "settings", "mode"]
    assert callable(task.load_collator())
    assert task.load_auto_model() is getattr(transformers, task.auto_model)
    assert set(task.inference_columns) <= set(task.all_columns) | {"text"}
    assert task.default_metric in task.metrics
    if task.label_column:
        assert task.label_column in task.columns


def test_pipeline_tasks_exist_in_transformers_5():
    from transformers.pipelines import SUPPORTED_TASKS

    for task in TASKS.values():
        if task.pipeline_task:
            assert task.pipeline_task in SUPPORTED_TASKS, task.name


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(KeyError, match="text-classification"):
        get_task("sentiment")


def test_vocabulary_imports_neither_torch_nor_ray():
    import subprocess
    import sys

    code = "import sys, rayformers.loading, rayformers.manifest, rayformers.cli; print(sorted(m for m in ('torch', 'ray', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
