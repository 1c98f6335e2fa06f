"""Loading checkpoints for serving: manifests, plain Hugging Face directories, dtypes, LoRA adapters."""

from __future__ import annotations

import json
import pickle
import shutil
import time
from pathlib import Path

import pytest
import torch

from rayformers.errors import UserError
from rayformers.serving.checkpoint import load_checkpoint, resolve_dtype
from rayformers.serving.errors import CheckpointError, InputError, ServingError, UnknownAdapterError
from rayformers.tasks.checkpoint import MANIFEST, read_manifest
from tests.checkpoint_factory import make_checkpoint

BATCH = {"text": ["the movie was great", "a bad dog sat on the mat"]}


def _logits(loaded, adapter=None) -> torch.Tensor:
    encoded = loaded.tokenizer(BATCH["text"], padding=True, return_tensors="pt")
    with loaded.using(adapter), torch.inference_mode():
        return loaded.model(**encoded).logits


def test_factory_writes_the_training_layout_quickly(tmp_path):
    full = make_checkpoint("text-classification", tmp_path / "full")  # pays the one-time imports
    started = time.monotonic()
    lora = make_checkpoint("token-classification", tmp_path / "lora", method="lora")
    assert time.monotonic() - started < 2.0  # typically ~0.1 s: integration tests make one per task
    common = {
        "README.md",
        MANIFEST,
        "tokenizer.json",
        "tokenizer_config.json",
        "training_state.pt",
    }
    assert {p.name for p in full.iterdir()} == common | {"config.json", "model.safetensors"}
    assert {p.name for p in lora.iterdir()} == common | {
        "adapter_config.json",
        "adapter_model.safetensors",
        "base_model",
    }
    assert {p.name for p in (lora / "base_model").iterdir()} == {
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
    }  # fmt: skip
    manifest = read_manifest(lora)
    assert (manifest.method, manifest.base_model, manifest.task) == (
        "lora",
        "base_model",
        "token-classification",
    )
    assert "B-PER" in manifest.preprocessing.labels.names


def test_full_checkpoint_loads_in_eval_mode_with_the_manifest(tiny_checkpoint):
    loaded = load_checkpoint(str(tiny_checkpoint("text-classification")))
    assert loaded.task.name == "text-classification" and not loaded.model.training
    assert loaded.settings == loaded.manifest.preprocessing
    assert loaded.adapter_names == [] and loaded.dtype == torch.float32
    info = loaded.info()
    assert info["labels"] == ["negative", "positive"] and info["method"] == "full"
    assert info["max_length"] == loaded.settings.max_length and info["adapters"] == []
    assert json.dumps(info)  # the /info route returns it as is


def test_task_that_disagrees_with_the_manifest_is_refused(tiny_checkpoint):
    with pytest.raises(CheckpointError, match=r"'text-classification'.*'token-classification'"):
        load_checkpoint(str(tiny_checkpoint("text-classification")), "token-classification")
    with pytest.raises(CheckpointError, match="unknown"):
        load_checkpoint(str(tiny_checkpoint("text-classification")), "sentiment")


def test_plain_hugging_face_directory_needs_the_task(tiny_checkpoint, tmp_path):
    plain = tmp_path / "plain"
    shutil.copytree(tiny_checkpoint("text-classification"), plain)
    (plain / MANIFEST).unlink()
    with pytest.raises(CheckpointError, match="pass the task"):
        load_checkpoint(str(plain))
    loaded = load_checkpoint(str(plain), "text-classification")
    assert loaded.manifest is None
    # min(tokenizer.model_max_length = 512, config.max_position_embeddings = 128)
    assert loaded.settings.max_length == 128
    assert loaded.settings.labels.names == ["negative", "positive"]
    assert loaded.info()["method"] == "full"


def test_lora_adapter_without_a_manifest_is_refused(tiny_checkpoint, tmp_path):
    bare = tmp_path / "bare-adapter"
    shutil.copytree(tiny_checkpoint("text-classification", method="lora"), bare)
    (bare / MANIFEST).unlink()
    with pytest.raises(CheckpointError, match=r"LoRA adapter but no rayformers\.json"):
        load_checkpoint(str(bare), "text-classification")


