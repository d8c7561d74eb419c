"""CoT SafePath: judge the chain-of-thought of language models before it leaves the sandbox.

The public API. Everything else is importable but may change without notice.
"""

from safepath.errors import (
    ConfigError,
    ContentTooLarge,
    EmptyContent,
    InvalidRequest,
    ModelLoadError,
    ProfileError,
    RuleFileError,
    SafePathError,
    StageError,
    StageTimeout,
    UnknownProfile,
)
from safepath.filter import SafePathFilter
from safepath.profiles import ProfileSet, SafetyProfile, load_profiles
from safepath.streaming import AsyncStreamSession, ReleasedStep, StreamSession
from safepath.types import (
    CATEGORIES,
    Category,
    Detection,
    FilterRequest,
    FilterResult,
    StageKind,
    Step,
    Trace,
    Verdict,
)
from safepath.types import StageKind as Stage  # deprecated alias of StageKind, kept so user code does not break

__version__ = "0.1.0"

__all__ = [
    "AsyncStreamSession",
    "CATEGORIES",
    "Category",
    "ConfigError",
    "ContentTooLarge",
    "Detection",
    "EmptyContent",
    "FilterRequest",
    "FilterResult",
    "InvalidRequest",
    "ModelLoadError",
    "ProfileError",
    "ProfileSet",
    "ReleasedStep",
    "RuleFileError",
    "SafePathError",
    "SafePathFilter",
    "SafetyProfile",
    "Stage",
    "StageError",
    "StageKind",
    "StageTimeout",
    "Step",
    "StreamSession",
    "Trace",
    "UnknownProfile",
    "Verdict",
    "__version__",
    "load_profiles",
]
