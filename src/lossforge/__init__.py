"""lossforge: discover loss functions automatically.

Public API: ``parse``, ``Expr``, ``ParseError``, ``zoo``, ``tasks``, ``Task``, ``train``,
``evaluate``, ``LossSearch``, ``load_study``; multi-slot losses: ``LossSlot``, ``Bundle``.
"""
import importlib

from lossforge.expr import Expr, ParseError, parse
from lossforge import tasks
from lossforge.tasks import LossSlot, Task

__version__ = "0.1.0"


def __getattr__(name):  # lazy: keep `import lossforge` light
    # importlib, not `from lossforge import zoo`: that form looks the name up on this package
    # first, which calls this very __getattr__ again (infinite recursion).
    if name == "zoo":
        return importlib.import_module("lossforge.zoo")
    if name == "train":
        from lossforge.training import train

        return train
    if name == "evaluate":
        from lossforge.comparison import evaluate

        return evaluate
    if name == "Bundle":
        from lossforge.expr.bundle import Bundle

        return Bundle
    if name in ("LossSearch", "load_study", "Study"):
        return getattr(importlib.import_module("lossforge.study"), name)
    raise AttributeError(f"module 'lossforge' has no attribute {name!r}")


__all__ = ["Expr", "ParseError", "parse", "tasks", "Task", "zoo", "train", "evaluate",
           "LossSearch", "load_study", "Study", "LossSlot", "Bundle"]
