"""The KubeRay examples in deploy/kuberay/ run what this repository ships.

rayjob.yaml: its entrypoint is an `ernie-vl eval` command line that the real `ernie-vl` parser accepts, naming
registered benchmarks; every path it reads or writes (checkpoint, data, output, ERNIE_VL_HOME) lies on a volume
mounted at the same place on the head and on the workers; the head schedules nothing (num-cpus 0); the GPU workers
hold the replicas it asks for. rayservice.yaml: its `serveConfigV2` is a valid Serve config whose applications are
serve/config.yaml's, parsed and compared (so the test fails when one is edited without the other), with the proxies
on 0.0.0.0 instead of loopback. Both: one image everywhere, Ray token authentication on.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
KUBERAY = ROOT / "deploy" / "kuberay"


def load(name: str) -> dict:
    return yaml.safe_load((KUBERAY / name).read_text())


def pods(cluster: dict) -> list[dict]:
    """The pod specs of the head and of every worker group."""
    return [cluster["headGroupSpec"]["template"]["spec"]] + [w["template"]["spec"] for w in cluster["workerGroupSpecs"]]


def shared_mounts(cluster: dict) -> set[str]:
    """Mount paths of volumes that every pod of the cluster mounts from the same claim."""
    per_pod = []
    for pod in pods(cluster):
        claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod.get("volumes", [])}
        per_pod.append({(m["mountPath"], claims.get(m["name"])) for c in pod["containers"]
                        for m in c.get("volumeMounts", []) if claims.get(m["name"])})
    return {path for path, _ in set.intersection(*per_pod)}


def check_cluster(cluster: dict) -> None:
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # no stage on the head
    assert cluster["authOptions"]["mode"] == "token"
    major, minor, *_ = (int(x) for x in cluster["rayVersion"].split("."))
    assert (major, minor) >= (2, 52)  # token authentication through KubeRay's authOptions
    images = {c["image"] for pod in pods(cluster) for c in pod["containers"]}
    assert len(images) == 1, images  # the same image (this project installed) on every pod


def on_shared_volume(path: str, mounts: set[str]) -> bool:
    return any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts)


def test_rayjob_entrypoint_is_an_ernie_vl_eval_run_its_cluster_can_hold():
    from ernie_vl_cli import build_parser
    from evals.registry import get_benchmark
    from pipelines.cli import _benchmark_specs

    job = load("rayjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec, cluster = job["spec"], job["spec"]["rayClusterSpec"]
    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["ernie-vl", "eval"], argv
    a = build_parser().parse_args(argv[1:])  # the `ernie-vl` command line itself (argparse exits on a bad option)
    assert a.func.__name__ == "cmd_eval"
    specs = _benchmark_specs(a)
    for s in specs:
        get_benchmark(s.name)  # a registered benchmark (KeyError otherwise)
        assert s.data, f"{s.name} needs --data"
    check_cluster(cluster)

    mounts = shared_mounts(cluster)
    env = yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"]
    for path in [a.model, a.out, env["ERNIE_VL_HOME"], *(s.data for s in specs)]:
        assert path and on_shared_volume(path, mounts), (path, mounts)

    def gpus(group) -> float:
        containers = group["template"]["spec"]["containers"]
        return sum(float(c["resources"]["limits"].get("nvidia.com/gpu", 0)) for c in containers)

    have = sum(w["replicas"] * gpus(w) for w in cluster["workerGroupSpecs"])
    assert a.replicas * (a.gpus_per_replica or 1) * a.expert_shards <= have, (a.replicas, have)


def test_rayservice_serves_the_application_of_serve_config_yaml():
    from ray.serve.schema import ServeDeploySchema

    svc = load("rayservice.yaml")
    assert (svc["apiVersion"], svc["kind"]) == ("ray.io/v1", "RayService")
    served = yaml.safe_load(svc["spec"]["serveConfigV2"])
    shipped = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    ServeDeploySchema.model_validate(served)
    assert served["applications"] == shipped["applications"], "rayservice.yaml drifted from serve/config.yaml"
    assert served["proxy_location"] == shipped["proxy_location"]
    assert served["http_options"] == {**shipped["http_options"], "host": "0.0.0.0"}  # behind the Kubernetes Service
    check_cluster(svc["spec"]["rayClusterSpec"])
