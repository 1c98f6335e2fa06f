"""The run config: one YAML file, five sections (`data`, `model`, `train`, `serve`, `cluster`).

Every model forbids unknown keys and documents every field, so `rayformers validate` can name a
misspelled key and say what the right one is. Checks that span sections live in
`rayformers.validation`; loading and `--set` overrides live in `rayformers.loading`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rayformers.tasks import TASK_NAMES, TaskName

__all__ = [
    "MIN_API_KEY_LENGTH",
    "TRACKING_SCHEMES",
    "ClusterConfig",
    "DataConfig",
    "FromScratchConfig",
    "LoraConfig",
    "ModelConfig",
    "RunConfig",
    "ServeAppConfig",
    "ServeConfig",
    "SourceConfig",
    "TrackingConfig",
    "TrainConfig",
    "api_key_problems",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, frozen=True)


FileFormat = Literal["auto", "csv", "json", "jsonl", "parquet", "text"]


class SourceConfig(_Section):
    """Where one split comes from: a Hugging Face dataset id, or files by path, glob or cloud URI."""

    path: str | list[str] | None = Field(
        default=None,
        description="Local path, glob (data/*.jsonl), directory, or cloud URI (s3://bucket/x.parquet, gs://...). "
        "Exactly one of `path` and `hub` is set.",
    )
    hub: str | None = Field(
        default=None,
        description="A Hugging Face dataset id (e.g. 'nyu-mll/glue') or a local dataset directory loaded with "
        "`datasets.load_dataset`. Exactly one of `path` and `hub` is set.",
    )
    name: str | None = Field(default=None, description="The hub dataset's configuration name (e.g. 'mrpc').")
    split: str = Field(default="train", description="The hub dataset's split (e.g. 'train', 'validation').")
    revision: str | None = Field(default=None, description="Hub dataset revision (branch, tag or commit).")
    streaming: bool = Field(
        default=False,
        description="Stream the hub dataset instead of downloading it whole first (for very large sets).",
    )
    format: FileFormat = Field(
        default="auto",
        description="File format for `path`; 'auto' infers it from the extension (.csv, .json, .jsonl, "
        ".parquet, .txt).",
    )
    encoding: str = Field(default="utf-8", description="Text encoding of csv, json(l) and text files.")

    @model_validator(mode="after")
    def _exactly_one_origin(self) -> SourceConfig:
        if (self.path is None) == (self.hub is None):
            raise ValueError(
                "set exactly one of `path` (files) and `hub` (a Hugging Face dataset id); "
                f"got path={self.path!r}, hub={self.hub!r}"
            )
        return self


class DataConfig(_Section):
    """The data stage: sources, column mapping, labels and tokenization."""

    train: SourceConfig = Field(description="The training split.")
    validation: SourceConfig | None = Field(
        default=None,
        description="The validation split. If unset, `validation_fraction` of train is held out instead.",
    )
    validation_fraction: float = Field(
        default=0.1,
        ge=0.0,
        lt=1.0,
        description="Fraction of train held out (by a seeded hash of each row) when `validation` is unset; "
        "0 disables validation.",
    )
    tokenized: str | None = Field(
        default=None,
        description="A directory written by `rayformers data tokenize`, used instead of tokenizing again; "
        "its manifest must match this config (tokenizer, task, lengths), or the run stops and says why.",
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Map from the task's column names to yours, e.g. {text: sentence, label: sentiment}. "
        "Task columns you do not map are read under their own names.",
    )
    labels: list[str] | None = Field(
        default=None,
        description="The label names in id order. If unset they are the sorted distinct labels of the "
        "training split; either way the map is recorded in every manifest and reused at serve time.",
    )
    max_length: int = Field(default=128, ge=8, le=131072, description="Tokens per example after truncation.")
    max_target_length: int = Field(
        default=64, ge=1, le=131072, description="Tokens per target (summarization, translation)."
    )
    truncation: bool = Field(
        default=True, description="Truncate inputs to `max_length` (off: over-long rows are bad rows)."
    )
    stride: int = Field(
        default=32, ge=0, description="Question answering: tokens shared by consecutive overflow windows."
    )
    packing: bool = Field(
        default=False,
        description="Text generation: concatenate examples and cut them into blocks of `max_length` tokens.",
    )
    mlm_probability: float = Field(
        default=0.15, gt=0.0, lt=1.0, description="Fill-mask: fraction of tokens masked at collate time."
    )
    label_all_tokens: bool = Field(
        default=False,
        description="Token classification: label every sub-token of a word (off: only the first; the "
        "rest get -100).",
    )
    source_prefix: str = Field(
        default="",
        description="Text prepended to every seq2seq input (e.g. 'summarize: ' for T5).",
    )
    pad_to_multiple_of: int | None = Field(
        default=None,
        ge=1,
        description="Pad each training batch to a multiple of this (8 helps tensor cores).",
    )
    batch_size: int = Field(
        default=512, ge=1, description="Rows per tokenization batch (Ray Data map_batches)."
    )
    concurrency: int | None = Field(
        default=None,
        ge=1,
        description="Tokenizer actors. Unset: sized against the CPUs the cluster really has.",
    )
    num_cpus_per_actor: float = Field(
        default=0.5,
        gt=0.0,
        description="CPUs each tokenizer actor reserves. Fractional on small machines, so read tasks keep "
        "a CPU and the pipeline cannot starve.",
    )
    on_bad_rows: Literal["skip", "fail"] = Field(
        default="fail",
        description="A row that cannot be used (missing text, unknown label, malformed JSON, undecodable "
        "bytes): 'fail' stops with an error naming it; 'skip' drops it, counts it and reports the count.",
    )
    limit: int | None = Field(
        default=None, ge=1, description="Read at most this many training rows (for smoke tests)."
    )
    shuffle: bool = Field(
        default=True,
        description="Shuffle the training rows once, globally, as they are tokenized (a source sorted by "
        "label, as IMDB is, would otherwise give single-class batches; the per-epoch buffer only mixes "
        "neighbours). Off: the shards keep the source's order.",
    )
    seed: int = Field(default=42, description="Seed for the validation hold-out and shuffling.")


class FromScratchConfig(_Section):
    """A new, randomly initialised model from an architecture config: for tiny models and the quickstart."""

    architecture: str = Field(
        description="A transformers model type, e.g. 'bert', 'gpt2', 't5', 'bart', 'distilbert'."
    )
    config: dict[str, int | float | str | bool | None] = Field(
        default_factory=dict,
        description="Overrides of the architecture's config, e.g. {hidden_size: 64, num_hidden_layers: 2}.",
    )
    tokenizer: str = Field(description="Directory of a tokenizer saved in the Hugging Face format.")


class LoraConfig(_Section):
    """LoRA hyperparameters (peft)."""

    r: int = Field(default=8, ge=1, description="Rank of the update matrices.")
    alpha: int = Field(default=16, ge=1, description="Scaling numerator: the update is scaled by alpha / r.")
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: list[str] | None = Field(
        default=None,
        description="Module names to adapt. Unset: a default for the architecture (e.g. query/value).",
    )


class ModelConfig(_Section):
    """What model is fine-tuned, for which task, and how (full or LoRA)."""

    task: TaskName = Field(description=f"The task. One of: {', '.join(TASK_NAMES)}.")
    name: str | None = Field(
        default=None,
        description="A Hugging Face hub id or a local model directory. Exactly one of `name` and "
        "`from_scratch` is set.",
    )
    revision: str | None = Field(default=None, description="Hub revision (branch, tag or commit).")
    tokenizer: str | None = Field(
        default=None, description="Tokenizer hub id or directory, when it differs from `name`."
    )
    trust_remote_code: bool = Field(
        default=False, description="Run code shipped with a hub model. Off unless you trust the repo."
    )
    from_scratch: FromScratchConfig | None = Field(
        default=None, description="Build a new model from an architecture config instead of loading one."
    )
    method: Literal["full", "lora"] = Field(
        default="full", description="Fine-tune every weight ('full') or train LoRA adapters ('lora')."
    )
    lora: LoraConfig = Field(
        default_factory=LoraConfig, description="LoRA settings, used when method is 'lora'."
    )

    @model_validator(mode="after")
    def _exactly_one_origin(self) -> ModelConfig:
        if (self.name is None) == (self.from_scratch is None):
            raise ValueError(
                "set exactly one of `name` (a hub id or model directory) and `from_scratch` "
                f"(an architecture config); got name={self.name!r}, from_scratch="
                f"{'set' if self.from_scratch else None}"
            )
        return self

    @property
    def tokenizer_source(self) -> str:
        """Where the tokenizer is loaded from."""
        if self.tokenizer:
            return self.tokenizer
        if self.from_scratch is not None:
            return self.from_scratch.tokenizer
        assert self.name is not None
        return self.name

    @property
    def tokenizer_revision(self) -> str | None:
        """The hub revision the tokenizer loads at: the model's, when the tokenizer is the model's own."""
        return self.revision if not self.tokenizer and self.name is not None else None


TRACKING_SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks")
"""MLflow tracking URI schemes `train.tracking.mlflow` takes (the database ones need SQLAlchemy, which the
full `mlflow` package brings and `mlflow-skinny` does not)."""


class TrackingConfig(_Section):
    """Experiment tracking beside TensorBoard: MLflow, when `mlflow` names a tracking URI."""

    mlflow: str | None = Field(
        default=None,
        description="MLflow tracking URI: 'http(s)://host:5000' (a tracking server), 'file:/abs/mlruns' (a "
        "local store, works offline), 'sqlite:///mlflow.db', 'databricks'; null: no MLflow. Needs "
        "`pip install 'rayformers[mlflow]'`.",
    )
    experiment: str | None = Field(
        default=None, description="MLflow experiment (created if missing); unset: the run's name."
    )
    run_name: str | None = Field(default=None, description="MLflow run name; unset: the run's name.")
    tags: dict[str, str] = Field(
        default_factory=dict, description="Extra tags on the MLflow run (team, dataset version, ...)."
    )

    @field_validator("mlflow")
    @classmethod
    def _is_a_tracking_uri(cls, uri: str | None) -> str | None:
        if uri is None:
            return None
        scheme = uri.partition(":")[0].lower()
        if scheme not in TRACKING_SCHEMES:
            raise ValueError(
                f"{uri!r} is not an MLflow tracking URI; write 'http(s)://host:port' (a tracking server), "
                "'file:/path/to/mlruns' (a local store), 'sqlite:///path/mlflow.db', a database URL "
                "(postgresql://, mysql://, mssql://) or 'databricks'"
            )
        if scheme in ("http", "https") and not uri.partition("://")[2].strip("/"):
            raise ValueError(f"{uri!r} names no host; write e.g. '{scheme}://mlflow.example.com:5000'")
        return uri


class TrainConfig(_Section):
    """The Ray Train run: workers, optimisation, evaluation, checkpoints."""

    num_workers: int = Field(default=2, ge=1, description="Data-parallel training workers.")
    use_gpu: bool = Field(default=False, description="Give each worker a GPU.")
    cpus_per_worker: float = Field(default=1.0, gt=0.0, description="CPUs each training worker reserves.")
    gpus_per_worker: float = Field(default=1.0, ge=0.0, description="GPUs per worker when `use_gpu` is true.")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        default="PACK", description="How workers are placed over nodes."
    )
    epochs: int = Field(default=3, ge=1, description="Passes over the training data (unless `max_steps`).")
    max_steps: int | None = Field(
        default=None, ge=1, description="Stop after this many optimizer steps (overrides `epochs`)."
    )
    batch_size: int = Field(default=16, ge=1, description="Examples per worker per forward pass.")
    gradient_accumulation_steps: int = Field(
        default=1, ge=1, description="Forward passes per optimizer step."
    )
    learning_rate: float = Field(default=5e-5, gt=0.0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(default=0.01, ge=0.0, description="Decoupled weight decay (AdamW).")
    scheduler: Literal["linear", "cosine", "constant"] = Field(
        default="linear", description="Learning-rate schedule after warmup."
    )
    warmup_ratio: float = Field(
        default=0.06, ge=0.0, lt=1.0, description="Fraction of steps spent warming up."
    )
    max_grad_norm: float | None = Field(default=1.0, gt=0.0, description="Gradient clipping norm; null: off.")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        default="auto",
        description="'auto': bf16 on GPUs that support it, else fp16 with a scaler on GPU, off on CPU.",
    )
    seed: int = Field(default=42, description="Seed for initialisation, dropout and data order.")

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, value: object) -> object:
        # YAML 1.1 reads a bare `mixed_precision: no` as false: it means "no", as written.
        return "no" if value is False else value

    eval_every_steps: int | None = Field(
        default=None, ge=1, description="Evaluate (and checkpoint) every N steps; null: once per epoch."
    )
    log_every_steps: int = Field(default=10, ge=1, description="Progress line every N steps.")
    metric: str | None = Field(
        default=None,
        description="Metric that ranks checkpoints (e.g. 'accuracy', 'f1', 'rougeL', 'perplexity'); unset: "
        "the task's default. A path to a local `evaluate` module also works.",
    )
    metric_mode: Literal["max", "min"] | None = Field(
        default=None, description="Whether higher or lower `metric` is better; unset: inferred."
    )
    keep_checkpoints: int = Field(default=2, ge=1, description="Keep the best K checkpoints by `metric`.")
    max_failures: int = Field(default=1, ge=-1, description="Worker failures tolerated (-1: unlimited).")
    storage_path: str = Field(
        default="runs",
        description="Where runs and checkpoints go: a local directory, NFS, s3:// or gs://. Multi-node "
        "clusters need shared storage.",
    )
    storage_is_shared: bool = Field(
        default=False,
        description="The local storage_path is a shared filesystem (NFS) mounted at the same path on every "
        "node; without it a local path is refused on a multi-node cluster.",
    )
    name: str | None = Field(
        default=None,
        description="Run name. Re-running with the same storage_path and name resumes the run.",
    )
    tracking: TrackingConfig = Field(
        default_factory=TrackingConfig,
        description="Experiment tracking beside TensorBoard: `tracking.mlflow` logs the run to MLflow.",
    )

    @property
    def metric_module(self) -> str | None:
        """`metric` when it names a local `evaluate` module (a path) rather than a built-in metric."""
        metric = self.metric
        return metric if metric is not None and ("/" in metric or metric.endswith(".py")) else None


class AutoscalingConfig(_Section):
    """Ray Serve autoscaling for one app's model deployment."""

    min_replicas: int = Field(default=1, ge=0, description="Fewest replicas (0 scales to zero when idle).")
    initial_replicas: int | None = Field(default=None, ge=0, description="Replicas at start.")
    max_replicas: int = Field(default=1, ge=1, description="Most replicas.")
    target_ongoing_requests: float = Field(
        default=2.0, gt=0.0, description="Ongoing requests per replica that autoscaling aims for."
    )
    upscale_delay_s: float = Field(default=30.0, ge=0.0, description="Load must last this long to scale up.")
    downscale_delay_s: float = Field(default=600.0, ge=0.0, description="Idle this long to scale down.")
    look_back_period_s: float = Field(
        default=30.0, gt=0.0, description="Window over which the ongoing requests are averaged."
    )

    @model_validator(mode="after")
    def _ordered(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas}): "
                "raise max_replicas or lower min_replicas"
            )
        if self.initial_replicas is not None and not (
            self.min_replicas <= self.initial_replicas <= self.max_replicas
        ):
            raise ValueError(
                f"initial_replicas ({self.initial_replicas}) must lie between min_replicas "
                f"({self.min_replicas}) and max_replicas ({self.max_replicas})"
            )
        return self


