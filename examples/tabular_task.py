"""An imbalanced tabular task in one file, judged by macro-F1: the smallest "your own task".

Three classes of 20 numeric features (scikit-learn's ``make_classification``), in proportions
80 % / 15 % / 5 %: a model can reach 80 % accuracy by never predicting the rare classes, so the
task is judged by macro-F1 (the unweighted mean of the per-class F1 scores), which it cannot fool.
The class below is all lossforge needs: data splits, a model, the metrics and their direction,
and the proxy-training settings; lossforge's own training loop trains it.

Run it from the repository root (any folder works; paths are relative to where you are)::

    lossforge tasks --check examples/tabular_task.py
    lossforge evaluate --task examples/tabular_task.py --loss ce --loss focal --seeds 3
    lossforge search --task examples/tabular_task.py --budget 60 --study tabular.db
    lossforge show tabular.db --top 5
    lossforge export tabular.db --rank 1 -o found_loss.py

``--task examples/tabular_task.py`` finds the one ``Task`` subclass defined here; name it
explicitly with ``examples/tabular_task.py:ImbalancedTabular``.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from sklearn.datasets import make_classification
from sklearn.model_selection import train_test_split
from torch import nn

from lossforge.data import DataSplits, Split
from lossforge.metrics import accuracy, f1
from lossforge.tasks import Metric, ProxyConfig, Task

#: Class proportions of the data set (the last class is the rare one).
WEIGHTS = (0.80, 0.15, 0.05)


class ImbalancedTabular(Task):
    """3 imbalanced classes of 20 features (1,500 rows: 900 train, 300 val, 300 test,
    stratified), a two-layer MLP; searched for macro-F1."""

    name = "imbalanced-tabular"
    kind = "classification"
    num_classes = 3
    metrics = {
        "macro_f1": Metric("macro_f1", functools.partial(f1, num_classes=3, average="macro")),
        "accuracy": Metric("accuracy", accuracy),
    }
    default_metric = "macro_f1"
    proxy = ProxyConfig(steps=200, batch_size=64, optimizer="adam", lr=3e-3)
    baseline = "ce"

    def __init__(self):
        self._splits: DataSplits | None = None

    def data(self) -> DataSplits:
        """Generated once per process (a fixed seed): features standardised with the training
        split's mean and standard deviation."""
        if self._splits is None:
            x, y = make_classification(n_samples=1500, n_features=20, n_informative=8,
                                       n_redundant=4, n_classes=3, n_clusters_per_class=2,
                                       weights=list(WEIGHTS), class_sep=1.0, flip_y=0.01,
                                       random_state=0)
            x_train, x_rest, y_train, y_rest = train_test_split(x, y, train_size=900,
                                                                stratify=y, random_state=0)
            x_val, x_test, y_val, y_test = train_test_split(x_rest, y_rest, test_size=300,
                                                            stratify=y_rest, random_state=0)
            mean, std = x_train.mean(0), x_train.std(0) + 1e-8

            def split(features: np.ndarray, labels: np.ndarray) -> Split:
                return Split(torch.tensor((features - mean) / std, dtype=torch.float32),
                             torch.tensor(labels, dtype=torch.long))

            self._splits = DataSplits(split(x_train, y_train), split(x_val, y_val),
                                      split(x_test, y_test), 3, self.name)
        return self._splits

    def make_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 3))


if __name__ == "__main__":  # a quick look at the data: `python examples/tabular_task.py`
    splits = ImbalancedTabular().data()
    for which in ("train", "val", "test"):
        counts = np.bincount(getattr(splits, which).y.numpy(), minlength=3)
        print(f"{which:5s} {len(getattr(splits, which)):4d} rows, per class {counts.tolist()}")
