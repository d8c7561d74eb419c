"""A trace-level lexical judgement: hashed word and character n-grams, TF-IDF weighted, and a linear model.

A step judged with a little context misses what a reader takes from the whole trace: the tone of a plan ("quietly",
"they won't notice"), an honest report running through a safe twin, a refusal framing a request. Measured on
shared/eval/dev.jsonl, a bag of n-grams over the whole trace separates harmful traces from hard negatives better
than the step classifier's worst step alone, and the two err on different traces (docs/EVALUATION.md). So the
safety-model stage reads both: the transformer scores each step, this model scores the trace once, and a small
combiner fitted on the corpus's val split (`LexicalModel.combine`) blends the trace's score into each step's.

Features are computed here, in plain Python and numpy, exactly as models/train_safety.py computes them for
training: identifiers masked, lower-cased; word 1- and 2-grams and character 3- to 5-grams (whitespace runs
folded to one space); each n-gram hashed with CRC-32 into `buckets` slots per kind; sublinear term frequency times
the learned IDF; each kind L2-normalised. No vocabulary is stored, only per-slot weights.
"""

from __future__ import annotations

import math
import re
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from safepath.detectors.model_input import mask_identifiers
from safepath.errors import ModelLoadError
from safepath.fingerprint import content_version

_WORD = re.compile(r"\w+")
_SPACE = re.compile(r"\s+")
CHAR_NGRAMS = (3, 4, 5)


def ngram_counts(text: str, buckets: int) -> tuple[Counter[int], Counter[int]]:
    """Hashed word (1-2) and character (3-5) n-gram counts of a trace, as slot -> count for each kind."""
    text = mask_identifiers(text).lower()
    words = _WORD.findall(text)
    word_counts: Counter[int] = Counter()
    for i, w in enumerate(words):
        word_counts[zlib.crc32(w.encode()) % buckets] += 1
        if i:
            word_counts[zlib.crc32(f"{words[i - 1]} {w}".encode()) % buckets] += 1
    flat = _SPACE.sub(" ", text).encode("utf-8", "surrogatepass")
    char_counts: Counter[int] = Counter()
    for n in CHAR_NGRAMS:
        for i in range(len(flat) - n + 1):
            char_counts[zlib.crc32(flat[i : i + n]) % buckets] += 1
    return word_counts, char_counts


def weighted(counts: Counter[int], idf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(slots, values): sublinear tf times IDF, L2-normalised."""
    if not counts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    slots = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
    tf = np.fromiter((1.0 + math.log(c) for c in counts.values()), dtype=np.float32, count=len(counts))
    values = tf * idf[slots]
    norm = float(np.linalg.norm(values))
    return slots, values / norm if norm else values


class LexicalModel:
    """The trace-level linear model and the combiner that blends its score into step scores.

    Args:
        path: an `.npz` written by models/train_safety.py: `idf` (2 x buckets), `coef` (labels x 2 x buckets),
            `intercept` (labels), `combine` (labels x 3: weight of the step logit, of this model's logit, offset).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            with np.load(self.path) as data:
                self.idf = data["idf"].astype(np.float32)
                self.coef = data["coef"].astype(np.float32)
                self.intercept = data["intercept"].astype(np.float32)
                self.combiner = data["combine"].astype(np.float32)
        except (OSError, KeyError, ValueError) as exc:
            raise ModelLoadError(self.path, f"cannot read the lexical model: {exc}") from exc
        self.buckets = self.idf.shape[1]
        self.version = content_version(self.path)  # as every stage's: from the bytes it reads

    def logits(self, text: str) -> np.ndarray:
        """One logit per label for the whole trace."""
        out = self.intercept.copy()
        for kind, counts in enumerate(ngram_counts(text, self.buckets)):
            slots, values = weighted(counts, self.idf[kind])
            out += self.coef[:, kind, slots] @ values
        return out

    def combine(self, step_probs: np.ndarray, trace_logits: np.ndarray) -> np.ndarray:
        """Blend: sigmoid(a * logit(step prob) + b * trace logit + c), per label; `step_probs` is steps x labels."""
        return blend(self.combiner, step_probs, trace_logits)


def logit(probs: np.ndarray) -> np.ndarray:
    """Log-odds, in float64, of probabilities clipped to [1e-6, 1 - 1e-6] (a saturated sigmoid stays finite)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def blend(weights: np.ndarray, step_probs: np.ndarray, *trace_logits: np.ndarray) -> np.ndarray:
    """The trace-level blends' form, per output: sigmoid(w0 * logit(step prob) + w1 * first trace logit + ... +
    offset); `weights` is outputs x (2 + number of trace logits), the offset last."""
    z = weights[:, 0] * logit(step_probs)
    for k, values in enumerate(trace_logits, start=1):
        z = z + weights[:, k] * values
    z = z + weights[:, -1]
    return 1.0 / (1.0 + np.exp(-z))


def lexical_features(texts: Sequence[str], idf: np.ndarray | None, buckets: int):
    """Training helper: the (documents x 2 * buckets) CSR matrix of `texts`, and the IDF (computed when None, with
    sklearn's smooth formula: ln((1 + n) / (1 + df)) + 1). Needs scipy (the `train` extra)."""
    from scipy.sparse import csr_matrix

    counts = [ngram_counts(t, buckets) for t in texts]
    if idf is None:
        df = np.zeros((2, buckets), dtype=np.float64)
        for pair in counts:
            for kind, c in enumerate(pair):
                df[kind, list(c)] += 1
        idf = (np.log((1 + len(texts)) / (1 + df)) + 1).astype(np.float32)
    rows, cols, vals = [], [], []
    for r, pair in enumerate(counts):
        for kind, c in enumerate(pair):
            slots, values = weighted(c, idf[kind])
            rows.append(np.full(len(slots), r))
            cols.append(slots + kind * buckets)
            vals.append(values)
    matrix = csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(len(texts), 2 * buckets))
    return matrix, idf
