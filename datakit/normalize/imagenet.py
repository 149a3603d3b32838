"""ImageNet evaluation style: shorter side to ``resize``, then a centred ``size`` x ``size`` crop.

This is the transform the ImageNet classifiers are evaluated with
(torchvision's ``Resize(256)`` then ``CenterCrop(224)``, the "resize 256,
crop 224" of the AlexNet/VGG/ResNet papers). Resampling is Pillow's bilinear
filter, whose support widens when shrinking (anti-aliased), as torchvision's
PIL path uses; the output equals torchvision's transform on the same image.

Only the cropped window is resampled (Pillow's ``resize(box=...)``, whose
filter still reads the source pixels around the window), so a long, thin
image does not make a huge intermediate image first.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from datakit.sources.decode import to_array

__all__ = ["imagenet", "check_imagenet_options", "default_resize", "resized_size", "crop_box"]

_MODES = ("RGB", "L")
#: Images whose longer side would exceed this many times ``resize`` are resampled in the crop window only.
_WHOLE_LIMIT = 4


def _positive_int(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= 1


def default_resize(size: int) -> int:
    """The shorter-side length for a ``size`` crop: ``round(size * 256 / 224)`` (256 for 224).

    Examples
    --------
    >>> default_resize(224), default_resize(112), default_resize(299)
    (256, 128, 342)
    """
    return int(round(size * 256 / 224))


def check_imagenet_options(size: int, resize: int | None, mode: str) -> None:
    """Raise ValueError naming a bad option value and the valid ones."""
    if not _positive_int(size):
        raise ValueError(f"size must be a positive integer, got {size!r}")
    if resize is not None:
        if not _positive_int(resize):
            raise ValueError(f"resize must be a positive integer or omitted, got {resize!r}")
        if resize < size:
            raise ValueError(f"resize ({resize}) must be at least size ({size}): the shorter side is "
                             f"resized to it before the {size}x{size} centre crop")
    if mode not in _MODES:
        raise ValueError(f"Unknown value {mode!r} for mode. Valid values are {{'RGB', 'L'}}.")


def resized_size(width: int, height: int, resize: int) -> tuple[int, int]:
    """(width, height) after scaling the shorter side to ``resize``, as torchvision's ``Resize(int)``.

    The longer side is ``int(resize * long / short)`` (truncated, as torchvision does).

    Examples
    --------
    >>> resized_size(500, 375, 256)
    (341, 256)
    >>> resized_size(1, 1, 256)
    (256, 256)
    """
    if width <= height:
        return resize, int(resize * height / width)
    return int(resize * width / height), resize


def crop_box(width: int, height: int, size: int) -> tuple[int, int]:
    """(left, top) of the centred ``size`` x ``size`` crop of a ``width`` x ``height`` image.

    ``int(round((side - size) / 2))``, as torchvision's ``CenterCrop``.

    Examples
    --------
    >>> crop_box(341, 256, 224)
    (58, 16)
    """
    return int(round((width - size) / 2.0)), int(round((height - size) / 2.0))


def imagenet(image: Image.Image | np.ndarray, *, size: int = 224, resize: int | None = None,
             mode: str = "RGB") -> np.ndarray:
    """Scale the shorter side to ``resize``, then crop the centred ``size`` x ``size`` square.

    Parameters
    ----------
    image : PIL image or ndarray
        Any mode :func:`datakit.sources.decode.to_array` accepts (greyscale,
        RGB, RGBA and palette images over white, CMYK, 16-bit, ...); any size,
        a 1x1 image included (it is upsampled).
    size : int, default 224
        Side of the square output, in pixels.
    resize : int, optional
        Length the shorter side is scaled to before cropping; default
        ``round(size * 256 / 224)`` (256 for 224). At least ``size``.
    mode : {"RGB", "L"}, default "RGB"
        Output colour mode.

    Returns
    -------
    ndarray of uint8
        Shape (size, size, 3) for ``"RGB"``, (size, size) for ``"L"``, whatever
        the input's aspect ratio: the longer side loses what falls outside the
        centred square.

    Examples
    --------
    >>> imagenet(np.zeros((375, 500, 3), np.uint8)).shape
    (224, 224, 3)
    >>> imagenet(np.full((1, 1), 7, np.uint8), size=32, mode="L").shape
    (32, 32)
    >>> int(imagenet(np.full((1, 1), 7, np.uint8), size=32, mode="L").max())
    7
    """
    a = to_array(image, mode)
    h, w = a.shape[:2]
    short = default_resize(size) if resize is None else resize
    new_w, new_h = resized_size(w, h, short)
    left, top = crop_box(new_w, new_h, size)
    pil = Image.fromarray(a)
    if max(new_w, new_h) <= _WHOLE_LIMIT * short:
        if (new_w, new_h) != (w, h):
            pil = pil.resize((new_w, new_h), Image.Resampling.BILINEAR)
        return np.asarray(pil.crop((left, top, left + size, top + size)))
    # the crop window in source pixels (per axis: the longer side's scale differs by the truncation)
    sx, sy = w / new_w, h / new_h
    box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
    return np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR, box=box))