class ServeAppConfig(_Section):
    """One served application: a checkpoint behind `/{name}`."""

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9-]*$", description="App name and route prefix (lowercase, digits, dashes)."
    )
    checkpoint: str = Field(description="Checkpoint directory (local or cloud), as written by training.")
    task: TaskName | None = Field(
        default=None,
        description="The task; required only for a plain Hugging Face directory without manifest.",
    )
    adapters: dict[str, str] = Field(
        default_factory=dict,
        description="Extra LoRA adapters served on the same base, by name -> checkpoint directory.",
    )
    merge_lora: bool = Field(default=False, description="Merge a LoRA checkpoint into its base at load.")
    max_batch_size: int = Field(
        default=32,
        ge=1,
        description="Most requests answered together (dynamic batching): a batch forms from whatever "
        "waits while the model works, so a busy replica batches and an idle one answers at once.",
    )
    batch_wait_timeout_s: float | None = Field(
        default=None,
        ge=0.0,
        description="Longest a replica waits for more requests before it starts a batch, while fewer wait "
        "than its last batch held (0: at once; more makes fuller batches at the price of latency). Unset: "
        "the task's own, 0 for tasks answered in one forward, 100 ms for generation, whose requests end "
        "together and whose clients' next requests arrive some ms later: waiting for them saves a pass.",
    )
    max_batch_tokens: int | None = Field(
        default=None,
        ge=16,
        description="Padded tokens one forward may hold: a batch's inputs are sorted by length and cut into "
        "forwards of at most this many tokens, so short inputs are not padded to the longest. Unset: 512 on "
        "CPU (where a forward costs what its padded tokens cost, and 512 measured fastest), 16384 on GPU.",
    )
    max_call_tokens: int | None = Field(
        default=None,
        ge=64,
        description="Tokens one model call may hold, estimated from characters before tokenizing (a token "
        "per 3 bytes of UTF-8, which errs high for most text; each row at most max_length; a text per "
        "candidate label, a pair per document, generated tokens counted): a batch stops growing at it, and "
        "a request that alone needs more is a 413. Unset: 65536 on CPU, 1048576 on GPU.",
    )
    max_ongoing_requests: int | None = Field(
        default=None,
        ge=1,
        description="Requests a replica works on at once (its batches form from them); unset: twice "
        "max_batch_size.",
    )
    max_queued_requests: int = Field(
        default=100,
        ge=-1,
        description="Requests a replica holds beyond max_ongoing_requests before it answers 503 with "
        "Retry-After (backpressure); -1: unbounded.",
    )
    num_cpus: float | None = Field(
        default=None,
        gt=0.0,
        description="CPUs each replica reserves, and the torch threads it runs (rounded up). Unset: it "
        "reserves 1 CPU and runs a thread per core of its node, the fast choice for one app per node; set "
        "it when apps share nodes.",
    )
    num_gpus: float = Field(default=0.0, ge=0.0, description="GPUs per replica (fractions share a GPU).")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto", description="Weights' dtype: 'auto' is float16/bfloat16 on GPU, float32 on CPU."
    )
    autoscaling: AutoscalingConfig = Field(
        default_factory=AutoscalingConfig, description="Replica autoscaling."
    )
    max_inputs_per_request: int = Field(default=64, ge=1, description="Inputs per request before 413.")
    max_input_chars: int = Field(
        default=100_000,
        ge=1,
        description="Characters of any one text in a request (a document, a prompt, a chat message) "
        "before 422; longer ones cost the model thread tokenizer time only to be truncated.",
    )

    @model_validator(mode="after")
    def _batch_can_fill(self) -> ServeAppConfig:
        if self.max_ongoing_requests is not None and self.max_ongoing_requests < self.max_batch_size:
            raise ValueError(
                f"max_ongoing_requests ({self.max_ongoing_requests}) is below max_batch_size "
                f"({self.max_batch_size}), so no batch could ever fill: raise max_ongoing_requests, lower "
                "max_batch_size, or leave max_ongoing_requests unset (twice the batch size)"
            )
        return self


