"""The structure ARCHITECTURE.md describes, checked on the source: imports go one way between the layers,
no module import circle exists, and no code outside the task modules asks for a task by name.

Both checks read the code with `ast` (nothing is imported), so a violation is reported with its file and
line; each check also runs once on a copy of the tree with a violation planted, to show it can fail.
"""

from __future__ import annotations

import ast
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def package_dirs(root: Path) -> dict[str, Path]:
    """Import name -> folder, from pyproject's package-dir mapping (`rayformers.data` -> data/, ...)."""
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    return {name: root / folder for name, folder in config["tool"]["setuptools"]["package-dir"].items()}


def modules(root: Path) -> dict[str, Path]:
    """Every project module by its import name."""
    found: dict[str, Path] = {}
    for package, folder in package_dirs(root).items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every import that runs (module level or inside functions), leaving out
    `if TYPE_CHECKING:` blocks: type-only imports are erased at run time."""
    found: list[tuple[int, str, list[str]]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking_only(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.extend((child.lineno, alias.name, []) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.lineno, child.module, [a.name for a in child.names]))
            visit(child)

    visit(tree)
    return found


LAYERS = ("vocabulary", "data", "tasks", "training", "serving", "cluster", "cli")
# What each layer may import. The vocabulary is pure; data sits on it; the task modules on data; training
# and serving on the task layer and never on each other (the checkpoint directory is their contract);
# cluster/ starts or joins Ray and knows only the vocabulary; the CLI is the front door above all.
ALLOWED = {
    "vocabulary": {"vocabulary"},
    "data": {"vocabulary", "data"},
    "tasks": {"vocabulary", "data", "tasks"},
    "training": {"vocabulary", "data", "tasks", "training"},
    "serving": {"vocabulary", "data", "tasks", "serving", "cluster"},
    "cluster": {"vocabulary", "cluster"},
    "cli": set(LAYERS),
}


def layer(module: str) -> str:
    if module == "rayformers.tasks":
        return "vocabulary"  # the task table itself: names and import paths only
    for name in ("data", "tasks", "training", "serving", "cluster", "cli"):
        if module == f"rayformers.{name}" or module.startswith(f"rayformers.{name}."):
            return name
    return "vocabulary"


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    path: Path
    line: int


def import_edges(root: Path) -> list[Edge]:
    known = modules(root)
    edges = []
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for line, module, names in _runtime_imports(tree):
            if not module.startswith("rayformers"):
                continue
            targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in known] or [module]
            edges.extend(Edge(name, t, path, line) for t in targets if t in known)
    return edges


def direction_violations(root: Path) -> list[str]:
    problems = []
    for edge in import_edges(root):
        source, target = layer(edge.source), layer(edge.target)
        if target not in ALLOWED[source]:
            where = edge.path.relative_to(root)
            problems.append(f"{where}:{edge.line}: {edge.source} ({source}) imports {edge.target} ({target})")
    return problems


def import_cycles(root: Path) -> list[list[str]]:
    """Every circle of modules that import each other (strongly connected components of size > 1)."""
    graph: dict[str, set[str]] = {}
    for edge in import_edges(root):
        if edge.source != edge.target:
            graph.setdefault(edge.source, set()).add(edge.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return cycles


def task_name_uses(root: Path, task_names: tuple[str, ...]) -> list[str]:
    """Where code outside the task modules compares a task's name, or keeps a table keyed by task."""
    names = set(task_names)
    tasks_dir = package_dirs(root)["rayformers.tasks"]
    files = [p for folder in package_dirs(root).values() for p in folder.rglob("*.py")]
    files += sorted((root / "k8s").glob("*.py"))
    found = []

    def named(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in names
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return any(isinstance(e, ast.Constant) and e.value in names for e in node.elts)
        return False

    for path in sorted(set(files)):
        if path.is_relative_to(tasks_dir):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            what = None
            if isinstance(node, ast.Compare) and any(named(n) for n in (node.left, *node.comparators)):
                what = "compares a task name"
            elif isinstance(node, ast.Dict):
                keys = [k.value for k in node.keys if isinstance(k, ast.Constant)]
                if keys and len(keys) == len(node.keys) and all(k in names for k in keys):
                    what = "keeps a table keyed by task name"
            elif isinstance(node, ast.match_case) and isinstance(node.pattern, ast.MatchValue):
                what = "matches a task name" if named(node.pattern.value) else None
            if what:
                line = node.pattern.lineno if isinstance(node, ast.match_case) else node.lineno
                found.append(
                    f"{path.relative_to(root)}:{line}: {what}; ask the task (rayformers.tasks.get_task)"
                )
    return found


# --- the checks on the project ---------------------------------------------------------------------


def test_imports_go_one_way_between_the_layers():
    assert direction_violations(REPO) == []


def test_no_module_import_circle():
    assert import_cycles(REPO) == []


def test_no_task_name_is_compared_outside_the_task_modules():
    from rayformers.tasks import TASK_NAMES

    assert task_name_uses(REPO, TASK_NAMES) == []


def test_every_package_folder_is_in_the_distribution():
    """A sub-package missing from pyproject's explicit list would be left out of the wheel."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join([package, *path.parent.relative_to(folder).parts])
        for package, folder in package_dirs(REPO).items()
        for path in folder.rglob("__init__.py")
    }
    # Listed folders without code are data the wheel carries (the playground's page): no Python in them.
    data_only = listed - on_disk
    for name in data_only:
        parent, _, leaf = name.rpartition(".")
        folder = package_dirs(REPO)[parent] / leaf
        assert folder.is_dir() and not list(folder.glob("*.py")), f"{name}: listed but not a package folder"
    assert on_disk == listed - data_only


# --- the checks can fail -----------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the project's code (what the checks read), to plant violations in."""
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    for folder in {*package_dirs(REPO).values(), REPO / "k8s"}:
        shutil.copytree(
            folder, tmp_path / folder.name, ignore=shutil.ignore_patterns("__pycache__", "samples")
        )
    return tmp_path


def _plant(path: Path, line: str) -> int:
    text = path.read_text(encoding="utf-8")
    path.write_text(text + "\n" + line + "\n", encoding="utf-8")
    return len(text.splitlines()) + 2


def test_a_planted_wrong_way_import_is_reported_with_its_line(tree):
    assert direction_violations(tree) == []
    line = _plant(tree / "training" / "loop.py", "from rayformers.serving.app import build_app")
    vocabulary = _plant(tree / "rayformers" / "config.py", "import rayformers.data.pipeline")
    assert direction_violations(tree) == [
        f"rayformers/config.py:{vocabulary}: rayformers.config (vocabulary) imports rayformers.data.pipeline (data)",
        f"training/loop.py:{line}: rayformers.training.loop (training) imports rayformers.serving.app (serving)",
    ]


def test_a_planted_circle_is_reported(tree):
    assert import_cycles(tree) == []
    _plant(
        tree / "data" / "tokenized.py", "def _late():\n    from rayformers.data.shards import read_tokenized"
    )
    assert import_cycles(tree) == [["rayformers.data.shards", "rayformers.data.tokenized"]]


def test_type_checking_imports_are_not_runtime_edges(tree):
    _plant(
        tree / "data" / "tokenized.py",
        "if TYPE_CHECKING:\n    from rayformers.training.loop import LoopConfig",
    )
    assert direction_violations(tree) == [] and import_cycles(tree) == []


def test_a_planted_task_name_comparison_is_reported_with_its_line(tree):
    from rayformers.tasks import TASK_NAMES

    assert task_name_uses(tree, TASK_NAMES) == []
    line = _plant(tree / "serving" / "replica.py", 'def _f(task):\n    return task.name == "fill-mask"')
    table = _plant(tree / "training" / "model.py", '_TYPES = {"text-generation": "CAUSAL_LM"}')
    assert task_name_uses(tree, TASK_NAMES) == [
        f"serving/replica.py:{line + 1}: compares a task name; ask the task (rayformers.tasks.get_task)",
        f"training/model.py:{table}: keeps a table keyed by task name; ask the task (rayformers.tasks.get_task)",
    ]
