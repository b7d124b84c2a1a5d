"""Local executors: jobs in this process, or in a pool of local worker processes.

* :class:`SerialExecutor` (in-process, the default): ``submit`` runs the job at once and returns a
  completed future (the proxy stage consumes it job by job, so each result is committed at once).
* :class:`ProcessExecutor` (``workers=N``): N local processes (``ProcessPoolExecutor``,
  ``forkserver`` context with torch preloaded, or ``spawn``; one torch thread each). A job that
  kills its process breaks the pool: the jobs that were running are re-run one at a time in a
  quarantine process, which finds the culprit; it is re-run ``max_retries`` times and then fails
  with :class:`WorkerCrashedError` (status ``failed``), the others finish normally. Workers exit
  when the study process dies.

Both run each job through :func:`~lossforge.execution.jobs.run_job` (same per-candidate timeout,
same task parcels).
"""
from __future__ import annotations

import collections
import multiprocessing
import os
import threading
from concurrent.futures import Executor, Future
from concurrent.futures.process import BrokenProcessPool

from lossforge.execution.jobs import Parcels, init_worker, run_job

__all__ = ["ProcessExecutor", "SerialExecutor", "WorkerCrashedError"]


class WorkerCrashedError(RuntimeError):
    """A job killed the worker process running it on every attempt."""


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
    :class:`WorkerCrashedError` (its candidate is marked ``failed``); the others finish normally.
    """

    def __init__(self, workers: int, timeout: float | None = None, context: str | None = None,
                 max_retries: int = 2):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers, self.timeout, self.max_retries = workers, timeout, max_retries
        self._ctx = _process_context(context)
        self._lock = threading.RLock()
        self._parcels = Parcels()
        self._pool = None
        self._backlog: collections.deque = collections.deque()  # (outer, job) not yet in the pool
        self._running = 0
        self._quarantine = None
        self._suspects: collections.deque = collections.deque()  # [outer, job, crashes]
        self._quarantine_busy = False
        self._closed = False

    def _new_pool(self, n: int):
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(n, mp_context=self._ctx, initializer=init_worker,
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
                    outer.set_exception(WorkerCrashedError("the job's worker process died"))
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
                    outer.set_exception(WorkerCrashedError(
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
        ctx.set_forkserver_preload(["torch", "lossforge.evaluation.proxy", "lossforge.execution.jobs"])
    return ctx


def _settle(outer: Future, inner: Future) -> None:
    if outer.done():
        return
    if inner.cancelled():
        outer.set_exception(RuntimeError("the job was cancelled"))
    elif inner.exception() is not None:
        outer.set_exception(inner.exception())
    else:
        outer.set_result(inner.result())
