"""Regression with heavy-tailed training noise: ``friedman-heavy``, ``diabetes-heavy`` (issue 17).

Mean squared error is the maximum-likelihood loss for Gaussian noise and chases outliers; MAE,
Huber (1964) and Barron's general robust loss (2019) do not. These tasks add heavy-tailed noise to
the *training* targets (and by default the validation targets, option ``noisy_val``) and score on
clean test targets, so test ``mae`` / ``rmse`` measure how well a loss recovers the clean function.

Noise, in units of the clean training targets' standard deviation (targets are standardised by the
mean and standard deviation of the clean training targets, so the clean test targets have roughly
zero mean and unit variance):

* ``noise="student-t"``: every target gets ``scale · t_df`` (Student-t with ``df`` degrees of
  freedom; ``df = 1`` is Cauchy, no mean; the default ``df = 1.5`` has a mean but no variance);
* ``noise="outliers"``: every target gets Gaussian noise of standard deviation ``scale``, and a
  ``share`` of them, drawn without replacement, also ``± outlier_scale · U(1, 2)`` (gross errors
  of one sign each, 10–20 standard deviations by default).

Deterministic for ``noise_seed`` (independent of the split's ``seed``); every option is recorded
with a study's settings.

``friedman-heavy``: scikit-learn's Friedman #1 generator (10 features uniform on [0, 1], 5 of them
used: ``10 sin(π x1 x2) + 20 (x3 − 0.5)² + 10 x4 + 5 x5``), ``n_train`` / 500 / 1,000 samples; an
MLP (two hidden layers of 64) trained 1,500 Adam steps (~1.5 s per run on one CPU core).
``diabetes-heavy``: scikit-learn's diabetes set (266 / 88 / 88 patients) with the same noise; the
``diabetes`` task's MLP, 600 steps.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
from torch import nn

from lossforge import metrics as M
from lossforge.data import DataSplits
from lossforge.data._common import as_split, standardize
from lossforge.data.tabular import FRACTIONS
from lossforge.tasks import models
from lossforge.tasks.base import REGRESSION, Metric, ProxyConfig
from lossforge.tasks.builtin import _Cached
from lossforge.tasks.options import record_options

NOISES = ("student-t", "outliers")
Noise = Literal["student-t", "outliers"]

HEAVY_HELP = {
    "noise": "student-t: scale·t_df on every target; outliers: Gaussian scale plus a share of "
             "gross errors",
    "df": "degrees of freedom of the Student-t noise (1: Cauchy)",
    "scale": "noise scale, in clean-target standard deviations",
    "share": "share of training targets made gross outliers (noise=outliers)",
    "outlier_scale": "size of a gross outlier, in clean-target standard deviations (×U(1, 2))",
    "noise_seed": "seed of the noise (independent of the split's seed)",
    "noisy_val": "add the noise to the validation targets too (test stays clean)",
    "seed": "seed of the train/val/test split",
}

_METRICS = {"mae": Metric("mae", M.mae, higher_is_better=False),
            "rmse": Metric("rmse", M.rmse, higher_is_better=False)}


def heavy_tailed_noise(n: int, noise: str, rng: np.random.Generator, *, df: float = 1.5,
                       scale: float = 0.5, share: float = 0.2,
                       outlier_scale: float = 10.0) -> np.ndarray:
    """``n`` noise values of the kind ``noise`` (see the module docstring), float64."""
    if noise == "student-t":
        if df <= 0:
            raise ValueError(f"df must be positive, got {df}")
        return scale * rng.standard_t(df, size=n)
    if noise == "outliers":
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"share must be in [0, 1], got {share}")
        out = scale * rng.standard_normal(n)
        k = int(round(share * n))
        idx = rng.choice(n, size=k, replace=False)
        out[idx] += rng.choice([-1.0, 1.0], size=k) * outlier_scale * rng.uniform(1.0, 2.0, size=k)
        return out
    raise ValueError(f"noise must be one of {', '.join(NOISES)}, got {noise!r}")


class _HeavyTailed(_Cached):
    """A regression task whose training (and validation) targets get heavy-tailed noise."""

    kind = REGRESSION
    num_classes = None
    metrics = dict(_METRICS)
    default_metric = "mae"
    baseline = "mse"
    option_help = HEAVY_HELP

    def _set_noise(self, noise: str, df: float, scale: float, share: float, outlier_scale: float,
                   noise_seed: int, noisy_val: bool) -> None:
        self.noise, self.df, self.scale, self.share = str(noise), float(df), float(scale), float(share)
        self.outlier_scale, self.noise_seed = float(outlier_scale), int(noise_seed)
        self.noisy_val = bool(noisy_val)
        heavy_tailed_noise(1, self.noise, np.random.default_rng(0), **self._noise_kwargs())

    def _noise_kwargs(self) -> dict[str, float]:
        return dict(df=self.df, scale=self.scale, share=self.share,
                    outlier_scale=self.outlier_scale)

    def _options(self) -> dict:
        return dict(noise=self.noise, df=self.df, scale=self.scale, share=self.share,
                    outlier_scale=self.outlier_scale, noise_seed=self.noise_seed,
                    noisy_val=self.noisy_val)

    def clean_arrays(self) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
        """``((x, y), (x, y), (x, y))`` of train / val / test, clean targets, unstandardised."""
        raise NotImplementedError

    def load(self) -> DataSplits:
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = self.clean_arrays()
        x_tr, x_va, x_te = standardize(x_tr, x_va, x_te)
        y_tr, y_va, y_te = standardize(y_tr, y_va, y_te)
        train_rng, val_rng = (np.random.default_rng(s) for s in
                              np.random.SeedSequence([37, self.noise_seed]).spawn(2))
        kw = self._noise_kwargs()
        y_tr = y_tr + heavy_tailed_noise(len(y_tr), self.noise, train_rng, **kw)
        if self.noisy_val:
            y_va = y_va + heavy_tailed_noise(len(y_va), self.noise, val_rng, **kw)
        return DataSplits(train=as_split(x_tr, y_tr, regression=True),
                          val=as_split(x_va, y_va, regression=True),
                          test=as_split(x_te, y_te, regression=True), num_classes=None,
                          name=self.name)


class FriedmanHeavy(_HeavyTailed):
    """Friedman #1 (generated offline) with heavy-tailed training noise; an MLP."""

    name = "friedman-heavy"
    proxy = ProxyConfig(steps=1500, batch_size=64, optimizer="adam", lr=1e-3)
    option_help = {**HEAVY_HELP, "n_train": "training samples generated"}

    def __init__(self, noise: Noise = "student-t", df: float = 1.5, scale: float = 0.5,
                 share: float = 0.2, outlier_scale: float = 10.0, noise_seed: int = 0,
                 noisy_val: bool = True, n_train: int = 1000, seed: int = 0):
        super().__init__(seed)
        self._set_noise(noise, df, scale, share, outlier_scale, noise_seed, noisy_val)
        if n_train < 2:
            raise ValueError(f"n_train must be at least 2, got {n_train}")
        self.n_train = int(n_train)
        record_options(self, {**self._options(), "n_train": self.n_train, "seed": seed})

    def clean_arrays(self):
        from sklearn.datasets import make_friedman1

        sizes = (self.n_train, 500, 1000)
        seeds = np.random.SeedSequence([41, int(self.seed)]).generate_state(3)
        return tuple(make_friedman1(n_samples=n, n_features=10, noise=0.0,
                                    random_state=int(s)) for n, s in zip(sizes, seeds))

    def make_model(self) -> nn.Module:
        return nn.Sequential(models.mlp(10, 1, hidden=64), models.Squeeze())


