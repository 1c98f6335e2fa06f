"""A user's project directory, as ML projects have them: its own packages named like rayformers' stages
(`data`, `training`, `serving`, `cluster`), whose modules fail loudly if anything imports them, and a run
config whose data lives elsewhere. The e2e tests run rayformers from such a directory."""

from __future__ import annotations

from pathlib import Path

__all__ = ["SHADOWED", "user_project"]

REPO = Path(__file__).resolve().parents[1]
SHADOWED = ("data", "training", "serving", "cluster")
_MODULES = ("rows", "pipeline", "preprocess", "app", "replica", "loop", "trainer", "session")


def user_project(root: Path, config: str = "configs/text-classification/lora.yaml") -> Path:
    """Make `root` such a project, with the shipped `config` as `run.yaml` (sample paths made absolute)."""
    root.mkdir(parents=True)
    for name in SHADOWED:
        (root / name).mkdir()
        (root / name / "__init__.py").write_text("")
        for module in _MODULES:
            (root / name / f"{module}.py").write_text(
                f'raise ImportError("the user project\'s {name}.{module}")\n'
            )
    text = (REPO / config).read_text(encoding="utf-8")
    (root / "run.yaml").write_text(text.replace("data/samples", str(REPO / "data/samples")), encoding="utf-8")
    return root
