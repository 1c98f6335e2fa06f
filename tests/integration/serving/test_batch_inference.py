"""`rayformers predict`'s pipeline on the session Ray: a few hundred rows through the Ray Data actor pool
give, for every row of a sample, exactly what the served app answers over HTTP for the same checkpoint;
ids are row positions (or the input's ids), each exactly once, in input order; a rejected row gets an
error, not a dead job. (A killed run resumed: tests/e2e/test_predict_cli.py.)"""

from __future__ import annotations

import json
import random

import pyarrow.parquet as pq

from rayformers.config import SourceConfig
from rayformers.serving.batch_inference import plan_prediction, run_prediction, shard_name
from tests.integration.serving.examples import close, post

# The package's Serve apps hold about a CPU of the session's two: the actor takes a quarter.
SMALL = {"num_cpus": 0.25, "concurrency": 1, "batch_size": 32}
WORDS = [
    "a",
    "great",
    "dull",
    "film",
    "book",
    "tiring",
    "superb",
    "pleasant",
    "camera",
    "kettle",
    "was",
    "the",
    "and",
    "very",
    "not",
]


def _rows(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 12))) for _ in range(count)]


def _read(directory) -> list[dict]:
    return pq.read_table(directory).to_pylist()


def test_predict_matches_serving_over_http_for_a_sample(server, tiny_checkpoint, tmp_path):
    texts = _rows(300)
    texts[17] = "   "  # serving answers it 422; the batch job marks the row and goes on
    data = tmp_path / "reviews.jsonl"
    data.write_text("".join(json.dumps({"review": t, "stars": i % 5}) + "\n" for i, t in enumerate(texts)))
    parameters = {"top_k": 2}
    plan = plan_prediction(
        str(tiny_checkpoint("text-classification")),
        SourceConfig(path=str(data)),
        str(tmp_path / "out"),
        columns={"text": "review"},
        parameters=parameters,
        rows_per_shard=128,
        **SMALL,
    )
    lines: list[str] = []
    summary = run_prediction(plan, progress=lines.append)
    assert (summary.rows, summary.errors, summary.shards_written) == (300, 1, 3)
    rows = sorted(_read(tmp_path / "out"), key=lambda r: r["id"])
    assert [r["id"] for r in rows] == list(range(300))
    assert [r["text"] for r in rows] == texts
    assert rows[17]["output"] is None and rows[17]["error"].startswith("text: an empty text")
    sample = [i for i in random.Random(1).sample(range(300), 40) if i != 17]
    served = post(
        server, "/sentiment/predict", {"inputs": [texts[i] for i in sample], "parameters": parameters}
    )
    assert served.status_code == 200, served.text
    # The same handler: the same labels, and scores equal but for float32 rounding, since a row's
    # forward pads it to the longest of whichever rows share its batch here and there.
    ours = [json.loads(rows[i]["output"]) for i in sample]
    assert [[a["label"] for a in o] for o in ours] == [[a["label"] for a in o] for o in served.json()]
    assert close(ours, served.json(), tol=1e-5)
    rejected = post(server, "/sentiment/predict", {"inputs": [texts[17]]})
    assert rejected.status_code == 422


def test_entities_and_input_ids_in_jsonl_match_serving(server, tiny_checkpoint, tmp_path):
    texts = [f"Alice Novak flew to Toronto on day {i} ." for i in range(40)]
    data = tmp_path / "people.csv"
    data.write_text("uid,text\n" + "".join(f"u{i:03d},{t}\n" for i, t in enumerate(texts)))
    plan = plan_prediction(
        str(tiny_checkpoint("token-classification")),
        SourceConfig(path=str(data)),
        str(tmp_path / "out"),
        id_column="uid",
        fmt="jsonl",
        parameters={"aggregation_strategy": "none"},
        **SMALL,
    )
    run_prediction(plan, progress=lambda _: None)
    rows = [json.loads(line) for line in (tmp_path / "out" / shard_name(0, "jsonl")).read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"u{i:03d}" for i in range(40)]  # in input order, ids from the file
    served = post(
        server, "/ner/predict", {"inputs": texts[:5], "parameters": {"aggregation_strategy": "none"}}
    )
    assert close([r["output"] for r in rows[:5]], served.json(), tol=1e-5)
