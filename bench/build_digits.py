"""Benchmark: wall time and peak memory of building recipes/digits.toml.

Runs ``datakit build`` in a subprocess (a fresh output directory), polls the
resident memory of its whole process tree (main process + workers) with
psutil every 0.1 s, and reports wall time, peak tree RSS, peak main-process
RSS and images per second; then re-runs the build to time the no-work path.

Usage::

    .venv/bin/python bench/build_digits.py --data-root ../shared/data --workers 2 [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str], env: dict) -> dict:
    t0 = time.perf_counter()
    proc = psutil.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak_tree = peak_main = 0
    while proc.poll() is None:
        try:
            procs = [proc] + proc.children(recursive=True)
            rss = []
            for p in procs:
                try:
                    rss.append(p.memory_info().rss)
                except psutil.NoSuchProcess:
                    rss.append(0)
            peak_tree = max(peak_tree, sum(rss))
            peak_main = max(peak_main, rss[0])
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.1)
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(err.decode())
        raise SystemExit(f"build failed with exit status {proc.returncode}")
    return {"wall_s": wall, "peak_tree_rss_mib": peak_tree / 2**20, "peak_main_rss_mib": peak_main / 2**20,
            "stdout": out.decode()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "digits.toml"))
    ap.add_argument("--data-root", default=os.environ.get("DATAKIT_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=None, help="output directory (default: a temporary one, removed after)")
    args = ap.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench-digits-")) / "digits"
    if out.exists():
        shutil.rmtree(out)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    exe = str(Path(sys.executable).with_name("datakit"))
    cmd = [exe, "build", args.recipe, "--out", str(out), "--data-root", args.data_root,
           "--workers", str(args.workers), "--quiet"]
    print("command:", " ".join(cmd))
    first = run(cmd, env)
    info = json.loads((out / "datakit.json").read_text())
    second = run(cmd, env)
    t = info["timings"]
    print(first["stdout"])
    print(f"cores: {os.cpu_count()}, workers: {args.workers}")
    print(f"images in: {t['processed_items']}, kept: {info['counts']['kept']}, rejected: {info['counts']['rejected']}")
    print(f"wall time (process start to exit): {first['wall_s']:.1f} s")
    print(f"  per-image pass: {t['process_seconds']:.1f} s ({t['images_per_second']:.0f} images/s); "
          f"finalize (dedup, splits, manifest): {t['finalize_seconds']:.1f} s")
    print(f"peak RSS, whole process tree: {first['peak_tree_rss_mib']:.0f} MiB; "
          f"main process: {first['peak_main_rss_mib']:.0f} MiB")
    print(f"re-run of the finished build (no work): {second['wall_s']:.2f} s")
    if not args.out:
        shutil.rmtree(out.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
