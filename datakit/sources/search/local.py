"""The ``local`` backend: a SQLite FTS5 index over a folder of images.

Indexed text per image: the file name (split at ``_``, ``-``, ``.``), a
sidecar ``<stem>.txt`` (caption), a sidecar ``<stem>.json`` (``caption``,
``title``, ``description``, ``alt``, ``tags``/``keywords``; ``license`` and
``attribution``/``author``/``creator`` are kept as provenance), and EXIF
``ImageDescription`` and Windows ``XPKeywords``/``XPTitle``/``XPSubject``/``XPComment``.
Queries are ranked with FTS5's bm25 (tags weigh double); words are matched
after Porter stemming, so "trousers" finds "trouser".
"""
from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
from pathlib import Path
from typing import Callable, Iterator

from datakit.errors import DatakitError
from datakit.sources.search.base import SearchBackend, SearchResult, register_backend

__all__ = ["IMAGE_EXTENSIONS", "INDEX_NAME", "PoolIndex", "LocalBackend", "fts_query", "read_image_text"]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")
#: Default index file, inside the pool directory.
INDEX_NAME = ".datakit-index.sqlite"
MATCH_MODES = ("all", "any")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, mtime REAL, size INTEGER,
    title TEXT, license TEXT, attribution TEXT
);
CREATE VIRTUAL TABLE IF NOT EXISTS docs USING fts5(name, caption, tags, exif, tokenize='porter unicode61');
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""
_EXIF_TEXT = {270: "ImageDescription", 0x9C9B: "XPTitle", 0x9C9C: "XPComment", 0x9C9E: "XPKeywords", 0x9C9F: "XPSubject"}


def _as_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, int) for v in value):  # XP* tags as a tuple of bytes
            return bytes(value).decode("utf-16-le", "ignore").rstrip("\x00")
        return " ".join(_as_text(v) for v in value)
    if isinstance(value, bytes):
        return value.decode("utf-16-le", "ignore").rstrip("\x00") if b"\x00" in value else value.decode("utf-8", "ignore")
    return str(value)


def _exif_text(path: Path) -> str:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            exif = im.getexif()
            parts = [_as_text(exif.get(tag)) for tag in _EXIF_TEXT]
            desc = im.info.get("Description") or im.info.get("description")  # PNG tEXt
            if desc:
                parts.append(_as_text(desc))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        logger.debug("no EXIF from %s: %s", path, exc)
        return ""
    return " ".join(p.replace(";", " ") for p in parts if p)


def read_image_text(path: str | os.PathLike) -> dict:
    """The searchable text and provenance of one pool image.

    Returns
    -------
    dict with ``name``, ``caption``, ``tags``, ``exif``, ``title``, ``license``, ``attribution`` (all str).
    """
    path = Path(path)
    out = {"name": re.sub(r"[_\-.]+", " ", path.stem), "caption": "", "tags": "", "exif": "", "title": "",
           "license": "", "attribution": ""}
    for txt in (path.with_suffix(".txt"), path.with_name(path.name + ".txt")):
        if txt.exists():
            out["caption"] = txt.read_text(errors="replace").strip()
            break
    for js in (path.with_suffix(".json"), path.with_name(path.name + ".json")):
        if js.exists():
            try:
                meta = json.loads(js.read_text(errors="replace"))
            except json.JSONDecodeError as exc:
                logger.warning("ignoring malformed sidecar %s: %s", js, exc)
                break
            if isinstance(meta, dict):
                caption = " ".join(_as_text(meta.get(k)) for k in ("caption", "title", "description", "alt", "text"))
                out["caption"] = " ".join(p for p in (out["caption"], caption.strip()) if p)
                tags = meta.get("tags", meta.get("keywords", ""))
                out["tags"] = _as_text(tags.split(",") if isinstance(tags, str) else tags)
                out["title"] = _as_text(meta.get("title"))
                out["license"] = _as_text(meta.get("license"))
                out["attribution"] = _as_text(meta.get("attribution") or meta.get("author") or meta.get("creator"))
            break
    out["exif"] = _exif_text(path)
    return out


