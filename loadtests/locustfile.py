"""Locust scenarios against the running Ray Serve graph (`make serve`): see loadtests/README.md.

    SAFEPATH_SHAPE=steady SAFEPATH_LOAD_SCALE=0.05 .venv/bin/locust -f loadtests/locustfile.py --headless \
        --host http://127.0.0.1:8000 --csv build/load/steady --html build/load/steady.html

Run it from the repository root: locust loads this file by path and puts the working directory on sys.path, which
is how `loadtests.*` (and `benchmarks.traces`) import.

Environment:
    SAFEPATH_SHAPE          steady | spike | stress | sweep | none (locust's own --users/--spawn-rate/--run-time)
    SAFEPATH_LOAD_SCALE     one factor on users, spawn rate and duration (default 1)
    SAFEPATH_USER_RPS       requests a second each user sends (default 1; a user waits when answers are slower)
    SAFEPATH_SWEEP_RPS      offered loads of the sweep shape, e.g. 10,20,40,80
    SAFEPATH_SWEEP_STAGE_S  seconds per sweep stage (default 20)
    SAFEPATH_PROFILE_MIX    profile shares, e.g. rules_only=0.25,default=0.75 (names the server lacks: its default)
    SAFEPATH_STAGE_REPORT   write per-stage figures (JSON) here at the end; a table goes to stderr either way
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sys
import time
from typing import ClassVar

import requests  # locust's dependency
import websocket  # websocket-client, locust's dependency
from locust import FastHttpUser, LoadTestShape, constant_throughput, events, task

from loadtests import plan as plans
from loadtests.stage_stats import StageStats
from loadtests.traffic import DEFAULT_PROFILE_MIX, Traffic, parse_mix, resolve_profiles

log = logging.getLogger("safepath.load")
SHAPE = os.environ.get("SAFEPATH_SHAPE", "steady")
USER_RPS = float(os.environ.get("SAFEPATH_USER_RPS", "1"))
STAGES = [] if SHAPE == "none" else plans.plan(
    SHAPE,
    scale=float(os.environ.get("SAFEPATH_LOAD_SCALE", "1")),
    sweep_rps=[float(x) for x in os.environ.get("SAFEPATH_SWEEP_RPS", "").split(",") if x.strip()],
    sweep_stage_s=float(os.environ.get("SAFEPATH_SWEEP_STAGE_S", "20")),
    user_rps=USER_RPS,
)
STATS = StageStats(STAGES or [plans.Stage(0, 0, 0, "run")])


class _State:
    profiles: ClassVar[dict[str, float]] = {}
    stream = False  # set at test start when the server accepts a WebSocket on /v1/stream
    stage = 0  # index of the running stage
    measuring = SHAPE == "none"
    since = time.perf_counter()  # start of the interval not yet counted as measured time


def _close_interval(now: float) -> None:
    """Count the time since the last shape tick towards the stage that was measuring meanwhile."""
    if _State.measuring:
        STATS.tick(_State.stage, now - _State.since)
    _State.since = now


_SEEDS = itertools.count(1)


@events.test_start.add_listener
def discover(environment, **_kwargs) -> None:
    """Read the server's profiles (so the mix can name them) and probe the streaming endpoint."""
    host = (environment.host or ReasoningTraffic.host).rstrip("/")
    _State.since, _State.measuring = time.perf_counter(), SHAPE == "none"
    mix = parse_mix(os.environ.get("SAFEPATH_PROFILE_MIX", DEFAULT_PROFILE_MIX))
    try:
        info = requests.get(f"{host}/v1/profiles", timeout=30).json()
        available = {p["name"]: p["stages"] for p in info["profiles"]}
        _State.profiles = resolve_profiles(mix, available, info["default_profile"])
    except (requests.RequestException, ValueError, KeyError) as exc:
        log.error("safepath load: cannot read %s/v1/profiles (%s); every request uses the default profile", host, exc)
        _State.profiles = {}
    # HOOK: streaming sessions run when the server accepts a WebSocket at /v1/stream (safepath/streaming/protocol.py).
    try:
        ws = websocket.create_connection(_ws_url(host), timeout=5)
        ws.send(json.dumps({"type": "end"}))
        ws.close()
        _State.stream = True
    except (OSError, websocket.WebSocketException):
        _State.stream = False
    log.warning("safepath load: shape %s, %d stage(s), profiles %s, streaming %s", SHAPE, len(STAGES),
                {k: round(v, 2) for k, v in _State.profiles.items()}, "on" if _State.stream else "off (no /v1/stream)")


