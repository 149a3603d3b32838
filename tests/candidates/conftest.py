"""Fixtures for the candidates tests: image bytes and a fake web server on 127.0.0.1."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def png_bytes():
    """A real 32x32 PNG (a Fashion-MNIST-like gradient) and a helper making others."""
    import io

    import numpy as np
    from PIL import Image

    def make(w=32, h=32, seed=0, fmt="PNG"):
        rng = np.random.default_rng(seed)
        arr = rng.integers(0, 256, size=(h, w), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format=fmt)
        return buf.getvalue()

    return make


@pytest.fixture
def web():
    """A fake web server on 127.0.0.1 (tests/candidates/fakeweb_candidates.py)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from fakeweb_candidates import FakeWeb

    server = FakeWeb()
    yield server
    server.close()