MIN_API_KEY_LENGTH = 16


def api_key_problems(keys: list[str], where: str) -> list[str]:
    """What makes keys unusable (`where[i]: ...`), never quoting a key: at least MIN_API_KEY_LENGTH
    printable ASCII characters, without spaces or commas (the environment variable separates keys with
    commas, and a header cannot hold the rest)."""
    problems = []
    for i, key in enumerate(keys):
        if len(key) < MIN_API_KEY_LENGTH or not all(33 <= ord(c) < 127 and c != "," for c in key):
            problems.append(
                f"{where}[{i}] (a key of {len(key)} characters) is not a usable API key: use at least "
                f"{MIN_API_KEY_LENGTH} printable ASCII characters without spaces or commas, e.g. the output "
                "of `openssl rand -hex 24`"
            )
    return problems


class ServeConfig(_Section):
    """Ray Serve: HTTP settings, access and limits, and the apps to serve."""

    model_config = ConfigDict(extra="forbid", validate_default=True, frozen=True, hide_input_in_errors=True)

    host: str = Field(default="127.0.0.1", description="HTTP host ('0.0.0.0' to listen on all interfaces).")
    port: int = Field(default=8000, ge=1, le=65535, description="HTTP port.")
    max_body_bytes: int = Field(
        default=1_000_000,
        ge=1024,
        description="Largest request body in bytes: a larger one is answered 413 in JSON; the server reads "
        "on up to 16 times this within the request deadline, so the client sees the answer, then closes the "
        "connection.",
    )
    request_timeout_s: float = Field(
        default=60.0,
        gt=0.0,
        le=3600.0,
        description="Longest a request may take until its answer starts before it is answered 504 in JSON "
        "(a stream's events may go on after its first one). Ray Serve's own timeout stays unset: it would "
        "answer in plain text and cut streams.",
    )
    api_keys: list[str] = Field(
        default_factory=list,
        repr=False,
        description="API keys, merged with the comma-separated RAYFORMERS_API_KEYS environment variable. "
        "With any key, every route but open_routes answers 401 unless the request sends "
        "`Authorization: Bearer <key>`. Keys in this list are written into `serve build` output; for a "
        "RayService, set the environment variable from a Kubernetes Secret instead.",
    )
    open_routes: list[str] = Field(
        default_factory=list,
        description="Paths answered without an API key (exact paths such as '/sentiment/info', or a prefix "
        "ending in '*'). Serve's own /-/healthz and /-/routes are answered by its proxy and always open.",
    )
    expose_paths: bool = Field(
        default=False,
        description="Show checkpoint paths and storage URIs in /info and the OpenAPI docs (false: hidden "
        "from clients).",
    )
    proxy_location: Literal["EveryNode", "HeadOnly"] = Field(
        default="EveryNode",
        description="Where Serve runs HTTP proxies: every node (behind a load balancer), or the head only "
        "(several nodes on one machine would otherwise fight over the port).",
    )
    apps: list[ServeAppConfig] = Field(
        default_factory=list,
        description="Apps to serve. Empty: one app from this run's best checkpoint, named after the task.",
    )

    @model_validator(mode="after")
    def _keys_are_usable(self) -> ServeConfig:
        # A model-level check, so the error names the key's position but never carries the keys.
        problems = api_key_problems(self.api_keys, "api_keys")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @field_validator("open_routes")
    @classmethod
    def _routes_are_paths(cls, routes: list[str]) -> list[str]:
        for route in routes:
            if not route.startswith("/"):
                raise ValueError(
                    f"open route {route!r} is not a path; write it from the root, e.g. '/{route}'"
                )
        return routes