def test_missing_directory_and_broken_manifest_are_clear(tmp_path, tiny_checkpoint):
    with pytest.raises(CheckpointError, match=r"nowhere.* is not a directory"):
        load_checkpoint(str(tmp_path / "nowhere"))
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint("fill-mask"), broken)
    (broken / MANIFEST).write_text('{"task": "fill-mask"}', encoding="utf-8")
    with pytest.raises(CheckpointError, match="not a valid checkpoint manifest"):
        load_checkpoint(str(broken))


@pytest.mark.parametrize(
    ("dtype", "device", "bf16", "expected"),
    [
        ("auto", "cpu", None, torch.float32),
        ("auto", "cuda", True, torch.bfloat16),
        ("auto", "cuda:1", False, torch.float16),
        ("float32", "cpu", None, torch.float32),
        ("float16", "cuda", False, torch.float16),
        ("bfloat16", "cuda", True, torch.bfloat16),
    ],
)
def test_resolve_dtype(dtype, device, bf16, expected):
    assert resolve_dtype(dtype, device, bf16) == expected


@pytest.mark.parametrize(
    ("dtype", "device", "bf16", "message"),
    [
        ("float16", "cpu", None, "half precision is for GPUs"),
        ("bfloat16", "cpu", None, "half precision is for GPUs"),
        ("bfloat16", "cuda", False, "does not support bfloat16"),
        ("fp8", "cpu", None, "use one of: auto, float32"),
    ],
)
def test_resolve_dtype_refuses(dtype, device, bf16, message):
    with pytest.raises(CheckpointError, match=message):
        resolve_dtype(dtype, device, bf16)


def test_half_precision_on_cpu_is_refused_at_load(tiny_checkpoint):
    with pytest.raises(CheckpointError, match="use dtype 'float32'"):
        load_checkpoint(str(tiny_checkpoint("text-classification")), dtype="bfloat16")


def test_lora_checkpoint_equals_its_merged_weights(tiny_checkpoint):
    path = str(tiny_checkpoint("text-classification", method="lora"))
    adapted = load_checkpoint(path)
    merged = load_checkpoint(path, merge_lora=True)
    assert adapted.adapter_names == ["default"] and merged.adapter_names == []
    assert merged.merged and type(merged.model).__name__ == "BertForSequenceClassification"
    torch.testing.assert_close(_logits(adapted), _logits(merged), atol=1e-4, rtol=0)


def test_lora_adapter_changes_the_base_model(tiny_checkpoint):
    path = tiny_checkpoint("text-classification", method="lora")
    loaded = load_checkpoint(str(path))
    with loaded.model.disable_adapter(), torch.inference_mode():
        base = loaded.model(**loaded.tokenizer(BATCH["text"], padding=True, return_tensors="pt")).logits
    assert not torch.allclose(base, _logits(loaded), atol=1e-3)


def test_two_adapters_on_one_base_give_different_outputs(tiny_checkpoint):
    first = tiny_checkpoint("text-classification", method="lora", adapter_seed=1)
    second = tiny_checkpoint("text-classification", method="lora", adapter_seed=2)
    loaded = load_checkpoint(str(first), adapters={"other": str(second)})
    assert loaded.adapter_names == ["default", "other"]
    own, other = _logits(loaded), _logits(loaded, "other")
    assert not torch.allclose(own, other, atol=1e-3)
    # The extra adapter behaves as its own checkpoint does, and switching back restores the default.
    torch.testing.assert_close(other, _logits(load_checkpoint(str(second))), atol=1e-5, rtol=0)
    torch.testing.assert_close(_logits(loaded), own)
    torch.testing.assert_close(_logits(loaded, "default"), own)


def test_unknown_adapter_lists_the_known_ones(tiny_checkpoint):
    loaded = load_checkpoint(str(tiny_checkpoint("text-classification", method="lora")))
    with pytest.raises(UnknownAdapterError, match=r"'nope'.*'default'") as caught, loaded.using("nope"):
        pass
    assert caught.value.known == ["default"]
    full = load_checkpoint(str(tiny_checkpoint("text-classification")))
    with pytest.raises(UnknownAdapterError, match="none"), full.using("x"):
        pass
    with full.using(None):
        pass


