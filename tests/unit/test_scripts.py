"""The scripts in models/, benchmarks/ and loadtests/ run as packages (`python -m package.module` from the
repository root), never by editing sys.path, and share one percentile."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.serve_graph import percentiles
from safepath.evaluation import percentile

ROOT = Path(__file__).resolve().parents[2]
SCRIPT_FOLDERS = ("models", "benchmarks", "loadtests")
# Only the `train` extra brings these; a script that needs one at import cannot show --help without it.
TRAIN_ONLY = ("torch", "transformers", "sklearn", "sentence_transformers", "model2vec")


def _sources() -> list[Path]:
    return sorted(p for folder in SCRIPT_FOLDERS for p in (ROOT / folder).rglob("*.py"))


def _uses_sys_path(source: str) -> bool:
    return any(isinstance(node, ast.Attribute) and node.attr == "path"
               and isinstance(node.value, ast.Name) and node.value.id == "sys"
               for node in ast.walk(ast.parse(source)))


def _entry_points() -> list[str]:
    """Every module with a `__main__` block, as the dotted name `python -m` takes."""
    return [".".join(p.relative_to(ROOT).with_suffix("").parts) for p in _sources()
            if 'if __name__ == "__main__":' in p.read_text()]


def test_the_sys_path_check_sees_an_edit():
    assert _uses_sys_path("import sys\nsys.path.insert(0, '..')\n")
    assert not _uses_sys_path('"""Run it with sys.path untouched."""\nimport os\nos.path.join("a")\n')


def test_no_script_reads_or_edits_sys_path():
    offenders = [str(p.relative_to(ROOT)) for p in _sources() if _uses_sys_path(p.read_text())]
    assert offenders == []


@pytest.mark.parametrize("module", _entry_points())
def test_each_script_runs_as_a_module(module):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    missing = next((name for name in TRAIN_ONLY if f"No module named '{name}'" in proc.stderr), None)
    if missing:
        pytest.skip(f"{module} needs the train extra ({missing})")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage:")


def test_locust_loads_the_locustfile_by_path_from_the_repository_root():
    """How every caller runs it (`locust -f loadtests/locustfile.py`, cwd the root): locust puts the working
    directory on sys.path, and that alone lets the locustfile import `loadtests.*` and `benchmarks.traces`."""
    code = ("from locust.util.load_locustfile import load_locustfile\n"
            "users, shapes = load_locustfile('loadtests/locustfile.py')\n"
            "print(sorted(users), [type(s).__name__ for s in shapes])")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"SAFEPATH_SHAPE": "steady"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "['ReasoningTraffic'] ['SafePathShape']"


def test_the_entry_points_are_found_in_models_and_benchmarks():
    roots = {module.split(".")[0] for module in _entry_points()}
    assert roots == {"models", "benchmarks"}  # loadtests has no script of its own: locust loads its locustfile


def test_serve_benchmark_percentiles_are_the_shared_linear_interpolation():
    latencies = [float(v) for v in range(100, 0, -1)]  # unsorted on purpose
    ordered = sorted(latencies)
    assert percentiles(latencies) == {f"p{q}": round(percentile(ordered, q), 1) for q in (50, 95, 99)}
    assert percentiles(latencies)["p50"] == 50.5
    # One latency (a cell that barely ran) is its own percentiles, and none is zeros, as `percentile` answers.
    assert percentiles([7.0]) == {"p50": 7.0, "p95": 7.0, "p99": 7.0}
    assert percentiles([]) == {"p50": 0.0, "p95": 0.0, "p99": 0.0}
