"""The built-in tasks. Each loads offline (bundled, generated, or from the data directory)."""
from __future__ import annotations

import functools

import numpy as np
from torch import nn

from lossforge import data as D
from lossforge import metrics as M
from lossforge.data import DataSplits
from lossforge.tasks import models
from lossforge.tasks.detection import ShapesDet
from lossforge.tasks.pose import ShapesPose
from lossforge.tasks.base import REGRESSION, Metric, ProxyConfig, Task

_CLS_METRICS = {
    "accuracy": Metric("accuracy", M.accuracy),
    "balanced_accuracy": Metric("balanced_accuracy", M.balanced_accuracy),
    "f1": Metric("f1", M.f1),
}


def _check_arch(task: Task, arch: str) -> str:
    """``arch`` if the task offers it (its ``archs``), else ``ValueError`` listing them."""
    if arch not in task.archs:
        raise ValueError(f"task {task.name!r} has no architecture {arch!r}; choose one of "
                         f"{', '.join(task.archs)}")
    return arch


class _Cached(Task):
    """Caches ``data()`` per instance: loaders are deterministic for ``seed``."""

    def __init__(self, seed: int = 0):
        self.seed = seed

    @functools.cached_property
    def _data(self) -> DataSplits:
        return self.load()

    def data(self) -> DataSplits:
        return self._data

    def load(self) -> DataSplits:
        raise NotImplementedError


class Digits(_Cached):
    """scikit-learn's bundled 8×8 digits (1,797 images, 10 classes); a small CNN."""

    name = "digits"
    num_classes = 10
    metrics = dict(_CLS_METRICS)
    default_metric = "accuracy"
    proxy = ProxyConfig(steps=300, batch_size=64, optimizer="adam", lr=2e-3)
    archs = ("digits-cnn", *models.IMAGE_ARCHS)

    def __init__(self, seed: int = 0, arch: str = "digits-cnn"):
        super().__init__(seed)
        self.arch = _check_arch(self, arch)

    def load(self) -> DataSplits:
        return D.digits(seed=self.seed)

    def make_model(self) -> nn.Module:
        if self.arch == "digits-cnn":
            return models.digits_cnn(self.num_classes)
        return models.image_model(self.arch, self.num_classes, in_channels=1, size=8)


class BreastCancer(_Cached):
    """scikit-learn's breast cancer set: binary, imbalanced (212 malignant / 357 benign); an MLP.

    Label 0 is malignant (scikit-learn's encoding); ``f1`` scores the detection of malignant cases.
    """

    name = "breast-cancer"
    num_classes = 2
    metrics = {**_CLS_METRICS,
               "f1": Metric("f1", functools.partial(M.f1, average="binary", pos_label=0))}
    default_metric = "balanced_accuracy"
    proxy = ProxyConfig(steps=200, batch_size=32, optimizer="adam", lr=1e-3)

    def load(self) -> DataSplits:
        return D.breast_cancer(seed=self.seed)

    def make_model(self) -> nn.Module:
        return models.mlp(30, 2, hidden=32)


class Diabetes(_Cached):
    """scikit-learn's diabetes regression (442 patients, standardised target); an MLP."""

    name = "diabetes"
    kind = REGRESSION
    num_classes = None
    metrics = {"mae": Metric("mae", M.mae, higher_is_better=False),
               "rmse": Metric("rmse", M.rmse, higher_is_better=False)}
    default_metric = "mae"
    proxy = ProxyConfig(steps=300, batch_size=32, optimizer="adam", lr=1e-3)
    baseline = "mse"  # the zoo's regression mse, square(f - y)

    def load(self) -> DataSplits:
        return D.diabetes(seed=self.seed)

    def make_model(self) -> nn.Module:
        return nn.Sequential(models.mlp(10, 1, hidden=32), models.Squeeze())


class Mnist1D(_Cached):
    """MNIST-1D (Greydanus 2020), generated offline; a small 1-D CNN."""

    name = "mnist1d"
    num_classes = 10
    metrics = dict(_CLS_METRICS)
    default_metric = "accuracy"
    proxy = ProxyConfig(steps=400, batch_size=64, optimizer="adam", lr=2e-3)

    def load(self) -> DataSplits:
        return D.mnist1d(seed=self.seed)

    def make_model(self) -> nn.Module:
        x = self.data().train.x
        return models.conv1d_net(length=int(x.shape[-1]), num_classes=self.num_classes)


