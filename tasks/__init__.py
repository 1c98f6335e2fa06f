"""The task table: every task's name, and the import path of the module that holds it.

This module is pure: it imports no task module, no stage and neither torch nor ray, so the config
vocabulary can name tasks and `rayformers validate` starts fast. `get_task(name)` imports the task's
module on first use and returns its one `Task` instance, which holds everything task-specific: columns,
preprocessing, collator, model building, loss, evaluator, HTTP schemas and serving handler
(`rayformers.tasks.base` says what a task provides). Adding a task is one module in this package and one
line in `TASKS`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from rayformers.tasks.base import Task

__all__ = ["TASKS", "TASK_NAMES", "TaskName", "get_task"]

TASKS: dict[str, str] = {
    "text-classification": "rayformers.tasks.text_classification",
    "token-classification": "rayformers.tasks.token_classification",
    "question-answering": "rayformers.tasks.question_answering",
    "fill-mask": "rayformers.tasks.fill_mask",
    "text-generation": "rayformers.tasks.text_generation",
    "summarization": "rayformers.tasks.summarization",
    "translation": "rayformers.tasks.translation",
    "zero-shot-classification": "rayformers.tasks.zero_shot_classification",
    "feature-extraction": "rayformers.tasks.feature_extraction",
    "text-ranking": "rayformers.tasks.text_ranking",
}
"""Task name -> the module whose `TASK` is that task."""

TASK_NAMES: tuple[str, ...] = tuple(TASKS)
# One Literal over the table's names, so configs and manifests validate a task name with the choices
# listed, and a new line in TASKS is all a new task needs here.
TaskName = Literal[TASK_NAMES]  # type: ignore[valid-type]

_loaded: dict[str, Task] = {}


def get_task(name: str) -> Task:
    """The task called `name` (its module imported on first use), or a KeyError listing the known ones."""
    found = _loaded.get(name)
    if found is not None:
        return found
    try:
        path = TASKS[name]
    except (KeyError, TypeError):
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(TASK_NAMES)}") from None
    task: Task = importlib.import_module(path).TASK
    if task.name != name:
        raise RuntimeError(f"{path}.TASK is {task.name!r}, but the task table lists it as {name!r}")
    _loaded[name] = task
    return task
