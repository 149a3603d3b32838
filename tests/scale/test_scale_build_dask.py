"""A build on a Dask cluster equals the local-process build, and survives a killed worker."""
from __future__ import annotations

import os
import signal

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

distributed = pytest.importorskip("distributed", reason="the Dask backend needs `distributed` (pip install datakit[dask])")

from datakit import open_dataset  # noqa: E402
from datakit.build import build_dataset  # noqa: E402
from datakit.parallel import get_executor  # noqa: E402
from datakit.sources.idx import read_idx, write_idx  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

RECIPE = """\
name = "scale-test"
seed = 0
{sources}
[normalize]
style = "none"

[splits]
strategy = "fractions"
train = 0.8
test = 0.2
"""

IDX_SOURCE = """
[[sources]]
name = "{name}"
kind = "idx"
root = "{root}"
split = "{split}"
"""

N_DIGITS = 600


def _digits_idx(folder) -> str:
    """The first 600 real scikit-learn digits (8x8, scaled to 0-255) as an IDX pair; its recipe table."""
    d = load_digits()
    write_idx(folder / "train-images-idx3-ubyte", (d.images[:N_DIGITS] * 16).clip(0, 255).astype(np.uint8))
    write_idx(folder / "train-labels-idx1-ubyte", d.target[:N_DIGITS].astype(np.uint8))
    return IDX_SOURCE.format(name="digits", root=folder, split="train")


@pytest.fixture(scope="module")
def cluster():
    """One Dask LocalCluster on 127.0.0.1 with two single-threaded worker processes, for the module."""
    ex = get_executor(workers=2, scheduler="local-cluster")
    yield ex
    ex.close()


def _key(path) -> pd.DataFrame:
    m = open_dataset(path).manifest
    return m[["id", "label", "split", "source", "source_ref"]].sort_values("id").reset_index(drop=True)


def test_dask_build_equals_local_process_build(cluster, shared_data, tmp_path):
    """600 sklearn digits + 300 real MNIST test images, built twice: Dask local cluster vs 2 local processes."""
    images = read_idx(shared_data / "mnist" / "t10k-images-idx3-ubyte.gz")[:300]
    labels = read_idx(shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz")[:300]
    write_idx(tmp_path / "mnist300" / "t10k-images-idx3-ubyte", images)
    write_idx(tmp_path / "mnist300" / "t10k-labels-idx1-ubyte", labels)
    recipe = tmp_path / "recipe.toml"
    sources = _digits_idx(tmp_path / "digits") + IDX_SOURCE.format(name="mnist", root=tmp_path / "mnist300",
                                                                    split="test")
    recipe.write_text(RECIPE.format(sources=sources))
    seen = []
    dask = build_dataset(recipe, tmp_path / "dask", scheduler=cluster.address, batch_size=128, progress=seen.append)
    local = build_dataset(recipe, tmp_path / "local", workers=2, batch_size=128)
    assert sum(seen) == N_DIGITS + 300
    assert dask.kept + dask.rejected == N_DIGITS + 300
    assert (dask.kept, dask.rejected) == (local.kept, local.rejected)
    a, b = _key(tmp_path / "dask"), _key(tmp_path / "local")
    assert len(a) == dask.kept and set(a["source"]) == {"digits", "mnist"}
    pd.testing.assert_frame_equal(a, b)
    assert open_dataset(tmp_path / "dask").checksum == open_dataset(tmp_path / "local").checksum
    # the same bytes were stored: every image file of one build exists, identical, in the other
    for rel in open_dataset(tmp_path / "dask").manifest["path"][:50]:
        assert (tmp_path / "dask" / rel).read_bytes() == (tmp_path / "local" / rel).read_bytes()
    assert dask.info["timings"]["scheduler"] == cluster.address


def test_killed_worker_mid_build_loses_and_duplicates_nothing(cluster, tmp_path):
    """SIGKILL a busy Dask worker after the first batch is back; the build still accounts for every image once."""
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE.format(sources=_digits_idx(tmp_path)))
    client = cluster.client
    client.wait_for_workers(2, timeout=60)
    pids = client.run(os.getpid)
    killed = {}

    def progress(n: int) -> None:
        if killed:
            return
        busy = {addr: keys for addr, keys in client.processing().items() if keys}
        if not busy:  # the batches in flight all finished before this call: kill at the next one
            return
        addr = sorted(busy)[0]
        killed.update(pid=pids[addr], lost=list(busy[addr]))
        os.kill(pids[addr], signal.SIGKILL)

    result = build_dataset(recipe, tmp_path / "dask", scheduler=cluster.address, batch_size=16, progress=progress)
    assert killed["lost"], "the killed worker had batches in progress"
    assert result.kept + result.rejected == N_DIGITS
    ds = open_dataset(tmp_path / "dask")
    refs = pd.concat([ds.manifest["source_ref"], ds.rejected["source_ref"]])
    assert sorted(refs) == sorted(f"train-images-idx3-ubyte#{i}" for i in range(N_DIGITS))  # each input once
    assert not ds.manifest["id"].duplicated().any()
    assert all((ds.root / p).is_file() for p in ds.manifest["path"])
    # and it is the dataset an undisturbed local build makes
    build_dataset(recipe, tmp_path / "local", workers=2, batch_size=16)
    pd.testing.assert_frame_equal(_key(tmp_path / "dask"), _key(tmp_path / "local"))


def test_manifest_is_written_in_row_groups(tmp_path):
    """The build streams the manifest as Parquet row groups (many groups for a large build)."""
    from datakit.store.writer import DatasetWriter

    frames_made = []

    def frames():
        for i in range(5):
            frames_made.append(i)
            yield pd.DataFrame({"id": [f"{i}-{j}" for j in range(100)], "path": "p", "label": "0", "split": "train",
                                "phash": np.arange(100, dtype=np.uint64)})

    n = DatasetWriter(tmp_path).write_manifest(frames())
    meta = pq.ParquetFile(tmp_path / "manifest.parquet").metadata
    assert n == 500 and meta.num_rows == 500 and meta.num_row_groups == 5


def test_cli_build_with_scheduler(cluster, tmp_path):
    from click.testing import CliRunner

    from datakit.cli import cli

    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE.format(sources=_digits_idx(tmp_path)))
    runner = CliRunner()
    res = runner.invoke(cli, ["build", str(recipe), "--out", str(tmp_path / "ds"), "--scheduler", cluster.address,
                              "--quiet"])
    assert res.exit_code == 0, res.output
    assert f"{N_DIGITS} items processed" in res.output
    assert len(open_dataset(tmp_path / "ds").manifest) + len(open_dataset(tmp_path / "ds").rejected) == N_DIGITS
    bad = runner.invoke(cli, ["build", str(recipe), "--out", str(tmp_path / "bad"), "--scheduler", "dask"])
    assert bad.exit_code == 2  # a usage error, caught before any work
    assert not (tmp_path / "bad").exists()
    assert "Invalid scheduler 'dask'. Valid values are 'local-cluster'" in bad.output
    assert "Traceback" not in bad.output
