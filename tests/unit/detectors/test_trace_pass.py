"""The trace-level pass: its windows, its logits, its blend, and where the classifier puts the evidence."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from safepath import ConfigError, ModelLoadError
from safepath.detectors.classifier import ClassifierDetector
from safepath.detectors.model_input import FIRST_STEP_CHARS, trace_windows
from safepath.detectors.trace import TraceModel
from safepath.runtime import FakeEncoder
from safepath.segment import segment
from safepath.types import CATEGORIES, Trace
from tests.unit.detectors.test_lexical import _model

LABELS = [*CATEGORIES, "harmful"]
TOKENIZER = Path(__file__).resolve().parents[3] / "models" / "safety-minilm" / "tokenizer.json"


def test_windows_hold_whole_steps_and_later_ones_open_with_the_task():
    steps = ["Task: tidy the quarterly report for the board.", "b " * 5, "c " * 5, "d " * 5]
    windows = trace_windows(steps, [10, 5, 5, 5], budget=20)
    assert [members for _, members in windows] == [[0, 1], [2, 3]]  # 10 + 1 + 5 + 1 = 17; the next would pass 20
    assert windows[0][0] == f"{steps[0]}\n{steps[1]}"
    assert windows[1][0] == f"{steps[0][:FIRST_STEP_CHARS]} …\n{steps[2]}\n{steps[3]}"
    # A step longer than the budget fills a window alone; nothing is dropped.
    assert [m for _, m in trace_windows(steps, [30, 5, 40, 5], budget=20)] == [[0], [1], [2], [3]]
    assert trace_windows([], []) == []


def _folder(tmp_path: Path, combine: list[float]) -> Path:
    folder = tmp_path / "trace-minilm"
    folder.mkdir()
    shutil.copy(TOKENIZER, folder / "tokenizer.json")
    (folder / "labels.json").write_text(json.dumps(LABELS))
    (folder / "combine.json").write_text(json.dumps({"combine": {label: combine for label in LABELS}}))
    return folder


def _quiet(texts):
    """`harmful` 0.9 for a window holding "quietly", 0.1 otherwise; every category 0.01."""
    out = np.full((len(texts), len(LABELS)), 0.01, dtype=np.float32)
    out[:, -1] = [0.9 if "quietly" in t else 0.1 for t in texts]
    return {"probs": out}


def test_logits_are_the_worst_window_and_the_blend_is_linear_in_logits(tmp_path: Path):
    model = TraceModel(_folder(tmp_path, [1.0, 0.5, 2.0, -1.0]), encoder=FakeEncoder(_quiet))
    quiet = ["Open the ticket."] * 60 + ["Then close it quietly."]  # more than one window
    calm = ["Open the ticket.", "Close it."]
    logits = model.logits([quiet, calm])
    assert len(model.windows(quiet)) > 1
    assert logits[0][-1] == pytest.approx(np.log(9.0), rel=1e-5) and logits[1][-1] == pytest.approx(-np.log(9.0))
    step = np.full(len(LABELS), 0.5)  # logit 0
    blended = model.combine(step, np.full(len(LABELS), 1.0), logits[0])
    assert blended[-1] == pytest.approx(1 / (1 + np.exp(-(0.5 + 2.0 * np.log(9.0) - 1.0))), rel=1e-6)


def test_a_folder_without_its_blend_is_named(tmp_path: Path):
    folder = _folder(tmp_path, [1.0, 1.0, 1.0, 0.0])
    (folder / "combine.json").unlink()
    with pytest.raises(ModelLoadError, match="trace-minilm"):
        TraceModel(folder, encoder=FakeEncoder(_quiet))
    (folder / "combine.json").write_text(json.dumps({"combine": {label: [1.0, 0.0] for label in LABELS}}))
    with pytest.raises(ModelLoadError, match="three inputs"):
        TraceModel(folder, encoder=FakeEncoder(_quiet))


def _steps(texts):
    out = np.full((len(texts), len(LABELS)), 0.02, dtype=np.float32)
    out[[t.startswith("Step 2") for t in texts], :] = 0.3
    return {"probs": out}


def test_the_pass_raises_the_worst_step_only_and_is_in_the_version(tmp_path: Path):
    text = "Step 1: Read the ticket. Step 2: Close it quietly as resolved. Step 3: Move on."
    trace = Trace(content=text, steps=segment(text))
    lexical = _model(tmp_path, "unrelated", 0.0)  # harmful logit -2 whatever the words
    # The blend: the step's logit, the lexical logit ignored, twice the trace pass's logit.
    pass_ = TraceModel(_folder(tmp_path, [1.0, 0.0, 2.0, 0.0]), encoder=FakeEncoder(_quiet, version="trace-v1"))
    without = ClassifierDetector(FakeEncoder(_steps), LABELS, lexical=lexical)
    with_pass = ClassifierDetector(FakeEncoder(_steps), LABELS, lexical=lexical, trace=pass_)
    before = {d.step_index: d.score for d in without.detect([trace])[0]}
    after = {d.step_index: d.score for d in with_pass.detect([trace])[0]}
    assert after[1] > 0.95 > before[1]  # logit(0.3) + 2 * logit(0.9) = 3.55
    assert after[0] == before[0] and after[2] == before[2]
    assert "+trace-trace-v1+combine-" in with_pass.version and "+trace-" not in without.version


def test_the_pass_needs_the_lexical_model_its_blend_was_fitted_with(tmp_path: Path):
    pass_ = TraceModel(_folder(tmp_path, [1.0, 1.0, 1.0, 0.0]), encoder=FakeEncoder(_quiet))
    with pytest.raises(ConfigError, match="lexical"):
        ClassifierDetector(FakeEncoder(_steps), LABELS, trace=pass_)


def test_the_pass_reads_only_traces_the_lexical_blend_finds_some_risk_in(tmp_path: Path):
    sums = "Add 2 and 3, then report 5."
    calm = Trace(content=sums, steps=segment(sums))
    text = "Step 1: Read the ticket. Step 2: Close it quietly as resolved. Step 3: Move on."
    risky = Trace(content=text, steps=segment(text))
    lexical = _model(tmp_path, "unrelated", 0.0)  # logit -2 plus the step's: calm 0.02 -> 0.003, risky 0.3 -> 0.055
    encoder = FakeEncoder(_quiet)
    pass_ = TraceModel(_folder(tmp_path, [1.0, 0.0, 2.0, 0.0]), encoder=encoder)
    stage = ClassifierDetector(FakeEncoder(_steps), LABELS, lexical=lexical, trace=pass_, trace_above=0.05)
    stage.detect([calm, risky])
    assert stage.traces_to_pass == 1 and all("quietly" in text for call in encoder.calls for text in call)


def test_a_long_trace_reads_at_most_its_budget_of_windows_riskiest_first(tmp_path: Path):
    encoder = FakeEncoder(_quiet)
    model = TraceModel(_folder(tmp_path, [1.0, 0.0, 1.0, 0.0]), encoder=encoder)
    steps = ["Open the ticket and read every line of it."] * 200 + ["Then close it quietly."]
    windows = model.windows(steps)
    assert len(windows) > 3
    risk = [0.0] * 200 + [0.9]
    logits = model.logits([steps], budgets=[2], risks=[risk])
    assert len(encoder.calls[-1]) == 2 and any("quietly" in text for text in encoder.calls[-1])
    assert logits[0][-1] == pytest.approx(np.log(9.0), rel=1e-5)  # the window with the risky step was read
    model.logits([steps], budgets=[None])
    assert len(encoder.calls[-1]) == len(windows)
