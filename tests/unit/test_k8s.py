"""The KubeRay manifests under k8s/ and the Dockerfile.

Every kustomization renders and every object passes k8s/validate.py (what `make k8s-validate` runs): KubeRay
kinds against the real CRD schemas with unknown fields rejected, core kinds against Kubernetes' strict schemas,
the run config with rayformers' loader, the Serve config with Ray Serve's schema. Misspellings at any depth fail.
Needs kubectl (kustomize v5): without it these tests skip, except under CI, which installs kubectl (.ci/run)
and must not skip. The KubeRay CRDs are vendored in k8s/crds, so a plain clone checks against them.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
TARGETS = {
    "base": K8S / "base",
    "cpu-dev": K8S / "overlays" / "cpu-dev",
    "gpu-prod": K8S / "overlays" / "gpu-prod",
}
RAY_KINDS = ("RayCluster", "RayJob", "RayService")


def _load_validator() -> Any:
    spec = importlib.util.spec_from_file_location("k8s_validate", K8S / "validate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


kv = _load_validator()


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") and "kubectl" in reason:
        pytest.fail(f"CI installs kubectl before `make test` (.ci/run), yet: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def kubectl() -> str:
    try:
        return str(kv.find_kubectl())
    except kv.SetupError as err:
        _unavailable(str(err))
        raise


@pytest.fixture(scope="module")
def validator() -> Any:
    return kv.Validator(kv.find_crds())


@pytest.fixture(scope="module")
def rendered(kubectl: str) -> dict[str, list[dict[str, Any]]]:
    return {name: [obj for obj, _ in kv.render(path, kubectl)] for name, path in TARGETS.items()}


def _one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def _problems(validator: Any, obj: dict[str, Any], objects: list[dict[str, Any]]) -> list[str]:
    others = [obj if o["kind"] == obj["kind"] else o for o in objects]
    return [p.render() for p in validator.check(obj, others)[0]]


# ------------------------------------------------------------------------------------ every target is valid


def test_every_overlay_is_under_test():
    assert [p.name for p in kv.default_targets()] == ["base", "cpu-dev", "gpu-prod"]


@pytest.mark.parametrize("name", list(TARGETS))
def test_kustomization_renders_and_every_object_validates(name, kubectl, validator):
    reports = validator.validate(TARGETS[name], kubectl)
    failed = ["\n".join(r.lines()) for r in reports if r.problems]
    assert not failed, "\n".join(failed)
    kinds = {r.kind for r in reports}
    assert {*RAY_KINDS, "ConfigMap", "PersistentVolumeClaim", "ServiceAccount"} <= kinds
    # The Serve config's ConfigMap is local to kustomize: only the run config is deployed.
    assert [r.name.rsplit("-", 1)[0] for r in reports if r.kind == "ConfigMap"] == ["rayformers-run-config"]


def test_validator_cli_names_file_kind_field_and_exits_1(tmp_path, kubectl, validator, capsys):
    """A RayService with misspelled fields, built in a temporary overlay: the CLI prints the object, the file
    it came from, each bad field path with a did-you-mean, and exits 1."""
    tree = tmp_path / "k8s"
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    typo = tree / "overlays" / "typo"
    typo.mkdir()
    (typo / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": ["../../base"],
                "patches": [
                    {
                        "target": {"kind": "RayService"},
                        "patch": yaml.safe_dump(
                            [
                                {"op": "move", "from": "/spec/serveConfigV2", "path": "/spec/serveConfigv2"},
                                {
                                    "op": "add",
                                    "path": "/spec/rayClusterConfig/headGroupSpec/rayStartParam",
                                    "value": {},
                                },
                            ]
                        ),
                    }
                ],
            }
        )
    )
    assert kv.main([str(typo)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  k8s/overlays/typo: RayService/rayformers-serve (k8s/base/rayservice.yaml)" in out
    assert "spec.serveConfigv2: unknown field (did you mean `serveConfigV2`?)" in out
    assert (
        "spec.rayClusterConfig.headGroupSpec.rayStartParam: unknown field (did you mean `rayStartParams`?)"
        in out
    )
    assert "ok    k8s/overlays/typo: RayJob/rayformers-train" in out
    assert out.strip().splitlines()[-1].startswith("k8s-validate: 3 problem(s) in 1 of 6 objects")


def test_unknown_field_inside_a_pod_template_container_fails(rendered, validator):
    objects = rendered["base"]
    job = copy.deepcopy(_one(objects, "RayJob"))
    job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0][
        "imagePullPolicyy"
    ] = "Always"
    (problem,) = _problems(validator, job, objects)
    assert problem.startswith(
        "spec.rayClusterSpec.workerGroupSpecs[0].template.spec.containers[0].imagePullPolicyy: unknown field "
        "(did you mean `imagePullPolicy`?)"
    )


@pytest.mark.parametrize(
    ("kind", "path", "key"),
    [
        (
            "RayCluster",
            ["metadata"],
            "labelz",
        ),  # ObjectMeta of a custom resource, as the API server checks it
        ("RayCluster", ["spec", "workerGroupSpecs", 0, "template", "metadata"], "lables"),
        ("RayService", ["spec", "upgradeStrategy"], "clusterUpgradeOption"),
        ("PersistentVolumeClaim", ["spec"], "accesModes"),  # core kinds are strict too
        ("ConfigMap", [], "date"),
    ],
)
def test_unknown_fields_fail_at_every_level(rendered, validator, kind, path, key):
    objects = rendered["gpu-prod"]
    obj = copy.deepcopy(_one(objects, kind))
    node = obj
    for part in path:
        node = node.setdefault(part, {}) if isinstance(part, str) else node[part]
    node[key] = {}
    problems = _problems(validator, obj, objects)
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in [*path, key]).lstrip(".")
    assert any(p.startswith(f"{where}: unknown field") for p in problems), problems


def test_operator_rules_and_references_are_checked(rendered, validator):
    objects = rendered["gpu-prod"]
    service = copy.deepcopy(_one(objects, "RayService"))
    service["spec"]["rayClusterConfig"]["enableInTreeAutoscaling"] = False
    del service["spec"]["upgradeStrategy"]["clusterUpgradeOptions"]["gatewayClassName"]
    service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["minReplicas"] = 9
    problems = _problems(validator, service, objects)
    assert "spec.rayClusterConfig.enableInTreeAutoscaling: incremental upgrades need it true" in problems
    assert any("clusterUpgradeOptions: required field `gatewayClassName`" in p for p in problems)
    assert any(
        p.startswith("spec.rayClusterConfig.workerGroupSpecs[0].minReplicas: 9 is above") for p in problems
    )

    cluster = copy.deepcopy(_one(objects, "RayCluster"))
    cluster["spec"]["workerGroupSpecs"][0]["template"]["spec"]["volumes"][0]["configMap"]["name"] = "gone"
    assert any(
        "volumes[0].configMap.name: no ConfigMap 'gone'" in p for p in _problems(validator, cluster, objects)
    )


# ------------------------------------------------------------------------------------ training


@pytest.mark.parametrize("name", list(TARGETS))
def test_rayjob_trains_with_the_mounted_run_config(name, rendered):
    from rayformers.loading import load_config

    objects = rendered[name]
    job = _one(objects, "RayJob")
    spec = job["spec"]
    words = shlex.split(spec["entrypoint"])
    assert words[:3] == ["rayformers", "train", "/config/run.yaml"]
    assert spec["submissionMode"] == "K8sJobMode"
    assert spec["shutdownAfterJobFinishes"] is True
    assert (
        spec["ttlSecondsAfterFinished"] > 0
        and spec["activeDeadlineSeconds"] > 0
        and spec["backoffLimit"] >= 1
    )
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == "2.60.0"
    # The run config comes from the generated ConfigMap mounted at /config on the head, where the driver runs.
    head = cluster["headGroupSpec"]["template"]["spec"]
    mount = next(m for m in head["containers"][0]["volumeMounts"] if m["mountPath"] == "/config")
    volume = next(v for v in head["volumes"] if v["name"] == mount["name"])
    config_map = next(
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"] == volume["configMap"]["name"]
    )
    overrides = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
    run_yaml = Path(os.environ.get("TMPDIR", "/tmp")) / f"rayformers-k8s-{name}-run.yaml"
    run_yaml.write_text(config_map["data"]["run.yaml"], encoding="utf-8")
    try:
        cfg = load_config(run_yaml, overrides)
    finally:
        run_yaml.unlink()
    assert cfg.cluster.address == "auto"
    workers = cluster["workerGroupSpecs"]
    assert sum(g["replicas"] for g in workers) == cfg.train.num_workers
    if name == "gpu-prod":
        assert cfg.train.use_gpu and cfg.train.storage_path.startswith("s3://")
    else:
        assert not cfg.train.use_gpu and cfg.train.storage_path == "/mnt/runs"


@pytest.mark.parametrize("kind", RAY_KINDS)
def test_runs_pvc_is_shared_by_head_and_workers(rendered, kind):
    objects = rendered["base"]
    (pvc,) = [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    pods = list(kv.pod_specs(_one(objects, kind)))
    assert len(pods) >= 2
    for _, pod in pods:
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in pod["volumes"]
            if "persistentVolumeClaim" in v
        }
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        assert claims[mounts["/mnt/runs"]] == pvc["metadata"]["name"]


def test_base_run_config_is_the_lora_example_adapted_to_the_cluster():
    example = yaml.safe_load((REPO / "configs" / "text-classification" / "lora.yaml").read_text())
    adapted = yaml.safe_load((K8S / "base" / "run.yaml").read_text())
    # The data and tokenizer are the image's copy of the repository's files (the Dockerfile puts it at /app).
    for split in ("train", "validation"):
        path = adapted["data"][split]["path"]
        assert (
            path == "/app/" + example["data"][split]["path"] and (REPO / path.removeprefix("/app/")).is_file()
        )
    tokenizer = adapted["model"]["from_scratch"]["tokenizer"]
    assert tokenizer == "/app/" + example["model"]["from_scratch"]["tokenizer"]
    assert (REPO / tokenizer.removeprefix("/app/")).is_dir()
    assert adapted["train"]["storage_path"] == "/mnt/runs"
    assert adapted["cluster"] == {"address": "auto"}
    for raw in (example, adapted):
        for split in ("train", "validation"):
            del raw["data"][split]
        del raw["model"]["from_scratch"]["tokenizer"], raw["train"]["storage_path"], raw["serve"]
        raw.pop("cluster", None)
    assert adapted == example


# ------------------------------------------------------------------------------------ serving


SERVE_CONFIGS = {
    "base": K8S / "base" / "serve-config.yaml",
    "gpu-prod": K8S / "overlays" / "gpu-prod" / "serve-config.yaml",
}


@pytest.mark.parametrize("name", list(SERVE_CONFIGS))
def test_serve_config_is_a_serve_deploy_schema_and_lands_verbatim_in_the_rayservice(name, rendered):
    from ray.serve.config import AutoscalingConfig
    from ray.serve.schema import ServeDeploySchema

    from rayformers.config import ServeAppConfig

    text = SERVE_CONFIGS[name].read_text(encoding="utf-8")
    schema = ServeDeploySchema.model_validate(yaml.safe_load(text))
    assert schema.proxy_location.value == "EveryNode" and schema.http_options.host == "0.0.0.0"
    apps = {app.name: app for app in schema.applications}
    sentiment = apps["sentiment"]
    assert (sentiment.import_path, sentiment.route_prefix) == (
        "rayformers.serving.app:build_app",
        "/sentiment",
    )
    args = ServeAppConfig.model_validate(
        {k: v for k, v in sentiment.args.items() if k in ServeAppConfig.model_fields}
    )
    # The deployment options are Serve's own, in `deployments:` (edits there keep the replicas), not args.
    assert "autoscaling" not in sentiment.args and "num_gpus" not in sentiment.args
    (model,) = sentiment.deployments
    assert model.name == "Model"
    AutoscalingConfig(**model.autoscaling_config)
    gpus = model.ray_actor_options.num_gpus
    if name == "gpu-prod":
        assert (
            args.checkpoint.startswith("s3://")
            and gpus == 1
            and model.autoscaling_config["max_replicas"] == 8
        )
    else:
        assert args.checkpoint == "/mnt/runs/text-classification-lora/best" and gpus == 0
    targets = ["base", "cpu-dev"] if name == "base" else ["gpu-prod"]
    for target in targets:
        assert _one(rendered[target], "RayService")["spec"]["serveConfigV2"] == text


def test_base_serve_config_is_what_serve_build_writes(tmp_path):
    """The file's header names the command that writes it; running it gives the same config."""
    from rayformers.cli import main

    committed = K8S / "base" / "serve-config.yaml"
    command = next(line for line in committed.read_text().splitlines() if "rayformers serve build" in line)
    words = shlex.split(command.lstrip("# "))
    out = tmp_path / "serve-config.yaml"
    argv = [*words[1 : words.index("-o")], "-o", str(out)]
    argv[2] = str(REPO / argv[2])
    try:
        code = main(argv)
    except SystemExit as err:  # an older CLI without `serve build`
        pytest.skip(f"`rayformers serve build` is not available ({err})")
    assert code == 0
    assert yaml.safe_load(out.read_text()) == yaml.safe_load(committed.read_text()), (
        "k8s/base/serve-config.yaml is stale: run the command in its header"
    )


