"""Audits read only the manifest columns they declare (issue 13, step 3)."""
from __future__ import annotations

import numpy as np
import pytest

import datakit
from audits import AUDITS, get_audit, list_audits
from audits.base import AuditResult
from datakit.report import run_audits
from datakit.store.writer import write_dataset


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images[:200] * (255 / 16)).astype(np.uint8)
    splits = ["train"] * 150 + ["test"] * 50
    return write_dataset(tmp_path_factory.mktemp("cols") / "digits", images, [str(t) for t in d.target[:200]],
                         splits, source="sklearn_digits")


def test_every_audit_declares_its_columns():
    for name in list_audits():
        cols = get_audit(name).manifest_columns
        assert cols is not None and "source_ref" not in cols and "query" not in cols, name


def test_a_view_holds_only_the_declared_columns(digits_dir):
    ds = datakit.open_dataset(digits_dir)
    view = ds.select_columns(["phash"])
    assert list(view.manifest.columns) == ["label", "split", "phash"]
    assert "manifest" not in vars(ds)  # the view does not load (or share) the full manifest
    assert view.checksum == ds.checksum == ds.info.get("checksums", {}).get("data_sha256", ds.checksum)
    full = ds.manifest
    assert set(full.columns) > set(view.manifest.columns)
    # the streamed checksum is the one computed from the whole manifest in memory
    import hashlib

    h = hashlib.sha256()
    for col in ("id", "label", "split"):
        h.update("\n".join(full[col].astype("string").fillna("None")).encode())
    assert ds.checksum == h.hexdigest()


def test_run_audits_hands_each_audit_its_columns(digits_dir, monkeypatch):
    seen = {}

    def probe(datasets, **_):
        seen["columns"] = list(datasets[0].manifest.columns)
        return AuditResult("column_probe", summary={"n": len(datasets[0].manifest)})

    probe.manifest_columns = ("id",)
    get_audit("balance")  # the built-in audits are registered before the test one is added
    monkeypatch.setitem(AUDITS._items, "column_probe", probe)
    ds = datakit.open_dataset(digits_dir)
    run = run_audits([ds], names=["column_probe", "balance"])
    assert run.status == {"column_probe": "ok", "balance": "ok"}
    assert seen["columns"] == ["label", "split", "id"]
    assert "manifest" not in vars(ds)  # the caller's dataset never loaded the whole manifest
