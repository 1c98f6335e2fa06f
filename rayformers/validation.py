"""Config errors a user can act on: every problem at once, each with its key path, value and fix.

Pydantic's errors are translated into `ConfigIssue`s (a did-you-mean for misspelled keys, the
allowed values for a choice, the field's own description as the hint), and the checks that span
sections (a column the task does not have, a metric the task does not compute) run on whatever
sections did validate, so one pass reports every mistake the file holds.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from rayformers.errors import UserError
from rayformers.tasks import TASKS, get_task

__all__ = ["ConfigError", "ConfigIssue", "cross_section_issues", "issues_from_pydantic", "nested_model"]

_MISSING = object()


@dataclass(frozen=True)
class ConfigIssue:
    """One mistake in a config."""

    path: str
    message: str
    fix: str
    value: Any = _MISSING

    def render(self) -> str:
        shown = "" if self.value is _MISSING else f" (got {_short(self.value)})"
        return f"{self.path or '<config>'}: {self.message}{shown}\n    fix: {self.fix}"


class ConfigError(UserError):
    """A config that cannot be used; `issues` lists every problem found."""

    def __init__(self, source: str, issues: list[ConfigIssue]) -> None:
        self.source = source
        self.issues = issues
        super().__init__(self.render())

    def render(self) -> str:
        n = len(self.issues)
        head = f"{self.source}: {n} problem{'s' if n != 1 else ''} in the config"
        return "\n".join([head, *(f"  - {issue.render()}" for issue in self.issues)])

    def __reduce__(self) -> tuple[type[ConfigError], tuple[str, list[ConfigIssue]]]:
        return (type(self), (self.source, self.issues))


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _dotted(prefix: tuple[str | int, ...], loc: tuple[str | int, ...]) -> str:
    path = ""
    for part in (*prefix, *loc):
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("function-after", "function-before") or "[" in str(part):
            continue  # pydantic's internal validator/union tags are not part of the user's key path
        else:
            path += f".{part}" if path else str(part)
    return path


def _model_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The pydantic model class that owns the last key of `loc`, following nested sections."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        current = nested_model(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def nested_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = nested_model(arg)
        if found is not None:
            return found
    return None


def issues_from_pydantic(
    error: ValidationError, model: type[BaseModel], prefix: tuple[str | int, ...] = ()
) -> list[ConfigIssue]:
    """Translate a pydantic ValidationError on `model` (found at `prefix`) into ConfigIssues."""
    issues = []
    for err in error.errors(include_url=False):
        loc = tuple(err["loc"])
        path = _dotted(prefix, loc)
        kind = err["type"]
        owner = _model_at(model, loc) if loc else model
        key = str(loc[-1]) if loc else ""
        field = owner.model_fields.get(key) if owner is not None else None
        hint = field.description if field is not None and field.description else ""
        value = err.get("input", _MISSING)
        if kind == "extra_forbidden":
            known = sorted(owner.model_fields) if owner is not None else []
            close = difflib.get_close_matches(key, known, n=1)
            fix = f"did you mean `{close[0]}`? " if close else ""
            fix += f"known keys here: {', '.join(known)}"
            issues.append(ConfigIssue(path, "unknown key", fix))
        elif kind == "missing":
            issues.append(ConfigIssue(path, "required key is missing", f"add it: {hint}".rstrip(": ")))
        elif kind == "literal_error":
            allowed = err.get("ctx", {}).get("expected", "")
            close = difflib.get_close_matches(str(value), [a.strip(" '") for a in allowed.split(",")], n=1)
            fix = f"use one of {allowed}" + (f" (did you mean '{close[0]}'?)" if close else "")
            issues.append(ConfigIssue(path, "not an allowed value", fix, value))
        elif kind == "value_error" and not loc:
            issues.append(
                ConfigIssue(path, str(err["msg"]).removeprefix("Value error, "), hint or "see above")
            )
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            action = _action(kind, err.get("ctx") or {})
            fix = "; ".join(part for part in (action, f"{key}: {hint}" if hint else "") if part) or msg
            issues.append(ConfigIssue(path, msg[0].lower() + msg[1:] if msg else kind, fix, value))
    return issues


_ACTIONS = {
    "int_parsing": "give a whole number",
    "int_type": "give a whole number",
    "int_from_float": "give a whole number",
    "float_parsing": "give a number (e.g. 3e-5 or 0.1)",
    "float_type": "give a number (e.g. 3e-5 or 0.1)",
    "bool_parsing": "give true or false",
    "bool_type": "give true or false",
    "string_type": "give a text value (quote it in YAML if needed)",
    "dict_type": "give a mapping of keys to values",
    "model_type": "give a mapping of keys to values",
    "model_attributes_type": "give a mapping of keys to values",
    "list_type": "give a list, e.g. [a, b]",
    "greater_than_equal": "use a value >= {ge}",
    "greater_than": "use a value > {gt}",
    "less_than_equal": "use a value <= {le}",
    "less_than": "use a value < {lt}",
    "string_pattern_mismatch": "match the pattern {pattern}",
}


def _action(kind: str, ctx: dict[str, Any]) -> str:
    template = _ACTIONS.get(kind, "")
    try:
        return template.format(**ctx)
    except (KeyError, IndexError):
        return template


def _raw_at(raw: Any, *keys: str) -> Any:
    for key in keys:
        raw = raw.get(key) if isinstance(raw, dict) else None
    return raw


def cross_section_issues(sections: dict[str, BaseModel], raw: dict[str, Any]) -> list[ConfigIssue]:
    """Checks that need two sections. Each runs on the validated sections, or on the raw values it
    needs when their section has mistakes elsewhere, so one pass reports everything."""
    issues: list[ConfigIssue] = []
    data, train = sections.get("data"), sections.get("train")
    task_name = _raw_at(raw, "model", "task")
    task = get_task(task_name) if isinstance(task_name, str) and task_name in TASKS else None
    columns = data.columns if data is not None else _raw_at(raw, "data", "columns")  # type: ignore[attr-defined]
    if task is not None and isinstance(columns, dict):
        for key in columns:
            if key not in task.all_columns:
                close = difflib.get_close_matches(key, task.all_columns, n=1)
                issues.append(
                    ConfigIssue(
                        f"data.columns.{key}",
                        f"'{key}' is not a column of task {task.name}",
                        (f"did you mean '{close[0]}'? " if close else "")
                        + f"map the task's columns ({', '.join(task.all_columns)}) to your column names",
                    )
                )
    if task is not None and data is not None:
        issues.extend(task.config_issues(data))
    if task is not None and train is not None:
        metric = train.metric  # type: ignore[attr-defined]
        if metric is not None and train.metric_module is None and metric not in (*task.metrics, "loss"):  # type: ignore[attr-defined]
            issues.append(
                ConfigIssue(
                    "train.metric",
                    f"task {task.name} does not compute '{metric}'",
                    f"use one of {', '.join((*task.metrics, 'loss'))}, or a path to a local evaluate module",
                    metric,
                )
            )
    if train is not None:
        precision, use_gpu = train.mixed_precision, train.use_gpu  # type: ignore[attr-defined]
        if precision in ("bf16", "fp16") and not use_gpu:
            issues.append(
                ConfigIssue(
                    "train.mixed_precision",
                    f"{precision} mixed precision needs GPUs, and train.use_gpu is false",
                    "set train.use_gpu: true, or mixed_precision: auto (off on CPU)",
                    precision,
                )
            )
    return issues
