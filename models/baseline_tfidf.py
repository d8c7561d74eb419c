#!/usr/bin/env python3
"""TF-IDF + logistic-regression baseline: the bar the learned classifier must clear.

    python models/baseline_tfidf.py            # train on train.jsonl, pick C on dev.jsonl, print a table
    python models/baseline_tfidf.py --json     # one JSON object instead

Trace level: the input is a whole trace's `text`, the target `label` (harmful vs safe); step labels and
categories are not used for training. Features: word 1-2-grams and character 3-5-grams, each TF-IDF with
sublinear tf (min_df 2), concatenated. Classifier: L2 logistic regression (liblinear, class_weight balanced,
random_state 0). C is chosen on models/data/dev.jsonl (best F1 at the fixed threshold; ties go to the smaller C);
the threshold is fixed at 0.5 and never tuned. The model is retrained on every run (seconds) and never saved.

Scored on models/data/test.jsonl and, when present, build/eval/harmbench_traces.jsonl (made by
models/harmbench_traces.py; HarmBench is test-only, so it is read after the model is final and never used to choose
anything). Scoring goes through `safepath.evaluation.evaluate`, the harness behind `safepath eval`, with a stand-in
filter (probability >= 0.5 -> block, else allow), so precision, recall, F1, false-positive rate, hard-negative FPR
and per-category recall have exactly its definitions. The baseline names no categories, so each category's
`category_recall` is 0 by construction; its `recall` (share of the category's harmful traces flagged) is the
number to compare. Latency is per trace, one at a time, on CPU.
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

import numpy as np  # noqa: E402
from scipy.sparse import hstack  # noqa: E402
from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import f1_score  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from safepath.evaluation import EvalReport, Example, evaluate, load_dataset  # noqa: E402
from safepath.types import CATEGORIES, Verdict  # noqa: E402

DATA = ROOT / "models" / "data"
HARMBENCH = ROOT / "build" / "eval" / "harmbench_traces.jsonl"
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
    # Without safe traces (HarmBench) precision is 1 and FPR 0 trivially: show only what the set measures.
    prec, f1 = (f"{r.precision:.3f}", f"{r.f1:.3f}") if r.safe else ("n/a", "n/a")
    fpr = f"{r.false_positive_rate:.3f}" if r.safe else "n/a"
    hn = f"{r.hard_negative_fpr:.3f}" if r.hard_negative_fpr is not None else "n/a"
    return (f"{name:<11}{r.examples:>6}{r.harmful:>6}{r.safe:>6}{prec:>8}{r.recall:>8.3f}{f1:>8}"
            f"{fpr:>8}{hn:>8}{r.hard_negatives:>6}{r.latency_ms['p50']:>8.2f}")


def format_table(info: dict, reports: dict[str, EvalReport]) -> str:
    lines = [
        f"TF-IDF + LR baseline ({info['features_spec']}; {info['features']} features), C={info['C']} "
        f"(dev F1 by C: {info['dev_f1_by_C']}), threshold {THRESHOLD}",
        "",
        f"{'dataset':<11}{'n':>6}{'harm':>6}{'safe':>6}{'prec':>8}{'recall':>8}{'f1':>8}{'fpr':>8}{'hn_fpr':>8}"
        f"{'hn_n':>6}{'p50ms':>8}",
    ]
    lines += [_row(name, r) for name, r in reports.items()]
    lines += ["", "recall per category (support)", f"{'category':<24}" + "".join(f"{n:>18}" for n in reports)]
    for cat in CATEGORIES:
        cells = []
        for r in reports.values():
            s = r.per_category.get(cat)
            cells.append(f"{s.recall:.3f} ({s.support})" if s else "-")
        lines.append(f"{cat:<24}" + "".join(f"{c:>18}" for c in cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--data", default=str(DATA), help="folder with train/dev/test.jsonl (default models/data)")
    ap.add_argument("--harmbench", default=str(HARMBENCH), help="HarmBench traces (skipped when absent)")
    args = ap.parse_args(argv)
    data = Path(args.data)
    missing = [s for s in ("train", "dev", "test") if not (data / f"{s}.jsonl").exists()]
    if missing:
        print(f"missing {', '.join(missing)}.jsonl in {data}: run python models/corpus/build_corpus.py",
              file=sys.stderr)
        return 2
    baseline, info = train(load_dataset(data / "train.jsonl"), load_dataset(data / "dev.jsonl"))
    flt = BaselineFilter(baseline)
    sets = {"test": data / "test.jsonl"}
    if Path(args.harmbench).exists():
        sets["harmbench"] = Path(args.harmbench)
    reports = {name: evaluate(flt, load_dataset(path), dataset=str(path)) for name, path in sets.items()}
    if args.json:
        print(json.dumps({
            "model": info,
            "notes": "category_recall is 0 by construction: the baseline names no categories; compare `recall`.",
            "reports": {name: r.model_dump() for name, r in reports.items()},
        }, indent=2))
    else:
        print(format_table(info, reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
