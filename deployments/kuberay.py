"""A KubeRay `RayService` manifest from serve_config.yaml: the same Serve applications, on a Ray cluster in Kubernetes.

    python -m deployments.kuberay serve_config.yaml --image IMAGE > rayservice.yaml
    python -m deployments.kuberay serve_config.gpu.yaml --image GPU_IMAGE --gpu > rayservice.yaml

serve_config.yaml stays the one source of truth: its Serve config becomes `spec.serveConfigV2` (a YAML string, as
KubeRay expects) with only these changes, each needed on a cluster:

- `http_options.host` is 0.0.0.0: a proxy bound to 127.0.0.1 cannot be reached from the Kubernetes Service.
- `proxy_location` is EveryNode: KubeRay's serve Service balances over every pod whose proxy is up; HeadOnly would
  send all traffic through the head pod.
- The variables the pods take from the Secret (SECRET_ENV) are dropped from every `runtime_env.env_vars`: a
  runtime_env value overrides the pod's, so serve_config.yaml's SQLite audit URL (one file per node: each node
  would keep its own partial trail) would hide the PostgreSQL URL in the Secret. Secrets never sit in the manifest.

The Ray cluster (`rayClusterConfig`): a head that runs no replicas (`num-cpus: 0`: GCS, dashboard, Serve controller
and a proxy) and one worker group per kind of deployment (`cpu`; `gpu` for deployments that ask for `num_gpus`).
A worker pod holds one replica of every deployment of its group (their `ray_actor_options` summed, CPUs and GPUs
rounded up to whole ones, memory plus WORKER_OVERHEAD_BYTES for Ray's own processes and object store), so a group
needs at most as many pods as its largest deployment has replicas: `minReplicas` the largest `min_replicas`,
`maxReplicas` the largest `max_replicas`; KubeRay's autoscaler adds pods as Serve adds replicas. Requests equal
limits. Deployments that give no `num_cpus` or `memory` count as Serve's 1 CPU and DEFAULT_REPLICA_MEMORY_BYTES.
With `--gpu`, the pods' SAFEPATH_PROVIDERS is the CPU provider: only the deployments that hold a GPU name CUDA
(their runtime_env in serve_config.gpu.yaml).

Ray 2.60 turns token authentication on for `ray start` clusters; `authOptions.mode: token` has KubeRay (1.5.1+)
create the token and give it to every pod and to its own calls to the dashboard.

Importing this module does not import Ray.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# The Ray of the image (Dockerfile's RAY_VERSION) and of the `serve` extra; KubeRay checks features against it.
RAY_VERSION = "2.60.0"
GIB = 1024**3
MIB = 1024**2
# Serve's own default for a replica with no ray_actor_options.
DEFAULT_REPLICA_CPUS = 1.0
# For pod sizing only (Ray reserves no memory for a replica that names none): about one model replica.
DEFAULT_REPLICA_MEMORY_BYTES = 1 * GIB
# Worker pods: the raylet and its agents (~0.5 GiB) plus an object store capped at 512 MiB. The filter moves
# small objects (a request body is at most 16 MiB), and Ray's default (30% of the pod) would take memory the
# replicas' `memory` reservations need.
WORKER_OBJECT_STORE_BYTES = 512 * MIB
WORKER_OVERHEAD_BYTES = WORKER_OBJECT_STORE_BYTES + 768 * MIB
# The head runs GCS, the dashboard, the Serve controller and a proxy, and no replicas.
HEAD_CPUS = 2
HEAD_MEMORY_BYTES = 4 * GIB
# Pod environment from the Secret: (variable, key in the Secret, required). A missing required key keeps the pods
# from starting (CreateContainerConfigError) rather than serving without an audit trail or without API keys.
SECRET_ENV: tuple[tuple[str, str, bool], ...] = (
    ("SAFEPATH_AUDIT_URL", "audit-url", True),  # postgresql://user:password@host:5432/db
    ("SAFEPATH_API_KEYS", "api-keys", True),  # comma-separated
    ("SAFEPATH_REDIS_URL", "redis-url", False),  # shared L2 cache and rate limits; per-replica without it
    ("SAFEPATH_AUDIT_TOKEN", "audit-token", False),  # opens GET /v1/audit/summary
)
# The GPU image's default for replicas without a GPU (see `render`).
CPU_PROVIDERS = '["CPUExecutionProvider"]'
# Also dropped from runtime_env: safepath.settings reads it as the Redis URL too, and a Redis URL may carry a password.
_SHADOWING_ENV = {name for name, _, _ in SECRET_ENV} | {"REDIS_URL"}


@dataclass(frozen=True)
class Demand:
    """What one deployment asks of the cluster: per-replica resources and its replica range."""

    name: str
    min_replicas: int
    max_replicas: int
    cpus: float
    gpus: float
    memory_bytes: int


def cluster_serve_config(config: dict[str, Any]) -> dict[str, Any]:
    """The Serve config as it runs on the cluster (the module docstring lists the changes); `config` is untouched."""
    out = copy.deepcopy(config)
    out["proxy_location"] = "EveryNode"
    out.setdefault("http_options", {})["host"] = "0.0.0.0"
    for app in out.get("applications", []):
        _drop_secret_env(app)
        for deployment in app.get("deployments", []):
            _drop_secret_env(deployment.get("ray_actor_options", {}))
    return out


def _drop_secret_env(holder: dict[str, Any]) -> None:
    runtime_env = holder.get("runtime_env")
    if not runtime_env or "env_vars" not in runtime_env:
        return
    env_vars = {k: v for k, v in runtime_env["env_vars"].items() if k not in _SHADOWING_ENV}
    runtime_env.pop("env_vars")
    if env_vars:
        runtime_env["env_vars"] = env_vars
    if not runtime_env:
        holder.pop("runtime_env")


def demands(config: dict[str, Any]) -> list[Demand]:
    """Each listed deployment's per-replica resources and replica range.

    Raises:
        ValueError: a deployment's replica count is not a number or an autoscaling range (`num_replicas: auto`).
    """
    out = []
    for app in config.get("applications", []):
        for deployment in app.get("deployments", []):
            options = deployment.get("ray_actor_options", {})
            low, high = _replica_range(deployment)
            out.append(Demand(
                name=deployment["name"], min_replicas=low, max_replicas=high,
                cpus=float(options.get("num_cpus", DEFAULT_REPLICA_CPUS)), gpus=float(options.get("num_gpus", 0)),
                memory_bytes=int(options.get("memory") or DEFAULT_REPLICA_MEMORY_BYTES),
            ))
    return out


def _replica_range(deployment: dict[str, Any]) -> tuple[int, int]:
    autoscaling = deployment.get("autoscaling_config")
    if autoscaling:
        low = int(autoscaling.get("min_replicas", 1))
        return low, max(low, int(autoscaling.get("max_replicas", 1)))
    replicas = deployment.get("num_replicas", 1)
    if not isinstance(replicas, int):
        raise ValueError(f"{deployment['name']}: num_replicas {replicas!r}; give a number or autoscaling_config")
    return replicas, replicas


def worker_group(group: str, members: Sequence[Demand], *, image: str, env: list[dict[str, Any]]) -> dict[str, Any]:
    """A worker group whose pod holds one replica of each of `members`."""
    resources: dict[str, Any] = {
        "cpu": str(max(1, math.ceil(sum(d.cpus for d in members)))),
        "memory": _gibibytes(sum(d.memory_bytes for d in members) + WORKER_OVERHEAD_BYTES),
    }
    gpus = math.ceil(sum(d.gpus for d in members))
    if gpus:
        resources["nvidia.com/gpu"] = str(gpus)
    low, high = max(d.min_replicas for d in members), max(d.max_replicas for d in members)
    return {
        "groupName": group,
        "replicas": low,
        "minReplicas": low,
        "maxReplicas": high,
        "rayStartParams": {"object-store-memory": str(WORKER_OBJECT_STORE_BYTES)},
        "template": {"spec": {"containers": [{
            "name": "ray-worker",
            "image": image,
            "env": env,
            "resources": {"requests": dict(resources), "limits": dict(resources)},
        }]}},
    }


def head_group(*, image: str, env: list[dict[str, Any]], serve_port: int) -> dict[str, Any]:
    """The head group: no replicas on it (`num-cpus: 0`), the dashboard reachable by the operator."""
    resources = {"cpu": str(HEAD_CPUS), "memory": _gibibytes(HEAD_MEMORY_BYTES)}
    return {
        "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
        "template": {"spec": {"containers": [{
            "name": "ray-head",
            "image": image,
            "env": env,
            "resources": {"requests": dict(resources), "limits": dict(resources)},
            "ports": [
                {"containerPort": 6379, "name": "gcs-server"},
                {"containerPort": 8265, "name": "dashboard"},
                {"containerPort": 10001, "name": "client"},
                {"containerPort": serve_port, "name": "serve"},
            ],
        }]}},
    }


def secret_env(secret: str) -> list[dict[str, Any]]:
    """The pods' environment: every SECRET_ENV variable as a reference into `secret`, never a value."""
    env = []
    for name, key, required in SECRET_ENV:
        ref: dict[str, Any] = {"name": secret, "key": key}
        if not required:
            ref["optional"] = True
        env.append({"name": name, "valueFrom": {"secretKeyRef": ref}})
    return env


