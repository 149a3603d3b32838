"""The candidates stage: categories -> queries -> search results -> stored candidate images.

ImageNet's second step. For each category (a WordNet synset) the queries of
:mod:`datakit.taxonomy.expand` are sent to a search backend; the results of
all queries are merged round-robin by rank (the top hit of every query first)
up to ``per_synset`` distinct references; each is fetched by the safe
:class:`~datakit.sources.download.Downloader` into the content-addressed
store. The output directory holds::

    candidates.parquet   one row per (synset, image): provenance + content id + pHash
    rejected.parquet     one row per result not kept, with its reason
    synsets.csv          per category: queries, results, candidates, status
    categories.csv       the categories used
    queries.csv          the queries used, with the expansion that made each
    run.json             backend, parameters, counts, notes, failure (if any)
    images/ab/<id>.<ext> the content-addressed store
    .candidates-state.sqlite   search results and fetch outcomes (for resuming)

Exact duplicates (same bytes) are stored once. An image found for two
synsets keeps a row for each and both are flagged ``ambiguous``. A category
with no candidates has status ``no_results`` or ``no_candidates`` in
``synsets.csv``. When the backend fails mid-run, everything fetched so far is
written and :attr:`CandidateRun.failure` says so; running again resumes (saved
searches are not repeated, stored images are not fetched again, transient
failures are retried).

The ``candidates`` source kind (:class:`CandidatesSource`) reads such a
directory, so a recipe can chain it into ``datakit build``.
"""
from __future__ import annotations

import functools

import datetime as _dt
import json
import logging
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pandas as pd

from datakit.errors import DatakitError
from datakit.sources.base import Source, SourceItem, register_source
from datakit.sources.download import Downloader, DownloadPolicy, is_transient
from datakit.sources.search.base import BackendError, SearchBackend, SearchResult
from datakit.store.manifest import REJECTED_COLUMNS, conform
from datakit.taxonomy.expand import DEFAULT_LANGS

__all__ = [
    "CANDIDATE_COLUMNS",
    "CANDIDATE_REJECTED_COLUMNS",
    "SUMMARY_COLUMNS",
    "CandidateRun",
    "collect_candidates",
    "merge_results",
    "CandidatesSource",
]

logger = logging.getLogger(__name__)

#: Columns of ``candidates.parquet``.
CANDIDATE_COLUMNS: dict[str, str] = {
    "synset": "string", "name": "string", "query": "string", "expansion": "string", "backend": "string",
    "rank": "Int64", "source_ref": "string", "local": "boolean", "id": "string", "path": "string",
    "ext": "string", "width": "Int64", "height": "Int64", "phash": "uint64", "license": "string",
    "attribution": "string", "title": "string", "landing_url": "string", "hits": "Int64",
    "n_synsets": "Int64", "ambiguous": "boolean",
}
#: ``rejected.parquet``: the dataset's rejected schema plus where the result came from.
CANDIDATE_REJECTED_COLUMNS: dict[str, str] = {**REJECTED_COLUMNS, "synset": "string", "query": "string",
                                              "rank": "Int64"}
#: Columns of ``synsets.csv``.
SUMMARY_COLUMNS = ["synset", "name", "queries", "results", "candidates", "rejected", "ambiguous", "status"]
_STATE = ".candidates-state.sqlite"


@dataclass
class CandidateRun:
    """What :func:`collect_candidates` produced (also written to ``out``)."""

    out: Path
    candidates: pd.DataFrame
    rejected: pd.DataFrame
    summary: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    failure: str | None = None

    @property
    def empty_categories(self) -> list[str]:
        """Synsets that ended without any candidate (reported, never dropped silently)."""
        s = self.summary
        return list(s.loc[s["candidates"] == 0, "synset"])


