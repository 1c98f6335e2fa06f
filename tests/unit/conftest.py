"""Unit tests never start Ray (that is what makes `make test-fast` fast and safe to run anywhere)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a unit test started Ray: move it to tests/integration (one Ray per session)")

    monkeypatch.setattr(ray, "init", refuse)
