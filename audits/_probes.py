"""Probes: small classifiers the audits train to measure what images give away.

Two probes, as in Torralba and Efros (2011) and the linear-probe literature:

* ``linear``: logistic regression on standardized pixels (scikit-learn);
* ``conv``: a small conv net (LeNet-5) from :mod:`datakit.train`, imported
  lazily so the linear probe works even where torch training is unavailable.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

__all__ = ["ProbeUnavailable", "ProbeResult", "fit_predict", "pixel_basis", "auto_epochs", "PROBES"]

logger = logging.getLogger(__name__)

#: valid probe names
PROBES = ("linear", "conv")


class ProbeUnavailable(RuntimeError):
    """The probe cannot run here (e.g. :mod:`datakit.train` is missing)."""


@dataclass
class ProbeResult:
    """Predictions of one probe on held-out images.

    Attributes
    ----------
    pred : ndarray, shape (N,), int64
    proba : ndarray, shape (N, K), float
    seconds : float
        Wall time of fit + predict.
    info : dict
    """

    pred: np.ndarray
    proba: np.ndarray
    seconds: float
    info: dict = field(default_factory=dict)


def _features(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def pixel_basis(x_train: np.ndarray, n_components: int = 64, seed: int = 0):
    """Standardize pixels and project on the top principal components (fitted on ``x_train``).

    Parameters
    ----------
    x_train : ndarray, shape (N, H, W) or (N, H, W, 3), uint8
    n_components : int

    Returns
    -------
    sklearn Pipeline (StandardScaler -> PCA), fitted; a linear map of the pixels.
    """
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    f = _features(x_train)
    k = int(min(n_components, len(f) - 1, f.shape[1]))
    steps = [StandardScaler()]
    if 2 <= k < f.shape[1]:
        steps.append(PCA(n_components=k, svd_solver="covariance_eigh" if len(f) > f.shape[1] else "full",
                         random_state=seed))
    return make_pipeline(*steps).fit(f)


def _linear(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, num_classes: int,
            seed: int, basis=None) -> tuple[np.ndarray, np.ndarray, dict]:
    from sklearn.linear_model import LogisticRegression

    if basis is None:
        basis = pixel_basis(x_train, seed=seed)
    z_train = basis.transform(_features(x_train))
    z_test = basis.transform(_features(x_test))
    info = {"probe": "linear", "n_features": int(np.prod(x_train.shape[1:])),
            "model": f"LogisticRegression(C=0.1) on {z_train.shape[1]} standardized pixel components"
                     + (" (PCA)" if z_train.shape[1] < np.prod(x_train.shape[1:]) else "")}
    # lbfgs on raw 784+ dims is 10-20x slower; PCA keeps the probe linear in the pixels
    model = LogisticRegression(C=0.1, max_iter=300, tol=1e-3, random_state=seed).fit(z_train, y_train)
    proba_raw = model.predict_proba(z_test)
    proba = np.zeros((len(z_test), num_classes))
    proba[:, model.classes_.astype(int)] = proba_raw
    return proba.argmax(1).astype(np.int64), proba, info


def auto_epochs(n_train: int, presentations: int = 12000) -> int:
    """Epochs so that a small training set still gets about ``presentations`` image updates (3-20).

    Examples
    --------
    >>> auto_epochs(2000), auto_epochs(100000), auto_epochs(100)
    (6, 3, 20)
    """
    return int(min(20, max(3, -(-presentations // max(n_train, 1)))))


def _conv(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, num_classes: int, seed: int,
          epochs: int | None, model: str) -> tuple[np.ndarray, np.ndarray, dict]:
    try:
        from datakit.train import fit_arrays
    except ImportError as exc:  # training issue not delivered / torch missing
        raise ProbeUnavailable(f"conv probe needs datakit.train.fit_arrays ({exc})") from exc
    if epochs is None:
        epochs = auto_epochs(len(x_train))
    fit = fit_arrays(x_train, y_train.astype(np.int64), model=model, num_classes=num_classes, epochs=epochs,
                     batch_size=64, seed=seed, device="cpu")
    proba = np.asarray(fit.predict_proba(x_test), dtype=np.float64)
    return proba.argmax(1).astype(np.int64), proba, {"probe": "conv", "model": model, "epochs": epochs,
                                                     "batch_size": 64}


def fit_predict(probe: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, num_classes: int,
                seed: int = 0, epochs: int | None = None, conv_model: str = "lenet5", basis=None) -> ProbeResult:
    """Train ``probe`` on (x_train, y_train) and predict x_test.

    Parameters
    ----------
    probe : {"linear", "conv"}
    x_train : ndarray, shape (N, H, W) or (N, H, W, 3), uint8
    y_train : ndarray, shape (N,), int in [0, num_classes)
    x_test : ndarray, shape (M, H, W) or (M, H, W, 3), uint8
    num_classes : int
    seed : int
    epochs : int, optional
        Training epochs of the conv probe (default: :func:`auto_epochs`).
    conv_model : str
        Model name for :func:`datakit.train.fit_arrays`.
    basis : fitted transformer, optional
        For the linear probe: a :func:`pixel_basis` to reuse (e.g. fitted once on
        all training images of a learning curve); default: fitted on ``x_train``.

    Returns
    -------
    ProbeResult

    Raises
    ------
    ValueError
        Unknown probe name.
    ProbeUnavailable
        The conv probe cannot run here.
    """
    if probe not in PROBES:
        raise ValueError(f"Unknown probe {probe!r}. Valid values are {{{', '.join(PROBES)}}}.")
    t0 = time.perf_counter()
    if probe == "linear":
        pred, proba, info = _linear(x_train, y_train, x_test, num_classes, seed, basis)
    else:
        pred, proba, info = _conv(x_train, y_train, x_test, num_classes, seed, epochs, conv_model)
    seconds = time.perf_counter() - t0
    info.update({"n_train": int(len(x_train)), "n_test": int(len(x_test)), "seconds": round(seconds, 3)})
    return ProbeResult(pred=pred, proba=proba, seconds=seconds, info=info)
