"""The public API is exactly `safepath.__all__` (as httpx pins its own in tests/test_exported_members.py): a name
added or dropped there is a decision, made here too."""

from __future__ import annotations

import safepath
from safepath.types import Category, Detection, StageKind

PUBLIC = [
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


def test_all_is_the_exact_sorted_public_api():
    assert safepath.__all__ == PUBLIC
    # classes and constants first, then functions and dunders; each group in case-insensitive order
    assert PUBLIC == sorted(PUBLIC, key=lambda name: (not name[0].isupper(), name.casefold()))


def test_every_public_name_imports():
    for name in safepath.__all__:
        namespace: dict = {}
        exec(f"from safepath import {name}", namespace)  # the import statement a caller writes
        assert namespace[name] is getattr(safepath, name), name


def test_stage_is_a_deprecated_alias_of_stage_kind_with_the_same_wire_value():
    assert safepath.Stage is StageKind
    detection = Detection(category=Category.DECEPTION, stage=StageKind.RULES, score=1.0, step_index=0, span=(0, 1))
    assert detection.model_dump(mode="json")["stage"] == "rules"
    assert Detection.model_validate({**detection.model_dump(mode="json"), "stage": "safety_model"}).stage is (
        safepath.Stage.SAFETY_MODEL
    )
