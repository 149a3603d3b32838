"""Bias audit on natural images: CIFAR-10 test vs the Imagenette subset.

Build the two datasets first (pixels unchanged; see the recipes):

    .venv/bin/datakit build recipes/cifar10_test.toml --out demo/cifar10_test --data-root ../shared/data
    .venv/bin/datakit build recipes/imagenette_subset.toml --out demo/imagenette_subset --data-root ../shared/data
    .venv/bin/python bench/audit_natural.py [--out out/audit_natural] [--threads 2] [--cold] [--weights PATH]

Their overlapping classes: CIFAR "dog" ~ Imagenette n02102040 (English
springer), CIFAR "truck" ~ n03417042 (garbage truck); the class map says so.
Runs the full default audit (every registered audit) unless --audits says
otherwise, and prints its wall time, Name That Dataset accuracy for every
probe side by side (pixels, conv net at 64x64, HOG, GIST, colour histograms,
and a pretrained backbone with --weights), the class-conditional accuracies
(CIFAR dog vs English springer, CIFAR truck vs garbage truck), the
cross-dataset matrix on dog/truck and the dataset map's neighbour purity.
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
    ap.add_argument("--audits", default=None, help="comma-separated (default: every registered audit)")
    ap.add_argument("--weights", default=None, help="torchvision weights file for the pretrained feature space")
    ap.add_argument("--features", default=None, help="feature spaces (default: each audit's own)")
    ap.add_argument("--cold", action="store_true",
                    help="delete both datasets' caches (<dataset>/.cache: features, decoded arrays) first, so the "
                         "time includes every decode and feature extraction")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from datakit import open_dataset
    from datakit.report import run_audits, summary_frame, write_report

    if args.cold:
        import shutil
        from pathlib import Path

        for root in (args.cifar, args.imagenette):
            shutil.rmtree(Path(root) / ".cache", ignore_errors=True)
    datasets = [open_dataset(args.cifar), open_dataset(args.imagenette)]
    t0 = time.perf_counter()
    run = run_audits(datasets, args.audits, class_map=CLASS_MAP, weights=args.weights, features=args.features,
                     progress=lambda name, done: None if done else print(f"  running {name} ...", file=sys.stderr))
    total = time.perf_counter() - t0
    write_report(run, args.out, ["html", "json"])
    print(f"{len(datasets[0].manifest)} CIFAR-10 test images vs {len(datasets[1].manifest)} Imagenette images; "
          f"{total:.1f} s wall, {sum(run.cpu_seconds.values()):.1f} CPU-s of this process "
          f"(load average now {os.getloadavg()[0]:.1f})")
    print(summary_frame(run, limit=6).to_string(index=False))
    print("\nseconds per audit:", {k: round(v, 1) for k, v in run.seconds.items()})
    if run.status.get("name_that_dataset") == "ok":
        r = run.result("name_that_dataset")
        s = r.summary
        print(f"\nname_that_dataset: best {s['best_probe']} {s['accuracy']:.4f}, chance {s['chance']:.4f} "
              f"({s['n_train_per_dataset']} train + {s['n_test_per_dataset']} test per dataset)")
        print(r.tables["probes"].round(4).to_string(index=False))
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
    if run.status.get("dataset_map") == "ok":
        s = run.result("dataset_map").summary
        print(f"\ndataset_map ({run.result('dataset_map').info['features']}): {s['k']} nearest neighbours from the "
              f"same dataset {s['neighbour_same_dataset']:.3f} (mixed: {s['expected_if_mixed']:.3f}; "
              f"separation {s['separation']:.3f})")
    if run.status.get("average_image") == "ok":
        print("\naverage_image (nearest-class-mean accuracy vs chance):")
        print(run.result("average_image").tables["per_dataset"].round(4).to_string(index=False))
    print(f"\nreport: {args.out}/report.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
