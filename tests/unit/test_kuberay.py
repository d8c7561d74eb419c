"""The KubeRay RayService manifest (deployments/kuberay.py) and the images its pods run (Dockerfile, Dockerfile.gpu).

The manifest is rendered from the real serve_config.yaml and serve_config.gpu.yaml; the expected Serve config is
computed here independently, from the changes the module documents. Docker cannot run here, so the Dockerfiles are
read as text: what they install and copy must be what the profiles and the package need.
"""

from __future__ import annotations

import copy
import fnmatch
import math
import re
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from deployments import kuberay

ROOT = Path(__file__).resolve().parents[2]
CPU_CONFIG = ROOT / "serve_config.yaml"
GPU_CONFIG = ROOT / "serve_config.gpu.yaml"
IMAGE = "registry.example/safepath:0.1.0"
SECRET_VARS = {"SAFEPATH_AUDIT_URL", "SAFEPATH_API_KEYS", "SAFEPATH_REDIS_URL", "SAFEPATH_AUDIT_TOKEN"}


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def render(path: Path, **kwargs) -> dict:
    return kuberay.render(load(path), image=IMAGE, gpu=path == GPU_CONFIG, **kwargs)


def containers(manifest: dict) -> list[dict]:
    cluster = manifest["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]
    return [c for pod in pods for c in pod["template"]["spec"]["containers"]]


def quantity_bytes(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(Gi|Mi)", value).groups()
    return int(number) * {"Gi": 1024**3, "Mi": 1024**2}[unit]


def expected_applications(config: dict) -> list[dict]:
    """serve_config's applications less every secret variable in runtime_env (and runtime_envs left empty)."""
    apps = copy.deepcopy(config["applications"])
    for holder in apps + [d.get("ray_actor_options", {}) for app in apps for d in app.get("deployments", [])]:
        env = holder.get("runtime_env", {}).get("env_vars")
        if env is None:
            continue
        for name in SECRET_VARS | {"REDIS_URL"}:
            env.pop(name, None)
        if not env:
            del holder["runtime_env"]["env_vars"]
        if not holder["runtime_env"]:
            del holder["runtime_env"]
    return apps


# --- the manifest's frame and its Serve config ---


@pytest.mark.parametrize("path", [CPU_CONFIG, GPU_CONFIG])
def test_manifest_is_a_ray_v1_rayservice(path):
    manifest = render(path, name="filter")
    assert manifest["apiVersion"] == "ray.io/v1"
    assert manifest["kind"] == "RayService"
    assert manifest["metadata"]["name"] == "filter"
    assert isinstance(manifest["spec"]["serveConfigV2"], str)  # KubeRay takes the Serve config as a YAML string
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == kuberay.RAY_VERSION
    assert cluster["authOptions"] == {"mode": "token"}  # Ray 2.60 clusters need the token ("Missing authentication")
    assert cluster["enableInTreeAutoscaling"] is True


@pytest.mark.parametrize("path", [CPU_CONFIG, GPU_CONFIG])
def test_serve_config_v2_is_serve_config_with_the_documented_changes(path):
    original = load(path)
    served = yaml.safe_load(render(path)["spec"]["serveConfigV2"])
    assert served["applications"] == expected_applications(original)
    assert served["http_options"] == {**original["http_options"], "host": "0.0.0.0"}
    assert served["proxy_location"] == "EveryNode"
    assert served["logging_config"] == original["logging_config"]
    assert set(served) == set(original)


@pytest.mark.parametrize("path", [CPU_CONFIG, GPU_CONFIG])
def test_serve_config_v2_passes_serves_own_schema(path):
    # What KubeRay hands to the dashboard must be a valid `serve deploy` config (imports Ray's schema, starts nothing).
    schema = pytest.importorskip("ray.serve.schema")
    served = schema.ServeDeploySchema.model_validate(yaml.safe_load(render(path)["spec"]["serveConfigV2"]))
    assert served.http_options.host == "0.0.0.0"
    assert [a.name for a in served.applications] == [a["name"] for a in load(path)["applications"]]


def test_sqlite_audit_url_of_serve_config_is_replaced_by_the_secret():
    # serve_config.yaml names a SQLite file; on a cluster each node would keep its own partial trail.
    assert "sqlite" in CPU_CONFIG.read_text()
    manifest = render(CPU_CONFIG)
    assert "sqlite" not in kuberay.dump(manifest)
    for container in containers(manifest):
        (audit,) = [e for e in container["env"] if e["name"] == "SAFEPATH_AUDIT_URL"]
        assert audit["valueFrom"]["secretKeyRef"] == {"name": "safepath", "key": "audit-url"}


def test_inline_secrets_in_a_serve_config_never_reach_the_manifest():
    config = load(CPU_CONFIG)
    app = config["applications"][0]
    app["runtime_env"]["env_vars"].update({
        "SAFEPATH_AUDIT_URL": "postgresql://audit:hunter2@db/audit",
        "REDIS_URL": "redis://:hunter3@cache:6379/0",
        "SAFEPATH_CACHE_L1_TTL_S": "60",  # not a secret: stays
    })
    ingress = app["deployments"][0]["ray_actor_options"]
    ingress["runtime_env"] = {"env_vars": {"SAFEPATH_API_KEYS": "key-one,key-two"}}
    before = copy.deepcopy(config)
    text = kuberay.dump(kuberay.render(config, image=IMAGE))
    assert config == before  # the caller's config is left untouched
    for secret in ("hunter2", "hunter3", "key-one"):
        assert secret not in text
    served = yaml.safe_load(yaml.safe_load(text)["spec"]["serveConfigV2"])
    assert served["applications"][0]["runtime_env"] == {"env_vars": {"SAFEPATH_CACHE_L1_TTL_S": "60"}}
    assert "runtime_env" not in served["applications"][0]["deployments"][0]["ray_actor_options"]


@pytest.mark.parametrize("path", [CPU_CONFIG, GPU_CONFIG])
def test_every_pod_takes_the_secrets_by_reference(path):
    manifest = render(path, secret="safepath-prod")
    for container in containers(manifest):
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
        assert set(refs) == SECRET_VARS
        assert {ref["name"] for ref in refs.values()} == {"safepath-prod"}
        # Without an audit database or API keys the pods do not start; Redis and the audit token are optional.
        assert not refs["SAFEPATH_AUDIT_URL"].get("optional") and not refs["SAFEPATH_API_KEYS"].get("optional")
        assert refs["SAFEPATH_REDIS_URL"]["optional"] is True
        assert all("value" not in e for e in container["env"] if e["name"] in SECRET_VARS)


# --- the Ray cluster: head, worker groups, sizes ---


@pytest.mark.parametrize("path", [CPU_CONFIG, GPU_CONFIG])
def test_head_runs_no_replicas_and_exposes_the_serve_port(path):
    head = render(path)["spec"]["rayClusterConfig"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    (container,) = head["template"]["spec"]["containers"]
    assert container["image"] == IMAGE
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["serve"] == load(path)["http_options"]["port"]
    assert {"gcs-server", "dashboard"} <= set(ports)
    assert container["resources"]["requests"] == container["resources"]["limits"]
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])


@pytest.mark.parametrize("path", [CPU_CONFIG, GPU_CONFIG])
def test_worker_groups_hold_every_deployment_at_its_largest(path):
    config = load(path)
    deployments = config["applications"][0]["deployments"]
    groups = render(path)["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert {g["groupName"] for g in groups} == ({"cpu", "gpu"} if path == GPU_CONFIG else {"cpu"})
    capacity = {"cpu": 0.0, "gpu": 0, "memory": 0}
    for group in groups:
        (container,) = group["template"]["spec"]["containers"]
        assert container["image"] == IMAGE
        limits = container["resources"]["limits"]
        assert container["resources"]["requests"] == limits
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        object_store = int(group["rayStartParams"]["object-store-memory"])
        capacity["cpu"] += float(limits["cpu"]) * group["maxReplicas"]
        capacity["gpu"] += int(limits.get("nvidia.com/gpu", 0)) * group["maxReplicas"]
        capacity["memory"] += (quantity_bytes(limits["memory"]) - object_store) * group["maxReplicas"]
    options = [(d["autoscaling_config"]["max_replicas"], d["ray_actor_options"]) for d in deployments]
    assert capacity["cpu"] >= sum(n * o["num_cpus"] for n, o in options)
    assert capacity["gpu"] >= sum(n * o.get("num_gpus", 0) for n, o in options)
    assert capacity["memory"] >= sum(n * o["memory"] for n, o in options)


def test_gpu_deployments_get_a_gpu_group_of_their_own():
    config = load(GPU_CONFIG)
    gpu_deployments = [d for d in config["applications"][0]["deployments"] if d["ray_actor_options"].get("num_gpus")]
    assert [d["name"] for d in gpu_deployments] == ["SafetyClassifier"]
    groups = {g["groupName"]: g for g in render(GPU_CONFIG)["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    (gpu_container,) = groups["gpu"]["template"]["spec"]["containers"]
    assert gpu_container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert groups["gpu"]["maxReplicas"] == gpu_deployments[0]["autoscaling_config"]["max_replicas"]
    (cpu_container,) = groups["cpu"]["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in cpu_container["resources"]["limits"]


def test_gpu_image_keeps_replicas_without_a_gpu_on_the_cpu_provider():
    # onnxruntime-gpu lists CUDA on any machine: without this the SemanticEmbedder would load fp16 for CUDA.
    manifest = render(GPU_CONFIG)
    for container in containers(manifest):
        (providers,) = [e["value"] for e in container["env"] if e["name"] == "SAFEPATH_PROVIDERS"]
        assert yaml.safe_load(providers) == ["CPUExecutionProvider"]
    served = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    classifier = next(d for d in served["applications"][0]["deployments"] if d["name"] == "SafetyClassifier")
    own = yaml.safe_load(classifier["ray_actor_options"]["runtime_env"]["env_vars"]["SAFEPATH_PROVIDERS"])
    assert own[0] == "CUDAExecutionProvider"  # the GPU replica's runtime_env overrides the pod's default
    assert all(e["name"] != "SAFEPATH_PROVIDERS" for c in containers(render(CPU_CONFIG)) for e in c["env"])


def test_deployment_without_resources_is_sized_by_the_documented_defaults():
    config = {"applications": [{"name": "a", "import_path": "x:y", "deployments": [
        {"name": "Plain", "num_replicas": 3},
    ]}]}
    (group,) = kuberay.render(config, image=IMAGE)["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert (group["minReplicas"], group["maxReplicas"]) == (3, 3)
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["cpu"] == str(math.ceil(kuberay.DEFAULT_REPLICA_CPUS))
    expected = kuberay.DEFAULT_REPLICA_MEMORY_BYTES + kuberay.WORKER_OVERHEAD_BYTES
    assert quantity_bytes(limits["memory"]) == math.ceil(expected / 1024**3) * 1024**3


@pytest.mark.parametrize("path,gpu,message", [
    (GPU_CONFIG, False, "pass --gpu"),
    (CPU_CONFIG, True, "no deployment in the config asks for a GPU"),
])
def test_gpu_flag_must_match_the_config(path, gpu, message):
    with pytest.raises(ValueError, match=message):
        kuberay.render(load(path), image=IMAGE, gpu=gpu)


def test_num_replicas_auto_is_refused_with_the_fix():
    config = {"applications": [{"name": "a", "deployments": [{"name": "D", "num_replicas": "auto"}]}]}
    with pytest.raises(ValueError, match="autoscaling_config"):
        kuberay.render(config, image=IMAGE)


# --- the command line ---


def test_command_line_prints_the_manifest(capsys):
    assert kuberay.main([str(GPU_CONFIG), "--image", IMAGE, "--gpu", "--name", "filter"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == render(GPU_CONFIG, name="filter")


def test_command_line_names_the_problem(capsys):
    with pytest.raises(SystemExit) as exc:
        kuberay.main([str(GPU_CONFIG), "--image", IMAGE])
    assert exc.value.code == 2
    assert "pass --gpu" in capsys.readouterr().err


def test_module_imports_without_ray():
    code = "import sys, deployments.kuberay; sys.exit('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


# --- the images ---


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", "\n".join(
        line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")
    ))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def copied(path: Path) -> list[str]:
    """The sources of every COPY, flags dropped."""
    out = []
    for op, args in instructions(path):
        if op == "COPY":
            parts = [p for p in args.split() if not p.startswith("--")]
            out += [p.rstrip("/") for p in parts[:-1]]
    return out


def profile_models() -> set[str]:
    """Every model folder a stage of the shipped profiles names (`model:` at any depth of its options)."""
    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "model" and isinstance(value, str):
                    yield value
                else:
                    yield from walk(value)

    profiles = yaml.safe_load((ROOT / "configs" / "profiles.yaml").read_text())
    return {model for stage in profiles["stages"].values() for model in walk(stage.get("options", {}))}


DOCKERFILES = {"cpu": ROOT / "Dockerfile", "gpu": ROOT / "Dockerfile.gpu"}


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_dockerfile_installs_its_extras_and_not_the_other(kind):
    installs = [args for op, args in instructions(DOCKERFILES[kind]) if op == "RUN" and "pip install" in args]
    assert len(installs) == 1
    extras = set(re.search(r'"\.\[([a-z,]+)\]"', installs[0]).group(1).split(","))
    other = {"cpu": "gpu", "gpu": "cpu"}[kind]
    assert {kind, "serve", "postgres"} <= extras and other not in extras  # onnxruntime and -gpu clash
    assert extras <= set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_dockerfile_copies_the_models_the_profiles_need(kind):
    sources = copied(DOCKERFILES[kind])
    models = profile_models()
    assert models == {"safety-minilm", "semantic-minilm", "static-minilm", "trace-minilm"}
    for model in models:
        assert f"models/{model}" in sources
    for needed in ("configs", "safepath", "deployments", "pyproject.toml", "README.md", "serve_config.yaml"):
        assert needed in sources
    for source in sources:
        assert (ROOT / source).exists(), source


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_dockerfile_is_based_on_the_ray_of_the_manifest(kind):
    ops = instructions(DOCKERFILES[kind])
    args = dict(a.split("=", 1) for op, a in ops if op == "ARG" and "=" in a)
    assert args["RAY_VERSION"] == kuberay.RAY_VERSION == version("ray")
    (base,) = [a for op, a in ops if op == "FROM"]
    python = "".join(map(str, sys.version_info[:2]))
    assert base == f"rayproject/ray:${{RAY_VERSION}}-py{python}-{kind}"


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_dockerfile_points_the_package_at_its_models_and_configs(kind):
    ops = instructions(DOCKERFILES[kind])
    (workdir,) = [a for op, a in ops if op == "WORKDIR"]
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(a for op, a in ops if op == "ENV")))
    # serve_config.yaml's profiles path is relative: Ray starts replicas in the working directory of `ray start`.
    assert (ROOT / load(CPU_CONFIG)["applications"][0]["args"]["profiles"]).is_file()
    assert env["SAFEPATH_MODEL_DIR"] == f"{workdir}/models"
    assert env["SAFEPATH_CONFIG_DIR"] == f"{workdir}/configs"


def test_gpu_dockerfile_derives_every_fp16_model_it_ships():
    runs = " ".join(a for op, a in instructions(DOCKERFILES["gpu"]) if op == "RUN")
    derived = set(re.findall(r"models/([\w-]+)/model\.fp16\.onnx", runs.split("onnx_export.py derive", 1)[1]))
    needing = {p.parent.name for p in (ROOT / "models").glob("*/model.fp16.onnx.derive.json")}
    assert needing and needing & profile_models() <= derived
    assert "models/onnx_export.py" in copied(DOCKERFILES["gpu"])
    assert "derive" not in " ".join(a for op, a in instructions(DOCKERFILES["cpu"]) if op == "RUN")


def test_gpu_dockerfile_registers_the_cuda_libraries_from_pypi(tmp_path):
    ops = instructions(DOCKERFILES["gpu"])
    runs = [a for op, a in ops if op == "RUN"]
    assert any("onnxruntime-gpu[cuda,cudnn]" in r for r in runs if "pip install" in r)
    # The build step that lists site-packages/nvidia/*/lib, run against the layout of the CUDA 13 wheels.
    (listing,) = [r for r in runs if "nvidia.__path__" in r]
    code = re.search(r'python -c "(.+?)"', listing).group(1)
    for folder in ("nvidia/cu13/lib", "nvidia/cudnn/lib", "nvidia/cudnn/include"):
        (tmp_path / folder).mkdir(parents=True)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)},
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(tmp_path / "nvidia/cu13/lib"), str(tmp_path / "nvidia/cudnn/lib")]
    assert any("/etc/ld.so.conf.d/" in r and "ldconfig" in r for r in runs)
    users = [a for op, a in ops if op == "USER"]
    assert users[-1] == "ray"  # Ray's images run as `ray`; KubeRay's commands expect it


def test_dockerignore_keeps_local_state_out_of_the_context():
    patterns = [p.strip().rstrip("/") for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    for path in (".venv", "build", ".git", "models/safety-minilm/model.fp16.external.bin"):
        assert any(fnmatch.fnmatch(path, p.replace("**/", "*")) for p in patterns), path
    for source in copied(DOCKERFILES["gpu"]):  # nothing the images copy is ignored
        assert not any(fnmatch.fnmatch(source, p) for p in patterns), source
