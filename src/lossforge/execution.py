"""Where proxy trainings run: executors behind the ``concurrent.futures`` protocol (DESIGN.md §7).

``make_executor(workers=None, dask=None, timeout=None)`` picks one:

* in-process (default) — :class:`SerialExecutor`: ``submit`` runs the job at once and returns a
  completed future (the proxy stage consumes it job by job, so each result is committed at once);
* ``workers=N`` — :class:`ProcessExecutor`: N local processes (``ProcessPoolExecutor``,
  ``forkserver`` context with torch preloaded, or ``spawn``; one torch thread each). A job that
  kills its process breaks the pool: the jobs that were running are re-run one at a time in a
  quarantine process, which finds the culprit; it is re-run ``max_retries`` times and then fails
  (status ``failed``), the others finish normally. Workers exit when the study process dies;
* ``dask=ADDRESS`` — :class:`~lossforge.dask_executor.DaskExecutor` on a Dask distributed cluster
  (``tcp://host:8786``, or ``local:N`` for a ``LocalCluster`` of N single-threaded worker
  processes, or a ``Client``).
  Dask's scheduler re-runs the tasks of a lost worker itself; a task that takes down
  ``allowed_failures + 1`` workers raises ``KilledWorker`` (status ``failed``). ``dask[distributed]``
  is an optional extra (``pip install lossforge[dask]``), imported only by that module and only
  when asked.

``timeout`` (seconds, any executor) bounds one candidate's evaluation: a job that runs longer
stops at its next model or loss forward pass and its candidate is marked ``failed`` with reason
``timeout``. The time to load a task's data on a fresh worker does not count.

Results do not depend on the executor: a proxy training is seeded per candidate and runs on one
thread in a worker, so the same seed gives the same study contents (rows may arrive in another
order). Tasks travel to workers by pickle, so a task class must be importable where the workers
run (built-in tasks are; a user task's module must be on the workers' path). The data a task
caches (``cached_property``) is left out of the pickle and reloaded — deterministically — once per
worker process, which keeps each job's message small (``shapes-cls`` with its data loaded pickles
to ~100 MB). A per-candidate timeout cannot interrupt a single native operation that never
returns; proxy trainings are made of many short ones.
"""
from __future__ import annotations

import collections
import copy
import functools
import multiprocessing
import os
import threading
import time
import uuid
from concurrent.futures import Executor, Future
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable

class CandidateTimeout(TimeoutError):
    """A job ran past its per-candidate time limit."""


class WorkerCrashed(RuntimeError):
    """A job killed the worker process running it on every attempt."""


# --- worker side ----------------------------------------------------------------------------------
_LOCAL = threading.local()
_HOOK_LOCK = threading.Lock()
_HOOKED = False
_THREADS_SET = False


def _check_deadline(module, inputs) -> None:
    deadline = getattr(_LOCAL, "deadline", None)
    if deadline is not None and time.monotonic() > deadline:
        limit = _LOCAL.limit
        _LOCAL.deadline = None
        raise CandidateTimeout(f"evaluation exceeded the per-candidate limit of {limit:g} s")


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


