"""Safe image decoding: every file either becomes pixels or a reasoned rejection.

:func:`load_image` never returns ``None``: an image that cannot be used raises
:class:`datakit.errors.ImageRejected` with a short ``reason`` code that the
build stores in ``rejected.parquet``:

``"empty_file"``
    zero bytes.
``"not_an_image"``
    the content is not an image format Pillow knows (decided by the bytes,
    never by the file name).
``"truncated"``
    the file ends before the image data does.
``"decompression_bomb"``
    more pixels than ``max_pixels``; detected from the header, before any
    pixel memory is allocated.
``"unreadable"``
    anything else (missing file, corrupt stream, ...); ``detail`` says what.
"""
from __future__ import annotations

import contextlib
import logging
import os
import warnings
from io import BytesIO
from typing import IO, Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from datakit.errors import ImageRejected
from datakit.sources.base import SourceItem

__all__ = ["DEFAULT_MAX_PIXELS", "load_image", "sniff_format", "to_array", "item_to_image", "scale_to_uint8"]

logger = logging.getLogger(__name__)

#: Pillow's own default for ``Image.MAX_IMAGE_PIXELS`` (about 89.5 megapixels).
DEFAULT_MAX_PIXELS = 89_478_485

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)


def sniff_format(data: bytes) -> str | None:
    """The image format named by the leading magic bytes, or None.

    Parameters
    ----------
    data : bytes
        The start of a file (16 bytes are enough).

    Returns
    -------
    str or None
        ``"png"``, ``"jpeg"``, ``"gif"``, ``"webp"``, ``"bmp"``, ``"tiff"``,
        or None when none of these signatures matches.

    Examples
    --------
    >>> sniff_format(b"\\x89PNG\\r\\n\\x1a\\n....")
    'png'
    >>> sniff_format(b"hello world") is None
    True
    """
    head = bytes(data[:16])
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None


@contextlib.contextmanager
def _open_source(src: str | os.PathLike | bytes) -> Iterator[tuple[IO[bytes], int, str]]:
    """``(binary file object, size in bytes, name for messages)``; files are read lazily."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        yield BytesIO(data), len(data), "<bytes>"
        return
    if not isinstance(src, (str, os.PathLike)):
        raise TypeError(f"load_image expects a path or bytes, got {type(src).__name__}")
    where = os.fspath(src)
    try:
        fh = open(src, "rb")
    except FileNotFoundError:
        raise ImageRejected("unreadable", f"file not found: {where}") from None
    except IsADirectoryError:
        raise ImageRejected("unreadable", f"is a directory: {where}") from None
    except OSError as exc:
        raise ImageRejected("unreadable", f"cannot read {where}: {exc}") from None
    with fh:
        yield fh, os.fstat(fh.fileno()).st_size, where


def load_image(src: str | os.PathLike | bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode an image fully, applying its EXIF orientation.

    Parameters
    ----------
    src : str, os.PathLike or bytes
        A file path or the encoded bytes.
    max_pixels : int, default 89_478_485
        Images with more pixels (width x height) are rejected as
        ``"decompression_bomb"`` from their header, before decoding. Pillow's
        own guard (``Image.MAX_IMAGE_PIXELS``, kept finite) still rejects
        images over twice its value, whatever ``max_pixels`` says.

    Returns
    -------
    PIL.Image.Image
        Fully loaded (``im.load()`` done), EXIF orientation applied. Its mode
        is whatever the file holds (``L``, ``RGB``, ``P``, ``I;16``, ``CMYK``, ...);
        :func:`to_array` turns any of them into uint8 pixels.

    Raises
    ------
    ImageRejected
        With reason ``empty_file``, ``not_an_image``, ``truncated``,
        ``decompression_bomb`` or ``unreadable`` (see the module docstring).
    """
    if not isinstance(max_pixels, int) or max_pixels <= 0:
        raise ValueError(f"max_pixels must be a positive int, got {max_pixels!r}")
    with _open_source(src) as (fh, size, where):
        if size == 0:
            raise ImageRejected("empty_file", f"{where} has 0 bytes")
        try:
            head = fh.read(16)
            fh.seek(0)
        except OSError as exc:
            raise ImageRejected("unreadable", f"cannot read {where}: {exc}") from None
        with warnings.catch_warnings(record=True) as caught:  # Pillow warns about odd files; log, don't spray
            warnings.simplefilter("always")
            try:
                return _decode(fh, size, head, where, max_pixels)
            finally:
                for w in caught:
                    if not issubclass(w.category, Image.DecompressionBombWarning):
                        logger.debug("%s: %s", where, w.message)


