"""`make bench`: rayformers against the servers a user would otherwise run, in one run, on this machine.

    python -m benchmarks.run                  # every benchmark
    python -m benchmarks.run classifier       # one of: classifier, generation, embeddings, tokenization, training, predict
    python -m benchmarks.run classifier --duration 10 --concurrency 1 32

- classifier: a MiniLM-L6-size text classifier, one 5-120-word text per request, concurrency 1, 8, 32, 64:
  rayformers (defaults), the naive pipeline server, a plain Ray Serve deployment, and the in-process roof.
- generation: a distilgpt2-size causal LM, 32 new tokens greedily, concurrency 1 and 8, streaming and not:
  rayformers' /v1/completions against the naive server's.
- embeddings: a MiniLM-L6-size encoder, one text per request: rayformers, the naive server, the roof.

Each writes benchmarks/results/<name>.{json,md,png}; results/README.md collects the tables.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import load, models, report, servers

RESULTS = Path(__file__).resolve().parent / "results"
CACHE = Path(tempfile.gettempdir()) / "rayformers-bench-models"
COMPARED = {"naive": "rayformers / naive", "serve": "rayformers / plain Serve"}


def roof(
    model_dir: Path, model_name: str, inputs: list[str], batches: tuple[int, ...] = (16, 32, 64)
) -> dict[str, Any]:
    """The model alone, in this process, no HTTP: sequences/s over batches of 16, 32 and 64 inputs in
    arrival order, each either padded to its longest input, or sorted by length and cut into forwards of
    at most 512 padded tokens (what rayformers does on CPU); the best of all."""
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    from rayformers.tasks.handler import micro_batches

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    auto = AutoModelForSequenceClassification if model_name == "classifier" else AutoModel
    model = auto.from_pretrained(model_dir).eval()

    def run(chunk: list[str], budget: int | None) -> None:
        encoded = tokenizer(chunk, truncation=True, max_length=256)
        rows = (
            [list(range(len(chunk)))]
            if budget is None
            else micro_batches([len(i) for i in encoded["input_ids"]], budget)
        )
        for part in rows:
            batch = tokenizer.pad({k: [v[i] for i in part] for k, v in encoded.items()}, return_tensors="pt")
            out = model(**batch)
            (out.logits.softmax(-1) if model_name == "classifier" else out.last_hidden_state.mean(1)).tolist()

    by_batch: dict[str, float] = {}
    with torch.inference_mode():
        for size in batches:
            chunks = [inputs[i : i + size] for i in range(0, 8 * size, size)]
            for label, budget in (("padded", None), ("sorted, 512 tokens", 512)):
                run(chunks[0], budget)
                started = time.perf_counter()
                for chunk in chunks:
                    run(chunk, budget)
                by_batch[f"{size} {label}"] = sum(len(c) for c in chunks) / (time.perf_counter() - started)
    return {"best": max(by_batch.values()), "by_batch": by_batch}


def _ratios(result: dict[str, Any], key: str, concurrency: tuple[int, ...]) -> dict[str, Any]:
    ours = {r["concurrency"]: r for r in result["servers"]["rayformers"]}
    values: dict[str, list[float | None]] = {}
    for other, label in COMPARED.items():
        theirs = {r["concurrency"]: r for r in result["servers"].get(other, [])}
        if theirs:
            values[label] = [
                ours[c][key] / theirs[c][key] if c in theirs and theirs[c][key] else None for c in concurrency
            ]
            values[f"p99 {label}"] = [
                ours[c]["p99_s"] / theirs[c]["p99_s"] if c in theirs else None for c in concurrency
            ]
    if result.get("roof"):
        values["rayformers / roof"] = [ours[c][key] / result["roof"]["best"] for c in concurrency]
    return {"concurrency": list(concurrency), "values": values}


def _one_text_per_request(
    name: str, title: str, model_name: str, kinds: tuple[str, ...], args: argparse.Namespace
) -> dict[str, Any]:
    model_dir = models.build(model_name, CACHE)
    inputs = models.texts(4000, seed=1)
    result: dict[str, Any] = {
        "name": name, "title": title, "model": models.SPECS[model_name][3], "servers": {},
        "throughput": {"key": "req_per_s", "label": "req/s", "unit": "seq/s"},
    }  # fmt: skip
    for kind in [k for k in kinds if k in args.servers]:
        with servers.start(kind, model_name, model_dir, args.logs, probe={"inputs": "hello world"}) as server:
            url = server.base + server.routes["predict"]
            runs = []
            for concurrency in args.concurrency:
                measured = load.run_load(url, lambda i: {"inputs": inputs[i % len(inputs)]}, concurrency,
                                         duration_s=args.duration, server_pid=server.pid)  # fmt: skip
                runs.append(measured.summary())
                print(f"[bench] {name} {kind} c={concurrency}: {runs[-1]['req_per_s']:.1f} req/s, "
                      f"p99 {runs[-1]['p99_s'] * 1000:.0f} ms", flush=True)  # fmt: skip
            result["servers"][kind] = runs
    if args.roof:
        result["roof"] = roof(model_dir, model_name, inputs)
        print(f"[bench] {name} roof: {result['roof']['best']:.1f} seq/s", flush=True)
    result["ratios"] = _ratios(result, "req_per_s", tuple(args.concurrency))
    return result


def classifier(args: argparse.Namespace) -> dict[str, Any]:
    return _one_text_per_request(
        "classifier", "Text classification, MiniLM-L6 size, one 5-120-word text per request", "classifier",
        ("rayformers", "naive", "serve"), args,
    )  # fmt: skip


def embeddings(args: argparse.Namespace) -> dict[str, Any]:
    return _one_text_per_request(
        "embeddings", "Embeddings, MiniLM-L6 size, one 5-120-word text per request", "embedder",
        ("rayformers", "naive"), args,
    )  # fmt: skip


def generation(args: argparse.Namespace) -> dict[str, Any]:
    from transformers import AutoTokenizer

    model_dir = models.build("causal_lm", CACHE)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompts = models.texts(2000, seed=2, words=(5, 30))
    new_tokens = 32
    result: dict[str, Any] = {
        "name": "generation", "servers": {}, "model": models.SPECS["causal_lm"][3],
        "title": f"Text generation, distilgpt2 size, {new_tokens} new tokens (greedy) per request",
        "throughput": {"key": "tokens_per_s", "label": "tokens/s", "unit": "tokens/s"},
    }  # fmt: skip
    probe = {"inputs": "hello", "parameters": {"max_new_tokens": 2}}
    duration = max(args.duration, 20.0)  # a batch of generations takes seconds: measure several
    for kind in [k for k in ("rayformers", "naive") if k in args.servers]:
        with servers.start(kind, "causal_lm", model_dir, args.logs, probe=probe) as server:
            url = server.base + server.routes["completions"]
            for stream in (False, True):
                runs = []
                for concurrency in [c for c in args.concurrency if c <= 8] or [1, 8]:
                    body = {"model": "model", "max_tokens": new_tokens, "temperature": 0, "stream": stream}
                    measured = load.run_load(
                        url, lambda i, b=body: {**b, "prompt": prompts[i % len(prompts)]}, concurrency,
                        duration_s=duration, stream=stream, server_pid=server.pid,
                        read_text=lambda reply: reply["choices"][0]["text"],
                    )  # fmt: skip
                    summary = measured.summary()
                    tokens = sum(
                        len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in measured.texts
                    )
                    summary["tokens_per_s"] = tokens / measured.duration_s if measured.duration_s else 0.0
                    runs.append(summary)
                    print(f"[bench] generation {kind} stream={stream} c={concurrency}: "
                          f"{summary['tokens_per_s']:.1f} tokens/s, ttft {summary['ttft_p50_s']}", flush=True)  # fmt: skip
                result["servers"][f"{kind}{' (stream)' if stream else ''}"] = runs
    concurrency = tuple(r["concurrency"] for r in result["servers"]["rayformers"])
    result["ratios"] = _ratios(result, "tokens_per_s", concurrency)
    streamed = {r["concurrency"]: r for r in result["servers"]["rayformers (stream)"]}
    naive_streamed = {r["concurrency"]: r for r in result["servers"]["naive (stream)"]}
    result["ratios"]["values"]["stream: rayformers / naive"] = [
        streamed[c]["tokens_per_s"] / naive_streamed[c]["tokens_per_s"]
        if naive_streamed[c]["tokens_per_s"]
        else None
        for c in concurrency
    ]
    return result


def tokenization(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks import tokenization as bench

    return bench.run(args)


def training(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks import training as bench

    return bench.run(args)


def predict(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks import predict as bench

    return bench.run(args)


BENCHMARKS = {
    "classifier": classifier,
    "generation": generation,
    "embeddings": embeddings,
    "tokenization": tokenization,
    "training": training,
    "predict": predict,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "names", nargs="*", help=f"Benchmarks to run (default: all): {', '.join(BENCHMARKS)}."
    )
    parser.add_argument("--duration", type=float, default=12.0, help="Seconds of load per measurement.")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--servers",
        nargs="+",
        default=["rayformers", "naive", "serve"],
        help="Servers to measure (default: all).",
    )
    parser.add_argument("--no-roof", dest="roof", action="store_false", help="Skip the in-process roof.")
    args = parser.parse_args()
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    args.logs = Path(tempfile.mkdtemp(prefix="rayformers-bench-logs-"))
    started = time.monotonic()
    for name in args.names or list(BENCHMARKS):
        report.write(BENCHMARKS[name](args), args.out)
    # Every benchmark's latest table, whether this run measured it or an earlier one did.
    tables = [
        (args.out / f"{name}.md").read_text() for name in BENCHMARKS if (args.out / f"{name}.md").exists()
    ]
    (args.out / "README.md").write_text(
        "# Latest benchmark results\n\nWritten by `make bench` (`python -m benchmarks.run`); see "
        "`benchmarks/README.md` for what each measures, and each `<name>.json` for when it ran.\n\n"
        + "\n".join(tables)
    )
    print(f"[bench] done in {time.monotonic() - started:.0f} s; logs in {args.logs}; results in {args.out}")


if __name__ == "__main__":
    main()
