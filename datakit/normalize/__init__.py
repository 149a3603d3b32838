"""Normalization styles (MNIST, USPS, Caltech, ImageNet, none): pure functions on arrays.

Each registered normalizer is ``fn(image, **options) -> ndarray`` (uint8,
(H, W) or (H, W, 3)); it accepts any image :func:`datakit.sources.decode.to_array`
accepts (grayscale, RGB, RGBA, palette with transparency, 16-bit, CMYK, ...)
and raises ``ImageRejected("blank")`` for a digit with no ink.
:func:`get_normalizer` checks the options up front and returns a picklable
callable for the build's workers.

Examples
--------
>>> import numpy as np
>>> fn = get_normalizer("mnist", box=20)
>>> digit = np.zeros((50, 50), np.uint8); digit[10:40, 20:30] = 255
>>> fn(digit).shape
(28, 28)
>>> get_normalizer("caltech", width=64)(np.zeros((32, 128, 3), np.uint8)).shape
(16, 64, 3)
>>> get_normalizer("imagenet")(np.zeros((375, 500, 3), np.uint8)).shape
(224, 224, 3)

``resize`` is the older name of ``caltech`` (the same function).
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import numpy as np

from datakit.errors import DatakitError
from datakit.registry import Registry

__all__ = ["NORMALIZERS", "NormalizerOptionError", "get_normalizer", "get_batch_normalizer", "normalizer_options"]


class NormalizerOptionError(DatakitError, ValueError):
    """An unknown option name or a bad option value for a normalizer."""


#: name -> function ``f(image, **options) -> ndarray`` (uint8, (H, W) or (H, W, 3));
#: raises ``ImageRejected("blank")`` for an image with no ink.
NORMALIZERS = Registry("normalizer")

# import the modules (not their functions: a function named like its module would
# hide the module, e.g. ``import datakit.normalize.mnist`` would give the function)
from datakit.normalize import imagenet as _imagenet_mod  # noqa: E402
from datakit.normalize import mnist as _mnist_mod  # noqa: E402
from datakit.normalize import resize as _resize_mod  # noqa: E402
from datakit.normalize import usps as _usps_mod  # noqa: E402

NORMALIZERS.register("mnist")(_mnist_mod.mnist)
NORMALIZERS.register("usps")(_usps_mod.usps)
NORMALIZERS.register("caltech")(_resize_mod.resize)
NORMALIZERS.register("resize")(_resize_mod.resize)  # alias of "caltech" (its name before ImageNet style existed)
NORMALIZERS.register("imagenet")(_imagenet_mod.imagenet)
NORMALIZERS.register("none")(_resize_mod.identity)


def normalizer_options(name: str) -> dict[str, Any]:
    """The options of normalizer ``name`` with their defaults.

    Examples
    --------
    >>> normalizer_options("resize")
    {'width': 300, 'mode': 'RGB'}
    """
    fn = NORMALIZERS.get(name)
    return {p.name: p.default for p in inspect.signature(fn).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _check_values(name: str, opts: dict[str, Any]) -> None:
    if name in ("mnist", "usps"):
        if name == "usps":
            opts = dict(opts)
            size = opts.pop("size")
            box = opts.pop("box")
            rng = opts.pop("range")
            if rng not in ("uint8", "pm1"):
                raise ValueError(f"Unknown value {rng!r} for range. Valid values are {{'uint8', 'pm1'}}.")
            opts["canvas"] = size
            opts["box"] = size if box is None else box
        _mnist_mod.check_mnist_options(**opts)
    elif name in ("caltech", "resize"):
        _resize_mod.check_resize_options(**opts)
    elif name == "imagenet":
        _imagenet_mod.check_imagenet_options(**opts)
    elif name == "none":
        _resize_mod.check_resize_options(1, opts["mode"])


def get_normalizer(name: str, **options: Any) -> Callable[[Any], np.ndarray]:
    """The normalizer ``name`` with ``options`` bound, checked before any work.

    Parameters
    ----------
    name : str
        A registered name: ``"mnist"``, ``"usps"``, ``"caltech"`` (alias
        ``"resize"``), ``"imagenet"``, ``"none"``.
    **options
        The normalizer's keyword options (see each function); unknown names and
        bad values fail here, not in the middle of a build.

    Returns
    -------
    callable
        ``f(image) -> ndarray`` (uint8), a :func:`functools.partial` of a
        module-level function, so it pickles to worker processes.

    Raises
    ------
    UnknownNameError
        Unknown normalizer (the message lists the valid names).
    NormalizerOptionError
        Unknown option (the message lists the valid options) or a bad option
        value. Both are DatakitError and ValueError.
    """
    fn = NORMALIZERS.get(name)
    defaults = normalizer_options(name)
    for key in options:
        if key not in defaults:
            valid = ", ".join(sorted(defaults))
            raise NormalizerOptionError(f"normalizer {name!r} has no option {key!r}. Valid options are {{{valid}}}.")
    merged = {**defaults, **options}
    try:
        _check_values(name, merged)
    except (ValueError, TypeError) as exc:
        raise NormalizerOptionError(f"normalizer {name!r}: {exc}") from None
    return functools.partial(fn, **options)


def get_batch_normalizer(name: str, **options: Any) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None:
    """A vectorized form of normalizer ``name`` for many same-size images, or None.

    Returns ``f(images) -> (out, blank)`` with ``images`` uint8 (N, H, W)
    grayscale, ``out`` uint8 (N, canvas, canvas) and ``blank`` bool (N,)
    (the rows :func:`get_normalizer`'s function would reject as ``"blank"``).
    Available for ``"mnist"`` and ``"usps"``; None for the others.
    """
    get_normalizer(name, **options)  # validates
    if name == "mnist":
        return functools.partial(_mnist_mod.mnist_batch, **options)
    if name == "usps":
        opts = {**normalizer_options("usps"), **options}
        size = opts.pop("size")
        box = opts.pop("box")
        opts.pop("range")
        return functools.partial(_mnist_mod.mnist_batch, canvas=size, box=size if box is None else box, **opts)
    return None
