"""Handing freed memory back to the operating system between the phases of a big job."""
from __future__ import annotations

import ctypes
import sys

__all__ = ["release_memory"]


def release_memory() -> None:
    """Hand memory freed by the last phase of a job back to the operating system.

    pyarrow keeps freed buffers in its pool and glibc keeps freed heap pages
    for reuse; neither is in use, but both stay resident, and the next phase's
    arrays would pile up on top of them (a million-image build's peak memory
    is judged by this). Harmless where either is not available.
    """
    try:
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
    except (ImportError, AttributeError):  # pragma: no cover - older pyarrow
        pass
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
            pass
