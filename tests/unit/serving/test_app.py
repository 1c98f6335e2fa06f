"""The app builders without Ray running: what each deployment asks Ray Serve for (GPU placement, one hop
from the proxy to the model, admission above the batch size, backpressure, autoscaling), the torch threads
a replica runs, and the deploy config `serve build` writes."""

from __future__ import annotations

import pytest
from ray.serve.schema import ServeDeploySchema

from rayformers.config import ServeAppConfig, ServeConfig
from rayformers.serving.app import build_app, checked, deploy_config, task_of
from rayformers.serving.args import AppArgs
from rayformers.serving.errors import CheckpointError


def model_deployment(app):
    return app._bound_deployment


def test_a_gpu_app_asks_for_its_gpu_fraction_and_serves_its_routes_itself(tiny_checkpoint):
    args = AppArgs(
        name="gpu",
        checkpoint=str(tiny_checkpoint("text-classification")),
        num_gpus=0.5,
        num_cpus=2,
        dtype="float16",
    )
    model = model_deployment(build_app(args))
    assert model.name == "Model" and model.ray_actor_options == {"num_cpus": 2.0, "num_gpus": 0.5}
    # One hop: the model deployment is the app's HTTP ingress, with no deployment in front of it.
    assert not [a for a in model.init_args if hasattr(a, "_bound_deployment")]
    replica = model.func_or_class
    assert hasattr(replica, "_run_asgi_lifespan_startup")  # a Serve ASGI ingress ...
    assert callable(replica.predict_route) and callable(replica.predict)  # ... and the model itself
    assert model.init_args[0]["dtype"] == "float16" and model.init_args[0]["task"] == "text-classification"
    cpu = model_deployment(build_app(AppArgs(name="cpu", checkpoint=args.checkpoint)))
    assert cpu.ray_actor_options == {"num_cpus": 1.0, "num_gpus": 0.0}


def test_a_replica_admits_its_batches_and_its_queue_and_answers_the_rest_itself(
    tiny_checkpoint,
):
    args = AppArgs(
        name="b",
        checkpoint=str(tiny_checkpoint("text-classification")),
        max_batch_size=16,
        max_queued_requests=7,
        autoscaling={"min_replicas": 0, "max_replicas": 3, "upscale_delay_s": 1, "look_back_period_s": 5},
    )
    assert (args.ongoing_limit, args.admission_limit) == (32, 39)
    config = model_deployment(build_app(args))._deployment_config
    # The replica answers beyond 39 itself (a JSON 503): Serve sends it more, and queues nothing itself.
    assert config.max_ongoing_requests > 39 and config.max_queued_requests == -1
    auto = config.autoscaling_config
    assert (auto.min_replicas, auto.max_replicas, auto.upscale_delay_s, auto.look_back_period_s) == (
        0,
        3,
        1,
        5,
    )
    unbounded = AppArgs(name="u", checkpoint=args.checkpoint, max_queued_requests=-1)
    assert unbounded.admission_limit is None


def test_torch_threads_follow_the_cpus_a_replica_reserves(monkeypatch):
    import os

    from rayformers.serving.replica import torch_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert (torch_threads(None), torch_threads(2), torch_threads(0.5), torch_threads(1.5)) == (4, 2, 1, 2)


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
        {"name": "ner", "task": "token-classification", "adapters": [], "max_inputs_per_request": 64}
    ]


def test_serve_build_puts_the_deployment_options_in_the_deployments_section(tiny_checkpoint):
    """Issue 13: autoscaling, the request limits and the resources are Serve's deployment options, where
    an edit to autoscaling or max_ongoing_requests is a lightweight update; the args keep what the
    replica's code reads, and rebuilding the app from them gives the options the section states."""
    from ray.serve._private.config import DeploymentConfig

    serve = ServeConfig()
    (app,) = checked(
        serve,
        [
            ServeAppConfig(
                name="gpu",
                checkpoint=str(tiny_checkpoint("text-classification")),
                num_cpus=4,
                num_gpus=1,
                max_batch_size=8,
                max_queued_requests=10,
                autoscaling={"min_replicas": 2, "max_replicas": 6, "initial_replicas": 3},
            )
        ],
    )
    written = deploy_config(serve, [app])["applications"][0]
    ServeDeploySchema.model_validate(deploy_config(serve, [app]))
    (section,) = written["deployments"]
    assert section["name"] == "Model"
    assert section["ray_actor_options"] == {"num_cpus": 4.0, "num_gpus": 1.0}
    scaling = section["autoscaling_config"]
    assert (scaling["min_replicas"], scaling["max_replicas"], scaling["initial_replicas"]) == (2, 6, 3)
    # The replica admits 16 working + 10 queued; Serve sends 64 more, for the replica to answer 503 itself.
    assert (section["max_ongoing_requests"], section["max_queued_requests"]) == (26 + 64, -1)
    args = written["args"]
    assert "autoscaling" not in args and "num_gpus" not in args
    assert (args["num_cpus"], args["max_batch_size"], args["max_queued_requests"]) == (4.0, 8, 10)
    # The code's own options for the same app are the section's (a `rayformers serve` deploy and a
    # `serve deploy` of the file ask Serve for the same thing).
    code: DeploymentConfig = model_deployment(build_app(app))._deployment_config
    assert code.max_ongoing_requests == section["max_ongoing_requests"]
    assert code.autoscaling_config.max_replicas == 6 and code.autoscaling_config.initial_replicas == 3
    assert model_deployment(build_app(app)).ray_actor_options == section["ray_actor_options"]


