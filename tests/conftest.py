"""Shared fixtures: where the real data lives, and skips when it is absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from datakit.errors import DatakitError

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DATAKIT_SHARED_DATA", ROOT.parent / "shared" / "data"))
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real MNIST, USPS, CIFAR-10, Imagenette, Caltech101 files)."""
    if not (SHARED_DATA / "SOURCES.md").exists():
        pytest.skip(f"real data not found at {SHARED_DATA} (see shared/data/SOURCES.md)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def fashion_mnist() -> Path:
    """Debian's dataset-fashion-mnist IDX files."""
    if not any(FASHION_MNIST.glob("*idx*")):
        pytest.skip(f"Fashion-MNIST not found at {FASHION_MNIST} (apt-get install dataset-fashion-mnist)")
    return FASHION_MNIST


@pytest.fixture(scope="session")
def wn(tmp_path_factory):
    """nltk's WordNet reader; provisioned offline into a session cache (skips when impossible)."""
    from datakit.taxonomy.wordnet import get_wordnet

    mp = pytest.MonkeyPatch()
    mp.setenv("DATAKIT_CACHE", str(tmp_path_factory.mktemp("datakit-cache")))
    mp.setenv("DATAKIT_OFFLINE", "1")
    try:
        yield get_wordnet(allow_download=False)
    except DatakitError as exc:
        pytest.skip(f"no WordNet available offline ({exc})")
    finally:
        mp.undo()
