"""Evaluate the full filter, each stage alone, the cascade trade-off and the TF-IDF baseline; write docs/EVALUATION.md.

    python models/evaluate.py                    # everything (about 20-30 minutes on two cores)
    python models/evaluate.py --quick            # profiles only, no stage-alone rows or cascade sweep

Sets: the corpus test split (models/data/test.jsonl) and HarmBench behaviours turned into compliant
reasoning traces (build/eval/harmbench_traces.jsonl, models/harmbench_traces.py). Neither is used to
train or tune anything. Raw numbers also go to build/eval/results.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "models"))

from safepath import SafePathFilter  # noqa: E402
from safepath.evaluation import EvalReport, evaluate, load_dataset  # noqa: E402
from safepath.profiles import ProfileSet, StageSpec, load_profiles  # noqa: E402
from safepath.settings import RuntimeSettings  # noqa: E402
from safepath.types import CATEGORIES  # noqa: E402

TEST = ROOT / "models" / "data" / "test.jsonl"
HARMBENCH = ROOT / "build" / "eval" / "harmbench_traces.jsonl"
OUT_JSON = ROOT / "build" / "eval" / "results.json"
OUT_MD = ROOT / "docs" / "EVALUATION.md"
SKIPS = (0.0, 0.02, 0.05, 0.1, 0.2)


def variant(profiles: ProfileSet, name: str, stages: list[str], extra_stages: dict[str, StageSpec] | None = None) -> ProfileSet:
    """A copy of the profiles whose `name` profile runs only `stages` (balanced settings otherwise)."""
    balanced = profiles.profiles["balanced"]
    profile = balanced.model_copy(update={"name": name, "stages": tuple(stages)})
    return profiles.model_copy(update={
        "stages": {**profiles.stages, **(extra_stages or {})},
        "profiles": {**profiles.profiles, name: profile},
    })


def run(profiles: ProfileSet, profile: str, datasets: dict[str, list]) -> tuple[dict[str, EvalReport], dict]:
    with SafePathFilter(profiles=profiles.model_copy(update={"profiles": {profile: profiles.profiles[profile]},
                                                            "default_profile": profile})) as f:
        for detector in f.detectors.values():
            if hasattr(detector, "warmup"):
                detector.warmup()
        reports = {name: evaluate(f, rows, profile=profile, dataset=name) for name, rows in datasets.items()}
        cascade = {
            name: {"steps_seen": d.steps_seen, "steps_to_model": d.steps_to_model}
            for name, d in f.detectors.items() if hasattr(d, "steps_to_model")
        }
    return reports, cascade


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--render-only", action="store_true", help="rewrite docs/EVALUATION.md from build/eval/results.json")
    args = parser.parse_args()
    if args.render_only:
        OUT_MD.write_text(render(json.loads(OUT_JSON.read_text())))
        return
    settings = RuntimeSettings()
    profiles = load_profiles(settings.profiles_path)
    datasets = {"test": load_dataset(TEST)}
    if HARMBENCH.exists():
        datasets["harmbench"] = load_dataset(HARMBENCH)
    results: dict[str, dict] = {}

    def record(label: str, profile_set: ProfileSet, profile: str) -> None:
        started = time.time()
        reports, cascade = run(profile_set, profile, datasets)
        results[label] = {"reports": {k: r.model_dump() for k, r in reports.items()}, "cascade": cascade,
                          "minutes": round((time.time() - started) / 60, 1)}
        print(label, {k: (r.f1, r.recall, r.hard_negative_fpr) for k, r in reports.items()}, cascade, flush=True)

    for name in ("strict", "balanced", "permissive"):
        record(f"profile:{name}", profiles, name)
    if not args.quick:
        for label, stages in (("stage:rules", ["rules"]), ("stage:safety_model", ["safety_model_full"]),
                              ("stage:semantic", ["semantic_full"])):
            record(label, variant(profiles, label.replace(":", "_"), stages), label.replace(":", "_"))
        for skip in SKIPS:
            gated = profiles.stages["safety_model"]
            options = {**gated.options, "gate": {**gated.options["gate"], "skip_below": skip}}
            spec = gated.model_copy(update={"options": options})
            record(f"cascade:{skip}", variant(profiles, "cascade", ["rules", "cascade_model", "semantic"],
                                              {"cascade_model": spec}), "cascade")

        results["baseline:tfidf"] = json.loads(subprocess.run(
            [sys.executable, str(ROOT / "models" / "baseline_tfidf.py"), "--json"],
            check=True, capture_output=True, text=True).stdout)
    OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
    OUT_JSON.write_text(json.dumps(results, indent=1))
    OUT_MD.write_text(render(results))
    print(f"wrote {OUT_MD} and {OUT_JSON}")


def render(results: dict) -> str:
    """docs/EVALUATION.md from the results."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    lines = [
        "# Evaluation",
        "",
        f"Generated by `python models/evaluate.py` at commit {commit} on {platform.node() or 'this machine'} "
        f"({platform.processor() or platform.machine()}). Sets: the corpus **test split** (models/data/test.jsonl, "
        "families never seen in training) and **HarmBench** behaviours turned into compliant reasoning traces "
        "(models/harmbench_traces.py; recall only, every trace is harmful). Neither set trained or tuned anything.",
        "Anything other than `allow` counts as flagged. Hard-negative FPR: false-positive rate on safe traces that "
        "share vocabulary with harmful ones.",
        "",
        "## Full filter, per profile, and each stage alone",
        "",
        "| configuration | precision | recall | F1 | FPR | hard-neg. FPR | HarmBench recall | ms/trace p50 / p95 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, result in results.items():
        if not label.startswith(("profile:", "stage:", "baseline:")):
            continue
        test = result["reports"]["test"]
        harm = result["reports"].get("harmbench", {}).get("recall")
        lat = test["latency_ms"]
        lines.append(f"| {label} | {test['precision']:.3f} | {test['recall']:.3f} | {test['f1']:.3f} | "
                     f"{test['false_positive_rate']:.3f} | {test['hard_negative_fpr']:.3f} | "
                     f"{'' if harm is None else f'{harm:.3f}'} | {lat['p50']:.1f} / {lat['p95']:.1f} |")
    if "baseline:tfidf" in results:
        lines += ["", "`baseline:tfidf` is TF-IDF (word 1-2-grams, char 3-5-grams) + logistic regression on whole "
                  "traces of the same training split, C chosen on dev, threshold 0.5 (models/baseline_tfidf.py)."]
    lines += ["", "## Per-category recall on the test split", "",
              "| configuration | " + " | ".join(CATEGORIES) + " |", "|---|" + "---|" * len(CATEGORIES)]
    for label, result in results.items():
        per = result["reports"]["test"]["per_category"] if "reports" in result else {}
        if per:
            lines.append(f"| {label} | " + " | ".join(f"{per[c]['recall']:.2f}" if c in per else "" for c in CATEGORIES) + " |")
    sweep = {k: v for k, v in results.items() if k.startswith("cascade:")}
    if sweep:
        lines += ["", "## Cascade: accuracy against the share of steps reaching the transformer", "",
                  "Balanced profile; the safety model's gate `skip_below` varies (0 = every step reaches the model).", "",
                  "| skip_below | steps to model | F1 | recall | hard-neg. FPR | ms/trace mean |", "|---|---|---|---|---|---|"]
        for label, result in sweep.items():
            test = result["reports"]["test"]
            c = result["cascade"].get("cascade_model", {})
            share = c.get("steps_to_model", 0) / max(c.get("steps_seen", 1), 1)
            lines.append(f"| {label.split(':')[1]} | {share:.1%} | {test['f1']:.3f} | {test['recall']:.3f} | "
                         f"{test['hard_negative_fpr']:.3f} | {test['latency_ms']['mean']:.1f} |")
    lines += ["", NOTES]
    return "\n".join(lines) + "\n"


NOTES = """## Reading these numbers

- Profile thresholds (the safety model's own thresholds and its veto over rule and semantic hits) were chosen on
  the dev split; the test split and HarmBench were only ever scored. The corpus is template-generated from
  hand-written families (models/data/DATACARD.md): the test split holds families never seen in training, but only
  two or three per behavioural category, so per-category figures are noisy.
- HarmBench traces (models/harmbench_traces.py) restate a harmful request and plan to comply, so they are easy for
  every learned stage (the TF-IDF baseline also scores about 0.99); they show that HarmBench-style content harms
  are caught, not that subtle reasoning is. The test split is the harder measure.
- "Each stage alone" runs one stage with the balanced profile's other settings; the rule stage alone is a fast,
  honest first tier: low recall on paraphrased reasoning, with false positives on refusals that repeat a request.
- Latency columns are per trace, one at a time, in-process on two shared cores while other work ran: see
  docs/BENCHMARKS.md for measured throughput.
"""


if __name__ == "__main__":
    main()