@events.request.add_listener
def _record(name, response_time, exception, context, **_kwargs) -> None:
    if _State.measuring:
        STATS.record(_State.stage, name, response_time, exception is None, (context or {}).get("traces", 1))
        if name.startswith(("filter safe ", "filter harmful ")):  # single traces the cache has not seen, by profile
            STATS.record(_State.stage, "filter " + name[name.index("["):], response_time, exception is None,
                         also_all=False)


@events.test_stop.add_listener
def _report(**_kwargs) -> None:
    _close_interval(time.perf_counter())
    _State.measuring = False
    print(STATS.table(), file=sys.stderr, flush=True)
    if path := os.environ.get("SAFEPATH_STAGE_REPORT"):
        STATS.write(path)


def _ws_url(host: str) -> str:
    return host.replace("https://", "wss://").replace("http://", "ws://") + "/v1/stream"


class ReasoningTraffic(FastHttpUser):
    """The traffic mix of loadtests/traffic.py: single traces, repeats, batches, streams, across profiles."""

    host = "http://127.0.0.1:8000"
    wait_time = constant_throughput(USER_RPS)
    network_timeout = 60.0
    connection_timeout = 60.0

    def on_start(self) -> None:
        # An empty name sends no profile field: the server's default (where its profiles could not be read).
        self.traffic = Traffic(next(_SEEDS), _State.profiles or {"": 1.0})

    def _filter(self, kind: str, text: str) -> None:
        profile = self.traffic.profile()
        body = {"content": text, "profile": profile or None}
        name = f"filter {kind} [{profile or 'default'}]"
        with self.client.post("/v1/filter", json=body, name=name, catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}")
                return
            self._pipeline(profile, [r.json()])

    def _pipeline(self, profile: str, results: list[dict]) -> None:
        if _State.measuring:
            for result in results:
                if not result.get("cached"):
                    STATS.record_pipeline(_State.stage, profile, result.get("latency_ms", {}))

    @task(55)
    def safe(self) -> None:
        self._filter("safe", self.traffic.safe())

    @task(10)
    def harmful(self) -> None:
        self._filter("harmful", self.traffic.harmful())

    @task(15)
    def repeat(self) -> None:
        self._filter("repeat", self.traffic.repeat())

    @task(10)
    def batch(self) -> None:
        profile, texts = self.traffic.profile(), self.traffic.batch()
        body = {"requests": [{"content": t, "profile": profile or None} for t in texts]}
        name = f"batch [{profile or 'default'}]"
        with self.client.post("/v1/filter/batch", json=body, name=name, catch_response=True,
                              context={"traces": len(texts)}) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}")
                return
            self._pipeline(profile, r.json()["results"])

    @task(5)
    def stream(self) -> None:
        """A streaming session over /v1/stream; a plain safe trace where the server has no such endpoint."""
        if not _State.stream:
            self._filter("safe", self.traffic.safe())
            return
        profile, text = self.traffic.profile(), self.traffic.safe()
        started, error, steps = time.perf_counter(), None, 0
        ws = None
        try:
            ws = websocket.create_connection(_ws_url(self.host.rstrip("/")), timeout=60)
            ws.send(json.dumps({"type": "start", "profile": profile or None}))
            for chunk in self.traffic.chunks(text):
                ws.send(json.dumps({"type": "chunk", "text": chunk}))
            ws.send(json.dumps({"type": "end"}))
            while True:
                reply = json.loads(ws.recv())
                if reply["type"] == "step":
                    steps += 1
                elif reply["type"] == "end":
                    break
                else:
                    raise RuntimeError(f"stream error: {reply.get('error')}")
        except Exception as exc:  # noqa: BLE001 - any failure of a session is reported to locust as one failure
            error = exc
        finally:
            if ws is not None:
                ws.close()
        self.environment.events.request.fire(
            request_type="WS", name=f"stream [{profile or 'default'}]",
            response_time=(time.perf_counter() - started) * 1000, response_length=steps, exception=error,
            context={"traces": 1})


if STAGES:

    class SafePathShape(LoadTestShape):
        """Runs the stages of SAFEPATH_SHAPE and tells the per-stage statistics which stage is on."""

        def tick(self) -> tuple[int, float] | None:
            now = time.perf_counter()
            _close_interval(now)
            at = plans.stage_at(STAGES, self.get_run_time())
            if at is None:
                return None
            index, offset = at
            _State.stage = index
            _State.measuring = STATS.measuring(offset, STAGES[index].duration_s)
            return STAGES[index].users, STAGES[index].spawn_rate