class DiabetesHeavy(_HeavyTailed):
    """scikit-learn's diabetes set with heavy-tailed training noise; the ``diabetes`` MLP."""

    name = "diabetes-heavy"
    proxy = ProxyConfig(steps=600, batch_size=32, optimizer="adam", lr=1e-3)

    def __init__(self, noise: Noise = "student-t", df: float = 1.5, scale: float = 0.5,
                 share: float = 0.2, outlier_scale: float = 10.0, noise_seed: int = 0,
                 noisy_val: bool = True, seed: int = 0):
        super().__init__(seed)
        self._set_noise(noise, df, scale, share, outlier_scale, noise_seed, noisy_val)
        record_options(self, {**self._options(), "seed": seed})

    def clean_arrays(self):
        from sklearn.datasets import load_diabetes

        from lossforge.data._common import split_indices

        bunch = load_diabetes(scaled=False)
        x, y = bunch.data.astype(np.float64), bunch.target.astype(np.float64)
        return tuple((x[i], y[i]) for i in split_indices(len(y), FRACTIONS, self.seed))

    def make_model(self) -> nn.Module:
        return nn.Sequential(models.mlp(10, 1, hidden=32), models.Squeeze())


HEAVY_TAILED_TASKS = (FriedmanHeavy, DiabetesHeavy)

__all__ = ["DiabetesHeavy", "FriedmanHeavy", "HEAVY_TAILED_TASKS", "heavy_tailed_noise"]
