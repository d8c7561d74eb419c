"""Values that change per environment, read from `SAFEPATH_*` environment variables.

Profiles and rules say *what* the filter does and live in versioned YAML; these settings say
*where* things are on this machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_model_dir() -> Path:
    """The repository's `models/` folder, where the shipped model artifacts live."""
    return Path(__file__).resolve().parent.parent / "models"


def default_config_dir() -> Path:
    """`configs/` shipped inside the installed package, else the repository's `configs/` (editable installs)."""
    package_dir = Path(__file__).resolve().parent
    for candidate in (package_dir / "configs", package_dir.parent / "configs"):
        if (candidate / "profiles.yaml").is_file():
            return candidate
    return package_dir.parent / "configs"


class RuntimeSettings(BaseSettings):
    """Per-environment settings. Each field reads `SAFEPATH_<NAME>` from the environment."""

    model_config = SettingsConfigDict(env_prefix="SAFEPATH_", extra="ignore", populate_by_name=True)

    config_dir: Path = Field(default_factory=default_config_dir, description="Folder holding profiles.yaml and rules.")
    profiles_file: Path = Field(default=Path("profiles.yaml"), description="Profiles file, relative to config_dir.")
    stage_workers: int = Field(default=4, ge=1, description="Threads that run non-inline stages in-process.")
    model_dir: Path = Field(default_factory=default_model_dir, description="Folder holding the model folders.")
    precision: Literal["auto", "int8", "fp16", "fp32"] = Field(
        default="auto", description="Which model file to load: `auto` is fp16 on a CUDA device, int8 on CPU."
    )
    providers: list[str] | None = Field(
        default=None, description="ONNX Runtime execution providers; CUDA when available, else CPU, when unset."
    )
    intra_op_threads: int | None = Field(
        default=None, ge=1, description="Threads per model call; ONNX Runtime's choice when unset."
    )
    # A model stage hands its encoder at most this many inputs per call and checks for cancelled requests between
    # calls. 16 on CPU: a cancelled request stops costing within ~0.3 s of one core. A GPU wants far larger calls
    # (serve_config.gpu.yaml sets both), at the price of a cancelled request costing up to one call.
    model_call_rows: int = Field(
        default=16, ge=1, description="Most model inputs per encoder call (as safepath.runtime.onnx.CALL_ROWS)."
    )
    model_call_tokens: int = Field(
        default=4096, ge=128, description="Most rows x padded tokens per model call (bounds activation memory)."
    )

    # The result cache (safepath/cache.py): L1 in-process, L2 Redis when a URL is set.
    cache_enabled: bool = Field(default=True, description="Answer repeated traces from the cache.")
    cache_l1_max_bytes: int = Field(default=64 * 1024 * 1024, ge=0, description="L1 bound in bytes; 0 turns L1 off.")
    cache_l1_ttl_s: float = Field(default=300.0, gt=0, description="Seconds an L1 entry lives.")
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("SAFEPATH_REDIS_URL", "REDIS_URL"),
        description="L2 cache (redis://host:port/db); off when unset. Also read from REDIS_URL.",
    )
    redis_cluster: bool = Field(default=False, description="The URL names a node of a Redis Cluster.")
    redis_ttl_s: float = Field(default=3600.0, gt=0, description="Seconds an L2 entry lives.")
    redis_timeout_ms: float = Field(default=50.0, gt=0, description="Bound on every Redis call.")
    redis_retry_s: float = Field(default=5.0, ge=0, description="After a Redis failure, seconds on L1 alone.")
    redis_prefix: str = Field(default="safepath:", description="Key prefix in Redis.")

    # The audit trail (safepath/audit): off unless a URL is set.
    audit_url: str | None = Field(default=None, description="sqlite:///path.db or postgresql://...; off when unset.")
    audit_record_all: bool = Field(default=False, description="Record plain allows too (by default only the rest).")
    audit_store_content: bool = Field(default=False, description="Keep full content in records (sensitive).")
    audit_token: str | None = Field(
        default=None, description="Bearer token of the HTTP audit endpoint; off when unset."
    )
    audit_spill_dir: Path | None = Field(
        default=None,
        description="Folder for records the audit database could not take yet; the user's cache folder (else a "
        "private one under the temp folder) when unset. Start-up fails when it is not writable.",
    )

    metrics_port: int | None = Field(default=None, description="Library mode: serve /metrics on this port.")

    # Access to the HTTP apps (safepath/access.py): the Ray ingress and the standalone proxy.
    api_keys: SecretStr | None = Field(
        default=None, description="Comma-separated API keys; when set (or api_keys_file), every /v1 route needs one."
    )
    api_keys_file: Path | None = Field(default=None, description="File of API keys, one a line (# comments).")
    rate_limit_per_minute: int | None = Field(
        default=None, ge=1,
        description="Requests a minute per API key (per client address without keys); off when unset.",
    )

    @property
    def profiles_path(self) -> Path:
        return self.config_dir / self.profiles_file
