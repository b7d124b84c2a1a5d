"""Small data sets that need no download: scikit-learn's bundled sets and MNIST-1D (generated).

All splits are deterministic for ``seed`` and disjoint. Classification splits are stratified.
"""
from __future__ import annotations

import functools
import random

import numpy as np

from lossforge.data._common import (DataSplits, as_split, make_splits, split_indices,
                                    standardize)

#: (train, val, test) fractions of the scikit-learn sets.
FRACTIONS = (0.6, 0.2, 0.2)


def digits(seed: int = 0) -> DataSplits:
    """scikit-learn's 8×8 digits: 1,797 images, 10 classes.

    Inputs ``(N, 1, 8, 8)`` float32 in [0, 1] (grey levels 0..16 divided by 16); stratified
    60/20/20 split: 1,079 / 359 / 359 images.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    return make_splits("digits", 10, x, y, split_indices(len(y), FRACTIONS, seed, strata=y))


def breast_cancer(seed: int = 0) -> DataSplits:
    """scikit-learn's Wisconsin breast cancer set: 569 samples, 30 features, 2 classes.

    Targets as scikit-learn gives them: 0 = malignant (212), 1 = benign (357). Features
    ``(N, 30)`` standardised with the training split's mean and standard deviation. Stratified
    60/20/20 split: 341 / 114 / 114.
    """
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    x = bunch.data.astype(np.float64)
    y = bunch.target.astype(np.int64)
    tr, va, te = split_indices(len(y), FRACTIONS, seed, strata=y)
    x_tr, x_va, x_te = standardize(x[tr], x[va], x[te])
    return DataSplits(train=as_split(x_tr, y[tr]), val=as_split(x_va, y[va]),
                      test=as_split(x_te, y[te]), num_classes=2, name="breast_cancer")


def _diabetes_arrays(seed: int):
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes(scaled=False)
    x = bunch.data.astype(np.float64)
    y = bunch.target.astype(np.float64)
    return x, y, split_indices(len(y), FRACTIONS, seed)


def diabetes_target_stats(seed: int = 0) -> tuple[float, float]:
    """``(mean, std)`` of the raw diabetes target on the training split of ``seed``.

    ``diabetes(seed)`` returns targets ``(raw - mean) / std``; multiply a prediction by ``std``
    and add ``mean`` to get the original unit (a disease-progression score, raw range 25..346,
    std ≈ 77). An MSE on standardised targets is the raw MSE divided by ``std²``.
    """
    _, y, (tr, _, _) = _diabetes_arrays(seed)
    return float(y[tr].mean()), float(y[tr].std())


def diabetes(seed: int = 0, standardize_target: bool = True) -> DataSplits:
    """scikit-learn's diabetes regression: 442 patients, 10 features, one real target.

    Features ``(N, 10)`` (the raw, unscaled clinical values) standardised with the training
    split's statistics; targets ``(N,)`` float32, standardised with the training split's mean and
    std when ``standardize_target`` (the default) — the units are then "training standard
    deviations": see :func:`diabetes_target_stats` to convert back. Random 60/20/20 split:
    266 / 88 / 88. ``num_classes`` is ``None``.
    """
    x, y, (tr, va, te) = _diabetes_arrays(seed)
    x_tr, x_va, x_te = standardize(x[tr], x[va], x[te])
    y_tr, y_va, y_te = standardize(y[tr], y[va], y[te]) if standardize_target else (
        y[tr], y[va], y[te])
    return DataSplits(train=as_split(x_tr, y_tr, regression=True),
                      val=as_split(x_va, y_va, regression=True),
                      test=as_split(x_te, y_te, regression=True),
                      num_classes=None, name="diabetes")


#: Default sample count of :func:`mnist1d`. The package's own default is 5,000 (~4 s to generate
#: on one CPU core); 4,000 keeps a cold start near 3 s.
MNIST1D_SAMPLES = 4000


@functools.lru_cache(maxsize=8)
def _mnist1d_arrays(seed: int, num_samples: int):
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as err:  # optional extra
        raise ImportError("mnist1d() needs the `mnist1d` package: "
                          "pip install 'lossforge[data]' (or pip install mnist1d)") from err
    args = get_dataset_args()
    args.num_samples = int(num_samples)
    args.seed = int(seed)
    # make_dataset reseeds numpy's and Python's global generators: leave the caller's state as it was.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    arrays = tuple(np.asarray(data[k]) for k in ("x", "y", "x_test", "y_test"))
    for a in arrays:
        a.setflags(write=False)
    return arrays


def mnist1d(seed: int = 0, num_samples: int = MNIST1D_SAMPLES) -> DataSplits:
    """MNIST-1D (Greydanus 2020), generated offline with the ``mnist1d`` package.

    ``make_dataset`` runs with the package's default settings except ``num_samples`` (default
    :data:`MNIST1D_SAMPLES` = 4,000) and ``seed`` (the package's canonical set is seed 42 with
    5,000 samples). Its first 80% are split stratified 80/20 into train / val, its last 20% are
    the test split: 2,560 / 640 / 800 sequences by default. Inputs ``(N, 1, 40)`` float32
    (standardised by the package), 10 classes. The generated arrays are cached in memory per
    ``(seed, num_samples)``; the global ``numpy`` and ``random`` states are restored afterwards.
    """
    x, y, x_test, y_test = _mnist1d_arrays(int(seed), int(num_samples))
    tr, va, _ = split_indices(len(y), (0.8, 0.2, 0.0), seed, strata=y)
    return DataSplits(train=as_split(x[tr, None, :], y[tr]), val=as_split(x[va, None, :], y[va]),
                      test=as_split(x_test[:, None, :], y_test), num_classes=10, name="mnist1d")
