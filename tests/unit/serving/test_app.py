"""The app builders without Ray running: what each deployment asks Ray Serve for (GPU placement,
batching-consistent concurrency, backpressure, autoscaling), and the deploy config `serve build` writes."""

from __future__ import annotations

import pytest
from ray.serve.schema import ServeDeploySchema

from rayformers.config import ServeAppConfig, ServeConfig
from rayformers.serving.app import build_app, checked, deploy_config, task_of
from rayformers.serving.args import AppArgs
from rayformers.serving.errors import CheckpointError


def model_deployment(app):
    ingress = app._bound_deployment
    return ingress, ingress.init_args[0]._bound_deployment


def test_a_gpu_app_asks_for_its_gpu_fraction_and_the_ingress_for_nothing(tiny_checkpoint):
    args = AppArgs(
        name="gpu",
        checkpoint=str(tiny_checkpoint("text-classification")),
        num_gpus=0.5,
        num_cpus=2,
        dtype="float16",
    )
    ingress, model = model_deployment(build_app(args))
    assert model.ray_actor_options == {"num_cpus": 2.0, "num_gpus": 0.5}
    assert ingress.ray_actor_options == {"num_cpus": 0}
    assert model.init_args[0]["dtype"] == "float16" and model.init_args[0]["task"] == "text-classification"


def test_concurrency_follows_the_batch_size_and_backpressure_answers_503_with_retry_after(tiny_checkpoint):
    args = AppArgs(
        name="b",
        checkpoint=str(tiny_checkpoint("text-classification")),
        max_batch_size=16,
        max_queued_requests=7,
        autoscaling={"min_replicas": 0, "max_replicas": 3, "upscale_delay_s": 1, "look_back_period_s": 5},
    )
    _, model = model_deployment(build_app(args))
    config = model._deployment_config
    assert config.max_ongoing_requests == 32 and config.max_queued_requests == 7
    assert config.backpressure_config.status_code == 503 and config.backpressure_config.retry_after_s == 1
    auto = config.autoscaling_config
    assert (auto.min_replicas, auto.max_replicas, auto.upscale_delay_s, auto.look_back_period_s) == (
        0,
        3,
        1,
        5,
    )


def test_a_batch_that_could_never_fill_is_refused():
    with pytest.raises(ValueError, match="no batch could ever fill"):
        ServeAppConfig(name="x", checkpoint="c", max_batch_size=8, max_ongoing_requests=4)


def test_deploy_config_validates_with_serve_schema_and_reads_the_task_from_the_manifest(tiny_checkpoint):
    serve = ServeConfig(port=8123)
    apps = checked(
        serve, [ServeAppConfig(name="ner", checkpoint=str(tiny_checkpoint("token-classification")))]
    )
    config = deploy_config(serve, apps)
    schema = ServeDeploySchema.model_validate(config)
    assert [(a.name, a.route_prefix) for a in schema.applications] == [("ner", "/ner"), ("gateway", "/")]
    assert config["applications"][0]["args"]["task"] == "token-classification"
    assert config["applications"][1]["args"]["apps"] == [
        {"name": "ner", "task": "token-classification", "adapters": []}
    ]


def test_task_mismatch_missing_manifest_and_reserved_names_are_clear_errors(tiny_checkpoint, tmp_path):
    ner = str(tiny_checkpoint("token-classification"))
    with pytest.raises(CheckpointError, match="holds a 'token-classification' checkpoint"):
        task_of(AppArgs(name="x", checkpoint=ner, task="text-classification"))
    with pytest.raises(CheckpointError, match="set the app's `task`"):
        task_of(AppArgs(name="x", checkpoint=str(tmp_path)))
    assert task_of(AppArgs(name="x", checkpoint=str(tmp_path), task="fill-mask")) == "fill-mask"
    with pytest.raises(CheckpointError, match="reserved"):
        checked(ServeConfig(), [ServeAppConfig(name="gateway", checkpoint=ner)])
    with pytest.raises(CheckpointError, match="unique"):
        checked(ServeConfig(), [ServeAppConfig(name="a", checkpoint=ner)] * 2)
