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
* A task loaded from a file or module spec (:func:`lossforge.tasks.spec.load_task`, e.g.
  ``my_task.py:Wine``) travels with its spec and the bytes of the file as loaded: the worker
  imports the spec's module first (:func:`~lossforge.tasks.spec.import_task_module`; the file at
  that path when it holds the same bytes, else the bytes themselves under the same module name),
  then unpickles the task. Only that one file travels: the modules it imports must be importable
  in the worker (local workers put the file's folder on their path, as the study process does). A
  worker that cannot import the task fails each job with :class:`TaskUnavailableError` naming the
  spec and the cause, instead of crashing the worker. Such a parcel unpickles as itself (a Dask
  scheduler that passes it on imports nothing) and becomes the task where the job runs.
* Built-in and other importable tasks pickle by reference, as any object.
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
import pickle
import threading
import time
import uuid
from typing import Any, Callable, Iterator

__all__ = ["CandidateTimeoutError", "Parcels", "TaskUnavailableError", "init_worker", "run_job",
           "unwrap"]


class CandidateTimeoutError(TimeoutError):
    """A job ran past its per-candidate time limit."""


class TaskUnavailableError(RuntimeError):
    """A worker could not import or unpickle the task a job was sent with (the message says
    which spec, why, and what to do)."""


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
        task.preload()  # Task.preload: data() when the task has one (an own-loop task may not)
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
    so the data is loaded once per worker process, not once per job. A task loaded from a file
    or module spec is pickled into bytes once (:meth:`_payload`) and travels with its spec and
    source, so that the worker imports the spec's module before unpickling it.
    """

    __slots__ = ("task", "token", "_packed")

    def __init__(self, task, token: str):
        self.task, self.token, self._packed = task, token, None

    def __reduce__(self):
        from lossforge.tasks.spec import is_spec, spec_of

        spec = spec_of(self.task)
        if spec is None or not is_spec(spec):  # built-in or importable: by reference, as before
            return (_unparcel, (self.token, _without_caches(self.task)))
        return (_SpecParcel, (self.token, spec, *self._payload(spec)))

    def _payload(self, spec: str) -> tuple[bytes | None, bytes]:
        """``(the task file's bytes as loaded or None, the pickled task)``, computed once."""
        if self._packed is None:
            from lossforge.tasks.spec import loaded_source

            try:
                blob = pickle.dumps(_without_caches(self.task), protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as err:
                raise TaskUnavailableError(
                    f"task {self.task.name!r} ({spec}) cannot be pickled for a worker: "
                    f"{type(err).__name__}: {err}; keep the task's attributes picklable (no "
                    "lambdas or open files on the instance: define functions at module level), "
                    "or run in-process (no --workers/--dask)") from err
            self._packed = (loaded_source(spec), blob)
        return self._packed


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


def _remember(token: str, task):
    """The worker's task object for ``token``: ``task`` the first time, the known one after."""
    with _WORKER_TASKS_LOCK:
        known = _WORKER_TASKS.get(token)
        if known is None:
            _WORKER_TASKS[token] = known = task
            while len(_WORKER_TASKS) > 8:
                _WORKER_TASKS.popitem(last=False)
        else:
            _WORKER_TASKS.move_to_end(token)
        return known


def _unparcel(token: str, task):
    return _remember(token, task)


class _SpecParcel:
    """A spec'd task as it travels (``__reduce__`` of :class:`_TaskParcel`): the spec, the task
    file's bytes and the pickled task, unpickled as itself — so a hop through a Dask scheduler,
    which unpickles and pickles again, imports nothing — and turned into the task only where the
    job runs (:func:`unwrap`): the spec's module is imported first, then the task unpickled, once
    per process and ``token``."""

    __slots__ = ("token", "spec", "source", "blob")

    def __init__(self, token: str, spec: str, source: bytes | None, blob: bytes):
        self.token, self.spec, self.source, self.blob = token, spec, source, blob

    def __reduce__(self):
        return (_SpecParcel, (self.token, self.spec, self.source, self.blob))

    def task(self):
        """The task (:class:`TaskUnavailableError` when this process cannot import it)."""
        with _WORKER_TASKS_LOCK:
            known = _WORKER_TASKS.get(self.token)
        if known is not None:
            return _remember(self.token, known)
        from lossforge.tasks.spec import import_task_module

        try:
            import_task_module(self.spec, source=self.source)
            task = pickle.loads(self.blob)
        except Exception as err:
            host = os.uname().nodename if hasattr(os, "uname") else "this machine"
            raise TaskUnavailableError(
                f"a worker ({host}, pid {os.getpid()}) could not load task {self.spec}: "
                f"{type(err).__name__}: {err}; the worker receives the task file itself, but the "
                "modules and packages it imports must be installed where the workers run (on a "
                "Dask cluster on other machines: install them there, or send them with "
                "distributed.Client.upload_file)") from err
        return _remember(self.token, task)


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
    """Parcels that were never pickled (in-process executors) back to their tasks; a task the
    worker could not load raises :class:`TaskUnavailableError`."""
    if isinstance(obj, _TaskParcel):
        return obj.task
    if isinstance(obj, _SpecParcel):
        return obj.task()
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
