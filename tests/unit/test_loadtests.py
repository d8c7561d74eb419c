"""The load-test plans, the traffic mix and the per-stage statistics (loadtests/), without locust or a server."""

from __future__ import annotations

from collections import Counter

import pytest

from loadtests.plan import PLANS, Stage, plan, scaled, stage_at, sweep
from loadtests.stage_stats import StageStats, percentile
from loadtests.traffic import HARMFUL, Traffic, parse_mix, resolve_profiles


@pytest.mark.parametrize("name,users,total_s", [("steady", 100, 600), ("spike", 500, 300), ("stress", 1000, 900)])
def test_named_shapes_reach_their_users_within_their_duration(name, users, total_s):
    stages = plan(name)
    assert max(s.users for s in stages) == users
    assert sum(s.duration_s for s in stages) == total_s


def test_one_factor_scales_users_spawn_rate_and_duration():
    (small,) = scaled([Stage(600, 100, 10)], 0.05)
    assert (small.duration_s, small.users, small.spawn_rate) == (30, 5, 1.0)
    (tiny,) = scaled([Stage(60, 10, 5)], 0.01)
    assert (tiny.duration_s, tiny.users, tiny.spawn_rate) == (10, 1, 1.0)  # floors: 10 s, 1 user, 1/s


def test_sweep_users_send_the_offered_load():
    stages = sweep([10, 25], stage_s=20, user_rps=2)
    assert [(s.users, s.offered_rps) for s in stages] == [(5, 10), (13, 25)]


def test_stage_at_walks_the_plan_and_ends_it():
    stages = [Stage(10, 1, 1), Stage(5, 2, 1)]
    assert stage_at(stages, 0) == (0, 0)
    assert stage_at(stages, 12) == (1, 2)
    assert stage_at(stages, 15) is None


@pytest.mark.parametrize("name", ["nonsense", "sweep"])
def test_unknown_shape_or_sweep_without_loads_is_refused(name):
    with pytest.raises(ValueError):
        plan(name)


def test_profile_mix_maps_unknown_names_to_the_default_and_finds_a_rules_only_profile():
    mix = parse_mix("rules_only=1,default=3")
    assert mix == {"rules_only": 0.25, "default": 0.75}
    shipped = {"strict": ["rules", "m"], "balanced": ["rules", "m"]}
    assert resolve_profiles(mix, shipped, "balanced") == {"balanced": 1.0}
    bench = {"plain": ["rules"], "full": ["rules", "m"]}
    assert resolve_profiles(mix, bench, "full") == {"plain": 0.25, "full": 0.75}


@pytest.mark.parametrize("spec", ["a", "a=-1", "a=0", ""])
def test_malformed_profile_mix_is_refused(spec):
    with pytest.raises(ValueError):
        parse_mix(spec)


def test_traffic_is_unique_where_it_should_be_and_repeats_where_it_should():
    a, b = Traffic(1, {"x": 1.0}), Traffic(2, {"x": 1.0})
    safe = [a.safe() for _ in range(50)] + [b.safe() for _ in range(50)]
    assert len(set(safe)) == 100
    assert all(200 <= len(t.split(". ", 1)[1]) <= 4000 for t in safe)
    assert len({a.repeat() for _ in range(200)}) <= 16
    harmful = {a.harmful() for _ in range(50)}
    assert harmful & set(HARMFUL) and harmful - set(HARMFUL)
    assert "".join(a.chunks("abc" * 100)) == "abc" * 100
    assert 2 <= len(a.batch()) <= 8


def test_stage_stats_percentiles_and_rates():
    stats = StageStats([Stage(10, 1, 1, "only")], settle_s=2)
    for ms in range(1, 101):
        stats.record(0, "filter [p]", float(ms), ok=True, traces=2)
    stats.record(0, "filter [p]", 5000.0, ok=False)
    stats.tick(0, 10.0)
    (report,) = stats.report()
    m = report["requests"]["filter [p]"]
    assert (m["requests"], m["failures"], m["rps"], m["traces_per_s"]) == (101, 1, 10.1, 20.1)
    assert (m["p50"], m["p99"]) == (50, 99)  # failed requests stay out of the latency figures
    assert report["requests"]["all"]["requests"] == 101
    assert percentile(Counter(), 50) is None
    assert not stats.measuring(1.0, 10) and stats.measuring(2.0, 10)
    assert set(PLANS) == {"steady", "spike", "stress"}