def _init_worker(study_pid: int) -> None:
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
    ``timeout``: raise :class:`CandidateTimeout` from the first forward pass past the limit.
    """
    if single_thread:
        _one_thread()
    args, kwargs = _unwrap(args), _unwrap(kwargs)
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


class _Parcels:
    """Wraps the :class:`Task` objects found in job arguments (one token per task object)."""

    def __init__(self):
        self._by_id: dict[int, _TaskParcel] = {}

    def wrap(self, obj):
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


def _unwrap(obj):
    """Parcels that were never pickled (in-process executors) back to their tasks."""
    if isinstance(obj, _TaskParcel):
        return obj.task
    if isinstance(obj, (tuple, list)):
        return type(obj)(_unwrap(x) for x in obj)
    if isinstance(obj, dict):
        return {k: _unwrap(v) for k, v in obj.items()}
    return obj


def _tasks_in(obj):
    from lossforge.tasks import Task

    if isinstance(obj, Task):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for x in obj:
            yield from _tasks_in(x)
    elif isinstance(obj, dict):
        for x in obj.values():
            yield from _tasks_in(x)


# --- executors ------------------------------------------------------------------------------------
class SerialExecutor(Executor):
    """In-process: ``submit`` runs the job now and returns a completed future."""

    #: Jobs run at submit time: callers should consume each future before submitting the next.
    serial = True

    def __init__(self, timeout: float | None = None):
        self.timeout = timeout

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        future.set_running_or_notify_cancel()
        try:
            future.set_result(run_job(fn, args, kwargs, self.timeout))
        except Exception as err:
            future.set_exception(err)
        return future

    def __repr__(self) -> str:
        return "in-process"


class ProcessExecutor(Executor):
    """``workers`` local processes, one torch thread each (``forkserver`` with torch preloaded
    where available, so that a replacement process starts in a moment; else ``spawn``).

    At most ``workers`` jobs are handed to the process pool at a time (the rest wait here), so
    the jobs in flight when a process dies are the ones running. Such a death breaks the whole
    ``ProcessPoolExecutor``: a new pool takes the waiting jobs, and the jobs that were running are
    re-run one at a time in a one-process quarantine pool, where a crash names its job exactly.
    A job that kills its process again on each of its ``max_retries`` re-runs fails with
    :class:`WorkerCrashed` (its candidate is marked ``failed``); the others finish normally.
    """

    def __init__(self, workers: int, timeout: float | None = None, context: str | None = None,
                 max_retries: int = 2):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers, self.timeout, self.max_retries = workers, timeout, max_retries
        self._ctx = _process_context(context)
        self._lock = threading.RLock()
        self._parcels = _Parcels()
        self._pool = None
        self._backlog: collections.deque = collections.deque()  # (outer, job) not yet in the pool
        self._running = 0
        self._quarantine = None
        self._suspects: collections.deque = collections.deque()  # [outer, job, crashes]
        self._quarantine_busy = False
        self._closed = False

    def _new_pool(self, n: int):
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(n, mp_context=self._ctx, initializer=_init_worker,
                                   initargs=(os.getpid(),))

    def submit(self, fn, /, *args, **kwargs) -> Future:
        outer: Future = Future()
        outer.set_running_or_notify_cancel()
        job = (fn, self._parcels.wrap(args), kwargs)
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot submit to an executor that was shut down")
            self._backlog.append((outer, job))
            self._dispatch()
        return outer

    def _dispatch(self) -> None:
        """Hand waiting jobs to the pool while a worker is free (lock held)."""
        while self._backlog and self._running < self.workers and not self._closed:
            outer, job = self._backlog.popleft()
            if self._pool is None:
                self._pool = self._new_pool(self.workers)
            try:
                inner = self._pool.submit(run_job, *job, self.timeout, True)
            except BrokenProcessPool:  # broken by a job that just died: start afresh
                self._pool.shutdown(wait=False)
                self._pool = self._new_pool(self.workers)
                inner = self._pool.submit(run_job, *job, self.timeout, True)
            self._running += 1
            inner.add_done_callback(lambda f, outer=outer, job=job: self._main_done(outer, job, f))

    def _main_done(self, outer: Future, job, inner: Future) -> None:
        err = None if inner.cancelled() else inner.exception()
        with self._lock:
            self._running -= 1
            if isinstance(err, BrokenProcessPool) and not self._closed:
                if self.max_retries < 1:
                    outer.set_exception(WorkerCrashed("the job's worker process died"))
                else:
                    self._suspects.append([outer, job, 0])
                    self._pump()
            else:
                _settle(outer, inner)
            self._dispatch()

    def _pump(self) -> None:
        """Start the next suspect in the quarantine pool when it is idle (lock held)."""
        if self._quarantine_busy or not self._suspects or self._closed:
            return
        if self._quarantine is None:
            self._quarantine = self._new_pool(1)
        entry = self._suspects[0]
        self._quarantine_busy = True
        inner = self._quarantine.submit(run_job, *entry[1], self.timeout, True)
        inner.add_done_callback(lambda f: self._quarantine_done(entry, f))

    def _quarantine_done(self, entry, inner: Future) -> None:
        outer = entry[0]
        err = None if inner.cancelled() else inner.exception()
        with self._lock:
            self._quarantine_busy = False
            if isinstance(err, BrokenProcessPool):
                self._quarantine.shutdown(wait=False)
                self._quarantine = None
                entry[2] += 1
                if entry[2] >= self.max_retries:
                    self._suspects.popleft()
                    outer.set_exception(WorkerCrashed(
                        f"the job killed its worker process {entry[2] + 1} times"))
            else:
                self._suspects.popleft()
                _settle(outer, inner)
            self._pump()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            pools = [p for p in (self._pool, self._quarantine) if p is not None]
            waiting = [e[0] for e in self._suspects] + [e[0] for e in self._backlog]
            self._suspects.clear()
            self._backlog.clear()
        for outer in waiting:
            if not outer.done():
                outer.set_exception(RuntimeError("executor shut down"))
        for p in pools:
            p.shutdown(wait=wait, cancel_futures=cancel_futures)

    def __repr__(self) -> str:
        return f"{self.workers} local process{'es' if self.workers != 1 else ''}"


def _process_context(name: str | None):
    """``forkserver`` preloading torch and the training code (fork-safe: the server itself runs
    no torch ops), where the platform has it; otherwise ``spawn``."""
    methods = multiprocessing.get_all_start_methods()
    name = name or ("forkserver" if "forkserver" in methods else "spawn")
    ctx = multiprocessing.get_context(name)
    if name == "forkserver":
        ctx.set_forkserver_preload(["torch", "lossforge.evaluation.proxy", "lossforge.execution"])
    return ctx


def make_executor(workers: int | None = None, dask: Any = None, timeout: float | None = None) -> Executor:
    """The executor for ``--workers N`` / ``--dask ADDRESS`` / neither (in-process).

    Errors (``ValueError`` / ``RuntimeError``) say what to change: both options at once, a bad
    count, Dask not installed, a scheduler that does not answer.
    """
    if timeout is not None and not timeout > 0:
        raise ValueError(f"--timeout must be a positive number of seconds, got {timeout}")
    if workers is not None and dask is not None:
        raise ValueError("use either --workers (local processes) or --dask (a Dask cluster), not both")
    if dask is not None:
        from lossforge.dask_executor import DaskExecutor

        return DaskExecutor(dask, timeout=timeout)
    if workers is not None:
        if workers < 1:
            raise ValueError(f"--workers must be at least 1, got {workers}")
        return ProcessExecutor(workers, timeout=timeout)
    return SerialExecutor(timeout=timeout)


def _settle(outer: Future, inner: Future) -> None:
    if outer.done():
        return
    if inner.cancelled():
        outer.set_exception(RuntimeError("the job was cancelled"))
    elif inner.exception() is not None:
        outer.set_exception(inner.exception())
    else:
        outer.set_result(inner.result())
