"""The driver's checks before a run, without starting Ray: resources, storage, and the autoscaler
request a joined cluster gets when it is short of workers."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
import ray.autoscaler.sdk

from rayformers.loading import load_config
from rayformers.training import trainer
from rayformers.training.trainer import ResourceError, check_resources, check_storage, run_training

REPO = Path(__file__).resolve().parents[3]


def config(*overrides: str):
    return load_config(REPO / "configs/text-classification/full.yaml", list(overrides))


def test_too_many_workers_say_what_the_cluster_has():
    with pytest.raises(
        ResourceError, match=r"4 workers x 1 CPU = 4 CPUs, the cluster has 2.*train.num_workers"
    ):
        check_resources(config("train.num_workers=4"), {"CPU": 2.0})
    with pytest.raises(ResourceError, match=r"2 GPUs, the cluster has 0"):
        check_resources(config("train.use_gpu=true"), {"CPU": 8.0})
    check_resources(config("train.use_gpu=true"), {"CPU": 8.0, "GPU": 2.0})


def test_multi_node_storage_must_be_shared():
    with pytest.raises(ResourceError, match=r"runs' is a local path, but the cluster has 2 nodes.*s3://"):
        check_storage(config("train.storage_path=runs"), alive_nodes=2)
    check_storage(config("train.storage_path=runs"), alive_nodes=1)
    check_storage(config("train.storage_path=s3://bucket/runs"), alive_nodes=3)
    check_storage(config("train.storage_path=/nfs/runs", "train.storage_is_shared=true"), alive_nodes=3)


def test_storage_that_cannot_be_written_fails_naming_the_field_before_any_worker_starts(
    tmp_path, monkeypatch
):
    """Issue 12: unwritable or full storage is a clear error at the start, not a failure (or a hang) at
    the first checkpoint."""
    import errno

    from rayformers.data.storage import Location

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ResourceError, match=r"train.storage_path: cannot write .*a-file.*free space"):
        trainer.writable_run_dir(config(f"train.storage_path={blocker}/runs"))

    def full(self, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Location, "write_text", full)
    with pytest.raises(ResourceError, match=r"No space left on device"):
        trainer.writable_run_dir(config(f"train.storage_path={tmp_path}/runs"))
    monkeypatch.undo()
    _, run_dir = trainer.writable_run_dir(config(f"train.storage_path={tmp_path}/runs"))
    assert Path(run_dir.path).is_dir() and list(Path(run_dir.path).iterdir()) == []


@pytest.fixture
def short_cluster(monkeypatch):
    """A cluster with 1 CPU; records autoscaler requests and whether the run itself started."""
    calls: dict[str, list] = {"requests": [], "runs": []}
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 1.0})
    monkeypatch.setattr(ray.autoscaler.sdk, "request_resources", lambda **kw: calls["requests"].append(kw))
    return calls


def test_a_joined_cluster_short_of_workers_asks_its_autoscaler_and_clears_the_request(
    short_cluster, monkeypatch
):
    def run(cfg):
        short_cluster["runs"].append(list(short_cluster["requests"]))
        return "result"

    monkeypatch.setattr(trainer, "_run", run)
    cfg = config(
        "cluster.address=auto", "train.num_workers=2", "train.use_gpu=true", "train.gpus_per_worker=0.5"
    )
    assert run_training(cfg) == "result"
    wanted = {"bundles": [{"CPU": 1.0, "GPU": 0.5}] * 2}
    assert short_cluster["runs"] == [[wanted]]  # the request stands while the run waits for its nodes
    assert short_cluster["requests"] == [wanted, {"bundles": []}]  # ... and is withdrawn after it


def test_the_request_is_withdrawn_when_the_run_fails(short_cluster, monkeypatch):
    def run(cfg):
        raise ResourceError("no nodes came")

    monkeypatch.setattr(trainer, "_run", run)
    with pytest.raises(ResourceError, match="no nodes came"):
        run_training(config("cluster.address=auto"))
    assert short_cluster["requests"][-1] == {"bundles": []}


def test_an_embedded_ray_short_of_workers_fails_at_once(short_cluster, monkeypatch):
    monkeypatch.setattr(trainer, "_run", lambda cfg: pytest.fail("must not start a run it cannot hold"))
    with pytest.raises(ResourceError, match="cannot hold the workers"):
        run_training(config())
    assert short_cluster["requests"] == []
