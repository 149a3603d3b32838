"""Load on the annotation app: N concurrent invited annotators against a real uvicorn server on 127.0.0.1.

Builds a synthetic candidate pool in a temporary directory, invites N workers,
starts ``datakit annotate serve`` as its own process, and runs N client
threads (one ``httpx.Client`` each, keep-alive) for a bounded time. Each
annotator loops: ``GET /api/next``, ``GET`` the grid's images (with
``--images``), ``POST /api/submit``. Afterwards every acknowledged vote is
looked up in the database: none may be missing, none stored twice, none
stored that was not acknowledged (requests that timed out are counted apart).

Usage::

    .venv/bin/python bench/annotate_load.py --workers 50 --seconds 20 --out bench/results/annotate.md
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from datakit import open_dataset  # noqa: E402
from datakit.crowd.credentials import CredentialStore  # noqa: E402
from datakit.crowd.db import VoteDB  # noqa: E402
from datakit.crowd.tasks import make_binary_tasks, save_tasks  # noqa: E402
from datakit.store.writer import write_dataset  # noqa: E402


def make_pool(root: Path, n_images: int, grid: int) -> int:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (n_images, 8, 8), dtype=np.uint8)
    classes = ["bag", "shirt", "shoe"]
    pool = write_dataset(root / "pool", images, [classes[i % 3] for i in range(n_images)], "train")
    m = open_dataset(pool).manifest
    gold_ids = m.groupby("label").head(20)["id"]
    import pandas as pd

    gold = pd.Series([True] * len(gold_ids), index=gold_ids.values)
    tasks = make_binary_tasks(m, grid_size=grid, gold=gold, gold_per_task=1, seed=0)
    save_tasks(pool, tasks)
    return pool, tasks["task"].nunique()


def percentile(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=50)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--images", action="store_true", help="also fetch every grid image, as the page does")
    p.add_argument("--n-images", type=int, default=3000)
    p.add_argument("--grid", type=int, default=12)
    p.add_argument("--out", type=Path, help="append the run (command, load, output) to this markdown file")
    args = p.parse_args(argv)

    lines: list[str] = []

    def say(msg=""):
        print(msg, flush=True)
        lines.append(msg)

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        pool, n_tasks = make_pool(Path(tmp), args.n_images, args.grid)
        tokens = CredentialStore(pool / "votes.sqlite").invite([f"w{k:03d}" for k in range(args.workers)])
        proc = subprocess.Popen([sys.executable, "-m", "datakit", "annotate", "serve", str(pool), "--port", "0",
                                 "--rate", "0", "--pause-below", "0"], cwd=ROOT, stderr=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, text=True)
        first = proc.stderr.readline()
        if "Serving" not in first:
            proc.kill()
            raise SystemExit(f"server did not start: {first!r}")
        port = int(first.split("http://127.0.0.1:")[1].split("/")[0])
        threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # drain
        base = f"http://127.0.0.1:{port}"

        lat: dict[str, list[float]] = {"next": [], "image": [], "submit": []}
        acked: list[tuple[str, str, str]] = []
        errors: Counter = Counter()
        timeouts = [0]
        lock = threading.Lock()
        deadline = [float("inf")]  # set when all annotators are ready
        start = threading.Barrier(args.workers + 1)

        def annotator(worker: str, token: str) -> None:
            mine_lat = {k: [] for k in lat}
            mine_acked, mine_err = [], Counter()
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30.0) as c:
                start.wait()
                k = 0
                while time.monotonic() < deadline[0]:
                    try:
                        t0 = time.perf_counter()
                        r = c.get("/api/next")
                        mine_lat["next"].append(time.perf_counter() - t0)
                        if r.status_code != 200:
                            mine_err[f"next {r.status_code}"] += 1
                            continue
                        task = r.json()
                        if task.get("done"):
                            break
                        if args.images:
                            for it in task["items"]:
                                t0 = time.perf_counter()
                                r = c.get(it["url"])
                                mine_lat["image"].append(time.perf_counter() - t0)
                                if r.status_code != 200:
                                    mine_err[f"image {r.status_code}"] += 1
                        answers = {it["item"]: ("yes" if (k + j) % 3 else "no") for j, it in enumerate(task["items"])}
                        k += 1
                        t0 = time.perf_counter()
                        r = c.post("/api/submit", json={"task": task["task"], "answers": answers})
                        mine_lat["submit"].append(time.perf_counter() - t0)
                        if r.status_code != 200:
                            mine_err[f"submit {r.status_code}"] += 1
                            continue
                        reply = r.json()
                        if reply["recorded"] == len(answers):
                            mine_acked += [(task["task"], i, worker) for i in answers]
                        else:
                            mine_err["submit partly duplicate"] += 1
                    except httpx.TimeoutException:
                        with lock:
                            timeouts[0] += 1
                    except httpx.HTTPError as exc:
                        mine_err[type(exc).__name__] += 1
            with lock:
                for key, v in mine_lat.items():
                    lat[key] += v
                acked.extend(mine_acked)
                errors.update(mine_err)

        threads = [threading.Thread(target=annotator, args=(w, t)) for w, t in tokens.items()]
        for t in threads:
            t.start()
        start.wait()
        deadline[0] = time.monotonic() + args.seconds
        t_start = time.perf_counter()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t_start
        load_after = os.getloadavg()
        proc.terminate()
        proc.wait(timeout=30)

        stored = VoteDB(pool / "votes.sqlite").frame()
        keys = list(zip(stored["task"], stored["item"], stored["worker"]))
        stored_set, acked_set = set(keys), set(acked)
        lost = acked_set - stored_set
        dup_db = len(keys) - len(stored_set)
        dup_acked = len(acked) - len(acked_set)
        unacked_stored = stored_set - acked_set

        n_req = sum(len(v) for v in lat.values())
        say(f"annotate load: {args.workers} annotators, {args.seconds:g} s, {n_tasks} tasks of {args.grid} images, "
            f"images fetched: {'yes' if args.images else 'no'}")
        say(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}; load average before "
            f"{load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, after "
            f"{load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
        say(f"requests: {n_req} in {wall:.1f} s = {n_req / wall:.1f} requests/s; "
            f"submissions {len(lat['submit'])} = {len(lat['submit']) / wall:.1f}/s; votes acknowledged {len(acked)} "
            f"= {len(acked) / wall:.1f}/s")
        for key, v in lat.items():
            if v:
                say(f"  {key:7s} n={len(v):6d}  p50 {1e3 * statistics.median(v):7.1f} ms  p99 "
                    f"{1e3 * percentile(v, 99):7.1f} ms  max {1e3 * max(v):7.1f} ms")
        allv = [x for v in lat.values() for x in v]
        say(f"  all     n={len(allv):6d}  p50 {1e3 * statistics.median(allv):7.1f} ms  p99 "
            f"{1e3 * percentile(allv, 99):7.1f} ms")
        say(f"votes in the database: {len(keys)}; acknowledged but missing: {len(lost)}; stored twice: {dup_db}; "
            f"acknowledged twice: {dup_acked}; stored but not acknowledged: {len(unacked_stored)} "
            f"(client timeouts: {timeouts[0]})")
        say(f"refusals/errors: {dict(errors) or 'none'}")
        ok = not lost and not dup_db and not dup_acked and (not unacked_stored or timeouts[0])
        say("RESULT: " + ("no vote lost or duplicated" if ok else "FAILED: votes lost or duplicated"))

    if args.out:
        cmd = " ".join([".venv/bin/python", "bench/annotate_load.py"] + [shlex.quote(a) for a in (argv or sys.argv[1:])])
        block = [f"\n## Run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n", f"```\n$ {cmd}", *lines, "```\n"]
        with open(args.out, "a", encoding="utf-8") as fh:
            fh.write("\n".join(block))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
