"""The model card every checkpoint carries follows the Hub's model card spec (issue 13): huggingface_hub
reads its metadata back, `model-index` as evaluation results, and it has the course's sections."""

from __future__ import annotations

from huggingface_hub import ModelCard, ModelCardData

from rayformers.config import RunConfig
from rayformers.manifest import CheckpointManifest, LabelMap, PreprocessSettings
from rayformers.training.card import merged_card, model_card

SECTIONS = [
    "## Model description",
    "## Intended uses and limitations",
    "## How to use",
    "## Training data",
    "## Training procedure",
    "## Evaluation results",
]


def _manifest(base: str, method: str = "lora") -> CheckpointManifest:
    settings = PreprocessSettings(
        task="text-classification", max_length=128, labels=LabelMap(names=["negative", "positive"])
    )
    return CheckpointManifest(
        task="text-classification", method=method, base_model=base, architecture="bert",
        auto_model="AutoModelForSequenceClassification", preprocessing=settings, data_fingerprint="abc",
        metrics={"accuracy": 0.9125, "f1": 0.875, "train_loss": 0.21}, step=120, epoch=2,
    )  # fmt: skip


def _run(**model) -> RunConfig:
    return RunConfig.model_validate(
        {
            "data": {
                "train": {"hub": "stanfordnlp/sst2", "split": "train"},
                "validation": {"hub": "stanfordnlp/sst2", "split": "validation"},
            },
            "model": {
                "task": "text-classification",
                "method": "lora",
                **(model or {"name": "bert-base-uncased"}),
            },
            "train": {"name": "sst2-lora"},
        }
    )


def test_a_cards_metadata_reads_back_as_the_hub_reads_it():
    text = model_card(
        _manifest("bert-base-uncased"), _run(), {"learning_rate": 5e-5, "storage_path": "s3://team-bucket"}
    )
    card = ModelCard(text)
    data = card.data
    assert data.base_model == "bert-base-uncased" and data.datasets == ["stanfordnlp/sst2"]
    assert data.pipeline_tag == "text-classification" and data.library_name == "peft"
    assert data.model_name == "sst2-lora" and "rayformers" in data.tags
    results = {(r.metric_type, r.metric_value, r.dataset_type, r.dataset_split) for r in data.eval_results}
    assert results == {
        ("accuracy", 0.9125, "stanfordnlp/sst2", "validation"),
        ("f1", 0.875, "stanfordnlp/sst2", "validation"),
    }
    assert all(r.task_type == "text-classification" for r in data.eval_results)
    # The metadata round-trips through huggingface_hub's own model: what the Hub validates.
    again = ModelCardData(**data.to_dict())
    assert [r.metric_value for r in again.eval_results] == [0.9125, 0.875]
    positions = [card.text.index(s) for s in SECTIONS]
    assert positions == sorted(positions)
    assert "learning_rate" in card.text and "| accuracy | 0.9125 |" in card.text
    # The training loss is no evaluation result, and where the team stores its runs stays private.
    assert "train_loss" not in card.text and "team-bucket" not in card.text


def test_language_and_license_come_from_a_base_whose_card_is_on_disk_never_guessed(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    ModelCard("---\nlicense: apache-2.0\nlanguage: [en, fr]\n---\n# base\n").save(base / "README.md")
    data = ModelCard(model_card(_manifest(str(base)), _run(name=str(base)), {})).data
    assert data.license == "apache-2.0" and data.language == ["en", "fr"]
    assert data.base_model is None  # a local directory is no Hub id
    unknown = ModelCard(model_card(_manifest("bert-base-uncased"), _run(), {})).data
    assert unknown.license is None and unknown.language is None


def test_a_run_from_scratch_or_without_metrics_still_gives_a_valid_card():
    scratch = _run(from_scratch={"architecture": "bert", "tokenizer": "data/samples/tokenizers/wordpiece"})
    manifest = _manifest("bert", method="full").model_copy(update={"metrics": {"train_loss": 0.3}})
    data = ModelCard(model_card(manifest, scratch, {})).data
    assert data.base_model is None and data.eval_results is None and data.library_name == "transformers"


def test_a_merged_export_is_a_plain_transformers_model():
    merged = ModelCard(merged_card(model_card(_manifest("bert-base-uncased"), _run(), {})))
    assert merged.data.library_name == "transformers" and "merged-lora" in merged.data.tags
    assert len(merged.data.eval_results) == 2 and "merged into the base weights" in merged.text