def test_serve_config_problems_are_reported(rendered, validator):
    objects = rendered["gpu-prod"]
    service = copy.deepcopy(_one(objects, "RayService"))
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    app = config["applications"][0]
    app["route_prefx"] = "/x"
    app["args"]["max_batch_sise"] = 4
    app["deployments"][0]["ray_actor_options"]["num_cpus"] = 64  # what Serve reserves, over args.num_cpus
    app["deployments"].append({"name": "X", "autoscaling_config": {"min_replicas": 3, "max_replicas": 1}})
    service["spec"]["serveConfigV2"] = yaml.safe_dump(config)
    problems = _problems(validator, service, objects)
    assert (
        "spec.serveConfigV2 > applications[0].route_prefx: unknown key (did you mean `route_prefix`?)"
        in problems
    )
    assert any(
        p.startswith("spec.serveConfigV2 > applications[0].args.max_batch_sise: unknown key")
        for p in problems
    )
    assert any("deployments[1].autoscaling_config: not a valid ray AutoscalingConfig" in p for p in problems)
    del app["args"]["max_batch_sise"]
    service["spec"]["serveConfigV2"] = yaml.safe_dump(config)
    assert any(
        "a replica (64 CPU, 1 GPU) fits no worker pod" in p for p in _problems(validator, service, objects)
    )


