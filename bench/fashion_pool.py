"""Offline demonstration of the candidates stage on Debian's Fashion-MNIST.

1. build a local pool of Fashion-MNIST PNGs with noisy shop captions
   (``datakit.sources.search.demo_pool.make_fashion_pool``; truth kept in
   ``POOL/ground_truth.csv``);
2. ``datakit index build POOL``;
3. ``datakit synsets wnids`` with the ten synsets of the class mapping;
4. ``datakit candidates ... --source local:POOL``;
5. precision (and recall) of the raw candidates per synset, against the truth.

Steps 2-4 run the real ``datakit`` command line (subprocesses), timed.

Usage::

    .venv/bin/python bench/fashion_pool.py [--n 70000] [--per-synset 10000] \
        [--pool demo/fashion_pool] [--out demo/fashion_candidates] [--report bench/results/candidates.md]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datakit.sources.search.demo_pool import FASHION_SYNSETS, candidate_precision, make_fashion_pool  # noqa: E402

DATAKIT = str(ROOT / ".venv" / "bin" / "datakit")


def md(frame: pd.DataFrame) -> str:
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in frame.itertuples(index=False)]
    head = "| " + " | ".join(map(str, frame.columns)) + " |\n|" + "---|" * len(frame.columns)
    return head + "\n" + "\n".join("| " + " | ".join(r) + " |" for r in cells)


def run(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    secs = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
    return secs, proc.stdout + proc.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=70000, help="pool size (all 70,000 by default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--wrong-share", type=float, default=0.10)
    ap.add_argument("--extra-share", type=float, default=0.15)
    ap.add_argument("--generic-share", type=float, default=0.05)
    ap.add_argument("--per-synset", type=int, default=10000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pool", default="demo/fashion_pool")
    ap.add_argument("--out", default="demo/fashion_candidates")
    ap.add_argument("--report", default=None, help="write the markdown report here")
    args = ap.parse_args()

    pool, out = ROOT / args.pool, ROOT / args.out
    for d in (pool, out):
        if d.exists():
            shutil.rmtree(d)
    t0 = time.perf_counter()
    truth = make_fashion_pool(pool, n=args.n, seed=args.seed, wrong_share=args.wrong_share,
                              extra_share=args.extra_share, generic_share=args.generic_share)
    t_pool = time.perf_counter() - t0
    wnids = pool.parent / f"{pool.name}_wnids.txt"
    wnids.write_text("".join(f"{c['synset']}  # {c['class']} {c['name']}\n" for c in FASHION_SYNSETS))
    categories = pool.parent / f"{pool.name}_categories.csv"

    def rel(p: Path) -> str:
        return os.path.relpath(p, ROOT) if str(p).startswith(str(ROOT)) else str(p)

    steps = [
        [DATAKIT, "index", "build", args.pool, "--quiet"],
        [DATAKIT, "synsets", "wnids", rel(wnids), "--out", rel(categories)],
        [DATAKIT, "candidates", rel(categories), "--source", f"local:{args.pool}",
         "--per-synset", str(args.per_synset), "--workers", str(args.workers), "--out", args.out, "--quiet"],
    ]
    timings, outputs = [], []
    for cmd in steps:
        secs, text = run(cmd)
        timings.append(secs)
        outputs.append(text)
        print(f"$ {' '.join(Path(c).name if c == DATAKIT else c for c in cmd)}   ({secs:.1f}s)\n{text}", flush=True)

    cand = pd.read_parquet(out / "candidates.parquet")
    rejected = pd.read_parquet(out / "rejected.parquet")
    prec = candidate_precision(cand, pool)
    names = {c["wnid"]: c["name"] for c in FASHION_SYNSETS}
    prec.insert(1, "class", [names.get(s, "") for s in prec["synset"]])
    noise = truth["noise"].value_counts().to_dict()
    run_info = json.loads((out / "run.json").read_text())
    print(md(prec))

    lines = [
        "# Candidates: Fashion-MNIST offline demonstration",
        "",
        "Machine: 2-core shared machine, other jobs running concurrently.",
        "",
        "Command:",
        "",
        "```",
        f".venv/bin/python bench/fashion_pool.py --n {args.n} --per-synset {args.per_synset} --workers {args.workers}"
        + (f" --report {args.report}" if args.report else ""),
        "```",
        "",
        f"Pool: {len(truth)} Fashion-MNIST images (seed {args.seed}) with shop captions; "
        f"wrong class in caption {args.wrong_share:.0%}, caption naming no class {args.generic_share:.0%}, "
        f"extra wrong tag {args.extra_share:.0%}. Realised noise kinds: "
        + ", ".join(f"{k} {v}" for k, v in sorted(noise.items())) + ".",
        "",
        "| step | seconds |",
        "|---|---|",
        f"| make pool (PNG + JSON sidecars + ground_truth.csv) | {t_pool:.1f} |",
        f"| `datakit index build` | {timings[0]:.1f} |",
        f"| `datakit synsets wnids` | {timings[1]:.1f} |",
        f"| `datakit candidates --source local:...` | {timings[2]:.1f} |",
        "",
        f"Candidates: {len(cand)} rows, {cand['id'].nunique()} unique images, "
        f"{int(cand['ambiguous'].sum())} rows ambiguous (image found for 2+ synsets); "
        f"{len(rejected)} rejected"
        + (f" ({', '.join(f'{k} {v}' for k, v in rejected['reason'].value_counts().items())})." if len(rejected) else "."),
        f"Queries: {run_info['counts']['queries']}.",
        "",
        "Precision of the raw candidates per synset (correct = the image's true Fashion-MNIST class maps to the "
        "synset it was found for); recall = correct / images of that class in the pool:",
        "",
        md(prec),
        "",
        "Commands run (steps 2-4) and their output:",
        "",
        "```",
    ]
    for cmd, text in zip(steps, outputs):
        lines.append("$ " + " ".join("datakit" if c == DATAKIT else c for c in cmd))
        lines.append(text.rstrip())
    lines += ["```", ""]
    if args.report:
        Path(ROOT / args.report).parent.mkdir(parents=True, exist_ok=True)
        (ROOT / args.report).write_text("\n".join(lines))
        print(f"report written to {args.report}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