def test_adapters_added_and_removed_at_run_time(tiny_checkpoint):
    loaded = load_checkpoint(str(tiny_checkpoint("text-classification", method="lora", adapter_seed=1)))
    other = tiny_checkpoint("text-classification", method="lora", adapter_seed=2)
    loaded.add_adapter("other", str(other))
    loaded.add_adapter("other", str(other))  # idempotent: a multiplexed replica may ask twice
    assert loaded.adapter_names == ["default", "other"] and not loaded.model.training
    with loaded.using("other"):
        assert loaded.model.active_adapter == "other"
    assert loaded.model.active_adapter == "default"
    loaded.remove_adapter("other")
    assert loaded.adapter_names == ["default"]
    with pytest.raises(UnknownAdapterError):
        _logits(loaded, "other")


def test_adapters_that_cannot_share_the_base_are_refused(tiny_checkpoint):
    lora = str(tiny_checkpoint("text-classification", method="lora"))
    with pytest.raises(CheckpointError, match="need a LoRA checkpoint"):
        load_checkpoint(str(tiny_checkpoint("text-classification")), adapters={"a": lora})
    with pytest.raises(CheckpointError, match="merge_lora"):
        load_checkpoint(lora, merge_lora=True, adapters={"a": lora})
    with pytest.raises(CheckpointError, match="its task is 'token-classification'"):
        load_checkpoint(lora, adapters={"a": str(tiny_checkpoint("token-classification", method="lora"))})
    with pytest.raises(CheckpointError, match="holds no LoRA adapter"):
        load_checkpoint(lora, adapters={"a": str(tiny_checkpoint("text-classification"))})
    for bad in ("default", "a.b", ""):
        with pytest.raises(CheckpointError, match="adapter name"):
            load_checkpoint(lora, adapters={bad: lora})


def test_lora_checkpoint_without_its_base_directory(tiny_checkpoint, tmp_path):
    broken = tmp_path / "no-base"
    shutil.copytree(tiny_checkpoint("fill-mask", method="lora"), broken)
    shutil.rmtree(broken / "base_model")
    with pytest.raises(CheckpointError, match=r"has no .*base_model directory"):
        load_checkpoint(str(broken))


def test_errors_keep_their_fields_across_processes():
    error = InputError("parameters.top_k", "must be positive")
    assert str(error) == "parameters.top_k: must be positive"
    again = pickle.loads(pickle.dumps(error))
    assert (again.field, again.message) == (error.field, error.message)
    unknown = pickle.loads(pickle.dumps(UnknownAdapterError("x", ["a", "b"])))
    assert unknown.known == ["a", "b"] and "'a', 'b'" in str(unknown)
    assert issubclass(UnknownAdapterError, ServingError)
    # What the CLI and the HTTP layer catch as the user's (or the client's) mistake, not a crash.
    assert all(issubclass(c, UserError) for c in (CheckpointError, InputError, UnknownAdapterError))


def test_package_exports_resolve_lazily():
    from rayformers import serving

    assert serving.load_checkpoint is load_checkpoint
    assert serving.InputError is InputError
    with pytest.raises(AttributeError):
        _ = serving.nothing_here


def test_checkpoint_path_is_a_path_or_str(tiny_checkpoint):
    path: Path = tiny_checkpoint("feature-extraction")
    assert load_checkpoint(str(path)).path == str(path)


def test_a_runs_best_on_an_object_store_is_the_checkpoint_its_summary_names(s3_uri):
    """Object stores have no links, so `<run>/best` (the default app's and the k8s configs' checkpoint)
    did not exist there; it is read from the run's summary.json, and before the run ends it is an error
    that says so."""
    import json

    from rayformers.data.storage import Location
    from rayformers.tasks.checkpoint import resolve_checkpoint

    run = Location.parse(s3_uri("runs/demo"))
    with pytest.raises(CheckpointError, match=r"no 'best' link.*has not finished"):
        resolve_checkpoint(str(run / "best"))
    best = str(run / "checkpoint_000040")
    (run / "summary.json").write_text(json.dumps({"best_checkpoint": best}))
    assert resolve_checkpoint(str(run / "best")) == best
    assert resolve_checkpoint(best) == best  # anything else is itself
    assert resolve_checkpoint("/local/run/best") == "/local/run/best"  # a local `best` is a link
