"""The reasoning proxy's logic without a web framework: a chat completion request in, a filtered answer out.

`ChatProxy` forwards the caller's body to the upstream unchanged and runs the answer through a `ChatRewriter`
driven by an async batch judge: `SafePathFilter.afilter_batch` standalone, the ingress's service under Ray.
The caller's headers go along as `safepath.proxy.headers` decides (the upstream key only for a caller that
authenticated to the proxy).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AsyncExitStack
from typing import Any

from safepath.chat.rewrite import ChatRewriter, rewriter_for
from safepath.chat.wire import DONE, encode_event
from safepath.errors import ProxyError
from safepath.profiles import SafetyProfile
from safepath.proxy.config import ProxyConfig
from safepath.proxy.headers import upstream_headers
from safepath.proxy.upstream import Upstream
from safepath.streaming import AsyncJudge, HoldbackLookup, adrive

logger = logging.getLogger(__name__)

ProfileLookup = Callable[[str | None], SafetyProfile]
_closing: set[asyncio.Task] = set()  # tasks must be referenced until done, or they may be collected mid-run


class ChatProxy:
    """OpenAI `POST /chat/completions` against one upstream, with the reasoning filtered.

    Args:
        config: The upstream and the filtering options.
        judge: Async batch judge: requests in, results out in order.
        profile_for: Looks a profile up by name (None: the default); called per request, so live profile
            changes apply.
        upstream: The upstream client; built from `config` when None.
        holdback_for: The profile's rule holdback (`safepath.streaming.holdbacks`): a reasoning step waits while a
            rule match may still run past it. None only for judges without rule stages.
    """

    def __init__(
        self,
        config: ProxyConfig,
        judge: AsyncJudge,
        profile_for: ProfileLookup,
        *,
        upstream: Upstream | None = None,
        holdback_for: HoldbackLookup | None = None,
    ) -> None:
        self.config = config
        self._judge = judge
        self._profile_for = profile_for
        self._holdback_for = holdback_for
        self.upstream = upstream or Upstream(config)

    async def complete(
        self, body: dict[str, Any], *, headers: Iterable[tuple[str, str]] = (), authenticated: bool = False
    ) -> dict[str, Any]:
        """A non-streamed completion, filtered. Raises ProxyError.

        Args:
            body: The caller's request body, forwarded unchanged.
            headers: The caller's headers (what goes upstream: safepath/proxy/headers.py).
            authenticated: The caller presented a valid proxy API key; only then is the upstream key used.
        """
        rewriter = self._rewriter(body)
        answer = await self.upstream.complete(body, self._forward(headers, authenticated))
        return await adrive(rewriter.completion(answer), self._judge)

    async def models(self, *, headers: Iterable[tuple[str, str]] = (), authenticated: bool = False) -> dict[str, Any]:
        """The upstream's `GET /models`, unchanged (nothing to filter). Raises ProxyError."""
        return await self.upstream.get("/models", self._forward(headers, authenticated))

    async def stream(
        self, body: dict[str, Any], *, headers: Iterable[tuple[str, str]] = (), authenticated: bool = False
    ) -> AsyncIterator[bytes]:
        """Open a streamed completion; returns its filtered SSE bytes. Arguments as for `complete`.

        Raises:
            ProxyError: before anything is sent (the upstream is unreachable, timed out or answered non-2xx), so
                the caller can still answer with a status. Later failures end the stream with an SSE error event.
        """
        rewriter = self._rewriter(body)
        stack = AsyncExitStack()
        events = await stack.enter_async_context(self.upstream.stream(body, self._forward(headers, authenticated)))
        return self._relay(stack, events, rewriter)

    async def _relay(
        self, stack: AsyncExitStack, events: AsyncIterator[Any], rewriter: ChatRewriter
    ) -> AsyncIterator[bytes]:
        async with stack:
            try:
                async for chunk in events:
                    if chunk == DONE:
                        break
                    for out in await adrive(rewriter.feed(chunk), self._judge):
                        yield encode_event(out)
                for out in await adrive(rewriter.finish(), self._judge):
                    yield encode_event(out)
                yield encode_event(DONE)
            except ProxyError as exc:
                yield encode_event(exc.body())
            except Exception as exc:  # a failure mid-stream must still reach the caller as an error, not a cut
                logger.exception("filtering a streamed completion failed")
                yield encode_event(ProxyError(500, f"{type(exc).__name__} while filtering the stream",
                                              type="server_error", code="internal_error").body())

    async def aclose(self) -> None:
        await self.upstream.aclose()

    def close_soon(self) -> None:
        """Close the upstream connections from synchronous code (a reconfigure): on the running loop, if any."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop here: the idle connections close when the client is collected
        task = loop.create_task(self.aclose())
        _closing.add(task)
        task.add_done_callback(_closing.discard)

    def _forward(self, headers: Iterable[tuple[str, str]], authenticated: bool) -> list[tuple[str, str]]:
        return upstream_headers(headers, authenticated=authenticated, upstream_key=self.config.api_key())

    def _rewriter(self, body: dict[str, Any]) -> ChatRewriter:
        # Audit records learn where the text came from; never the upstream's address or key.
        metadata = {"source": "proxy", "model": str(body.get("model"))[:100]}
        profile = self._profile_for(self.config.profile)
        holdback = self._holdback_for(profile) if self._holdback_for else None
        return rewriter_for(self.config, profile, metadata=metadata, holdback=holdback)
