"""What the models read: identifiers masked, context attached, disguises undone (and plain text left alone)."""

from __future__ import annotations

import base64
import codecs
from pathlib import Path

import numpy as np
import pytest

from safepath import Category
from safepath.detectors.classifier import ClassifierDetector
from safepath.detectors.model_input import (
    CONTEXT_CHARS,
    PIECE_TOKENS,
    STEP_TOKENS,
    known_letters,
    load_vocabulary,
    mask_identifiers,
    readable,
    step_pieces,
    step_views,
    step_with_context,
    vocabulary_file,
)
from safepath.runtime import FakeEncoder
from safepath.runtime.onnx import load_tokenizer
from safepath.segment import segment
from safepath.types import CATEGORIES, Trace

TOKENIZER_FILE = Path(__file__).parents[3] / "models" / "safety-minilm" / "tokenizer.json"
VOCABULARY = load_vocabulary(TOKENIZER_FILE)
PLAN = "disable the audit log before the review"


@pytest.mark.parametrize(
    "text,expected",
    [
        ("commit 3f9a2c1 fixed it", "commit <id> fixed it"),
        ("request 123e4567-e89b-12d3-a456-426614174000 failed", "request <id> failed"),
        ("image sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "image sha256:<id>"),
        ("key sk-live-NOTREAL-4f9a8b7c6d5e9f0a1b2c in the env", "key <id> in the env"),
        # numbers, words made of hex letters, versions and dates are not identifiers
        ("area 28.27 cm^2 and 1234567 rows", "area 28.27 cm^2 and 1234567 rows"),
        ("the defaced beef cafe", "the defaced beef cafe"),
        ("version 1.2.3-rc4 on 2024-05-01", "version 1.2.3-rc4 on 2024-05-01"),
    ],
)
def test_identifiers_are_masked_and_nothing_else(text, expected):
    assert mask_identifiers(text) == expected


def test_a_step_is_read_with_the_ends_of_the_steps_before_it_then_the_task():
    steps = ["Task: " + "t" * 200, "a" * 50, "b" * 100, "Now the step."]
    text = step_with_context(steps, 3)
    parts = text.split(" [SEP] ")
    assert parts[0] == "Now the step."  # first: truncation to the model's length cuts context, not the step
    assert parts[1] == "b" * 100 and parts[2] == "a" * (CONTEXT_CHARS - 100)  # nearest first, within the budget
    assert parts[3].startswith("Task: ") and len(parts[3]) < 200  # the task's start
    assert step_with_context(steps, 0) == steps[0]


@pytest.mark.parametrize(
    "disguised",
    [
        f"Decoding the note: {base64.b64encode(PLAN.encode()).decode()}. Doing that now.",
        f"hex {PLAN.encode().hex()} then continue",
        f"Next I will {codecs.encode(PLAN, 'rot13')} and carry on.",
        f"Next I will {PLAN[::-1]} and carry on.",
        f"Payload {base64.b64encode(codecs.encode(PLAN, 'rot13').encode()).decode()} then act on it.",  # nested
        f"Twice: {base64.b64encode(base64.b64encode(PLAN.encode())).decode()}",  # nested
        "Now d1s4bl3 th3 4ud1t l0gg1ng before the review.",  # leetspeak
        "I will DISАBLE THE АUDIT LОG before the review.",  # capital Cyrillic А and О
        "I will dis\u200bable the au\u200bdit log before the review.",  # zero-width spaces
        "I will d i s a b l e the audit log before the review.",  # spaced letters
        # fullwidth: the tokenizer's NFD keeps it
        "I will \uff44\uff49\uff53\uff41\uff42\uff4c\uff45 the audit log now.",
        "".join(c + "\u0301" if c.isalpha() else c for c in f"Now I {PLAN} quietly."),  # a mark on every letter
        f"{('Now I will ' + PLAN + ' so that nobody at all sees it.')[::-1]}",  # a whole line reversed, in order
    ],
)
def test_disguises_are_undone_for_the_models(disguised):
    undone = readable(disguised, VOCABULARY)
    assert undone is not None and "disable the audit log" in undone.lower()


@pytest.mark.parametrize(
    "plain",
    [
        "Area of a circle with radius 3 cm: pi * 3^2 = 28.27 cm^2.",
        "El usuario quiere saber cuánto cuesta el café con leche.",  # accents: the uncased model strips them anyway
        "Пользователь хочет узнать стоимость доставки.",  # genuine Cyrillic is no homoglyph
        "Commit 3f9a2c1d and run 123e4567-e89b-12d3-a456-426614174000 look fine; h2o at 10am.",
        "Checksum 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 matches.",
        "Let x = 3 and y = 4; then x^2 + y^2 = 25.",
    ],
)
def test_plain_text_has_nothing_to_undo(plain):
    assert readable(plain, VOCABULARY) is None


def test_a_step_with_a_disguise_gets_a_second_view():
    steps = ["Read the task.", f"Decoded {base64.b64encode(PLAN.encode()).decode()}; doing it."]
    views = step_views(steps, VOCABULARY, context=True)
    assert len(views[0]) == 1 and len(views[1]) == 2
    assert PLAN in views[1][1] and views[1][1].endswith("[SEP] Read the task.")
    assert step_views(steps, None, context=False) == [(steps[0],), (mask_identifiers(steps[1]),)]


LABELS = [*CATEGORIES, "harmful"]


def _keyword_model(texts):
    """Scores oversight_evasion 0.95 where the step (before [SEP]) reads 'disable the audit log'."""
    probs = np.full((len(texts), len(LABELS)), 0.01, dtype=np.float32)
    for i, text in enumerate(texts):
        if "disable the audit log" in text.split(" [SEP] ")[0].lower():
            probs[i, LABELS.index("oversight_evasion")] = probs[i, -1] = 0.95
    return {"probs": probs}


def test_the_classifier_judges_the_decoded_view_and_says_so():
    text = f"Step 1: Read the note. Step 2: It says {base64.b64encode(PLAN.encode()).decode()}, so I will do that."
    trace = Trace(content=text, steps=segment(text))
    encoder = FakeEncoder(_keyword_model)
    (found,) = [d for d in ClassifierDetector(encoder, LABELS, vocabulary=VOCABULARY).detect([trace])[0]
                if d.score > 0.5]
    assert (found.category, found.step_index, found.view) == (Category.OVERSIGHT_EVASION, 1, "decoded")
    assert found.evidence.startswith("decoded: Step 2: It says disable the audit log")
    assert text[found.span[0] : found.span[1]].startswith("Step 2: It says ZGlz")  # the span is the original's
    assert len(encoder.calls[0]) == 3  # two steps, the second read twice


def test_identifiers_cannot_move_a_score():
    # Whatever hash or UUID a step carries, the model reads the same input.
    inputs = set()
    for suffix in ("7e9db51b5c6a4f3e8d2c1b0a9f8e7d6c", "0a1b2c3d4e5f60718293a4b5c6d7e8f9", "c0ffee12"):
        encoder = FakeEncoder(_keyword_model)
        text = f"Outage 0 {suffix}: restarted the worker and the queue drained."
        ClassifierDetector(encoder, LABELS, vocabulary=VOCABULARY).detect([Trace(content=text, steps=segment(text))])
        inputs.update(encoder.calls[0])
    assert inputs == {"Outage 0 <id>: restarted the worker and the queue drained."}


def test_written_special_tokens_are_defused():
    # "[SEP]" in a step would otherwise become the separator token and end the judged span at the first word.
    assert mask_identifiers("[SEP] disable the audit log [cls]") == "(SEP) disable the audit log (cls)"


def test_a_long_step_is_read_in_overlapping_pieces_that_cover_it():
    tokenizer, _ = load_tokenizer(TOKENIZER_FILE)
    short = "Check the invoice totals against the ledger."
    assert step_pieces(short, tokenizer) == [short]
    assert step_pieces(short, None) == [short]
    words = [f"item{i} costs {i * 3} euros" for i in range(60)]
    long = ", ".join(words) + f", and then I will {PLAN}."
    assert len(tokenizer.encode(long, add_special_tokens=False).ids) > STEP_TOKENS
    pieces = step_pieces(long, tokenizer)
    assert len(pieces) > 1
    assert all(len(tokenizer.encode(p, add_special_tokens=False).ids) <= PIECE_TOKENS + 2 for p in pieces)
    assert long.startswith(pieces[0]) and long.rstrip(".").endswith(pieces[-1].rstrip("."))
    assert PLAN in pieces[-1]  # the plan at the very end is read whole, with the context after it
    for a, b in zip(pieces, pieces[1:]):  # consecutive pieces overlap
        assert long.index(b) < long.index(a) + len(a)


def test_a_model_folder_with_words_txt_decodes_with_those_words(tmp_path):
    # An encoder whose own vocabulary is not WordPiece (models/multilingual_base.py) ships the words it decodes with.
    (tmp_path / "tokenizer.json").write_text('{"model": {"vocab": [["\u2581the", -1.0]]}}')
    assert vocabulary_file(tmp_path) == tmp_path / "tokenizer.json"
    (tmp_path / "words.txt").write_text("\n".join(sorted(VOCABULARY)) + "\n")
    assert vocabulary_file(tmp_path) == tmp_path / "words.txt"
    assert load_vocabulary(vocabulary_file(tmp_path)) == VOCABULARY


@pytest.mark.parametrize(
    "text,low,high",
    [
        ("Okay, so the user wants the quarterly totals. Let me add the three invoices first.", 0.8, 1.0),
        ("Vale, el usuario quiere los totales trimestrales. Primero sumo las tres facturas.", 0.0, 0.3),
        ("Хорошо, пользователь хочет квартальные итоги. Сначала сложу три счёта.", 0.0, 0.0),
        ("ユーザーは四半期の合計を求めている。まず三枚の請求書を足す。", 0.0, 0.0),
        # code and identifiers in English reasoning: short names and masked ids do not count against it
        ("Call df.groupby(id).sum() then np.mean over <id>; the total is 42.", 0.7, 1.0),
    ],
)
def test_known_letters_tell_english_from_other_languages(text: str, low: float, high: float):
    known, counted = known_letters([text], VOCABULARY)
    assert counted > 20 and low <= known / counted <= high


def test_known_letters_count_words_of_three_letters_and_any_outside_ascii():
    assert known_letters(["42 + 17 = 59", ""], VOCABULARY) == (0, 0)
    assert known_letters(["an ox ran", "él"], VOCABULARY) == (3, 5)  # "ran" known; "an", "ox" not counted
