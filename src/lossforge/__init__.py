"""lossforge: discover loss functions automatically.

Public API: ``parse``, ``Expr``, ``ParseError``, ``zoo``, ``tasks``, ``Task``, ``train``,
``evaluate``, ``LossSearch``, ``load_study``.
"""
from lossforge.expr import Expr, ParseError, parse
from lossforge import tasks
from lossforge.tasks import Task

__version__ = "0.1.0"


def __getattr__(name):  # lazy: keep `import lossforge` light
    if name == "zoo":
        from lossforge import zoo

        return zoo
    if name == "train":
        from lossforge.training import train

        return train
    if name == "evaluate":
        from lossforge.comparison import evaluate

        return evaluate
    if name in ("LossSearch", "load_study", "Study"):
        from lossforge import study

        return getattr(study, name)
    raise AttributeError(f"module 'lossforge' has no attribute {name!r}")


__all__ = ["Expr", "ParseError", "parse", "tasks", "Task", "zoo", "train", "evaluate",
           "LossSearch", "load_study", "Study"]
