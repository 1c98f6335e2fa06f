"""`rayformers export --push-to-hub` (issue 13): with no network here, the test checks the folder it would
upload, and the calls it would make."""

from __future__ import annotations

from pathlib import Path

import pytest


class FakeHub:
    """Records what `HfApi` would be asked, and what the folder held at upload time."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.files: dict[str, bytes] = {}
        self.fail = fail

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, **kwargs):
        if self.fail is not None:
            raise self.fail
        self.calls.append(("upload_folder", kwargs))
        root = Path(kwargs["folder_path"])
        self.files = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_the_uploaded_folder_is_a_standalone_model_with_a_hub_card(tiny_checkpoint, tmp_path):
    from huggingface_hub import ModelCard
    from transformers import AutoModelForSequenceClassification

    from rayformers.training.export import push_to_hub

    hub = FakeHub()
    checkpoint = tiny_checkpoint("text-classification", method="lora", adapter_seed=1)
    url = push_to_hub(
        str(checkpoint), "team/sentiment", merge_lora=True, private=True, out=tmp_path / "kept", api=hub
    )
    assert url == "https://huggingface.co/team/sentiment"
    assert hub.calls[0] == (
        "create_repo",
        {"repo_id": "team/sentiment", "repo_type": "model", "private": True, "exist_ok": True},
    )
    assert hub.calls[1][1]["repo_id"] == "team/sentiment" and hub.calls[1][1]["repo_type"] == "model"
    assert {"config.json", "model.safetensors", "tokenizer.json", "rayformers.json", "README.md"} <= set(
        hub.files
    )
    assert "training_state.pt" not in hub.files and not any(f.startswith("base_model") for f in hub.files)
    card = ModelCard((tmp_path / "kept" / "README.md").read_text())
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-classification"
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "kept")  # loads without peft
    assert model.config.id2label


def test_an_adapter_on_its_own_embedded_base_needs_merging_and_a_hub_failure_names_the_repo(tiny_checkpoint):
    from rayformers.training.export import ExportError, push_to_hub

    lora = str(tiny_checkpoint("text-classification", method="lora", adapter_seed=1))
    with pytest.raises(ExportError, match="add --merge-lora"):
        push_to_hub(lora, "team/x", api=FakeHub())
    full = str(tiny_checkpoint("text-classification"))
    with pytest.raises(ExportError, match=r"'team/x'.*ConnectionError: no network.*HF_TOKEN"):
        push_to_hub(full, "team/x", api=FakeHub(fail=ConnectionError("no network")))
