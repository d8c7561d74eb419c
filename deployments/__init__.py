"""The Ray Serve layer over `safepath`: `deployments.app:build_app` builds the graph serve_config.yaml runs.

This package's `__init__` imports nothing, so the Ray-free modules (`schemas`, `service`, `http`, `launch`)
import without Ray; `app`, `ingress` and `stage` need `ray[serve]` (the `serve` extra).
"""
