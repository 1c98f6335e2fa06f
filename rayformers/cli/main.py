"""The `rayformers` command: the front door. Stages are imported inside each command, so `--help`
and `validate` start in well under a second."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rayformers.errors import UserError
from rayformers.loading import load_config
from rayformers.validation import ConfigError, ConfigIssue

__all__ = ["main"]


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="Path of a YAML run config.")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Override a config value, e.g. --set train.learning_rate=3e-5 (repeatable).",
    )


def _cmd_validate(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    print(
        f"{args.config}: OK (task {cfg.model.task}, {cfg.model.method} fine-tuning, "
        f"{cfg.train.num_workers} worker{'s' if cfg.train.num_workers != 1 else ''})"
    )
    return 0


@contextmanager
def _tokenized(args: argparse.Namespace) -> Iterator[tuple[Any, Any]]:
    """The config and its lazily tokenized splits, inside a Ray session closed on the way out."""
    from concurrent.futures import ThreadPoolExecutor

    from rayformers.cluster import connect
    from rayformers.data.pipeline import build_tokenized
    from rayformers.data.tokenizer import load_tokenizer

    cfg = load_config(args.config, args.overrides)
    model = cfg.model
    with ThreadPoolExecutor(1) as loader:
        # The driver's tokenizer (transformers' and torch's imports: seconds) loads while Ray starts.
        tokenizer = loader.submit(
            load_tokenizer,
            model.tokenizer_source,
            model.task,
            revision=model.tokenizer_revision,
            trust_remote_code=model.trust_remote_code,
        )
        with connect(cfg.cluster):
            yield (
                cfg,
                build_tokenized(
                    cfg.data,
                    model.task,
                    model.tokenizer_source,
                    revision=model.tokenizer_revision,
                    trust_remote_code=model.trust_remote_code,
                    tokenizer=tokenizer.result(),
                ),
            )


def _print_bad_rows(bad_rows: dict[str, dict[str, Any]]) -> None:
    for split, summary in bad_rows.items():
        for reason, count in summary["counts"].items():
            print(f"skipped {count} bad row{'s' if count != 1 else ''} in {split}: {reason}")
            for example in summary["examples"].get(reason, []):
                print(f"    e.g. {example}")


def _cmd_data_preview(args: argparse.Namespace) -> int:
    from rayformers.data.preview import preview, preview_sample

    cfg = load_config(args.config, args.overrides)
    if cfg.data.tokenized is None:
        # The first rows, read and tokenized in this process by the pipeline's own functions: no Ray to start.
        report = preview_sample(
            cfg.data,
            cfg.model.task,
            cfg.model.tokenizer_source,
            args.rows,
            args.sample,
            revision=cfg.model.tokenizer_revision,
            trust_remote_code=cfg.model.trust_remote_code,
        )
    else:
        with _tokenized(args) as (_, tokenized):
            report = preview(tokenized, args.rows)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    print(f"task: {report['task']}   max_length: {report['max_length']}")
    if "labels" in report:
        print(f"labels: {report['labels']}")
    for name, split in report["splits"].items():
        s = split["stats"]
        print(
            f"\n[{name}] rows {s['rows']}  tokens {s['tokens']}  mean length {s['mean_length']}  longest "
            f"{s['longest']}  truncated {s['truncated_rows']} ({s['truncation_rate']:.1%})"
        )
        if s["labels"]:
            print("  label distribution: " + ", ".join(f"{k} {v}" for k, v in s["labels"].items()))
        for i, row in enumerate(split["rows"]):
            extra = {k: v for k, v in row.items() if k not in ("tokens", "length")}
            print(f"  {i}: ({row['length']} tokens) {' '.join(row['tokens'])}")
            if extra:
                print(f"     {json.dumps(extra, default=str)}")
    _print_bad_rows(report["bad_rows"])
    if "sample" in report:
        print(f"\n({report['sample']['note']})")
    return 0


def _cmd_data_tokenize(args: argparse.Namespace) -> int:
    from rayformers.data.shards import check_empty, write_tokenized

    check_empty(args.out)  # before Ray starts and the data is read
    with _tokenized(args) as (cfg, tokenized):
        manifest = write_tokenized(tokenized, cfg.data, args.out)
    for split, stats in manifest.splits.items():
        print(f"{split}: {stats.rows} rows, {stats.tokens} tokens -> {Path(args.out) / split}")
    _print_bad_rows({s: {"counts": st.bad_rows, "examples": {}} for s, st in manifest.splits.items()})
    print(f"manifest: {Path(args.out) / 'manifest.json'}")
    return 0


def _cmd_data_train_tokenizer(args: argparse.Namespace) -> int:
    from rayformers.cluster import connect
    from rayformers.data.corpus import stream_texts
    from rayformers.data.tokenizer_training import retrain_tokenizer, train_tokenizer

    cfg = load_config(args.config, args.overrides)
    with connect(cfg.cluster):
        texts = stream_texts(cfg.data, cfg.model.task, args.column)
        if args.base is not None:
            tokenizer = retrain_tokenizer(
                texts,
                args.out,
                args.base,
                vocab_size=args.vocab_size,
                trust_remote_code=cfg.model.trust_remote_code,
            )
            print(f"retrained {args.base}'s tokenizer with {len(tokenizer)} tokens -> {args.out}")
            return 0
        tokenizer = train_tokenizer(
            texts, args.out, kind=args.kind, vocab_size=args.vocab_size, model_max_length=cfg.data.max_length
        )
    print(f"trained a {args.kind} tokenizer with {len(tokenizer)} tokens -> {args.out}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from rayformers.cluster import connect
    from rayformers.training.tracking import check_tracking
    from rayformers.training.trainer import run_training

    cfg = load_config(args.config, args.overrides)
    check_tracking(cfg.train.tracking, cfg.run_name)  # a missing MLflow or store fails before Ray starts
    with connect(cfg.cluster):
        result = run_training(cfg)
    print(f"best metrics: {json.dumps(result.best_metrics, default=str)}")
    print(f"run summary: {result.summary_path}")
    print(result.best_checkpoint)  # the last line on stdout: scripts read the checkpoint from here
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from rayformers.training.export import ExportError, export_checkpoint, push_to_hub

    if args.push_to_hub is None:
        if args.out is None:
            raise ExportError("--out is required (or --push-to-hub REPO to upload the export instead)")
        print(export_checkpoint(args.checkpoint, args.out, merge_lora=args.merge_lora))
        return 0
    url = push_to_hub(
        args.checkpoint, args.push_to_hub, merge_lora=args.merge_lora, private=args.private, out=args.out
    )
    print(url)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from rayformers.cluster import connect
    from rayformers.config import ClusterConfig
    from rayformers.training.scoring import evaluate_checkpoint

    cfg = load_config(args.config, args.overrides) if args.config else None
    cluster, data = (cfg.cluster, cfg.data) if cfg is not None else (ClusterConfig(), None)
    with connect(cluster):
        metrics = evaluate_checkpoint(
            args.checkpoint, args.data, data_config=data, batch_size=args.batch_size
        )
    text = json.dumps(metrics, indent=2, sort_keys=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text + "\n", encoding="utf-8")
    print(text)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _predict_target(args: argparse.Namespace) -> tuple[str, Any]:
    """The checkpoint CONFIG_OR_CHECKPOINT names (a run config: its run's best checkpoint) and the run
    config, if one was given."""
    target = str(args.target)
    if target.lower().endswith((".yaml", ".yml")):
        cfg = load_config(target, args.overrides)
        if args.checkpoint:
            return args.checkpoint, cfg
        return f"{cfg.train.storage_path.rstrip('/')}/{cfg.run_name}/best", cfg
    if args.overrides:
        raise ConfigError(
            "rayformers predict",
            [ConfigIssue("--set", "a checkpoint was given, not a run config", "drop --set, or give CONFIG")],
        )
    return target, None


def _key_values(pairs: list[str], flag: str) -> dict[str, str]:
    found = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            raise ConfigError(
                "rayformers predict",
                [ConfigIssue(flag, f"{pair!r} is not TASK_COLUMN=YOUR_COLUMN", f"e.g. {flag} text=review")],
            )
        found[key] = value
    return found


def _cmd_predict(args: argparse.Namespace) -> int:
    from rayformers.cluster import connect
    from rayformers.config import ClusterConfig, SourceConfig
    from rayformers.serving.batch_inference import plan_prediction, run_prediction

    checkpoint, cfg = _predict_target(args)
    try:
        parameters = json.loads(args.parameters) if args.parameters else {}
    except ValueError as err:
        raise ConfigError(
            "rayformers predict",
            [ConfigIssue("--parameters", f"not JSON ({err})", "give a JSON object, e.g. '{\"top_k\": 2}'")],
        ) from None
    if not isinstance(parameters, dict):
        raise ConfigError(
            "rayformers predict",
            [
                ConfigIssue(
                    "--parameters", f"{args.parameters!r} is not a JSON object", "e.g. '{\"top_k\": 2}'"
                )
            ],
        )
    if args.input.startswith("hub:"):
        source = SourceConfig(hub=args.input.removeprefix("hub:"), split=args.split, name=args.subset)
    else:
        source = SourceConfig(path=args.input, format=args.input_format, encoding=args.encoding)
    # The run's own column names, then the command line's.
    columns = {**(cfg.data.columns if cfg is not None else {}), **_key_values(args.columns, "--column")}
    plan = plan_prediction(  # every check that needs no Ray, before it starts
        checkpoint,
        source,
        args.output,
        task=args.task,
        columns=columns,
        id_column=args.id_column,
        parameters=parameters,
        fmt=args.format,
        rows_per_shard=args.rows_per_shard,
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        num_cpus=args.num_cpus,
        num_gpus=args.num_gpus,
        max_batch_tokens=args.max_batch_tokens,
    )
    reading = ", ".join(
        f"{task}={column}" if task != column else task for task, column in plan.columns.items()
    )
    print(
        f"predicting {plan.task} with {plan.checkpoint}: columns {reading}, ids "
        f"{'from ' + repr(plan.id_column) if plan.id_column else 'by row position'} -> {args.output}",
        file=sys.stderr,
    )
    with connect(cfg.cluster if cfg is not None else ClusterConfig()):
        summary = run_prediction(plan, progress=lambda line: print(line, file=sys.stderr, flush=True))
    kept = f", {summary.shards_kept} kept from an earlier run" if summary.shards_kept else ""
    rejected = f"; {summary.errors} rows rejected (see their `error` column)" if summary.errors else ""
    print(
        f"predicted {summary.rows} rows in {summary.seconds:.1f}s ({summary.rows_per_s:,.1f} rows/s on "
        f"{summary.actors} actor{'s' if summary.actors != 1 else ''}): {summary.shards_written} shards "
        f"written{kept}{rejected}",
        file=sys.stderr,
    )
    print(summary.output)  # the last line on stdout: scripts read the output directory from here
    return 0


def _cmd_runs_list(args: argparse.Namespace) -> int:
    from rayformers.training.runs import list_runs

    runs = list_runs(args.storage)
    if args.json:
        print(json.dumps([r.as_dict() for r in runs], indent=2))
        return 0
    rows = [
        (
            r.name,
            r.status,
            r.task or "-",
            r.model or "-",
            r.method or "-",
            f"{r.metric}={r.best_value:.4f}" if r.metric and r.best_value is not None else "-",
            f"{r.duration_s:.0f}s" if r.duration_s is not None else "-",
            r.best_checkpoint or f"({r.checkpoints} checkpoints)",
        )
        for r in runs
    ]
    header = ("NAME", "STATUS", "TASK", "MODEL", "METHOD", "BEST", "DURATION", "BEST CHECKPOINT")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        print(
            "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False))
            + f"  {row[-1]}"
        )
    if not rows:
        print(f"(no runs under {args.storage})")
    return 0


def _cmd_runs_show(args: argparse.Namespace) -> int:
    from rayformers.training.runs import show_run

    print(json.dumps(show_run(args.storage, args.name), indent=2, default=str))
    return 0


def _serve_setup(args: argparse.Namespace) -> tuple[Any, list[Any], Any]:
    """The serve section, its apps as builder arguments, and the cluster to run on."""
    from rayformers.config import ClusterConfig, ServeAppConfig, ServeConfig
    from rayformers.serving.app import app_args, checked

    if args.checkpoint:
        if args.config:
            raise ConfigError(
                "rayformers serve",
                [ConfigIssue("CONFIG", "both a CONFIG and --checkpoint were given", "give one of them")],
            )
        serve_cfg = ServeConfig(port=args.port or 8000)
        app = ServeAppConfig(
            name=args.name or "model", checkpoint=str(Path(args.checkpoint).resolve()), task=args.task
        )
        return serve_cfg, checked(serve_cfg, [app]), ClusterConfig()
    if not args.config:
        raise ConfigError(
            "rayformers serve",
            [
                ConfigIssue(
                    "CONFIG", "nothing to serve", "give a CONFIG, or --checkpoint DIR for one checkpoint"
                )
            ],
        )
    cfg = load_config(args.config, args.overrides)
    if args.port:
        cfg = cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"port": args.port})})
    return cfg.serve, app_args(cfg), cfg.cluster


def _cmd_serve(args: argparse.Namespace) -> int:
    from rayformers.serving.server import block_stop_signals, deploy, serve_until_stopped

    serve_cfg, apps, cluster = _serve_setup(args)
    block_stop_signals()
    served = deploy(serve_cfg, apps, cluster, stoppable=True)
    serve_until_stopped(served)
    return 0


def _cmd_serve_build(args: argparse.Namespace) -> int:
    import yaml

    from rayformers.serving.access import API_KEYS_ENV, env_keys
    from rayformers.serving.app import app_args, deploy_config

    cfg = load_config(args.config, args.overrides)
    config = deploy_config(cfg.serve, app_args(cfg))
    text = yaml.safe_dump(config, sort_keys=False)
    if args.output == "-":
        print(text, end="")
    else:
        Path(args.output).write_text(text, encoding="utf-8")
        print(
            f"wrote {args.output}: {len(config['applications'])} applications (run it: serve run {args.output})"
        )
    if env_keys():
        print(
            f"{API_KEYS_ENV} is set: its keys are not written into the file, and its replicas refuse to start "
            f"without keys; set {API_KEYS_ENV} where they run (for a RayService, from a Kubernetes Secret)",
            file=sys.stderr,
        )
    return 0


def _cmd_cluster_local(args: argparse.Namespace) -> int:
    from rayformers.cluster.local import start_local

    local = start_local(args.nodes, args.cpus_per_node, args.port, args.dashboard_port)
    print(f"started a local Ray cluster of {local.nodes} nodes ({args.cpus_per_node:g} CPU each)")
    print(f"  address:   {local.address}     (configs: --set cluster.address={local.address})")
    print(f"  dashboard: {local.dashboard}   (rayformers submit CONFIG --address {local.dashboard})")
    print(
        "  drivers that join it need RAY_AUTH_MODE=token (rayformers sets it); stop it: rayformers cluster down"
    )
    return 0


def _cmd_cluster_down(args: argparse.Namespace) -> int:
    from rayformers.cluster.local import stop_local

    stop_local()
    print("stopped every Ray node on this machine")
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from rayformers.cluster.jobs import submit_training

    cfg = load_config(args.config, args.overrides)  # refuse a bad config here, before anything is shipped
    job_id, status = submit_training(args.config, args.overrides, args.address, cfg.cluster)
    print(f"job {job_id}: {status}")
    return 0 if status == "SUCCEEDED" else 1


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from rayformers.cli.quickstart import run_quickstart

    run_quickstart(Path(args.workdir), port=args.port, keep_serving=args.keep_serving)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rayformers",
        description="Fine-tune and serve Hugging Face transformers on Ray, from one YAML config.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    quickstart = commands.add_parser(
        "quickstart",
        help="The whole flow offline on sample data: tokenizer, LoRA training, evaluation, serving.",
    )
    quickstart.add_argument(
        "--workdir",
        default="runs/quickstart-demo",
        help="Where its tokenizer and run go (replaced each time).",
    )
    quickstart.add_argument("--port", type=int, default=8000, help="HTTP port of the served app.")
    quickstart.add_argument(
        "--keep-serving", action="store_true", help="Keep the app up after the demo requests (Ctrl-C stops)."
    )
    quickstart.set_defaults(run=_cmd_quickstart)

    submit = commands.add_parser(
        "submit", help="Run `train CONFIG` on a Ray cluster through the Jobs API; stream its logs."
    )
    _add_config(submit)
    submit.add_argument("--address", required=True, help="The cluster's dashboard, e.g. http://HEAD:8265.")
    submit.set_defaults(run=_cmd_submit)

    cluster = commands.add_parser(
        "cluster", help="A multi-node Ray cluster on this machine, for development."
    )
    cluster_commands = cluster.add_subparsers(dest="cluster_command", required=True, metavar="ACTION")
    local = cluster_commands.add_parser("local", help="Start a head and N-1 worker nodes here.")
    local.add_argument("--nodes", type=int, default=2, help="Nodes, the head included (default 2).")
    local.add_argument("--cpus-per-node", type=float, default=1, help="CPUs each node offers (default 1).")
    local.add_argument("--port", type=int, default=6379, help="The head's GCS port.")
    local.add_argument("--dashboard-port", type=int, default=8265, help="The dashboard (Jobs API) port.")
    local.set_defaults(run=_cmd_cluster_local)
    down = cluster_commands.add_parser("down", help="Stop every Ray node on this machine.")
    down.set_defaults(run=_cmd_cluster_down)

    validate = commands.add_parser("validate", help="Check a config; list every problem at once.")
    _add_config(validate)
    validate.set_defaults(run=_cmd_validate)

    train = commands.add_parser("train", help="Fine-tune on Ray Train; prints the best checkpoint last.")
    _add_config(train)
    train.set_defaults(run=_cmd_train)

    export = commands.add_parser("export", help="Write a standalone model from a checkpoint.")
    export.add_argument("checkpoint", help="A checkpoint directory written by `rayformers train`.")
    export.add_argument("--out", default=None, help="Output directory (new or empty).")
    export.add_argument(
        "--merge-lora", action="store_true", help="Merge a LoRA adapter into its base weights."
    )
    export.add_argument(
        "--push-to-hub",
        default=None,
        metavar="REPO",
        help="Upload the export to this Hugging Face model repo (created if new; HF_TOKEN or `hf auth "
        "login` authenticates); --out then keeps a local copy too.",
    )
    export.add_argument("--private", action="store_true", help="With --push-to-hub: create the repo private.")
    export.set_defaults(run=_cmd_export)

    evaluate = commands.add_parser(
        "evaluate", help="A checkpoint's metrics on a labelled split, as training evaluates; JSON."
    )
    evaluate.add_argument(
        "checkpoint", help="A checkpoint directory (or <run>/best), local or s3:// / gs://."
    )
    evaluate.add_argument("--data", required=True, help="The split: a file, glob, directory or cloud URI.")
    evaluate.add_argument(
        "--config",
        default=None,
        help="A run config whose data section says how to read --data (default: the run's own, from the "
        "summary.json beside the checkpoint).",
    )
    evaluate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    evaluate.add_argument("--batch-size", type=int, default=32, help="Rows per evaluation batch.")
    evaluate.add_argument("--output", default="evaluation.json", help="Where to write the metrics (JSON).")
    evaluate.set_defaults(run=_cmd_evaluate)

    predict = commands.add_parser(
        "predict",
        help="Batch inference with Ray Data: a checkpoint's serving outputs for every row, to Parquet/JSONL.",
        description="Run a checkpoint's serving handler over every row of --input on a Ray Data actor pool "
        "and write one row per input (id, input columns, output, error) as shards under --output. A re-run "
        "with the same --output after a stopped run keeps its finished shards and predicts only the rest.",
    )
    predict.add_argument(
        "target",
        metavar="CONFIG_OR_CHECKPOINT",
        help="A run config (its run's best checkpoint is used) or a checkpoint directory (local, s3://, gs://).",
    )
    predict.add_argument(
        "--input",
        required=True,
        help="Rows to predict: a file, glob, directory or cloud URI; or hub:DATASET.",
    )
    predict.add_argument(
        "--output", required=True, help="Output directory (new, or a stopped run's to resume)."
    )
    predict.add_argument("--format", choices=["parquet", "jsonl"], default="parquet", help="Output format.")
    predict.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    predict.add_argument(
        "--checkpoint", default=None, help="With a CONFIG: this checkpoint, not the run's best."
    )
    predict.add_argument("--task", default=None, help="Task of a checkpoint without rayformers.json.")
    predict.add_argument(
        "--parameters",
        default=None,
        metavar="JSON",
        help="Task parameters, as serving takes them: '{\"top_k\": 2}'.",
    )
    predict.add_argument(
        "--column",
        dest="columns",
        action="append",
        default=[],
        metavar="TASK_COLUMN=YOURS",
        help="Read a task column from another column, e.g. --column text=review (repeatable).",
    )
    predict.add_argument(
        "--id-column",
        default=None,
        help="The input's id column (default: 'id' if present, else row positions).",
    )
    predict.add_argument(
        "--input-format",
        choices=["auto", "csv", "json", "jsonl", "parquet", "text"],
        default="auto",
        help="Format of --input (default: from the extension).",
    )
    predict.add_argument("--encoding", default="utf-8", help="Text encoding of CSV, JSON(L) and text input.")
    predict.add_argument("--split", default="train", help="With hub:DATASET: the split.")
    predict.add_argument("--subset", default=None, help="With hub:DATASET: the configuration name.")
    predict.add_argument("--batch-size", type=int, default=64, help="Rows per handler call (default 64).")
    predict.add_argument(
        "--concurrency", type=int, default=None, help="Model actors (default: as many as the resources fit)."
    )
    predict.add_argument(
        "--num-cpus",
        type=float,
        default=None,
        help="CPUs per model actor (default: the cluster's CPUs, less a quarter for reading, shared).",
    )
    predict.add_argument(
        "--num-gpus", type=float, default=0.0, help="GPUs per model actor (default 0; >0 runs on CUDA)."
    )
    predict.add_argument(
        "--max-batch-tokens", type=int, default=None, help="Padded tokens per forward (default: by device)."
    )
    predict.add_argument(
        "--rows-per-shard",
        type=int,
        default=10_000,
        help="Rows per output file, the unit a resumed run keeps (default 10000).",
    )
    predict.set_defaults(run=_cmd_predict)

    runs = commands.add_parser("runs", help="The runs under a storage path: status, best metric, checkpoint.")
    runs_commands = runs.add_subparsers(dest="runs_command", required=True, metavar="ACTION")
    listing = runs_commands.add_parser("list", help="Every run, finished ones newest first.")
    show = runs_commands.add_parser("show", help="One run in full: summary, metrics and history (JSON).")
    show.add_argument("name", help="The run's name (train.name, or <task>-<method>).")
    for command in (listing, show):
        command.add_argument(
            "--storage",
            default="runs",
            help="train.storage_path: a local path, s3:// or gs:// (default: runs).",
        )
    listing.add_argument("--json", action="store_true", help="One JSON record per run.")
    listing.set_defaults(run=_cmd_runs_list)
    show.set_defaults(run=_cmd_runs_show)

    serve = commands.add_parser(
        "serve",
        help="Serve checkpoints over HTTP on Ray Serve (and `serve build` a Serve config file).",
        description="Serve every app of CONFIG (or one --checkpoint) until Ctrl-C or SIGTERM. "
        "`rayformers serve build CONFIG -o FILE` writes the Ray Serve config instead, for `serve run`, "
        "`serve deploy` or a KubeRay RayService.",
    )
    serve.add_argument("config", nargs="?", help="Path of a YAML run config.")
    serve.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    serve.add_argument("--port", type=int, default=None, help="HTTP port (default: serve.port, 8000).")
    serve.add_argument("--checkpoint", help="Serve this one checkpoint directory with default settings.")
    serve.add_argument(
        "--name", help="App name for --checkpoint (its routes are under /NAME; default 'model')."
    )
    serve.add_argument(
        "--task", help="Task for --checkpoint, needed for a directory without rayformers.json."
    )
    serve.set_defaults(run=_cmd_serve)
    # No `help`: argparse then leaves this internal spelling of `serve build` out of `--help`.
    build = commands.add_parser("serve-build")
    _add_config(build)
    build.add_argument("-o", "--output", required=True, help="File to write ('-' for stdout).")
    build.set_defaults(run=_cmd_serve_build)

    data = commands.add_parser("data", help="Stream, tokenize and inspect a config's data.")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    preview = data_commands.add_parser("preview", help="Decoded tokenized rows and statistics.")
    _add_config(preview)
    preview.add_argument("--rows", type=int, default=3, help="Rows to show per split (default 3).")
    preview.add_argument("--json", action="store_true", help="Print the report as JSON.")
    preview.add_argument(
        "--sample",
        type=int,
        default=10_000,
        help="Rows read per split; statistics cover them (default 10000; no Ray is started).",
    )
    preview.set_defaults(run=_cmd_data_preview)
    tokenize = data_commands.add_parser("tokenize", help="Write tokenized Parquet shards and a manifest.")
    _add_config(tokenize)
    tokenize.add_argument("--out", required=True, help="Output directory.")
    tokenize.set_defaults(run=_cmd_data_tokenize)
    train_tok = data_commands.add_parser(
        "train-tokenizer", help="Train a WordPiece or BPE tokenizer, or retrain one (--from) on the corpus."
    )
    _add_config(train_tok)
    train_tok.add_argument("--out", required=True, help="Directory to save the tokenizer in.")
    train_tok.add_argument("--kind", choices=["wordpiece", "bpe"], default="wordpiece")
    train_tok.add_argument(
        "--from",
        dest="base",
        default=None,
        metavar="TOKENIZER",
        help="Retrain this tokenizer (a hub id or directory) on the corpus: its normalizer, pre-tokenizer, "
        "special tokens and template, with a new vocabulary of --vocab-size (--kind is then not used).",
    )
    train_tok.add_argument("--vocab-size", type=int, default=2000)
    train_tok.add_argument(
        "--column", default=None, help="Task column to learn from (default: the task's text)."
    )
    train_tok.set_defaults(run=_cmd_data_train_tokenizer)
    return parser


def _user_error(exc: BaseException) -> UserError | None:
    """The user's mistake inside `exc`, however deep Ray wrapped it (task errors, Data UDF errors): the
    first `UserError` among its causes, contexts and Ray's `cause`."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, UserError):
            # Ray's task errors subclass the error they carry; the original, under `cause`, prints cleanly.
            inner = getattr(current, "cause", None)
            return inner if isinstance(inner, UserError) else current
        stack.extend([current.__cause__, current.__context__, getattr(current, "cause", None)])
    return None


class _HideUserErrorTracebacks(logging.Filter):
    """Ray logs the stack of any exception a task raises; for a user's mistake we print one line
    that says what to fix instead, so those records are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            return _user_error(record.exc_info[1]) is None
        # Ray's preamble to the stack trace above; the trace itself is judged (and kept or not) above.
        return not str(record.msg).startswith("Exception occurred in Ray Data or Ray Core internal code")


def _install_log_filter_after_ray_import() -> None:
    """Ray configures its loggers when imported: filter them once they exist."""
    import ray
    import ray.data  # noqa: F401

    _install_log_filter()


def _install_log_filter() -> None:
    hide = _HideUserErrorTracebacks()
    for name in ("ray.data", "ray", ""):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(hide)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `rayformers` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["serve", "build"]:  # `serve build` is its own command with its own arguments
        argv = ["serve-build", *argv[2:]]
    args = _parser().parse_args(argv)
    if args.command != "validate":
        from rayformers.cluster import use_token_auth_if_set_up

        use_token_auth_if_set_up()
        _install_log_filter_after_ray_import()
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except ConfigError as err:
        print(err.render(), file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        # Ctrl-C; or a stop signal that ended a deploy (serving.server.Interrupted, which names it).
        print(f"interrupted: {err}" if str(err) else "interrupted", file=sys.stderr)
        return 128 + getattr(err, "signum", signal.SIGINT)
    except Exception as err:
        found = _user_error(err)
        if found is None:
            raise
        print(f"error: {found.render()}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
