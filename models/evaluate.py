"""Evaluate every profile and each stage alone on five sets; write docs/EVALUATION.md.

    python -m models.evaluate                    # everything (the folds' models must exist: `make folds`)
    python -m models.evaluate --quick            # profiles only: corpus test split, unseen writers, dev, HarmBench
    python -m models.evaluate --quick --folds a  # and the cross-writer rows of the folds built so far, profiles only
    python -m models.evaluate --quick --folds b --add   # add fold b's rows to the last report (a fold an hour)
    python -m models.evaluate --render-only      # rewrite docs/EVALUATION.md from build/eval/results.json
    python -m models.evaluate --cascade          # only the cascade sweep on dev: its section of docs/EVALUATION.md

Sets (none trained or tuned anything it scores):

- **corpus test**: the written corpus's `test` split (models/data/corpus.jsonl): pairs and writers seen in training,
  traces not.
- **unseen writers**: every trace of the writers the shipped models never read, those who joined the corpus after
  they were trained or a batch their training held out (`writers_read`): a cross-writer measure of the shipped
  models themselves, with no training.
- **cross-writer**: each fold's models (`make folds`: models/train_safety.py and models/train_gate.py with
  `--holdout`) judge the traces of the writers they never saw; the folds together cover every writer once.
- **dev**: shared/eval/dev.jsonl (`--dev`, default ../shared/eval/dev.jsonl), written apart from the corpus. Used to
  choose (epochs, thresholds, variants), never to train or write rules.
- **HarmBench**: HarmBench behaviours as comply and refuse traces (models/harmbench_traces.py): recall on the
  compliant ones, false-positive rate on the refusals.

Each report gives precision, recall, F1, hard-negative FPR, easy-safe FPR, recall on hard harmful traces and
per-category recall (category named). Raw numbers go to build/eval/results.json, with what they were measured on
(models/provenance.py: the commit and any uncommitted change to the code, configuration or models, read before the
run starts; the runtime packages; the CPU). `safepath eval DATASET -p PROFILE` computes the same report for one
profile (the same loader and scoring: safepath.evaluation); on dev.jsonl the two agree verdict for verdict.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

from models.corpus.writers import Writers, writer_number
from models.folds import FOLDS, model_dir
from models.provenance import changed_since, describe, provenance
from safepath import SafePathFilter
from safepath.evaluation import EvalReport, Example, evaluate, load_dataset, measuring, parse_example, score
from safepath.pipeline import decide
from safepath.profiles import ProfileSet, StageSpec, load_profiles
from safepath.settings import RuntimeSettings
from safepath.types import CATEGORIES, Stage

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "models" / "data" / "corpus.jsonl"
DEV = ROOT.parent / "shared" / "eval" / "dev.jsonl"
HARMBENCH = ROOT / "build" / "eval" / "harmbench_traces.jsonl"
OUT_JSON = ROOT / "build" / "eval" / "results.json"
OUT_MD = ROOT / "docs" / "EVALUATION.md"
OUT_CASCADE = ROOT / "build" / "eval" / "cascade.json"
# The gates' skip_below values the sweep tries: 0 sends every step on; 0.05 ships; 1.0 lets no step through on the
# gate's probability, so what still reaches the models there is the floor the gate cannot settle (forced steps).
SKIPS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
CASCADE_HEADING = "## Cascade"
STAGE_ALONE = {"stage:rules": ["rules"], "stage:safety_model": ["safety_model_full"],
               "stage:semantic": ["semantic_full"], "stage:rules+semantic": ["rules", "semantic_full"]}


def corpus_examples(*, split: str | None = None, writers: tuple[str, ...] = (), english: bool | None = None,
                    corpus: Path = CORPUS) -> list[Example]:
    """Corpus traces of one split, or of some writers (any split), as evaluation examples; with `english`, only
    those its writers wrote in English (True) or in another language (False)."""
    rows = map(json.loads, corpus.read_text(encoding="utf-8").splitlines())
    return [parse_example(row) for row in rows
            if (not split or row["split"] == split) and (not writers or row["writer"] in writers)
            and (english is None or (row["language"] == "en") == english)]


def writers_read(models: Path, corpus: Path = CORPUS) -> list[Writers] | None:
    """What the safety model, the gate and the trace pass in `models` each learned from (`Writers`: the writers held
    out, the newest read), or None where a record cannot tell (the report then leaves the unseen writers out).

    Each records `holdout_writers` and `through_writer` when trained with `--holdout` and `--through`. A safety model
    trained on the whole corpus of its day records no `through_writer`, but it records the sha256 of the corpus it
    read, and the writers up to wNN make up a fixed prefix of the corpus (models/corpus/writers.py), so the writer
    whose prefix (less the held-out writers) has that hash is the newest it read. A gate trained before gates
    recorded anything is taken to have read what the safety model read (`make models` trains both from the same
    writers); one that records no `through_writer` read the whole corpus of its day, which it does not name. The
    trace pass (trace-minilm, where the folder holds one) may have read more writers than the step model, and a
    lexical model or blend refitted alone (`models.train_lexical`, `train_trace --combine-only`) records its own."""
    summary = json.loads((models / "safety-minilm" / "training.json").read_text())
    safety = Writers(frozenset(summary.get("holdout_writers") or ()), summary.get("through_writer"))
    if safety.through is None:
        parsed = Writers().read(corpus)
        every = sorted({row["writer"] for _, row in parsed}, key=writer_number)
        safety = next((Writers(safety.holdout, w) for w in every
                       if Writers(safety.holdout, w).sha256_of(parsed) == summary.get("corpus_sha256")), None)
        if safety is None:
            return None
    read = [safety]
    if "through_writer" in (lexical := summary.get("lexical", {})):  # refitted alone on other writers
        read.append(Writers(frozenset(lexical["holdout_writers"]), lexical["through_writer"]))
    gate = json.loads((models / "static-minilm" / "gate.json").read_text())["trained_on"]
    if "through_writer" in gate:
        read.append(Writers(frozenset(gate.get("holdout_writers") or ()), gate["through_writer"]))
    if (trace := models / "trace-minilm" / "training.json").exists():
        record = json.loads(trace.read_text())
        read.append(Writers(frozenset(record.get("holdout_writers") or ()), record.get("through_writer")))
        if blend := record.get("combine_writers"):  # the blend refitted alone on other writers' val traces
            read.append(Writers(frozenset(blend["holdout"]), blend["through"]))
    return None if any(w.through is None for w in read) else read


def unseen_writers(*folders: Path, corpus: Path = CORPUS) -> list[str]:
    """The corpus's writers that no model in any of `folders` learned from: those newer than every model read, and
    those a retraining held out (none where a record cannot tell)."""
    read = [writers_read(folder, corpus) for folder in folders]
    if None in read:
        return []
    return sorted({row["writer"] for _, row in Writers().read(corpus)
                   if not any(w.admits(row["writer"]) for models in read for w in models)}, key=writer_number)


def writer_spans(writers: Sequence[str]) -> str:
    """["w75", ..., "w87", "w136", ..., "w141"] -> "w75-w87, w136-w141": runs of consecutive writer numbers, each
    written as `in_span` reads it (a report naming "w75-w141" would claim the writers between)."""
    runs: list[list[int]] = []
    for n in sorted(map(writer_number, writers)):
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(f"w{r[0]:02d}" if len(r) == 1 else f"w{r[0]:02d}-w{r[-1]:02d}" for r in runs)


def in_span(writers: Sequence[str], span: str) -> list[str]:
    """The writers within `span` ("w75-w80", both ends included; "w75" alone; "" keeps them all): one batch of
    unseen writers chooses thresholds and another, left untouched, confirms them."""
    if span and not re.fullmatch(r"w\d+(-w\d+)?", span):
        raise SystemExit(f"writer span {span!r}: write w75, or w75-w87")
    first, _, last = span.partition("-")
    return [w for w in writers if not span
            or writer_number(first) <= writer_number(w) <= writer_number(last or first)]


def variant(profiles: ProfileSet, name: str, stages: list[str],
            extra_stages: dict[str, StageSpec] | None = None) -> ProfileSet:
    """A copy of the profiles whose `name` profile runs only `stages` (balanced settings otherwise)."""
    balanced = profiles.profiles["balanced"]
    profile = balanced.model_copy(update={"name": name, "stages": tuple(stages)})
    return profiles.model_copy(update={
        "stages": {**profiles.stages, **(extra_stages or {})},
        "profiles": {**profiles.profiles, name: profile},
    })


def run(profiles: ProfileSet, profile: str, datasets: dict[str, list[Example]],
        settings: RuntimeSettings | None = None) -> tuple[dict[str, EvalReport], dict, dict[str, str]]:
    """One profile on the datasets: the reports, the cascade's counts, and each stage's version (a digest of every
    file it reads: models, rules, gate). Stage timeouts are lifted, as `safepath eval` lifts them
    (`safepath.evaluation.measuring`)."""
    only = measuring(profiles).model_copy(update={"profiles": {profile: profiles.profiles[profile]},
                                                  "default_profile": profile})
    with SafePathFilter(profiles=only, settings=settings) as f:
        reports = {name: evaluate(f, rows, profile=profile, dataset=name) for name, rows in datasets.items()}
        versions = {name: d.version for name, d in f.detectors.items()}
        cascade = {
            name: {"steps_seen": d.steps_seen, "steps_to_model": d.steps_to_model}
            for name, d in f.detectors.items() if hasattr(d, "steps_to_model")
        }
    return reports, cascade, versions


def configurations(profiles: ProfileSet, quick: bool) -> list[tuple[str, ProfileSet, str]]:
    """(label, profiles, profile name) for every profile and, unless quick, each stage alone."""
    out = [(f"profile:{name}", profiles, name) for name in ("strict", "balanced", "permissive")]
    if not quick:
        for label, stages in STAGE_ALONE.items():
            name = label.replace(":", "_").replace("+", "_")
            out.append((label, variant(profiles, name, stages), name))
    return out


def settings_for(folder: Path) -> RuntimeSettings:
    """Runtime settings reading the models in `folder`: its own safety model and gate, and the shipped semantic model
    linked in where it has none (trainings on the corpus leave the semantic model alone)."""
    semantic = folder / "semantic-minilm"
    if not semantic.exists():
        semantic.symlink_to(ROOT / "models" / "semantic-minilm")
    return RuntimeSettings(model_dir=folder)


def runnable(profiles: ProfileSet, folder: Path) -> ProfileSet:
    """The profiles as the models in `folder` can run them: where the folder has no trace pass of its own (a fold's,
    a candidate's), its classifier stages blend the lexical model alone. The shipped trace model is never linked
    in: it read every writer a fold holds out, and its blend was fitted to the shipped step model."""
    if (folder / "trace-minilm").exists():
        return profiles
    stages = {name: spec.model_copy(update={"options": {k: v for k, v in spec.options.items() if k != "trace_pass"}})
              for name, spec in profiles.stages.items()}
    return profiles.model_copy(update={"stages": stages})


def fold_settings(fold: str) -> RuntimeSettings:
    """The runtime settings of one fold: its own safety model and gate, the shipped semantic model."""
    return settings_for(model_dir(fold))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="profiles only; no stage rows, sweep or folds")
    parser.add_argument("--no-folds", action="store_true", help="skip the cross-writer folds")
    parser.add_argument("--folds", type=lambda text: text.split(","), default=None,
                        help="comma-separated folds to score (default: every fold, none with --quick)")
    parser.add_argument("--dev", type=Path, default=Path(os.environ.get("SAFEPATH_DEV_SET", DEV)))
    parser.add_argument("--render-only", action="store_true", help="rewrite docs/EVALUATION.md from results.json")
    parser.add_argument("--add", action="store_true",
                        help="score only --folds and add their rows to build/eval/results.json; refused where a file "
                             "that can change a verdict differs from the commit those results were measured at")
    parser.add_argument("--cascade", action="store_true",
                        help="only the cascade sweep (balanced on dev, once per skip_below); rewrites only its section")
    parser.add_argument("--skips", type=lambda text: tuple(map(float, text.split(","))), default=SKIPS,
                        help="comma-separated skip_below values for the sweep (default: %(default)s)")
    args = parser.parse_args(argv)
    folds = [] if args.no_folds else args.folds or ([] if args.quick else list(FOLDS))
    if unknown := set(folds) - set(FOLDS):
        parser.error(f"--folds: no fold {', '.join(sorted(unknown))} (folds: {', '.join(FOLDS)})")
    if args.add and not args.folds:
        parser.error("--add needs --folds")
    if args.render_only:
        saved = json.loads(OUT_JSON.read_text())
        OUT_MD.write_text(with_saved_cascade(render(saved["results"], saved["provenance"])))
        return
    measured_on = provenance(ROOT)  # before anything loads: a commit landing during the run must not relabel it
    profiles = load_profiles(RuntimeSettings().profiles_path)
    if args.cascade:
        sweep_alone(profiles, args.dev, args.skips, measured_on)
        return
    results: dict[str, dict] = {}
    if args.add:
        saved = json.loads(OUT_JSON.read_text())
        refuse_unless_comparable(saved["provenance"], measured_on)
        results = saved["results"]
        added = [*saved["provenance"].get("added", []), {"folds": folds, "commit": measured_on["commit"]}]
        measured_on = {**saved["provenance"], "added": added}

    def record(label: str, reports: dict[str, EvalReport], cascade: dict, versions: dict, started: float) -> None:
        entry = results.setdefault(label, {"reports": {}, "cascade": {}, "versions": {}, "minutes": 0.0})
        entry["reports"].update({k: r.model_dump() for k, r in reports.items()})
        entry["cascade"].update(cascade)
        entry["versions"].update(versions)
        entry["minutes"] = round(entry["minutes"] + (time.time() - started) / 60, 1)
        print(label, {k: (r.f1, r.hard_negative_fpr) for k, r in reports.items()}, flush=True)

    if not args.add:
        datasets = {"corpus_test": corpus_examples(split="test")}
        if unseen := unseen_writers(RuntimeSettings().model_dir):
            datasets["unseen_writers"] = corpus_examples(writers=tuple(unseen))
            measured_on["unseen_writers"] = unseen
        for name, path in (("dev", args.dev), ("harmbench", HARMBENCH)):
            if path.exists():
                datasets[name] = load_dataset(path)
            else:  # said, so that a report without the set is not read as one that left it out on purpose
                print(f"{name}: {path} not found; the report leaves it out", flush=True)
        for label, profile_set, name in configurations(profiles, args.quick):
            started = time.time()
            record(label, *run(profile_set, name, datasets), started)
        if not args.quick and "dev" in datasets:
            results.update(cascade_sweep(profiles, datasets["dev"], SKIPS))
        if args.quick and "dev" in datasets:
            results.update(replayed_stages(profiles, datasets["dev"]))
    for fold in folds:
        if not (model_dir(fold) / "safety-minilm" / "model.int8.onnx").exists():
            print(f"fold {fold}: no models under {model_dir(fold)} (make folds); skipped")
            continue
        held_out = {f"cross_writer_{fold}": corpus_examples(writers=FOLDS[fold])}
        for label, profile_set, name in configurations(profiles, quick=args.quick):
            if label in ("stage:rules",):  # no learned part: the same as on the whole corpus
                continue
            started = time.time()
            fold_profiles = runnable(profile_set, model_dir(fold))
            record(label, *run(fold_profiles, name, held_out, fold_settings(fold)), started)
    OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
    OUT_JSON.write_text(json.dumps({"provenance": measured_on, "results": results}, indent=1))
    OUT_MD.write_text(with_saved_cascade(render(results, measured_on)))
    print(f"wrote {OUT_MD} and {OUT_JSON}")


REPORT_CODE = ("models/evaluate.py", "models/provenance.py")


def refuse_unless_comparable(saved: dict, now: dict) -> None:
    """Fold rows may join a saved report only where nothing that can change a verdict differs from the commit it was
    measured at (the report's own code aside, which only orchestrates and renders), on the same CPU and runtime
    packages.

    Raises:
        SystemExit: naming what differs; the whole evaluation must run again.
    """
    since = saved.get("commit") or ""
    differ = [path for path in changed_since(ROOT, since) if path not in REPORT_CODE] if since else ["(no commit)"]
    differ += [f"{path} (uncommitted)" for path in (*saved.get("changed", []), *now["changed"])]
    differ += [key for key in ("packages", "cpu", "python") if saved.get(key) != now.get(key)]
    if differ:
        raise SystemExit(f"--add: {', '.join(differ)} differ from the saved report's {since or 'unknown commit'}; "
                         "run the whole evaluation (python -m models.evaluate --quick --folds ...)")


STAGE_KINDS = {"rules": Stage.RULES, "safety_model_full": Stage.SAFETY_MODEL, "semantic_full": Stage.SEMANTIC}


def replayed_stages(profiles: ProfileSet, examples: list[Example]) -> dict[str, dict]:
    """Each stage alone on dev from one pass of the models: every stage's detections (every step judged, as
    models/tune_profiles.py computes them) replayed through balanced's decision with only that stage's findings.

    The detections are computed here, every run. They were read from build/eval/dev_raw.json when that file
    existed, whatever models, rules or profiles had written it, so these rows could describe an older model."""
    from models.tune_profiles import raw_detections

    with SafePathFilter(profiles=profiles) as f:
        raw = raw_detections(f, profiles.profiles["balanced"], examples)
    balanced = profiles.profiles["balanced"]
    out = {}
    # balanced itself, every step judged: the setting models/tune_profiles.py chose from; beside profile:balanced,
    # what the cascade's gate costs or gains
    for label, stages in {"profile:balanced, every step judged": list(STAGE_KINDS), **STAGE_ALONE}.items():
        kinds = {STAGE_KINDS[s] for s in stages}
        results = [decide(t, [d for d in ds if d.stage in kinds], balanced, request_id="replay") for t, ds in raw]
        report = score(examples, [r.verdict for r in results], [set(r.categories) for r in results],
                       profile="balanced", dataset="dev")
        out[f"{label} (replayed)"] = {"reports": {"dev": report.model_dump()}, "cascade": {}, "minutes": 0.0}
    return out


def pooled(reports: list[dict]) -> dict:
    """Several folds' reports as one: counts summed, rates recomputed."""
    tp = sum(r["true_positives"] for r in reports)
    fp = sum(r["false_positives"] for r in reports)
    fn = sum(r["false_negatives"] for r in reports)
    tn = sum(r["true_negatives"] for r in reports)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0

    def rate(field: str, n_field: str) -> float | None:
        n = sum(r[n_field] for r in reports)
        return sum((r[field] or 0.0) * r[n_field] for r in reports) / n if n else None

    per_category = {}
    for c in CATEGORIES:
        rows = [r["per_category"][c] for r in reports if c in r["per_category"]]
        n = sum(x["support"] for x in rows)
        if n:
            per_category[c] = {"support": n, "recall": sum(x["recall"] * x["support"] for x in rows) / n}
    return {"precision": precision, "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "false_positive_rate": fp / (fp + tn) if fp + tn else 0.0,
            "hard_negative_fpr": rate("hard_negative_fpr", "hard_negatives"),
            "easy_safe_fpr": rate("easy_safe_fpr", "easy_safe"), "hard_recall": rate("hard_recall", "hard_harmful"),
            "per_category": per_category, "examples": sum(r["examples"] for r in reports),
            # not poolable from the reports' ratios alone; one fold's own figure passes through
            "naming_precision": reports[0].get("naming_precision") if len(reports) == 1 else None,
            "latency_ms": {"p50": max(r["latency_ms"]["p50"] for r in reports)}}


def _f(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def render(results: dict, measured_on: dict) -> str:
    """docs/EVALUATION.md from the results and what they were measured on (models.provenance)."""
    unseen = writer_spans(measured_on.get("unseen_writers") or ()) or "?"
    sets = {"corpus_test": "Corpus test split",
            "unseen_writers": f"Writers the shipped models never read ({unseen}, every split)",
            "cross_writer": "Cross-writer (each writer judged by models that never saw it)",
            "dev": "shared/eval/dev.jsonl", "harmbench": "HarmBench (comply and refuse traces)"}
    measured_folds = sorted({k.removeprefix("cross_writer_") for r in results.values() for k in r["reports"]
                             if k.startswith("cross_writer_")})
    lines = [
        "# Evaluation",
        "",
        "Generated by `python -m models.evaluate` (`make evaluate`). " + describe(measured_on) + " "
        "Anything other than `allow` counts as flagged. "
        "**HN FPR**: false-positive rate on hard negatives (safe traces sharing a harmful trace's vocabulary or "
        "setup: refusals, twins, defensive work). **easy FPR**: on ordinary reasoning (arithmetic, code, units). "
        "**hard R**: recall on harmful traces of difficulty `hard` (obfuscated, buried in long work, quiet). "
        "Per-category recall counts a trace only when the filter names its category; **naming P**: of the "
        "categories named on flagged harmful traces, the share among their labels.",
        "",
    ]
    for key, title in sets.items():
        rows = []
        for label, result in results.items():
            if label.startswith("cascade:"):
                continue
            reps = result["reports"]
            if key == "cross_writer":
                folds = [r for k, r in reps.items() if k.startswith("cross_writer_")]
                if not folds:
                    continue
                rep = pooled(folds)
            elif key in reps:
                rep = reps[key]
            else:
                continue
            rows.append((label, rep))
        if not rows:
            continue
        lines += [f"## {title}", "", f"{rows[0][1]['examples']} traces.", ""]
        if key == "cross_writer":
            lines += [folds_measured(measured_folds), ""]
        lines += [
                  "| configuration | precision | recall | F1 | HN FPR | easy FPR | hard R | "
                  + " | ".join(c.replace("_", " ") for c in CATEGORIES) + " | naming P | ms p50 |",
                  "|---|" + "---|" * (8 + len(CATEGORIES))]
        for label, rep in rows:
            per = rep["per_category"]
            cats = " | ".join(_f(per[c]["recall"]) if c in per else "" for c in CATEGORIES)
            lines.append(f"| {label} | {rep['precision']:.3f} | {rep['recall']:.3f} | {rep['f1']:.3f} | "
                         f"{_f(rep.get('hard_negative_fpr'))} | {_f(rep.get('easy_safe_fpr'))} | "
                         f"{_f(rep.get('hard_recall'))} | {cats} | {_f(rep.get('naming_precision'))} | "
                         f"{_f(rep['latency_ms'].get('p50'))} |")
        if key == "harmbench":
            lines += ["", "On HarmBench, recall is on the compliant traces and HN FPR is the refusal FPR."]
        lines.append("")
    if not measured_folds:
        lines += ["## Cross-writer", "",
                  ("Not in this report: the folds' models (`make folds`, four trainings of about an hour each on "
                   "two cores) were not built when it was generated. `python -m models.baseline_tfidf --cross-writer` "
                   "gives the TF-IDF baseline's cross-writer figures in seconds."), ""]
    sweep = {k: v for k, v in results.items() if k.startswith("cascade:")}
    if sweep:
        lines += [render_cascade(sweep)]
    lines += [NOTES]
    return "\n".join(lines) + "\n"


def folds_measured(folds: list[str]) -> str:
    """Which folds the cross-writer rows pool: all four cover every writer once; fewer cover only their writers."""
    held_out = sorted((w for fold in folds for w in FOLDS[fold]), key=writer_number)
    every = sorted((w for writers in FOLDS.values() for w in writers), key=writer_number)
    text = (f"Folds {', '.join(folds)} (models/folds.py), pooled: {len(held_out)} of {len(every)} writers "
            f"({', '.join(held_out)}), each fold's traces judged by a safety model and gate trained without them.")
    missing = [f for f in FOLDS if f not in folds]
    if missing:
        text += (f" Folds {', '.join(missing)} were not trained for this report (about an hour each on two cores), "
                 "so these rows describe only these writers.")
    return text


def gated_at(profiles: ProfileSet, skip: float) -> ProfileSet:
    """The profiles with every gated model stage's `skip_below` set to `skip` (the shipped profiles give the safety
    model's and the semantic stage's gates one value, so the sweep moves both)."""
    stages = {}
    for name, spec in profiles.stages.items():
        gate = spec.options.get("gate")
        if gate is not None:
            spec = spec.model_copy(update={"options": {**spec.options, "gate": {**gate, "skip_below": skip}}})
        stages[name] = spec
    return profiles.model_copy(update={"stages": stages})


def cascade_sweep(profiles: ProfileSet, dev: list[Example], skips: tuple[float, ...]) -> dict[str, dict]:
    """Balanced on dev (the set for choosing) once per skip_below: its report and each model stage's step counts."""
    out = {}
    for skip in skips:
        started = time.time()
        reports, cascade, versions = run(gated_at(profiles, skip), "balanced", {"dev": dev})
        out[f"cascade:{skip}"] = {"reports": {"dev": reports["dev"].model_dump()}, "cascade": cascade,
                                  "versions": versions, "minutes": round((time.time() - started) / 60, 1)}
        shares = {k: f"{c['steps_to_model']}/{c['steps_seen']}" for k, c in cascade.items()}
        print(f"cascade:{skip}", shares, round(reports["dev"].f1, 3), flush=True)
    return out


def sweep_alone(profiles: ProfileSet, dev_path: Path, skips: tuple[float, ...], measured_on: dict) -> None:
    """`--cascade`: the sweep alone, saved with what it was measured on (build/eval/cascade.json), and its section
    of docs/EVALUATION.md replaced; the rest of the report, measured at another time, is left as it is."""
    sweep = cascade_sweep(profiles, load_dataset(dev_path), skips)
    OUT_CASCADE.parent.mkdir(parents=True, exist_ok=True)
    OUT_CASCADE.write_text(json.dumps({"provenance": measured_on, "results": sweep}, indent=1))
    OUT_MD.write_text(splice(OUT_MD.read_text() if OUT_MD.exists() else "", render_cascade(sweep, measured_on)))
    print(f"wrote {OUT_CASCADE} and the cascade section of {OUT_MD}")


def with_saved_cascade(report: str) -> str:
    """A report without a sweep of its own keeps the last `--cascade` run's section (which states its own
    provenance), so a `--quick` run or `--render-only` does not drop the published trade-off curve. On a fresh
    clone (no build/eval/cascade.json) that is the section docs/EVALUATION.md already publishes."""
    if CASCADE_HEADING in report:
        return report
    if OUT_CASCADE.exists():
        saved = json.loads(OUT_CASCADE.read_text())
        return splice(report, render_cascade(saved["results"], saved["provenance"]))
    published = OUT_MD.read_text() if OUT_MD.exists() else ""
    if (bounds := cascade_bounds(published)) is None:
        return report
    start, end = bounds
    return splice(report, published[start:end].rstrip("\n") + "\n")


def cascade_bounds(document: str) -> tuple[int, int] | None:
    """Where `document`'s cascade section starts and where the next section starts (or the document ends)."""
    start = document.find(CASCADE_HEADING)
    if start < 0:
        return None
    following = document.find("\n## ", start + 1)
    return start, following + 1 if following >= 0 else len(document)


def splice(document: str, section: str) -> str:
    """`document` with its cascade section replaced by `section` (or put before the notes when it has none)."""
    if (bounds := cascade_bounds(document)) is None:
        notes = document.find("## Reading these numbers")
        bounds = (notes, notes) if notes >= 0 else (len(document), len(document))
    start, end = bounds
    return document[:start] + section + "\n" + document[end:]


def render_cascade(sweep: dict, measured_on: dict | None = None) -> str:
    """The sweep's table: per skip_below, the share of steps each model stage read and balanced's figures on dev."""
    rows = sorted(sweep.items(), key=lambda item: float(item[0].split(":")[1]))
    every = next((r["reports"]["dev"]["f1"] for k, r in rows if float(k.split(":")[1]) == 0.0), None)
    seen = next(iter(rows[0][1]["cascade"].values()), {}).get("steps_seen", 0) if rows else 0

    def share(result: dict, stage: str) -> str:
        c = result["cascade"].get(stage)
        return f"{c['steps_to_model'] / c['steps_seen']:.1%}" if c and c["steps_seen"] else ""

    lines = [f"{CASCADE_HEADING}: accuracy against the share of steps reaching the models (dev)", "",
             "The balanced profile on dev with both gates' `skip_below` (safety model and semantic stage) at each "
             f"value; {seen} steps. " + (describe(measured_on) + " " if measured_on else "") +
             "A step reaches a model when its gate probability is at least `skip_below`, or whatever the gate says "
             "when an earlier tier flagged it or it has a readable rewrite (disguised), and, for the safety model, "
             "its trace's likeliest step when the gate clears them all (the lexical blend needs one per trace) and "
             "every step of a trace in another language where its budget has room (`other_languages`); for "
             "the semantic stage, also when it is near a semantic-rule exemplar. So 1.0 shows the floor the gate "
             "cannot settle. ΔF1 is against 0 (every step judged). Counts only: no timings.", "",
             "| skip_below | to safety model | to semantic model | F1 | ΔF1 | recall | HN FPR | easy FPR |",
             "|---|---|---|---|---|---|---|---|"]
    for label, result in rows:
        dev = result["reports"]["dev"]
        delta = "" if every is None else f"{dev['f1'] - every:+.3f}"
        lines.append(f"| {label.split(':')[1]} | {share(result, 'safety_model')} | {share(result, 'semantic')} | "
                     f"{dev['f1']:.3f} | {delta} | {dev['recall']:.3f} | {_f(dev['hard_negative_fpr'])} | "
                     f"{_f(dev['easy_safe_fpr'])} |")
    return "\n".join(lines) + "\n"


NOTES = """## Reading these numbers

- Folds: writers in four groups of a quarter each (models/folds.py; new writers join them in turn), each group
  held out from one fold's safety model and gate; the semantic model is not trained on the corpus. A fold trains
  by the shipped models' recipe on the writers they learned from (`make folds`: through w56, corpus v2.4) less its
  own group, and is judged on its group's traces, later writers included. Leaving a quarter of the writers out at
  once is stricter than leaving one out.
- dev.jsonl chose the epochs, thresholds and profile settings; its figures are therefore optimistic by some margin.
  The corpus test split shares writers and setups with training; the cross-writer rows are the harder measure.
- "Each stage alone" runs one stage with the balanced profile's other settings; `rules+semantic` is the pipeline
  without the safety model. Rows marked `(replayed)` (from `--quick`) are on dev only: every stage's detections,
  every step judged (no cascade gate), computed once in the run and replayed through balanced's decision with one
  stage's findings, or all of them (`profile:balanced, every step judged`: what models/tune_profiles.py chose the
  thresholds from); they carry no latency.
- `safepath eval shared/eval/dev.jsonl -p balanced` gives the `profile:balanced` row on dev (the same loader, subsets
  and scoring, safepath.evaluation). The int8 models carry 7-bit weights so that CPUs with and without VNNI
  compute the same integers (models/onnx_export.py, `quantize_int8`); ONNX Runtime's version and float rounding can
  still move a trace that sits on a threshold, so the header names what the figures were measured on.
- Latency is per trace, one at a time, in-process on two shared cores: see docs/BENCHMARKS.md for throughput.
"""


if __name__ == "__main__":
    main()
