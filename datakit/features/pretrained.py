"""``pretrained``: the penultimate layer of a torchvision backbone, from a weights file on disk.

Nothing is downloaded: the user passes a weights file they already have
(``datakit audit --features pretrained --weights PATH``). It is read with
``torch.load(path, map_location="cpu", weights_only=True)``, which never
unpickles code, and may hold

* a plain state dict (``torch.save(model.state_dict(), PATH)``, torchvision's
  published ``.pth`` files);
* a checkpoint dict with the state dict under ``"state_dict"``, ``"model"``
  or ``"model_state_dict"`` (torchvision's reference scripts, Lightning-style
  checkpoints; ``argparse.Namespace`` entries such as torchvision's ``"args"``
  are allowed); ``module.`` (DataParallel) and ``_orig_mod.``
  (``torch.compile``) key prefixes are removed;
* a datakit checkpoint (:mod:`datakit.train.checkpoint`): the model it names is
  rebuilt from datakit's registry and its own normalization is used.

The features are the input of the network's final classifier layer (its last
``Linear`` or ``Conv2d`` module, captured with a forward pre-hook), globally
average-pooled when it is still a feature map: 512 values for resnet18/34,
2048 for resnet50, 4096 (fc7, after ReLU) for alexnet and vgg, 1024 for
googlenet and densenet121, 576 -> 1024 for mobilenet_v3_small (the 1024-unit
hidden layer), 1280 for efficientnet_b0 and mobilenet_v2, 768 for
convnext_tiny (after its LayerNorm), 512 for squeezenet (pooled).

Images are decoded at ``size`` x ``size`` RGB and normalized with the ImageNet
mean and standard deviation, as torchvision's weights expect.

The cache key holds the file's sha256, not its path: a copy of the same file
elsewhere reuses the cache, other weights at the same path do not.
"""
from __future__ import annotations

import difflib
import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from datakit.features.base import FeatureError, FeatureExtractor, register_feature

__all__ = ["PretrainedFeatures", "IMAGENET_MEAN", "IMAGENET_STD", "torchvision_archs", "file_sha256",
           "classifier_layer", "pooled_features"]

logger = logging.getLogger(__name__)

#: ImageNet channel statistics (torchvision's ``ImageClassification`` preset), in [0, 1] units
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: checkpoint entries that hold a state dict, in the order they are looked up
_STATE_KEYS = ("state_dict", "model", "model_state_dict")
_PREFIXES = ("module.", "_orig_mod.")
_DEVICES = ("cpu", "cuda", "auto")
_CACHE_VERSION = 1
_SHA_MEMO: dict[tuple, str] = {}


def torchvision_archs() -> list[str]:
    """torchvision's classification model names (``torchvision.models.list_models``), sorted."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file's bytes, remembered per (path, size, mtime) in this process."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _SHA_MEMO:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _SHA_MEMO[key] = h.hexdigest()
    return _SHA_MEMO[key]


def _first(names, n: int = 3) -> str:
    names = list(names)
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _unwrap_refusal(exc: Exception) -> str:
    """The informative line of torch's weights_only refusal ("Unsupported global: GLOBAL x.y ...")."""
    for line in str(exc).splitlines():
        if "Unsupported global" in line:
            return line.split("Unsupported global:", 1)[1].split(" was not")[0].replace("GLOBAL", "").strip()
    return ""


def pooled_features(features: Callable, x, batch_size: int, prepare: Callable) -> np.ndarray:
    """Run ``features(prepare(batch))`` over ``x`` in batches, pooling feature maps to vectors.

    Parameters
    ----------
    features : callable
        Tensor (B, C, H, W) -> activations (B, d) or a feature map (B, d, h, w).
    x : Tensor, shape (N, C, H, W), uint8
    batch_size : int
    prepare : callable
        A uint8 batch -> the network's float input (device, normalization).

    Returns
    -------
    ndarray, shape (N, d), float32
        Feature maps are averaged over their spatial axes (global average pooling).
    """
    import torch

    out = []
    with torch.inference_mode():
        for s in range(0, x.shape[0], int(batch_size)):
            z = features(prepare(x[s:s + int(batch_size)]))
            if z.ndim > 2:
                z = z.mean(dim=tuple(range(2, z.ndim)))
            out.append(z.reshape(z.shape[0], -1).float().cpu())
    return torch.cat(out).numpy().astype(np.float32, copy=False)


