"""lossforge: discover loss functions automatically.

Public API:

* expressions: ``parse``, ``Expr``, ``ParseError``; multi-slot losses: ``LossSlot``, ``Bundle``;
  the loss catalogue ``zoo``;
* tasks: ``tasks`` (the registry), ``Task`` (override ``Task.fit`` to train with your own loop),
  ``objective_task`` (a task from a function ``fn(loss, steps, seed, report) -> metrics``);
* training and comparing losses: ``train``, ``evaluate``;
* searching: ``LossSearch``, ``FunnelConfig`` (its screening funnel), ``Strategy`` (the base of
  search strategies; register one with ``lossforge.search.register``), ``make_executor``
  (parallel proxy trainings);
* studies: ``load_study``, ``Study``, ``resume``.

Names other than the expression and task ones are imported lazily, on first use.
"""
import importlib
from typing import TYPE_CHECKING

from lossforge.expr import Expr, ParseError, parse
from lossforge import tasks
from lossforge.tasks import LossSlot, Task

if TYPE_CHECKING:  # editors and type checkers see the lazy names
    from lossforge import zoo
    from lossforge.comparison import evaluate
    from lossforge.evaluation.funnel import FunnelConfig
    from lossforge.execution import make_executor
    from lossforge.expr.bundle import Bundle
    from lossforge.search.strategy import Strategy
    from lossforge.study import LossSearch, Study, load_study, resume
    from lossforge.tasks.objective import objective_task
    from lossforge.training import train

__version__ = "0.1.0"

#: Lazy public names -> the module that defines them.
_LAZY = {
    "train": "lossforge.training",
    "evaluate": "lossforge.comparison",
    "Bundle": "lossforge.expr.bundle",
    "LossSearch": "lossforge.study",
    "load_study": "lossforge.study",
    "Study": "lossforge.study",
    "resume": "lossforge.study",
    "FunnelConfig": "lossforge.evaluation.funnel",
    "Strategy": "lossforge.search.strategy",
    "make_executor": "lossforge.execution",
    "objective_task": "lossforge.tasks.objective",
}


def __getattr__(name):  # lazy: keep `import lossforge` light
    # importlib, not `from lossforge import zoo`: that form looks the name up on this package
    # first, which calls this very __getattr__ again (infinite recursion).
    if name == "zoo":
        return importlib.import_module("lossforge.zoo")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lossforge' has no attribute {name!r}")


__all__ = ["Expr", "ParseError", "parse", "tasks", "Task", "zoo", "train", "evaluate",
           "LossSearch", "load_study", "Study", "resume", "FunnelConfig", "Strategy",
           "make_executor", "LossSlot", "Bundle", "objective_task"]
