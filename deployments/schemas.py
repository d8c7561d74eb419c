"""Wire and configuration schemas of the Serve layer: app arguments, `user_config` blocks, HTTP bodies.

Requests and results themselves are the core library's `FilterRequest` and `FilterResult`; this module only adds
what exists because there is a server (batches, errors, readiness, live knobs). Importable without Ray.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from safepath.profiles import Thresholds
from safepath.proxy.config import ProxyConfig
from safepath.types import FilterRequest, FilterResult

MAX_BATCH_TRACES = 256


class AppArgs(BaseModel):
    """`args:` of the application in serve_config.yaml, passed to `deployments.app:build_app`."""

    model_config = ConfigDict(extra="forbid")

    profiles: str | None = Field(
        default=None,
        description="Profiles file. Relative paths resolve against the working directory, then the repository root; "
        "the shipped configs/profiles.yaml (SAFEPATH_CONFIG_DIR) when absent.",
    )
    rules_in_ingress: bool = Field(
        default=True,
        description="Run the rule stage inside the ingress replica instead of a RuleFilter deployment. The rules "
        "take well under a millisecond; a Serve hop costs 2-3 ms of CPU (docs/BENCHMARKS.md, 'Serving').",
    )


class BatchingConfig(BaseModel):
    """`user_config` of a stage deployment: its `@serve.batch` knobs, changed live by `reconfigure`."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(
        default=16, ge=1, description="Most stage calls (one per HTTP request and stage) grouped into one batch."
    )
    batch_wait_timeout_s: float = Field(
        default=0.005, ge=0.0, description="Longest a call waits for others to join its batch."
    )


class ProfileOverride(BaseModel):
    """Live changes to one profile, applied over the profiles file with `model_copy`-style updates."""

    model_config = ConfigDict(extra="forbid")

    thresholds: Thresholds | None = Field(default=None, description="Replacement score thresholds.")
    fail_mode: Literal["closed", "open"] | None = Field(default=None, description="Replacement failure mode.")


class IngressConfig(BaseModel):
    """`user_config` of the Ingress deployment: threshold and timeout changes without a restart."""

    model_config = ConfigDict(extra="forbid")

    profiles: dict[str, ProfileOverride] = Field(default_factory=dict, description="Overrides by profile name.")
    stage_timeouts_ms: dict[str, float] = Field(
        default_factory=dict, description="Replacement `timeout_ms` by stage name (must be > 0)."
    )
    cache_enabled: bool | None = Field(
        default=None, description="Answer repeated traces from the result cache; SAFEPATH_CACHE_ENABLED when unset."
    )
    proxy: ProxyConfig | None = Field(
        default=None,
        description="The OpenAI-compatible reasoning proxy (`POST /v1/chat/completions`): its upstream and options. "
        "Absent: the route answers 503. The upstream's key comes from the replica's environment (`api_key_env`).",
    )


class BatchFilterRequest(BaseModel):
    """Body of `POST /v1/filter/batch`."""

    model_config = ConfigDict(extra="forbid")

    requests: list[FilterRequest] = Field(min_length=1, max_length=MAX_BATCH_TRACES, description="Traces to judge.")


class BatchFilterResponse(BaseModel):
    """Answer of `POST /v1/filter/batch`: one result per request, in order."""

    results: list[FilterResult]


class ErrorDetail(BaseModel):
    type: str = Field(description="Machine-readable kind: invalid_request, content_too_large, unknown_profile, "
                      "stage_unavailable, internal_error.")
    message: str = Field(description="What went wrong, for humans.")
    details: dict[str, Any] | None = Field(
        default=None, description="Kind-specific facts (sizes, known profiles, ...)."
    )


class ErrorResponse(BaseModel):
    """Body of every non-2xx answer. A 503 also carries the (blocked, degraded) results."""

    error: ErrorDetail
    results: list[FilterResult] | None = None


class ProfileInfo(BaseModel):
    name: str
    description: str
    stages: list[str]
    thresholds: Thresholds
    fail_mode: Literal["closed", "open"]


class ProfilesResponse(BaseModel):
    """Answer of `GET /v1/profiles`."""

    default_profile: str
    profiles: list[ProfileInfo]


class DeploymentReadiness(BaseModel):
    ready: bool
    stages: dict[str, str] = Field(default_factory=dict, description="Stage name -> model version.")
    error: str | None = None


class ReadyResponse(BaseModel):
    """Answer of `GET /readyz`: ready when every stage deployment answered with its loaded models."""

    ready: bool
    deployments: dict[str, DeploymentReadiness]
