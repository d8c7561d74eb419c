"""What the reasoning filter of a chat completion judges and what a block does (`FilterOptions`), shared by the
proxy (whose `ProxyConfig` adds the upstream) and the client wrappers.

Plain pydantic, importable without httpx or FastAPI: the Ray ingress validates it from `user_config`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class FilterOptions(BaseModel):
    """What is judged in a chat completion and what a block does."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    filter: Literal["reasoning", "reasoning_and_answer"] = Field(
        default="reasoning",
        description="`reasoning`: only the reasoning (reasoning_content / reasoning fields, think blocks) is judged. "
        "`reasoning_and_answer`: the answer too, and a block in either withholds the rest of the choice.",
    )
    on_block: Literal["drop", "marker", "fail"] = Field(
        default="marker",
        description="When a step blocks: `drop` ends the blocked text silently, `marker` ends it with the profile's "
        "block marker, `fail` answers an OpenAI-style error (HTTP 400, or an SSE error event once streaming).",
    )
    profile: str | None = Field(default=None, description="Safety profile; the filter's default when None.")
    context: dict[str, str] | None = Field(default=None, description="Context for contextual rules, per request.")
    content_starts_in_think: bool = Field(
        default=False,
        description="The model's output starts inside a think block whose opening tag is in the prompt "
        "(some DeepSeek-R1 chat templates): content before `</think>` is reasoning.",
    )
