"""Tasks: ``tasks.get(name, **options)``, ``tasks.names()``, ``tasks.register(name, factory)``.

Built in: the tasks of :mod:`~lossforge.tasks.builtin` (with detection and pose) and the task
families where the loss matters (issue 17): noisy labels (:mod:`~lossforge.tasks.noisy_labels`),
long tails (:mod:`~lossforge.tasks.long_tail`), heavy-tailed regression targets
(:mod:`~lossforge.tasks.robust_regression`); each takes its settings as constructor keywords
(:mod:`~lossforge.tasks.options`).

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


def factory(name: str) -> Callable[..., Task]:
    """The factory registered as ``name`` (a Task subclass or a callable); ``KeyError`` listing
    the known names."""
    _load_builtins()
    if name not in _REGISTRY:
        raise KeyError(f"unknown task {name!r}{did_you_mean(name, _REGISTRY)}; known tasks: "
                       f"{', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def get(name: str | Task, **options) -> Task:
    """The task called ``name`` (a new instance; ``options`` go to its constructor).

    ``options`` are checked and typed first (:func:`lossforge.tasks.options.check_options`: an
    unknown name or a value of the wrong type raises ``TaskOptionError``, a ``ValueError``, listing
    the task's options; text values such as ``"0.4"`` are converted). A task made with options
    records them all, defaults included (:func:`lossforge.tasks.options.task_options`).
    A task object is returned unchanged. Unknown names raise ``KeyError`` listing the known ones.
    """
    if not isinstance(name, str):
        return name
    make = factory(name)
    if not options:
        return make()
    from lossforge.tasks.options import check_options, record_options, resolved_options

    options = check_options(make, options, name)
    return record_options(make(**options), resolved_options(make, options))


def _load_builtins() -> None:
    if not _REGISTRY or "digits" not in _REGISTRY:
        from lossforge.tasks.builtin import BUILTIN
        from lossforge.tasks.long_tail import LONG_TAIL_TASKS
        from lossforge.tasks.noisy_labels import NOISY_TASKS
        from lossforge.tasks.robust_regression import HEAVY_TAILED_TASKS

        families = {cls.name: cls for cls in (*NOISY_TASKS, *LONG_TAIL_TASKS, *HEAVY_TAILED_TASKS)}
        for key, cls in {**BUILTIN, **families}.items():
            _REGISTRY.setdefault(key, cls)


__all__ = ["BOX", "CLASSIFICATION", "REGRESSION", "SIGNATURES", "LossSlot", "Metric", "ProxyConfig", "Report",
           "Task", "check_output_shape", "factory", "get", "has_data", "names", "overrides_fit", "register"]