class Mnist(_Cached):
    """MNIST from the data directory (``make data``); GLO's CNN, SGD lr 0.01, batch 100."""

    name = "mnist"
    num_classes = 10
    metrics = dict(_CLS_METRICS)
    default_metric = "accuracy"
    proxy = ProxyConfig(steps=2000, batch_size=100, optimizer="sgd", lr=0.01, momentum=0.0)
    archs = ("glo-cnn", *models.IMAGE_ARCHS)

    def __init__(self, seed: int = 0, data_dir: str | None = None, arch: str = "glo-cnn"):
        super().__init__(seed)
        self.data_dir = data_dir
        self.arch = _check_arch(self, arch)

    def load(self) -> DataSplits:
        return D.mnist(data_dir=self.data_dir, seed=self.seed)

    def make_model(self) -> nn.Module:
        if self.arch == "glo-cnn":
            return models.glo_mnist_cnn(self.num_classes)
        return models.image_model(self.arch, self.num_classes, in_channels=1, size=28)


class FashionMnist(Mnist):
    """Fashion-MNIST from the data directory (``make data``); same model and settings as MNIST."""

    name = "fashion-mnist"

    def load(self) -> DataSplits:
        return D.fashion_mnist(data_dir=self.data_dir, seed=self.seed)


class ShapesSeg(_Cached):
    """Procedural semantic segmentation (64×64, 7 classes, ~85% background, thin rings and curves,
    tiny dots, occlusion); a small U-Net. Metrics as the AutoLoss-Zero group computes them."""

    name = "shapes-seg"
    num_classes = 7
    default_metric = "miou"
    proxy = ProxyConfig(steps=120, batch_size=8, optimizer="adam", lr=3e-3, eval_batch_size=64)
    metrics = {
        name: Metric(name, fn)
        for name, fn in [("miou", M.miou), ("fwiou", M.fwiou), ("gacc", M.gacc),
                         ("macc", M.macc), ("biou", M.biou), ("bf1", M.bf1),
                         ("trimap_iou", M.trimap_iou)]
    }

    def __init__(self, seed: int = 0, size: int = 64, n_train: int = 512, n_val: int = 128,
                 n_test: int = 256):
        super().__init__(seed)
        self.size, self.sizes = size, (n_train, n_val, n_test)

    def load(self) -> DataSplits:
        n_train, n_val, n_test = self.sizes
        return D.shapes_seg(n_train=n_train, n_val=n_val, n_test=n_test, size=self.size,
                            num_classes=self.num_classes, seed=self.seed)

    def make_model(self) -> nn.Module:
        return models.TinyUNet(self.num_classes, width=8)

    def compute_metrics(self, pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
        meter = M.SegmentationMeter(self.num_classes, ignore_index=self.ignore_index)
        meter.update(pred, target)
        return {k: float(v) for k, v in meter.compute().items() if k in self.metrics}


class ShapesCls(_Cached):
    """32×32 RGB, 10 shape classes from the shapes generator: our CIFAR-10 stand-in."""

    name = "shapes-cls"
    num_classes = 10
    metrics = dict(_CLS_METRICS)
    default_metric = "accuracy"
    proxy = ProxyConfig(steps=300, batch_size=64, optimizer="adam", lr=2e-3, eval_batch_size=500)
    archs = models.IMAGE_ARCHS

    def __init__(self, seed: int = 0, arch: str = "cnn", n_train: int = 5000, n_val: int = 1000,
                 n_test: int = 2000):
        super().__init__(seed)
        self.arch = _check_arch(self, arch)
        self.sizes = (n_train, n_val, n_test)

    def load(self) -> DataSplits:
        n_train, n_val, n_test = self.sizes
        return D.shapes_cls(n_train=n_train, n_val=n_val, n_test=n_test, seed=self.seed)

    def make_model(self) -> nn.Module:
        return models.image_model(self.arch, self.num_classes, in_channels=3, size=32, width=16)


BUILTIN: dict[str, type[Task]] = {
    cls.name: cls for cls in (Digits, BreastCancer, Diabetes, Mnist1D, Mnist, FashionMnist,
                              ShapesSeg, ShapesCls)
}
BUILTIN[ShapesDet.name] = ShapesDet
BUILTIN[ShapesPose.name] = ShapesPose
