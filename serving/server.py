"""`rayformers serve`: deploy every app of a config (and the gateway) on Ray Serve, print where they
answer, block until Ctrl-C or SIGTERM, then shut Serve, and any Ray this process started, down."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import Any

from rayformers.config import ClusterConfig, ServeConfig
from rayformers.serving.args import AppArgs, GatewayArgs

__all__ = ["STOP_SIGNALS", "Served", "block_stop_signals", "deploy", "serve_until_stopped"]

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def block_stop_signals() -> None:
    """Hold Ctrl-C and SIGTERM for `serve_until_stopped` to take. Call it before Ray starts: threads
    inherit the mask, so none of Ray's own threads (whose crash handler turns SIGTERM into an abort)
    ever receives them."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


class Served:
    """Deployed apps: their URLs, and how to take them down."""

    def __init__(self, session: Any, urls: dict[str, str], base: str) -> None:
        self.session, self.urls, self.base = session, urls, base

    def shutdown(self) -> None:
        from ray import serve

        try:
            serve.shutdown()
        finally:
            self.session.close()


def _base_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{shown}:{port}"


def deploy(
    serve_cfg: ServeConfig,
    apps: list[AppArgs],
    cluster: ClusterConfig,
    progress: Callable[[str], None] = print,
) -> Served:
    """Start or join Ray, start Serve on the configured host and port, and deploy `apps` + the gateway.
    Returns once every app answers."""
    from ray import serve

    from rayformers.cluster import connect
    from rayformers.serving.access import env_keys
    from rayformers.serving.app import build_app, build_gateway, deploy_config

    # Keys in this process's RAYFORMERS_API_KEYS go to the replicas with their arguments, which no file
    # holds: the nodes of a joined cluster need not have the variable themselves.
    extra = env_keys()
    apps = [
        a.model_copy(update={"http": a.http.model_copy(update={"api_keys": [*a.http.api_keys, *extra]})})
        for a in apps
    ]
    config = deploy_config(serve_cfg, apps)
    session = connect(cluster)
    try:
        serve.start(http_options=config["http_options"], proxy_location=config["proxy_location"])
        base = _base_url(serve_cfg.host, serve_cfg.port)
        urls, targets = {}, []
        for app in config["applications"]:
            if app["import_path"].endswith(":build_gateway"):
                target = build_gateway(GatewayArgs.model_validate(app["args"]))
            else:
                progress(f"[rayformers] deploying {app['name']} from {app['args']['checkpoint']} ...")
                target = build_app(AppArgs.model_validate(app["args"]))
                urls[app["name"]] = f"{base}{app['route_prefix']}"
            targets.append(serve.RunTarget(target, name=app["name"], route_prefix=app["route_prefix"]))
        # All apps start together (their replicas load in parallel); this returns once every one runs.
        serve.run_many(targets)
    except BaseException:
        try:
            serve.shutdown()
        finally:
            session.close()
        raise
    return Served(session, urls, base)


def serve_until_stopped(served: Served, print_: Callable[[str], None] = print) -> None:
    """Print each app's routes, then wait for Ctrl-C or SIGTERM and shut down cleanly."""
    for name, url in served.urls.items():
        print_(f"{name}: POST {url}/predict   GET {url}/info   docs {url}/docs")
    print_(f"OpenAI-compatible routes: {served.base}/v1   index: {served.base}/")
    print_("Serving; Ctrl-C or SIGTERM stops.")
    sys.stdout.flush()
    block_stop_signals()
    try:
        received = signal.sigwait(STOP_SIGNALS)
        print_(f"{signal.Signals(received).name}: shutting down ...")
    finally:
        served.shutdown()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
