"""Batch inference without Ray: rows -> the task's inputs, positions and shards, the output directory's
resume bookkeeping, output encoding, and the checks `rayformers predict` makes before Ray starts."""

from __future__ import annotations

import json
import math
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from rayformers.config import SourceConfig
from rayformers.data.rows import DataError
from rayformers.serving.batch_inference import (
    ERROR,
    ID,
    OUTPUT,
    POSITION,
    SETTINGS_FILE,
    ActorPool,
    InputSchema,
    OutputDir,
    PredictError,
    Predictor,
    RowPositions,
    actor_pool,
    encode_output,
    jsonl_lines,
    plan_prediction,
    shard_name,
)
from rayformers.tasks import get_task


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --- rows -> inputs --------------------------------------------------------------------------------


def test_the_task_input_type_says_which_columns_are_read():
    pair = InputSchema.of(get_task("text-classification"))
    assert pair.text and pair.columns == ("text", "text_pair")
    assert pair.select({"text", "label"}) == ("text",)
    assert pair.select({"text", "text_pair", "other"}) == ("text", "text_pair")
    qa = InputSchema.of(get_task("question-answering"))
    assert not qa.text and qa.select({"question", "context", "id"}) == ("question", "context")
    rank = InputSchema.of(get_task("text-ranking"))
    assert rank.select({"query", "texts"}) == ("query", "texts")
    assert InputSchema.of(get_task("token-classification")).columns == ("text",)


def test_a_row_without_the_task_columns_is_refused_naming_them_and_the_flag():
    with pytest.raises(DataError) as err:
        InputSchema.of(get_task("question-answering")).select({"question", "passage"})
    message = str(err.value)
    assert "passage, question" in message and "'question' and 'context'" in message
    assert "--column" in message


def test_rows_become_strings_or_the_input_model_s_mapping():
    pair = InputSchema.of(get_task("text-classification"))
    batch = {"text": ["a", "b", None], "text_pair": [None, "c", None]}
    # A row whose second text is null is a single text, as training reads an optional text_pair.
    assert pair.inputs(batch, 3) == ["a", {"text": "b", "text_pair": "c"}, None]
    qa = InputSchema.of(get_task("question-answering"))
    assert qa.inputs({"question": ["q"], "context": ["c"]}, 1) == [{"question": "q", "context": "c"}]
    rank = InputSchema.of(get_task("text-ranking"))
    assert rank.inputs({"query": ["q"], "texts": [["x", "y"]]}, 1) == [{"query": "q", "texts": ["x", "y"]}]


# --- positions and shards --------------------------------------------------------------------------


def test_positions_count_across_blocks_and_skip_the_shards_already_done():
    counter = RowPositions(rows_per_shard=4, done=[1])
    first = counter(pa.table({"text": list("abcdef")}))
    second = counter(pa.table({"text": list("ghij")}))
    # Rows 4..7 are shard 1, written by an earlier run: dropped, but still counted.
    assert first.column(POSITION).to_pylist() == [0, 1, 2, 3]
    assert second.column(POSITION).to_pylist() == [8, 9]
    assert second.column("text").to_pylist() == ["i", "j"]
    fresh = RowPositions(rows_per_shard=4)
    assert fresh(pa.table({"text": list("abc")})).column(POSITION).to_pylist() == [0, 1, 2]


def _shard(positions, fmt="parquet"):
    return pa.table(
        {
            POSITION: pa.array(positions, pa.int64()),
            ID: pa.array(positions, pa.int64()),
            "text": [f"row {p}" for p in positions],
            OUTPUT: [encode_output({"label": "positive", "score": 0.1 + p}) for p in positions],
            ERROR: pa.array([None] * len(positions), pa.string()),
        }
    )


def test_a_shard_gets_its_final_name_only_when_written_and_a_rerun_finds_it(tmp_path):
    settings = {"checkpoint": "/c", "rows_per_shard": 2}
    out = OutputDir(str(tmp_path / "out"), "parquet")
    assert out.prepare(settings) == []
    out.write(0, _shard([0, 1]))
    out.write(2, _shard([4, 5]))
    # A temporary file a killed run left behind is not a finished shard.
    (tmp_path / "out" / f".{shard_name(1, 'parquet')}.tmp").write_bytes(b"partial")
    names = sorted(os.listdir(tmp_path / "out"))
    assert names == [".part-000001.parquet.tmp", SETTINGS_FILE, "part-000000.parquet", "part-000002.parquet"]
    again = OutputDir(str(tmp_path / "out"), "parquet")
    assert again.prepare(settings) == [0, 2]
    written = pq.read_table(tmp_path / "out" / "part-000002.parquet")
    assert POSITION not in written.column_names and written.column(ID).to_pylist() == [4, 5]
    assert json.loads(written.column(OUTPUT)[0].as_py()) == {"label": "positive", "score": 4.1}


