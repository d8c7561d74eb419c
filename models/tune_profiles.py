"""Choose the profiles' model thresholds on shared/eval/dev.jsonl: every stage runs once, decisions are replayed.

    python -m models.tune_profiles                     # the balanced profile's candidates on dev
    python -m models.tune_profiles --profile strict
    python -m models.tune_profiles --set val           # the same table on the corpus's val split
    python -m models.tune_profiles --set unseen        # on the writers the shipped models never read
    python -m models.tune_profiles --set dev unseen --own deception,data_exfiltration,manipulation,reward_hacking
                                                       # both sets at once, own flags for those categories searched
    python -m models.tune_profiles --set dev unseen --writers w75-w80   # one batch of the unseen writers only
    python -m models.tune_profiles --set dev unseen --writers w75-w80 --other-languages 0,0.25,0.5,0.75,1
                                                       # the safety model's logit shift on other languages' traces

dev.jsonl is the set for choosing (thresholds, variants), never for training or for writing rules. Each trace's
raw detections (every stage, before any decision) are computed once; then `safepath.pipeline.decide` replays the
profile with each candidate setting, so the table costs one pass of the models. The chosen values are written into
configs/profiles.yaml by hand, with the table's row in the commit message.

`--set unseen` chooses on the corpus writers the shipped models never learned from (the newest, or a batch a
retraining held out). They are our own writing, not an evaluation set, so fitting them costs nothing at the
next retraining, and a setting that wins on them and on dev is less likely to be dev's noise. With several sets a
setting is scored by its mean F1, and it must keep hard-negative and easy-safe FPR within the bars on every one.
`--own` searches every combination of a common model flag (OWN_COMMON) and own flags (OWN_FLAGS, or the common one)
for the named categories, the profile's overrule kept: the search that chose balanced's thresholds for the v2.4
models on dev and the unread writers w57-w74. `--other-languages` replays the profile as configured with each
`logit_shift` of the safety stage's `other_languages` (safepath/detectors/classifier.py) instead: the model's
detections are cached with every category's score (min_score 0), raised on the traces the stage counts as another
language, and cut at its min_score again, as the stage would report them (to within the scores' rounding, a few
1e-6).
Every step is judged, so the gate and the budget play no part.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.evaluate import corpus_examples, in_span, unseen_writers
from safepath import SafePathFilter
from safepath.detectors.classifier import ClassifierDetector, raised
from safepath.detectors.model_input import step_views
from safepath.evaluation import Example, load_dataset, score
from safepath.pipeline import decide
from safepath.profiles import ModelOverrule, SafetyProfile, Thresholds
from safepath.segment import segment
from safepath.settings import RuntimeSettings
from safepath.types import Category, Detection, StageKind, Trace

ROOT = Path(__file__).resolve().parent.parent
DEV = Path(os.environ.get("SAFEPATH_DEV_SET", ROOT.parent / "shared" / "eval" / "dev.jsonl"))


def raw_detections(f: SafePathFilter, profile: SafetyProfile, examples: Sequence[Example]) -> list[tuple[Trace, list]]:
    """Every stage's detections on every trace, the model reading every step (no gate, no short-circuit)."""
    out = []
    for example in examples:
        trace = Trace(content=example.text, steps=segment(example.text))
        found: list[Detection] = []
        for name in profile.stages:
            detector = f.detectors[name]
            gate = getattr(detector, "gate", None)
            if gate is not None:
                detector.gate = None  # judge every step: the cascade's cost is measured elsewhere
            try:
                found += detector.detect([trace])[0]
            finally:
                if gate is not None:
                    detector.gate = gate
        out.append((trace, found))
    return out


