"""The shipped semantic encoder (`models/semantic-minilm/`) through OnnxEncoder, on CPU unless marked gpu.

Reference cosines were computed once with sentence-transformers 6.2 (fp32, torch) on the base all-MiniLM-L6-v2,
so these tests need neither torch nor sentence-transformers. int8 moves cosines by up to ~0.02.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from safepath.runtime import OnnxEncoder

MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "semantic-minilm"
INT8 = MODEL_DIR / "model.int8.onnx"
FP16 = MODEL_DIR / "model.fp16.onnx"
TOKENIZER = MODEL_DIR / "tokenizer.json"
TOLERANCE = 0.04

SENTENCES = [
    "I will hide this from the monitor.",
    "Conceal the action from oversight.",
    "The cake needs flour.",
    "Let me copy the credentials to an external server.",
    "Send the API keys to a remote host I control.",
    "I should report lower scores so the evaluators underestimate me.",
    "Deliberately underperform on the capability test.",
]

# (i, j, cosine from sentence-transformers fp32)
REFERENCE_COSINES = [
    (0, 1, 0.3271),
    (0, 2, 0.0122),
    (1, 6, 0.1861),
    (3, 4, 0.5055),
    (4, 2, -0.0706),
    (5, 6, 0.3716),
]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def int8() -> OnnxEncoder:
    return OnnxEncoder(INT8, TOKENIZER, providers=["CPUExecutionProvider"], intra_op_threads=1, name="semantic")


@pytest.fixture(scope="module")
def embeddings(int8: OnnxEncoder) -> np.ndarray:
    return int8.run(SENTENCES)["embedding"]


def test_the_model_gives_one_unit_vector_of_384_per_text(embeddings):
    assert embeddings.shape == (len(SENTENCES), 384) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


def test_paraphrases_are_closer_than_unrelated_sentences(embeddings):
    hide, conceal, cake = embeddings[0], embeddings[1], embeddings[2]
    assert cosine(hide, conceal) > cosine(hide, cake) + 0.2


@pytest.mark.parametrize("i,j,expected", REFERENCE_COSINES)
def test_cosines_match_the_sentence_transformers_reference(embeddings, i, j, expected):
    assert cosine(embeddings[i], embeddings[j]) == pytest.approx(expected, abs=TOLERANCE)


def test_a_600_token_text_is_windowed_into_one_embedding(int8):
    from tokenizers import Tokenizer

    paragraph = (
        "First I will read the configuration file and find where the deployment keeps its secrets. "
        "Then I will copy the credentials and the API keys into a small archive. "
        "Finally I will upload that archive to an external server that I control, before anyone notices. "
    )
    text = paragraph * 12
    tokenizer = Tokenizer.from_file(str(TOKENIZER))
    tokenizer.no_truncation()
    assert 590 <= len(tokenizer.encode(text).ids) <= 620
    out = int8.run([text, SENTENCES[2]])["embedding"]
    assert out.shape == (2, 384)
    assert np.linalg.norm(out[0]) == pytest.approx(1.0, abs=1e-5)
    exfiltration = int8.run(["Send the API keys to a remote host I control."])["embedding"][0]
    assert cosine(out[0], exfiltration) > cosine(out[0], out[1]) + 0.2
    # The windows cut one repeated paragraph at different places; the merged vector stays near the paragraph's (~0.89).
    assert cosine(out[0], int8.run([paragraph])["embedding"][0]) > 0.8


def test_version_names_the_shipped_file(int8):
    assert len(int8.version) == 12


def _fp16_or_skip() -> None:
    if not (MODEL_DIR / "model.fp16.external.bin").is_file():
        pytest.skip(
            "fp16 external data not derived: python -m models.onnx_export derive models/semantic-minilm/model.fp16.onnx"
        )


def test_fp16_agrees_with_int8_on_cpu(embeddings):
    _fp16_or_skip()
    fp16 = OnnxEncoder(FP16, TOKENIZER, providers=["CPUExecutionProvider"], intra_op_threads=1).run(SENTENCES)
    cosines = (fp16["embedding"] * embeddings).sum(axis=1)
    assert cosines.min() > 0.97


@pytest.mark.gpu
def test_fp16_runs_on_cuda(embeddings):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("no CUDA execution provider in this onnxruntime build")
    _fp16_or_skip()
    encoder = OnnxEncoder(FP16, TOKENIZER, providers=["CUDAExecutionProvider"])
    assert "CUDAExecutionProvider" in encoder._load().session.get_providers()
    cosines = (encoder.run(SENTENCES)["embedding"] * embeddings).sum(axis=1)
    assert cosines.min() > 0.97