def render(config: dict[str, Any], *, image: str, gpu: bool = False, name: str = "safepath",
           secret: str = "safepath") -> dict[str, Any]:
    """The RayService manifest for a Serve config (as loaded from serve_config.yaml).

    Args:
        config: the Serve config; left untouched.
        image: the container image of every Ray pod (built from Dockerfile, or Dockerfile.gpu with `gpu`).
        gpu: the image is the GPU build; required exactly when a deployment asks for `num_gpus`.
        name: the RayService's name; KubeRay names the HTTP Service `<name>-serve-svc`.
        secret: the Kubernetes Secret holding the SECRET_ENV keys.

    Raises:
        ValueError: `gpu` does not match the config, or a deployment's replica count is not a number or a range.
    """
    needs = demands(config)
    wants_gpu = any(d.gpus for d in needs)
    if wants_gpu != gpu:
        raise ValueError("the config asks for GPUs: pass --gpu and a GPU image (Dockerfile.gpu)" if wants_gpu
                         else "--gpu given, but no deployment in the config asks for a GPU (num_gpus)")
    if not needs:
        raise ValueError("the config lists no deployments: nothing to size the worker pods by")
    env = secret_env(secret)
    if gpu:
        # onnxruntime-gpu lists CUDA among its providers on any machine, so a replica that holds no GPU would load
        # the fp16 model for CUDA and run it on CPU. Replicas that do hold one set their own SAFEPATH_PROVIDERS
        # in runtime_env (serve_config.gpu.yaml), which overrides this.
        env.append({"name": "SAFEPATH_PROVIDERS", "value": CPU_PROVIDERS})
    groups = [("cpu", [d for d in needs if not d.gpus]), ("gpu", [d for d in needs if d.gpus])]
    serve_config = cluster_serve_config(config)
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": name},
        "spec": {
            "serveConfigV2": yaml.safe_dump(serve_config, sort_keys=False),
            "rayClusterConfig": {
                "rayVersion": RAY_VERSION,
                "enableInTreeAutoscaling": True,
                "authOptions": {"mode": "token"},
                "headGroupSpec": head_group(
                    image=image, env=env, serve_port=int(serve_config["http_options"].get("port", 8000))
                ),
                "workerGroupSpecs": [
                    worker_group(group, members, image=image, env=env) for group, members in groups if members
                ],
            },
        },
    }


