"""WordNet for the taxonomy tests: provisioned into a temporary cache, never downloaded."""
from __future__ import annotations

import pytest

from datakit.errors import DatakitError


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
