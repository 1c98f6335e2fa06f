"""`rayformers serve`: deploy every app of a config (and the gateway) on Ray Serve, print where they
answer, block until Ctrl-C or SIGTERM, then shut Serve, and any Ray this process started, down."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from rayformers.config import ClusterConfig, ServeConfig
from rayformers.serving.args import AppArgs, GatewayArgs

__all__ = ["STOP_SIGNALS", "Interrupted", "Served", "block_stop_signals", "deploy", "serve_until_stopped"]

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
POLL_S = 0.5
# How often a deploy that is still waiting for replicas says so.
PROGRESS_S = 5.0
"""How often a deploy looks at its apps' status while they load, and so how soon it sees a stop signal."""


def block_stop_signals() -> None:
    """Hold Ctrl-C and SIGTERM for `serve_until_stopped` to take. Call it before Ray starts: threads
    inherit the mask, so none of Ray's own threads (whose crash handler turns SIGTERM into an abort)
    ever receives them."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a deploy, and what it had started is taken down. `signum` is the
    signal: the CLI exits with 128 + signum (130 for SIGINT, 143 for SIGTERM), as a shell does."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(
            f"{signal.Signals(signum).name} stopped the deploy before every app was running; "
            "what it had started is shut down"
        )


def _take_stop_signal(wait_s: float) -> None:
    """Wait up to `wait_s` for a held (`block_stop_signals`) Ctrl-C or SIGTERM; raise `Interrupted` if
    one came."""
    received = signal.sigtimedwait(STOP_SIGNALS, wait_s)
    if received is not None:
        name = signal.Signals(received.si_signo).name
        print(f"[rayformers] {name}: stopping the deploy and taking down what it started ...", flush=True)
        raise Interrupted(received.si_signo)


class Served:
    """Deployed apps: their URLs, and how to take them down."""

    def __init__(
        self, session: Any, urls: dict[str, str], base: str, names: list[str], others: frozenset[str]
    ) -> None:
        self.session, self.urls, self.base = session, urls, base
        self.names, self.others = names, others

    def shutdown(self) -> None:
        try:
            take_down(self.names, self.others)
        finally:
            self.session.close()


def take_down(names: list[str], others: frozenset[str]) -> None:
    """Remove the apps `names` this process deployed. A Serve that also runs `others` (apps deployed by
    someone else on a joined cluster) keeps running, with them; a Serve of ours alone shuts down."""
    from ray import serve

    if not others:
        serve.shutdown()
        return
    for name in names:
        serve.delete(name)


def _base_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{shown}:{port}"


def deploy(
    serve_cfg: ServeConfig,
    apps: list[AppArgs],
    cluster: ClusterConfig,
    progress: Callable[[str], None] = print,
    stoppable: bool = False,
) -> Served:
    """Start or join Ray, start Serve on the configured host and port, and deploy `apps` + the gateway.
    Returns once every app answers; on any failure, takes down what it had started first.

    `stoppable`: the process holds its stop signals (`block_stop_signals`), and Ctrl-C or SIGTERM stops
    the deploy (raising `Interrupted`) between its steps, or within `POLL_S` while the apps load.
    Without it a held signal waits, unheard, until every replica has loaded (forever, for a replica that
    cannot be placed)."""
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
    by_name = {a.name: a for a in apps}
    # The signals are taken here, in the thread that deploys, not in a second one: an embedded Ray's
    # processes die with the thread that spawned them (their parent-death signal), and a Ray call waiting
    # in one thread while another shuts Ray down ends in SystemExit(0) or in Ray's hard exit.
    pause: Callable[[float], None] = _take_stop_signal if stoppable else time.sleep
    session = connect(cluster)  # a signal during Ray's start is held, and taken just below
    names = [app["name"] for app in config["applications"]]
    others: frozenset[str] = frozenset()
    try:
        pause(0)
        serve.start(http_options=config["http_options"], proxy_location=config["proxy_location"])
        # Apps already on a joined cluster's Serve are not ours to take down with ours.
        others = frozenset(serve.status().applications) - set(names)
        pause(0)
        base = _base_url(serve_cfg.host, serve_cfg.port)
        urls, targets = {}, []
        for app in config["applications"]:
            if app["import_path"].endswith(":build_gateway"):
                target = build_gateway(GatewayArgs.model_validate(app["args"]))
            else:
                progress(f"[rayformers] deploying {app['name']} from {app['args']['checkpoint']} ...")
                # From the whole AppArgs: the config's `args` leave the deployment options (autoscaling,
                # GPUs) to its `deployments:` entry, which only `serve deploy` applies.
                target = build_app(by_name[app["name"]])
                urls[app["name"]] = f"{base}{app['route_prefix']}"
            targets.append(serve.RunTarget(target, name=app["name"], route_prefix=app["route_prefix"]))
        pause(0)
        # All apps start together (their replicas load in parallel). Serve's own wait for them cannot be
        # stopped but by shutting Serve down under it: this function waits itself, and takes the signals.
        serve.run_many(targets, wait_for_applications_running=False)
        _wait_until_running([t.name for t in targets], pause, progress)
    except BaseException:
        try:
            # An embedded Ray takes its Serve down with it; Serve's graceful shutdown would first wait
            # out the grace period (20 s) of every replica still waiting to be placed.
            if not (session.owned and session.address is None):
                take_down(names, others)
        finally:
            session.close()
        raise
    return Served(session, urls, base, names, others)


def _wait_until_running(
    names: list[str],
    pause: Callable[[float], None],
    progress: Callable[[str], None] = print,
    every_s: float = PROGRESS_S,
) -> None:
    """Return once every app in `names` is RUNNING, as `serve.run` waits; an app whose deploy failed
    raises Serve's own error. `pause(POLL_S)` between looks; every `every_s` seconds of waiting, a line
    through `progress` says which apps are still loading (a replica waiting for resources can wait long)."""
    from ray import serve
    from ray.serve.schema import ApplicationStatus

    waiting = list(names)
    started = last = time.monotonic()
    while True:
        statuses = serve.status().applications
        for name in list(waiting):
            app = statuses.get(name)
            if app is not None and app.status == ApplicationStatus.RUNNING:
                waiting.remove(name)
            elif app is not None and app.status == ApplicationStatus.DEPLOY_FAILED:
                raise RuntimeError(f"Deploying application {name} failed: {app.message}")
        if not waiting:
            return
        now = time.monotonic()
        if now - last >= every_s:
            last = now
            running = len(names) - len(waiting)
            loading = ", ".join(
                f"{n} ({statuses[n].status.value.lower()})" if n in statuses else f"{n} (not started)"
                for n in waiting
            )
            progress(
                f"[rayformers] {running}/{len(names)} apps running after {now - started:.0f} s; "
                f"waiting for {loading}"
            )
        pause(POLL_S)


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