def _gibibytes(size_bytes: int) -> str:
    return f"{math.ceil(size_bytes / GIB)}Gi"


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings (serveConfigV2) as literal blocks, as KubeRay's own samples show them."""

    def ignore_aliases(self, data: Any) -> bool:
        # The pods share one env list; anchors and aliases (&id001) would be valid YAML but hard to read and edit.
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(manifest: dict[str, Any]) -> str:
    return yaml.dump(manifest, Dumper=_Dumper, sort_keys=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.kuberay", description=__doc__.splitlines()[0])
    parser.add_argument("serve_config", type=Path, help="serve_config.yaml, or serve_config.gpu.yaml with --gpu")
    parser.add_argument("--image", required=True, help="the image every Ray pod runs")
    parser.add_argument("--gpu", action="store_true", help="the image is the GPU build (Dockerfile.gpu)")
    parser.add_argument("--name", default="safepath", help="the RayService's name (default: safepath)")
    parser.add_argument("--secret", default="safepath", help="the Secret with the audit URL, API keys, Redis URL")
    args = parser.parse_args(argv)
    config = yaml.safe_load(args.serve_config.read_text())
    try:
        manifest = render(config, image=args.image, gpu=args.gpu, name=args.name, secret=args.secret)
    except ValueError as exc:
        parser.error(f"{args.serve_config}: {exc}")
    sys.stdout.write(dump(manifest))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
