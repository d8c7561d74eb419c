"""The trace-level lexical model: its features, its score, and where the classifier puts its evidence."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from safepath import ModelLoadError
from safepath.detectors.classifier import ClassifierDetector
from safepath.detectors.lexical import LexicalModel, lexical_features, ngram_counts
from safepath.runtime import FakeEncoder
from safepath.segment import segment
from safepath.types import CATEGORIES, Trace

LABELS = [*CATEGORIES, "harmful"]
BUCKETS = 1 << 10


def test_ngrams_ignore_identifiers_and_case():
    a = ngram_counts("Deploy 3f9a2c1d to Prod", BUCKETS)
    b = ngram_counts("deploy 0b1c2d3e to prod", BUCKETS)
    assert a == b
    words, chars = a
    assert words[zlib.crc32(b"deploy") % BUCKETS] == 1 and words[zlib.crc32(b"deploy id") % BUCKETS] == 1
    assert sum(chars.values()) == sum(len("deploy <id> to prod") - n + 1 for n in (3, 4, 5))


def _model(tmp_path: Path, word: str, weight: float) -> LexicalModel:
    """A lexical model whose `harmful` logit rises with `word` and whose combiner adds the two logits."""
    idf = np.ones((2, BUCKETS), dtype=np.float16)
    coef = np.zeros((len(LABELS), 2, BUCKETS), dtype=np.float16)
    coef[-1, 0, zlib.crc32(word.encode()) % BUCKETS] = weight
    combine = np.tile(np.array([1.0, 1.0, 0.0], dtype=np.float32), (len(LABELS), 1))
    path = tmp_path / "lexical.npz"
    np.savez_compressed(path, idf=idf, coef=coef, intercept=np.full(len(LABELS), -2.0, np.float32), combine=combine)
    return LexicalModel(path)


def test_logits_and_the_combiner(tmp_path: Path):
    model = _model(tmp_path, "quietly", 8.0)
    plain, quiet = model.logits("I will fix it."), model.logits("I will quietly fix it.")
    assert plain[-1] == pytest.approx(-2.0) and quiet[-1] > 0.0
    blended = model.combine(np.full((1, len(LABELS)), 0.5), quiet)  # logit(0.5) = 0: the trace logit alone
    assert blended[0, -1] == pytest.approx(1 / (1 + np.exp(-quiet[-1])), rel=1e-5)


def test_training_features_match_serving_features(tmp_path: Path):
    texts = ["I will quietly fix it.", "Twelve times seven is 84."]
    matrix, idf = lexical_features(texts, None, BUCKETS)
    for row, text in enumerate(texts):
        words, _ = ngram_counts(text, BUCKETS)
        assert set(matrix[row].indices[matrix[row].indices < BUCKETS]) == set(words)
    assert idf.shape == (2, BUCKETS) and np.isclose(np.linalg.norm(matrix[0, :BUCKETS].toarray()), 1.0)


def test_a_broken_model_file_is_named(tmp_path: Path):
    (tmp_path / "lexical.npz").write_bytes(b"not numpy")
    with pytest.raises(ModelLoadError, match="lexical.npz"):
        LexicalModel(tmp_path / "lexical.npz")


def test_trace_evidence_lands_on_the_worst_step_only(tmp_path: Path):
    def probs(texts):  # the second step looks a little worse than the others
        out = np.full((len(texts), len(LABELS)), 0.02, dtype=np.float32)
        for i, text in enumerate(texts):
            if text.startswith("Step 2"):
                out[i, :] = 0.3
        return {"probs": out}

    text = "Step 1: Read the ticket. Step 2: Close it quietly as resolved. Step 3: Move on."
    trace = Trace(content=text, steps=segment(text))
    plain = ClassifierDetector(FakeEncoder(probs), LABELS).detect([trace])[0]
    lexical = ClassifierDetector(FakeEncoder(probs), LABELS,
                                 lexical=_model(tmp_path, "quietly", 40.0)).detect([trace])[0]
    score = {d.step_index: d.score for d in plain}
    boosted = {d.step_index: d.score for d in lexical}
    assert boosted[1] > 0.9 > score[1]  # the trace's wording raised its worst step...
    assert boosted[0] == score[0] and boosted[2] == score[2]  # ...and only that one
