"""deploy/: the KubeRay manifest and the container recipes say only what exists.

No Kubernetes cluster (and no Docker daemon) runs here, so nothing is applied or built: the
manifest is parsed, every field it sets is checked against the fields KubeRay's CRD (v1.3,
ray.io/v1) and Kubernetes' pod spec have (small embedded lists of the fields used), every
`streamguard ...` command in the manifest and the Dockerfiles is parsed by the real CLI parser,
the config the manifest mounts is the repository's configs/cluster.yaml and loads, and every
path a Dockerfile copies exists.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import yaml

from streamguard.cli import build_parser
from streamguard.config import Config, ModelServiceConfig, load_config
from tests.support import REPO

ROOT = REPO
DEPLOY = ROOT / "deploy"
MANIFEST = DEPLOY / "kuberay" / "raycluster.yaml"
DOCKERFILES = [DEPLOY / "Dockerfile", DEPLOY / "Dockerfile.cuda"]
WORKDIR = "/opt/streamguard"  # where both Dockerfiles copy the repository

# The fields of KubeRay's RayCluster CRD (ray.io/v1, KubeRay v1.3) this manifest may use.
RAYCLUSTER_SPEC = {"rayVersion", "enableInTreeAutoscaling", "autoscalerOptions", "headServiceAnnotations",
                   "gcsFaultToleranceOptions", "headGroupSpec", "workerGroupSpecs", "suspend", "managedBy"}
GCS_FT = {"redisAddress", "redisPassword", "redisUsername", "externalStorageNamespace"}
REDIS_CREDENTIAL = {"value", "valueFrom"}
HEAD_GROUP = {"template", "headService", "enableIngress", "rayStartParams", "serviceType"}
WORKER_GROUP = {"groupName", "replicas", "minReplicas", "maxReplicas", "idleTimeoutSeconds", "rayStartParams",
                "template", "scaleStrategy", "numOfHosts", "suspend"}
# Kubernetes' pod template, pod spec and container fields used here.
POD_TEMPLATE = {"metadata", "spec"}
POD_SPEC = {"containers", "volumes", "tolerations", "nodeSelector", "affinity", "serviceAccountName", "initContainers"}
CONTAINER = {"name", "image", "command", "args", "env", "envFrom", "ports", "resources", "volumeMounts",
             "readinessProbe", "livenessProbe", "lifecycle", "securityContext", "imagePullPolicy", "workingDir"}
RAY_START_CMD = "$KUBERAY_GEN_RAY_START_CMD"


def _docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def _kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in _docs() if d["kind"] == kind]


def _raycluster() -> dict[str, Any]:
    (cluster,) = _kind("RayCluster")
    return cluster


def _pod_templates() -> dict[str, dict[str, Any]]:
    spec = _raycluster()["spec"]
    return {"head": spec["headGroupSpec"]["template"], **{g["groupName"]: g["template"] for g in spec["workerGroupSpecs"]}}


def _unknown(data: dict[str, Any], allowed: set[str]) -> set[str]:
    return set(data) - allowed


def test_the_manifest_parses_into_the_documents_it_needs() -> None:
    kinds = sorted(d["kind"] for d in _docs())
    assert kinds == ["ConfigMap", "RayCluster", "Service"]
    for doc in _docs():
        assert {"apiVersion", "kind", "metadata"} <= set(doc) and doc["metadata"]["name"]


def test_the_raycluster_names_only_fields_of_kuberays_crd() -> None:
    cluster = _raycluster()
    assert cluster["apiVersion"] == "ray.io/v1"
    spec = cluster["spec"]
    assert not _unknown(spec, RAYCLUSTER_SPEC)
    assert not _unknown(spec["headGroupSpec"], HEAD_GROUP)
    assert isinstance(spec["headGroupSpec"]["rayStartParams"], dict)
    for group in spec["workerGroupSpecs"]:
        assert not _unknown(group, WORKER_GROUP), group["groupName"]
        assert isinstance(group["rayStartParams"], dict)
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())  # the CRD's map[string]string
    for name, template in _pod_templates().items():
        assert not _unknown(template, POD_TEMPLATE), name
        assert not _unknown(template["spec"], POD_SPEC), name
        for container in template["spec"]["containers"]:
            assert not _unknown(container, CONTAINER), (name, container["name"])
    assert all(isinstance(v, str) for v in spec["headGroupSpec"]["rayStartParams"].values())
    assert spec["rayVersion"] == _pinned("ray")


def test_a_cpu_worker_group_and_a_gpu_worker_group() -> None:
    groups = {g["groupName"]: g for g in _raycluster()["spec"]["workerGroupSpecs"]}

    def gpus(group: dict[str, Any]) -> int:
        return sum(int(c["resources"]["limits"].get("nvidia.com/gpu", 0)) for c in group["template"]["spec"]["containers"])

    assert [n for n, g in groups.items() if gpus(g) == 0], "no CPU worker group"
    gpu_groups = [n for n, g in groups.items() if gpus(g) > 0]
    assert gpu_groups, "no GPU worker group"
    for name in gpu_groups:  # the GPU group runs the CUDA image; the others the CPU image
        assert all(c["image"].endswith(":cuda") for c in groups[name]["template"]["spec"]["containers"])


def test_head_fault_tolerance_uses_an_external_redis_with_a_secret_password() -> None:
    ft = _raycluster()["spec"]["gcsFaultToleranceOptions"]
    assert not _unknown(ft, GCS_FT)
    assert re.fullmatch(r"(redis://)?[A-Za-z0-9.-]+:\d+", ft["redisAddress"])
    password = ft["redisPassword"]
    assert not _unknown(password, REDIS_CREDENTIAL)
    assert "value" not in password and password["valueFrom"]["secretKeyRef"]["key"]  # never in the manifest itself


def test_secrets_and_config_maps_referenced_are_the_ones_named() -> None:
    """Every secretKeyRef names the one Secret the README says to create, and every ConfigMap volume
    is defined in the manifest."""
    assert {ref["name"] for doc in _docs() for ref in _find(doc, "secretKeyRef")} == {"streamguard"}
    keys = {ref["key"] for doc in _docs() for ref in _find(doc, "secretKeyRef")}
    assert keys == {"http-token", "redis-url", "gcs-redis-password"}
    config_maps = {d["metadata"]["name"] for d in _kind("ConfigMap")}
    for template in _pod_templates().values():
        for volume in template["spec"].get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps


def test_the_containers_commands_include_the_generated_ray_start() -> None:
    """With ray.io/overwrite-container-cmd the manifest writes every command itself: each must still
    start Ray (KubeRay's generated command) and raise the file limit."""
    assert _raycluster()["metadata"]["annotations"]["ray.io/overwrite-container-cmd"] == "true"
    for name, template in _pod_templates().items():
        for container in template["spec"]["containers"]:
            script = " ".join(container["args"])
            assert container["command"] == ["/bin/bash", "-lc", "--"], name
            assert RAY_START_CMD in script and "ulimit -n 65536" in script, name


def test_the_front_door_service_selects_the_head_and_its_port() -> None:
    (service,) = _kind("Service")
    cluster = _raycluster()
    assert service["spec"]["selector"] == {"ray.io/cluster": cluster["metadata"]["name"], "ray.io/node-type": "head"}
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    port_names = {p["name"] for p in head["ports"]}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in port_names


def test_the_mounted_config_is_configs_cluster_yaml_and_loads() -> None:
    (config_map,) = _kind("ConfigMap")
    repo_config = ROOT / "configs" / "cluster.yaml"
    assert config_map["data"]["streamguard.yaml"] == repo_config.read_text()
    data = yaml.safe_load(repo_config.read_text())
    if "cluster" in Config.model_fields:
        load_config(repo_config, environ={})
    else:  # `cluster` comes with `run --ray` (another branch): check the rest, and our part of it
        ModelServiceConfig.model_validate(data["cluster"]["model_service"])
        Config.model_validate({k: v for k, v in data.items() if k != "cluster"})


def _streamguard_commands() -> list[tuple[str, list[str]]]:
    """(where, argv after `streamguard`) of every streamguard command in the manifest and Dockerfiles."""
    found: list[tuple[str, list[str]]] = []
    for name, template in _pod_templates().items():
        for container in template["spec"]["containers"]:
            for arg in container.get("args", []):
                for line in arg.splitlines():
                    words = shlex.split(line)
                    if words and words[0] == "streamguard":
                        found.append((f"manifest {name}", [w for w in words[1:] if w not in ("&", "&&")]))
    for dockerfile in DOCKERFILES:
        for instruction, value in _instructions(dockerfile):
            if instruction in ("CMD", "ENTRYPOINT") and value.startswith("["):
                words = json.loads(value)
                if words[0] == "streamguard":
                    found.append((f"{dockerfile.name} {instruction}", words[1:]))
    return found


def test_every_streamguard_command_parses_with_the_real_cli() -> None:
    commands = _streamguard_commands()
    assert {where for where, _ in commands} >= {"manifest head", "Dockerfile CMD", "Dockerfile.cuda CMD"}
    for where, argv in commands:
        args = build_parser(argv).parse_args(argv)
        assert args.command == argv[0], where
        config = getattr(args, "config", None)
        if config is not None:
            assert _repo_path(str(config)).is_file(), f"{where}: --config {config} is not in the image"


def test_every_dockerfile_copy_source_exists_and_the_install_names_real_extras() -> None:
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    for dockerfile in DOCKERFILES:
        copies = 0
        for instruction, value in _instructions(dockerfile):
            if instruction == "COPY" and not value.startswith("--from="):
                *sources, _dest = shlex.split(value)
                for source in sources:
                    assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source}: no such path in the repository"
                    copies += 1
            if instruction == "RUN":
                for extra in re.findall(r"'\.\[([\w,-]+)\]'", value):
                    assert set(extra.split(",")) <= extras, f"{dockerfile.name}: extra {extra} not in pyproject.toml"
                for constraints in re.findall(r"pip install [^&]*?-c (\S+)", value):
                    assert (ROOT / constraints).is_file(), f"{dockerfile.name}: -c {constraints}"
        assert copies >= 5


