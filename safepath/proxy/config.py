"""The proxy's configuration (`ProxyConfig`): the chat filter's options plus the upstream it forwards to.

Plain pydantic, importable without httpx or FastAPI: the Ray ingress validates it from `user_config`.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, field_validator

from safepath.chat.config import FilterOptions


class ProxyConfig(FilterOptions):
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
