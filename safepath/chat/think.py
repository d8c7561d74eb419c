"""Split `<think>…</think>` blocks out of streamed answer text (servers that inline the reasoning in `content`).

llama.cpp, SGLang and vLLM without a reasoning parser send the model's raw output, reasoning inside think tags,
as `content`. Deltas are cut wherever the tokenizer cut, so a tag may arrive in pieces ("<th", "ink>"): the
splitter holds back a possible tag prefix at the end of a chunk until the next chunk settles it.
"""

from __future__ import annotations

from typing import Literal

OPEN, CLOSE = "<think>", "</think>"
Kind = Literal["reasoning", "answer", "open", "close"]


class ThinkSplitter:
    """Incremental splitter of text into reasoning (inside think tags) and answer (outside) pieces.

    Args:
        inside: Start inside a think block (chat templates that put `<think>` in the prompt, so the model's output
            starts with reasoning and only the closing tag appears).
    """

    def __init__(self, *, inside: bool = False) -> None:
        self.inside = inside
        self.seen_tag = inside
        self._held = ""

    def feed(self, text: str) -> list[tuple[Kind, str]]:
        """Pieces of `text` in order: ("reasoning" | "answer", text) and ("open" | "close", tag)."""
        text = self._held + text
        self._held = ""
        out: list[tuple[Kind, str]] = []
        while text:
            tag = CLOSE if self.inside else OPEN
            at = text.find(tag)
            if at < 0:
                keep = _partial_suffix(text, tag)
                body, self._held = text[: len(text) - keep], text[len(text) - keep :]
                if body:
                    out.append(self._piece(body))
                break
            if at:
                out.append(self._piece(text[:at]))
            out.append(("close" if self.inside else "open", tag))
            self.inside = not self.inside
            self.seen_tag = True
            text = text[at + len(tag) :]
        return out

    def flush(self) -> list[tuple[Kind, str]]:
        """End of text: a held partial tag was ordinary text after all."""
        held, self._held = self._held, ""
        return [self._piece(held)] if held else []

    def _piece(self, text: str) -> tuple[Kind, str]:
        return ("reasoning" if self.inside else "answer", text)


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


def split_think(content: str, *, inside: bool = False) -> tuple[str | None, str]:
    """A whole message's (reasoning, answer): the think blocks' text joined, and the text outside them.

    Returns None as the reasoning when the content has no think block.
    """
    splitter = ThinkSplitter(inside=inside)
    reasoning, answer = [], []
    for kind, text in splitter.feed(content) + splitter.flush():
        if kind == "reasoning":
            reasoning.append(text)
        elif kind == "answer":
            answer.append(text)
    return ("".join(reasoning) if splitter.seen_tag else None), "".join(answer)