def _decode(fh: IO[bytes], size: int, head: bytes, where: str, max_pixels: int) -> Image.Image:
    fmt = sniff_format(head)
    try:
        im = Image.open(fh)
    except Image.DecompressionBombError as exc:
        raise ImageRejected("decompression_bomb", f"{where}: {exc}") from None
    except UnidentifiedImageError:
        if fmt is None:
            raise ImageRejected("not_an_image", f"{where}: content is not a known image format "
                                f"(starts with {head[:8]!r})") from None
        raise ImageRejected("truncated" if size < 64 else "unreadable",
                            f"{where}: {fmt} signature but the header cannot be parsed") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected("unreadable", f"{where}: {exc}") from None
    except Exception as exc:  # noqa: BLE001  (a plugin's unexpected error on corrupt data is still a rejection)
        raise ImageRejected("unreadable", f"{where}: {type(exc).__name__}: {exc}") from None
    width, height = im.size
    if width <= 0 or height <= 0:
        raise ImageRejected("unreadable", f"{where}: image has size {width}x{height}")
    if width * height > max_pixels:
        raise ImageRejected("decompression_bomb",
                            f"{where}: {width}x{height} = {width * height} pixels > max_pixels={max_pixels}")
    try:
        im.load()
    except EOFError as exc:
        raise ImageRejected("truncated", f"{where}: {exc or 'unexpected end of file'}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        msg = str(exc)
        reason = "truncated" if ("truncated" in msg or "broken data stream" in msg) else "unreadable"
        raise ImageRejected(reason, f"{where}: {msg}") from None
    except Exception as exc:  # noqa: BLE001  (see above)
        raise ImageRejected("unreadable", f"{where}: {type(exc).__name__}: {exc}") from None
    try:
        im = ImageOps.exif_transpose(im)
    except Exception as exc:  # noqa: BLE001  (a corrupt EXIF block must not lose the pixels)
        logger.warning("%s: ignoring unreadable EXIF orientation (%s)", where, exc)
    return im


def scale_to_uint8(array: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Map values linearly from ``[lo, hi]`` to 0..255 (rounded, clipped) as uint8.

    Parameters
    ----------
    array : ndarray, any shape
        Numeric values.
    lo, hi : float, optional
        The value range; default the array's own minimum and maximum. A
        constant array (``lo == hi``) maps to 0 when its value is <= 0, else 255.

    Returns
    -------
    ndarray of uint8, same shape
    """
    a = np.asarray(array, dtype=np.float32)
    if lo is None or hi is None:
        if a.size == 0:
            return np.zeros(a.shape, np.uint8)
        lo = float(a.min()) if lo is None else lo
        hi = float(a.max()) if hi is None else hi
    if hi < lo:
        raise ValueError(f"value range ({lo}, {hi}) is empty: lo must be <= hi")
    if hi == lo:
        return np.full(a.shape, 255 if hi > 0 else 0, np.uint8)
    out = (a - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _composite_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Composite ``rgb`` (H, W[, C]) uint8 with alpha (H, W) uint8 over white."""
    a = alpha.astype(np.uint16)
    if rgb.ndim == 3:
        a = a[..., None]
    out = (rgb.astype(np.uint16) * a + 255 * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def _rgb_to_l(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma, as Pillow's ``convert("L")``: (H, W, 3) uint8 -> (H, W) uint8."""
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


def _finish(arr: np.ndarray, mode: str) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8 -> requested mode."""
    if mode == "L":
        return _rgb_to_l(arr) if arr.ndim == 3 else arr
    return arr if arr.ndim == 3 else np.repeat(arr[..., None], 3, axis=2)


def _array_to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        if arr.size and (np.nanmin(arr) < 0 or np.nanmax(arr) > 1):
            return scale_to_uint8(np.nan_to_num(arr))
        return scale_to_uint8(np.nan_to_num(arr), 0.0, 1.0)
    if np.issubdtype(arr.dtype, np.integer):
        return scale_to_uint8(arr)
    raise TypeError(f"unsupported array dtype {arr.dtype}; expected uint8, bool, integer or float")


def to_array(image: Image.Image | np.ndarray, mode: str = "L") -> np.ndarray:
    """Pixels of any image as a uint8 array in grayscale or RGB.

    Parameters
    ----------
    image : PIL.Image.Image or ndarray
        A Pillow image of any mode (``1``, ``L``, ``LA``, ``P`` with or without
        transparency, ``RGB``, ``RGBA``, ``CMYK``, ``I;16``, ``I``, ``F``, ...),
        or an array of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4). uint8
        arrays are used as they are; float arrays in [0, 1] are scaled by 255;
        other numeric arrays (16-bit, 32-bit, floats outside [0, 1]) have their
        actual range stretched to 0..255.
    mode : {"L", "RGB"}
        Output mode.

    Returns
    -------
    ndarray of uint8
        Shape (H, W) for ``"L"``, (H, W, 3) for ``"RGB"``. Transparent pixels
        are composited over white.

    Examples
    --------
    >>> from PIL import Image
    >>> to_array(Image.new("RGBA", (4, 2), (0, 0, 0, 0))).tolist()[0]
    [255, 255, 255, 255]
    >>> to_array(np.zeros((2, 3)), "RGB").shape
    (2, 3, 3)
    """
    if mode not in ("L", "RGB"):
        raise ValueError(f"Unknown value {mode!r} for mode. Valid values are {{'L', 'RGB'}}.")
    if isinstance(image, np.ndarray):
        arr = _array_to_uint8(image)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[..., 0]
        if arr.ndim == 3 and arr.shape[2] == 4:
            arr = _composite_white(arr[..., :3], arr[..., 3])
        elif arr.ndim == 3 and arr.shape[2] == 2:
            arr = _composite_white(arr[..., 0], arr[..., 1])
        if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
            raise ValueError(f"array of shape {image.shape} is not an image; expected (H, W), "
                             "(H, W, 1), (H, W, 3) or (H, W, 4)")
        return _finish(arr, mode)
    if not isinstance(image, Image.Image):
        raise TypeError(f"to_array expects a PIL image or ndarray, got {type(image).__name__}")
    im_mode = image.mode
    if im_mode == "L":
        return _finish(np.asarray(image), mode)
    if im_mode == "RGB":
        return _finish(np.asarray(image), mode)
    if im_mode == "1":
        return _finish(np.asarray(image.convert("L")), mode)
    if im_mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(image)
        if arr.dtype == object or arr.ndim != 2:  # defensive: some Pillow builds
            arr = np.asarray(image.convert("I"))
        if im_mode.startswith("I;16"):
            nominal = (0.0, 65535.0)
        else:
            nominal = (0.0, 255.0)
        a = arr.astype(np.float64)
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if hi > lo:
            out = scale_to_uint8(a, lo, hi)
        else:
            out = scale_to_uint8(a, *nominal)
        return _finish(out, mode)
    if im_mode == "P":
        if "transparency" in image.info:
            image = image.convert("RGBA")
        else:
            image = image.convert("RGB")
        im_mode = image.mode
    if im_mode == "PA":
        image = image.convert("RGBA")
        im_mode = "RGBA"
    if im_mode == "LA":
        arr = np.asarray(image)
        return _finish(_composite_white(arr[..., 0], arr[..., 1]), mode)
    if im_mode in ("RGBA", "RGBa", "La"):
        if im_mode != "RGBA":
            image = image.convert("RGBA")
        arr = np.asarray(image)
        return _finish(_composite_white(arr[..., :3], arr[..., 3]), mode)
    if im_mode == "CMYK":
        return _finish(np.asarray(image.convert("RGB")), mode)
    has_alpha = "A" in image.getbands()
    conv = image.convert("RGBA" if has_alpha else "RGB")
    return to_array(conv, mode)


def item_to_image(item: SourceItem, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image | np.ndarray:
    """The pixels of a :class:`SourceItem`, whichever field carries them.

    Parameters
    ----------
    item : SourceItem
        With ``array`` (uint8, or numbers in ``item.meta["value_range"] = (lo, hi)``;
        floats default to (0, 1)), ``path`` or ``data``.
    max_pixels : int
        Passed to :func:`load_image`.

    Returns
    -------
    ndarray of uint8, shape (H, W) or (H, W, C), or PIL.Image.Image
        Arrays are mapped linearly from ``value_range`` to 0..255; files and
        bytes are decoded with :func:`load_image`.

    Raises
    ------
    ImageRejected
        From :func:`load_image`.
    ValueError
        When the item carries no pixels at all.
    """
    if item.array is not None:
        arr = np.asarray(item.array)
        if arr.dtype == np.uint8:
            return arr
        value_range = item.meta.get("value_range") if item.meta else None
        if value_range is None:
            if np.issubdtype(arr.dtype, np.floating):
                value_range = (0.0, 1.0)
            elif arr.dtype == np.bool_:
                value_range = (0, 1)
            else:
                return _array_to_uint8(arr)
        lo, hi = (float(v) for v in value_range)
        return scale_to_uint8(arr, lo, hi)
    if item.path is not None:
        return load_image(item.path, max_pixels=max_pixels)
    if item.data is not None:
        return load_image(item.data, max_pixels=max_pixels)
    raise ValueError(f"SourceItem {item.source_ref!r} carries no pixels (array, path and data are all None)")
