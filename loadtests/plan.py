"""Load plans as data: named lists of stages, scaled by one factor. Importable without locust.

A stage holds a user count for a while: users ramp towards `users` at `spawn_rate` per second, then stay. Every
plan scales by one factor (`SAFEPATH_LOAD_SCALE`): users, spawn rate and duration together, so `steady` at 0.05
is 5 users for 30 s on a laptop and the full 100 users for 10 minutes on a load box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Stage:
    """One step of a plan (Ray's `locust_utils.LocustStage` has the same three fields)."""

    duration_s: float
    users: int
    spawn_rate: float
    label: str = ""
    offered_rps: float | None = None  # set where users send at a fixed rate (sweeps), for plots against offered load


def _steady() -> list[Stage]:
    return [Stage(600, 100, 10, "steady 100 users")]


def _spike() -> list[Stage]:
    # A calm minute, the spike (reached in 10 s at 50/s), then the calm again to see how fast latency recovers.
    return [Stage(60, 50, 50, "before"), Stage(120, 500, 50, "spike 500 users"), Stage(120, 50, 50, "after")]


def _stress() -> list[Stage]:
    # Steps towards 1,000 users at 100/s; where it breaks shows as errors and latency climbing in one stage.
    return [Stage(225, users, 100, f"stress {users} users") for users in (250, 500, 750, 1000)]


PLANS = {"steady": _steady, "spike": _spike, "stress": _stress}


def scaled(stages: list[Stage], factor: float, *, min_duration_s: float = 10.0) -> list[Stage]:
    """The same plan with users, spawn rate and duration multiplied by `factor` (at least 1 user, 1/s, 10 s)."""
    if factor <= 0:
        raise ValueError(f"scale must be > 0, got {factor}")
    return [
        replace(
            s,
            users=max(1, round(s.users * factor)),
            spawn_rate=max(1.0, s.spawn_rate * factor),
            duration_s=max(min_duration_s, s.duration_s * factor),
        )
        for s in stages
    ]


def sweep(offered_rps: list[float], *, stage_s: float, user_rps: float) -> list[Stage]:
    """Stages at increasing offered loads: `rps / user_rps` users, each sending `user_rps` requests a second.

    Users send at a fixed rate (locust's `constant_throughput`), so the offered load is known; once the server
    cannot keep up, each user waits for its answer and the achieved rate falls below the offered one.
    """
    stages = []
    for rps in offered_rps:
        users = max(1, math.ceil(rps / user_rps))
        stages.append(Stage(stage_s, users, max(users / 2, 1.0), f"{rps:g} req/s offered", offered_rps=rps))
    return stages


def plan(name: str, *, scale: float = 1.0, sweep_rps: list[float] | None = None, sweep_stage_s: float = 20.0,
         user_rps: float = 1.0) -> list[Stage]:
    """The stages of the plan called `name` (`steady`, `spike`, `stress`, or `sweep`), scaled.

    Raises:
        ValueError: unknown plan name, or a sweep without offered loads.
    """
    if name == "sweep":
        if not sweep_rps:
            raise ValueError("the sweep plan needs offered loads (SAFEPATH_SWEEP_RPS=10,20,40)")
        return sweep(sweep_rps, stage_s=sweep_stage_s, user_rps=user_rps)
    if name not in PLANS:
        raise ValueError(f"unknown load shape {name!r}; known: {', '.join([*PLANS, 'sweep'])}")
    return scaled(PLANS[name](), scale)


def stage_at(stages: list[Stage], run_time_s: float) -> tuple[int, float] | None:
    """(index of the stage running at `run_time_s`, seconds since it began), or None once the plan is over."""
    began = 0.0
    for i, s in enumerate(stages):
        if run_time_s < began + s.duration_s:
            return i, run_time_s - began
        began += s.duration_s
    return None
