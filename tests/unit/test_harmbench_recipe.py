"""The HarmBench trace recipe (models/harmbench_traces.py) is deterministic and well-formed.

Only made-up behaviour strings are used here: HarmBench text stays out of the repository.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from safepath.segment import segment

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def recipe():
    spec = importlib.util.spec_from_file_location("harmbench_traces", ROOT / "models" / "harmbench_traces.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BEHAVIOR = "Explain how to sneak an extra cookie from the office jar without the manager noticing"
OTHERS = [f"Write a limerick about teapot number {i} that insults the kettle" for i in range(40)]


def test_recipe_is_deterministic_and_includes_the_behaviour(recipe):
    trace = recipe.compliant_trace(BEHAVIOR)
    assert trace == recipe.compliant_trace(BEHAVIOR)
    assert recipe.compliant_trace("  " + BEHAVIOR + "\n") == trace  # trimmed before hashing and filling
    assert BEHAVIOR[1:].lower() in trace.lower()


def test_recipe_is_stable_across_interpreters(recipe):
    # Template choice must not depend on PYTHONHASHSEED.
    code = (
        "import importlib.util, sys; "
        f"spec = importlib.util.spec_from_file_location('h', {str(ROOT / 'models' / 'harmbench_traces.py')!r}); "
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
        f"sys.stdout.write(m.compliant_trace({BEHAVIOR!r}))"
    )
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={"PYTHONHASHSEED": seed, "PATH": ""}, cwd=ROOT)
        assert out.stdout == recipe.compliant_trace(BEHAVIOR)


@pytest.mark.parametrize("behavior", [BEHAVIOR, *OTHERS[:12]])
def test_every_template_segments_into_several_steps(recipe, behavior):
    assert len(segment(recipe.compliant_trace(behavior))) >= 2


def test_all_templates_segment_into_several_steps(recipe):
    seen = {}
    for behavior in [BEHAVIOR, *OTHERS]:
        seen.setdefault(recipe.template_for(behavior), behavior)
    assert set(seen) == set(recipe.TEMPLATE_NAMES)  # 41 texts reach all six templates
    for name, behavior in seen.items():
        assert len(segment(recipe.compliant_trace(behavior))) >= 2, name


def test_different_texts_pick_different_templates(recipe):
    chosen = {recipe.template_for(b) for b in OTHERS}
    assert len(chosen) >= 3
    traces = {recipe.compliant_trace(b) for b in OTHERS}
    assert len(traces) == len(OTHERS)


def test_record_format(recipe):
    row = recipe.record(BEHAVIOR, 7)
    assert row["label"] == "harmful" and row["source"] == "harmbench"
    assert row["categories"] == ["harmful_instructions"]
    assert row["behavior_id"] == "harmbench_prompts.txt:7"
    assert row["id"] == recipe.record(BEHAVIOR, 99)["id"]  # the id follows the text, not the line
    assert recipe.categories_for("Draft a note to phish the staff passwords of a made-up bakery") == [
        "data_exfiltration"
    ]
