"""Fit the safety stage's trace-level lexical model and the combiner that blends it into the step scores.

Called by models/train_safety.py once the transformer is trained and calibrated (the combiner needs its scores), or
alone, against a step model as served (its int8 file), so that new writing reaches the lexical model without the
hours a step model's training takes on two cores:

    python -m models.train_lexical --models build/cand --holdout w75,w76 --through w111
                                # refit build/cand/safety-minilm/lexical.npz; training.json records the writers read
                                # (the model card's prose, hand-edited around generated tables, is updated by hand)


- the lexical model: hashed word 1-2-grams and character 3-5-grams, TF-IDF weighted
  (`safepath.detectors.lexical`), one L2 logistic regression per output (the eight categories and `harmful`) on
  the whole traces of the train split; C chosen on the val split (best log loss);
- the combiner, per output: a logistic regression on the val split's traces with two inputs, the logit of the
  trace's worst step (the transformer's highest calibrated probability for that output) and the lexical logit. Its
  probability is the trace's; at serving time it is given to the worst step only (`ClassifierDetector`).

Val shares writers with train, so this flatters the lexical model (the TF-IDF baseline: corpus test F1 0.78, writers
held out 0.63; `python -m models.baseline_tfidf --cross-writer`). A variant chose C and fitted the combiner across
writers instead (each writer group of models/folds.py predicted by a model trained on the others): the combiner then
weighted the lexical logit about half as much, and on shared/eval/dev.jsonl balanced's best F1 within the FPR bars
fell from 0.824 to 0.744, so the val-fitted version stays.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np

from models.corpus import writers as corpus_writers
from models.corpus.writers import Writers
from safepath.detectors.lexical import lexical_features, logit
from safepath.types import CATEGORIES

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "models" / "data" / "corpus.jsonl"
LABELS = (*CATEGORIES, "harmful")  # the step model's outputs (models/train_safety.py)

BUCKETS = 1 << 18
C_GRID = (1.0, 3.0, 10.0, 30.0)


def trace_targets(rows: list[dict], labels: tuple[str, ...]) -> np.ndarray:
    """Multi-hot trace labels: the categories, then `harmful`."""
    return np.array([[float(c in r["categories"]) for c in labels[:-1]] + [float(r["label"] == "harmful")]
                     for r in rows], dtype=np.float32)


def fit_blend(inputs: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """One output's blend (`safepath.detectors.lexical.blend`): a logistic regression on traces x inputs (the worst
    step's logit first); its weights, then its offset."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1.0, max_iter=1000).fit(inputs, truth)
    return np.array([*model.coef_[0], model.intercept_[0]])


def fit(train: list[dict], val: list[dict], val_step_logits: list[np.ndarray], labels: tuple[str, ...]) -> dict:
    """The arrays of `lexical.npz`, and a summary. `val_step_logits[i]` is steps x labels for val trace i."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    x, idf = lexical_features([r["text"] for r in train], None, BUCKETS)
    xv, _ = lexical_features([r["text"] for r in val], idf, BUCKETS)
    y, yv = trace_targets(train, labels), trace_targets(val, labels)
    coef = np.zeros((len(labels), 2 * BUCKETS), dtype=np.float32)
    intercept = np.zeros(len(labels), dtype=np.float32)
    combine = np.zeros((len(labels), 3), dtype=np.float32)
    chosen = {}
    for j, label in enumerate(labels):
        best = None
        for c in C_GRID:
            model = LogisticRegression(C=c, class_weight="balanced", solver="liblinear", max_iter=2000)
            model.fit(x, y[:, j])
            loss = log_loss(yv[:, j], model.predict_proba(xv)[:, 1], labels=[0.0, 1.0])
            if best is None or loss < best[0]:
                best = (loss, c, model)
        _, c, model = best
        chosen[label] = c
        coef[j] = model.coef_[0]
        intercept[j] = model.intercept_[0]
        lexical_logit = xv @ coef[j] + intercept[j]
        worst_step = np.array([s[:, j].max() if len(s) else -10.0 for s in val_step_logits])
        combine[j] = fit_blend(np.column_stack([worst_step, lexical_logit]), yv[:, j])
    arrays = {"idf": idf.astype(np.float16), "coef": coef.reshape(len(labels), 2, BUCKETS).astype(np.float16),
              "intercept": intercept, "combine": combine}
    summary = {"buckets": BUCKETS, "C": chosen, "train_traces": len(train), "val_traces": len(val),
               "combine": {label: [round(float(v), 4) for v in combine[j]] for j, label in enumerate(labels)}}
    return {"arrays": arrays, "summary": summary}


def served_step_logits(models: Path, rows: list[dict]) -> list[np.ndarray]:
    """Each trace's step logits (steps x outputs) from the step model in `models`/safety-minilm as the filter serves
    it (int8, every step, no gate): the scores the combiner blends at serving time."""
    from safepath.detectors.classifier import ClassifierDetector
    from safepath.segment import segment
    from safepath.settings import RuntimeSettings
    from safepath.types import Trace

    settings = RuntimeSettings(model_dir=models, precision="int8")
    stage = ClassifierDetector.from_options("safety_model", {"model": "safety-minilm"}, ROOT / "configs", settings)
    return [logit(stage.step_probabilities(Trace(content=r["text"], steps=segment(r["text"])))) for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description="Refit the lexical model alone against a served step model.")
    parser.add_argument("--models", type=Path, required=True, help="the folder holding safety-minilm/")
    corpus_writers.add_arguments(parser)
    args = parser.parse_args()
    writers = Writers.from_args(args)
    if writers.through is None:  # the record must name the newest writer read: the corpus will grow
        raise SystemExit("--through: name the newest writer read (models.evaluate.writers_read relies on it)")
    out = args.models / "safety-minilm"
    val = writers.rows(CORPUS, splits={"val"})
    fitted = fit(writers.rows(CORPUS, splits={"train"}), val, served_step_logits(args.models, val), LABELS)
    np.savez_compressed(out / "lexical.npz", **fitted["arrays"])
    record_refit(out, {**fitted["summary"], "step_scores": "the served int8 step model",
                       "holdout_writers": sorted(writers.holdout), "through_writer": writers.through})
    print(f"refitted {out / 'lexical.npz'}; describe the refit in {out / 'MODEL_CARD.md'}")


def record_refit(out: Path, lexical: dict) -> None:
    """After `lexical.npz` in `out` was refitted alone: its record (`lexical`) and hash in `out`'s training.json,
    and the hash in its card. Only that file changed: the other hashes keep describing the files as trained (a
    re-quantized int8 file keeps its own record), so the card is not regenerated, and its prose is edited by hand."""
    record = out / "training.json"
    if not record.exists():
        return
    summary = json.loads(record.read_text())
    summary["lexical"] = lexical
    hashes = summary.setdefault("artifacts_sha256", {})
    old = hashes.get("lexical.npz")
    hashes["lexical.npz"] = new = hashlib.sha256((out / "lexical.npz").read_bytes()).hexdigest()
    record.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    if old and (card := out / "MODEL_CARD.md").exists():
        card.write_text(card.read_text().replace(old, new))


if __name__ == "__main__":
    main()
