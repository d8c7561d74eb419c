"""OnnxEncoder's own logic (windowing, length bucketing, order, aggregation, errors) on a tiny hand-built model.

The model reports, per row: `probs` = tokens under the mask; `embedding` = (mean token id under the mask, tokens);
`width` = the padded length of the batch the row ran in. Words `w0`..`w99` have ids 4..103, [CLS] 2, [SEP] 3.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from safepath.errors import ModelLoadError
from safepath.runtime import OnnxEncoder
from safepath.runtime.onnx import length_batches, window_starts

CLS, SEP, FIRST_WORD = 2, 3, 4


def build_model(path: Path, *, input_names: tuple[str, str] = ("input_ids", "attention_mask")) -> Path:
    ids, mask = input_names
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [
        helper.make_node("Cast", [mask], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Cast", [ids], ["idsf"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["maskf", "axes"], ["probs"], keepdims=1),
        helper.make_node("Mul", ["idsf", "maskf"], ["masked_ids"]),
        helper.make_node("ReduceSum", ["masked_ids", "axes"], ["id_sum"], keepdims=1),
        helper.make_node("Div", ["id_sum", "probs"], ["mean_id"]),
        helper.make_node("Concat", ["mean_id", "probs"], ["embedding"], axis=1),
        helper.make_node("Equal", [ids, ids], ["everywhere"]),
        helper.make_node("Cast", ["everywhere"], ["ones"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["ones", "axes"], ["width"], keepdims=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in (ids, mask)],
        [
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 1]),
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info("width", TensorProto.FLOAT, ["batch", 1]),
        ],
        initializer=[axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def build_tokenizer(path: Path) -> Path:
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": CLS, "[SEP]": SEP, **{f"w{i}": FIRST_WORD + i for i in range(100)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", CLS), ("[SEP]", SEP)]
    )
    # Like the shipped all-MiniLM tokenizer.json: truncation and padding switched on; the encoder must undo both.
    tokenizer.enable_truncation(max_length=8)
    tokenizer.enable_padding(length=8, pad_id=0, pad_token="[PAD]")
    tokenizer.save(str(path))
    return path


def words(*indices: int) -> str:
    return " ".join(f"w{i}" for i in indices)


def framed_ids(*indices: int) -> list[int]:
    return [CLS, *(FIRST_WORD + i for i in indices), SEP]


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    return build_model(tmp_path / "tiny.onnx"), build_tokenizer(tmp_path / "tokenizer.json")


def encoder(files: tuple[Path, Path], **options) -> OnnxEncoder:
    if "max_length" in options:  # the default stride (96) suits only max_length >= 98
        options.setdefault("window_stride", options["max_length"] // 2)
    return OnnxEncoder(*files, providers=["CPUExecutionProvider"], intra_op_threads=1, **options)


# --- pure helpers ---


@pytest.mark.parametrize(
    "n,body,stride,expected",
    [
        (0, 6, 4, [0]),  # empty text: one window of just [CLS] [SEP]
        (6, 6, 4, [0]),  # fits exactly
        (7, 6, 4, [0, 1]),  # one token over: the last window is flush with the end
        (20, 6, 4, [0, 4, 8, 12, 14]),
        (20, 6, 6, [0, 6, 12, 14]),
    ],
)
def test_window_starts(n, body, stride, expected):
    assert window_starts(n, body, stride) == expected


def test_windows_cover_every_token_with_full_length_windows():
    for n in range(1, 60):
        starts = window_starts(n, 10, 7)
        covered = {t for s in starts for t in range(s, min(s + 10, n))}
        assert covered == set(range(n))
        assert all(s + 10 <= n for s in starts) or n <= 10


def test_length_batches_respect_the_token_budget_and_use_every_row_once():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 128, size=300).tolist()
    batches = length_batches(lengths, 1024)
    assert sorted(np.concatenate(batches).tolist()) == list(range(300))
    for batch in batches:
        assert len(batch) * max(lengths[i] for i in batch) <= 1024


def test_length_batches_put_an_oversized_row_alone():
    assert [b.tolist() for b in length_batches([5, 50, 5], 40)] == [[0, 2], [1]]
    assert length_batches([], 40) == []


# --- running the model ---


def test_outputs_come_back_in_input_order_one_row_per_text(files):
    texts = [words(*range(n)) for n in (9, 1, 30, 4, 0, 17)]
    out = encoder(files, max_length=64).run(texts)
    expected_counts = [n + 2 for n in (9, 1, 30, 4, 0, 17)]
    np.testing.assert_array_equal(out["probs"][:, 0], expected_counts)
    expected_means = [np.mean(framed_ids(*range(n))) for n in (9, 1, 30, 4, 0, 17)]
    np.testing.assert_allclose(out["embedding"][:, 0], expected_means, rtol=1e-6)
    assert {k: v.dtype for k, v in out.items()} == {"probs": np.float32, "embedding": np.float32, "width": np.float32}


def test_each_batch_is_padded_only_to_its_own_longest_row(files):
    lengths = [1, 2, 2, 3, 20, 21]
    out = encoder(files, max_length=32, max_tokens_per_batch=32).run([words(*range(n)) for n in lengths])
    # Budget 32 tokens: the four short rows (<= 5 tokens) share a batch padded to 5; the long ones run alone.
    np.testing.assert_array_equal(out["width"][:, 0], [5, 5, 5, 5, 22, 23])


def test_tokenizer_truncation_and_padding_from_the_file_are_ignored(files):
    # The tokenizer file truncates and pads at 8; a 3-word text must give 5 tokens, a 12-word one 14.
    out = encoder(files, max_length=64).run([words(1, 2, 3), words(*range(12))])
    np.testing.assert_array_equal(out["probs"][:, 0], [5, 14])


def test_a_long_text_is_windowed_and_its_rows_merged_by_output_name(files):
    text = words(*range(20))  # 20 body tokens; max_length 8 -> 6 per window, stride 4 -> starts 0, 4, 8, 12, 14
    out = encoder(files, max_length=8, window_stride=4).run([words(5), text])
    windows = [framed_ids(*range(s, s + 6)) for s in (0, 4, 8, 12, 14)]
    # probs*: max over windows (each window holds 8 tokens).
    assert out["probs"][1, 0] == 8
    # embedding*: mean of the window vectors, then L2-normalised.
    mean = np.mean([[np.mean(w), len(w)] for w in windows], axis=0)
    np.testing.assert_allclose(out["embedding"][1], mean / np.linalg.norm(mean), rtol=1e-6)
    # Anything else: mean over windows. A short text in the same call is left exactly as the model gave it.
    assert out["width"][1, 0] == 8
    np.testing.assert_allclose(out["embedding"][0], [np.mean(framed_ids(5)), 3])


def test_truncate_keeps_only_a_long_texts_first_window(files):
    # The classifier's inputs are a step then its context: only the head is judged, never a window of context.
    out = encoder(files, max_length=8, window_stride=4, truncate=True).run([words(*range(20)), words(5)])
    np.testing.assert_allclose(out["embedding"][0], [np.mean(framed_ids(*range(6))), 8])
    np.testing.assert_allclose(out["embedding"][1], [np.mean(framed_ids(5)), 3])


def test_empty_input_gives_empty_arrays_of_the_right_shape(files):
    out = encoder(files).run([])
    assert {k: v.shape for k, v in out.items()} == {"probs": (0, 1), "embedding": (0, 2), "width": (0, 1)}


def test_concurrent_runs_on_a_shared_session_give_the_same_answers(files):
    # Large batches keep the tokenizer busy long enough for threads to overlap: a `tokenizers.Tokenizer`
    # used from two threads at once fails with "Already borrowed" unless the encoder serialises it.
    enc = encoder(files, max_length=16)
    texts = [words(*range(n % 40 + 1)) for n in range(3000)]
    expected = enc.run(texts)["probs"]
    results: list[np.ndarray] = []

    def work() -> None:
        results.append(enc.run(texts)["probs"])

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6 and all(np.array_equal(r, expected) for r in results)


# --- loading ---


def test_nothing_loads_until_first_use_and_encoders_share_a_session(tmp_path, files):
    lazy = OnnxEncoder(tmp_path / "absent.onnx", tmp_path / "absent.json")  # no error yet
    assert lazy.name == "absent"
    first, second = encoder(files), encoder(files)
    first.warmup()
    second.warmup()
    assert first._load().session is second._load().session


def test_version_follows_the_content_of_the_model_and_the_tokenizer(tmp_path, files):
    import shutil

    version = encoder(files).version
    assert len(version) == 12 and int(version, 16) >= 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    model, tokenizer = (Path(shutil.copy(f, elsewhere / f.name)) for f in files)
    assert encoder((model, tokenizer)).version == version  # where the files lie does not matter
    with open(tokenizer, "a") as f:
        f.write(" ")  # a tokenizer edit (whitespace: the same JSON) changes the version as surely as new weights
    assert encoder((model, tokenizer)).version != version


@pytest.mark.parametrize("which", ["model", "tokenizer"])
def test_a_missing_file_is_a_model_load_error_naming_it(tmp_path, files, which):
    model, tokenizer = files
    missing = tmp_path / "gone"
    enc = encoder((missing, tokenizer) if which == "model" else (model, missing))
    with pytest.raises(ModelLoadError, match="gone") as info:
        enc.run(["w1"])
    assert info.value.path == str(missing)


@pytest.mark.parametrize("which", ["model", "tokenizer"])
def test_a_corrupt_file_is_a_model_load_error_naming_it(tmp_path, files, which):
    model, tokenizer = files
    corrupt = tmp_path / f"corrupt-{which}"
    corrupt.write_bytes(b"\x00garbage\xff" * 10)
    enc = encoder((corrupt, tokenizer) if which == "model" else (model, corrupt))
    with pytest.raises(ModelLoadError) as info:
        enc.run(["w1"])
    assert info.value.path == str(corrupt)


def test_a_model_without_the_expected_inputs_is_refused(tmp_path, files):
    odd = build_model(tmp_path / "odd.onnx", input_names=("ids", "mask"))
    with pytest.raises(ModelLoadError, match="lacks inputs"):
        encoder((odd, files[1])).run(["w1"])


def test_missing_derived_external_data_says_how_to_rebuild_it(files):
    model, _ = files
    manifest = model.with_name(model.name + ".derive.json")
    manifest.write_text(json.dumps({"data_file": "tiny.external.bin"}))
    with pytest.raises(ModelLoadError, match=r"onnx_export\.py derive") as info:
        encoder(files).run(["w1"])
    assert info.value.path.endswith("tiny.external.bin")


@pytest.mark.parametrize(
    "options",
    [
        {"max_length": 2, "window_stride": 1},
        {"max_length": 8, "window_stride": 7},  # windows would skip a token
        {"max_length": 64},  # the default stride of 96 leaves gaps with 62-token windows
        {"window_stride": 0},
        {"max_tokens_per_batch": 64},
    ],
)
def test_inconsistent_options_are_rejected_at_construction(files, options):
    with pytest.raises(ValueError):
        OnnxEncoder(*files, **options)


def test_length_batches_honour_a_row_limit():
    # int8 models run one row per call (see OnnxEncoder's max_batch_rows)
    assert [b.tolist() for b in length_batches([3, 1, 2], 1000, 1)] == [[1], [2], [0]]
    assert [len(b) for b in length_batches([4] * 5, 1000, 2)] == [2, 2, 1]
