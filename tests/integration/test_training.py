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
        overrides = [f"train.storage_path={storage}"]
        if method == "full":  # the full run also logs to a local MLflow store
            overrides.append(f"train.tracking.mlflow=file:{storage / 'mlruns'}")
        cfg = load_config(REPO / f"configs/text-classification/{method}.yaml", overrides)
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


def test_the_tracked_run_reads_back_from_its_mlflow_store_as_its_summary_reports_it(runs, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads its file store only when told
    result = runs["full"]
    summary = json.loads(Path(result.summary_path).read_text())
    run_dir = Path(result.summary_path).parent
    store = MlflowClient(tracking_uri=summary["config"]["train"]["tracking"]["mlflow"])
    experiment = store.get_experiment_by_name(run_dir.name)  # named after the run
    [tracked] = store.search_runs([experiment.experiment_id])
    assert tracked.info.status == "FINISHED" and tracked.info.run_name == run_dir.name
    assert Path(tracked.data.tags["rayformers.run_dir"]) == run_dir
    train, params = summary["config"]["train"], tracked.data.params
    assert params["task"] == "text-classification" and params["method"] == "full"
    model = summary["config"]["model"]
    assert params["model"] == (model["name"] or model["from_scratch"]["architecture"])
    assert float(params["learning_rate"]) == train["learning_rate"]
    assert int(params["batch_size"]) == train["batch_size"] and int(params["epochs"]) == train["epochs"]
    assert int(params["num_workers"]) == train["num_workers"]

    def logged(key: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in store.get_metric_history(tracked.info.run_id, key)]

    # Every evaluation the summary holds, at its step, with its value; no other.
    evaluated = {key for entry in summary["history"] for key in entry if key not in ("step", "epoch")}
    assert evaluated >= {"accuracy", "train_loss"}
    for key in evaluated:
        expected = [(int(h["step"]), h[key]) for h in summary["history"] if key in h]
        got = logged(f"eval/{key}")
        assert [step for step, _ in got] == [step for step, _ in expected], key
        assert [value for _, value in got] == pytest.approx([value for _, value in expected]), key
    last = int(summary["history"][-1]["step"])
    for key in ("train/loss", "train/learning_rate", "train/samples_per_s", "train/tokens_per_s"):
        points = logged(key)
        assert points and points[-1][0] == last, key  # logged at the progress interval and the last step
    assert all(loss > 0 for _, loss in logged("train/loss"))
    # The driver's word on the best checkpoint, which only it knows, and that checkpoint's metrics.
    assert tracked.data.tags["rayformers.best_checkpoint"] == summary["best_checkpoint"]
    best = {
        k: v
        for k, v in summary["best_metrics"].items()
        if isinstance(v, (int, float)) and k not in ("step", "epoch")
    }
    assert best and {k: tracked.data.metrics[f"best/{k}"] for k in best} == pytest.approx(best)


def test_the_run_history_lists_the_runs_this_suite_just_made(runs):
    """Issue 13: `rayformers runs list` reads the summaries these runs wrote."""
    from rayformers.training.runs import list_runs

    storage = Path(runs["full"].summary_path).parent.parent
    listed = {r.name: r for r in list_runs(str(storage))}
    for method, result in runs.items():
        record = listed[f"text-classification-{method}"]
        assert (
            record.status == "finished" and record.method == method and record.task == "text-classification"
        )
        assert record.best_checkpoint == result.best_checkpoint and record.metric == "accuracy"
        assert record.best_value == result.best_metrics["accuracy"] and record.duration_s > 0


def test_evaluate_matches_the_training_time_evaluation_of_the_same_split(runs):
    """Issue 13: `rayformers evaluate CHECKPOINT --data PATH`, as the course's trainer.evaluate, gives the
    metrics training recorded for its best checkpoint on the same validation file."""
    from rayformers.training.scoring import evaluate_checkpoint

    for result in runs.values():
        metrics = evaluate_checkpoint(
            result.best_checkpoint, str(REPO / "data/samples/sentiment/validation.jsonl")
        )
        assert metrics["accuracy"] == pytest.approx(result.best_metrics["accuracy"], abs=1e-9)
        assert metrics["loss"] == pytest.approx(result.best_metrics["loss"], rel=1e-4)


def test_checkpoint_files_are_exactly_these(runs):
    full = {p.name for p in Path(runs["full"].best_checkpoint).iterdir()}
    assert full == {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                    "rayformers.json", "README.md", "training_state.pt"}  # fmt: skip
    lora = Path(runs["lora"].best_checkpoint)
    assert {p.name for p in lora.iterdir()} == {
        "adapter_config.json", "adapter_model.safetensors", "base_model", "tokenizer.json",
        "tokenizer_config.json", "rayformers.json", "README.md", "training_state.pt",
    }  # fmt: skip
    assert {p.name for p in (lora / "base_model").iterdir()} == {
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
    }  # fmt: skip
    manifest = json.loads((lora / "rayformers.json").read_text())
    assert manifest["method"] == "lora" and manifest["base_model"] == "base_model"
    assert manifest["preprocessing"]["labels"]["names"] == ["negative", "positive"]
    # The model card is the Hub's: its model-index reads back as the checkpoint's evaluation metrics
    # (the training loss is no evaluation result).
    from huggingface_hub import ModelCard

    for result in runs.values():
        checkpoint = Path(result.best_checkpoint)
        card = ModelCard.load(checkpoint / "README.md")
        recorded = json.loads((checkpoint / "rayformers.json").read_text())["metrics"]
        recorded = {k: v for k, v in recorded.items() if k != "train_loss"}
        assert "accuracy" in recorded
        assert {r.metric_type: r.metric_value for r in card.data.eval_results} == recorded
        assert (
            card.data.pipeline_tag == "text-classification"
            and "## Intended uses and limitations" in card.text
        )


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
    # transformers' own PEFT loading finds the base the adapter config names, with the run's labels.
    from transformers import pipeline

    served = [p["label"] for p in pipeline("text-classification", model=str(directory))(texts[:20])]
    assert served == [names[p] for p in predicted[:20].tolist()]


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


@pytest.fixture(scope="module")
def pretrained_lora(runs, tmp_path_factory):
    """A LoRA run over a pretrained classifier as the hub has them: the full run's model saved with
    save_pretrained under its own placeholder labels (LABEL_0, LABEL_1), as a user's hub checkpoint."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    hub = tmp_path_factory.mktemp("hub") / "pretrained-classifier"
    model = AutoModelForSequenceClassification.from_pretrained(runs["full"].best_checkpoint)
    model.config.id2label, model.config.label2id = {0: "LABEL_0", 1: "LABEL_1"}, {"LABEL_0": 0, "LABEL_1": 1}
    model.save_pretrained(hub)
    AutoTokenizer.from_pretrained(runs["full"].best_checkpoint).save_pretrained(hub)
    cfg = load_config(
        REPO / "configs/text-classification/lora.yaml",
        [f"train.storage_path={tmp_path_factory.mktemp('runs')}", "train.epochs=1", "train.name=pretrained",
         "model.from_scratch=null", f"model.name={hub}", "model.lora.target_modules=null"],
    )  # fmt: skip
    return run_training(cfg)


def test_a_lora_checkpoint_of_a_pretrained_classifier_answers_its_label_names_in_hugging_face_loaders(
    pretrained_lora, tmp_path
):
    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoTokenizer, pipeline

    from rayformers.tasks.checkpoint import load_model, read_manifest

    directory = Path(pretrained_lora.best_checkpoint)
    texts = [r["text"] for r in VALIDATION[:40]]
    ours = load_model(read_manifest(directory), directory)
    tok = AutoTokenizer.from_pretrained(directory)
    with torch.no_grad():
        logits = ours(**tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")).logits
    expected = [["negative", "positive"][i] for i in logits.argmax(-1).tolist()]
    assert sum(e == r["label"] for e, r in zip(expected, VALIDATION[:40], strict=True)) >= 36

    served = [p["label"] for p in pipeline("text-classification", model=str(directory), device="cpu")(texts)]
    assert served == expected
    peft_model = AutoPeftModelForSequenceClassification.from_pretrained(str(directory)).eval()
    assert peft_model.config.id2label == {0: "negative", 1: "positive"}
    with torch.no_grad():
        theirs = peft_model(
            **tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
        ).logits
    torch.testing.assert_close(theirs, logits)
    # The manifest still names the hub base (provenance and resume checks), the copy is the base used.
    assert read_manifest(directory).base_model.endswith("pretrained-classifier")
    assert json.loads((directory / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        directory.resolve() / "base_model"
    )

    # An exported copy names its own base, so it keeps working when the run's folder goes away.
    from rayformers.training.export import export_checkpoint

    out = Path(export_checkpoint(directory, tmp_path / "exported"))
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        out.resolve() / "base_model"
    )
    assert [
        p["label"] for p in pipeline("text-classification", model=str(out), device="cpu")(texts)
    ] == expected


def _one_epoch_accuracy(tmp_path: Path, rows: list[dict], name: str, *overrides: str) -> float:
    train = tmp_path / f"{name}.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(
        REPO / "configs/text-classification/full.yaml",
        [f"data.train.path={train}", f"train.storage_path={tmp_path / 'runs'}", f"train.name={name}",
         "train.epochs=1", "train.batch_size=16", "train.learning_rate=5e-3", *overrides],
    )  # fmt: skip
    return run_training(cfg).best_metrics["accuracy"]


def test_a_label_sorted_training_file_trains_as_well_as_shuffled_rows(tmp_path):
    """One worker (two would see both halves of a sorted file at once and average them away): the same
    1-epoch run on the rows sorted by label and on them in their shipped (shuffled) order. The control
    without the global shuffle shows what a label-sorted source (IMDB is one) did before: one class."""
    rows = [
        json.loads(line) for line in (REPO / "data/samples/sentiment/train.jsonl").read_text().splitlines()
    ]
    by_label = sorted(rows, key=lambda r: r["label"])
    shuffled = _one_epoch_accuracy(tmp_path, rows, "shuffled", "train.num_workers=1")
    sorted_rows = _one_epoch_accuracy(tmp_path, by_label, "sorted", "train.num_workers=1")
    unshuffled = _one_epoch_accuracy(
        tmp_path, by_label, "unshuffled", "train.num_workers=1", "data.shuffle=false"
    )
    assert shuffled >= 0.85, shuffled  # the task is learnable in one epoch
    assert sorted_rows >= shuffled - 0.03, (sorted_rows, shuffled)
    assert unshuffled <= 0.7, unshuffled  # the control: without the shuffle the run learns one class
