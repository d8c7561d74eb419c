"""Configuration of the reasoning filter for chat completions (`FilterOptions`, shared with the client wrappers)
and of one proxy route (`ProxyRoute`: the same, plus where the upstream is).

Plain pydantic, importable without httpx or FastAPI: the Ray ingress validates it from `user_config`.
"""

from __future__ import annotations

import os
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator


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


class ProxyRoute(FilterOptions):
    """An OpenAI-compatible upstream and how its answers are filtered before they reach the caller."""

    base_url: str = Field(
        description="The upstream's OpenAI base URL, e.g. http://127.0.0.1:8001/v1 (requests go to "
        "{base_url}/chat/completions)."
    )
    api_key_env: str | None = Field(
        default=None,
        description="Name of the environment variable holding the upstream's API key, sent as a bearer token. "
        "The key itself never goes in a config file, a log line, an error or an audit record.",
    )
    timeout_s: float = Field(
        default=120.0, gt=0, description="Longest wait to connect, and between two reads of the upstream's answer."
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("base_url must be an http(s) URL with a host")
        if parts.query or parts.fragment:
            raise ValueError("base_url must not carry a query or fragment")
        return value.rstrip("/")

    def api_key(self) -> str | None:
        """The key from the environment, read per call (rotating it needs no restart); None when unset."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    @property
    def safe_url(self) -> str:
        """base_url without user info, for messages and logs."""
        parts = urlsplit(self.base_url)
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
