"""The Ray cluster launcher configs (cluster/launcher/*.yaml) pass Ray's own config checks, offline.

`ray up` prepares a config (fills the provider's defaults, merges setup commands) and validates it against
ray/autoscaler/ray-schema.json before it talks to any cloud; these tests run those same two steps. The rest
checks what the project needs of them: a CPU head, autoscaling GPU workers, torch installed before the project,
and the Ray and torch versions the Dockerfile and the Makefile pin.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "cluster" / "launcher"
CONFIGS = sorted(LAUNCHER.glob("*.yaml"))


def _raw(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _prepared(path: Path) -> dict[str, Any]:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(copy.deepcopy(_raw(path)))
    validate_config(config)
    return config


def _pins() -> dict[str, str]:
    dockerfile = (REPO / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S*)$", dockerfile, flags=re.MULTILINE))
    makefile = (REPO / "Makefile").read_text()
    torch = re.search(r"^TORCH_VERSION \?= (\S+)$", makefile, flags=re.MULTILINE)
    assert torch is not None
    return {"ray": args["RAY_VERSION"], "python": args["PYTHON_TAG"], "torch": torch.group(1)}


def test_there_is_a_config_for_aws_and_gcp():
    assert [p.name for p in CONFIGS] == ["aws.yaml", "gcp.yaml"]
    assert {_raw(p)["provider"]["type"] for p in CONFIGS} == {"aws", "gcp"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_passes_rays_own_validation(path):
    config = _prepared(path)
    assert config["cluster_name"] == "rayformers"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_a_misspelled_key_fails_rays_validation(path):
    import jsonschema

    raw = _raw(path)
    raw["available_node_types"]["gpu_worker"]["max_worker"] = 4
    from ray.autoscaler._private.util import prepare_config, validate_config

    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        validate_config(prepare_config(raw))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_cpu_head_and_autoscaling_gpu_workers(path):
    config = _prepared(path)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["max_workers"] == 0
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    assert list(workers) == ["gpu_worker"]
    worker = workers["gpu_worker"]
    assert worker["min_workers"] == 0 and 0 < worker["max_workers"] <= config["max_workers"]
    if config["provider"]["type"] == "gcp":  # GCP reports no resources to the autoscaler: they are stated
        assert worker["resources"]["GPU"] >= 1
        assert worker["node_config"]["guestAccelerators"][0]["acceleratorCount"] == worker["resources"]["GPU"]
    else:  # AWS reads them from the instance type: a GPU type
        assert re.match(r"(g|p)\d", worker["node_config"]["InstanceType"])


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_images_and_versions_match_the_dockerfile_and_makefile(path):
    config = _prepared(path)
    pins = _pins()
    docker = config["docker"]
    assert docker["head_image"] == f"rayproject/ray:{pins['ray']}-{pins['python']}-cpu"
    assert docker["worker_image"] == f"rayproject/ray:{pins['ray']}-{pins['python']}-gpu"
    commands = config["head_setup_commands"] + config["worker_setup_commands"]
    torch_installs = [c for c in commands if '"torch==' in c]
    assert torch_installs and all(f'"torch=={pins["torch"]}"' in c for c in torch_installs)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_torch_is_installed_before_the_project_on_every_node(path):
    config = _prepared(path)
    (remote,) = [remote for remote, local in config["file_mounts"].items() if local == "."]
    for key in ("head_setup_commands", "worker_setup_commands"):
        commands = config[key]
        torch = next(i for i, c in enumerate(commands) if '"torch==' in c)
        project = next(
            i for i, c in enumerate(commands) if c.rstrip().endswith(f"pip install --no-cache-dir {remote}")
        )
        assert torch < project, key
    assert "--index-url https://download.pytorch.org/whl/cpu" in config["head_setup_commands"][0]
    assert "--index-url" not in config["worker_setup_commands"][0]  # the CUDA build on GPU workers


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_ray_starts_with_token_authentication_on_every_node(path):
    config = _prepared(path)
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    assert "/home/ray/.ray/auth_token" in config["file_mounts"]
    assert any(
        "ray start --head" in c and "--autoscaling-config" in c for c in config["head_start_ray_commands"]
    )
    assert any("ray start --address=$RAY_HEAD_IP:6379" in c for c in config["worker_start_ray_commands"])
