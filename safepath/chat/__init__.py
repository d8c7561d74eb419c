"""Chat-completion rewriting shared by the reasoning proxy (safepath/proxy/) and the client wrappers
(safepath/integrations/): plain Python, no HTTP server or client.

    config.py    FilterOptions: what to filter, what a block does
    wire.py      SSE in and out, reasoning fields, OpenAI-style errors
    think.py     ThinkSplitter: think tags split across chunks
    rewrite.py   ChatRewriter: the sans-IO rewrite of chunks and whole completions
"""

from safepath.chat.config import FilterOptions
from safepath.chat.rewrite import ChatRewriter, rewriter_for
from safepath.chat.think import ThinkSplitter, split_think

__all__ = ["ChatRewriter", "FilterOptions", "ThinkSplitter", "rewriter_for", "split_think"]
