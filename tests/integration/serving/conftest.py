"""One Serve deployment for every module in this folder (a package fixture): one app per task from tiny
checkpoints, plus apps set up for batching, adapters, small queues, autoscaling, a failing model and a
replica pair. Modules here run in name order; the destructive tests (a killed replica) run last, in
test_serving.py."""

from __future__ import annotations

import pytest

from rayformers.config import ClusterConfig, ServeAppConfig, ServeConfig
from tests.integration.serving.examples import EXAMPLES, broken_checkpoint, free_port


@pytest.fixture(scope="package")
def server(ray_cluster, tiny_checkpoint, tmp_path_factory):
    from rayformers.serving.app import checked
    from rayformers.serving.server import deploy

    small = {"num_cpus": 0.05}
    apps = [
        ServeAppConfig(name=app, checkpoint=str(tiny_checkpoint(task)), **small)
        for task, (app, _, _) in EXAMPLES.items()
        if app != "sentiment"
    ]
    apps += [
        ServeAppConfig(
            name="sentiment",
            checkpoint=str(tiny_checkpoint("text-classification")),
            max_batch_size=8,
            batch_wait_timeout_s=0.25,
            **small,
        ),
        ServeAppConfig(
            name="lora",
            checkpoint=str(tiny_checkpoint("text-classification", method="lora", adapter_seed=1)),
            adapters={
                "one": str(tiny_checkpoint("text-classification", method="lora", adapter_seed=1)),
                "two": str(tiny_checkpoint("text-classification", method="lora", adapter_seed=2)),
            },
            **small,
        ),
        # Small queues and few inputs per request.
        ServeAppConfig(
            name="busy",
            checkpoint=str(tiny_checkpoint("text-generation")),
            max_batch_size=1,
            max_ongoing_requests=1,
            max_queued_requests=1,
            max_inputs_per_request=4,
            **small,
        ),
        # Autoscaling with short delays; an unbounded queue, so all the load counts.
        ServeAppConfig(
            name="scaling",
            checkpoint=str(tiny_checkpoint("text-generation")),
            max_batch_size=1,
            max_ongoing_requests=2,
            max_queued_requests=-1,
            autoscaling={
                "min_replicas": 1,
                "max_replicas": 2,
                "target_ongoing_requests": 1,
                "upscale_delay_s": 0.5,
                "downscale_delay_s": 2,
                "look_back_period_s": 2,
            },
            **small,
        ),
        ServeAppConfig(
            name="broken", checkpoint=str(broken_checkpoint(tiny_checkpoint, tmp_path_factory)), **small
        ),
        # Two replicas, always: one is killed under load.
        ServeAppConfig(
            name="pair",
            checkpoint=str(tiny_checkpoint("text-classification")),
            autoscaling={"min_replicas": 2, "max_replicas": 2},
            **small,
        ),
    ]
    serve_cfg = ServeConfig(port=free_port(), max_body_bytes=20_000)
    served = deploy(serve_cfg, checked(serve_cfg, apps), ClusterConfig(), progress=lambda _: None)
    yield served.base
    served.shutdown()
