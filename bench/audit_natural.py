"""Bias audit on natural images: CIFAR-10 test vs the Imagenette subset.

Build the two datasets first (pixels unchanged; see the recipes):

    .venv/bin/datakit build recipes/cifar10_test.toml --out demo/cifar10_test --data-root ../shared/data
    .venv/bin/datakit build recipes/imagenette_subset.toml --out demo/imagenette_subset --data-root ../shared/data
    .venv/bin/python bench/audit_natural.py [--out out/audit_natural] [--threads 2]

Their overlapping classes: CIFAR "dog" ~ Imagenette n02102040 (English
springer), CIFAR "truck" ~ n03417042 (garbage truck); the class map says so.
Prints Name That Dataset accuracy (both probes), the cross-dataset matrix on
dog/truck, and where the average images went (report.html).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

CLASS_MAP = {"imagenette_subset": {"n02102040": "dog", "n03417042": "truck"}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cifar", default="demo/cifar10_test")
    ap.add_argument("--imagenette", default="demo/imagenette_subset")
    ap.add_argument("--out", default="out/audit_natural")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--audits", default="name_that_dataset,cross_dataset,average_image,low_level_stats,"
                                        "orientation_artifacts,balance")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from datakit import open_dataset
    from datakit.report import run_audits, summary_frame, write_report

    datasets = [open_dataset(args.cifar), open_dataset(args.imagenette)]
    t0 = time.perf_counter()
    run = run_audits(datasets, args.audits, class_map=CLASS_MAP,
                     progress=lambda name, done: None if done else print(f"  running {name} ...", file=sys.stderr))
    total = time.perf_counter() - t0
    write_report(run, args.out, ["html", "json"])
    print(f"{len(datasets[0].manifest)} CIFAR-10 test images vs {len(datasets[1].manifest)} Imagenette images; "
          f"{total:.1f} s (load average now {os.getloadavg()[0]:.1f})")
    print(summary_frame(run, limit=6).to_string(index=False))
    if run.status.get("name_that_dataset") == "ok":
        r = run.result("name_that_dataset")
        s = r.summary
        print(f"\nname_that_dataset: linear {s.get('accuracy_linear', float('nan')):.4f}, conv "
              f"{s.get('accuracy_conv', float('nan')):.4f}, chance {s['chance']:.4f} "
              f"({s['n_train_per_dataset']} train + {s['n_test_per_dataset']} test per dataset)")
        print(r.tables["learning_curve"].round(4).to_string(index=False))
        if "class_conditional" in r.tables:
            print(r.tables["class_conditional"].round(4).to_string(index=False))
        print("notes:", *r.notes, sep="\n  ")
    if run.status.get("cross_dataset") == "ok":
        r = run.result("cross_dataset")
        print(f"\ncross_dataset on {r.info['shared_classes']} ({r.info['model']}, images "
              f"{r.info['image_size']}):")
        print(r.tables["matrix"].round(4).to_string(index=False))
        print(r.tables["per_dataset"].round(4).to_string(index=False))
    if run.status.get("average_image") == "ok":
        print("\naverage_image (nearest-class-mean accuracy vs chance):")
        print(run.result("average_image").tables["per_dataset"].round(4).to_string(index=False))
    print(f"\nreport: {args.out}/report.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