def test_a_rerun_with_other_settings_or_a_foreign_directory_is_refused(tmp_path):
    out = OutputDir(str(tmp_path / "out"), "parquet")
    out.prepare({"checkpoint": "/c", "parameters": {}})
    with pytest.raises(PredictError, match=r"other settings \(parameters differ\).*new --output"):
        OutputDir(str(tmp_path / "out"), "parquet").prepare({"checkpoint": "/c", "parameters": {"top_k": 2}})
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("mine")
    with pytest.raises(PredictError, match=r"not empty.*new or empty directory"):
        OutputDir(str(tmp_path / "theirs"), "parquet").prepare({})


def test_finish_records_the_summary_beside_the_settings(tmp_path):
    out = OutputDir(str(tmp_path / "out"), "jsonl")
    out.prepare({"checkpoint": "/c"})
    out.finish({"rows": 3})
    recorded = json.loads((tmp_path / "out" / SETTINGS_FILE).read_text())
    assert recorded["settings"] == {"checkpoint": "/c"} and recorded["finished"] == {"rows": 3}


# --- output encoding -------------------------------------------------------------------------------


def test_outputs_round_trip_exactly_in_both_formats(tmp_path):
    output = [{"entity": "PER", "score": 0.1 + 0.2, "word": "Ünïcode", "start": 0}, [1e-300, -0.0]]
    text = encode_output(output)
    assert json.loads(text) == output and "Ünïcode" in text  # as serving's JSONResponse writes it
    table = pa.table(
        {
            POSITION: [0, 1],
            ID: [0, 1],
            "text": ["x", ""],
            OUTPUT: pa.array([text, None], pa.string()),
            ERROR: pa.array([None, "text: an empty text"], pa.string()),
        }
    )
    first, second = (json.loads(line) for line in jsonl_lines(table))
    assert first == {"id": 0, "text": "x", "output": output, "error": None}
    assert second == {"id": 1, "text": "", "output": None, "error": "text: an empty text"}
    with pytest.raises(ValueError):
        encode_output(math.nan)  # serving refuses NaN too: never write what JSON cannot read back


# --- the predicting actor, in this process ---------------------------------------------------------


@pytest.fixture
def predictor(tiny_checkpoint):
    threads = torch.get_num_threads()
    made = Predictor(
        str(tiny_checkpoint("text-classification")),
        "text-classification",
        ["text", "text_pair"],
        None,
        {"top_k": 2},
        num_cpus=threads,
    )
    yield made
    torch.set_num_threads(threads)


def test_the_actor_answers_as_the_handler_and_marks_rejected_rows(predictor):
    table = pa.table(
        {
            POSITION: pa.array([7, 8, 9, 10], pa.int64()),
            "text": ["a great film", "   ", "a dull book", None],
            "text_pair": [None, None, "it was long", "a second text alone"],
        }
    )
    out = predictor(table)
    assert out.column_names == [POSITION, ID, "text", "text_pair", OUTPUT, ERROR]
    assert out.column(ID).to_pylist() == [7, 8, 9, 10]
    expected = predictor.handler.predict(
        ["a great film", {"text": "a dull book", "text_pair": "it was long"}], {"top_k": 2}
    )
    outputs = out.column(OUTPUT).to_pylist()
    assert [json.loads(outputs[0]), json.loads(outputs[2])] == expected
    errors = out.column(ERROR).to_pylist()
    assert outputs[1] is None and errors[1].startswith("text: an empty text")
    assert outputs[3] is None and errors[3].startswith("input: expected a string or {text, text_pair}")
    assert errors[0] is None and errors[2] is None


