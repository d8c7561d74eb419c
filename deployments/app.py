"""Build the Serve application from a profiles file: one Ingress, one stage deployment per detector type.

    serve_config.yaml:  import_path: deployments.app:build_app
                        args: {profiles: configs/profiles.yaml, rules_in_ingress: true}

The graph follows the profiles: every stage some profile uses gets a host. Rules run inside the Ingress (or a
`RuleFilter` deployment with `rules_in_ingress: false`); classifier stages share `SafetyClassifier`, semantic
stages share `SemanticEmbedder`. Replicas, resources and autoscaling come from serve_config.yaml only.
"""

from __future__ import annotations

from collections.abc import Mapping

from ray.serve import Application

from deployments.ingress import Ingress
from deployments.schemas import AppArgs
from deployments.service import resolve_profiles_path
from deployments.stage import StageHost
from safepath.profiles import load_profiles

# Detector type -> the deployment that hosts its stages. The names are what serve_config.yaml configures.
DEPLOYMENT_FOR_TYPE = {"rules": "RuleFilter", "classifier": "SafetyClassifier", "semantic": "SemanticEmbedder"}


def plan(args: AppArgs) -> tuple[str, list[str], dict[str, list[str]]]:
    """The graph's shape without Ray: (profiles path, stages run in the ingress, deployment -> its stages)."""
    path = resolve_profiles_path(args.profiles)
    profiles = load_profiles(path)
    inline: list[str] = []
    hosted: dict[str, list[str]] = {}
    for name in profiles.used_stages:
        kind = profiles.stages[name].type
        if kind == "rules" and args.rules_in_ingress:
            inline.append(name)
        else:
            hosted.setdefault(DEPLOYMENT_FOR_TYPE.get(kind, f"{kind.title().replace('_', '')}Stage"), []).append(name)
    return str(path), inline, hosted


def build_app(args: AppArgs) -> Application:
    """The typed application builder `serve run` / `serve deploy` call with the config's `args`.

    Raises:
        ProfileError: the profiles file is missing or invalid (at deploy time, not on the first request).
    """
    return bind_graph(args)


def bind_graph(args: AppArgs | dict | None, options: Mapping[str, dict] | None = None) -> Application:
    """`build_app` for Python callers (tests, benchmarks), with `.options(...)` per deployment name.

    serve_config.yaml's `deployments:` list overrides the same options when the app is deployed from a config.
    """
    if not isinstance(args, AppArgs):
        args = AppArgs.model_validate(args or {})
    options = dict(options or {})
    path, inline, hosted = plan(args)
    handles = {
        dep: StageHost.options(name=dep, **options.pop(dep, {})).bind(path, stages) for dep, stages in hosted.items()
    }
    stage_deployments = {stage: dep for dep, stages in hosted.items() for stage in stages}
    ingress = Ingress.options(**options.pop("Ingress", {})) if "Ingress" in options else Ingress
    if options:
        raise ValueError(f"options for deployments not in this graph: {sorted(options)}; graph: "
                         f"{['Ingress', *hosted]}")
    return ingress.bind(path, inline, handles, stage_deployments)