# ------------------------------------------------------------------------------------ GPUs and images


def _gpus(container: dict[str, Any]) -> set[str]:
    resources = container.get("resources") or {}
    return {side for side in ("requests", "limits") if "nvidia.com/gpu" in (resources.get(side) or {})}


@pytest.mark.parametrize("kind", RAY_KINDS)
def test_gpu_prod_worker_groups_ask_for_gpus_and_cpu_targets_do_not(rendered, kind):
    gpu = _one(rendered["gpu-prod"], kind)
    for group in kv.groups(gpu):
        containers = group.template["spec"]["containers"]
        if group.is_head:
            assert not _gpus(containers[0])
        else:
            assert _gpus(containers[0]) == {"requests", "limits"}
            assert group.raw["groupName"] == "gpu-workers"
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in group.template[
                "spec"
            ]["tolerations"]
    for name in ("base", "cpu-dev"):
        assert "nvidia.com/gpu" not in yaml.safe_dump(_one(rendered[name], kind))


def _dockerfile_args(text: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S*)$", text, flags=re.MULTILINE))


def _images(objects: list[dict[str, Any]]) -> set[str]:
    return {
        c["image"]
        for obj in objects
        if obj["kind"] in RAY_KINDS
        for _, pod in kv.pod_specs(obj)
        for c in pod.get("containers", [])
    }