class ClusterConfig(_Section):
    """Where the job runs: an embedded local Ray, an existing cluster, or a remote one."""

    address: str | None = Field(
        default=None,
        description="null: start an embedded local Ray; 'auto': join the cluster on this machine; "
        "'ray://host:10001' or a head address: join that cluster.",
    )
    num_cpus: int | None = Field(
        default=None, ge=1, description="CPUs of the embedded local Ray (unset: all of this machine's)."
    )
    num_gpus: int | None = Field(default=None, ge=0, description="GPUs of the embedded local Ray.")
    working_dir: str | None = Field(
        default=None, description="Shipped to a remote cluster as the runtime environment's working_dir."
    )
    pip: list[str] = Field(
        default_factory=list, description="Extra pip packages installed on a remote cluster's workers."
    )
    env_vars: dict[str, str] = Field(
        default_factory=dict, description="Environment variables set on every worker."
    )
    metrics_export_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Port where the embedded local Ray's metrics agent serves Prometheus metrics "
        "(http://host:PORT/metrics); unset: a free port Ray picks. A joined cluster's nodes set theirs "
        "with `ray start --metrics-export-port`.",
    )

    @model_validator(mode="after")
    def _metrics_port_is_ours_to_set(self) -> ClusterConfig:
        if self.metrics_export_port is not None and self.address is not None:
            raise ValueError(
                f"metrics_export_port ({self.metrics_export_port}) applies to an embedded local Ray only, and "
                f"address is {self.address!r}: start that cluster's nodes with `ray start "
                "--metrics-export-port=PORT` instead, and remove cluster.metrics_export_port"
            )
        return self


class RunConfig(_Section):
    """One run config: everything from raw data to a served endpoint."""

    data: DataConfig = Field(description="Data stage: sources, columns, labels, tokenization.")
    model: ModelConfig = Field(description="Model, task, and full or LoRA fine-tuning.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Ray Train settings.")
    serve: ServeConfig = Field(default_factory=ServeConfig, description="Ray Serve settings.")

    def without_secrets(self) -> RunConfig:
        """This config without its API keys: what training keeps (`summary.json`, which often sits in a
        shared bucket) and ships to its workers, neither of which needs them."""
        if not self.serve.api_keys:
            return self
        return self.model_copy(update={"serve": self.serve.model_copy(update={"api_keys": []})})

    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="Where it runs.")

    @property
    def run_name(self) -> str:
        """The run's directory name under `train.storage_path`: `train.name`, else `<task>-<method>`."""
        return self.train.name or f"{self.model.task}-{self.model.method}"


SECTIONS: dict[str, type[_Section]] = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "serve": ServeConfig,
    "cluster": ClusterConfig,
}