def classifier_layer(model) -> tuple[str, Any]:
    """The final classifier layer: the last ``Linear`` or ``Conv2d`` module, as (name, module)."""
    from torch import nn

    last = None
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            last = (name, mod)
    if last is None:
        raise FeatureError(f"{type(model).__name__} has no Linear or Conv2d classifier layer to read features before")
    return last


def _out_dim(mod) -> int:
    from torch import nn

    return int(mod.out_features if isinstance(mod, nn.Linear) else mod.out_channels)


def _signature(model) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


_SIGNATURES: dict[str, dict[str, tuple]] | None = None


def _guess_arch(sd_shapes: dict[str, tuple]) -> list[str]:
    """torchvision archs whose state dict has exactly these keys and shapes (the classifier's outputs aside)."""
    global _SIGNATURES
    import torch
    import torchvision

    if _SIGNATURES is None:
        sigs = {}
        with torch.device("meta"):  # no memory, no init: only the key layout
            for name in torchvision_archs():
                try:
                    extra = {"init_weights": False} if name in ("googlenet", "inception_v3") else {}
                    sigs[name] = _signature(torchvision.models.get_model(name, weights=None, **extra))
                except Exception:  # some builders (regnet) compute on tensors: not guessable this way
                    continue
        _SIGNATURES = sigs
    aux = ("aux1.", "aux2.", "AuxLogits.")
    ours = {k: v for k, v in sd_shapes.items() if not k.startswith(aux)}
    out = []
    for name, sig in _SIGNATURES.items():
        sig = {k: v for k, v in sig.items() if not k.startswith(aux)}
        if set(sig) != set(ours):
            continue
        diff = [k for k in sig if sig[k] != ours[k]]
        if len(diff) <= 2 and all(len(sig[k]) and sig[k][1:] == ours[k][1:] for k in diff):  # num_classes only
            out.append(name)
    return out


