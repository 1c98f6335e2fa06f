"""Stop signals while `rayformers serve` deploys, on real signals sent to this process: a held Ctrl-C or
SIGTERM stops the deploy as `Interrupted`, and the CLI exits with 128 + the signal. (The deploy itself,
on a real Ray, is tests/e2e/test_serve_cli.py::test_ctrl_c_while_a_deploy_waits_stops_it.)"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from rayformers.serving import server


class _Unheld(Exception):
    """A stop signal reached a handler: it was not held."""


def _send(signum: int) -> None:
    """`kill` this process with `signum`, as it reaches a process whose other threads all hold it: a
    thread started in the pytest process before the test (by an import) may not."""
    signal.pthread_kill(threading.main_thread().ident or 0, signum)


@pytest.fixture
def held_signals(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This test's stop signals: a signal that is not held raises `_Unheld` instead of ending pytest, and
    the mask and the handlers are as before afterwards, with nothing left pending."""

    def unheld(signum: int, _frame: object) -> None:
        raise _Unheld(signal.Signals(signum).name)

    mask = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    handlers = {s: signal.signal(s, unheld) for s in server.STOP_SIGNALS}
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_BLOCK, server.STOP_SIGNALS)
        while signal.sigtimedwait(server.STOP_SIGNALS, 0) is not None:
            pass
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for s, handler in handlers.items():
            signal.signal(s, handler)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_held_stop_signal_stops_a_stoppable_wait(held_signals: None, signum: int, capsys) -> None:
    server.block_stop_signals()
    started = time.monotonic()
    server._take_stop_signal(0.2)  # nothing sent: it waits, and returns
    assert time.monotonic() - started >= 0.15
    _send(signum)
    with pytest.raises(server.Interrupted) as caught:
        server._take_stop_signal(5)
    assert caught.value.signum == signum
    name = signal.Signals(signum).name
    assert f"{name} stopped the deploy before every app was running" in str(caught.value)
    assert f"[rayformers] {name}: stopping the deploy" in capsys.readouterr().out


def test_the_cli_exits_with_128_plus_the_signal_that_stopped_a_deploy(
    held_signals: None, monkeypatch: pytest.MonkeyPatch, tmp_path, capsys
) -> None:
    """`rayformers serve` holds the signals before the deploy, asks for a stoppable one, and a SIGTERM
    that stops it exits 143 (a Ctrl-C 130) with a line saying so."""
    from rayformers.cli.main import main

    asked: dict[str, Any] = {}

    def deploy_until_sigterm(*args: Any, stoppable: bool = False, **kwargs: Any) -> server.Served:
        """Stands in for Ray: a SIGTERM arrives while the apps load."""
        asked["stoppable"] = stoppable
        _send(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            server._take_stop_signal(server.POLL_S)
        raise AssertionError("the SIGTERM was never taken")

    monkeypatch.setattr(server, "deploy", deploy_until_sigterm)
    monkeypatch.setenv("RAY_AUTH_MODE", os.environ.get("RAY_AUTH_MODE", "token"))  # main() sets it else
    code = main(["serve", "--checkpoint", str(tmp_path), "--task", "text-classification"])
    assert asked == {"stoppable": True}
    assert code == 143
    assert "interrupted: SIGTERM stopped the deploy before every app was running" in capsys.readouterr().err


def test_a_deploy_that_waits_for_replicas_says_which_every_few_seconds(monkeypatch) -> None:
    """Issue 13: a deploy is never silent while it waits; every `every_s` it names the apps still loading,
    with their status, and it stops saying so once all are running."""
    from types import SimpleNamespace

    from ray import serve
    from ray.serve.schema import ApplicationStatus

    looks = iter(
        [{"a": ApplicationStatus.DEPLOYING}] * 3
        + [{"a": ApplicationStatus.RUNNING, "b": ApplicationStatus.DEPLOYING}] * 3
        + [{"a": ApplicationStatus.RUNNING, "b": ApplicationStatus.RUNNING}]
    )
    monkeypatch.setattr(
        serve,
        "status",
        lambda: SimpleNamespace(
            applications={n: SimpleNamespace(status=s, message="") for n, s in next(looks).items()}
        ),
    )
    clock = iter(range(100))
    monkeypatch.setattr(server.time, "monotonic", lambda: float(next(clock)))
    lines: list[str] = []
    server._wait_until_running(["a", "b"], lambda _s: None, lines.append, every_s=2)
    assert lines == [
        "[rayformers] 0/2 apps running after 2 s; waiting for a (deploying), b (not started)",
        "[rayformers] 1/2 apps running after 4 s; waiting for b (deploying)",
        "[rayformers] 1/2 apps running after 6 s; waiting for b (deploying)",
    ]


def test_taking_down_a_deploy_on_a_shared_serve_removes_only_its_own_apps(monkeypatch) -> None:
    """On a joined cluster whose Serve runs other apps, stopping (or a failed deploy) deletes this
    deploy's apps and leaves Serve and the others up; a Serve of its own apps alone shuts down."""
    from ray import serve

    calls: list[tuple[str, str | None]] = []
    monkeypatch.setattr(serve, "delete", lambda name, *a, **k: calls.append(("delete", name)))
    monkeypatch.setattr(serve, "shutdown", lambda *a, **k: calls.append(("shutdown", None)))
    closed: list[bool] = []
    session = type("Session", (), {"close": lambda self: closed.append(True)})()
    server.Served(session, {}, "http://x", ["reviews", "gateway"], frozenset({"theirs"})).shutdown()
    assert calls == [("delete", "reviews"), ("delete", "gateway")] and closed == [True]
    calls.clear()
    server.Served(session, {}, "http://x", ["reviews", "gateway"], frozenset()).shutdown()
    assert calls == [("shutdown", None)]
