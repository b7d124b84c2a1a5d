"""Where proxy trainings run: executors behind the ``concurrent.futures`` protocol (DESIGN.md §7).

``make_executor(workers=None, dask=None, timeout=None)`` picks one:

* in-process (default) — :class:`~lossforge.execution.local.SerialExecutor`: ``submit`` runs the
  job at once and returns a completed future (the proxy stage consumes it job by job, so each
  result is committed at once);
* ``workers=N`` — :class:`~lossforge.execution.local.ProcessExecutor`: N local processes
  (``ProcessPoolExecutor``, ``forkserver`` context with torch preloaded, or ``spawn``; one torch
  thread each). A job that kills its process breaks the pool: the jobs that were running are re-run
  one at a time in a quarantine process, which finds the culprit; it is re-run ``max_retries``
  times and then fails (status ``failed``), the others finish normally. Workers exit when the
  study process dies;
* ``dask=ADDRESS`` — :class:`~lossforge.execution.dask.DaskExecutor` on a Dask distributed cluster
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
order). Tasks travel to workers by pickle. A task loaded from a spec (``--task my_task.py:Wine``,
``load_task``) travels with its spec and the task file's bytes: each worker imports that file
first (from its path when it holds the same bytes, else the bytes sent), then unpickles the task,
so a task file works on local workers and on any Dask cluster without copying it. Only that one
file travels: the modules it imports (siblings in its folder, your packages) must be importable
where the workers run. Local workers (``--workers``, ``--dask local:N``) put the file's folder on
their path as the study process does; on a Dask cluster on other machines install them there, or
send them with Dask's ``client.upload_file(path)`` (a ``.py``, ``.zip`` or ``.egg``) before the
search (``LossSearch(executor=make_executor(dask=client))``). A worker that cannot import the task
fails each job with :class:`~lossforge.execution.jobs.TaskUnavailableError` saying so. Other task
objects pickle by reference: their class must be importable where the workers run (built-in tasks
are). The data a task
caches (``cached_property``) is left out of the pickle and reloaded — deterministically — once per
worker process, which keeps each job's message small (``shapes-cls`` with its data loaded pickles
to ~100 MB). A per-candidate timeout cannot interrupt a single native operation that never
returns; proxy trainings are made of many short ones.

Modules: :mod:`~lossforge.execution.jobs` (the worker side: ``run_job``, task parcels, the
deadline hook; a leaf), :mod:`~lossforge.execution.local` (in-process and local processes),
:mod:`~lossforge.execution.dask` (a Dask cluster).
"""
from __future__ import annotations

from concurrent.futures import Executor
from typing import Any

from lossforge.execution.jobs import CandidateTimeoutError, TaskUnavailableError, run_job
from lossforge.execution.local import ProcessExecutor, SerialExecutor, WorkerCrashedError

__all__ = ["CandidateTimeoutError", "ProcessExecutor", "SerialExecutor", "TaskUnavailableError",
           "WorkerCrashedError", "make_executor", "run_job"]


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
        from lossforge.execution.dask import DaskExecutor  # Dask is optional: only when asked

        return DaskExecutor(dask, timeout=timeout)
    if workers is not None:
        if workers < 1:
            raise ValueError(f"--workers must be at least 1, got {workers}")
        return ProcessExecutor(workers, timeout=timeout)
    return SerialExecutor(timeout=timeout)
