"""Turn what a user names as a loss into an ``nn.Module`` for a task.

A loss may be given as an :class:`Expr`, an ``nn.Module``, a zoo name (``ce``, ``baikal`` …), a
formula (``-sum_c(y * log(p))``) or the path of a ``.py`` file written by ``to_source``.
"""
from __future__ import annotations

import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from lossforge.expr import Expr, ParseError, parse
from lossforge.tasks.base import Task


@dataclass
class LoadedLoss:
    """A loss ready to train with: display ``name``, the ``module`` and its ``expr`` if symbolic."""

    name: str
    module: nn.Module
    expr: Expr | None = None


def load_loss(spec: str | Expr | nn.Module, task: Task) -> LoadedLoss:
    """Resolve ``spec`` for ``task``; ``ValueError`` naming the problem when it cannot be used."""
    if isinstance(spec, nn.Module):
        return LoadedLoss(getattr(spec, "formula", type(spec).__name__), spec)
    if isinstance(spec, Expr):
        return _from_expr(str(spec), spec, task)
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a loss must be a formula, a zoo name, a .py file or an nn.Module, got {spec!r}")
    from lossforge import zoo

    if spec in zoo.names():
        entry = zoo.get(spec)
        if entry.expr is not None:
            return _from_expr(spec, entry.expr, task)
        return LoadedLoss(spec, entry.module())
    if spec.endswith(".py"):
        return LoadedLoss(Path(spec).stem, load_source_file(spec))
    try:
        expr = parse(spec)
    except ParseError as err:
        raise ValueError(f"{spec!r} is not a zoo name ({', '.join(zoo.names())}), nor a .py file, "
                         f"and not a valid formula for task {task.name!r}: {err}") from None
    return _from_expr(spec, expr, task)


def _from_expr(name: str, expr: Expr, task: Task) -> LoadedLoss:
    missing = expr.variables() - task.variables
    if missing:
        raise ValueError(f"loss {name!r} reads {', '.join(sorted(missing))}, which task "
                         f"{task.name!r} does not provide (its variables: "
                         f"{', '.join(sorted(task.variables))})")
    return LoadedLoss(name, expr.to_torch(kind=task.kind, **_kw(task)), expr)


def _kw(task: Task) -> dict:
    return {"ignore_index": task.ignore_index} if task.kind == "classification" else {}


def load_source_file(path: str | Path) -> nn.Module:
    """Import a ``.py`` file (as written by ``to_source``) and instantiate its ``nn.Module`` class."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"loss file {str(path)!r} does not exist")
    name = f"_lossforge_user_loss_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # the user's file: report any failure as bad input
        raise ValueError(f"could not import loss file {str(path)!r}: {err}") from err
    classes = [c for _, c in inspect.getmembers(module, inspect.isclass)
               if issubclass(c, nn.Module) and c.__module__ == name]
    if len(classes) != 1:
        raise ValueError(f"loss file {str(path)!r} must define exactly one nn.Module class, "
                         f"found {len(classes)}")
    return classes[0]()
