"""Choosing Serve's throughput mode: HAProxy mode where a binary runs here, the default proxy otherwise."""

from __future__ import annotations

import pytest

from deployments import launch


@pytest.mark.parametrize(
    "binary,environ,expected",
    [
        # an haproxy that runs: both variables
        ("/usr/sbin/haproxy", {}, {launch.THROUGHPUT: "1", launch.HA_PROXY: "1"}),
        # none: nothing is set, Serve keeps its default proxy
        (None, {}, {}),
        # the operator's own choice is left alone
        ("/usr/sbin/haproxy", {launch.HA_PROXY: "0"}, {launch.THROUGHPUT: "1"}),
        # and the whole mode can be turned off
        ("/usr/sbin/haproxy", {"SAFEPATH_SERVE_FAST": "0"}, {}),
    ],
)
def test_throughput_env(monkeypatch, binary, environ, expected):
    monkeypatch.setattr(launch, "haproxy_binary", lambda environ=None: binary)
    assert launch.throughput_env(environ) == expected


def test_haproxy_binary_skips_candidates_that_do_not_run(tmp_path):
    broken = tmp_path / "haproxy"
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    found = launch.haproxy_binary({"RAY_SERVE_HAPROXY_BINARY_PATH": str(broken)})
    assert found != str(broken)


def test_mode_names_what_is_set():
    assert launch.mode({}) == "default proxy"
    assert launch.mode({launch.THROUGHPUT: "1", launch.HA_PROXY: "1"}) == "haproxy+throughput-optimized"
