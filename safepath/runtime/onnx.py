"""Serve a transformer encoder exported to ONNX: tokenise, window, bucket by length, run, aggregate per text.

Imports numpy only; onnxruntime and tokenizers load on first use, so importing this module costs nothing
noticeable. One ONNX Runtime session per (model file, providers, threads, arena) per process: two detectors
that name the same file share it (sessions are thread-safe for `run`).

Long texts: a text of more than `max_length` tokens (counting [CLS] and [SEP]) is cut to its head (`truncate`), or
into overlapping windows of `max_length - 2` body tokens, `window_stride` apart, the last window aligned to the
text's end; each window gets its own [CLS]/[SEP]. The rows of one text then merge per output, by the output's name:

- `embedding*`: mean of the window vectors, then L2 normalisation (the text's centroid direction);
- `probs*` and `scores*`: element-wise max (a harmful sentence anywhere in the text counts);
- anything else: element-wise mean.

Every model output must be per row (first axis = batch); token-level outputs are not supported.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from safepath.errors import ModelLoadError
from safepath.fingerprint import content_version

logger = logging.getLogger(__name__)
_SESSIONS: dict[tuple[Any, ...], Any] = {}
_SESSIONS_LOCK = threading.Lock()
_REQUIRED_INPUTS = ("input_ids", "attention_mask")
_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64}
# Texts per call a model stage hands an encoder by default (`call_rows`): between calls it drops the rows of requests
# nobody waits for any more, so on CPU a cancelled request stops costing within ~0.3 s of one core.
CALL_ROWS = 16


def default_providers() -> list[str]:
    """CUDA when this onnxruntime build offers it, else CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxEncoder:
    """An ONNX transformer encoder and its tokenizer: lazy load, one session per (path, provider) per process.

    Args:
        model_path: the `.onnx` file; inputs `input_ids` and `attention_mask` (int64), per-row outputs.
        tokenizer_path: a Hugging Face `tokenizer.json`.
        providers: ONNX Runtime execution providers; default CUDA if available, else CPU.
        intra_op_threads: threads per run; None lets ONNX Runtime choose (all cores).
        max_length: tokens per row, [CLS] and [SEP] included; longer texts are windowed (or cut: `truncate`).
        truncate: keep only a long text's first window instead of windowing it, for inputs whose head is what is
            judged and whose tail is context (the classifier's step-then-preceding-steps): a window starting in the
            context would score the context as if it were the step.
        window_stride: body tokens between the starts of consecutive windows (at most `max_length - 2`).
        max_tokens_per_batch: bound on rows x padded length per model call; bounds activation memory.
        max_batch_rows: at most this many rows per model call (None: only the token bound applies). Dynamically
            quantized (int8) models need 1: their activation scales are computed over the whole batch, so a text's
            scores would otherwise shift with whatever else shares its call.
        enable_cpu_mem_arena: ONNX Runtime's CPU memory arena. It keeps its high-water mark for the life of the
            process, but `max_tokens_per_batch` bounds that mark: with the int8 MiniLM and 4096 tokens, a process
            stays near 260 MB (340 MB with max_length 512), against 1.1 GB after one unbounded 32x512 batch.
            Without the arena, batches ran 1.3-1.8x slower here and peak RSS was higher (malloc churn).
        call_rows: texts per `run` the model stages hand this encoder (`Encoder.call_rows`); the GPU wants more.
        name: for error messages and logs.
    """

    def __init__(
        self,
        model_path: str | Path,
        tokenizer_path: str | Path,
        *,
        providers: Sequence[str] | None = None,
        intra_op_threads: int | None = None,
        max_length: int = 128,
        window_stride: int = 96,
        truncate: bool = False,
        max_tokens_per_batch: int = 4096,
        max_batch_rows: int | None = None,
        enable_cpu_mem_arena: bool = True,
        call_rows: int = CALL_ROWS,
        name: str = "",
    ) -> None:
        if max_length < 3:
            raise ValueError(f"max_length must leave room for a token between [CLS] and [SEP], got {max_length}")
        if not 0 < window_stride <= max_length - 2:
            raise ValueError(
                f"window_stride must be in 1..{max_length - 2} so windows cover the text, got {window_stride}"
            )
        if max_tokens_per_batch < max_length:
            raise ValueError(f"max_tokens_per_batch ({max_tokens_per_batch}) must hold one row of {max_length}")
        self.model_path = Path(model_path)
        self.tokenizer_path = Path(tokenizer_path)
        self.providers = tuple(providers) if providers is not None else None
        self.intra_op_threads = intra_op_threads
        self.max_length = max_length
        self.window_stride = window_stride
        self.truncate = truncate
        self.max_tokens_per_batch = max_tokens_per_batch
        self.max_batch_rows = max_batch_rows
        self.enable_cpu_mem_arena = enable_cpu_mem_arena
        self.call_rows = call_rows
        self.name = name or self.model_path.stem
        self._lock = threading.Lock()
        self._tokenizer_lock = threading.Lock()
        self._loaded: _Loaded | None = None
        self._version: str | None = None

    @property
    def version(self) -> str:
        """12 hex digits of a sha256 over the model and tokenizer files (read once; raises ModelLoadError if
        unreadable): a new tokenizer changes every score as surely as new weights."""
        if self._version is None:
            try:
                self._version = content_version(self.model_path, self.tokenizer_path)
            except OSError as e:
                raise ModelLoadError(Path(e.filename or self.model_path), f"cannot read: {e.strerror or e}") from e
        return self._version

    def warmup(self) -> None:
        """Load the tokenizer and session and run one short batch, so the first request pays no start-up cost."""
        self.run(["warm up"])

    def run(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Every model output for every text: `{output name: array with one row per text}`, in input order.

        Raises:
            ModelLoadError: the model or tokenizer file is missing or unreadable.
        """
        loaded = self._load()
        if not texts:
            return {o.name: np.zeros((0, *o.row_shape), o.dtype) for o in loaded.outputs}
        owners, rows = self._rows(loaded, texts)
        per_row = self._run_rows(loaded, rows)
        return {name: _aggregate(name, values, owners, len(texts)) for name, values in per_row.items()}

    def _rows(self, loaded: _Loaded, texts: Sequence[str]) -> tuple[np.ndarray, list[list[int]]]:
        """Token rows ready for the model, and for each row the index of the text it came from."""
        body = self.max_length - 2
        owners: list[int] = []
        rows: list[list[int]] = []
        # A `tokenizers.Tokenizer` refuses concurrent use ("Already borrowed"); tokenizing is ~2% of a call.
        with self._tokenizer_lock:
            encodings = loaded.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        for i, encoding in enumerate(encodings):
            ids = encoding.ids
            for start in [0] if self.truncate else window_starts(len(ids), body, self.window_stride):
                rows.append(loaded.prefix + ids[start : start + body] + loaded.suffix)
                owners.append(i)
        return np.asarray(owners, dtype=np.int64), rows

    def _run_rows(self, loaded: _Loaded, rows: list[list[int]]) -> dict[str, np.ndarray]:
        """Run rows in length-bucketed batches; results come back in row order."""
        results = {o.name: np.empty((len(rows), *o.row_shape), o.dtype) for o in loaded.outputs}
        for batch in length_batches([len(r) for r in rows], self.max_tokens_per_batch, self.max_batch_rows):
            feeds = _pad([rows[i] for i in batch], loaded.pad_id, loaded.input_names)
            values = loaded.session.run(None, feeds)
            for output, value in zip(loaded.outputs, values, strict=True):
                if value.shape[0] != len(batch):
                    raise ValueError(f"{self.model_path}: output {output.name!r} is not one row per input")
                results[output.name][batch] = value
        return results

    def _load(self) -> _Loaded:
        if self._loaded is None:
            with self._lock:
                if self._loaded is None:
                    self._loaded = _Loaded.create(self)
        return self._loaded


@dataclass(frozen=True)
class _Output:
    name: str
    row_shape: tuple[int, ...]
    dtype: Any


@dataclass(frozen=True)
class _Loaded:
    """What an encoder needs at run time, built on first use."""

    session: Any
    tokenizer: Any
    prefix: list[int]
    suffix: list[int]
    pad_id: int
    input_names: tuple[str, ...]
    outputs: tuple[_Output, ...]

    @classmethod
    def create(cls, encoder: OnnxEncoder) -> _Loaded:
        tokenizer, prefix, suffix, pad_id = _load_tokenizer(encoder.tokenizer_path)
        providers = encoder.providers if encoder.providers is not None else tuple(default_providers())
        session = _shared_session(encoder.model_path, providers, encoder.intra_op_threads, encoder.enable_cpu_mem_arena)
        input_names = tuple(i.name for i in session.get_inputs())
        missing = [name for name in _REQUIRED_INPUTS if name not in input_names]
        if missing:
            raise ModelLoadError(encoder.model_path, f"model lacks inputs {missing}; it has {list(input_names)}")
        outputs = []
        for o in session.get_outputs():
            row_shape = tuple(o.shape[1:])
            if not all(isinstance(d, int) for d in row_shape) or o.type not in _NP_TYPES:
                raise ModelLoadError(
                    encoder.model_path, f"output {o.name!r} ({o.type} {o.shape}) is not a fixed-size row"
                )
            outputs.append(_Output(o.name, row_shape, _NP_TYPES[o.type]))
        return cls(session, tokenizer, prefix, suffix, pad_id, input_names, tuple(outputs))


def load_tokenizer(path: Path) -> tuple[Any, int]:
    """A `tokenizers.Tokenizer` with padding and truncation off, and its pad id. The shipped all-MiniLM
    tokenizer.json fixes both at 128 tokens; left on, they would silently cut or pad every text.

    Raises:
        ModelLoadError: the file is missing or not a tokenizer.
    """
    from tokenizers import Tokenizer

    if not path.is_file():
        raise ModelLoadError(path, "tokenizer file not found")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
        raise ModelLoadError(path, f"not a valid tokenizer.json: {e}") from e
    padding = tokenizer.padding
    pad_id = padding["pad_id"] if padding else (tokenizer.token_to_id("[PAD]") or 0)
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer, pad_id


def _load_tokenizer(path: Path) -> tuple[Any, list[int], list[int], int]:
    """The tokenizer (`load_tokenizer`: we window and pad ourselves), its special-token frame, pad id."""
    tokenizer, pad_id = load_tokenizer(path)
    # The special tokens framing one sequence ([CLS] ... [SEP] for BERT), found from a probe rather than hard-coded.
    body = tokenizer.encode("a", add_special_tokens=False).ids
    framed = tokenizer.encode("a", add_special_tokens=True).ids
    for i in range(len(framed) - len(body) + 1):
        if framed[i : i + len(body)] == body:
            return tokenizer, framed[:i], framed[i + len(body) :], pad_id
    raise ModelLoadError(path, "cannot locate the text between the tokenizer's special tokens")


def _shared_session(path: Path, providers: tuple[str, ...], threads: int | None, arena: bool) -> Any:
    key = (str(path.resolve()), providers, threads, arena)
    # One lock for all: loading two models at once would only compete for the same cores.
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(key)
        if session is None:
            session = _SESSIONS[key] = _create_session(path, providers, threads, arena)
    return session


def _create_session(path: Path, providers: tuple[str, ...], threads: int | None, arena: bool) -> Any:
    import onnxruntime as ort

    if not path.is_file():
        raise ModelLoadError(path, "model file not found")
    _check_derived_data(path)
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = arena
    options.log_severity_level = 3  # errors only; ORT logs warnings to stderr, not through logging
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
    except Exception as e:  # ORT raises pybind11 classes (InvalidProtobuf, Fail, ...) with no common base but Exception
        raise ModelLoadError(path, f"cannot load model: {e}") from e
    if providers and providers[0] not in session.get_providers():
        # ORT falls back to the next provider (e.g. CUDA libraries missing) and, at our log level, says nothing.
        logger.warning("%s: %s unavailable, running on %s", path.name, providers[0], session.get_providers())
    return session


def _check_derived_data(path: Path) -> None:
    # A model committed without its frozen embedding matrix names a manifest; say how to rebuild the data.
    manifest = path.with_name(path.name + ".derive.json")
    if not manifest.is_file():
        return
    import json

    data_file = path.parent / json.loads(manifest.read_text())["data_file"]
    if not data_file.is_file():
        raise ModelLoadError(data_file, f"missing; rebuild it with `python models/onnx_export.py derive {path}`")


def window_starts(n_tokens: int, body: int, stride: int) -> list[int]:
    """Start offsets of the windows over `n_tokens` body tokens: every `stride`, the last one flush with the end."""
    if n_tokens <= body:
        return [0]
    return [*range(0, n_tokens - body, stride), n_tokens - body]


def length_batches(lengths: Sequence[int], max_tokens: int, max_rows: int | None = None) -> list[np.ndarray]:
    """Group row indices so that each group's rows x longest row stays within `max_tokens` (one row always fits)
    and, when given, holds at most `max_rows` rows.

    Rows are taken shortest first, so each batch holds rows of similar length and padding stays small.
    """
    order = np.argsort(np.asarray(lengths), kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    for end in range(1, len(order) + 1):
        # Sorted ascending: the row at `end - 1` is the longest of order[start:end].
        rows = end - start
        if rows > 1 and (rows * lengths[order[end - 1]] > max_tokens or (max_rows is not None and rows > max_rows)):
            batches.append(order[start : end - 1])
            start = end - 1
    if len(order):
        batches.append(order[start:])
    return batches


def _pad(rows: list[list[int]], pad_id: int, input_names: tuple[str, ...]) -> dict[str, np.ndarray]:
    longest = max(len(r) for r in rows)
    input_ids = np.full((len(rows), longest), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(rows), longest), dtype=np.int64)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = row
        attention_mask[i, : len(row)] = 1
    feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
    if "token_type_ids" in input_names:
        feeds["token_type_ids"] = np.zeros_like(input_ids)
    return feeds


def _aggregate(name: str, values: np.ndarray, owners: np.ndarray, n_texts: int) -> np.ndarray:
    """Merge window rows into one row per text (see the module docstring for the rule)."""
    if len(owners) == n_texts:  # no text was windowed: rows are texts, in order
        return values
    if name.startswith(("probs", "scores")):
        out = np.full((n_texts, *values.shape[1:]), -np.inf, dtype=values.dtype)
        np.maximum.at(out, owners, values)
        return out
    sums = np.zeros((n_texts, *values.shape[1:]), dtype=np.float64)
    np.add.at(sums, owners, values)
    counts = np.bincount(owners, minlength=n_texts).reshape(-1, *([1] * (values.ndim - 1)))
    out = sums / counts
    if name.startswith("embedding"):
        windowed = counts.reshape(-1) > 1
        norms = np.linalg.norm(out[windowed], axis=-1, keepdims=True)
        out[windowed] = out[windowed] / np.maximum(norms, 1e-12)
        out[~windowed] = values[np.searchsorted(owners, np.flatnonzero(~windowed))]
    return out.astype(values.dtype)