def fts_query(query: str, mode: str = "all") -> str:
    """An FTS5 MATCH expression for a plain-words query (every word quoted, so no syntax errors).

    Examples
    --------
    >>> fts_query('T-shirt "top"')
    '"t-shirt" "top"'
    >>> fts_query("tennis shoe", mode="any")
    '"tennis" OR "shoe"'
    """
    if mode not in MATCH_MODES:
        raise ValueError(f"Unknown value {mode!r} for mode. Valid values are {set(MATCH_MODES)}.")
    words = [w.replace('"', "") for w in query.lower().split()]
    words = [f'"{w}"' for w in words if re.search(r"\w", w)]
    return (" OR " if mode == "any" else " ").join(words)


class PoolIndex:
    """The FTS5 index of a pool directory.

    Parameters
    ----------
    pool : path
        Directory of images (searched recursively; hidden entries skipped).
    index_path : path, optional
        The SQLite file (default ``POOL/.datakit-index.sqlite``).
    """

    def __init__(self, pool: str | os.PathLike, index_path: str | os.PathLike | None = None) -> None:
        self.pool = Path(pool).resolve()
        if not self.pool.is_dir():
            raise DatakitError(f"Pool directory {self.pool} does not exist or is not a directory.")
        self.index_path = Path(index_path) if index_path is not None else self.pool / INDEX_NAME

    @property
    def exists(self) -> bool:
        return self.index_path.exists()

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.index_path)
        con.executescript(_SCHEMA)
        return con

    def image_files(self) -> Iterator[Path]:
        """The pool's image files, in sorted order."""
        for dirpath, dirnames, filenames in os.walk(self.pool):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                    yield Path(dirpath) / name

    def build(self, progress: Callable[[int], None] | None = None, batch: int = 2000) -> dict:
        """Index new and changed images, drop vanished ones; return counts.

        Incremental: a file whose size and mtime (or whose sidecars') are
        unchanged is skipped, so re-running after adding images is cheap.

        Returns
        -------
        dict with ``indexed`` (new or changed), ``unchanged``, ``removed``, ``total``.
        """
        con = self._connect()
        known = {p: (m, s, i) for i, p, m, s in con.execute("SELECT id, path, mtime, size FROM files")}
        seen: set[str] = set()
        counts = {"indexed": 0, "unchanged": 0, "removed": 0, "total": 0}
        pending = 0
        try:
            for path in self.image_files():
                rel = path.relative_to(self.pool).as_posix()
                seen.add(rel)
                stat = path.stat()
                mtime = max([stat.st_mtime] + [p.stat().st_mtime for p in self._sidecars(path)])
                old = known.get(rel)
                if old is not None and old[0] == mtime and old[1] == stat.st_size:
                    counts["unchanged"] += 1
                else:
                    text = read_image_text(path)
                    if old is not None:
                        con.execute("DELETE FROM docs WHERE rowid = ?", (old[2],))
                        con.execute("DELETE FROM files WHERE id = ?", (old[2],))
                    cur = con.execute(
                        "INSERT INTO files (path, mtime, size, title, license, attribution) VALUES (?, ?, ?, ?, ?, ?)",
                        (rel, mtime, stat.st_size, text["title"], text["license"], text["attribution"]))
                    con.execute("INSERT INTO docs (rowid, name, caption, tags, exif) VALUES (?, ?, ?, ?, ?)",
                                (cur.lastrowid, text["name"], text["caption"], text["tags"], text["exif"]))
                    counts["indexed"] += 1
                    pending += 1
                    if pending >= batch:
                        con.commit()
                        pending = 0
                if progress:
                    progress(1)
            for rel, (_, _, ident) in known.items():
                if rel not in seen:
                    con.execute("DELETE FROM docs WHERE rowid = ?", (ident,))
                    con.execute("DELETE FROM files WHERE id = ?", (ident,))
                    counts["removed"] += 1
            con.execute("INSERT OR REPLACE INTO meta VALUES ('pool', ?)", (str(self.pool),))
            con.commit()
            counts["total"] = con.execute("SELECT COUNT(*) FROM files").fetchone()[0]
        finally:
            con.close()
        return counts

    @staticmethod
    def _sidecars(path: Path) -> list[Path]:
        names = (path.with_suffix(".txt"), path.with_suffix(".json"),
                 path.with_name(path.name + ".txt"), path.with_name(path.name + ".json"))
        return [p for p in names if p.exists()]

    def search(self, query: str, limit: int = 20, offset: int = 0, mode: str = "all") -> list[SearchResult]:
        """Ranked keyword search (bm25; ties broken by path).

        Parameters
        ----------
        query : str
            Plain words; ``mode="all"`` needs every word, ``"any"`` at least one.
        """
        if not self.exists:
            raise DatakitError(f"No index at {self.index_path}. Build it with `datakit index build {self.pool}`.")
        expr = fts_query(query, mode)
        if not expr:
            return []
        con = sqlite3.connect(self.index_path)
        try:
            rows = con.execute(
                "SELECT f.path, f.title, f.license, f.attribution, bm25(docs, 1.0, 1.0, 2.0, 1.0) AS score "
                "FROM docs JOIN files f ON f.id = docs.rowid WHERE docs MATCH ? "
                "ORDER BY score, f.path LIMIT ? OFFSET ?", (expr, int(limit), int(offset))).fetchall()
        except sqlite3.OperationalError as exc:
            raise DatakitError(f"Cannot search {self.index_path} for {query!r}: {exc}") from None
        finally:
            con.close()
        return [SearchResult(ref=str(self.pool / path), rank=offset + i + 1, title=title or "", license=lic or "",
                             attribution=attr or "", local=True, meta={"score": float(score)})
                for i, (path, title, lic, attr, score) in enumerate(rows)]

    def __len__(self) -> int:
        if not self.exists:
            return 0
        con = sqlite3.connect(self.index_path)
        try:
            return con.execute("SELECT COUNT(*) FROM files").fetchone()[0]
        finally:
            con.close()


