"""Train the cross-writer folds: for each group of writers, a safety model and gate that never saw them.

    python -m models.folds            # every fold whose models are missing, older than the corpus, or
                                      # trained from other writers
    python -m models.folds --only b   # one fold
    python -m models.folds --through w56   # from writers w01-w56 only, as the shipped models (`make folds`)
    python -m models.folds --only a --epochs 4 --watch-holdout   # a recipe variant, watched epoch by epoch

Writers fall in four groups of a quarter each (new writers join them in turn), each mixing slices (categories;
the ordinary-reasoning and the seeded writers spread over the groups), so every fold still trains on every kind of
trace. Leaving a quarter of the writers out is stricter than leaving one out: each fold trains on three quarters of
the corpus, and four trainings cover every writer once (one training per writer would not fit two cores).
models/evaluate.py scores each fold on its held-out writers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "models" / "data" / "corpus.jsonl"
FOLDS_DIR = ROOT / "build" / "folds"
FOLDS = {
    "a": ("w01", "w05", "w09", "w13", "w17", "w21", "w25", "w32", "w34",
          "w38", "w42", "w47", "w51", "w55", "w57", "w61", "w65", "w69", "w73",
          "w77", "w81", "w85", "w89", "w93", "w97",
          "w101", "w105", "w109", "w113", "w117", "w121", "w125", "w129", "w133",
          "w137", "w141", "w145", "w149", "w153", "w157", "w161", "w165", "w169", "w173", "w177"),
    "b": ("w02", "w06", "w10", "w14", "w18", "w22", "w28", "w33", "w39",
          "w43", "w45", "w48", "w52", "w56", "w58", "w62", "w66", "w70", "w74",
          "w78", "w82", "w86", "w90", "w94", "w98",
          "w102", "w106", "w110", "w114", "w118", "w122", "w126", "w130", "w134",
          "w138", "w142", "w146", "w150", "w154", "w158", "w162", "w166", "w170", "w174", "w178"),
    "c": ("w03", "w07", "w11", "w15", "w19", "w23", "w27", "w29", "w31",
          "w36", "w40", "w46", "w49", "w53", "w59", "w63", "w67", "w71",
          "w75", "w79", "w83", "w87", "w91", "w95", "w99",
          "w103", "w107", "w111", "w115", "w119", "w123", "w127", "w131", "w135",
          "w139", "w143", "w147", "w151", "w155", "w159", "w163", "w167", "w171", "w175", "w179"),
    "d": ("w04", "w08", "w12", "w16", "w20", "w24", "w26", "w30", "w35",
          "w37", "w41", "w44", "w50", "w54", "w60", "w64", "w68", "w72",
          "w76", "w80", "w84", "w88", "w92", "w96",
          "w100", "w104", "w108", "w112", "w116", "w120", "w124", "w128", "w132",
          "w136", "w140", "w144", "w148", "w152", "w156", "w160", "w164", "w168", "w172", "w176", "w180"),
}


def model_dir(fold: str) -> Path:
    """The fold's model folder (safety-minilm, static-minilm; models/evaluate.py links the semantic model in)."""
    return FOLDS_DIR / fold / "models"


def recipe(through: str = "", epochs: int | None = None) -> dict:
    """What `fold.json` records of a fold's training: the writers read and the epochs (None: the recipe's own)."""
    return {"through_writer": through or None, "epochs": epochs}


def up_to_date(fold: str, through: str = "", epochs: int | None = None) -> bool:
    """Trained after the corpus was last built, from the same writers and for as many epochs (`fold.json`, written
    when both models are done): a fold trained with another `--through` or `--epochs` is stale."""
    model, record = model_dir(fold) / "safety-minilm" / "model.int8.onnx", model_dir(fold) / "fold.json"
    if not (model.exists() and record.exists() and model.stat().st_mtime > CORPUS.stat().st_mtime):
        return False
    saved = json.loads(record.read_text())
    return {key: saved.get(key) for key in ("through_writer", "epochs")} == recipe(through, epochs)


def train(fold: str, through: str = "", epochs: int | None = None, *, watch: bool = False) -> None:
    holdout = ",".join(FOLDS[fold])
    out = model_dir(fold)
    safety = ["--int8-only", *(["--epochs", str(epochs)] if epochs else []), *(["--watch-holdout"] if watch else [])]
    for module, folder, extra in (("models.train_gate", "static-minilm", []),
                                  ("models.train_safety", "safety-minilm", safety)):
        cmd = [sys.executable, "-m", module, "--holdout", holdout, "--through", through, "--out", str(out / folder),
               *extra]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
    record = {"holdout_writers": list(FOLDS[fold]), **recipe(through, epochs)}
    (out / "fold.json").write_text(json.dumps(record, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(FOLDS))
    parser.add_argument("--through", default="", metavar="WRITER",
                        help="train on the writers up to this one only, as the shipped models were (default: all)")
    parser.add_argument("--epochs", type=int, default=None, help="train the safety model this long (default: "
                        "the recipe's, models/train_safety.py)")
    parser.add_argument("--watch-holdout", action="store_true",
                        help="report the held-out writers' scores after every epoch (models/train_safety.py)")
    args = parser.parse_args()
    for fold in [args.only] if args.only else sorted(FOLDS):
        if up_to_date(fold, args.through, args.epochs):
            print(f"fold {fold}: up to date")
            continue
        train(fold, args.through, args.epochs, watch=args.watch_holdout)


if __name__ == "__main__":
    main()
