"""Start the Serve graph the way `make serve` does, for benchmarks and soak runs, and sample its replicas' memory.

    with running_graph(profiles=..., log_path=...) as graph:      # python -m deployments.launch <config>
        requests.get(graph.url + "/readyz")

The graph runs in a child process (`deployments.launch`, so the same throughput mode `make serve` picks) from
serve_config.yaml with a free port and the given profiles file; leaving the block stops it (SIGINT to its process
group, the way Ctrl-C stops `make serve`, then SIGKILL to the group if it lingers). `serve run` starts a private
Ray instance whose ports Ray picks, never Redis's 6379.

`ReplicaMemory` samples the resident memory of every Serve replica (`ray::ServeReplica:<app>:<Deployment>`), the
controller, the proxy and haproxy with psutil, from a background thread.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.services import free_port

ROOT = Path(__file__).resolve().parent.parent
SERVE_CONFIG = ROOT / "serve_config.yaml"
APP = "safepath"


def graph_config(port: int, profiles: Path, folder: Path, *, env: Mapping[str, str] | None = None,
                 fixed_replicas: bool = False, serve_config: Path = SERVE_CONFIG) -> dict:
    """`serve_config` (serve_config.yaml) with another port and profiles file, `env` added to the app's environment.

    A SQLite audit trail moves into `folder`, so runs never write into the database of a `make serve` running
    beside them; `fixed_replicas` pins each deployment to one replica.
    """
    config = yaml.safe_load(serve_config.read_text())
    config["http_options"]["port"] = port
    (app,) = config["applications"]
    app["args"]["profiles"] = str(profiles)
    env_vars = app.setdefault("runtime_env", {}).setdefault("env_vars", {})
    if str(env_vars.get("SAFEPATH_AUDIT_URL", "")).startswith("sqlite:"):
        env_vars["SAFEPATH_AUDIT_URL"] = f"sqlite:///{folder / 'audit.db'}"
    env_vars.update(env or {})
    if fixed_replicas:
        for deployment in app["deployments"]:
            deployment.pop("autoscaling_config", None)
            deployment["num_replicas"] = 1
    return config


@dataclass
class Graph:
    url: str
    pid: int
    started_s: float  # seconds from the launch to the first 200 of /readyz


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=10) as r:
            return r.status == 200
    except OSError:
        return False


@contextmanager
def running_graph(profiles: Path, log_path: Path, *, env: Mapping[str, str] | None = None,
                  fixed_replicas: bool = False, serve_config: Path = SERVE_CONFIG,
                  timeout_s: float = 400) -> Iterator[Graph]:
    """The graph serving `profiles` on a free port until the block ends.

    Raises:
        RuntimeError: the graph did not answer /readyz within `timeout_s`, or its process exited.
    """
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="safepath-graph-"))
    config = folder / "serve_config.yaml"
    config.write_text(yaml.safe_dump(graph_config(port, profiles, folder, env=env, fixed_replicas=fixed_replicas,
                                                        serve_config=serve_config)))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("w")
    began = time.perf_counter()
    # Own process group, so stopping it reaches `serve run` and the Ray processes it started, and nothing else.
    proc = subprocess.Popen([sys.executable, "-m", "deployments.launch", str(config)], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        while not _ready(url):
            if proc.poll() is not None:
                raise RuntimeError(f"the graph exited with {proc.returncode}; see {log_path}")
            if time.perf_counter() - began > timeout_s:
                raise RuntimeError(f"the graph was not ready after {timeout_s:.0f} s; see {log_path}")
            time.sleep(1)
        yield Graph(url, proc.pid, time.perf_counter() - began)
    finally:
        _stop_group(proc)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def _stop_group(proc: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGINT, 60), (signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    # `serve run` exits before every Ray worker has; the group (ours alone) must be empty before we go on.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _group_alive(proc.pid):
        time.sleep(0.5)
    if _group_alive(proc.pid):
        os.killpg(proc.pid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def serve_process_name(title: str, app: str = APP) -> str | None:
    """The name a Serve process goes by in reports: its deployment for a replica, else ServeController etc."""
    if f"ServeReplica:{app}:" in title:
        # Ray appends the running method to the title (`...:Ingress.handle_request`): keep the deployment.
        return title.split(f"ServeReplica:{app}:")[1].split()[0].split(".")[0]
    for name in ("ServeController", "ProxyActor"):
        if title.startswith(f"ray::{name}"):
            return name
    head = title.split()[0] if title else ""
    return "haproxy" if Path(head).name == "haproxy" else None


@dataclass
class ReplicaMemory:
    """Samples every `interval_s` the RSS (MB) of each Serve process; `samples` holds (t_s, name, pid, rss_mb).

    Only descendants of `root_pid` count (set it to `Graph.pid` once the graph is launched; nothing is sampled
    before): another Serve app of the same name may run on the machine, a test session's for instance.
    """

    interval_s: float = 2.0
    root_pid: int | None = None
    samples: list[tuple[float, str, int, float]] = field(default_factory=list)
    marks: list[tuple[float, str]] = field(default_factory=list)  # (t_s, phase) for plots

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="replica-memory", daemon=True)
        self.t0 = time.perf_counter()

    def __enter__(self) -> ReplicaMemory:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop sampling (before shutting the graph down, so its teardown stays out of the series)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def mark(self, phase: str) -> None:
        self.marks.append((time.perf_counter() - self.t0, phase))

    def sample(self) -> None:
        import psutil

        if self.root_pid is None:
            return
        t = time.perf_counter() - self.t0
        try:
            procs = psutil.Process(self.root_pid).children(recursive=True)
        except psutil.Error:
            return
        for proc in procs:
            try:
                name = serve_process_name(" ".join(proc.cmdline()))
                if name:
                    self.samples.append((round(t, 1), name, proc.pid, proc.memory_info().rss / 2**20))
            except (psutil.Error, IndexError):
                continue

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def series(self) -> dict[tuple[str, int], list[tuple[float, float]]]:
        return series_by_process(self.samples)


def series_by_process(samples) -> dict[tuple[str, int], list[tuple[float, float]]]:
    """(t_s, name, pid, rss_mb) samples grouped as (name, pid) -> [(t_s, rss_mb)], in sampling order."""
    out: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for t, name, pid, rss in samples:
        out.setdefault((name, pid), []).append((t, rss))
    return out


def peak_by_name(samples) -> dict[str, float]:
    """(t_s, name, pid, rss_mb) samples -> the largest resident MB per name (a deployment: its largest replica)."""
    peaks: dict[str, float] = {}
    for _t, name, _pid, rss in samples:
        peaks[name] = max(peaks.get(name, 0.0), rss)
    return peaks


def troughs(points: list[tuple[float, float]], drop_mb: float = 2.0) -> list[tuple[float, float]]:
    """The samples right after each fall of more than `drop_mb`: what a replica keeps once garbage is collected.

    Python replicas grow between collections of long-lived garbage and fall back after each (a saw-tooth of
    10-20 MB every few minutes in the Ingress); a leak raises these troughs, collectable garbage does not.
    """
    return [points[i] for i in range(1, len(points)) if points[i - 1][1] - points[i][1] > drop_mb]


def slope_mb_per_h(points: list[tuple[float, float]], after_s: float) -> float | None:
    """Least-squares slope of RSS against time for the points at or after `after_s`, in MB per hour."""
    pts = [(t, v) for t, v in points if t >= after_s]
    if len(pts) < 3:
        return None
    n = len(pts)
    mean_t, mean_v = sum(t for t, _ in pts) / n, sum(v for _, v in pts) / n
    var_t = sum((t - mean_t) ** 2 for t, _ in pts)
    if var_t == 0:
        return None
    return sum((t - mean_t) * (v - mean_v) for t, v in pts) / var_t * 3600
