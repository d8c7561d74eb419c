"""Score the shipped models and a candidate side by side on the same sets: how a retraining is chosen or refused.

    python -m models.compare build/models_v5                    # balanced on dev, HarmBench, writers neither read
    python -m models.compare build/models_v5 --profile strict
    python -m models.compare build/cand --writers w81-w87 --candidate-profiles build/cand/profiles.yaml
                                # only those writers; the candidate with the thresholds chosen for it
    python -m models.compare build/cand --writers w75-w87,w100-w111   # two batches of unread writers, apart
    python -m models.compare build/cand-e5 --by-language   # the writers' set split: English, other languages

The candidate folder holds `safety-minilm/` and `static-minilm/` as `models.train_safety --out` and `models.train_gate
--out` write them; the shipped semantic model is linked in where it has none. The sets:

- dev: shared/eval/dev.jsonl (`SAFEPATH_DEV_SET`), the set for choosing;
- HarmBench's comply and refuse traces (build/eval/, `make eval-data`), the external test set;
- the corpus's writers neither model's records say it read (`models.evaluate.writers_read`), every split: the
  fairest cross-writer comparison there is without training folds.

Each run of the filter takes a few minutes on two cores. What it does not check: the evasion fixtures and the
README's pinned verdicts; run `SAFEPATH_MODEL_DIR=<candidate> pytest tests/integration/test_evasion.py
tests/integration/test_shipped_filter.py tests/integration/test_readme_examples.py` before shipping.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from models.evaluate import (
    CORPUS,
    DEV,
    HARMBENCH,
    corpus_examples,
    in_span,
    run,
    runnable,
    settings_for,
    unseen_writers,
    writer_spans,
)
from safepath.evaluation import EvalReport, Example, load_dataset
from safepath.profiles import load_profiles
from safepath.settings import RuntimeSettings
from safepath.types import CATEGORIES

METRICS = (("precision", "precision"), ("recall", "recall"), ("f1", "F1"), ("hard_negative_fpr", "HN FPR"),
           ("easy_safe_fpr", "easy FPR"), ("hard_recall", "hard R"))


def table(reports: dict[str, dict[str, EvalReport]]) -> str:
    """Markdown: one row per set and metric (then category recall, the category named), one column per model."""
    names = list(reports)
    sets = [s for s in reports[names[0]] if all(s in r for r in reports.values())]

    def cell(value: float | None) -> str:
        return "" if value is None else f"{value:.3f}"

    lines = [f"| set | metric | {' | '.join(names)} |", "|---|---|" + "---|" * len(names)]
    for name in sets:
        first = reports[names[0]][name]
        head = f"{name} ({first.examples})"  # the set's name heads its first row only
        for field, label in METRICS:
            values = [cell(getattr(reports[n][name], field)) for n in names]
            lines.append(f"| {head} | {label} | {' | '.join(values)} |")
            head = ""
        for category in CATEGORIES:
            if category in first.per_category:
                values = [cell(reports[n][name].per_category[category].recall)
                          if category in reports[n][name].per_category else "" for n in names]
                lines.append(f"|  | recall: {category} | {' | '.join(values)} |")
    return "\n".join(lines)


def writer_sets(writers: list[str], *, by_language: bool = False, corpus: Path = CORPUS) -> dict[str, list[Example]]:
    """Every trace of `writers` as one set, or with `by_language` as two: English, and the other languages, where the
    shipped model (English WordPiece) and a multilingual candidate differ most."""
    name = f"writers {writer_spans(writers)}"  # runs, not first-last: unread writers need not be consecutive
    if not by_language:
        return {name: corpus_examples(writers=tuple(writers), corpus=corpus)}
    return {f"{name}, {label}": corpus_examples(writers=tuple(writers), english=english, corpus=corpus)
            for label, english in (("English", True), ("other languages", False))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidate", type=Path, help="folder with the candidate's safety-minilm/ and static-minilm/")
    parser.add_argument("--profile", default="balanced")
    parser.add_argument("--dev", type=Path, default=Path(os.environ.get("SAFEPATH_DEV_SET", DEV)))
    parser.add_argument("--writers", default="", metavar="FIRST-LAST[,FIRST-LAST]",
                        help="only these of the writers neither model read (w81-w87: the batch no choice looked at); "
                             "several spans, comma-separated, are reported as separate sets")
    parser.add_argument("--by-language", action="store_true",
                        help="the writers' traces as two sets: English, other languages (as their writers label them)")
    parser.add_argument("--candidate-profiles", type=Path,
                        help="the candidate's own profiles.yaml (thresholds re-chosen for it); default: the shipped")
    args = parser.parse_args(argv)
    shipped = RuntimeSettings().model_dir
    datasets = {name: load_dataset(path) for name, path in (("dev", args.dev), ("harmbench", HARMBENCH))
                if path.exists()}
    unseen = unseen_writers(shipped, args.candidate)
    for span in [s.strip() for s in args.writers.split(",") if s.strip()] or [""]:
        if writers := in_span(unseen, span):
            datasets.update(writer_sets(writers, by_language=args.by_language))
        else:
            print(f"no writer {span} is unread by both models' records: that set is left out")
    profiles = load_profiles(RuntimeSettings().profiles_path)
    candidate_profiles = load_profiles(args.candidate_profiles) if args.candidate_profiles else profiles
    reports = {"shipped": run(profiles, args.profile, datasets, RuntimeSettings(model_dir=shipped))[0],
               "candidate": run(runnable(candidate_profiles, args.candidate), args.profile, datasets,
                                settings_for(args.candidate))[0]}
    print(f"{args.profile}: shipped {shipped}, candidate {args.candidate}\n")
    print(table(reports))


if __name__ == "__main__":
    main()