def cached_raw_detections(f: SafePathFilter, profile: SafetyProfile, examples: Sequence[Example],
                          cache: Path | None) -> list[tuple[Trace, list]]:
    """`raw_detections`, read from `cache` where it holds them for the same traces and the same stages (each stage's
    `version`: its model files and the options that change its findings), else computed and written there. A cache
    left by other models or another corpus would otherwise replay their detections under these names."""
    key = {"stages": {name: f.detectors[name].version for name in profile.stages},
           "traces": hashlib.sha256("\0".join(e.text for e in examples).encode()).hexdigest()}
    if cache and cache.exists():
        held = json.loads(cache.read_text())
        if isinstance(held, dict) and held.get("key") == key:
            return [(Trace.model_validate(t), [Detection.model_validate(d) for d in ds]) for t, ds in held["raw"]]
        print(f"{cache}: written for other traces or models, computed again")
    raw = raw_detections(f, profile, examples)
    if cache:
        cache.write_text(json.dumps({"key": key, "raw": [[t.model_dump(mode="json"), [d.model_dump(mode="json")
                                                                                      for d in ds]] for t, ds in raw]}))
    return raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="balanced")
    parser.add_argument("--set", nargs="+", choices=["dev", "val", "unseen"], default=["dev"])
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--cache", type=Path, help="raw detections: read from this JSON file (one per set, the set's "
                        "name added: dev.json) where it holds that set's for these models, else computed and written "
                        "there (replay other settings without running the models again)")
    parser.add_argument("--writers", default="", metavar="FIRST-LAST",
                        help="only these of the unseen writers (w75-w80): leave another batch untouched to confirm")
    parser.add_argument("--own", type=lambda s: [Category(c) for c in s.split(",")], default=[],
                        help="comma-separated categories whose own flag thresholds are searched with the common one")
    parser.add_argument("--other-languages", type=lambda s: [float(v) for v in s.split(",")], default=[],
                        metavar="SHIFTS", help="comma-separated logit shifts of the safety stage's other_languages "
                        "to replay (the profile as configured otherwise)")
    args = parser.parse_args()
    if args.own and args.other_languages:
        parser.error("--own and --other-languages are two different tables: one at a time")
    with SafePathFilter() as f:
        base = f.profiles.get(args.profile)
        if args.other_languages:  # every category's score cached unshifted, to shift and cut at min_score after
            (model,) = [f.detectors[n] for n in base.stages if isinstance(f.detectors[n], ClassifierDetector)]
            floor, configured = model.min_score, model.other_languages
            if configured is None:
                raise SystemExit(f"{args.profile}: its safety stage has no other_languages (known_below) to replay")
            model.min_score, model.other_languages = 0.0, configured.model_copy(update={"logit_shift": 0.0})
        sets = []
        for name in args.set:
            examples = named_set(name, args.writers)
            tag = f"{name}-{args.writers}" if name == "unseen" and args.writers else name  # one cache per set read
            tag += ".every-score" if args.other_languages else ""
            cache = args.cache.with_name(f"{args.cache.stem}.{tag}{args.cache.suffix}") if args.cache else None
            sets.append((examples, cached_raw_detections(f, base, examples, cache)))
    if args.other_languages:
        model.min_score, model.other_languages = floor, configured
        return other_language_table(args.set, sets, base, model, args.other_languages)
    current = replay_sets(sets, base)
    print(f"{args.profile} as configured: F1 {current['f1']:.3f} P {current['precision']:.3f} "
          f"R {current['recall']:.3f} HN {current['hn_fpr']:.3f} easy {current['easy_fpr']:.3f} "
          f"min cat R {current['min_category_recall']:.3f}"
          + "".join(f"; {name} F1 {s['f1']:.3f} HN {s['hn_fpr']:.3f}" for name, s in zip(args.set, current["sets"])))
    if args.own:
        rows = [{"flag": flag, "own": own, "profile": profile, **replay_sets(sets, profile)}
                for flag, own, profile in own_flag_candidates(base, args.own)]
        columns = ("own flags", lambda r: json.dumps({c.value: t for c, t in r["own"].items()}))
    else:
        rows = [{"flag": flag, "overrule": overrule, **replay_sets(sets, profile := candidate(base, flag, overrule)),
                 "profile": profile} for flag, overrule in itertools.product(FLAGS, OVERRULES)]
        columns = ("overrule (below, stages)", lambda r: str(r["overrule"]))
    rows.sort(key=lambda r: (r["hn_fpr"] > 0.08 or r["easy_fpr"] > 0.02, -r["f1"]))
    per_set = "".join(f" {'F1':>6} {'HN':>6}" for _ in sets)
    print(f"{'flag':>5} {columns[0]:>32} {'F1':>6} {'P':>6} {'R':>6} {'HN':>6} {'easy':>6} {'min cat R':>9}"
          + (f"  per set ({', '.join(args.set)}):{per_set}" if len(sets) > 1 else ""))
    for r in rows[: args.top]:
        print(f"{r['flag']:>5} {columns[1](r):>32} {r['f1']:.3f} {r['precision']:.3f} {r['recall']:.3f} "
              f"{r['hn_fpr']:.3f} {r['easy_fpr']:.3f} {r['min_category_recall']:>9.3f}"
              + ("".join(f" {s['f1']:.3f} {s['hn_fpr']:.3f}" for s in r["sets"]) if len(sets) > 1 else ""))
    print(json.dumps(rows[0]["per_category"], indent=1))
    if not args.own:
        per_category = per_category_flags(sets, rows[0]["profile"])
        print("per-category flag thresholds that gain at least", MIN_GAIN, "F1 within the FPR bars:",
              json.dumps({c.value: t for c, t in per_category.items()}))


