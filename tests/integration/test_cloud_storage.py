"""A run whose train.storage_path is s3:// (a local moto server): shards, checkpoints, summary and
TensorBoard events land in the bucket, the best checkpoint comes back as an s3:// URI, and serving
loads the model from that URI."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from rayformers.data.storage import Location
from rayformers.loading import load_config
from rayformers.training.trainer import run_training

pytestmark = pytest.mark.usefixtures("ray_cluster")
REPO = Path(__file__).resolve().parents[2]


def test_training_into_s3_and_serving_from_it(s3_uri, tmp_path):
    storage = s3_uri("runs")
    cfg = load_config(
        REPO / "configs/text-classification/lora.yaml",
        [
            f"train.storage_path={storage}",
            "train.name=cloud",
            "train.max_steps=6",
            "train.eval_every_steps=3",
        ],
    )
    result = run_training(cfg)

    best = result.best_checkpoint
    assert best.startswith("s3://") and "/runs/cloud/checkpoint_" in best
    assert best.split("?", 1)[1] == storage.split("?", 1)[1]  # the server options travel with the URI
    checkpoint = Location.parse(best)
    names = {i.base_name for i in checkpoint.fs.get_file_info(pafs.FileSelector(checkpoint.path))}
    assert {"adapter_model.safetensors", "rayformers.json", "base_model", "training_state.pt"} <= names

    run = Location.parse(storage) / "cloud"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_checkpoint"] == best
    assert [h["step"] for h in summary["history"]] == [3, 6]  # read back from the checkpoint's state
    assert (run / "tokenized" / "manifest.json").exists() and (run / "tokenized" / "train").exists()
    events = run.fs.get_file_info(pafs.FileSelector((run / "tensorboard").path, recursive=True))
    assert any("tfevents" in i.base_name for i in events)
    assert not Path("s3:").exists()  # nothing of it went to a local directory named after the scheme

    from rayformers.serving.app import task_of
    from rayformers.serving.args import AppArgs
    from rayformers.serving.checkpoint import load_checkpoint
    from rayformers.tasks.text_classification import TextClassificationHandler

    assert task_of(AppArgs(name="cloud", checkpoint=best)) == "text-classification"
    handler = TextClassificationHandler(load_checkpoint(best))
    out = handler.predict(["a wonderful, moving film"], {})
    assert out[0]["label"] in ("negative", "positive")
    # `<run>/best`, what the default app and the k8s configs serve, names it on an object store too
    # (which has no links): read from the run's summary.
    assert not (run / "best").exists()
    assert task_of(AppArgs(name="cloud", checkpoint=str(run / "best"))) == "text-classification"
    again = TextClassificationHandler(load_checkpoint(str(run / "best")))
    assert again.predict(["a wonderful, moving film"], {}) == out

    # `rayformers export` takes the s3:// checkpoint the run printed, to a local or an s3:// directory
    from rayformers.tasks.checkpoint import read_manifest
    from rayformers.training.export import export_checkpoint

    merged = Path(export_checkpoint(best, tmp_path / "merged", merge_lora=True))
    assert read_manifest(merged).method == "full" and (merged / "model.safetensors").exists()
    bucket, options = storage.split("?", 1)
    remote = Location.parse(export_checkpoint(best, f"{bucket}/exported?{options}"))
    assert (remote / "rayformers.json").exists() and (remote / "adapter_model.safetensors").exists()
    assert not (remote / "training_state.pt").exists()
