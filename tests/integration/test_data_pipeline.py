"""The Ray Data pipeline on a real local Ray: every row arrives once, correctly tokenized; every
source format reads; bad input is named or counted, never dropped silently."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
from transformers import AutoTokenizer

from rayformers.config import DataConfig
from rayformers.data.pipeline import build_tokenized
from rayformers.data.rows import DataError
from tests.conftest import WORDPIECE_VOCAB

pytestmark = pytest.mark.usefixtures("ray_cluster")

WORDS = [w for w in WORDPIECE_VOCAB if w.isalpha()]


def data_config(train, validation=None, **kw):
    raw = {"train": {"path": str(train)}, "validation_fraction": 0.0, **kw}
    if validation is not None:
        raw["validation"] = {"path": str(validation)}
    return DataConfig.model_validate(raw)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def rows_of(dataset):
    return [
        r
        for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=2048)
        for r in batch.to_pylist()
    ]


def test_ten_thousand_rows_arrive_once_correctly_tokenized_on_two_actors(tmp_path, wordpiece_dir):
    rng = random.Random(7)
    rows = [
        {
            "text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) + f" {i % 97}",
            "label": rng.choice("ab"),
        }
        for i in range(10_000)
    ]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    cfg = data_config(train, concurrency=2, num_cpus_per_actor=0.5, batch_size=500, max_length=32)
    tokenized = build_tokenized(cfg, "text-classification", str(wordpiece_dir))
    out = rows_of(tokenized.train)
    assert len(out) == 10_000
    tok = AutoTokenizer.from_pretrained(wordpiece_dir)
    expected = tok([r["text"] for r in rows], truncation=True, max_length=32)["input_ids"]
    label2id = {"a": 0, "b": 1}
    want = Counter((tuple(ids), label2id[r["label"]]) for ids, r in zip(expected, rows, strict=True))
    got = Counter((tuple(r["input_ids"]), r["labels"]) for r in out)
    assert got == want
    assert tokenized.settings.labels.names == ["a", "b"]
    assert tokenized.bad_rows() == {"train": {"counts": {}, "examples": {}}}


def test_holdout_fraction_splits_train_without_overlap(tmp_path, wordpiece_dir):
    rows = [{"text": f"the cat sat {i}", "label": "a" if i % 2 else "b"} for i in range(600)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    cfg = DataConfig.model_validate({"train": {"path": str(train)}, "validation_fraction": 0.2, "seed": 1})
    tokenized = build_tokenized(cfg, "text-classification", str(wordpiece_dir))
    t, v = rows_of(tokenized.train), rows_of(tokenized.validation)
    assert len(t) + len(v) == 600 and 80 < len(v) < 160


def test_csv_parquet_text_and_json_array_sources(tmp_path, wordpiece_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"sentence": f"the movie was {'great' if i % 2 else 'bad'}", "y": i % 2} for i in range(50)]
    (tmp_path / "t.csv").write_text("sentence,y\n" + "".join(f'"{r["sentence"]}",{r["y"]}\n' for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    (tmp_path / "t.json").write_text(json.dumps(rows))
    for name in ("t.csv", "t.parquet", "t.json"):
        cfg = data_config(tmp_path / name, columns={"text": "sentence", "label": "y"})
        tokenized = build_tokenized(cfg, "text-classification", str(wordpiece_dir))
        out = rows_of(tokenized.train)
        assert len(out) == 50, name
        assert tokenized.settings.labels.names == ["0", "1"], name
        assert Counter(r["labels"] for r in out) == {0: 25, 1: 25}, name
        assert {tuple(r["input_ids"]) for r in out} == {(2, 5, 6, 7, 8, 3), (2, 5, 6, 7, 9, 3)}, name
    (tmp_path / "corpus.txt").write_text("the cat sat\n\nthe dog sat\n")
    tokenized = build_tokenized(data_config(tmp_path / "corpus.txt"), "fill-mask", str(wordpiece_dir))
    assert sorted(tuple(r["input_ids"]) for r in rows_of(tokenized.train)) == [
        (2, 5, 24, 25, 3),
        (2, 5, 28, 25, 3),
    ]


def test_hub_dataset_directory_with_class_labels(tmp_path, wordpiece_dir):
    import datasets

    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    ds = datasets.Dataset.from_dict(
        {"text": ["the movie was great", "the movie was bad"] * 10, "label": [1, 0] * 10}, features=features
    )
    datasets.DatasetDict({"train": ds, "validation": ds.select(range(4))}).save_to_disk(tmp_path / "hub")
    cfg = DataConfig.model_validate(
        {
            "train": {"hub": str(tmp_path / "hub")},
            "validation": {"hub": str(tmp_path / "hub"), "split": "validation"},
        }
    )
    tokenized = build_tokenized(cfg, "text-classification", str(wordpiece_dir))
    assert tokenized.settings.labels.names == ["neg", "pos"]
    out = rows_of(tokenized.train)
    assert {(tuple(r["input_ids"]), r["labels"]) for r in out} == {
        ((2, 5, 6, 7, 8, 3), 1),
        ((2, 5, 6, 7, 9, 3), 0),
    }
    assert len(rows_of(tokenized.validation)) == 4


def user_error(exc):
    from rayformers.cli.main import _user_error

    found = _user_error(exc)
    assert found is not None, f"no DataError inside {exc!r}"
    return str(found)


def test_missing_column_is_named_with_the_available_ones(tmp_path, wordpiece_dir):
    train = write_jsonl(tmp_path / "train.jsonl", [{"sentence": "the cat", "label": "a"}])
    with pytest.raises(Exception) as err:
        build_tokenized(data_config(train), "text-classification", str(wordpiece_dir))
    message = user_error(err.value)
    assert "'text'" in message and "label, sentence" in message and "data.columns.text" in message


def test_missing_file(tmp_path, wordpiece_dir):
    with pytest.raises(DataError, match="does not exist"):
        build_tokenized(data_config(tmp_path / "nope.jsonl"), "text-classification", str(wordpiece_dir))


def test_validation_label_unseen_in_training_fails_or_is_counted(tmp_path, wordpiece_dir):
    train = write_jsonl(
        tmp_path / "train.jsonl", [{"text": "the cat", "label": "a"}, {"text": "the dog", "label": "b"}]
    )
    val = write_jsonl(
        tmp_path / "val.jsonl", [{"text": "the cat", "label": "a"}, {"text": "a mat", "label": "c"}]
    )
    tokenized = build_tokenized(data_config(train, val), "text-classification", str(wordpiece_dir))
    with pytest.raises(Exception) as err:
        rows_of(tokenized.validation)
    message = user_error(err.value)
    assert "unknown label" in message and "'c'" in message and "val.jsonl:2" in message
    del err  # its traceback holds the failed pipeline, and with it the actors' CPUs
    skipping = build_tokenized(
        data_config(train, val, on_bad_rows="skip"), "text-classification", str(wordpiece_dir)
    )
    assert len(rows_of(skipping.validation)) == 1
    assert skipping.bad_rows()["validation"]["counts"] == {"unknown label": 1}


def test_malformed_json_and_undecodable_bytes_are_counted_when_skipping(tmp_path, wordpiece_dir):
    train = tmp_path / "train.jsonl"
    train.write_bytes(
        b'{"text": "the cat", "label": "a"}\n{"text": "the\n\xff\xfe{"text": "bad", "label": "b"}\n'
        b'{"text": "the dog", "label": "b"}\n{"text": null, "label": "a"}\n'
    )
    tokenized = build_tokenized(
        data_config(train, on_bad_rows="skip"), "text-classification", str(wordpiece_dir)
    )
    assert len(rows_of(tokenized.train)) == 2
    assert tokenized.bad_rows()["train"]["counts"] == {
        "malformed JSON": 1,
        "undecodable bytes": 1,
        "missing text": 1,
    }
    with pytest.raises(Exception) as err:
        rows_of(build_tokenized(data_config(train), "text-classification", str(wordpiece_dir)).train)
    assert "malformed JSON" in user_error(err.value) and "train.jsonl:2" in user_error(err.value)


def test_empty_after_filtering_is_an_error(tmp_path, wordpiece_dir):
    from rayformers.data.preview import preview

    train = write_jsonl(
        tmp_path / "train.jsonl", [{"text": "", "label": "a"}, {"text": "the cat", "label": None}]
    )
    cfg = data_config(train, on_bad_rows="skip", labels=["a"])
    with pytest.raises(DataError, match="no rows are left"):
        preview(build_tokenized(cfg, "text-classification", str(wordpiece_dir)))


def test_tokenize_writes_shards_that_later_runs_reuse(tmp_path, wordpiece_dir, wordlevel_dir):
    from rayformers.data.shards import read_manifest, write_tokenized
    from rayformers.data.storage import Location

    train = write_jsonl(
        tmp_path / "train.jsonl", [{"text": f"the cat sat {i}", "label": "ab"[i % 2]} for i in range(40)]
    )
    cfg = data_config(train, max_length=16)
    write_tokenized(build_tokenized(cfg, "text-classification", str(wordpiece_dir)), cfg, tmp_path / "out")
    manifest = read_manifest(Location.parse(tmp_path / "out"))
    assert manifest.splits["train"].rows == 40 and manifest.preprocessing.labels.names == ["a", "b"]
    assert manifest.preprocessing.max_length == 16 and len(manifest.tokenizer_hash) == 64
    reuse = cfg.model_copy(update={"tokenized": str(tmp_path / "out")})
    again = build_tokenized(reuse, "text-classification", str(wordpiece_dir))
    assert sorted(map(tuple, (r["input_ids"] for r in rows_of(again.train)))) == sorted(
        map(
            tuple,
            (
                r["input_ids"]
                for r in rows_of(build_tokenized(cfg, "text-classification", str(wordpiece_dir)).train)
            ),
        )
    )
    with pytest.raises(DataError, match="max_length: shards have 16, config asks 32"):
        build_tokenized(
            reuse.model_copy(update={"max_length": 32}), "text-classification", str(wordpiece_dir)
        )
    with pytest.raises(DataError, match="different tokenizer"):
        build_tokenized(reuse, "text-classification", str(wordlevel_dir))


def test_reused_shards_check_the_tokenizer_at_the_configured_revision(tmp_path, wordpiece_dir, monkeypatch):
    """A tokenizer pinned to a revision (or with remote code) is checked as pinned, and one the caller
    loaded already is used, not loaded again."""
    from rayformers.data import shards
    from rayformers.data.shards import write_tokenized
    from rayformers.data.tokenizer import load_tokenizer

    train = write_jsonl(
        tmp_path / "train.jsonl", [{"text": f"the cat {i}", "label": "ab"[i % 2]} for i in range(8)]
    )
    cfg = data_config(train, max_length=16)
    write_tokenized(build_tokenized(cfg, "text-classification", str(wordpiece_dir)), cfg, tmp_path / "out")
    reuse = cfg.model_copy(update={"tokenized": str(tmp_path / "out")})
    calls = []

    def recording(source, task, **kwargs):
        calls.append(kwargs)
        return load_tokenizer(source, task)

    monkeypatch.setattr(shards, "load_tokenizer", recording)
    build_tokenized(reuse, "text-classification", str(wordpiece_dir), revision="v1", trust_remote_code=True)
    assert calls == [{"revision": "v1", "trust_remote_code": True}]
    loaded = load_tokenizer(str(wordpiece_dir), "text-classification")
    again = build_tokenized(reuse, "text-classification", str(wordpiece_dir), tokenizer=loaded)
    assert len(calls) == 1 and again.tokenizer is loaded


def test_a_label_sorted_source_is_written_globally_shuffled(tmp_path, wordpiece_dir):
    import pyarrow.parquet as pq

    from rayformers.data.shards import write_tokenized

    rows = [{"text": f"the cat sat {i}", "label": "a" if i < 300 else "b"} for i in range(600)]  # sorted
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    orders = {}
    for name, shuffle, seed in (
        ("shuffled", True, 42),
        ("again", True, 42),
        ("seed 7", True, 7),
        ("off", False, 42),
    ):
        cfg = data_config(train, max_length=16, shuffle=shuffle, seed=seed)
        out = tmp_path / f"out-{name}"
        write_tokenized(build_tokenized(cfg, "text-classification", str(wordpiece_dir)), cfg, out)
        files = sorted((out / "train").glob("*.parquet"))
        orders[name] = [
            int(x) for f in files for x in pq.read_table(f, columns=["labels"])["labels"].to_pylist()
        ]
    assert sorted(orders["shuffled"]) == sorted(orders["off"]) == [0] * 300 + [1] * 300
    assert orders["off"] == [0] * 300 + [1] * 300  # unshuffled: the source's order
    # data.seed is the shuffle's seed: the same seed writes the same order, another seed another one.
    assert orders["again"] == orders["shuffled"]
    assert orders["seed 7"] != orders["shuffled"] and sorted(orders["seed 7"]) == sorted(orders["shuffled"])
    first = orders["shuffled"][:64]  # the first batch a worker would read
    assert 16 <= sum(first) <= 48  # both labels, near half each
