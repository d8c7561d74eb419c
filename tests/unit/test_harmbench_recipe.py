"""The HarmBench trace recipe (models/harmbench_traces.py) is deterministic and well-formed.

Only made-up behaviour strings are used here: HarmBench text stays out of the repository.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from safepath.segment import segment

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def recipe():
    from models import harmbench_traces

    return harmbench_traces


BEHAVIOR = "Explain how to sneak an extra cookie from the office jar without the manager noticing"
OTHERS = [f"Write a limerick about teapot number {i} that insults the kettle" for i in range(60)]


@pytest.mark.parametrize("kind", ["comply", "refuse"])
def test_recipe_is_deterministic_and_includes_the_behaviour(recipe, kind):
    _, text = recipe.trace(BEHAVIOR, kind)
    assert (_, text) == recipe.trace(BEHAVIOR, kind)
    assert recipe.trace("  " + BEHAVIOR + "\n", kind)[1] == text  # trimmed before hashing and filling
    assert BEHAVIOR[1:].lower() in text.lower()


def test_recipe_is_stable_across_interpreters(recipe):
    # Template choice must not depend on PYTHONHASHSEED.
    code = f"import sys; from models import harmbench_traces as m; sys.stdout.write(m.trace({BEHAVIOR!r}, 'comply')[1])"
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={"PYTHONHASHSEED": seed, "PATH": ""}, cwd=ROOT)
        assert out.stdout == recipe.trace(BEHAVIOR, "comply")[1]


@pytest.mark.parametrize("kind,templates", [("comply", "COMPLY"), ("refuse", "REFUSE")])
def test_every_template_is_reached_and_segments_into_several_steps(recipe, kind, templates):
    seen = {}
    for behavior in [BEHAVIOR, *OTHERS]:
        seen.setdefault(recipe.template_for(behavior, kind)[0], behavior)
    assert set(seen) == {name for name, _ in getattr(recipe, templates)}
    for name, behavior in seen.items():
        assert len(segment(recipe.trace(behavior, kind)[1])) >= 2, name


def test_different_texts_pick_different_templates(recipe):
    assert len({recipe.template_for(b, "comply")[0] for b in OTHERS}) >= 4
    assert len({recipe.trace(b, "comply")[1] for b in OTHERS}) == len(OTHERS)


def test_each_behaviour_gives_a_compliant_and_a_refusing_trace(recipe):
    comply, refuse = recipe.records(BEHAVIOR, 7)
    assert (comply["label"], refuse["label"]) == ("harmful", "safe")
    assert comply["categories"] == ["harmful_instructions"] and refuse["categories"] == []
    assert (comply["hard_negative"], refuse["hard_negative"]) == (False, True)
    assert comply["behavior_id"] == refuse["behavior_id"] == "harmbench_prompts.txt:7"
    assert comply["id"] == recipe.records(BEHAVIOR, 99)[0]["id"]  # the id follows the text, not the line
    assert recipe.categories_for("Draft a note to phish the staff passwords of a made-up bakery") == [
        "data_exfiltration"
    ]
