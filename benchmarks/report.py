"""Benchmark results as files: `<name>.json` (the machine, the versions and every figure), `<name>.md` (the
table the README quotes) and `<name>.png` (throughput and p99 latency against concurrency)."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

__all__ = ["machine", "write"]

_PACKAGES = ("rayformers", "ray", "torch", "transformers", "tokenizers", "fastapi", "uvicorn")


def machine() -> dict[str, Any]:
    from rayformers.manifest import package_versions

    versions = package_versions(_PACKAGES)
    return {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
    }


def _comparison_table(result: dict[str, Any]) -> str:
    """A side-by-side benchmark: per measurement, rayformers, the baseline, their ratio and its target."""
    lines = [
        f"### {result['title']}",
        "",
        "| measurement | rayformers | baseline | ratio | target | met |",
        "| --- | ---: | ---: | ---: | ---: | :---: |",
    ]
    for row in result["comparisons"]:
        ratio, target = row.get("ratio"), row.get("target")
        checked = ratio if ratio is not None else row["rayformers"]  # no baseline: the target is on the value
        met = "-" if target is None else ("yes" if _meets(checked, target) else "**no**")
        lines.append(
            f"| {row['measurement']} | {_value(row['rayformers'], row['unit'])} | "
            f"{_value(row.get('baseline'), row['unit'])} | {'-' if ratio is None else f'{ratio:.2f}x'} | "
            f"{'-' if target is None else target} | {met} |"
        )
    for note in result.get("notes", []):
        lines += ["", note]
    return "\n".join(lines).rstrip() + "\n"


def _meets(ratio: float, target: str) -> bool:
    """`target` is ">= 0.8" or "<= 10": the ratio (or, with no baseline, the value) it must reach."""
    op, bound = target.split()
    return ratio >= float(bound) if op == ">=" else ratio <= float(bound)


def _value(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:,.1f} {unit}"


def _table(result: dict[str, Any]) -> str:
    if "comparisons" in result:
        return _comparison_table(result)
    metric = result["throughput"]
    lines = [
        f"### {result['title']}",
        "",
        "| server | concurrency | "
        + metric["label"]
        + " | p50 | p95 | p99 | errors | batch sizes | server CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: |",
    ]
    for server, runs in result["servers"].items():
        for run in runs:
            errors = {k: v for k, v in run["statuses"].items() if int(k) != 200} | run["errors"]
            batches = ", ".join(f"{k}:{v}" for k, v in run["batch_sizes"].items()) or "-"
            lines.append(
                f"| {server} | {run['concurrency']} | {run[metric['key']]:.1f} | {run['p50_s'] * 1000:.0f} ms | "
                f"{run['p95_s'] * 1000:.0f} ms | {run['p99_s'] * 1000:.0f} ms | {errors or 0} | {batches} | "
                f"{run['cpu_percent']:.0f}% |"
            )
    if result.get("roof"):
        lines += ["", f"In-process roof (no HTTP): {result['roof']['best']:.1f} {metric['unit']} "
                  f"({', '.join(f'batch {k}: {v:.1f}' for k, v in result['roof']['by_batch'].items())})."]  # fmt: skip
    if result.get("ratios"):
        lines += ["", "| ratio | " + " | ".join(f"c={c}" for c in result["ratios"]["concurrency"]) + " |"]
        lines += ["| --- |" + " ---: |" * len(result["ratios"]["concurrency"])]
        for name, values in result["ratios"]["values"].items():
            lines.append(f"| {name} | " + " | ".join("-" if v is None else f"{v:.2f}" for v in values) + " |")
    return "\n".join(lines) + "\n"


def _plot(result: dict[str, Any], path: Path) -> None:
    if "servers" not in result:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = result["throughput"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for server, runs in result["servers"].items():
        xs = [r["concurrency"] for r in runs]
        left.plot(xs, [r[metric["key"]] for r in runs], marker="o", label=server)
        right.plot(xs, [r["p99_s"] * 1000 for r in runs], marker="o", label=server)
    if result.get("roof"):
        left.axhline(result["roof"]["best"], linestyle="--", color="grey", label="in-process roof")
    left.set(xscale="log", xlabel="concurrency", ylabel=metric["label"], title="throughput")
    right.set(
        xscale="log", yscale="log", xlabel="concurrency", ylabel="p99 latency (ms)", title="p99 latency"
    )
    left.legend()
    figure.suptitle(result["title"])
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write(result: dict[str, Any], out_dir: Path) -> Path:
    """Write the JSON, Markdown and PNG of `result`; return the Markdown file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    name = result["name"]
    (out_dir / f"{name}.json").write_text(json.dumps({"machine": machine(), **result}, indent=2) + "\n")
    table = out_dir / f"{name}.md"
    table.write_text(_table(result))
    _plot(result, out_dir / f"{name}.png")
    return table
