"""datakit._memory: the allocator setting the ``datakit`` command makes, and that a user's choice wins."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

CODE = ("import pyarrow as pa; from datakit._memory import use_system_allocator, release_memory; "
        "use_system_allocator(); release_memory(); print(pa.default_memory_pool().backend_name)")


@pytest.mark.parametrize("env, want", [({}, "system"), ({"ARROW_DEFAULT_MEMORY_POOL": "jemalloc"}, "jemalloc")])
def test_use_system_allocator_unless_the_user_chose(env, want):
    base = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env={**base, **env},
                         check=True)
    assert out.stdout.strip() == want
