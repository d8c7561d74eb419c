"""An OpenAI-compatible reasoning proxy: forwards chat completions to an upstream server and filters the reasoning
(`reasoning_content` / `reasoning` fields, `<think>` blocks) before it reaches the caller.

    config.py    ProxyRoute: upstream, key variable, timeout, what to filter, what a block does
    wire.py      SSE in and out, reasoning fields, OpenAI-style errors
    think.py     ThinkSplitter: think tags split across chunks
    rewrite.py   ChatRewriter: the sans-IO rewrite of chunks and whole completions
    upstream.py  Upstream: the httpx client
    service.py   ChatProxy: upstream + rewriter + an async judge
    app.py       FastAPI handlers and the standalone app (`safepath proxy`); needs FastAPI and uvicorn

The wire, think, rewrite and config modules are plain Python (the client wrappers use them); the upstream
client needs the `proxy` extra (httpx; FastAPI and uvicorn too for app.py), so it loads on first use.
"""

from typing import Any

from safepath.proxy.config import FilterOptions, ProxyRoute
from safepath.proxy.rewrite import ChatRewriter
from safepath.proxy.think import ThinkSplitter, split_think
from safepath.proxy.wire import ProxyError, ReasoningBlocked, UpstreamError, UpstreamStatus


def __getattr__(name: str) -> Any:
    if name == "ChatProxy":
        from safepath.proxy.service import ChatProxy

        return ChatProxy
    if name == "Upstream":
        from safepath.proxy.upstream import Upstream

        return Upstream
    raise AttributeError(f"module 'safepath.proxy' has no attribute {name!r}")


__all__ = [
    "ChatProxy",
    "ChatRewriter",
    "FilterOptions",
    "ProxyError",
    "ProxyRoute",
    "ReasoningBlocked",
    "ThinkSplitter",
    "Upstream",
    "UpstreamError",
    "UpstreamStatus",
    "split_think",
]