def test_the_readme_gives_the_dockerfiles_build_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    for dockerfile in DOCKERFILES:
        (command,) = re.findall(r"#\s+(docker build -f \S+ -t \S+ \.)", dockerfile.read_text())
        assert command in readme, f"README lacks {command!r}"
    assert "kubectl apply -f deploy/kuberay/raycluster.yaml" in readme


# --- helpers ----------------------------------------------------------------------------


def _find(data: Any, key: str) -> list[Any]:
    """Every value stored under `key`, anywhere in nested dicts and lists."""
    if isinstance(data, dict):
        return [v for k, v in data.items() if k == key] + [x for v in data.values() for x in _find(v, key)]
    if isinstance(data, list):
        return [x for v in data for x in _find(v, key)]
    return []


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) of a Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in dockerfile.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        instruction, _, rest = full.partition(" ")
        out.append((instruction.upper(), rest.strip()))
    return out



def _repo_path(image_path: str) -> Path:
    """A path in the image as the repository path it was copied from (/etc/streamguard: the ConfigMap)."""
    if image_path == "/etc/streamguard/streamguard.yaml":
        return ROOT / "configs" / "cluster.yaml"
    assert image_path.startswith(WORKDIR + "/"), image_path
    return ROOT / image_path[len(WORKDIR) + 1:]


def _pinned(package: str) -> str:
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (pin,) = {d.split("==")[1].split()[0] for deps in optional.values() for d in deps if d.startswith(f"{package}==")}
    return pin