def test_a_replica_takes_its_gpus_from_what_ray_reserved(monkeypatch):
    """A `deployments:` edit of ray_actor_options.num_gpus reaches the replica, whose args no longer say."""
    import ray

    from rayformers.serving.replica import reserved_gpus

    # Outside a Ray worker (no Ray, or a driver where the session's Ray is up): as configured.
    assert reserved_gpus(0.5) == 0.5

    class Context:
        worker = type("Worker", (), {"mode": ray.WORKER_MODE})()

        def get_assigned_resources(self):
            return {"CPU": 4.0, "GPU": 1.0}

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "get_runtime_context", lambda: Context())
    assert reserved_gpus(0.0) == 1.0


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


def test_serve_build_holds_the_config_keys_but_never_the_environment_keys(tiny_checkpoint, monkeypatch):
    import yaml

    from rayformers.serving.access import API_KEYS_ENV

    env_key, config_key = "env-key-0123456789abcdef", "config-key-0123456789abcdef"
    monkeypatch.setenv(API_KEYS_ENV, env_key)
    serve = ServeConfig(api_keys=[config_key], request_timeout_s=5, open_routes=["/ner/info"])
    apps = checked(
        serve, [ServeAppConfig(name="ner", checkpoint=str(tiny_checkpoint("token-classification")))]
    )
    written = yaml.safe_dump(deploy_config(serve, apps))
    assert env_key not in written and config_key in written
    ServeDeploySchema.model_validate(yaml.safe_load(written))
    for app in yaml.safe_load(written)["applications"]:
        http = app["args"]["http"]
        assert (
            http["require_api_keys"]
            and http["request_timeout_s"] == 5
            and http["open_routes"] == ["/ner/info"]
        )
    # Keys only from the environment: none written, but a replica that finds none will not start open.
    monkeypatch.setenv(API_KEYS_ENV, env_key)
    bare = deploy_config(
        ServeConfig(), checked(ServeConfig(), [ServeAppConfig(name="ner", checkpoint=apps[0].checkpoint)])
    )
    assert env_key not in yaml.safe_dump(bare) and bare["applications"][0]["args"]["http"]["require_api_keys"]
    monkeypatch.delenv(API_KEYS_ENV)
    open_ = checked(ServeConfig(), [ServeAppConfig(name="ner", checkpoint=apps[0].checkpoint)])
    assert not open_[0].http.require_api_keys


def test_serve_deploys_each_app_with_its_own_autoscaling_and_gpus(tiny_checkpoint, monkeypatch):
    """`rayformers serve` builds its apps in process from the whole AppArgs: the deploy config's `args`
    leave autoscaling and GPUs to its `deployments:` entry, which only `serve deploy` applies."""
    from types import SimpleNamespace

    from ray import serve as ray_serve

    import rayformers.cluster
    from rayformers.config import AutoscalingConfig, ClusterConfig
    from rayformers.serving import server

    args = AppArgs(
        name="pair",
        checkpoint=str(tiny_checkpoint("text-classification")),
        autoscaling=AutoscalingConfig(min_replicas=2, max_replicas=3),
        num_gpus=0.25,
    )
    deployed: list = []
    session = SimpleNamespace(owned=True, address=None, close=lambda: None)
    monkeypatch.setattr(rayformers.cluster, "connect", lambda cluster: session)
    monkeypatch.setattr(ray_serve, "start", lambda **kwargs: None)
    monkeypatch.setattr(ray_serve, "status", lambda: SimpleNamespace(applications={}))
    monkeypatch.setattr(ray_serve, "run_many", lambda targets, **kwargs: deployed.extend(targets))
    monkeypatch.setattr(server, "_wait_until_running", lambda *a, **k: None)
    server.deploy(ServeConfig(port=8123), [args], ClusterConfig(), progress=lambda line: None)
    model = model_deployment(next(t.target for t in deployed if t.name == "pair"))
    assert model._deployment_config.autoscaling_config.min_replicas == 2
    assert model._deployment_config.autoscaling_config.max_replicas == 3
    assert model.ray_actor_options["num_gpus"] == 0.25
