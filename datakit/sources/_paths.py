"""Private helpers shared by the built-in sources: option checks and data-root paths."""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from datakit.errors import DatakitError

__all__ = ["DATA_ENV", "check_options", "candidate_paths", "resolve_path", "check_choice"]

#: Environment variable naming the folder relative data paths are resolved against.
DATA_ENV = "DATAKIT_DATA"


def _label(kind: str, name: str | None) -> str:
    return f"source {name!r} (kind {kind!r})" if name and name != kind else f"source kind {kind!r}"


def check_options(kind: str, name: str | None, options: dict[str, Any], valid: Iterable[str]) -> None:
    """Raise DatakitError for an option name the source does not take."""
    valid = sorted(valid)
    for key in options:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            shown = ", ".join(valid) if valid else "(none)"
            raise DatakitError(f"{_label(kind, name)} got unknown option {key!r}.{hint} "
                               f"Valid options are {{{shown}}}.")


def check_choice(kind: str, name: str | None, option: str, value: Any, valid: Sequence[Any]) -> Any:
    """Raise DatakitError unless ``value`` is one of ``valid``; return it."""
    if value not in valid:
        shown = ", ".join(repr(v) for v in valid)
        raise DatakitError(f"{_label(kind, name)}: unknown value {value!r} for option {option!r}. "
                           f"Valid values are {{{shown}}}.")
    return value


def candidate_paths(value: str | os.PathLike, data_root: str | os.PathLike | None) -> list[Path]:
    """Where a path option may live: as given when absolute; otherwise under
    ``data_root``, then under ``$DATAKIT_DATA``, then the working directory."""
    p = Path(os.path.expandvars(os.fspath(value))).expanduser()
    if p.is_absolute():
        return [p]
    out: list[Path] = []
    for base in (data_root, os.environ.get(DATA_ENV) or None):
        if base:
            out.append(Path(base).expanduser() / p)
    out.append(Path.cwd() / p)
    seen: list[Path] = []
    for c in out:
        if c not in seen:
            seen.append(c)
    return seen


def resolve_path(value: Any, *, option: str, kind: str, name: str | None,
                 data_root: str | os.PathLike | None, want: str = "file") -> Path:
    """The first existing candidate for a path option, or a DatakitError saying what was tried.

    Parameters
    ----------
    want : {"file", "dir", "any"}
        What the path must be.
    """
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise DatakitError(f"{_label(kind, name)}: option {option!r} must be a path, got {value!r}")
    tried = candidate_paths(value, data_root)
    for c in tried:
        if (want == "file" and c.is_file()) or (want == "dir" and c.is_dir()) or (want == "any" and c.exists()):
            return c
    what = {"file": "file", "dir": "folder", "any": "path"}[want]
    tried_s = ", ".join(str(c) for c in tried)
    hint = ("Check the path, or point data_root (recipe), --data-root or the "
            f"{DATA_ENV} environment variable at the folder that holds it.")
    if not Path(os.fspath(value)).is_absolute() and not data_root and not os.environ.get(DATA_ENV):
        hint = f"No data root is set: use data_root in the recipe, --data-root, or {DATA_ENV}."
    raise DatakitError(f"{_label(kind, name)}: option {option} = {os.fspath(value)!r}: no such {what}; "
                       f"tried {tried_s}. {hint}")