@register_backend("local")
class LocalBackend(SearchBackend):
    """Search a local pool (``local:POOL_DIR``); builds the index on first use if it is missing.

    Parameters
    ----------
    pool : path
    index_path : path, optional
    mode : {"all", "any"}
        Whether a result must contain every query word.
    page_size : int
    """

    def __init__(self, pool: str | os.PathLike, index_path: str | os.PathLike | None = None, mode: str = "all",
                 page_size: int = 2000) -> None:
        if mode not in MATCH_MODES:
            raise ValueError(f"Unknown value {mode!r} for mode. Valid values are {set(MATCH_MODES)}.")
        self.index = PoolIndex(pool, index_path)
        self.mode = mode
        self.page_size = page_size
        if not self.index.exists:
            logger.warning("no index for %s yet; building it", self.index.pool)
            self.index.build()

    @classmethod
    def from_spec(cls, arg: str | None, **options) -> "LocalBackend":
        if not arg:
            raise DatakitError("The local backend needs a pool directory: --source local:POOL_DIR")
        allowed = {"index_path", "mode", "page_size"}
        return cls(arg, **{k: v for k, v in options.items() if k in allowed})

    def iter_results(self, query: str, limit: int) -> Iterator[SearchResult]:
        offset = 0
        while offset < limit:
            page = self.index.search(query, min(self.page_size, limit - offset), offset, self.mode)
            yield from page
            if len(page) < min(self.page_size, limit - offset):
                return
            offset += len(page)

    def describe(self) -> str:
        return f"local:{self.index.pool}"
