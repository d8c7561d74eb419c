"""What the learned stages read: a step with the steps before it, identifiers masked, disguises undone.

Training (models/train_safety.py, models/train_gate.py) and serving build their inputs with these functions, so the
model never sees a text shaped differently from the ones it learned on.

- **Context.** A step's intent often shows only beside what came before it ("Do what it says." after a step that
  quotes an injected instruction; "Sure, I'll lay it out." after the request). The classifier reads the step, then
  the steps before it, nearest first, then the trace's first step (usually the task), all within a character
  budget, separated by ` [SEP] `. The step comes first so that cutting the input to the model's length (training
  and serving both cut, never window) loses context, not the step. A step longer than the model reads whole is
  read in overlapping pieces (`step_pieces`), each followed by the same context.
- **Identifiers.** Hashes, UUIDs, hex digests and long key-like tokens carry no intent, yet a model trained on
  text where they co-occur with one label learns them as a signal. They are replaced by one neutral token before any
  model sees the text, so no identifier can move a score.
- **Disguises.** The rules scan folded and decoded views of the whole trace (safepath/text/normalize.py); the models
  need the same. A step that says "ZGlzYWJsZSB0aGUgYXVkaXQgbG9n; doing that now" reads as noise to a transformer
  until the base64 is decoded in place. `readable(text, vocabulary)` returns the step with every disguise it can
  undo undone, or None when there is nothing to undo (the common case: a few regex scans, no model pass):

  - base64 and hex runs are decoded where they stand, and the result is decoded again, up to `MAX_DEPTH` layers
    (base64 of rot13, base64 twice);
  - runs of two or more words that are gibberish as written but words when rot13-shifted or reversed are replaced by
    the shifted or reversed form;
  - homoglyphs (capital Cyrillic too), invisible characters, leetspeak and spaced-out letters are folded, when the
    fold turns more tokens into known words; fullwidth letters and marks stacked on every letter are folded always;
  - a line that reads as words only reversed (or rot13-shifted) is turned whole, so its words keep their order.

  "Known word" means a whole-word entry of the classifier's WordPiece vocabulary, so a genuine Russian sentence (whose
  Cyrillic letters would fold into Latin gibberish) or a hex dump of benign bytes yields nothing to judge twice. The
  rewrite is one text per step: the model scores both and keeps the higher, and a detection from the rewrite still
  points at the step's span in the original content.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safepath.runtime.onnx import window_starts
from safepath.text.decoding import MAX_LAYERS, base64_runs, decode_base64, decode_hex, hex_runs, rot13
from safepath.text.normalize import normalize

ID_TOKEN = "<id>"
SEPARATOR = " [SEP] "
# Budgets keep the input about 1.4x the tokens of "step [SEP] previous step" (measured on development traces: 64
# against 46 tokens a step on average), so a step costs the model little more than it used to.
CONTEXT_CHARS = 120  # the preceding steps' share of the input; about 25 tokens of English
STEP_CONTEXT_CHARS = 120  # at most this much of any one preceding step: its end, nearest the step judged
FIRST_STEP_CHARS = 80  # the start of the task, when it is not already among the nearest steps
STEP_TOKENS = 126  # the model's 128 tokens less [CLS] and [SEP]: a step up to this long is read whole
PIECE_TOKENS = 100  # a longer step is read in pieces this long, leaving room for some context,
PIECE_STRIDE = 75  # this far apart (a phrase cut by one piece's edge is whole in the next)
TRACE_WINDOW_TOKENS = 254  # the trace pass's windows: its model's 256 tokens less [CLS] and [SEP]

_IDENTIFIER = re.compile(
    r"""
    (?<![\w-])(?:
        [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}             # UUID
      | (?:0x)?(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{7,}                   # hex: commit, digest, address
      | (?=[a-z0-9+/-]*[0-9][a-z0-9+/-]*[0-9])(?=[a-z0-9+/-]*[a-z])[a-z0-9+/-]{20,}={0,2}  # key, token, blob
    )(?![\w-])
    """,
    re.I | re.X,
)


# The tokenizer reads these strings as its special tokens wherever they appear; a step that wrote "[SEP]" would end
# the judged step's pooled span early (the model pools up to the first [SEP]). Brackets become parentheses.
_SPECIAL_TOKEN = re.compile(r"\[(SEP|CLS|PAD|MASK|UNK)\]", re.I)


def mask_identifiers(text: str) -> str:
    """`text` with every identifier-like token replaced by `<id>`, and written special tokens defused."""
    return _SPECIAL_TOKEN.sub(r"(\1)", _IDENTIFIER.sub(ID_TOKEN, text))


def step_with_context(steps: Sequence[str], index: int) -> str:
    """The classifier's input for `steps[index]`: the step, then the ends of the preceding steps nearest first, then
    the start of the first step.

    Args:
        steps: the trace's step texts, in order (already masked or decoded as the caller wants).
        index: which step to judge.
    """
    parts = [steps[index]]
    budget = CONTEXT_CHARS
    j = index - 1
    while j >= 0 and budget > 0:
        piece = steps[j][-min(STEP_CONTEXT_CHARS, budget) :]
        parts.append(piece)
        budget -= len(piece)
        j -= 1
    if j >= 0:  # the first step is not among those already taken
        parts.append(steps[0][:FIRST_STEP_CHARS])
    return SEPARATOR.join(parts)


def trace_windows(steps: Sequence[str], counts: Sequence[int],
                  budget: int = TRACE_WINDOW_TOKENS) -> list[tuple[str, list[int]]]:
    """What the trace pass reads: runs of consecutive whole steps of about `budget` tokens, one per line, each
    window after the first opened by the task's first words (a plan reads differently once the task is known).

    Whole steps keep a window's labels clean in training: they are the union of its steps'. A step longer than the
    budget fills a window alone, cut by the model's length (the step model reads it in pieces anyway).

    Args:
        steps: the steps as the model reads them (`step_views`' readable view, identifiers masked).
        counts: each step's number of tokens, without special tokens.

    Returns:
        (window text, indexes of its steps) per window, in order.
    """
    groups: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i, n in enumerate(counts):
        if current and used + n > budget:
            groups.append(current)
            current, used = [], 0
        current.append(i)
        used += n + 1  # the line break between steps is about a token
    if current:
        groups.append(current)
    opening = steps[0][:FIRST_STEP_CHARS] if steps else ""
    windows = []
    for group in groups:
        body = "\n".join(steps[i] for i in group)
        windows.append((body if group[0] == 0 else f"{opening} …\n{body}", group))
    return windows


# --- Disguises -------------------------------------------------------------------------------


MAX_DEPTH = MAX_LAYERS  # decoding layers: base64(rot13(x)) and base64(base64(x)) need two
MAX_DECODED_CHARS = 2048
_WORD = re.compile(r"[^\W\d_]+")  # letters only
_ASCII_WORD = re.compile(r"[A-Za-z]+")
_GAP = re.compile(r"[^A-Za-z\n]{1,3}")  # between two words of one run


def known_letters(texts: Sequence[str], vocabulary: frozenset[str]) -> tuple[int, int]:
    """How many letters of `texts` stand in words of `vocabulary`, and how many were counted (words of three or more
    letters, and every word outside ASCII; shorter ASCII words are too often abbreviations or code to tell). A model
    that learned from English knows about 0.9 of an English trace's letters (1% of the corpus's English traces under
    0.65) and well under half of another language's (a Spanish trace 0.17, Russian or Japanese near 0)."""
    words = [w for text in texts for w in _WORD.findall(text) if len(w) >= 3 or not w.isascii()]
    return sum(len(w) for w in words if w.lower() in vocabulary), sum(map(len, words))


def step_pieces(text: str, tokenizer: Any | None) -> list[str]:
    """`text` as the pieces the classifier judges: whole when it fits the model with room for nothing else (as every
    step was read in training), else overlapping pieces cut at token boundaries, so no part of a long step goes
    unread and none is judged as context. `tokenizer`: a `tokenizers.Tokenizer` (None: always whole)."""
    if tokenizer is None:
        return [text]
    offsets = tokenizer.encode(text, add_special_tokens=False).offsets
    if len(offsets) <= STEP_TOKENS:
        return [text]
    return [text[offsets[s][0] : offsets[s + PIECE_TOKENS - 1][1]]
            for s in window_starts(len(offsets), PIECE_TOKENS, PIECE_STRIDE)]


def load_vocabulary(path: str | Path) -> frozenset[str]:
    """Whole-word entries (letters only, three or more) of a Hugging Face WordPiece `tokenizer.json`, or the words
    of a `words.txt` (one a line; see `vocabulary_file`)."""
    path = Path(path)
    if path.suffix == ".txt":
        vocab = path.read_text(encoding="utf-8").split()
    else:
        vocab = json.loads(path.read_text(encoding="utf-8"))["model"]["vocab"]
    return frozenset(w for w in vocab if len(w) >= 3 and w.isascii() and w.isalpha())


def vocabulary_file(model_dir: str | Path) -> Path:
    """Where a model folder's de-obfuscation words are: `words.txt` where the encoder's own vocabulary is not
    WordPiece (a SentencePiece one holds fragments and other languages' words: the filter's decoding keeps the
    English words it was built on, whatever the encoder), else its `tokenizer.json`."""
    words = Path(model_dir) / "words.txt"
    return words if words.exists() else Path(model_dir) / "tokenizer.json"


def readable(text: str, vocabulary: frozenset[str]) -> str | None:
    """`text` with base64/hex decoded, rot13 and reversed runs turned round and homoglyphs folded, identifiers
    masked as the models expect (`mask_identifiers`); None when there was nothing to undo."""
    current = text
    for _ in range(MAX_DEPTH):  # peel layers first: masking would hide a base64 layer inside another
        undone = _turn_runs(_decode_runs(current), vocabulary)
        if undone == current:
            break
        current = undone
    # Identifiers are masked before the fold, so leetspeak folding never turns a hash into near-words.
    masked = mask_identifiers(text)
    result = _fold(mask_identifiers(current), vocabulary)
    return None if result == masked else result


def _known(word: str, vocabulary: frozenset[str]) -> bool:
    return len(word) >= 3 and word.lower() in vocabulary


def _score(text: str, vocabulary: frozenset[str]) -> int:
    """How much of the text reads as English words: known words of three letters or more count +1, unknown ones
    -1, and so do single letters other than a and i (spaced-out letters are the disguise they most often are)."""
    score = 0
    for w in _WORD.findall(text):
        if len(w) >= 3:
            score += 1 if _known(w, vocabulary) else -1
        elif len(w) == 1 and w not in "aiAI":
            score -= 1
    return score


def _decode_runs(text: str) -> str:
    """base64 and hex runs replaced by their text where they decode to readable UTF-8."""
    raw = text.encode("ascii", "replace")
    pieces: list[tuple[int, int, str]] = []
    for runs, decode in ((base64_runs, decode_base64), (hex_runs, decode_hex)):
        for m in runs(text, raw):
            if any(s < m.end() and m.start() < e for s, e, _ in pieces):
                continue
            decoded = decode(m.group(), MAX_DECODED_CHARS)
            if decoded and decoded.strip():
                pieces.append((m.start(), m.end(), decoded))
    for start, end, decoded in sorted(pieces, reverse=True):
        text = text[:start] + decoded + text[end:]
    return text


def _turn_runs(text: str, vocabulary: frozenset[str]) -> str:
    """Lines that read better turned round (rot13 or reversed) turned whole; then, in the rest, runs of two or more
    unknown words on one line replaced by their rot13 or reversed form where that reads. A whole reversed line turned
    run by run came out in jumbled order (short words like "a" and "ot" split the runs), and read as noise."""
    text = "\n".join(_turn_line(line, vocabulary) for line in text.split("\n"))
    words = list(_ASCII_WORD.finditer(text))
    pieces, pos, i = [], 0, 0
    while i < len(words):
        j = i
        while j < len(words) and not _known(words[j].group(), vocabulary) and (
            j == i or _GAP.fullmatch(text, words[j - 1].end(), words[j].start())
        ):
            j += 1
        if j - i >= 2:
            start, end = words[i].start(), words[j - 1].end()
            turned = _turned(text[start:end], vocabulary)
            if turned is not None:
                pieces += (text[pos:start], turned)
                pos = end
        i = max(j, i + 1)
    return "".join(pieces) + text[pos:] if pieces else text


def _turn_line(line: str, vocabulary: frozenset[str]) -> str:
    turned = _turned(line, vocabulary)
    return turned if turned is not None and _score(turned, vocabulary) > _score(line, vocabulary) else line


def _turned(run: str, vocabulary: frozenset[str]) -> str | None:
    """The rot13 or reversed form of a run, when at least two of its words and 70% of them are then known."""
    for form in (rot13(run), run[::-1]):
        long_words = [w for w in _WORD.findall(form) if len(w) >= 3]
        known = sum(_known(w, vocabulary) for w in long_words)
        if known >= 2 and known * 10 >= 7 * len(long_words):
            return form
    return None


def _fold(text: str, vocabulary: frozenset[str]) -> str:
    """The normalised view (homoglyphs, invisibles, leetspeak, spaced letters) when it reads better.

    The baseline is the text as the uncased model already reads it (lower case, accents stripped: its tokenizer's
    NFD, not NFKD), so accented Spanish or French gains nothing from folding and costs no second pass, while
    fullwidth or other compatibility letters, which the tokenizer does not fold, are rewritten."""
    folded = normalize(text).text
    if _marked(text) or _compatibility_letters(text) >= 3:
        return folded
    plain = "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c)).lower()
    if folded == plain:
        return text
    return folded if _score(folded, vocabulary) > _score(plain, vocabulary) else text


def _compatibility_letters(text: str) -> int:
    """Letters only NFKC turns into others (fullwidth ｄｉｓａｂｌｅ, ligatures, mathematical letters): the tokenizer
    reads them as unknown, whatever the vocabulary says about the word they spell."""
    return sum(1 for c in text if c.isalpha() and not c.isascii() and unicodedata.normalize("NFKC", c) != c)


def _marked(text: str) -> bool:
    """Combining marks on at least half the letters: a disguise, not a language (text arrives composed, NFC, and
    even Vietnamese composes). The transformer reads through the marks, but the lexical model and the gate read
    the marked words as unknown ones, so such a step gets its plain rewrite."""
    marks = sum(1 for c in text if unicodedata.combining(c))
    return marks > 0 and 2 * marks >= sum(1 for c in text if c.isalpha())


# --- Per trace --------------------------------------------------------------------------------


def step_views(steps: Sequence[str], vocabulary: frozenset[str] | None, *, context: bool) -> list[tuple[str, ...]]:
    """What a model reads for each step: the masked step, then its readable rewrite when it has one.

    Args:
        steps: a trace's step texts, in order.
        vocabulary: known words for `readable`; None skips the rewrite (no disguise is undone).
        context: prefix each view to its preceding steps (`step_with_context`), as the classifier reads it; the
            semantic stage matches the step alone.
    """
    masked = [mask_identifiers(s) for s in steps]
    views: list[tuple[str, ...]] = []
    for i, text in enumerate(steps):
        rewrite = readable(text, vocabulary) if vocabulary else None
        own = (masked[i],) if rewrite is None else (masked[i], rewrite)
        if context:
            own = tuple(step_with_context([*masked[:i], v], i) for v in own)
        views.append(own)
    return views