def other_language_table(names: Sequence[str], sets: Scored, profile: SafetyProfile, model: ClassifierDetector,
                         shifts: Sequence[float]) -> None:
    """The profile replayed with each of `shifts` as the model stage's `other_languages.logit_shift`, on `sets`
    cached with every category's score (min_score 0, no shift)."""
    print(f"{'shift':>5} {'F1':>6} {'P':>6} {'R':>6} {'HN':>6} {'easy':>6}  per set ({', '.join(names)}): F1 HN easy")
    for shift in shifts:
        s = replay_sets([(examples, [(t, shifted(t, found, model, shift)) for t, found in raw])
                         for examples, raw in sets], profile)
        print(f"{shift:>5} {s['f1']:.3f} {s['precision']:.3f} {s['recall']:.3f} {s['hn_fpr']:.3f} "
              f"{s['easy_fpr']:.3f} " + " ".join(f" {x['f1']:.3f} {x['hn_fpr']:.3f} {x['easy_fpr']:.3f}"
                                                   for x in s["sets"]))


def shifted(trace: Trace, found: Sequence[Detection], model: ClassifierDetector, shift: float) -> list[Detection]:
    """`found` (the model's with every category's score) as the model stage would report them with `logit_shift`
    `shift`: raised where the stage counts the trace as another language, then cut at its `min_score`, keeping each
    step's highest (the likeliest category, which the stage always reports)."""
    if not model.other_language(step_views([s.text for s in trace.steps], model.vocabulary, context=False)):
        shift = 0.0
    mine = [d.model_copy(update={"score": round(float(raised(np.array([d.score]), shift)[0]), 6)})
            for d in found if d.stage == StageKind.SAFETY_MODEL]
    top: dict[int, Detection] = {}  # per step, the first highest: the stage's likeliest category (ties: lowest)
    for d in mine:
        if d.step_index not in top or d.score > top[d.step_index].score:
            top[d.step_index] = d
    return [d for d in found if d.stage != StageKind.SAFETY_MODEL] + [
        d for d in mine if d.score >= model.min_score or d is top[d.step_index]]


def named_set(name: str, span: str = "") -> list[Example]:
    if name == "dev":
        return load_dataset(DEV)
    if name == "val":
        return corpus_examples(split="val")
    if not (writers := in_span(unseen_writers(RuntimeSettings().model_dir), span)):
        raise SystemExit("no corpus writer (in --writers) is unread by the models' records, or they do not tell")
    print("unseen writers:", ", ".join(writers))
    return corpus_examples(writers=tuple(writers))


