"""The served apps' Prometheus metrics: their names, tags and buckets, and `ServingMetrics`, which the
HTTP guard, the batcher, the adapters and the replica record through.

They go through Ray's metrics API (`ray.serve.metrics`): each Ray node's metrics agent exports them in
Prometheus' text format on the node's metrics export port (`ray.nodes()[i]["MetricsExportPort"]`;
`cluster.metrics_export_port` fixes it for an embedded Ray, `ray start --metrics-export-port` for a
cluster). Ray prefixes every name with `ray_` and counters also get `_total`, so `rayformers_requests`
is scraped as `ray_rayformers_requests_total`. Inside a Serve replica Ray adds the tags `application`,
`deployment` and `replica` itself; every metric here also carries `app`, the Serve application's name
(the rayformers app, or `gateway`), so that it reads the same outside Serve.

Recording never fails a request: a metric that cannot be recorded is logged once per process, and the
request goes on. Each record is a few microseconds (a Ray metric call); the request path pays two per
request (count and latency) and one or two per batch.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BATCH_SIZE",
    "BATCH_TOKENS",
    "CLIENT_GONE",
    "LATENCY_BUCKETS_S",
    "METRICS",
    "UNKNOWN_ROUTE",
    "MetricSpec",
    "ServingMetrics",
    "app_label",
    "route_label",
]

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class MetricSpec:
    """One metric as Ray registers it (Prometheus adds `ray_` before the name, and `_total` after a
    counter's)."""

    name: str
    kind: str
    """`counter`, `histogram` or `gauge`."""
    description: str
    tags: tuple[str, ...]
    boundaries: tuple[float, ...] = ()


LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
"""Request latency buckets, in seconds: a tiny model's answer up to past the default 60 s deadline."""
BATCH_SIZE = (1, 2, 4, 8, 16, 32, 64, 128)
BATCH_TOKENS = (64, 256, 1024, 4096, 16384, 65536)

REQUESTS = MetricSpec(
    "rayformers_requests",
    "counter",
    "HTTP requests answered, by app, route template and status (499: the client left before any answer).",
    ("app", "route", "status"),
)
LATENCY = MetricSpec(
    "rayformers_request_latency_seconds",
    "histogram",
    "Seconds from a request's arrival to the end of its answer (a stream's last event), by app and route.",
    ("app", "route"),
    LATENCY_BUCKETS_S,
)
BATCH = MetricSpec(
    "rayformers_batch_size", "histogram", "Requests that rode in one batch.", ("app",), BATCH_SIZE
)
TOKENS = MetricSpec(
    "rayformers_batch_tokens",
    "histogram",
    "Padded tokens the forwards of one batch held.",
    ("app",),
    BATCH_TOKENS,
)
QUEUE = MetricSpec(
    "rayformers_queue_length",
    "gauge",
    "Requests waiting in a replica's batch queue for the next batch.",
    ("app",),
)
ADAPTER_LOADS = MetricSpec(
    "rayformers_adapter_loads",
    "counter",
    "LoRA adapters loaded on a replica (Serve's cache misses).",
    ("app",),
)
ADAPTER_EVICTIONS = MetricSpec(
    "rayformers_adapter_evictions",
    "counter",
    "LoRA adapters removed from a replica after Serve evicted them (once no request held them).",
    ("app",),
)
MODEL_ERRORS = MetricSpec(
    "rayformers_model_errors",
    "counter",
    "Requests the model failed on (answered 500), adapters that would not load included.",
    ("app",),
)
METRICS = (REQUESTS, LATENCY, BATCH, TOKENS, QUEUE, ADAPTER_LOADS, ADAPTER_EVICTIONS, MODEL_ERRORS)

UNKNOWN_ROUTE = "unknown"
"""The route label of every path no route serves (404s, the gateway's catch-all): a client's made-up paths
must not each become a new series."""
CLIENT_GONE = 499
"""The status recorded for a request whose client left before any answer began (nginx's convention)."""
_CATCH_ALL = re.compile(r"/\{[^{}:]+:path\}")


def route_label(scope: Mapping[str, Any], routes: Iterable[Any] = ()) -> str:
    """The template of the route that served `scope` (`/predict`, `/v1/chat/completions`), never the raw
    path. Starlette leaves the matched route in the scope; for a request answered before routing (a
    401, 408 or 413 from the guard) `routes` are matched here, a full match before a partial one (a 405)."""
    route = scope.get("route")
    if route is None:
        route = _match(scope, routes)
    path = getattr(route, "path", None)
    if not isinstance(path, str) or _CATCH_ALL.fullmatch(path):
        return UNKNOWN_ROUTE
    return path


def _match(scope: Mapping[str, Any], routes: Iterable[Any]) -> Any:
    from starlette.routing import Match

    partial = None
    for route in routes:
        try:
            found, _ = route.matches(scope)
        except Exception:  # a route that cannot read this scope serves none of it
            continue
        if found is Match.FULL:
            return route
        if found is Match.PARTIAL and partial is None:
            partial = route
    return partial


def app_label(fallback: str) -> str:
    """The Serve application this process serves (its replica context), else `fallback`."""
    try:
        from ray.serve.context import _get_internal_replica_context

        context = _get_internal_replica_context()
    except Exception:
        context = None
    name = getattr(context, "app_name", None) if context is not None else None
    return name or fallback


@functools.cache
def _registered() -> dict[str, Any]:
    """The process's Ray metric objects, created once (the guard and the replica of an app share a
    process, and a name is registered once)."""
    from ray.serve.metrics import Counter, Gauge, Histogram

    made: dict[str, Any] = {}
    for spec in METRICS:
        tags: Any = spec.tags  # Ray annotates `tuple[str]` where it means any tuple of names
        if spec.kind == "histogram":
            made[spec.name] = Histogram(
                spec.name, description=spec.description, boundaries=list(spec.boundaries), tag_keys=tags
            )
        elif spec.kind == "counter":
            made[spec.name] = Counter(spec.name, description=spec.description, tag_keys=tags)
        else:
            made[spec.name] = Gauge(spec.name, description=spec.description, tag_keys=tags)
    return made


_warned = False


def _failed(what: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        logger.warning("recording the %s metric failed; requests go on without it", what, exc_info=True)


class ServingMetrics:
    """What one app records in this process. Every method swallows its own failure (logged once)."""

    def __init__(self, app: str) -> None:
        self.app = app
        self._tags = {"app": app}
        try:
            self._metrics: dict[str, Any] | None = _registered()
        except Exception:
            self._metrics = None
            _failed("registration of every")

    def _record(
        self, spec: MetricSpec, method: str, value: float, tags: dict[str, str] | None = None
    ) -> None:
        if self._metrics is None:
            return
        try:
            getattr(self._metrics[spec.name], method)(value, tags=tags if tags is not None else self._tags)
        except Exception:
            _failed(spec.name)

    def request(self, route: str, status: int, seconds: float) -> None:
        """One answered HTTP request."""
        self._record(REQUESTS, "inc", 1, {"app": self.app, "route": route, "status": str(status)})
        self._record(LATENCY, "observe", seconds, {"app": self.app, "route": route})

    def batch(self, size: int) -> None:
        self._record(BATCH, "observe", size)

    def batch_tokens(self, tokens: int) -> None:
        self._record(TOKENS, "observe", tokens)

    def queue_length(self, waiting: int) -> None:
        self._record(QUEUE, "set", waiting)

    def adapter_loaded(self) -> None:
        self._record(ADAPTER_LOADS, "inc", 1)

    def adapter_evicted(self) -> None:
        self._record(ADAPTER_EVICTIONS, "inc", 1)

    def model_errors(self, requests: int) -> None:
        if requests:
            self._record(MODEL_ERRORS, "inc", requests)
