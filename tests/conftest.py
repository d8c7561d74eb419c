"""Fixtures every test folder may use: real Redis and PostgreSQL servers (tests/services.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.services import machine_postgres, machine_redis


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis: the machine's on 6379, else a throwaway redis-server. Tests use their own key prefixes."""
    with machine_redis() as url:
        yield url


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A real PostgreSQL database: the machine's `test` database, else a throwaway cluster."""
    with machine_postgres() as dsn:
        yield dsn


@pytest.fixture(scope="session", autouse=True)
def no_result_cache() -> Iterator[None]:
    """Judging a trace twice judges it twice, unless a test turns the cache on (its own settings, or the Serve
    ingress's user_config). Set in the environment before any Ray worker starts, so replicas inherit it."""
    previous = os.environ.get("SAFEPATH_CACHE_ENABLED")
    os.environ["SAFEPATH_CACHE_ENABLED"] = "false"
    yield
    if previous is None:
        os.environ.pop("SAFEPATH_CACHE_ENABLED", None)
    else:
        os.environ["SAFEPATH_CACHE_ENABLED"] = previous
