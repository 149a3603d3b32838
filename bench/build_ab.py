"""Benchmark: the digits build of a git revision against the working tree, in alternation, in one run.

Each round builds ``recipes/digits.toml`` once with each side, in alternating
order (A B, then B A, ...), so that a machine that gets slower or faster during
the run weighs on both the same. Each build runs in a fresh Python process
(``build_dataset`` with 2 workers, a fresh output directory, after an
``os.sync()``), and the report gives, per build, the wall time, the CPU time of
the build's process and of its workers, the build's own timings and its data
checksum, and then the median and best wall time of each side.

The revision is checked out into a temporary ``git worktree`` (removed at the
end) and imported from there; the working tree is imported from the repository
root. Both use this virtual environment.

Usage::

    .venv/bin/python bench/build_ab.py --ref HEAD --data-root ../shared/data [--rounds 4]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CODE = """
import json, resource, sys
import datakit
assert datakit.__file__.startswith({root!r}), datakit.__file__
from datakit.build import build_dataset
build_dataset({recipe!r}, {out!r}, data_root={data_root!r}, workers={workers})
s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({{"parent_cpu": s.ru_utime + s.ru_stime, "workers_cpu": c.ru_utime + c.ru_stime}}))
"""


def run_build(tree: Path, data_root: str, workers: int) -> dict:
    """One digits build imported from ``tree``; wall time, CPU split and the build's timings."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-ab-"))
    out = tmp / "digits"
    code = _CODE.format(root=str(tree), recipe=str(tree / "recipes" / "digits.toml"), out=str(out),
                        data_root=data_root, workers=workers)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(tree))
    os.sync()  # no write-back of the previous build during this one's clock
    t0 = time.perf_counter()
    # cwd: the tree, so that ``-c`` imports datakit from it (the current directory comes first on sys.path)
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=tree, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    cpu = json.loads(done.stdout.strip().splitlines()[-1])
    info = json.loads((out / "datakit.json").read_text())
    shutil.rmtree(tmp, ignore_errors=True)
    return {"wall_s": wall, **cpu, "process_s": info["timings"]["process_seconds"],
            "finalize_s": info["timings"]["finalize_seconds"], "data_sha256": info["checksums"]["data_sha256"][:16]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", default="HEAD", help="the git revision to compare the working tree with")
    ap.add_argument("--data-root", default=os.environ.get("DATAKIT_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    worktree = Path(tempfile.mkdtemp(prefix="bench-ab-ref-")) / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(worktree), args.ref], check=True)
    sides = {args.ref: worktree, "working tree": ROOT}
    results: dict[str, list[dict]] = {name: [] for name in sides}
    print(f"# {os.cpu_count()} cores, {args.workers} workers; load average before: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    try:
        for r in range(args.rounds):
            order = list(sides) if r % 2 == 0 else list(sides)[::-1]
            for name in order:
                x = run_build(sides[name], args.data_root, args.workers)
                results[name].append(x)
                print(f"round {r + 1} {name}: wall {x['wall_s']:.2f} s (per-image pass {x['process_s']:.2f}, finalize "
                      f"{x['finalize_s']:.2f}); CPU: build process {x['parent_cpu']:.2f} s, workers "
                      f"{x['workers_cpu']:.2f} s; data_sha256 {x['data_sha256']}", flush=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], check=False)
        shutil.rmtree(worktree.parent, ignore_errors=True)
    for name, xs in results.items():
        walls = [x["wall_s"] for x in xs]
        print(f"{name}: wall median {statistics.median(walls):.2f} s, best {min(walls):.2f} s; build-process CPU median "
              f"{statistics.median(x['parent_cpu'] for x in xs):.2f} s; workers CPU median "
              f"{statistics.median(x['workers_cpu'] for x in xs):.2f} s")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