class _State:
    """Search results and fetch outcomes, in SQLite (each commit is atomic)."""

    def __init__(self, path: Path) -> None:
        self.con = sqlite3.connect(path)
        self.con.executescript(
            "CREATE TABLE IF NOT EXISTS searches (backend TEXT, query TEXT, lim INTEGER, results TEXT,"
            " PRIMARY KEY (backend, query, lim));"
            "CREATE TABLE IF NOT EXISTS fetched (ref TEXT PRIMARY KEY, ok INTEGER, id TEXT, path TEXT, ext TEXT,"
            " width INTEGER, height INTEGER, phash TEXT, reason TEXT, detail TEXT);")

    def search(self, backend: str, query: str, limit: int) -> list[SearchResult] | None:
        row = self.con.execute("SELECT results FROM searches WHERE backend=? AND query=? AND lim=?",
                               (backend, query, limit)).fetchone()
        return None if row is None else [SearchResult(**r) for r in json.loads(row[0])]

    def put_search(self, backend: str, query: str, limit: int, results: list[SearchResult]) -> None:
        self.con.execute("INSERT OR REPLACE INTO searches VALUES (?, ?, ?, ?)",
                         (backend, query, limit, json.dumps([r.as_dict() for r in results], default=str)))
        self.con.commit()

    def fetched(self) -> dict[str, tuple]:
        return {r[0]: r[1:] for r in self.con.execute(
            "SELECT ref, ok, id, path, ext, width, height, phash, reason, detail FROM fetched")}

    def put_fetch(self, ref: str, ok: bool, value: dict | None, reason: str | None, detail: str) -> None:
        v = value or {}
        self.con.execute("INSERT OR REPLACE INTO fetched VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (ref, int(ok), v.get("id"), v.get("path"), v.get("ext"), v.get("width"), v.get("height"),
                          None if v.get("phash") is None else str(v["phash"]), reason, detail))

    def commit(self) -> None:
        self.con.commit()

    def close(self) -> None:
        self.con.commit()
        self.con.close()


def merge_results(per_query: Sequence[tuple[dict, list[SearchResult]]], limit: int) -> list[tuple[dict, SearchResult, int]]:
    """Merge the ranked results of several queries round-robin, deduplicated by reference.

    Parameters
    ----------
    per_query : sequence of (query row, results)
        In query order; ``results`` best first.
    limit : int
        At most this many distinct references.

    Returns
    -------
    list of (query row, result, hits)
        ``hits`` counts how many of the queries' results pointed at that reference.

    Examples
    --------
    >>> a = [SearchResult("x", 1), SearchResult("y", 2)]
    >>> b = [SearchResult("y", 1), SearchResult("z", 2)]
    >>> [(q["query"], r.ref, h) for q, r, h in merge_results([({"query": "A"}, a), ({"query": "B"}, b)], 10)]
    [('A', 'x', 1), ('B', 'y', 2), ('B', 'z', 1)]
    """
    hits: dict[str, int] = {}
    for _, results in per_query:
        for r in results:
            hits[r.ref] = hits.get(r.ref, 0) + 1
    out, seen = [], set()
    depth = max((len(r) for _, r in per_query), default=0)
    for i in range(depth):
        for query, results in per_query:
            if i < len(results) and results[i].ref not in seen:
                seen.add(results[i].ref)
                out.append((query, results[i], hits[results[i].ref]))
                if len(out) >= limit:
                    return out
    return out


def _fetch(item: tuple[str, bool], *, downloader: Downloader) -> dict:
    ref, local = item
    # only a local backend's results are read from disk: a URL-less "result" from an HTTP
    # backend (say "/etc/passwd") goes to fetch_url and is rejected as bad_url
    return (downloader.fetch_file(ref) if local else downloader.fetch_url(ref)).as_dict()


def _fetch_fn(downloader: Downloader) -> Callable[[tuple[str, bool]], dict]:
    """A picklable fetch function (runs on threads, processes or Dask workers)."""
    return functools.partial(_fetch, downloader=downloader)


