"""Think tags split across chunks anywhere give the same reasoning and answer as the whole text."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safepath.chat.think import ThinkSplitter, split_think

CONTENT = "<think>First I check the units.\nThen I add them.</think>\n\nThe total is 12 km."


def run(pieces, *, inside=False):
    splitter = ThinkSplitter(inside=inside)
    out = []
    for piece in pieces:
        out += splitter.feed(piece)
    out += splitter.flush()
    reasoning = "".join(t for k, t in out if k == "reasoning")
    answer = "".join(t for k, t in out if k == "answer")
    tags = [t for k, t in out if k in ("open", "close")]
    return reasoning, answer, tags


@given(st.lists(st.integers(min_value=0, max_value=len(CONTENT)), max_size=12))
def test_any_cut_gives_the_same_split(points):
    bounds = sorted({0, len(CONTENT), *points})
    pieces = [CONTENT[a:b] for a, b in pairwise(bounds)]
    assert run(pieces) == ("First I check the units.\nThen I add them.", "\n\nThe total is 12 km.",
                           ["<think>", "</think>"])


@pytest.mark.parametrize("text, reasoning, answer", [
    ("no tags at all", None, "no tags at all"),
    ("<thinking> is not our tag", None, "<thinking> is not our tag"),
    ("a < b and <th", None, "a < b and <th"),  # a held partial tag is text after all at the end
    ("<think>unclosed reasoning", "unclosed reasoning", ""),
    ("<think>a</think>b<think>c</think>d", "ac", "bd"),
])
def test_whole_messages(text, reasoning, answer):
    assert split_think(text) == (reasoning, answer)


def test_templates_that_open_the_block_in_the_prompt():
    assert split_think("reasoning first</think>answer", inside=True) == ("reasoning first", "answer")
    assert run(["reason", "ing</thi", "nk>ans", "wer"], inside=True)[:2] == ("reasoning", "answer")
