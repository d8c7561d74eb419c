"""What a set of measured figures was measured on, taken when the measurement starts.

docs/EVALUATION.md once said its figures were "at commit fa1ca4c", yet no commit from the model that report measured
(746f9fe) to 2f9b8f2 reproduces them, while `safepath eval` and models/evaluate.py agree verdict for verdict at each.
The stamp was `git rev-parse HEAD` read when the report was written, after a run of many minutes in a checkout other
people commit to; nothing said whether the working tree matched that commit, nor which ONNX Runtime and CPU did the
int8 arithmetic. A report now carries all of it, read before any model loads.
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

# Tracked paths whose edits can change a verdict or a figure: the library, its configuration, the models and the
# evaluation's code. An uncommitted edit anywhere else (docs, tests) cannot.
VERDICT_PATHS = ("safepath", "configs", "models")
PACKAGES = ("onnxruntime", "onnxruntime-gpu", "tokenizers", "model2vec", "numpy")


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    return done.stdout.rstrip("\n") if done.returncode == 0 else ""  # a status line starts with a space


def changed_paths(root: Path) -> list[str]:
    """Tracked files under VERDICT_PATHS that differ from HEAD, staged or not. (An untracked module matters only once
    a tracked file imports it, and that tracked file is then listed.)"""
    out = _git(root, "status", "--porcelain", "--untracked-files=no", "--", *VERDICT_PATHS)
    return sorted(line[3:] for line in out.splitlines() if line)


def changed_since(root: Path, commit: str) -> list[str]:
    """Tracked files under VERDICT_PATHS that differ between `commit` and HEAD.

    Raises:
        subprocess.CalledProcessError: git cannot compare them (an unknown commit): never read as "nothing changed".
    """
    done = subprocess.run(["git", "diff", "--name-only", commit, "HEAD", "--", *VERDICT_PATHS], cwd=root,
                          capture_output=True, text=True, check=True)
    return done.stdout.split()


def cpuinfo() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo ("model name", "cpu family", "model", "flags", ...); empty
    where there is none to read."""
    fields: dict[str, str] = {}
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return fields
    for line in lines:
        key, _, value = line.partition(":")
        if not key.strip():
            break  # the first processor's block is enough
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu() -> str:
    """The CPU model and whether it has VNNI: dynamically quantized int8 matrix products take another code path in
    ONNX Runtime without it. With 8-bit weights that path saturated and scores differed between machines; the
    shipped models' 7-bit weights (models/onnx_export.py, `quantize_int8`) compute the same integer products on
    both, so figures should agree across hosts up to float rounding, which still differs by CPU generation."""
    name, fields = platform.processor() or platform.machine(), cpuinfo()
    if not fields:
        return name
    if name in ("", platform.machine()) and fields.get("model name"):
        name = fields["model name"]
    vnni = "VNNI" if set(fields.get("flags", "").split()) & {"avx512_vnni", "avx_vnni"} else "no VNNI"
    # A masked name ("Intel(R) Xeon(R) Processor") covers several generations, whose float kernels round differently.
    family, model = fields.get("cpu family"), fields.get("model")
    generation = f"family {family} model {model}, " if family and model else ""
    return f"{name} ({generation}{vnni})"


def provenance(root: Path) -> dict:
    """The commit, the verdict-changing files that differ from it, the runtime packages and the CPU."""
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {"commit": _git(root, "rev-parse", "--short", "HEAD"), "changed": changed_paths(root),
            "packages": packages, "cpu": cpu(), "python": platform.python_version()}


def describe(p: dict) -> str:
    """One sentence for a report's header."""
    commit = f"commit {p.get('commit') or 'unknown'}"
    if p.get("changed"):
        commit += f" **with uncommitted changes to {', '.join(p['changed'])}** (the figures are not that commit's)"
    runtime = ", ".join(f"{k} {v}" for k, v in p.get("packages", {}).items())
    added = "".join(f" The cross-writer rows of fold {', '.join(a['folds'])} were added at commit {a['commit']}, "
                    "where no file that can change a verdict differed (`models.evaluate --add`)."
                    for a in p.get("added", []))
    return (f"Measured at {commit}, on {p.get('cpu', 'an unrecorded CPU')}, Python {p.get('python', '?')}, "
            f"{runtime}.{added}")
