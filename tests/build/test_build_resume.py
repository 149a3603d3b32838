"""A build killed with SIGKILL resumes from its staged chunks and ends identical."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

import datakit
from datakit.build import build_dataset

RECIPE = textwrap.dedent("""
    name = "resume"
    seed = 3
    [[sources]]
    name = "digits"
    kind = "sklearn-digits"
    [normalize]
    style = "mnist"
    [splits]
    train = 0.6
    val = 0.2
    test = 0.2
""")

# The child slows its source down (2 ms an item) so the kill lands mid-build;
# the work and its results are otherwise exactly the library's.
CHILD = textwrap.dedent("""
    import sys, time
    from datakit.sources.sklearn_digits import SklearnDigitsSource
    from datakit.build import build_dataset

    original = SklearnDigitsSource.iter_items
    def slow(self, *a, **k):
        for item in original(self, *a, **k):
            time.sleep(0.002)
            yield item
    SklearnDigitsSource.iter_items = slow
    build_dataset(sys.argv[1], sys.argv[2], workers=0, chunk_size=100)
""")


@pytest.mark.slow
def test_sigkill_then_rerun_gives_identical_manifest(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE)
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(recipe), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    chunk = out / ".build" / "digits" / "chunk-000002.parquet"
    deadline = time.monotonic() + 120
    while not chunk.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "the build finished before it could be killed: " + proc.stderr.read().decode()
    assert chunk.exists()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "datakit.json").exists()  # not complete
    staged = len(list((out / ".build" / "digits").glob("chunk-*.parquet")))
    assert 3 <= staged < 18

    resumed = build_dataset(recipe, out, workers=0, chunk_size=100)
    assert resumed.resumed and resumed.reused == staged * 100
    assert resumed.processed == 1797 - staged * 100

    clean = build_dataset(recipe, tmp_path / "clean", workers=0, chunk_size=100)
    a, b = datakit.open_dataset(out), datakit.open_dataset(clean.out)
    pd.testing.assert_frame_equal(a.manifest, b.manifest)
    pd.testing.assert_frame_equal(a.rejected, b.rejected)
    ia, ib = (json.loads((d / "datakit.json").read_text()) for d in (out, clean.out))
    assert ia["checksums"]["manifest_sha256"] == ib["checksums"]["manifest_sha256"]
    # no half-written image files remain; the store holds exactly the manifest's images
    stored = {p.stem for p in (out / "images").rglob("*") if p.is_file()}
    assert stored == set(a.manifest["id"])
    assert not (out / ".build").exists()
