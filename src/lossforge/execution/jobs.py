"""The worker side of every executor: how one job runs, and how tasks travel to it.

Contract.

* :func:`run_job` runs ``fn(*args, **kwargs)`` where an executor put it (a worker process, a Dask
  worker, or this process): optionally on one torch thread, and with a per-candidate ``timeout``
  that raises :class:`CandidateTimeoutError` from the first model or loss forward pass past the
  limit (a global forward pre-hook that only acts in a thread that set a deadline). The time to
  load a task's data on a fresh worker does not count.
* :class:`Parcels` wraps the :class:`~lossforge.tasks.Task` objects found in job arguments: a
  parcel pickles without the task's cached data (``cached_property``) and unpickles, in a worker,
  as one task object per task (``token``), so the data is loaded — deterministically — once per
  worker process, not once per job (``shapes-cls`` with its data loaded pickles to ~100 MB).
  Parcels that were never pickled (in-process executors) are turned back into their tasks by
  :func:`unwrap`.
* :func:`init_worker` is the initializer of a local worker process: one torch thread, and exit
  when the study process is gone.

A leaf: it imports no other execution module (the executors import it; workers import it by
pickled reference).
"""
from __future__ import annotations

import collections
import copy
import functools
import os
import threading
import time
import uuid
from typing import Any, Callable, Iterator

__all__ = ["CandidateTimeoutError", "Parcels", "init_worker", "run_job", "unwrap"]


class CandidateTimeoutError(TimeoutError):
    """A job ran past its per-candidate time limit."""


# --- the per-candidate deadline -------------------------------------------------------------------
_LOCAL = threading.local()
_HOOK_LOCK = threading.Lock()
_HOOKED = False
_THREADS_SET = False


def _check_deadline(module, inputs) -> None:
    deadline = getattr(_LOCAL, "deadline", None)
    if deadline is not None and time.monotonic() > deadline:
        limit = _LOCAL.limit
        _LOCAL.deadline = None
        raise CandidateTimeoutError(f"evaluation exceeded the per-candidate limit of {limit:g} s")


def _install_deadline_hook() -> None:
    """One global forward pre-hook per process; it only acts in a thread that set a deadline."""
    global _HOOKED
    with _HOOK_LOCK:
        if not _HOOKED:
            from torch.nn.modules.module import register_module_forward_pre_hook

            register_module_forward_pre_hook(_check_deadline)
            _HOOKED = True


def _one_thread() -> None:
    global _THREADS_SET
    if not _THREADS_SET:
        import torch

        torch.set_num_threads(1)
        _THREADS_SET = True


def init_worker(study_pid: int) -> None:
    """A local worker process: one torch thread, and exit when the study process is gone (killed
    with SIGKILL, its pool cannot tell its workers; they would wait forever)."""
    _one_thread()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(study_pid, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:  # the pid was reused by another user's process
                os._exit(0)

    threading.Thread(target=watch, name="lossforge-watch-study", daemon=True).start()


def run_job(fn: Callable, args: tuple, kwargs: dict, timeout: float | None = None,
            single_thread: bool = False) -> Any:
    """Run ``fn(*args, **kwargs)`` where the executor put it (a worker, or this process).

    ``single_thread``: one torch thread (a worker process shares the cores with its siblings).
    ``timeout``: raise :class:`CandidateTimeoutError` from the first forward pass past the limit.
    """
    if single_thread:
        _one_thread()
    args, kwargs = unwrap(args), unwrap(kwargs)
    if not timeout:
        return fn(*args, **kwargs)
    for task in _tasks_in((args, kwargs)):  # load data before the clock starts
        task.data()
    _install_deadline_hook()
    _LOCAL.limit, _LOCAL.deadline = timeout, time.monotonic() + timeout
    try:
        return fn(*args, **kwargs)
    finally:
        _LOCAL.deadline = None


# --- tasks travel without their cached data -------------------------------------------------------
_WORKER_TASKS: collections.OrderedDict = collections.OrderedDict()
_WORKER_TASKS_LOCK = threading.Lock()


class _TaskParcel:
    """A task on its way to a worker: pickles without its cached data, unpickles as the task.

    Unpickled in a worker, every parcel of the same task (``token``) gives the same task object,
    so the data is loaded once per worker process, not once per job.
    """

    __slots__ = ("task", "token")

    def __init__(self, task, token: str):
        self.task, self.token = task, token

    def __reduce__(self):
        return (_unparcel, (self.token, _without_caches(self.task)))


def _without_caches(task):
    state = getattr(task, "__dict__", None)
    if not state:
        return task
    caches = [k for k in state if isinstance(getattr(type(task), k, None), functools.cached_property)]
    if not caches:
        return task
    clone = copy.copy(task)
    for k in caches:
        vars(clone).pop(k, None)
    return clone


def _unparcel(token: str, task):
    with _WORKER_TASKS_LOCK:
        known = _WORKER_TASKS.get(token)
        if known is None:
            _WORKER_TASKS[token] = known = task
            while len(_WORKER_TASKS) > 8:
                _WORKER_TASKS.popitem(last=False)
        else:
            _WORKER_TASKS.move_to_end(token)
        return known


class Parcels:
    """Wraps the :class:`Task` objects found in job arguments (one token per task object)."""

    def __init__(self):
        self._by_id: dict[int, _TaskParcel] = {}

    def wrap(self, obj):
        """``obj`` with every task in it (inside tuples, lists, dict values) replaced by its parcel."""
        from lossforge.tasks import Task

        if isinstance(obj, Task):
            parcel = self._by_id.get(id(obj))
            if parcel is None or parcel.task is not obj:
                parcel = self._by_id[id(obj)] = _TaskParcel(obj, uuid.uuid4().hex)
            return parcel
        if isinstance(obj, (tuple, list)):
            return type(obj)(self.wrap(x) for x in obj)
        if isinstance(obj, dict):
            return {k: self.wrap(v) for k, v in obj.items()}
        return obj


def unwrap(obj):
    """Parcels that were never pickled (in-process executors) back to their tasks."""
    if isinstance(obj, _TaskParcel):
        return obj.task
    if isinstance(obj, (tuple, list)):
        return type(obj)(unwrap(x) for x in obj)
    if isinstance(obj, dict):
        return {k: unwrap(v) for k, v in obj.items()}
    return obj


def _tasks_in(obj) -> Iterator:
    from lossforge.tasks import Task

    if isinstance(obj, Task):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for x in obj:
            yield from _tasks_in(x)
    elif isinstance(obj, dict):
        for x in obj.values():
            yield from _tasks_in(x)
