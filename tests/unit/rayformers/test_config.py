"""The config vocabulary: every shipped config validates, every mistake is reported at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from rayformers import config as config_module
from rayformers.loading import apply_overrides, load_config, parse_override, validate_mapping
from rayformers.validation import ConfigError

REPO = Path(__file__).resolve().parents[3]
CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))

MINIMAL = {
    "data": {"train": {"path": "train.jsonl"}},
    "model": {"task": "text-classification", "name": "distilbert-base-uncased"},
}


def test_there_are_configs_for_every_task_in_full_and_lora():
    from rayformers.tasks import TASK_NAMES

    for task in TASK_NAMES:
        assert (REPO / "configs" / task / "full.yaml").exists(), task
        assert (REPO / "configs" / task / "lora.yaml").exists(), task


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_config_validates(path):
    cfg = load_config(path)
    assert cfg.model.task in str(path)


def _all_models():
    return [
        v
        for v in vars(config_module).values()
        if isinstance(v, type) and issubclass(v, BaseModel) and v is not BaseModel
    ]


def test_every_field_has_a_description_and_unknown_keys_are_forbidden():
    for model in _all_models():
        if model.__name__.startswith("_"):
            continue
        assert model.model_config.get("extra") == "forbid", model.__name__
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


def issues_of(raw):
    with pytest.raises(ConfigError) as err:
        validate_mapping(raw, "x.yaml")
    return err.value.issues


def test_three_mistakes_are_all_reported_with_path_value_and_fix():
    raw = {
        "data": {"train": {"path": "t.jsonl"}, "max_lenght": 64},
        "model": {"task": "text-classification", "name": "m"},
        "train": {"learning_rate": "fast", "mixed_precision": "fp8"},
    }
    issues = issues_of(raw)
    by_path = {i.path: i for i in issues}
    assert set(by_path) == {"data.max_lenght", "train.learning_rate", "train.mixed_precision"}
    assert "did you mean `max_length`" in by_path["data.max_lenght"].fix
    assert by_path["train.learning_rate"].value == "fast" and "number" in by_path["train.learning_rate"].fix
    assert "'bf16'" in by_path["train.mixed_precision"].fix
    rendered = ConfigError("x.yaml", issues).render()
    assert rendered.startswith("x.yaml: 3 problems")


def test_cross_section_checks_run_beside_field_errors():
    raw = {
        "data": {"train": {"path": "t.jsonl"}, "columns": {"txt": "sentence"}, "max_lenght": 3},
        "model": {"task": "text-classification", "name": "m"},
        "train": {"metric": "bleu"},
    }
    paths = {i.path for i in issues_of(raw)}
    assert paths == {"data.max_lenght", "data.columns.txt", "train.metric"}


def test_exactly_one_source_and_one_model_origin():
    raw = {"data": {"train": {"path": "a", "hub": "b"}}, "model": {"task": "fill-mask"}}
    issues = issues_of(raw)
    assert {i.path for i in issues} == {"data.train", "model"}
    assert all("exactly one" in i.message for i in issues)


def test_missing_sections_and_unknown_sections():
    issues = issues_of({"modle": {}})
    assert {i.path for i in issues} == {"modle", "data", "model"}
    assert "did you mean `model`" in next(i for i in issues if i.path == "modle").fix


def test_a_bare_yaml_no_is_mixed_precision_no():
    import yaml

    train = yaml.safe_load("use_gpu: true\nmixed_precision: no\n")  # YAML 1.1 reads `no` as false
    assert train["mixed_precision"] is False
    assert validate_mapping({**MINIMAL, "train": train}).train.mixed_precision == "no"
    issues = issues_of({**MINIMAL, "train": {"mixed_precision": True}})  # `yes` is not a precision
    assert [i.path for i in issues] == ["train.mixed_precision"]


def test_gpu_and_precision_settings():
    ok = validate_mapping(
        {**MINIMAL, "train": {"use_gpu": True, "mixed_precision": "bf16", "gpus_per_worker": 0.5}}
    )
    assert ok.train.use_gpu and ok.train.mixed_precision == "bf16" and ok.train.gpus_per_worker == 0.5
    issues = issues_of({**MINIMAL, "train": {"mixed_precision": "fp16"}})
    assert [i.path for i in issues] == ["train.mixed_precision"] and "use_gpu" in issues[0].fix
    serve = validate_mapping(
        {
            **MINIMAL,
            "serve": {"apps": [{"name": "a", "checkpoint": "c", "num_gpus": 0.25, "dtype": "float16"}]},
        }
    )
    assert serve.serve.apps[0].num_gpus == 0.25


def test_autoscaling_bounds():
    app = {"name": "a", "checkpoint": "c", "autoscaling": {"min_replicas": 3, "max_replicas": 2}}
    issues = issues_of({**MINIMAL, "serve": {"apps": [app]}})
    assert issues[0].path == "serve.apps[0].autoscaling" and "min_replicas (3)" in issues[0].message


def test_zero_shot_needs_an_entailment_label():
    raw = {
        "data": {"train": {"path": "t"}, "labels": ["yes", "no"]},
        "model": {"task": "zero-shot-classification", "name": "m"},
    }
    assert [i.path for i in issues_of(raw)] == ["data.labels"]


def test_question_answering_windows_must_be_able_to_advance():
    raw = {
        "data": {"train": {"path": "t"}, "max_length": 64, "stride": 32},
        "model": {"task": "question-answering", "name": "m"},
    }
    (issue,) = issues_of(raw)
    assert issue.path == "data.stride" and "below 32" in issue.fix
    raw["data"]["stride"] = 16
    validate_mapping(raw, "x.yaml")
    raw["model"]["task"] = "text-classification"  # stride means nothing there
    raw["data"]["stride"] = 32
    validate_mapping(raw, "x.yaml")


def test_overrides_coerce_types():
    assert parse_override("train.learning_rate=3e-5") == (["train", "learning_rate"], "3e-5")
    assert parse_override("data.labels=[a, b]") == (["data", "labels"], ["a", "b"])
    assert parse_override("train.use_gpu=true") == (["train", "use_gpu"], True)
    raw = apply_overrides(
        MINIMAL, ["train.learning_rate=3e-5", "train.num_workers=4", "data.validation=null"]
    )
    cfg = validate_mapping(raw)
    assert cfg.train.learning_rate == pytest.approx(3e-5) and cfg.train.num_workers == 4
    assert MINIMAL["data"] == {"train": {"path": "train.jsonl"}}, "overrides must not change their input"
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_override("train.learning_rate")
    with pytest.raises(ValueError, match="not a section"):
        apply_overrides(MINIMAL, ["model.task.x=1"])


def test_yaml_errors_name_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  train: {path: x\nmodel: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert "line" in err.value.issues[0].message
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_a_run_config_without_secrets_keeps_everything_but_the_api_keys():
    from rayformers.loading import load_config

    key = "k" * 24
    cfg = load_config(REPO / "configs/text-classification/full.yaml", [f"serve.api_keys=[{key}]"])
    assert cfg.serve.api_keys == [key]
    clean = cfg.without_secrets()
    assert key not in json.dumps(clean.model_dump(mode="json")) and clean.serve.api_keys == []
    assert clean.model_dump(exclude={"serve": {"api_keys"}}) == cfg.model_dump(
        exclude={"serve": {"api_keys"}}
    )