def test_an_id_column_is_carried_as_the_output_id(tiny_checkpoint):
    threads = torch.get_num_threads()
    try:
        actor = Predictor(
            str(tiny_checkpoint("text-classification")), "text-classification", ["text"], "uid", {},
            num_cpus=threads,
        )  # fmt: skip
        out = actor(
            pa.table({POSITION: pa.array([0, 1], pa.int64()), "uid": ["a-1", "b-2"], "text": ["x", "y"]})
        )
    finally:
        torch.set_num_threads(threads)
    assert out.column(ID).to_pylist() == ["a-1", "b-2"]


# --- checks before Ray -----------------------------------------------------------------------------


def test_plan_reads_the_checkpoint_task_columns_and_ids(tiny_checkpoint, tmp_path):
    data = _jsonl(
        tmp_path / "in.jsonl", [{"id": f"r{i}", "review": f"text {i}", "stars": i} for i in range(5)]
    )
    plan = plan_prediction(
        str(tiny_checkpoint("text-classification")),
        SourceConfig(path=str(data)),
        str(tmp_path / "out"),
        columns={"text": "review"},
        parameters={"top_k": 2},
    )
    assert plan.task == "text-classification" and plan.columns == {"text": "review"}
    assert plan.id_column == "id" and plan.parameters == {"top_k": 2}
    assert plan.settings["input"]["files"] == [[str(data), data.stat().st_size]]


@pytest.mark.parametrize(
    ("change", "flag"),
    [
        ({"parameters": {"top_k": 0}}, "--parameters: top_k"),
        ({"parameters": {"topk": 2}}, "--parameters: topk"),
        ({"id_column": "uid"}, "--id-column 'uid'"),
        ({"columns": {}}, "'text'"),
        ({"fmt": "csv"}, "--format 'csv'"),
        ({"batch_size": 0}, "--batch-size 0"),
        ({"task": "fill-mask"}, "--task 'fill-mask'"),
    ],
)
def test_plan_refuses_bad_options_naming_the_flag(tiny_checkpoint, tmp_path, change, flag):
    data = _jsonl(tmp_path / "in.jsonl", [{"review": "a film"}])
    kwargs = {"columns": {"text": "review"}, **change}
    with pytest.raises((PredictError, DataError)) as err:
        plan_prediction(
            str(tiny_checkpoint("text-classification")),
            SourceConfig(path=str(data)),
            str(tmp_path / "o"),
            **kwargs,
        )
    assert flag in str(err.value)


def test_plan_refuses_a_missing_input_or_checkpoint(tiny_checkpoint, tmp_path):
    with pytest.raises(DataError, match=r"--input: file 'nope.jsonl' does not exist"):
        plan_prediction(str(tiny_checkpoint("text-classification")), SourceConfig(path="nope.jsonl"), "o")
    data = _jsonl(tmp_path / "in.jsonl", [{"text": "a"}])
    with pytest.raises(PredictError, match="does not exist; give a checkpoint directory"):
        plan_prediction(str(tmp_path / "none"), SourceConfig(path=str(data)), "o")
    (tmp_path / "in.dat").write_text("x")
    with pytest.raises(DataError, match="--input-format"):
        plan_prediction(
            str(tiny_checkpoint("text-classification")), SourceConfig(path=str(tmp_path / "in.dat")), "o"
        )


def test_the_pool_fits_the_cluster_and_leaves_room_to_read():
    # Unset --num-cpus: the CPUs left after reading (0.3), shared.
    assert actor_pool(None, 0.0, cpus=2, gpus=0, concurrency=None) == ActorPool(1, 1.7)
    assert actor_pool(None, 0.0, cpus=16, gpus=0, concurrency=None).actors == 3
    assert actor_pool(None, 1.0, cpus=16, gpus=2, concurrency=None) == ActorPool(2, 7.85, 1.0)
    assert actor_pool(0.5, 0.0, cpus=4, gpus=0, concurrency=None) == ActorPool(7, 0.5)
    assert actor_pool(1.0, 0.0, cpus=8, gpus=0, concurrency=3) == ActorPool(3, 1.0)
    with pytest.raises(PredictError, match=r"--concurrency 3 .* use --concurrency 1"):
        actor_pool(1.0, 0.0, cpus=2, gpus=0, concurrency=3)
    with pytest.raises(PredictError, match="--num-gpus 1: the cluster has 0 GPUs"):
        actor_pool(None, 1.0, cpus=2, gpus=0, concurrency=None)
    with pytest.raises(PredictError, match="--num-cpus 2"):
        actor_pool(2.0, 0.0, cpus=2, gpus=0, concurrency=None)
