"""Values that change per environment, read from `SAFEPATH_*` environment variables.

Profiles and rules say *what* the filter does and live in versioned YAML; these settings say
*where* things are on this machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
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

    model_config = SettingsConfigDict(env_prefix="SAFEPATH_", extra="ignore")

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
    intra_op_threads: int | None = Field(default=None, ge=1, description="Threads per model call; ONNX Runtime's choice when unset.")

    @property
    def profiles_path(self) -> Path:
        return self.config_dir / self.profiles_file
