"""Which of the caller's headers the proxy sends upstream, and whose credentials go with them.

Custom headers (OpenAI-Organization, X-Request-Id, vendor headers, ...) pass through. Not passed: hop-by-hop
headers (RFC 9110 section 7.6.1, and any the Connection header names), the ones that describe this connection or
this body (Host, Content-Length, Content-Type, Accept, Accept-Encoding: the proxy's own request sets them), and the
audit token header (a credential of this service).

Authorization:
    - a caller that authenticated to the proxy (with one of SAFEPATH_API_KEYS) sent the proxy's key, which the
      upstream must never see: it is replaced by the upstream key (`--api-key-env`), or dropped when there is none;
    - any other caller's Authorization goes upstream as sent, and the upstream key is never used on its behalf
      (otherwise whoever reaches the proxy spends its key).
"""

from __future__ import annotations

from collections.abc import Iterable

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te", "trailer",
    "transfer-encoding", "upgrade",
})
OWN = frozenset({"host", "content-length", "content-type", "accept", "accept-encoding", "x-safepath-audit-token"})

Headers = list[tuple[str, str]]


def upstream_headers(received: Iterable[tuple[str, str]], *, authenticated: bool, upstream_key: str | None) -> Headers:
    """The headers to send upstream for a caller's request (names lower-cased, repeated headers kept).

    Args:
        received: The caller's headers as (name, value) pairs.
        authenticated: The caller presented a valid proxy API key.
        upstream_key: The proxy's own upstream key, if configured.
    """
    received = [(name.lower(), value) for name, value in received]
    named = {token.strip().lower() for name, value in received if name == "connection" for token in value.split(",")}
    dropped = HOP_BY_HOP | OWN | named
    out = [(name, value) for name, value in received if name not in dropped]
    if authenticated:
        out = [(name, value) for name, value in out if name != "authorization"]
        if upstream_key:
            out.append(("authorization", f"Bearer {upstream_key}"))
    return out
