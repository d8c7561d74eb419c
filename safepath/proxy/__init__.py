"""An OpenAI-compatible reasoning proxy: forwards chat completions to an upstream server and filters the reasoning
(`reasoning_content` / `reasoning` fields, `<think>` blocks) before it reaches the caller. The rewriting itself is
shared with the client wrappers and lives in safepath/chat/; this package is the server around it.

    config.py    ProxyConfig: the chat filter's options plus the upstream, its key variable and timeout
    headers.py   which of the caller's headers go upstream
    upstream.py  Upstream: the httpx client
    service.py   ChatProxy: upstream + rewriter + an async judge
    app.py       FastAPI handlers and the standalone app (`safepath proxy`); needs FastAPI and uvicorn

config.py is plain pydantic (the Ray ingress validates it without httpx); the rest needs the `proxy` extra
(httpx; FastAPI and uvicorn too for app.py), so it loads on first use.
"""

from typing import Any

from safepath.proxy.config import ProxyConfig


def __getattr__(name: str) -> Any:
    if name == "ChatProxy":
        from safepath.proxy.service import ChatProxy

        return ChatProxy
    if name == "Upstream":
        from safepath.proxy.upstream import Upstream

        return Upstream
    raise AttributeError(f"module 'safepath.proxy' has no attribute {name!r}")


__all__ = ["ChatProxy", "ProxyConfig", "Upstream"]
