"""What the proxy sends upstream from a caller's headers (safepath/proxy/headers.py)."""

from __future__ import annotations

import pytest

from safepath.proxy.headers import upstream_headers

CALLER = [("Authorization", "Bearer caller-key"), ("X-Tenant", "t1"), ("Host", "proxy.local"),
          ("Content-Length", "42"), ("Connection", "keep-alive, X-Hop"), ("X-Hop", "1"), ("Upgrade", "h2c"),
          ("Accept-Encoding", "br"), ("X-SafePath-Audit-Token", "audit")]


@pytest.mark.parametrize("authenticated,upstream_key,authorization", [
    # no proxy key presented: the caller's own credentials go upstream; the proxy's key never does
    (False, None, ["Bearer caller-key"]),
    (False, "sk-upstream", ["Bearer caller-key"]),
    # a proxy key presented: it is this service's secret, replaced by the upstream key or dropped
    (True, "sk-upstream", ["Bearer sk-upstream"]),
    (True, None, []),
])
def test_authorization_follows_who_authenticated(authenticated, upstream_key, authorization):
    out = upstream_headers(CALLER, authenticated=authenticated, upstream_key=upstream_key)
    assert [v for n, v in out if n == "authorization"] == authorization


def test_custom_headers_pass_and_connection_headers_do_not():
    names = [n for n, _ in upstream_headers(CALLER, authenticated=False, upstream_key=None)]
    assert names == ["authorization", "x-tenant"]
