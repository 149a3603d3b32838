"""The per-image pass: decode, normalize, store, hash, stage in chunks."""
from __future__ import annotations

import contextlib
import functools
import itertools
import os
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
from PIL import Image

from datakit.errors import ImageRejected
from datakit.recipe import SourceSpec
from datakit.sources.base import SourceItem
from datakit.store.atomic import atomic_write_bytes
from datakit.store.images import ImageStore, content_id, encode_png

if TYPE_CHECKING:
    from datakit.build.plan import BuildPlan
    from datakit.build.staging import _Staging

__all__ = ["BatchWork", "_rejection", "_put_image", "process_item", "_str_or_none", "_process_source"]


def _rejection(stage: str, reason: str, detail: str = "") -> dict:
    return {"ok": False, "stage": stage, "reason": reason, "detail": detail[:1000]}


#: Store folders this process has made (skips a mkdir system call per image).
_MADE_DIRS: set[str] = set()


def _put_image(store_root: str, data: bytes) -> tuple[str, str]:
    """Store PNG bytes under their sha256, created in place with ``O_EXCL``.

    Three system calls an image (open, write, close), with mode ``0o666``
    less the umask, as the store's other files. A temporary name and a rename
    cost about 1.5 s more on the digits build (81,095 images, two workers).
    There is no fsync per image (it cost 0.4-7 ms an image here); the build
    flushes with ``os.sync()`` before it commits each staged chunk and before
    it marks the dataset complete.

    A process killed while writing can leave a partial file under its final
    name. Nothing trusts it: the chunk that would refer to it is never
    committed, and a stored file is kept only when its bytes are the ones
    being stored. When they are not (that partial file, or a file changed on
    disk), it is replaced atomically (temporary name, then rename). A complete
    dataset's readers never see a partial file, since an id that is in its
    manifest already exists with its bytes and is not rewritten.
    """
    image_id = content_id(data)
    rel = ImageStore.relpath(image_id)
    target = os.path.join(store_root, rel)
    folder = os.path.dirname(target)
    if folder not in _MADE_DIRS:
        os.makedirs(folder, exist_ok=True)
        _MADE_DIRS.add(folder)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        if not _holds(target, data):
            atomic_write_bytes(target, data)  # temporary name, then rename
        return image_id, rel
    except FileNotFoundError:  # the folder was removed since (another build's clean-up): make it again
        os.makedirs(folder, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except BaseException:
        with contextlib.suppress(OSError):
            if os.stat(target).st_ino == os.fstat(fd).st_ino:  # not a complete copy another writer put there
                os.unlink(target)
        raise
    finally:
        os.close(fd)
    return image_id, rel


def _holds(path: str, data: bytes) -> bool:
    """Whether the file at ``path`` holds exactly ``data``."""
    try:
        with open(path, "rb") as fh:
            return fh.read(len(data) + 1) == data
    except OSError:
        return False


def process_item(item: SourceItem, *, normalizer: Callable, label_map: dict | None, store_root: str) -> dict:
    """Decode, normalize, store and hash one :class:`~datakit.sources.SourceItem`.

    Module-level and picklable (with :func:`functools.partial`), so it runs on
    local worker processes and Dask workers alike. The image is written into
    the content-addressed store under ``store_root`` (which workers must share).

    Returns
    -------
    dict
        ``ok=True`` with ``id``, ``path``, ``width``, ``height`` (of the stored
        image), ``original_width``, ``original_height`` (of the decoded image,
        before the normalizer), ``phash`` and
        ``thumb`` (the 1,024 bytes of :func:`datakit.dedup.thumbnail_pixels`,
        for the near-duplicate pixel check); or ``ok=False`` with ``stage`` (label/decode/normalize), ``reason`` and ``detail``.
    """
    from datakit.dedup import thumbnail_pixels
    from datakit.hashing import phash
    from datakit.sources.decode import item_to_image

    if label_map is not None and (item.label is None or str(item.label) not in label_map):
        return _rejection("label", "unmapped_label",
                          f"source label {item.label!r} is not in label_map ({len(label_map)} labels)")
    try:
        image = item_to_image(item)
    except ImageRejected as exc:
        return _rejection("decode", exc.reason, exc.detail)
    original_width, original_height = image.size if isinstance(image, Image.Image) else np.shape(image)[1::-1]
    try:
        array = normalizer(image)
    except ImageRejected as exc:
        return _rejection("normalize", exc.reason, exc.detail)
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise TypeError(f"the normalizer returned {array.dtype}, expected uint8")
    image_id, rel = _put_image(store_root, encode_png(array))
    return {"ok": True, "id": image_id, "path": rel, "width": int(array.shape[1]),
            "height": int(array.shape[0]), "original_width": int(original_width),
            "original_height": int(original_height), "phash": phash(array), "thumb": thumbnail_pixels(array).tobytes()}


#: The staged columns a result fills (the rest come from the source item).
_RESULT_COLUMNS = ("ok", "id", "path", "width", "height", "original_width", "original_height", "phash", "stage",
                   "reason", "detail")


class _BatchResults:
    """One :class:`~datakit.parallel.ItemResult` per item of a batch, the stored images held as columns.

    What :meth:`BatchWork.run_batch` returns. As a sequence it is the list of
    results :func:`process_item` would give (``len``, indexing, slicing,
    iteration), so any executor and any caller can take it. The images the
    batch path stored are held as columns (ids, paths, sizes, pHashes and a
    ``(k, 1024)`` array of thumbnails), which cost one pickle each instead of
    a dict an image between a worker and the build; :meth:`columns` gives
    them to the build's staging without making the per-image dicts.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.positions = np.zeros(0, dtype=np.int32)  # items stored on the batch path
        self.ids: list[str] = []
        self.paths: list[str] = []
        self.sizes = np.zeros((0, 4), dtype=np.int64)  # width, height, original_width, original_height
        self.phash = np.zeros(0, dtype=np.uint64)
        self.thumbs = np.zeros((0, 1024), dtype=np.uint8)
        self.others: dict[int, Any] = {}  # position -> ItemResult of every other item

    def stored(self, positions: np.ndarray, ids: list[str], paths: list[str], sizes: np.ndarray,
               phash: np.ndarray, thumbs: np.ndarray) -> None:
        self.positions, self.ids, self.paths, self.sizes, self.phash, self.thumbs = (
            positions, ids, paths, sizes, phash, thumbs)

    def __len__(self) -> int:
        return self.n

    def _stored_value(self, k: int) -> dict:
        w, h, ow, oh = self.sizes[k].tolist()
        return {"ok": True, "id": self.ids[k], "path": self.paths[k], "width": w, "height": h,
                "original_width": ow, "original_height": oh, "phash": int(self.phash[k]),
                "thumb": self.thumbs[k].tobytes()}

    def __getitem__(self, i):
        from datakit.parallel.base import ItemResult

        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(i)
        if i in self.others:
            return self.others[i]
        k = int(np.searchsorted(self.positions, i))
        return ItemResult(value=self._stored_value(k))

    def __iter__(self) -> Iterator:
        return (self[i] for i in range(self.n))

    def columns(self) -> tuple[dict[str, list], list]:
        """The result columns (:data:`_RESULT_COLUMNS`, lists of ``n``) and each row's thumbnail (or None)."""
        n = self.n
        if len(self.positions) == n:  # every item stored on the batch path: no per-image work at all
            w, h, ow, oh = (self.sizes[:, j].tolist() for j in range(4))
            none = [None] * n
            cols = {"ok": [True] * n, "id": self.ids, "path": self.paths, "width": w, "height": h,
                    "original_width": ow, "original_height": oh, "phash": self.phash.tolist(),
                    "stage": none, "reason": none, "detail": none}
            return cols, list(self.thumbs)
        return _result_columns(self)


def _result_columns(results) -> tuple[dict[str, list], list]:
    """The result columns of any sequence of :class:`~datakit.parallel.ItemResult`, and each row's thumbnail."""
    cols: dict[str, list] = {c: [] for c in _RESULT_COLUMNS}
    thumbs: list = []
    for result in results:
        value = result.value if result.ok else _rejection("process", result.reason or "error", result.detail)
        for c, values in cols.items():
            values.append(value.get(c))
        thumbs.append(value.get("thumb"))
    return cols, thumbs


class BatchWork:
    """The per-image pass for a whole executor batch, with the normalizer vectorized.

    Picklable (local processes, Dask workers). Called on one item it is
    :func:`process_item`; :meth:`run_batch` decodes a batch, groups the
    decoded images by size and calls the batch normalizer
    (:func:`datakit.normalize.get_batch_normalizer`) once per group, then
    stores, thumbnails and hashes them (the DCT of the pHash batched too).
    The rows are the ones :func:`process_item` gives, image for image (the
    batch normalizer agrees with the per-image one to within one gray level;
    see ``tests/build/test_build_batch.py``). Whatever the batch path cannot
    take (a mode the grayscale conversion rejects, a blank image, a group
    whose normalizer call fails) goes through :func:`process_item`, so reasons
    and details stay the same.
    """

    def __init__(self, *, normalizer: Callable, batch_normalizer: Callable, label_map: dict | None,
                 store_root: str) -> None:
        self.normalizer = normalizer
        self.batch_normalizer = batch_normalizer
        self.label_map = label_map
        self.store_root = store_root

    def __call__(self, item: SourceItem) -> dict:
        return process_item(item, normalizer=self.normalizer, label_map=self.label_map, store_root=self.store_root)

    def run_batch(self, items: list) -> "_BatchResults":
        """The results of ``items``: a sequence of one :class:`~datakit.parallel.ItemResult` per item, in order.

        The images stored on the batch path travel back as columns (:class:`_BatchResults`), not as a
        dict an image: the build's parent process then stages them without a Python object per image.
        """
        from datakit.dedup import thumbnail_pixels
        from datakit.hashing import _hash_gray32
        from datakit.parallel.base import ItemResult, error_result
        from datakit.sources.decode import item_to_image, to_array

        batch = _BatchResults(len(items))
        gray: dict[int, np.ndarray] = {}
        sizes: dict[int, tuple[int, int]] = {}
        alone: list[int] = []  # through process_item
        lm = self.label_map
        for i, item in enumerate(items):
            if lm is not None and (item.label is None or str(item.label) not in lm):
                alone.append(i)
                continue
            try:
                image = item_to_image(item)
            except ImageRejected as exc:
                batch.others[i] = ItemResult(value=_rejection("decode", exc.reason, exc.detail))
                continue
            except Exception as exc:  # as run_batch records it
                batch.others[i] = error_result(exc)
                continue
            try:
                a = to_array(image, "L")
            except Exception:  # noqa: BLE001 - process_item gives this image its exact error
                alone.append(i)
                continue
            if a.ndim != 2 or a.size == 0:
                alone.append(i)
                continue
            sizes[i] = image.size if isinstance(image, Image.Image) else tuple(np.shape(image)[1::-1])
            gray[i] = a
        groups: dict[tuple[int, int], list[int]] = {}
        for i, a in gray.items():
            groups.setdefault(a.shape, []).append(i)
        done: list[tuple[int, np.ndarray]] = []
        for members in groups.values():
            try:
                out, blank = self.batch_normalizer(np.stack([gray[i] for i in members]))
            except Exception:  # noqa: BLE001 - the per-image path decides, image by image
                alone.extend(members)
                continue
            for k, i in enumerate(members):
                if blank[k]:
                    alone.append(i)  # process_item rejects it with the normalizer's own message
                else:
                    done.append((i, out[k]))
        gray.clear()
        if done:
            done.sort(key=lambda entry: entry[0])  # in item order: the columns' rows are the items' order
            thumbs = np.stack([thumbnail_pixels(a) for _, a in done])
            hashes = _hash_gray32(thumbs.reshape(-1, 32, 32).astype(np.float64))
            ids, paths = [], []
            for _, array in done:
                image_id, rel = _put_image(self.store_root, encode_png(array))
                ids.append(image_id)
                paths.append(rel)
            batch.stored(np.array([i for i, _ in done], dtype=np.int32), ids, paths,
                         np.array([(a.shape[1], a.shape[0]) + tuple(sizes[i]) for i, a in done], dtype=np.int64),
                         np.asarray(hashes, dtype=np.uint64), thumbs)
        for i in alone:
            try:
                batch.others[i] = ItemResult(value=self(items[i]))
            except ImageRejected as exc:
                batch.others[i] = ItemResult(reason=exc.reason, detail=exc.detail)
            except Exception as exc:  # noqa: BLE001 - recorded as a rejected row, never lost
                batch.others[i] = error_result(exc)
        return batch


def _str_or_none(v: Any) -> str | None:
    return None if v is None else str(v)


#: The staged columns that come from the source item, in the order :func:`_process_source` records them.
_SOURCE_COLUMNS = ("seq", "source_ref", "source_label", "source_split", "query", "rank", "license", "candidate_id")


class _ChunkRows:
    """The rows of the chunk being filled, as columns: the source's and the results', and the thumbnails."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.cols: dict[str, list] = {c: [] for c in _SOURCE_COLUMNS + _RESULT_COLUMNS}
        self.thumbs: list = []

    def __len__(self) -> int:
        return len(self.thumbs)

    def add(self, items: list[tuple], results: dict[str, list], thumbs: list) -> None:
        for c, values in zip(_SOURCE_COLUMNS, zip(*items)):
            self.cols[c].extend(values)
        for c, values in results.items():
            self.cols[c].extend(values)
        self.thumbs.extend(thumbs)

    def take(self, n: int) -> tuple[dict[str, list], list]:
        """The first ``n`` rows (columns with ``source``, and their thumbnails), removed from here."""
        taken = {c: values[:n] for c, values in self.cols.items()}
        taken["source"] = [self.source] * len(taken["seq"])
        thumbs = self.thumbs[:n]
        for values in self.cols.values():
            del values[:n]
        del self.thumbs[:n]
        return taken, thumbs


class _ChunkWriter:
    """Commits staged chunks on a thread of its own, in order, so the workers are fed meanwhile.

    Committing a chunk (``os.sync()``, then the atomic Parquet write) takes
    tens of milliseconds, during which the feeding loop would otherwise stall
    the workers. One thread keeps the chunks in order (resumption counts the
    consecutive complete chunks); at most ``backlog`` chunks wait, which
    bounds memory. Leaving the ``with`` block waits for every chunk, and an
    error in a write is raised there (the chunks before it stay committed).
    """

    def __init__(self, staging: _Staging, name: str, backlog: int = 2) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.staging, self.name, self.backlog = staging, name, backlog
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="datakit-stage")
        self._pending: deque = deque()

    def write(self, index: int, columns: dict[str, list], thumbs: list) -> None:
        while len(self._pending) >= self.backlog:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(self.staging.write_chunk, self.name, index, columns, thumbs))

    def __enter__(self) -> "_ChunkWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            while self._pending:
                fut = self._pending.popleft()
                if exc_type is None:
                    fut.result()
                else:  # already failing: let the committed chunks be, report the first error
                    fut.exception()
        finally:
            self._pool.shutdown(wait=True)


def _process_source(spec: SourceSpec, source, plan: BuildPlan, staging: _Staging, out: Path, executor_factory,
                    batch_size: int, progress: Callable[[int], None] | None) -> tuple[int, int]:
    """Process one source into staged chunks. Returns (processed, reused) item counts."""
    name = spec.name
    done = staging.done(name)
    if done is not None:
        if progress:
            progress(done["items"])
        return 0, done["items"]
    start_chunk = staging.complete_chunks(name)
    start = start_chunk * staging.chunk_size
    if progress and start:
        progress(start)
    staging.source_dir(name).mkdir(parents=True, exist_ok=True)
    if plan.batch_normalizer is not None:
        fn = BatchWork(normalizer=plan.normalizer, batch_normalizer=plan.batch_normalizer,
                       label_map=spec.label_map, store_root=str(out))
    else:
        fn = functools.partial(process_item, normalizer=plan.normalizer, label_map=spec.label_map,
                               store_root=str(out))
    pending: deque = deque()  # each item's source columns (_SOURCE_COLUMNS), until its result comes back

    def feed() -> Iterator:
        for seq, item in enumerate(itertools.islice(source.iter_items(), start, None), start=start):
            meta = item.meta or {}
            pending.append((seq, str(item.source_ref), _str_or_none(item.label), _str_or_none(item.split),
                            _str_or_none(meta.get("query")), meta.get("rank"), _str_or_none(meta.get("license")),
                            _str_or_none(meta.get("candidate_id"))))
            yield item

    chunk_rows = _ChunkRows(name)
    chunk = start_chunk
    processed = 0
    executor = executor_factory()
    with _ChunkWriter(staging, name) as writer:
        for results in executor.map_batches(fn, feed(), batch_size=batch_size, progress=progress):
            if isinstance(results, _BatchResults):
                cols, thumbs = results.columns()
            else:
                cols, thumbs = _result_columns(results)
            chunk_rows.add([pending.popleft() for _ in range(len(results))], cols, thumbs)
            processed += len(results)
            while len(chunk_rows) >= staging.chunk_size:
                writer.write(chunk, *chunk_rows.take(staging.chunk_size))
                chunk += 1
        if len(chunk_rows):
            writer.write(chunk, *chunk_rows.take(len(chunk_rows)))
            chunk += 1
    staging.mark_done(name, start + processed, chunk)
    return processed, start
