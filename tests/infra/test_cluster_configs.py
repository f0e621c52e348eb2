"""infra/ray/cluster-aws.yaml and infra/kubernetes/raycluster.yaml: valid configs that run the image the
compose file builds, tagged with the project version and the Ray version pinned in requirements.txt."""

from __future__ import annotations

import copy
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray.autoscaler
import yaml

from .compose_cli import REPO, example_config
from .secrets_scan import SECRET_KEY

LAUNCHER = REPO / "infra" / "ray" / "cluster-aws.yaml"
KUBERAY = REPO / "infra" / "kubernetes" / "raycluster.yaml"
RAY_SCHEMA = Path(ray.autoscaler.__file__).parent / "ray-schema.json"


def pinned_ray() -> str:
    """The version of ``ray[...]==X`` in requirements.txt."""
    match = re.search(r"^ray(?:\[[^\]]*\])?==([\d.]+)$", (REPO / "requirements.txt").read_text(), re.MULTILINE)
    assert match, "requirements.txt pins no ray version"
    return match.group(1)


def project_version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def kuberay_containers(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    groups = [manifest["spec"]["headGroupSpec"], *manifest["spec"].get("workerGroupSpecs", [])]
    return [container for group in groups for container in group["template"]["spec"]["containers"]]


def image_tag(image: str) -> str:
    """``registry/path/rodin:TAG`` -> ``rodin:TAG`` (the name without its registry)."""
    return image.rsplit("/", 1)[-1]


def image_problems(images: dict[str, str], ray_version: str, version: str) -> list[str]:
    """Configs whose image is not ``rodin:<project version>-ray<ray version>`` under one registry path."""
    wanted = f"rodin:{version}-ray{ray_version}"
    problems = [f"{where}: {image} is not {wanted}" for where, image in images.items() if image_tag(image) != wanted]
    registries = {image for where, image in images.items() if where != "docker-compose.yml"}
    if len(registries) > 1:
        problems.append(f"the cluster configs name different images: {sorted(registries)}")
    return problems


def test_the_launcher_config_matches_rays_schema() -> None:
    config = yaml.safe_load(LAUNCHER.read_text())
    schema = json.loads(RAY_SCHEMA.read_text())
    jsonschema.validate(config, schema)
    broken = copy.deepcopy(config)
    broken["available_node_types"]["ray.worker.cpu"]["min_wokers"] = 1
    with pytest.raises(jsonschema.ValidationError, match="min_wokers"):
        jsonschema.validate(broken, schema)
    assert config["head_node_type"] in config["available_node_types"]
    assert config["available_node_types"][config["head_node_type"]]["resources"] == {"CPU": 0}


def test_the_kuberay_manifest() -> None:
    manifest = yaml.safe_load(KUBERAY.read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayCluster")
    assert manifest["spec"]["rayVersion"] == pinned_ray()
    head = manifest["spec"]["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP"
    assert {port["containerPort"] for port in head["template"]["spec"]["containers"][0]["ports"]} == {6379, 8265, 10001}
    for group in manifest["spec"]["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]
        assert group["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    for container in kuberay_containers(manifest):
        env = {item["name"]: item for item in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        literal = [name for name, item in env.items() if SECRET_KEY.search(name) and "value" in item]
        assert literal == [], f"{container['name']}: {literal} must come from a Secret (valueFrom.secretKeyRef)"


def test_every_config_runs_the_same_image_and_ray_version() -> None:
    launcher = yaml.safe_load(LAUNCHER.read_text())
    manifest = yaml.safe_load(KUBERAY.read_text())
    images = {"infra/ray/cluster-aws.yaml": launcher["docker"]["image"],
              "docker-compose.yml": example_config()["services"]["ray-head"]["image"]}
    images |= {f"infra/kubernetes/raycluster.yaml {c['name']} {i}": c["image"]
               for i, c in enumerate(kuberay_containers(manifest))}
    assert len(images) == 5
    assert image_problems(images, pinned_ray(), project_version()) == []
    assert {service["image"] for service in example_config()["services"].values()} == {
        "postgres:17-alpine", "rodin:0.1.0-ray2.60.0"}
    assert f"-t rodin:{project_version()}-ray{pinned_ray()} ." in (REPO / "infra/docker/Dockerfile").read_text()
    stale = dict(images, **{"infra/ray/cluster-aws.yaml": "registry.example.com/rodin:0.1.0-ray2.59.0"})
    assert image_problems(stale, pinned_ray(), project_version()) == [
        "infra/ray/cluster-aws.yaml: registry.example.com/rodin:0.1.0-ray2.59.0 is not rodin:0.1.0-ray2.60.0",
        ("the cluster configs name different images: ['registry.example.com/rodin:0.1.0-ray2.59.0', "
         "'registry.example.com/rodin:0.1.0-ray2.60.0']")]


def test_the_pinned_ray_is_the_installed_one() -> None:
    assert ray.__version__ == pinned_ray()
