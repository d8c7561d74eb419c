"""Real Redis and PostgreSQL servers for tests: the machine's own where they answer, else throwaway ones.

This project's machines run Redis on 6379 and PostgreSQL on 5432 (trust auth, database `test`). Elsewhere the
tests start their own from the installed binaries (`redis-server`; `initdb` and `pg_ctl`) on free ports, in a
temporary folder removed at the end. Either way the tests talk to a real server over a real connection.
"""

from __future__ import annotations

import glob
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    """A free port below the kernel's ephemeral range, so no process that binds port 0 can take it meanwhile."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 32768)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32767")


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _wait_for(port: int, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not _answers("127.0.0.1", port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start listening on {port} within {timeout_s}s")
        time.sleep(0.1)


def _binary(name: str, patterns: tuple[str, ...] = ()) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for pattern in patterns:
        matches = sorted(glob.glob(pattern))
        if matches:
            return matches[-1]
    return None


class RedisProcess:
    """A throwaway redis-server (no persistence) that a test can stop and start again on the same port."""

    def __init__(self, port: int | None = None) -> None:
        self.binary = _binary("redis-server")
        if self.binary is None:
            raise RuntimeError("redis-server is not installed")
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen | None = None

    def start(self) -> RedisProcess:
        self._proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for(self.port, 10, "redis-server")
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(10)
            self._proc = None


@contextmanager
def redis_server(port: int | None = None) -> Iterator[str]:
    """A throwaway redis-server on `port` for the duration; yields its URL. Raises RuntimeError without the binary."""
    server = RedisProcess(port).start()
    try:
        yield server.url
    finally:
        server.stop()


@contextmanager
def machine_redis() -> Iterator[str]:
    """The machine's Redis on 6379 if it answers, else a throwaway one."""
    if _answers("127.0.0.1", 6379):
        yield "redis://127.0.0.1:6379/0"
    else:
        with redis_server() as url:
            yield url


def _postgres_answers(dsn: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


@contextmanager
def machine_postgres() -> Iterator[str]:
    """The machine's PostgreSQL (database `test`) if it answers, else a throwaway cluster; yields a DSN."""
    dsn = os.environ.get("SAFEPATH_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
    if _postgres_answers(dsn):
        yield dsn
        return
    patterns = ("/usr/lib/postgresql/*/bin/{}",)
    initdb = _binary("initdb", tuple(p.format("initdb") for p in patterns))
    pg_ctl = _binary("pg_ctl", tuple(p.format("pg_ctl") for p in patterns))
    if initdb is None or pg_ctl is None:
        raise RuntimeError("PostgreSQL is not reachable and initdb/pg_ctl are not installed")
    root = Path(tempfile.mkdtemp(prefix="safepath-pg-"))
    data, port = root / "data", free_port()
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: run the throwaway cluster as `postgres`
        shutil.chown(root, "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*run_as, initdb, "-D", str(data), "-U", "postgres", "--auth=trust"], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([*run_as, pg_ctl, "-D", str(data), "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1",
                    "-l", str(root / "log"), "-w", "start"], check=True, stdout=subprocess.DEVNULL)
    try:
        subprocess.run([*run_as, _binary("createdb", tuple(p.format("createdb") for p in patterns)) or "createdb",
                        "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "test"], check=True)
        yield f"postgresql://postgres@127.0.0.1:{port}/test"
    finally:
        subprocess.run([*run_as, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], stdout=subprocess.DEVNULL)
        shutil.rmtree(root, ignore_errors=True)
