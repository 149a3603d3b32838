"""Benchmark: the full default audit of the digits benchmark, with each audit's share of the time.

The digits benchmark is MNIST + USPS + scikit-learn's digits, all normalized
MNIST-style to 28x28 (``make demo`` builds it to demo/digits). The audit must
finish in under five minutes on two CPU cores, and find the bias: Name That
Dataset far above chance, and the drop from MNIST to USPS (next to ADDA's
source-only reference).

    .venv/bin/python bench/audit_digits.py [demo/digits] [--out out/audit_digits] [--threads 2]

Prints the per-audit times (and shares), then the key results. Writes the
report (report.html, report.json) to --out.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", nargs="?", default="demo/digits")
    ap.add_argument("--out", default="out/audit_digits")
    ap.add_argument("--threads", type=int, default=2, help="torch / BLAS threads")
    ap.add_argument("--audits", default=None, help="comma-separated subset (default: all)")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from datakit import open_dataset
    from datakit.report import run_audits, summary_frame, write_report

    t0, c0 = time.perf_counter(), time.process_time()
    ds = open_dataset(args.dataset)
    n = len(ds.manifest)
    print(f"dataset {args.dataset}: {n} images, sources "
          f"{ds.manifest['source'].value_counts().to_dict()}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} logical CPUs, torch threads {args.threads}, "
          f"load average before start {os.getloadavg()[0]:.1f}")

    def progress(name, done):
        if not done:
            print(f"  running {name} ...", file=sys.stderr, flush=True)

    run = run_audits([ds], args.audits, progress=progress)
    total, cpu_total = time.perf_counter() - t0, time.process_time() - c0
    write_report(run, args.out, ["html", "json"])
    print(f"\nper-audit wall time (total {total:.1f} s including opening the dataset; "
          f"load average now {os.getloadavg()[0]:.1f})")
    print("(CPU = CPU time of this process, all threads: on a machine shared with other jobs, the work done;"
          " on 2 idle cores the wall time lies between CPU/2 and CPU)")
    print(f"{'audit':24s} {'status':8s} {'wall s':>8s} {'share':>6s} {'CPU s':>8s} {'share':>6s}")
    for name, sec in run.seconds.items():
        cpu = run.cpu_seconds[name]
        print(f"{name:24s} {run.status[name]:8s} {sec:8.1f} {100 * sec / total:5.1f}% {cpu:8.1f} "
              f"{100 * cpu / cpu_total:5.1f}%")
    print(f"{'TOTAL':24s} {'':8s} {total:8.1f} {'':6s} {cpu_total:8.1f}   "
          f"wall {'under' if total < 300 else 'OVER'} 5 min, CPU {'under' if cpu_total < 300 else 'OVER'} 5 min")
    print()
    print(summary_frame(run).to_string(index=False))
    if run.status.get("name_that_dataset") == "ok":
        s = run.result("name_that_dataset").summary
        print(f"\nname_that_dataset: linear {s.get('accuracy_linear', float('nan')):.4f}, "
              f"conv {s.get('accuracy_conv', float('nan')):.4f}, chance {s['chance']:.4f} "
              f"({s['n_train_per_dataset']} train + {s['n_test_per_dataset']} test per source); "
              f"class-conditional {s.get('class_conditional_accuracy', float('nan')):.4f}")
    if run.status.get("cross_dataset") == "ok":
        r = run.result("cross_dataset")
        print("\ncross_dataset matrix (rows: trained on, columns: tested on):")
        print(r.tables["matrix"].round(4).to_string(index=False))
        print(r.tables["per_dataset"].round(4).to_string(index=False))
        if "adda_reference" in r.tables:
            print(r.tables["adda_reference"].round(4).to_string(index=False))
    print(f"\nreport: {args.out}/report.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
