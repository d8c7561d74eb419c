"""Profile every replica of the Serve graph under load with py-spy, and print each one's hottest frames.

    python -m benchmarks.profile_graph [--mix rules_only=1] [--users 30] [--user-rps 10] [--duration-s 30]

Starts the graph as `make serve` does (benchmarks/graph.py) with benchmarks/serve_profiles.yaml, drives it with
locust (loadtests/, no shape), and once the load has settled records each replica (found by its process title,
`ray::ServeReplica:safepath:<Deployment>`) for `--duration-s`: a flame graph (`<Deployment>.svg`) and collapsed
stacks (`<Deployment>.txt`) in build/profile/. Then prints, per replica, the frames that were on-CPU most often
(self time) and the project's own functions by inclusive time. docs/PROFILING.md has the manual commands.
py-spy needs ptrace rights: root, or CAP_SYS_PTRACE in a container.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from benchmarks.graph import running_graph, serve_process_name

ROOT = Path(__file__).resolve().parent.parent

OUT = ROOT / "build" / "profile"
BIN = Path(sys.executable).parent
# Frames that mean a thread was waiting, not working (py-spy counts some waits as active).
WAITING = ("Worker.main_loop", "Thread.run (threading", "Condition.wait", "_worker (concurrent", "select (selectors",
           "sleep (asyncio")


def top_frames(collapsed: Path, n: int = 12) -> tuple[list[tuple[str, float]], list[tuple[str, float]], int]:
    """(self-time top frames, the project's functions by inclusive time, samples) from py-spy's raw output."""
    self_time, inclusive, total = Counter(), Counter(), 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        if not count.isdigit() or any(frames[-1].startswith(w) for w in WAITING):
            continue
        total += int(count)
        self_time[frames[-1]] += int(count)
        for frame in set(frames):
            if "(safepath/" in frame or "(deployments/" in frame:
                inclusive[frame] += int(count)
    share = [(f, c / total) for f, c in self_time.most_common(n)] if total else []
    own = [(f, c / total) for f, c in inclusive.most_common(n)] if total else []
    return share, own, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mix", default="rules_only=0.3,safety=0.3,full=0.4", help="SAFEPATH_PROFILE_MIX")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--user-rps", type=float, default=1.0)
    parser.add_argument("--duration-s", type=int, default=30)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    import psutil

    with running_graph(ROOT / "benchmarks" / "serve_profiles.yaml", OUT / "graph.log") as graph:
        env = dict(os.environ, SAFEPATH_SHAPE="none", SAFEPATH_PROFILE_MIX=args.mix,
                   SAFEPATH_USER_RPS=str(args.user_rps))
        locust = subprocess.Popen(
            [str(BIN / "locust"), "-f", str(ROOT / "loadtests" / "locustfile.py"), "--headless", "--host", graph.url,
             "--users", str(args.users), "--spawn-rate", str(args.users), "--run-time", f"{args.duration_s + 25}s",
             "--only-summary"], cwd=ROOT, env=env, stdout=(OUT / "locust.log").open("w"), stderr=subprocess.STDOUT)
        time.sleep(15)  # let the load settle
        replicas = {}
        for proc in psutil.Process(graph.pid).children(recursive=True):
            name = serve_process_name(" ".join(proc.cmdline()))
            if name and name not in ("ServeController", "ProxyActor", "haproxy"):
                replicas[f"{name}-{proc.pid}"] = proc.pid
        spies = []
        for label, pid in replicas.items():
            base = [str(BIN / "py-spy"), "record", "--pid", str(pid), "--duration", str(args.duration_s),
                    "--rate", "100", "--nonblocking"]
            spies.append(subprocess.Popen([*base, "--format", "raw", "-o", str(OUT / f"{label}.txt")],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            spies.append(subprocess.Popen([*base, "-o", str(OUT / f"{label}.svg")],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for spy in spies:
            spy.wait()
        locust.wait()
    for label in replicas:
        share, own, total = top_frames(OUT / f"{label}.txt")
        print(f"\n== {label}: {total} on-CPU samples ({OUT.relative_to(ROOT)}/{label}.svg)")
        print("   self time:")
        for frame, s in share:
            print(f"   {s:6.1%}  {frame}")
        print("   project functions, inclusive:")
        for frame, s in own:
            print(f"   {s:6.1%}  {frame}")


if __name__ == "__main__":
    main()
