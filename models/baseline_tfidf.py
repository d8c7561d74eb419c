"""TF-IDF + logistic-regression baseline: the bar the learned classifier must clear.

    python -m models.baseline_tfidf                   # train on the corpus, pick C on its val split, print a table
    python -m models.baseline_tfidf --json            # one JSON object instead
    python -m models.baseline_tfidf --also OLD.jsonl  # also train on another labelled set (an ablation)
    python -m models.baseline_tfidf --cross-writer    # the cross-writer folds (models/folds.py), pooled

Trace level: the input is a whole trace's `text`, the target `label` (harmful vs safe); step labels and
categories are not used for training. Features: word 1-2-grams and character 3-5-grams, each TF-IDF with
sublinear tf (min_df 2), concatenated. Classifier: L2 logistic regression (liblinear, class_weight balanced,
random_state 0). Data: models/data/corpus.jsonl, split `train`; C is chosen on split `val` (best F1 at the fixed
threshold; ties go to the smaller C); the threshold is fixed at 0.5 and never tuned. Retrained on every run
(seconds), never saved.

Scored on the corpus test split and, when present, shared/eval/dev.jsonl and build/eval/harmbench_traces.jsonl,
through `safepath.evaluation.evaluate` with a stand-in filter (probability >= 0.5 -> block, else allow), so every
figure has the harness's definition. The baseline names no categories, so per-category recall (category named)
is 0 by construction; `flagged` is the number to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
from scipy.sparse import hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from models.evaluate import CORPUS, DEV, HARMBENCH, corpus_examples
from safepath.evaluation import EvalReport, Example, evaluate, load_dataset
from safepath.types import CATEGORIES, Verdict

THRESHOLD = 0.5
C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0)
RANDOM_STATE = 0
PROFILE = "tfidf-lr-baseline"


class Baseline:
    def __init__(self, c: float) -> None:
        self.vectorizers = (
            TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, min_df=2, dtype=np.float32),
            TfidfVectorizer(analyzer="char", ngram_range=(3, 5), sublinear_tf=True, min_df=2, dtype=np.float32),
        )
        self.c = c
        self.model = LogisticRegression(C=c, class_weight="balanced", solver="liblinear", max_iter=1000,
                                        random_state=RANDOM_STATE)

    def fit_features(self, texts: list[str]):
        return hstack([v.fit_transform(texts) for v in self.vectorizers]).tocsr()

    def features(self, texts: list[str]):
        return hstack([v.transform(texts) for v in self.vectorizers]).tocsr()

    def proba(self, texts: list[str]) -> np.ndarray:
        return self.model.predict_proba(self.features(texts))[:, 1]


@dataclass(frozen=True)
class _Result:
    verdict: Verdict
    categories: tuple[str, ...] = ()


class BaselineFilter:
    """Duck-types the part of SafePathFilter that `evaluate` uses: `default_profile` and `filter()`."""

    default_profile = PROFILE

    def __init__(self, baseline: Baseline) -> None:
        self.baseline = baseline

    def filter(self, text: str, profile: str | None = None) -> _Result:
        p = float(self.baseline.proba([text])[0])
        return _Result(Verdict.BLOCK if p >= THRESHOLD else Verdict.ALLOW)


def train(train_set: list[Example], dev_set: list[Example]) -> tuple[Baseline, dict]:
    """Fit the features once on train, then one model per C; keep the best on dev (F1 at THRESHOLD)."""
    y = np.array([e.harmful for e in train_set])
    y_dev = np.array([e.harmful for e in dev_set])
    base = Baseline(C_GRID[0])
    started = time.perf_counter()
    x = base.fit_features([e.text for e in train_set])
    x_dev = base.features([e.text for e in dev_set])
    dev_f1, best = {}, None
    for c in C_GRID:
        model = LogisticRegression(C=c, class_weight="balanced", solver="liblinear", max_iter=1000,
                                   random_state=RANDOM_STATE).fit(x, y)
        f1 = float(f1_score(y_dev, model.predict_proba(x_dev)[:, 1] >= THRESHOLD, zero_division=0))
        dev_f1[str(c)] = round(f1, 6)
        if best is None or f1 > best[0]:
            best = (f1, c, model)
    base.c, base.model = best[1], best[2]
    info = {
        "C": base.c,
        "dev_f1_by_C": dev_f1,
        "features": int(x.shape[1]),
        "train_traces": len(train_set),
        "dev_traces": len(dev_set),
        "train_seconds": round(time.perf_counter() - started, 1),
        "threshold": THRESHOLD,
        "class_weight": "balanced",
        "random_state": RANDOM_STATE,
        "features_spec": "word 1-2-gram + char 3-5-gram TF-IDF, sublinear tf, min_df 2",
    }
    return base, info


def _row(name: str, r: EvalReport) -> str:
    hn = f"{r.hard_negative_fpr:.3f}" if r.hard_negative_fpr is not None else "n/a"
    easy = f"{r.easy_safe_fpr:.3f}" if r.easy_safe_fpr is not None else "n/a"
    return (f"{name:<12}{r.examples:>6}{r.harmful:>6}{r.safe:>6}{r.precision:>8.3f}{r.recall:>8.3f}{r.f1:>8.3f}"
            f"{hn:>8}{easy:>8}{r.latency_ms['p50']:>8.2f}")


def format_table(info: dict, reports: dict[str, EvalReport]) -> str:
    lines = [
        f"TF-IDF + LR baseline ({info['features_spec']}; {info['features']} features), C={info['C']} "
        f"(val F1 by C: {info['dev_f1_by_C']}), threshold {THRESHOLD}, {info['train_traces']} training traces",
        "",
        f"{'dataset':<12}{'n':>6}{'harm':>6}{'safe':>6}{'prec':>8}{'recall':>8}{'f1':>8}{'hn_fpr':>8}{'easy':>8}"
        f"{'p50ms':>8}",
    ]
    lines += [_row(name, r) for name, r in reports.items()]
    lines += ["", "share flagged per category (support)", f"{'category':<24}" + "".join(f"{n:>18}" for n in reports)]
    for cat in CATEGORIES:
        cells = []
        for r in reports.values():
            s = r.per_category.get(cat)
            cells.append(f"{s.flagged:.3f} ({s.support})" if s else "-")
        lines.append(f"{cat:<24}" + "".join(f"{c:>18}" for c in cells))
    return "\n".join(lines)


def cross_writer() -> dict:
    """Each fold's writers judged by a baseline trained (and its C chosen) without them; the folds pooled."""
    from models.evaluate import pooled
    from models.folds import FOLDS

    reports = {}
    for fold, writers in FOLDS.items():
        others = tuple(sorted({w for ws in FOLDS.values() for w in ws} - set(writers)))
        baseline, _ = train(corpus_examples(split="train", writers=others),
                            corpus_examples(split="val", writers=others))
        reports[fold] = evaluate(BaselineFilter(baseline), corpus_examples(writers=writers), dataset=f"fold {fold}")
    folds = {fold: {"f1": r.f1, "precision": r.precision, "recall": r.recall, "hn_fpr": r.hard_negative_fpr,
                    "easy_fpr": r.easy_safe_fpr} for fold, r in reports.items()}
    return {"folds": folds, "pooled": pooled([r.model_dump() for r in reports.values()])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--also", type=Path, help="another labelled JSONL set to train on as well (an ablation)")
    ap.add_argument("--cross-writer", action="store_true", help="train without each fold's writers, test on them")
    args = ap.parse_args(argv)
    if not CORPUS.exists():
        print(f"missing {CORPUS}: run python -m models.corpus.build", file=sys.stderr)
        return 2
    if args.cross_writer:
        print(json.dumps(cross_writer(), indent=2))
        return 0
    train_set = corpus_examples(split="train") + (load_dataset(args.also) if args.also else [])
    baseline, info = train(train_set, corpus_examples(split="val"))
    flt = BaselineFilter(baseline)
    sets = {"corpus_test": corpus_examples(split="test")}
    for name, path in (("dev", DEV), ("harmbench", HARMBENCH)):
        if path.exists():
            sets[name] = load_dataset(path)
    reports = {name: evaluate(flt, rows, dataset=name) for name, rows in sets.items()}
    if args.json:
        print(json.dumps({
            "model": info,
            "notes": "per-category recall (category named) is 0 by construction: the baseline names no categories.",
            "reports": {name: r.model_dump() for name, r in reports.items()},
        }, indent=2))
    else:
        print(format_table(info, reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
