"""The Dask executor: proxy-training jobs on a Dask distributed cluster (DESIGN.md §7).

Contract. :class:`DaskExecutor` follows the ``concurrent.futures`` protocol of
:mod:`lossforge.execution` (``make_executor(dask=...)`` builds it): a job runs in a worker through
:func:`~lossforge.execution.jobs.run_job` (same per-candidate ``timeout``, same task parcels, so the
same study contents as in-process; a cluster whose workers are threads of one process
— ``processes=False`` — gives it too for models without dropout: model initialisation is
serialised by :data:`~lossforge.tasks.base.GLOBAL_RNG_LOCK`, but dropout masks draw from torch's
process-wide RNG). Dask's scheduler re-runs the tasks of a lost worker itself; a
task that takes down ``allowed_failures + 1`` workers raises ``KilledWorker`` (the candidate's
status becomes ``failed``). ``dask[distributed]`` is an optional extra
(``pip install lossforge[dask]``), imported only when an executor is made.
"""
from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Executor, Future

from lossforge.execution.jobs import Parcels, run_job

#: Seconds to wait for a Dask scheduler before giving up.
CONNECT_TIMEOUT = 5.0

_DASK_MISSING = ("Dask is not installed: `pip install lossforge[dask]` (or `pip install "
                 "'dask[distributed]'`), or run without --dask (in-process, or --workers N)")


class DaskExecutor(Executor):
    """Jobs on a Dask distributed cluster.

    ``target``: a scheduler address (``tcp://host:8786``), ``local:N`` (a ``LocalCluster`` of N
    single-threaded worker processes, closed with this executor) or a ``distributed.Client``.
    ``allowed_failures``: for ``local:N``, how many worker deaths a task may cause before it fails
    with ``KilledWorker`` (Dask's ``distributed.scheduler.allowed-failures``, default 3; a remote
    scheduler uses its own setting). A remote scheduler started with
    ``distributed.scheduler.worker-saturation: 1.0`` (as ``local:N`` is) blames a worker's death
    on the one task it was running only, not also on a task queued there.
    """

    def __init__(self, target, timeout: float | None = None, connect_timeout: float | None = None,
                 allowed_failures: int | None = None):
        distributed = _import_distributed()
        connect_timeout = CONNECT_TIMEOUT if connect_timeout is None else connect_timeout
        self.timeout = timeout
        self._parcels = Parcels()
        self._lock = threading.Lock()
        self._inflight: set = set()  # a Dask future must stay referenced or its task is released
        self._cluster = None
        self._own_client = True
        if isinstance(target, distributed.Client):
            self.client, self._own_client = target, False
            self.address = target.scheduler.address if target.scheduler else "client"
        elif isinstance(target, str) and target.startswith("local"):
            n = _local_workers(target)
            import dask

            # one task at a time per single-threaded worker: when a worker dies, only the task it
            # was running is suspected (with the default saturation a queued one would be too)
            config = {"distributed.scheduler.worker-saturation": 1.0}
            if allowed_failures is not None:
                config["distributed.scheduler.allowed-failures"] = allowed_failures
            with dask.config.set(config):
                self._cluster = distributed.LocalCluster(
                    n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                    silence_logs=logging.ERROR)
            self.client = distributed.Client(self._cluster, set_as_default=False)
            self.address = f"local:{n}"
        elif isinstance(target, str):
            self.address = target
            try:
                self.client = distributed.Client(target, timeout=connect_timeout,
                                                 set_as_default=False)
            except Exception as err:  # OSError / TimeoutError / ValueError for a bad address
                detail = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise RuntimeError(
                    f"could not reach the Dask scheduler at {target!r} within {connect_timeout:g} s "
                    f"({detail}); start one with `dask scheduler` and workers with `dask worker "
                    f"{target}`, check the address, or use --dask local:N for a cluster on this "
                    "machine") from None
        else:
            raise ValueError(f"dask must be an address, 'local:N' or a Client, got {target!r}")

    def submit(self, fn, /, *args, **kwargs) -> Future:
        outer: Future = Future()
        outer.set_running_or_notify_cancel()
        dfut = self.client.submit(run_job, fn, self._parcels.wrap(args), kwargs, self.timeout, True,
                                  pure=False)
        with self._lock:
            self._inflight.add(dfut)
        dfut.add_done_callback(lambda f: self._done(outer, f))
        return outer

    def _done(self, outer: Future, dfut) -> None:
        try:
            if dfut.status == "finished":
                outer.set_result(dfut.result())
            elif dfut.status == "error":
                outer.set_exception(dfut.exception())
            else:
                outer.set_exception(RuntimeError(f"the Dask task was {dfut.status}"))
        except BaseException as err:  # result could not be fetched (connection lost …)
            if not outer.done():
                outer.set_exception(err)
        finally:
            with self._lock:
                self._inflight.discard(dfut)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            pending = list(self._inflight)
        if cancel_futures and pending:
            self.client.cancel(pending)
        if self._own_client:
            self.client.close()
        if self._cluster is not None:
            self._cluster.close()

    def __repr__(self) -> str:
        return f"Dask at {self.address}"


def _local_workers(target: str) -> int:
    _, _, n = target.partition(":")
    if not n:
        return os.cpu_count() or 1
    try:
        count = int(n)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"--dask local:N needs a positive number of workers, got {target!r}")
    return count


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise RuntimeError(_DASK_MISSING) from None
    return distributed


__all__ = ["DaskExecutor", "CONNECT_TIMEOUT"]
