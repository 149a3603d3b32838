"""Exceptions shared by every stage."""
from __future__ import annotations

__all__ = ["DatakitError", "ImageRejected", "RecipeError"]


class DatakitError(Exception):
    """A user-facing error: the message says what went wrong and what to do.

    The CLI turns it into a clean message and exit status 1 (no traceback).
    """


class RecipeError(DatakitError, ValueError):
    """A recipe is malformed; the message names the key and the valid choices."""


class ImageRejected(DatakitError):
    """One image is not kept; ``reason`` is a short machine-readable code.

    Parameters
    ----------
    reason : str
        Short code stored in ``rejected.parquet`` (``"blank"``, ``"truncated"``,
        ``"not_an_image"``, ``"decompression_bomb"``, ...).
    detail : str, optional
        Human-readable explanation.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)

    def __reduce__(self):  # picklable across process and Dask workers
        return (type(self), (self.reason, self.detail))
