"""A LangChain callback handler that judges a chat model's reasoning step by step as it streams.

    handler = SafePathCallbackHandler(SafePathFilter(), on_step=lambda step: ui.show(step.output))
    model.invoke(messages, config={"callbacks": [handler]})          # or .stream(...)
    handler.reasoning()                                              # the filtered reasoning of the last run

Reasoning is read where LangChain chat models put it: `additional_kwargs["reasoning_content"]` or
`["reasoning"]` (DeepSeek, Ollama, OpenAI-compatible servers), `reasoning` / `thinking` content blocks
(LangChain's standard blocks, Anthropic), and `<think>` blocks in the text. A callback observes a run; it cannot
change what the model returns to its caller. So show users the handler's output (`on_step`, `reasoning()`), not
the raw message, and pass `on_block="raise"` to stop the run at a blocking step (the handler sets `raise_error`,
so LangChain lets the exception through). Needs the `langchain` extra.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult

from safepath.chat.think import ThinkSplitter
from safepath.errors import ReasoningBlocked
from safepath.filter import SafePathFilter
from safepath.streaming import ReleasedStep, StreamSession
from safepath.types import Verdict

REASONING_KWARGS = ("reasoning_content", "reasoning")
REASONING_BLOCKS = {"reasoning": "reasoning", "thinking": "thinking"}  # block type -> key of its text


class SafePathCallbackHandler(BaseCallbackHandler):
    """Judges each run's reasoning as it streams; filtered steps go to `on_step` and `reasoning()`.

    Args:
        safepath_filter: The filter; `SafePathFilter()` (the shipped profiles and models) when None.
        profile: Safety profile; the filter's default when None.
        context: Context for contextual rules.
        on_step: Called with every released step, in order, as soon as it is judged.
        on_block: `marker`: the block marker ends the run's reasoning; `raise`: ReasoningBlocked stops the run.
    """

    raise_error = True  # a block under on_block="raise" must stop the run, not be logged and ignored

    def __init__(
        self,
        safepath_filter: SafePathFilter | None = None,
        *,
        profile: str | None = None,
        context: dict[str, str] | None = None,
        on_step: Callable[[ReleasedStep], None] | None = None,
        on_block: Literal["marker", "raise"] = "marker",
    ) -> None:
        self._filter = safepath_filter or SafePathFilter()
        self._filter.profiles.get(profile)  # a bad profile name fails here, not mid-run
        self._profile = profile
        self._context = context
        self._on_step = on_step
        self._on_block = on_block
        self._sessions: dict[UUID, StreamSession] = {}
        self._splitters: dict[UUID, ThinkSplitter] = {}
        self._streamed: set[UUID] = set()
        self._last: UUID | None = None

    def on_chat_model_start(self, serialized: dict[str, Any], messages: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._start(run_id)

    def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID, **kwargs: Any) -> None:
        self._start(run_id)

    def on_llm_new_token(self, token: Any, *, chunk: Any = None, run_id: UUID, **kwargs: Any) -> None:
        session = self._sessions.get(run_id) or self._start(run_id)
        self._streamed.add(run_id)
        message = getattr(chunk, "message", None)
        text = token if isinstance(token, str) and message is None else _text_of(message)
        for piece in _reasoning_of(message) + self._think(run_id, text):
            self._released(session.feed(piece))

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        session = self._sessions.get(run_id) or self._start(run_id)
        if run_id not in self._streamed:  # invoked without streaming: the whole message is here
            for generations in response.generations[:1]:
                for generation in generations[:1]:
                    message = getattr(generation, "message", None)
                    text = generation.text if message is None else _text_of(message)
                    for piece in _reasoning_of(message) + self._think(run_id, text):
                        self._released(session.feed(piece))
        splitter = self._splitters.get(run_id)
        for kind, piece in splitter.flush() if splitter else []:
            if kind == "reasoning":
                self._released(session.feed(piece))
        self._released(session.finish())

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._splitters.pop(run_id, None)

    def steps(self, run_id: UUID | None = None) -> list[ReleasedStep]:
        """The released steps of a run (the latest run when None)."""
        session = self._sessions.get(run_id or self._last)  # type: ignore[arg-type]
        return list(session.released) if session else []

    def reasoning(self, run_id: UUID | None = None) -> str:
        """The filtered reasoning of a run so far (the latest run when None)."""
        return "".join(step.output for step in self.steps(run_id))

    def _start(self, run_id: UUID) -> StreamSession:
        self._last = run_id
        self._splitters[run_id] = ThinkSplitter()
        self._sessions[run_id] = StreamSession(
            self._filter, profile=self._profile, context=self._context, metadata={"source": "langchain"}
        )
        return self._sessions[run_id]

    def _think(self, run_id: UUID, text: str) -> list[str]:
        if not text:
            return []
        return [piece for kind, piece in self._splitters[run_id].feed(text) if kind == "reasoning"]

    def _released(self, steps: list[ReleasedStep]) -> None:
        for step in steps:
            if step.verdict is Verdict.BLOCK and self._on_block == "raise":
                raise ReasoningBlocked(step.categories)
            if self._on_step is not None:
                self._on_step(step)


def _reasoning_of(message: Any) -> list[str]:
    """Reasoning text a message (chunk) carries outside its text: additional_kwargs or content blocks."""
    if message is None:
        return []
    extra = getattr(message, "additional_kwargs", None) or {}
    pieces = [extra[k] for k in REASONING_KWARGS if isinstance(extra.get(k), str) and extra[k]][:1]
    content = getattr(message, "content", None)
    if isinstance(content, list):
        for block in content:
            if isinstance(block, dict) and block.get("type") in REASONING_BLOCKS:
                value = block.get(REASONING_BLOCKS[block["type"]])
                if isinstance(value, str) and value:
                    pieces.append(value)
    return pieces


def _text_of(message: Any) -> str:
    content = getattr(message, "content", None)
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b if isinstance(b, str) else b.get("text", "") for b in content
                       if isinstance(b, str) or (isinstance(b, dict) and b.get("type") == "text"))
    return ""
