"""Ray Train end to end on 2 CPU workers: the shipped sentiment configs, full and LoRA, reach 0.9
accuracy and leave checkpoints that Hugging Face tools load as they load any model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rayformers.loading import load_config
from rayformers.training.trainer import ResourceError, run_training

pytestmark = pytest.mark.usefixtures("ray_cluster")
REPO = Path(__file__).resolve().parents[2]
VALIDATION = [
    json.loads(line) for line in (REPO / "data/samples/sentiment/validation.jsonl").read_text().splitlines()
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, ray_cluster):
    storage = tmp_path_factory.mktemp("runs")
    results = {}
    for method in ("full", "lora"):
        cfg = load_config(
            REPO / f"configs/text-classification/{method}.yaml", [f"train.storage_path={storage}"]
        )
        results[method] = run_training(cfg)
    return results


def test_both_methods_reach_090_accuracy(runs):
    for method, result in runs.items():
        assert result.best_metrics["accuracy"] >= 0.9, (method, result.best_metrics)
        summary = json.loads(Path(result.summary_path).read_text())
        assert summary["best_checkpoint"] == result.best_checkpoint
        assert [h["step"] for h in summary["history"]] == sorted(h["step"] for h in summary["history"])
        assert len(summary["history"]) == summary["config"]["train"]["epochs"]
        assert (Path(result.summary_path).parent / "best").resolve() == Path(result.best_checkpoint).resolve()
        timing, train = summary["timing"], summary["config"]["train"]
        stages = ["ray_started", "data_ready", "trainer_started", "workers_started", "model_ready",
                  "first_batch", "first_step"]  # fmt: skip
        assert list(timing["stages_s"]) == stages, timing["stages_s"]  # in the order they happened
        assert 0 < timing["first_step_s"] == timing["stages_s"]["first_step"] <= timing["step_ends_s"][0]
        steps = summary["history"][-1]["step"]
        assert len(timing["step_ends_s"]) == steps and timing["step_ends_s"] == sorted(timing["step_ends_s"])
        assert sum(timing["step_rows"]) == steps * train["batch_size"] * train["num_workers"]
        assert timing["torch_threads"] == int(train["cpus_per_worker"])


def test_each_run_writes_its_tensorboard_events_to_a_folder_of_its_own(runs):
    # Both runs of the module share no name, but each name's folder holds one attempt's folder.
    for result in runs.values():
        attempts = [p for p in (Path(result.summary_path).parent / "tensorboard").iterdir()]
        assert len(attempts) == 1 and attempts[0].is_dir()
        assert list(attempts[0].glob("events.out.tfevents.*"))


def test_checkpoint_files_are_exactly_these(runs):
    full = {p.name for p in Path(runs["full"].best_checkpoint).iterdir()}
    assert full == {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                    "rayformers.json", "README.md", "training_state.pt"}  # fmt: skip
    lora = Path(runs["lora"].best_checkpoint)
    assert {p.name for p in lora.iterdir()} == {
        "adapter_config.json", "adapter_model.safetensors", "base_model", "tokenizer.json",
        "tokenizer_config.json", "rayformers.json", "README.md", "training_state.pt",
    }  # fmt: skip
    assert {p.name for p in (lora / "base_model").iterdir()} == {"config.json", "model.safetensors"}
    manifest = json.loads((lora / "rayformers.json").read_text())
    assert manifest["method"] == "lora" and manifest["base_model"] == "base_model"
    assert manifest["preprocessing"]["labels"]["names"] == ["negative", "positive"]


def test_full_checkpoint_loads_in_a_transformers_pipeline_with_the_same_predictions(runs):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    directory = runs["full"].best_checkpoint
    texts = [r["text"] for r in VALIDATION[:40]]
    classifier = pipeline("text-classification", model=directory, device="cpu")
    served = [p["label"] for p in classifier(texts)]
    tok, model = (
        AutoTokenizer.from_pretrained(directory),
        AutoModelForSequenceClassification.from_pretrained(directory),
    )
    with torch.no_grad():
        logits = model(**tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")).logits
    assert served == [model.config.id2label[i] for i in logits.argmax(-1).tolist()]
    assert sum(s == r["label"] for s, r in zip(served, VALIDATION[:40], strict=True)) >= 36


def test_lora_checkpoint_loads_with_peft_on_its_base(runs):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    directory = Path(runs["lora"].best_checkpoint)
    base = AutoModelForSequenceClassification.from_pretrained(directory / "base_model")
    model = PeftModel.from_pretrained(base, directory).eval()
    tok = AutoTokenizer.from_pretrained(directory)
    texts = [r["text"] for r in VALIDATION]
    with torch.no_grad():
        predicted = model(
            **tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
        ).logits.argmax(-1)
    names = ["negative", "positive"]
    accuracy = sum(names[p] == r["label"] for p, r in zip(predicted.tolist(), VALIDATION, strict=True)) / len(
        VALIDATION
    )
    assert accuracy >= 0.9


def test_too_many_workers_fail_at_once_saying_what_the_cluster_has():
    cfg = load_config(REPO / "configs/text-classification/full.yaml", ["train.num_workers=4"])
    with pytest.raises(ResourceError) as err:
        run_training(cfg)
    assert "4 workers x 1 CPU = 4 CPUs, the cluster has 2" in str(err.value)


def test_merged_lora_export_gives_the_same_logits_as_base_plus_adapter(runs, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rayformers.tasks.checkpoint import load_model, read_manifest
    from rayformers.training.export import ExportError, export_checkpoint

    checkpoint = Path(runs["lora"].best_checkpoint)
    out = Path(export_checkpoint(checkpoint, tmp_path / "merged", merge_lora=True))
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").exists()
    assert read_manifest(out).method == "full"
    tok = AutoTokenizer.from_pretrained(out)
    batch = tok([r["text"] for r in VALIDATION[:16]], padding=True, return_tensors="pt")
    with torch.no_grad():
        merged = AutoModelForSequenceClassification.from_pretrained(out).eval()(**batch).logits
        adapted = load_model(read_manifest(checkpoint), checkpoint)(**batch).logits
    assert torch.allclose(merged, adapted, atol=1e-4)
    plain = Path(export_checkpoint(Path(runs["full"].best_checkpoint), tmp_path / "plain"))
    assert "training_state.pt" not in {p.name for p in plain.iterdir()}
    with pytest.raises(ExportError, match="LoRA checkpoints only"):
        export_checkpoint(Path(runs["full"].best_checkpoint), tmp_path / "x", merge_lora=True)