def test_images_and_ray_versions_agree_with_the_dockerfile(rendered):
    dockerfile = (REPO / "Dockerfile").read_text()
    args = _dockerfile_args(dockerfile)
    assert args["VARIANT"] == "cpu"
    assert "FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-${VARIANT}" in dockerfile
    variants = set(re.findall(r"^\s+(\w+)\) index=", dockerfile, flags=re.MULTILINE))
    assert variants == {"cpu", "gpu"}
    pyproject = (REPO / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', pyproject, flags=re.MULTILINE).group(1)  # type: ignore[union-attr]
    ray_floor = re.search(r'"ray\[[^\]]*\]>=([\d.]+)"', pyproject).group(1)  # type: ignore[union-attr]
    assert args["RAY_VERSION"] == ray_floor
    for name, objects in rendered.items():
        assert {
            o["spec"].get("rayVersion") or kv.cluster_spec(o)[1]["rayVersion"]
            for o in objects
            if o["kind"] in RAY_KINDS
        } == {args["RAY_VERSION"]}
        (image,) = _images(objects)
        repository, tag = image.rsplit(":", 1)
        assert repository.rsplit("/", 1)[-1] == "rayformers"
        if name == "base":
            assert tag == "latest"  # `docker build -t rayformers:latest .`: the default VARIANT
            continue
        uses_gpus = "nvidia.com/gpu" in yaml.safe_dump(objects)
        assert tag == f"{version}-{'gpu' if uses_gpus else 'cpu'}", name


def test_dockerfile_installs_a_wheel_and_checks_no_stage_is_a_top_level_package():
    dockerfile = (REPO / "Dockerfile").read_text()
    installs = [
        line.strip() for line in dockerfile.splitlines() if "pip install" in line and "torch" not in line
    ]
    assert installs == [
        "RUN pip install --no-cache-dir . \\"
    ]  # a wheel, never `-e` (the image runs site-packages)
    check = dockerfile[dockerfile.index("&& cd / && python -c") :]
    assert "rayformers.data.pipeline" in check and "'data', 'training', 'serving', 'cluster'" in check


def test_dockerfile_installs_pinned_torch_before_the_project():
    dockerfile = (REPO / "Dockerfile").read_text()
    makefile = (REPO / "Makefile").read_text()
    torch_pin = re.search(r"^TORCH_VERSION \?= (\S+)$", makefile, flags=re.MULTILINE).group(1)  # type: ignore[union-attr]
    assert _dockerfile_args(dockerfile)["TORCH_VERSION"] == torch_pin
    steps = re.split(r"^RUN ", dockerfile, flags=re.MULTILINE)
    torch_step = next(
        i for i, s in enumerate(steps) if 'pip install --no-cache-dir "torch==${TORCH_VERSION}"' in s
    )
    project_step = next(
        i for i, s in enumerate(steps) if re.search(r"pip install --no-cache-dir \.(\s|$)", s)
    )
    assert torch_step < project_step
    assert 'cpu) index="${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"' in steps[torch_step]


def test_dockerignore_keeps_what_the_image_needs():
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    needed = [
        "pyproject.toml",
        "README.md",
        "rayformers",
        "serving",
        "training",
        "data",
        "cluster",
        "data/samples",
    ]
    for path in needed:
        parts = Path(path).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        assert not any(
            Path(prefix).match(p) or prefix == p.rstrip("/") for p in patterns for prefix in prefixes
        ), path


def test_the_vendored_crds_are_the_kuberay_release_their_readme_names():
    crds = kv.find_crds()
    assert crds == K8S / "crds"
    readme = (crds / "README.md").read_text(encoding="utf-8")
    assert "v1.7.0" in readme and "feeaf72facab4881ba2b179248bb67315634e229" in readme
    kinds = {yaml.safe_load(p.read_text())["spec"]["names"]["kind"] for p in crds.glob("ray.io_*.yaml")}
    assert kinds == set(RAY_KINDS)


def test_setup_errors_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBERAY_CRDS", str(tmp_path / "missing"))
    with pytest.raises(kv.SetupError, match=r"KUBERAY_CRDS=.* is not a directory"):
        kv.find_crds()
    with pytest.raises(kv.SetupError, match="has no CRD for RayCluster, RayJob, RayService"):
        kv.Schemas(tmp_path)
