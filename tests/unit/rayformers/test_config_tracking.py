"""The config's tracking section (`train.tracking`) and the embedded Ray's metrics port
(`cluster.metrics_export_port`): what they take, and what they refuse, naming the field and the fix."""

from __future__ import annotations

import pytest

from rayformers.loading import validate_mapping
from rayformers.validation import ConfigError

MINIMAL = {
    "data": {"train": {"path": "train.jsonl"}},
    "model": {"task": "text-classification", "name": "distilbert-base-uncased"},
}


def with_train(**train: object) -> dict[str, object]:
    return {**MINIMAL, "train": train}


@pytest.mark.parametrize(
    "uri",
    [
        "http://mlflow.internal:5000",
        "https://mlflow.example.com",
        "file:/srv/mlruns",
        "file:///srv/mlruns",
        "sqlite:///srv/mlflow.db",
        "postgresql://user@db/mlflow",
        "databricks",
        "databricks://profile",
    ],
)
def test_tracking_takes_the_uris_mlflow_takes(uri):
    cfg = validate_mapping(with_train(tracking={"mlflow": uri, "tags": {"team": "search"}}))
    assert cfg.train.tracking.mlflow == uri
    assert cfg.train.tracking.tags == {"team": "search"}


def test_no_tracking_by_default():
    tracking = validate_mapping(MINIMAL).train.tracking
    assert tracking.mlflow is None and tracking.experiment is None and tracking.run_name is None


@pytest.mark.parametrize(
    ("uri", "said"),
    [
        ("mlruns", "is not an MLflow tracking URI"),
        ("./mlruns", "is not an MLflow tracking URI"),
        ("ftp://host/x", "is not an MLflow tracking URI"),
        ("http://", "names no host"),
    ],
)
def test_tracking_refuses_what_is_no_tracking_uri_naming_the_field_and_the_fix(uri, said):
    with pytest.raises(ConfigError) as err:
        validate_mapping(with_train(tracking={"mlflow": uri}), "x.yaml")
    text = err.value.render()
    assert "train.tracking.mlflow" in text and said in text and repr(uri) in text
    if "not an MLflow" in said:
        assert "file:/path/to/mlruns" in text  # the fix: how a local store is written


def test_a_misspelled_tracking_key_is_named():
    with pytest.raises(ConfigError) as err:
        validate_mapping(with_train(tracking={"mlflow_uri": "file:/srv/mlruns"}), "x.yaml")
    assert "train.tracking.mlflow_uri" in err.value.render()


def test_the_metrics_port_is_for_an_embedded_ray_only():
    cfg = validate_mapping({**MINIMAL, "cluster": {"metrics_export_port": 9100}})
    assert cfg.cluster.metrics_export_port == 9100
    with pytest.raises(ConfigError) as err:
        validate_mapping({**MINIMAL, "cluster": {"address": "auto", "metrics_export_port": 9100}}, "x.yaml")
    assert "--metrics-export-port" in err.value.render()
    with pytest.raises(ConfigError) as err:
        validate_mapping({**MINIMAL, "cluster": {"metrics_export_port": 70000}}, "x.yaml")
    assert "cluster.metrics_export_port" in err.value.render()


def test_a_relative_file_store_is_made_absolute_as_the_storage_path_is(tmp_path, monkeypatch):
    """Training workers run in other directories: `file:mlruns` must mean the directory the user ran in."""
    import yaml

    from rayformers.loading import load_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": "x"}\n')
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"data": {"train": {"path": "train.jsonl"}}, "model": {"task": "text-classification", "name": "m"}}))  # fmt: skip
    for given, expected in [
        ("file:mlruns", f"file://{tmp_path}/mlruns"),
        ("file:./runs/ml", f"file://{tmp_path}/runs/ml"),
        ("file:///srv/mlruns", "file:///srv/mlruns"),
        ("http://mlflow:5000", "http://mlflow:5000"),
    ]:
        cfg = load_config(config, [f"train.tracking.mlflow={given}"])
        assert cfg.train.tracking.mlflow == expected, given
