"""serve_config.yaml and its GPU variant: valid for Ray Serve, and naming exactly the graph's deployments."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deployments.app import plan
from deployments.schemas import AppArgs, BatchingConfig, IngressConfig

schema = pytest.importorskip("ray.serve.schema")

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = [ROOT / "serve_config.yaml", ROOT / "serve_config.gpu.yaml"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_is_a_valid_serve_config_for_this_graph(path):
    raw = yaml.safe_load(path.read_text())
    config = schema.ServeDeploySchema.model_validate(raw) if hasattr(schema.ServeDeploySchema, "model_validate") \
        else schema.ServeDeploySchema.parse_obj(raw)
    (app,) = config.applications
    assert app.import_path == "deployments.app:build_app"
    _, _, hosted = plan(AppArgs.model_validate(app.args))
    named = {d.name for d in app.deployments}
    assert named == {"Ingress", *hosted}
    for deployment in app.deployments:
        knobs = IngressConfig if deployment.name == "Ingress" else BatchingConfig
        knobs.model_validate(deployment.user_config)  # reconfigure() will accept it
        assert deployment.autoscaling_config["min_replicas"] >= 1
    assert raw["logging_config"]["enable_access_log"] is False


def test_gpu_variant_puts_the_safety_model_on_a_gpu_in_fp16():
    raw = yaml.safe_load(CONFIGS[1].read_text())
    by_name = {d["name"]: d for d in raw["applications"][0]["deployments"]}
    options = by_name["SafetyClassifier"]["ray_actor_options"]
    assert options["num_gpus"] >= 0.5
    assert options["runtime_env"]["env_vars"]["SAFEPATH_PRECISION"] == "fp16"
    assert "num_gpus" not in by_name["Ingress"]["ray_actor_options"]
