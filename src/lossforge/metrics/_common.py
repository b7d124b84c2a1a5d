"""Input handling shared by the metrics: tensors or arrays -> NumPy, label checks, confusion counts.

Labels become NumPy ``int64`` (integer-valued floats are accepted, anything else is a clear
``ValueError``); values become ``float64``. A torch tensor may live on any device.
"""
from __future__ import annotations

import numpy as np


def to_numpy(x) -> np.ndarray:
    """``x`` as a NumPy array; a torch tensor (any device, any float dtype) is detached first."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, on any device
        x = x.detach()
        if x.is_floating_point():
            x = x.double()  # bfloat16/half have no NumPy equivalent
        x = x.cpu().numpy()
    return np.asarray(x)


def as_labels(x, name: str) -> np.ndarray:
    """``x`` as ``int64`` class labels; ``ValueError`` naming ``name`` for non-integer values."""
    a = to_numpy(x)
    if a.dtype == np.bool_ or np.issubdtype(a.dtype, np.integer):
        return a.astype(np.int64, copy=False)
    if np.issubdtype(a.dtype, np.floating):
        if a.size and not (np.all(np.isfinite(a)) and np.all(a == np.round(a))):
            raise ValueError(f"{name} must hold integer class labels, got non-integer floats "
                             f"(shape {a.shape}); pass class indices, e.g. logits.argmax(1)")
        return a.astype(np.int64)
    raise ValueError(f"{name} must hold integer class labels, got dtype {a.dtype}")


def check_same_shape(p: np.ndarray, t: np.ndarray) -> None:
    """``ValueError`` unless the prediction and the target have the same shape."""
    if p.shape != t.shape:
        raise ValueError(f"pred and target shapes differ: pred {tuple(p.shape)} vs target "
                         f"{tuple(t.shape)}")


def confusion_counts(t: np.ndarray, p: np.ndarray, c: int) -> np.ndarray:
    """``(c, c)`` counts of flat label arrays; rows = target ``t``, columns = prediction ``p``."""
    return np.bincount(t * c + p, minlength=c * c).reshape(c, c)