@register_feature("pretrained")
class PretrainedFeatures(FeatureExtractor):
    """Penultimate-layer features of a torchvision backbone loaded from the user's weights file.

    Parameters
    ----------
    weights : str or path
        The weights file (required; nothing is downloaded). A datakit run
        directory is accepted (its ``checkpoint.pt``).
    arch : str, optional
        A torchvision classification model name (:func:`torchvision_archs`).
        Default: ``"resnet18"`` for a state dict, the model a datakit
        checkpoint names for a datakit checkpoint. The number of classes of the
        classifier is read from the file, so fine-tuned heads load too.
        googlenet and inception_v3 are built with ``transform_input=True``,
        as torchvision does for its published weights.
    size : int
        Images are resized to ``size`` x ``size`` (224 for ImageNet weights;
        64 is about 12x faster and still informative).
    batch_size : int
        Images per forward pass (does not change the features).
    device : {"cpu", "cuda", "auto"}
        Where the network runs (does not change the features beyond float rounding).

    Attributes
    ----------
    sha256_ : str
        The weights file's sha256 (after :meth:`prepare`).
    dim_ : int
        Feature dimension (after :meth:`prepare`).
    info_ : dict
        ``arch``, ``source`` ("state_dict", "checkpoint:<key>" or "datakit-checkpoint"), ``num_classes``,
        ``head`` (the layer whose input is read), ``dim``, ``mean``, ``std``.

    Examples
    --------
    >>> ext = get_extractor("pretrained", weights="resnet18.pth", size=64)   # doctest: +SKIP
    >>> fm = extract_features(dataset, ext.prepare())                          # doctest: +SKIP
    >>> fm.values.shape, fm.info["params"]["sha256"][:8]                       # doctest: +SKIP
    ((1000, 512), '5c106cde')
    """

    parallel = False
    mode = "RGB"

    def __init__(self, *, weights: str | os.PathLike | None = None, arch: str | None = None, size: int = 224,
                 batch_size: int = 64, device: str = "cpu") -> None:
        self.weights = None if weights is None else str(weights)
        self.arch = arch
        self.size = size
        self.batch_size = batch_size
        self.device = device
        self._model = None

    # ------------------------------------------------------------------ options

    @property
    def path(self) -> Path:
        """The weights file (a run directory's ``checkpoint.pt``)."""
        p = Path(self.weights)
        return p / "checkpoint.pt" if p.is_dir() and (p / "checkpoint.pt").is_file() else p

    def check(self) -> None:
        """Options only (the file itself is read in :meth:`prepare`); raises :class:`FeatureError`."""
        super().check()
        if self.weights is None:
            raise FeatureError("pretrained features need a weights file: pass --weights PATH (a torchvision state "
                               "dict or checkpoint you already have on disk; nothing is downloaded).")
        p = self.path
        if not p.exists():
            raise FeatureError(f"weights file {p} not found: pass --weights PATH to a file on disk "
                               "(nothing is downloaded).")
        if not p.is_file():
            raise FeatureError(f"weights {p} is a directory, not a weights file (expected a .pth/.pt file "
                               "or a datakit run directory with checkpoint.pt).")
        if self.arch is not None:
            archs = torchvision_archs()
            if self.arch not in archs:
                close = difflib.get_close_matches(str(self.arch), archs, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise FeatureError(f"Unknown value {self.arch!r} for arch.{hint} Valid values are "
                                   f"{{{', '.join(archs)}}}.")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, (int, np.integer)) \
                or self.batch_size < 1:
            raise FeatureError(f"pretrained: batch_size must be a positive integer, got {self.batch_size!r}")
        if not (self.device in _DEVICES or (isinstance(self.device, str) and self.device.startswith("cuda:"))):
            raise FeatureError(f"Unknown value {self.device!r} for device. "
                               "Valid values are {cpu, cuda, cuda:N, auto}.")

    def _sha256(self) -> str:
        try:
            return file_sha256(self.path)
        except OSError as exc:
            raise FeatureError(f"cannot read weights file {self.path} ({exc.strerror or exc})") from None

    def params(self) -> dict[str, Any]:
        """Settings shown in reports: ``arch``, ``size``, ``weights`` (path), ``sha256``, ``batch_size``, ``device``."""
        return {"arch": self.arch, "size": self.size, "weights": self.weights, "sha256": self._sha256(),
                "batch_size": self.batch_size, "device": self.device}

    def cache_key(self) -> dict[str, Any]:
        """name, arch, size and the file's sha256 (not its path, batch size or device)."""
        return {"name": self.name, "version": _CACHE_VERSION,
                "params": {"arch": self.arch, "size": self.size, "sha256": self._sha256()}}

    # ------------------------------------------------------------------ loading

    def _read(self) -> Any:
        import argparse
        import pickle

        import torch

        p = self.path
        try:
            with torch.serialization.safe_globals([argparse.Namespace]):  # torchvision reference "args"
                return torch.load(p, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            if "Weights only load failed" not in str(exc):
                raise FeatureError(f"weights file {p} is not a torch file ({exc}); expected a state dict saved "
                                   "with torch.save(model.state_dict(), PATH).") from None
            what = _unwrap_refusal(exc)
            if what.startswith(("torch.nn.", "torchvision.")) or ".models." in what:
                raise FeatureError(f"weights file {p} holds a whole pickled model ({what}), not a state dict; "
                                   "weights_only=True does not unpickle code: re-save it with "
                                   "torch.save(model.state_dict(), PATH).") from None
            raise FeatureError(f"weights file {p} is not a plain state dict: it pickles Python objects "
                               f"({what or 'not tensors, lists, dicts or numbers'}) that weights_only=True refuses "
                               "to load; save model.state_dict() instead.") from None
        except Exception as exc:  # zip / EOF / key errors for foreign or truncated files
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            why = f"{type(exc).__name__}: {lines[0].split('. ')[0][:120]}" if lines else type(exc).__name__
            raise FeatureError(f"weights file {p} is not a torch file ({why}); expected a state dict saved with "
                               "torch.save(model.state_dict(), PATH).") from None

    def _state_dict(self, obj: Any) -> tuple[dict, str]:
        """The state dict inside what the file holds, and where it was found."""
        import torch

        p = self.path
        if not isinstance(obj, dict):
            raise FeatureError(f"weights file {p} holds a {type(obj).__name__}, not a state dict "
                               "(expected a dict of parameter name -> tensor, e.g. model.state_dict()).")
        source = "state_dict"
        if not (obj and all(isinstance(v, torch.Tensor) for v in obj.values())):
            for key in _STATE_KEYS:
                inner = obj.get(key)
                if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                    obj, source = inner, f"checkpoint:{key}"
                    break
            else:
                keys = sorted(str(k) for k in obj)
                raise FeatureError(f"weights file {p} is not a state dict: a dict with keys {_first(keys, 5)} "
                                   f"and no tensor dict under {' / '.join(repr(k) for k in _STATE_KEYS)}.")
        sd = dict(obj)
        for prefix in _PREFIXES:
            if sd and all(str(k).startswith(prefix) for k in sd):
                sd = {str(k)[len(prefix):]: v for k, v in sd.items()}
        return sd, source

    def _build_torchvision(self, arch: str, sd: dict) -> Any:
        import torchvision

        extra: dict = {}
        if arch in ("googlenet", "inception_v3"):
            aux = "aux1." if arch == "googlenet" else "AuxLogits."
            extra = {"aux_logits": any(k.startswith(aux) for k in sd), "init_weights": False, "transform_input": True}
        model = torchvision.models.get_model(arch, weights=None, **extra)
        head, mod = classifier_layer(model)
        w = sd.get(f"{head}.weight")
        if w is not None and w.ndim >= 1 and int(w.shape[0]) != _out_dim(mod) and int(w.shape[0]) >= 1:
            model = torchvision.models.get_model(arch, weights=None, num_classes=int(w.shape[0]), **extra)
        return model

    def _check_match(self, model, sd: dict, what: str) -> None:
        ours = _signature(model)
        theirs = {k: tuple(v.shape) for k, v in sd.items()}
        missing = [k for k in ours if k not in theirs]
        unexpected = [k for k in theirs if k not in ours]
        shapes = [f"{k} {list(theirs[k])} vs {list(ours[k])}" for k in ours if k in theirs and ours[k] != theirs[k]]
        if not (missing or unexpected or shapes):
            return
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({_first(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({_first(unexpected)})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches ({_first(shapes, 2)})")
        guess = _guess_arch(theirs)
        hint = (f"; it looks like {' or '.join(guess[:3])}: pass arch={guess[0]!r}" if guess
                else "; pass the arch it was trained as (arch=NAME)")
        raise FeatureError(f"weights file {self.path} is not a state dict for {what}: {'; '.join(parts)}{hint}.")

    def prepare(self, datasets: Sequence = ()) -> "PretrainedFeatures":
        """Read and check the weights file, build the network (eval mode). ``datasets`` are not used.

        Raises
        ------
        FeatureError
            Missing file, not a torch file, not a state dict (a tensor, a list,
            a pickled module), or a state dict for another architecture; the
            message names the file and what was expected.
        """
        if self._model is not None:
            return self
        import torch

        from datakit.train.checkpoint import CHECKPOINT_FORMAT

        self.check()
        sha = self._sha256()
        obj = self._read()
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        in_channels, plan_name, input_size = 3, None, None
        if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
            from datakit.registry import UnknownNameError
            from datakit.train.models import ModelConfigError, get_model

            spec = obj.get("model") or {}
            name = spec.get("name")
            if self.arch is not None and self.arch != name:
                raise FeatureError(f"weights file {self.path} is a datakit checkpoint of model {name!r}, "
                                   f"not {self.arch!r}: leave arch out (a datakit checkpoint names its model).")
            try:
                model = get_model(name, num_classes=int(spec["num_classes"]), in_channels=int(spec["in_channels"]),
                                  **dict(spec.get("config") or {}))
            except (KeyError, TypeError, UnknownNameError, ModelConfigError) as exc:
                raise FeatureError(f"weights file {self.path}: cannot rebuild the datakit model it names ({exc})") \
                    from None
            sd, source = self._state_dict(obj.get("state_dict"))
            source = "datakit-checkpoint"
            norm = obj.get("normalization") or {}
            mean, std = norm.get("mean", mean), norm.get("std", std)
            in_channels, plan_name, input_size = int(spec["in_channels"]), name, tuple(model.input_size)
            arch, what = name, f"datakit model {name!r}"
        else:
            sd, source = self._state_dict(obj)
            arch = self.arch or "resnet18"
            model = self._build_torchvision(arch, sd)
            what = f"torchvision {arch}"
        self._check_match(model, sd, what)
        try:
            model.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            raise FeatureError(f"weights file {self.path} is not a state dict for {what}: "
                               f"{str(exc).splitlines()[-1].strip()[:200]}") from None
        from datakit.train.loop import resolve_device

        try:
            dev = resolve_device(self.device)
        except Exception as exc:
            raise FeatureError(f"pretrained: {exc}") from None
        model.eval().to(dev)
        head, mod = classifier_layer(model)
        store: dict = {}
        mod.register_forward_pre_hook(lambda _m, args: store.__setitem__("x", args[0]))
        self._model, self._store, self._dev = model, store, dev
        self._mean = torch.tensor(mean, dtype=torch.float32, device=dev).view(1, -1, 1, 1) * 255.0
        self._inv_std = 1.0 / (torch.tensor(std, dtype=torch.float32, device=dev).view(1, -1, 1, 1) * 255.0)
        self._in_channels, self._plan_name, self._input_size = in_channels, plan_name, input_size
        try:
            probe = self._forward(np.zeros((1, self.size, self.size, 3), np.uint8))
        except Exception as exc:  # e.g. a ViT at another size, inception_v3 below 75 px
            self._model = None
            raise FeatureError(f"pretrained {arch} cannot take {self.size}x{self.size} inputs "
                               f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); pass another size.") \
                from None
        self.sha256_ = sha
        self.dim_ = int(probe.shape[1])
        self.info_ = {"arch": arch, "source": source, "num_classes": _out_dim(mod), "head": head, "dim": self.dim_,
                      "mean": [float(v) for v in mean], "std": [float(v) for v in std], "sha256": sha}
        logger.info("pretrained %s from %s (sha256 %s, %s): %d features from the input of %s",
                    arch, self.path, sha[:12], source, self.dim_, head)
        return self

    # ------------------------------------------------------------------ features

    def _forward(self, images: np.ndarray) -> np.ndarray:
        import torch

        from datakit.train.data import as_uint8_nchw, input_plan, prepare_images

        x = as_uint8_nchw(images)
        if self._in_channels == 1 and x.shape[1] == 3:  # ITU-R 601 luma, as PIL's "L"
            x = (0.299 * x[:, 0:1].float() + 0.587 * x[:, 1:2].float() + 0.114 * x[:, 2:3].float()) \
                .round().clamp(0, 255).to(torch.uint8)
        elif self._in_channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self._input_size is not None:  # a datakit model: its own input plan (e.g. LeNet-5's padding)
            x = prepare_images(x, input_plan(self._plan_name, tuple(x.shape[-2:]), self._input_size))
        def features(xb):
            self._store.clear()
            self._model(xb)
            return self._store.pop("x")

        return pooled_features(features, x, self.batch_size,
                               lambda xb: (xb.to(self._dev).float() - self._mean) * self._inv_std)

    def transform(self, images: np.ndarray) -> np.ndarray:
        """Penultimate activations.

        Parameters
        ----------
        images : ndarray, shape (N, size, size, 3), uint8

        Returns
        -------
        ndarray, shape (N, dim_), float32

        The weights are loaded on first use when :meth:`prepare` was not called.
        """
        if self._model is None:
            self.prepare()
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise FeatureError(f"pretrained: images must be uint8 (N, H, W[, 3]), got {images.dtype} {images.shape}")
        if len(images) == 0:
            return np.zeros((0, self.dim_), np.float32)
        return self._forward(images)
