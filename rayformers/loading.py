"""Load a run config from YAML with `--set a.b=c` overrides, reporting every mistake at once."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from rayformers.config import SECTIONS, RunConfig
from rayformers.validation import ConfigError, ConfigIssue, cross_section_issues, issues_from_pydantic

__all__ = ["absolutize", "apply_overrides", "load_config", "parse_override", "validate_mapping"]


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=c` -> (['a', 'b'], value). The value is read as YAML, so `3`, `true`, `[a, b]` and `null` keep
    their types; pydantic then coerces strings such as `3e-5` to the field's type."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {text!r} is not KEY=VALUE; write e.g. --set train.learning_rate=3e-5")
    path = [part.strip() for part in key.strip().split(".")]
    if any(not part for part in path):
        raise ValueError(f"override {text!r} has an empty key part; write e.g. --set data.max_length=256")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return path, value


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of `raw` with each `a.b=c` override set, creating intermediate mappings as needed."""
    result = _deep_copy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = result
        for depth, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                raise ValueError(f"override {text!r}: {where} is {child!r}, not a section with keys")
            node = child
        node[path[-1]] = value
    return result


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def validate_mapping(raw: Any, source: str = "<config>") -> RunConfig:
    """Validate a parsed config, raising one ConfigError that lists every problem."""
    if not isinstance(raw, Mapping):
        raise ConfigError(
            source,
            [
                ConfigIssue(
                    "", "the config is not a mapping of sections", "write sections: data, model, ...", raw
                )
            ],
        )
    issues: list[ConfigIssue] = []
    sections: dict[str, BaseModel] = {}
    for key in raw:
        if key not in SECTIONS:
            close = [k for k in SECTIONS if k.startswith(str(key)[:2])]
            issues.append(
                ConfigIssue(
                    str(key),
                    "unknown section",
                    (f"did you mean `{close[0]}`? " if close else "")
                    + f"the sections are {', '.join(SECTIONS)}",
                )
            )
    for name, model in SECTIONS.items():
        value = raw.get(name)
        if value is None:
            if RunConfig.model_fields[name].is_required():
                hint = RunConfig.model_fields[name].description
                issues.append(ConfigIssue(name, "required section is missing", f"add it: {hint}"))
                continue
            value = {}
        try:
            sections[name] = model.model_validate(value)
        except ValidationError as err:
            issues.extend(issues_from_pydantic(err, model, (name,)))
    issues.extend(cross_section_issues(sections, dict(raw)))
    if issues:
        raise ConfigError(source, issues)
    return RunConfig(**sections)  # type: ignore[arg-type]


def _absolute(value: str | None, must_exist: bool = True) -> str | None:
    if value is None or "://" in value or os.path.isabs(value):
        return value
    if must_exist and not os.path.exists(value):
        return value  # a hub id, not a local path
    return os.path.abspath(value)


def _file_uri(uri: str | None) -> str | None:
    """A `file:` tracking URI with a relative path made absolute (`file:mlruns`, `file:./mlruns`): the
    training workers that log to it run in other directories. Other URIs are left as they are."""
    if uri is None or not uri.startswith("file:") or uri.startswith("file:/"):
        return uri
    return "file://" + os.path.abspath(uri.removeprefix("file:"))


def absolutize(cfg: RunConfig) -> RunConfig:
    """Local relative paths made absolute against the current directory: Ray workers run elsewhere."""
    model = cfg.model
    scratch = model.from_scratch
    if scratch is not None:
        scratch = scratch.model_copy(update={"tokenizer": _absolute(scratch.tokenizer)})
    model = model.model_copy(
        update={
            "name": _absolute(model.name),
            "tokenizer": _absolute(model.tokenizer),
            "from_scratch": scratch,
        }
    )
    train = cfg.train.model_copy(
        update={
            "storage_path": _absolute(cfg.train.storage_path, must_exist=False),
            "tracking": cfg.train.tracking.model_copy(
                update={"mlflow": _file_uri(cfg.train.tracking.mlflow)}
            ),
        }
    )
    data = cfg.data.model_copy(update={"tokenized": _absolute(cfg.data.tokenized)})
    return cfg.model_copy(update={"model": model, "train": train, "data": data})


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> RunConfig:
    """Read, override and validate the YAML run config at `path`."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ConfigError(source, [ConfigIssue("", f"config file {what}", "pass the path of a YAML config")])
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(
            source, [ConfigIssue("", f"not valid YAML{where}: {problem}", "fix the YAML syntax")]
        ) from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            source, [ConfigIssue("", f"not UTF-8 text ({err.reason})", "save it as UTF-8")]
        ) from None
    if raw is None:
        raw = {}
    if isinstance(raw, dict):
        try:
            raw = apply_overrides(raw, overrides)
        except ValueError as err:
            raise ConfigError(source, [ConfigIssue("--set", str(err), "fix the override")]) from None
    return absolutize(validate_mapping(raw, source))
