"""The proxy's upstream config: credentials never shown, only http(s) base URLs (safepath/proxy/config.py)."""

from __future__ import annotations

import pytest

from safepath.proxy.config import ProxyConfig


def test_route_never_shows_credentials(monkeypatch):
    route = ProxyConfig(base_url="https://user:hunter2@llm.example.com:8443/v1/", api_key_env="UPSTREAM_KEY")
    assert route.safe_url == "https://llm.example.com:8443/v1"
    monkeypatch.setenv("UPSTREAM_KEY", "sk-live-123")
    assert route.api_key() == "sk-live-123"
    assert "sk-live-123" not in repr(route) and "sk-live-123" not in route.model_dump_json()
    assert "hunter2" not in route.safe_url


@pytest.mark.parametrize("url", ["ftp://host/v1", "localhost:8000", "http:///v1", "http://host/v1?key=secret"])
def test_route_wants_an_http_url(url):
    with pytest.raises(ValueError):
        ProxyConfig(base_url=url)
