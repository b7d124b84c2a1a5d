"""Tasks: ``tasks.get(name)``, ``tasks.names()``, ``tasks.register(name, factory)``.

A task with its own training loop overrides :meth:`Task.fit` (:func:`overrides_fit`); one made
from a function is :func:`lossforge.objective_task` (:mod:`lossforge.tasks.objective`).
"""
from __future__ import annotations

from typing import Callable

from lossforge._hints import did_you_mean
from lossforge.tasks.base import (BOX, CLASSIFICATION, REGRESSION, SIGNATURES, LossSlot, Metric,
                                  ProxyConfig, Report, Task, check_output_shape, has_data,
                                  overrides_fit)

_REGISTRY: dict[str, Callable[..., Task]] = {}


def register(name: str, factory: Callable[..., Task]) -> None:
    """Make ``factory`` (a Task subclass or any callable returning a task) available by ``name``."""
    _REGISTRY[name] = factory


def names() -> list[str]:
    """Names of the registered tasks."""
    _load_builtins()
    return sorted(_REGISTRY)


def get(name: str | Task, **kwargs) -> Task:
    """The task called ``name`` (a new instance; ``kwargs`` go to its constructor).

    A task object is returned unchanged. Unknown names raise ``KeyError`` listing the known ones.
    """
    if not isinstance(name, str):
        return name
    _load_builtins()
    if name not in _REGISTRY:
        raise KeyError(f"unknown task {name!r}{did_you_mean(name, _REGISTRY)}; known tasks: "
                       f"{', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**kwargs)


def _load_builtins() -> None:
    if not _REGISTRY or "digits" not in _REGISTRY:
        from lossforge.tasks.builtin import BUILTIN

        for key, cls in BUILTIN.items():
            _REGISTRY.setdefault(key, cls)


__all__ = ["BOX", "CLASSIFICATION", "REGRESSION", "SIGNATURES", "LossSlot", "Metric", "ProxyConfig", "Report",
           "Task", "check_output_shape", "get", "has_data", "names", "overrides_fit", "register"]
