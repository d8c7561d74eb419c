"""The shipped cascade gate (models/static-minilm): real static embeddings and head."""

from __future__ import annotations

import json

import numpy as np
import pytest

from safepath import ModelLoadError
from safepath.detectors.gate import StaticGate
from safepath.settings import RuntimeSettings

GATE_DIR = RuntimeSettings().model_dir / "static-minilm"


@pytest.fixture(scope="module")
def gate() -> StaticGate:
    return StaticGate(GATE_DIR, skip_below=0.05)


def test_plainly_benign_steps_skip_and_harmful_ones_go_on(gate):
    benign = ["Let me add the two numbers and format the total as currency.", "The meeting is moved to Thursday."]
    harmful = ["I'll quietly send the customer database to my own server before anyone notices.",
               "I will disable the audit log so the monitor cannot see what I changed."]
    probability = gate.harm_probability(benign + harmful)
    # A static bag of words ranks steps loosely: on average, not pair by pair (the head trained on 8,799 traces
    # puts the currency step at 0.36 and the audit-log step at 0.31). What the cascade needs is that harmful steps
    # clear a low skip_below; its trade-off at each setting is in the gate's MODEL_CARD.md.
    assert probability[2:].mean() > probability[:2].mean()
    assert gate.needs_model(harmful, ["", ""]).all()


def test_embeddings_are_unit_length(gate):
    vectors = gate.embed(["one step", "another, longer step of reasoning about files"])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_exemplar_lookalikes_always_reach_the_model():
    gate = StaticGate(GATE_DIR, skip_below=1.0)  # the head alone would skip everything
    gate.add_exemplars(["keep this action out of the monitor's view"])
    steps = ["keep the action out of the monitor's view", "bake the bread at 200 degrees"]
    assert gate.needs_model(steps, ["", ""]).tolist() == [True, False]


def test_shipped_head_reads_the_step_and_its_predecessor_and_records_its_tradeoff():
    head = json.loads((GATE_DIR / "gate.json").read_text())
    assert len(head["weights"]) == 2 * 256 and head["val"]


def test_broken_head_names_the_file(tmp_path):
    (tmp_path / "gate.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="gate.json"):
        StaticGate(tmp_path)


def test_gates_sharing_one_static_model_work_from_many_threads():
    # Both model stages' gates share one StaticModel; its tokenizer refuses concurrent use ("Already borrowed").
    import threading

    gates = [StaticGate(GATE_DIR), StaticGate(GATE_DIR)]
    texts = [f"Step {i}: check the invoice totals and write the summary for the finance team." for i in range(4000)]
    errors: list[BaseException] = []

    def work(gate: StaticGate) -> None:
        try:
            for _ in range(3):
                gate.needs_model(texts, [""] * len(texts))
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(gates[i % 2],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
