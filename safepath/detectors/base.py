"""The one stage protocol every detector follows, and the table that maps a profile's `type:` to a class."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from safepath.errors import ConfigError
from safepath.settings import RuntimeSettings
from safepath.types import Detection, Trace


@runtime_checkable
class Detector(Protocol):
    """A stage. It takes a batch because `@serve.batch` hands deployments a list; one request is a list of one."""

    name: str
    version: str
    # True when detect() is cheap enough (well under a millisecond) to run on the caller's thread or event loop;
    # other detectors run in worker threads, and their detect() is timed as model inference.
    inline: bool

    def detect(self, traces: Sequence[Trace]) -> list[list[Detection]]:
        """Detections for each trace, in the order given (an empty list for a clean trace)."""
        ...

    def warmup(self) -> None:
        """Load and exercise whatever `detect` needs (a model, its first run), so the first request does not pay
        for it against the stage's timeout; a replica reports ready only after. Nothing to do for some stages."""
        ...


def warm_up(detectors: Iterable[Detector]) -> None:
    """Warm every detector up now (see `Detector.warmup`)."""
    for detector in detectors:
        detector.warmup()


# type -> factory(name, options, base_dir, settings). A plain dict, no registry magic.
DetectorFactory = Callable[[str, dict[str, Any], Path, RuntimeSettings], Detector]
DETECTORS: dict[str, DetectorFactory] = {}


def build_detector(
    name: str, type_: str, options: dict[str, Any], base_dir: Path, settings: RuntimeSettings | None = None
) -> Detector:
    """Construct the detector a stage spec names.

    Raises:
        ConfigError: the type is unknown (the detector's own loader raises for bad options).
    """
    _load_builtin_detectors()
    try:
        factory = DETECTORS[type_]
    except KeyError:
        raise ConfigError(f"stage {name!r}: unknown detector type {type_!r}; known: {sorted(DETECTORS)}") from None
    return factory(name, options, base_dir, settings or RuntimeSettings())


def _load_builtin_detectors() -> None:
    # Imported here, not at module top, so that importing safepath never loads a model runtime.
    from safepath.detectors.classifier import ClassifierDetector
    from safepath.detectors.rules import RuleDetector
    from safepath.detectors.semantic import SemanticDetector

    DETECTORS.setdefault("rules", RuleDetector.from_options)
    DETECTORS.setdefault("classifier", ClassifierDetector.from_options)
    DETECTORS.setdefault("semantic", SemanticDetector.from_options)