def collect_candidates(categories: pd.DataFrame, backend: SearchBackend, out: str | os.PathLike, *,
                       per_synset: int = 100, per_query: int | None = None, queries: pd.DataFrame | None = None,
                       parent: bool = True, langs: Sequence[str] | None = DEFAULT_LANGS,
                       policy: DownloadPolicy | None = None, workers: int = 8, wn=None,
                       scheduler: str | None = None,
                       progress: Callable[[int], None] | None = None,
                       on_total: Callable[[int], None] | None = None) -> CandidateRun:
    """Search, fetch and store candidate images for every category.

    Parameters
    ----------
    categories : DataFrame
        The categories table (``wnid`` column; see :func:`datakit.taxonomy.select.read_categories`).
    backend : SearchBackend
    out : path
        Output directory (created; re-using it resumes).
    per_synset : int
        Distinct search results to fetch per category.
    per_query : int, optional
        Results asked of each query (default ``per_synset``).
    queries : DataFrame, optional
        Use these queries (columns ``synset``, ``query``, ``expansion``) instead of expanding.
    parent, langs
        Query expansion options (:func:`datakit.taxonomy.expand.expand_categories`).
    policy : DownloadPolicy, optional
        Download limits (``allow_private``, ``max_bytes``, minimum size, ...).
    workers : int
        Concurrent fetches (threads; I/O bound), or Dask workers with ``scheduler``.
    scheduler : str, optional
        Fetch, check and store on a Dask cluster (``tcp://HOST:PORT`` or
        ``"local-cluster"``) through :func:`datakit.parallel.get_executor`;
        its workers must share the output directory.
    progress, on_total : callable, optional
        Progress callbacks (``progress(n)`` per fetched reference; ``on_total(n)`` once known).

    Returns
    -------
    CandidateRun
    """
    from datakit.parallel import get_executor, get_thread_executor
    from datakit.store.atomic import atomic_write_json, atomic_write_parquet
    from datakit.taxonomy.expand import QUERY_COLUMNS, expand_categories
    from datakit.taxonomy.select import write_categories
    from datakit.taxonomy.wordnet import resolve_synset

    if per_synset < 1:
        raise ValueError(f"per_synset must be >= 1, got {per_synset}")
    per_query = per_query or per_synset
    if "wnid" not in categories.columns:
        raise DatakitError(f"The categories table needs a 'wnid' column (columns: {list(categories.columns)}).")
    if categories.empty:
        raise DatakitError("No categories given.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    wnids = [str(w) for w in categories["wnid"]]
    names = dict(zip(wnids, categories["name"].astype(str))) if "name" in categories.columns else {}
    if queries is None:
        from datakit.taxonomy.wordnet import get_wordnet

        wn = wn if wn is not None else get_wordnet()
        synsets = [resolve_synset(w, wn) for w in wnids]
        queries, notes = expand_categories(synsets, wn, parent=parent, langs=langs)
    else:
        missing = {"synset", "query"} - set(queries.columns)
        if missing:
            raise DatakitError(f"The queries table lacks column(s) {sorted(missing)} (needs synset, query).")
        queries = queries.copy()
        queries["synset"] = queries["synset"].astype(str)
        others = sorted(set(queries["synset"]) - set(wnids))
        if others:  # synset names (sandal.n.01) are accepted as well as wnids
            from datakit.taxonomy.wordnet import get_wordnet, wnid as to_wnid

            wn = wn if wn is not None else get_wordnet()
            as_wnid = {}
            for spec in others:
                try:
                    as_wnid[spec] = to_wnid(resolve_synset(spec, wn))
                except DatakitError:
                    as_wnid[spec] = spec
            queries["synset"] = [as_wnid.get(s, s) for s in queries["synset"]]
        if "expansion" not in queries.columns:
            queries["expansion"] = "given"
        queries["name"] = [names.get(s, s) for s in queries["synset"]]
        queries = queries[QUERY_COLUMNS]
    write_categories(categories, out / "categories.csv")
    from datakit.store.atomic import atomic_write

    with atomic_write(out / "queries.csv", "w") as fh:
        queries.to_csv(fh, index=False)

    backend_id = backend.describe()
    state = _State(out / _STATE)
    failure: str | None = None
    status: dict[str, str] = {}
    selected: dict[str, list[tuple[dict, SearchResult, int]]] = {}
    by_synset = {w: [r for r in queries.to_dict("records") if str(r["synset"]) == w] for w in wnids}
    stray = sorted(set(queries["synset"].astype(str)) - set(wnids))
    if stray:
        notes.append(f"queries for {len(stray)} synset(s) not in the categories were ignored: {', '.join(stray[:5])}")
    try:
        # 1. search (saved per query; a failing backend stops the search, keeps what it has)
        for w in wnids:
            if failure is not None:
                status[w] = "not_searched"
                continue
            per_query_results = []
            for q in by_synset[w]:
                results = state.search(backend_id, q["query"], per_query)
                if results is None:
                    try:
                        results = backend.search(q["query"], per_query)
                    except BackendError as exc:
                        failure = f"{backend_id} failed while searching {q['query']!r} for {w}: {exc}"
                        logger.info("search stopped: %s", failure)
                        break
                    state.put_search(backend_id, q["query"], per_query, results)
                per_query_results.append((q, results))
            selected[w] = merge_results(per_query_results, per_synset)
            status[w] = "partial" if failure is not None else "ok"
            if not by_synset[w]:
                notes.append(f"{w} has no queries")

        # 2. fetch what is missing (and retry transient failures)
        done = state.fetched()
        todo: dict[str, bool] = {}
        for w in selected:
            for _, r, _ in selected[w]:
                rec = done.get(r.ref)
                if rec is None or (not rec[0] and is_transient(rec[7] or "")):
                    todo.setdefault(r.ref, bool(r.local))
        if on_total:
            on_total(len(todo))
        downloader = Downloader(out, policy)
        # downloads are I/O-bound: threads here; with a Dask scheduler the fetch, decode
        # check and store run on the cluster's workers (which must share ``out``)
        executor = get_thread_executor(workers) if scheduler is None else get_executor(workers, scheduler)
        try:
            items = list(todo.items())
            for n, ((ref, _), res) in enumerate(zip(items, executor.map(_fetch_fn(downloader), items)), 1):
                state.put_fetch(ref, res.ok, res.value, res.reason, res.detail)
                if n % 200 == 0:
                    state.commit()
                if progress:
                    progress(1)
        finally:
            executor.close()
            state.commit()
        done = state.fetched()
    finally:
        state.close()

    # 3. tables
    rows, rejected = [], []
    for w in wnids:
        first_ref: dict[str, str] = {}
        for q, r, hits in selected.get(w, []):
            rec = done.get(r.ref)
            base = {"synset": w, "query": q["query"], "rank": r.rank, "source_ref": r.ref}
            if rec is None:
                rejected.append({**base, "source": backend_id, "stage": "candidates", "reason": "not_fetched",
                                 "detail": "interrupted before this result was fetched; re-run to resume"})
                continue
            ok, ident, path, ext, width, height, phash_s, reason, detail = rec
            if not ok:
                rejected.append({**base, "source": backend_id, "stage": "candidates", "reason": reason,
                                 "detail": detail})
                continue
            if ident in first_ref:
                rejected.append({**base, "id": ident, "source": backend_id, "stage": "candidates",
                                 "reason": "duplicate", "detail": f"same bytes as {first_ref[ident]} (stored once)"})
                continue
            first_ref[ident] = r.ref
            rows.append({**base, "name": names.get(w, q.get("name", w)), "expansion": q["expansion"],
                         "backend": backend.kind, "local": bool(r.local), "id": ident, "path": path, "ext": ext,
                         "width": width, "height": height, "phash": int(phash_s), "license": r.license,
                         "attribution": r.attribution, "title": r.title, "landing_url": r.landing_url,
                         "hits": hits})
    cand = pd.DataFrame(rows)
    if len(cand):
        n_syn = cand.groupby("id")["synset"].transform("nunique")
        cand["n_synsets"] = n_syn
        cand["ambiguous"] = n_syn > 1
    cand = conform(cand, CANDIDATE_COLUMNS)
    rej = conform(pd.DataFrame(rejected), CANDIDATE_REJECTED_COLUMNS)
    summary_rows = []
    for w in wnids:
        c = cand[cand["synset"] == w]
        n_results = len(selected.get(w, []))
        st = status.get(w, "not_searched")
        if st == "ok" and n_results == 0:
            st = "no_results"
        elif st == "ok" and len(c) == 0:
            st = "no_candidates"
        summary_rows.append({"synset": w, "name": names.get(w, w), "queries": len(by_synset[w]),
                             "results": n_results, "candidates": len(c),
                             "rejected": int((rej["synset"] == w).sum()) if len(rej) else 0,
                             "ambiguous": int(c["ambiguous"].sum()) if len(c) else 0, "status": st})
    summary = pd.DataFrame(summary_rows, columns=SUMMARY_COLUMNS)
    for _, row in summary.iterrows():
        if row["candidates"] == 0:
            notes.append(f"category {row['synset']} ({row['name']}) has no candidates ({row['status']})")
    atomic_write_parquet(out / "candidates.parquet", cand)
    atomic_write_parquet(out / "rejected.parquet", rej)
    with atomic_write(out / "synsets.csv", "w") as fh:
        summary.to_csv(fh, index=False)
    from datakit.store.writer import versions

    atomic_write_json(out / "run.json", {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(), "backend": backend_id,
        "per_synset": per_synset, "per_query": per_query, "policy": vars(policy or DownloadPolicy()),
        "counts": {"categories": len(wnids), "queries": len(queries), "candidates": len(cand),
                   "unique_images": int(cand["id"].nunique()) if len(cand) else 0,
                   "ambiguous_rows": int(cand["ambiguous"].sum()) if len(cand) else 0, "rejected": len(rej)},
        "notes": notes, "failure": failure, "complete": failure is None, "versions": versions()})
    return CandidateRun(out=out, candidates=cand, rejected=rej, summary=summary, notes=notes, failure=failure)


@register_source("candidates")
class CandidatesSource(Source):
    """Images of a candidates directory (``datakit candidates ... --out DIR``), labelled by synset.

    Recipe options
    --------------
    path : str
        The candidates directory (relative paths resolve under the data root).
    drop_ambiguous : bool
        Leave out images found for more than one synset (default False: they
        are yielded once per synset, as ImageNet's candidate pool had them).
    synsets : list of str, optional
        Only these wnids.
    search : str, optional
        A search backend spec (``local:POOL_DIR``, ``openverse``, ...). When
        given, the source *runs* the candidates stage into ``path`` first (or
        resumes it), so one recipe chains synset selection, search and build.
    categories : str, optional
        With ``search``: a ``categories.csv`` or wnid list.
    select : table, optional
        With ``search``, instead of ``categories``: a synset selection,
        ``{strategy = "subtree", root = "dog.n.01", leaves_only = true, count = 10}``
        (any :mod:`datakit.taxonomy.select` strategy and its options).
    per_synset : int
        With ``search``: results per synset (default 100).
    allow_private : bool
        With ``search``: allow downloads from non-public addresses.

    Each item's ``label`` is the wnid; ``meta`` carries query, expansion,
    rank, license, attribution, backend and the ambiguity flag.
    """

    OPTIONS = ("path", "drop_ambiguous", "synsets", "search", "categories", "select", "per_synset", "allow_private")

    def __init__(self, name: str | None = None, data_root: str | os.PathLike | None = None, *,
                 path: str | os.PathLike | None = None, drop_ambiguous: bool = False,
                 synsets: Sequence[str] | None = None, search: str | None = None,
                 categories: str | os.PathLike | None = None, select: dict | None = None,
                 per_synset: int = 100, allow_private: bool = False) -> None:
        super().__init__(name=name)
        from datakit.sources._paths import candidate_paths, resolve_path

        where = f"source {self.name!r} (candidates)"
        if path is None:
            raise DatakitError(f"{where}: option 'path' (a candidates directory) is required")
        self.search = search
        if search is None:
            for opt, value in (("categories", categories), ("select", select)):
                if value is not None:
                    raise DatakitError(f"{where}: option {opt!r} needs 'search' (a backend such as 'local:POOL_DIR').")
            self.root = resolve_path(path, option="path", kind=self.kind, name=self.name, data_root=data_root,
                                     want="dir")
        else:
            if (categories is None) == (select is None):
                raise DatakitError(f"{where}: with 'search', give exactly one of 'categories' (a file) or "
                                   "'select' (e.g. {strategy = \"subtree\", root = \"dog.n.01\"}).")
            tried = candidate_paths(path, data_root)
            self.root = next((p for p in tried if p.is_dir()), tried[0])
            kind, _, arg = str(search).partition(":")
            if kind == "local" and arg:
                arg = str(resolve_path(arg, option="search", kind=self.kind, name=self.name, data_root=data_root,
                                       want="dir"))
            self.search = f"{kind}:{arg}" if arg else kind
            self.categories_path = None if categories is None else resolve_path(
                categories, option="categories", kind=self.kind, name=self.name, data_root=data_root, want="file")
            if select is not None and (not isinstance(select, dict) or "strategy" not in select):
                raise DatakitError(f"{where}: 'select' must be a table with a 'strategy' key, got {select!r}.")
            self.select = select
            if not isinstance(per_synset, int) or per_synset < 1:
                raise DatakitError(f"{where}: 'per_synset' must be a positive integer, got {per_synset!r}.")
            self.per_synset = per_synset
            self.allow_private = bool(allow_private)
        self.drop_ambiguous = bool(drop_ambiguous)
        self.synsets = None if synsets is None else [str(s) for s in synsets]
        self._prepared = False

    def prepare(self) -> None:
        """Run (or resume) the candidates stage when the source was given ``search``."""
        if self.search is None or self._prepared:
            return
        info = self.root / "run.json"
        if (self.root / "candidates.parquet").exists() and info.exists() and json.loads(info.read_text()).get("complete"):
            self._prepared = True
            return
        from datakit.sources.search import get_backend
        from datakit.taxonomy.select import categories_frame, read_categories, select_synsets

        if self.categories_path is not None:
            frame = read_categories(self.categories_path)
        else:
            options = {k: v for k, v in self.select.items() if k != "strategy"}
            frame = categories_frame(select_synsets(self.select["strategy"], **options))
        kind = self.search.partition(":")[0]
        options = {} if kind == "local" else {"cache_dir": str(self.root / ".http-cache")}
        run = collect_candidates(frame, get_backend(self.search, **options), self.root, per_synset=self.per_synset,
                                 policy=DownloadPolicy(allow_private=self.allow_private))
        if run.failure:
            raise DatakitError(f"{run.failure} (build again to resume the candidates stage in {self.root})")
        self._prepared = True

    def validate(self) -> None:
        self.prepare()
        if not (self.root / "candidates.parquet").exists():
            raise DatakitError(f"{self.root} has no candidates.parquet; make it with "
                               f"`datakit candidates CATEGORIES --source ... --out {self.root}`.")

    def frame(self) -> pd.DataFrame:
        self.validate()
        frame = pd.read_parquet(self.root / "candidates.parquet")
        if self.drop_ambiguous:
            frame = frame[~frame["ambiguous"].fillna(False).astype(bool)]
        if self.synsets is not None:
            frame = frame[frame["synset"].isin(self.synsets)]
        return frame.reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.frame())

    def categories(self) -> pd.DataFrame:
        """The run's ``categories.csv`` (wnid, name, lemmas, gloss, hypernym path, depth, lexname)."""
        path = self.root / "categories.csv"
        if not path.exists():
            raise DatakitError(f"{self.root} has no categories.csv; was it written by `datakit candidates`?")
        return pd.read_csv(path, dtype={"label": str, "wnid": str})

    def labels(self) -> list[str]:
        return sorted(self.frame()["synset"].dropna().unique())

    def iter_items(self) -> Iterator[SourceItem]:
        for row in self.frame().itertuples(index=False):
            yield SourceItem(
                source_ref=str(row.source_ref), label=str(row.synset), path=str(self.root / row.path),
                meta={"query": row.query, "expansion": row.expansion, "rank": None if pd.isna(row.rank) else int(row.rank),
                      "license": row.license, "attribution": row.attribution, "backend": row.backend,
                      "ambiguous": bool(row.ambiguous), "candidate_id": row.id})
