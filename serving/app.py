"""Ray Serve application builders and the deploy config that `rayformers serve build` writes.

`build_app(AppArgs)` is one served checkpoint: its model deployment, which serves its HTTP routes itself.
`build_gateway(GatewayArgs)` is the app at `/`: the index, the OpenAI routes and JSON 404s. Both take
typed arguments, so a config file naming `rayformers.serving.app:build_app` with its `args` works unchanged with
`serve run FILE`, `serve deploy FILE` and a KubeRay RayService `serveConfigV2`.
"""

# No `from __future__ import annotations`: Ray Serve reads the builders' argument annotation to
# validate `args` into AppArgs / GatewayArgs, and a string annotation would hand them a plain dict.
from typing import Any

from ray.serve import Application

from rayformers.config import RunConfig, ServeAppConfig, ServeConfig
from rayformers.serving.access import env_keys
from rayformers.serving.args import DEPLOYMENT_FIELDS, AppArgs, GatewayApp, GatewayArgs, HttpArgs
from rayformers.serving.errors import CheckpointError
from rayformers.tasks import get_task
from rayformers.tasks.checkpoint import MANIFEST, read_manifest, resolve_checkpoint

__all__ = [
    "GATEWAY",
    "app_args",
    "build_app",
    "build_gateway",
    "checked",
    "deploy_config",
    "http_args",
    "task_of",
]

GATEWAY = "gateway"
_RESERVED = (GATEWAY, "apps", "v1", "docs", "openapi.json", "-")


def task_of(args: AppArgs) -> str:
    """The app's task: as configured, else as the checkpoint's manifest says (local or cloud)."""
    try:
        recorded: str | None = read_manifest(resolve_checkpoint(args.checkpoint)).task
    except FileNotFoundError:
        recorded = None
    except (OSError, ValueError) as err:  # unreachable storage, or no filesystem for its scheme
        if args.task:
            return args.task
        raise CheckpointError(
            f"serve.apps[{args.name}].checkpoint: cannot read {args.checkpoint}/{MANIFEST} ({err}); set the "
            "app's `task`"
        ) from err
    if recorded and args.task and recorded != args.task:
        raise CheckpointError(
            f"serve.apps[{args.name}]: task is {args.task!r} but {args.checkpoint} holds a {recorded!r} "
            "checkpoint; fix the app's task or its checkpoint"
        )
    task = recorded or args.task
    if task is None:
        raise CheckpointError(
            f"serve.apps[{args.name}].checkpoint: {args.checkpoint} has no {MANIFEST} (not a "
            "rayformers checkpoint, or not trained yet); train it first, or set the app's `task` to serve a "
            "plain Hugging Face directory"
        )
    return task


def build_app(args: AppArgs) -> Application:
    """One served checkpoint: `/{name}/predict`, `/{name}/info`, `/{name}/docs`, on its model replicas."""
    from rayformers.serving.ingress import app_deployment

    task = get_task(task_of(args))
    args = args.model_copy(update={"task": task.name})
    return app_deployment(args, task).bind(args.model_dump(mode="json"))  # type: ignore[no-any-return]


def build_gateway(args: GatewayArgs) -> Application:
    """The app at `/`: index, OpenAI-compatible `/v1/*`, JSON 404 for unknown apps."""
    from rayformers.serving.gateway import gateway_deployment

    return gateway_deployment(args).bind()  # type: ignore[no-any-return]


def app_args(cfg: RunConfig) -> list[AppArgs]:
    """The apps a run config serves; with none listed, this run's best checkpoint, named after its task."""
    apps = list(cfg.serve.apps)
    if not apps:
        storage = cfg.train.storage_path.rstrip("/")
        apps = [ServeAppConfig(name=cfg.model.task, checkpoint=f"{storage}/{cfg.run_name}/best")]
    return checked(cfg.serve, apps)


def checked(serve: ServeConfig, apps: list[ServeAppConfig]) -> list[AppArgs]:
    """`apps` as builder arguments, after checking their names can all be routes."""
    names = [a.name for a in apps]
    for name in names:
        if name in _RESERVED:
            raise CheckpointError(f"serve.apps: the name {name!r} is reserved; rename the app")
        if names.count(name) > 1:
            raise CheckpointError(f"serve.apps: two apps are named {name!r}; app names must be unique")
    http = http_args(serve)
    return [AppArgs(**a.model_dump(), http=http) for a in apps]


def http_args(serve: ServeConfig) -> HttpArgs:
    """What every route of `serve` shares. Keys from RAYFORMERS_API_KEYS are not copied in (each replica
    reads its own), but their presence now makes a replica without keys refuse to start."""
    return HttpArgs(
        max_body_bytes=serve.max_body_bytes,
        request_timeout_s=serve.request_timeout_s,
        api_keys=list(serve.api_keys),
        require_api_keys=bool(serve.api_keys or env_keys()),
        open_routes=list(serve.open_routes),
        expose_paths=serve.expose_paths,
    )


def deploy_config(serve: ServeConfig, apps: list[AppArgs]) -> dict[str, Any]:
    """A Ray Serve deploy config (`ServeDeploySchema`) for `apps` plus the gateway.

    Each app's deployment options (autoscaling, `max_ongoing_requests`, `max_queued_requests`,
    `ray_actor_options`) are in its `deployments:` entry, which Serve applies over the code's: an edit to
    autoscaling or `max_ongoing_requests` there is a lightweight update that keeps the replicas running.
    The `args` hold what the replica's code reads; Serve restarts an app's replicas on any edit to them."""
    tasks = {a.name: task_of(a) for a in apps}
    applications = [
        {
            "name": a.name,
            "route_prefix": f"/{a.name}",
            "import_path": "rayformers.serving.app:build_app",
            "args": a.model_copy(update={"task": tasks[a.name]}).model_dump(
                mode="json", exclude=set(DEPLOYMENT_FIELDS)
            ),
            "deployments": [{"name": "Model", **a.deployment_options()}],
        }
        for a in apps
    ]
    gateway = GatewayArgs(
        apps=[
            GatewayApp(
                name=a.name,
                task=tasks[a.name],  # type: ignore[arg-type]
                adapters=sorted(a.adapters),
                max_inputs_per_request=a.max_inputs_per_request,
            )
            for a in apps
        ],
        http=apps[0].http if apps else http_args(serve),
    )
    applications.append(
        {
            "name": GATEWAY,
            "route_prefix": "/",
            "import_path": "rayformers.serving.app:build_gateway",
            "args": gateway.model_dump(mode="json"),
        }
    )
    return {
        "proxy_location": serve.proxy_location,
        "http_options": {"host": serve.host, "port": serve.port},
        "applications": applications,
    }