FLAGS = (0.3, 0.4, 0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
# (below, stages it may overrule) or None. Overruling may reach critical rule hits (max_score 1.0), as the shipped
# profiles' does: refusals name the harm they refuse ("I won't explain how to build a bomb"), which is exactly where
# the rules misfire (configs/profiles.yaml says more).
OVERRULES = (None, *((below, stages) for below in (0.05, 0.1, 0.2, 0.3) for stages in (("semantic",),
                                                                                        ("rules", "semantic"))))


def candidate(base: SafetyProfile, flag: float, overrule: tuple | None) -> SafetyProfile:
    """`base` with the model's flag threshold at `flag` (redact and block no lower than the base's) and `overrule`."""
    redact = max(flag, base.model_thresholds.redact if base.model_thresholds else flag)
    block = max(redact, base.model_thresholds.block if base.model_thresholds else redact)
    return base.model_copy(update={
        "model_thresholds": Thresholds(flag=flag, redact=redact, block=block),
        "model_overrule": None if overrule is None else ModelOverrule(below=overrule[0], stages=overrule[1],
                                                                      max_score=1.0),
        "model_category_thresholds": {},
    })


OWN_COMMON = (0.7, 0.75, 0.8, 0.85)
OWN_FLAGS = (None, 0.4, 0.5, 0.6, 0.7)  # None: the category keeps the common flag


def own_flag_candidates(base: SafetyProfile, categories: Sequence[Category]):
    """(common flag, own flags, profile) for every combination; redact and block stay the base's, raised to the
    flag where it is higher. The overrule is the base's."""
    for flag in OWN_COMMON:
        common = candidate(base, flag, None).model_thresholds
        for values in itertools.product(OWN_FLAGS, repeat=len(categories)):
            own = {c: Thresholds(flag=v, redact=max(v, common.redact), block=max(v, common.block))
                   for c, v in zip(categories, values) if v is not None}
            yield flag, {c: t.flag for c, t in own.items()}, base.model_copy(update={
                "model_thresholds": common, "model_category_thresholds": own})


Scored = Sequence[tuple[Sequence[Example], Sequence[tuple[Trace, list]]]]


def replay_sets(sets: Scored, profile: SafetyProfile) -> dict:
    """`replay` on each set, combined: mean precision, recall and F1; the worst FPRs and category recall (a
    setting must keep the bars on every set); per-category recall averaged over the sets that hold the category.
    `sets` keeps each set's own scores."""
    scores = [replay(examples, raw, profile) for examples, raw in sets]

    def mean(key: str) -> float:
        return sum(s[key] for s in scores) / len(scores)

    categories = {c for s in scores for c in s["per_category"]}
    return {"f1": mean("f1"), "precision": mean("precision"), "recall": mean("recall"),
            "hn_fpr": max(s["hn_fpr"] for s in scores), "easy_fpr": max(s["easy_fpr"] for s in scores),
            "min_category_recall": min(s["min_category_recall"] for s in scores),
            "per_category": {c: sum(r := [s["per_category"][c] for s in scores if c in s["per_category"]]) / len(r)
                             for c in sorted(categories)},  # over the sets that hold the category
            "sets": scores}


def replay(examples: Sequence[Example], raw: Sequence[tuple[Trace, list]], profile: SafetyProfile) -> dict:
    """The profile's decisions on the cached detections, scored."""
    results = [decide(t, d, profile, request_id="t") for t, d in raw]
    report = score(examples, [r.verdict for r in results], [set(r.categories) for r in results])
    per = {c: s.recall for c, s in report.per_category.items()}
    return {"f1": report.f1, "precision": report.precision, "recall": report.recall,
            "hn_fpr": report.hard_negative_fpr or 0.0, "easy_fpr": report.easy_safe_fpr or 0.0,
            "min_category_recall": min(per.values(), default=0.0), "per_category": per}


# A category's own threshold must earn its keep: on a few hundred traces smaller gains are noise, and every
# threshold fitted to dev.jsonl is one more way to fit it rather than the traffic it stands for.
MIN_GAIN = 0.01


def per_category_flags(sets: Scored, profile: SafetyProfile) -> dict:
    """One pass over the categories (in taxonomy order): each keeps the profile's flag threshold unless another
    gains MIN_GAIN F1 (mean over the sets) while hard-negative and easy-safe FPR stay within their bars."""
    chosen: dict = {}
    current = replay_sets(sets, profile)
    for category in Category:
        best_flag, best_score = None, current
        for flag in FLAGS:
            own = Thresholds(flag=flag, redact=max(flag, profile.model_thresholds.redact),
                             block=max(flag, profile.model_thresholds.block))
            s = replay_sets(sets, profile.model_copy(update={"model_category_thresholds": {**chosen, category: own}}))
            if s["hn_fpr"] <= 0.08 and s["easy_fpr"] <= 0.02 and s["f1"] >= best_score["f1"] + MIN_GAIN:
                best_flag, best_score = own, s
        if best_flag is not None:
            chosen[category] = best_flag
            current = best_score
            print(f"{category.value}: flag {best_flag.flag} -> F1 {current['f1']:.3f} HN {current['hn_fpr']:.3f}")
    return {c: t.flag for c, t in chosen.items()}


if __name__ == "__main__":
    main()
