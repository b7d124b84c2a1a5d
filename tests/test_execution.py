"""Executors: in-process, local processes, Dask (an in-process cluster here, a 2-process one in the
slow tests); same seed ⇒ same study whatever the executor; timeouts; workers that die."""
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lfhelpers as H
from lossforge.execution import dask as D
from lossforge import execution as E
from lossforge.execution import jobs
from lossforge import tasks
from lossforge.evaluation.candidate import FAILED, TRAINED
from lossforge.evaluation.proxy import _result, safe_proxy_job
from lossforge.study import LossSearch, load_study

distributed = pytest.importorskip("distributed")


def search(path, executor=None, budget=8, task="tiny-blobs", **kw):
    """One generation of 8 by default (the LRP off: nearly all reach proxy training)."""
    return LossSearch(task=task, storage=path, budget=budget, seed=1, funnel=H.NO_LRP,
                      strategy_options={"batch_size": 8}, executor=executor, **kw).run()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The in-process study every executor must reproduce."""
    study = search(tmp_path_factory.mktemp("ref") / "ref.db", budget=16)
    yield study
    study.close()


@pytest.fixture(scope="module")
def inproc_client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                       dashboard_address=":0")
    client = distributed.Client(cluster, set_as_default=False)
    yield client
    client.close()
    cluster.close()


# --- make_executor and its errors -------------------------------------------------------------
def test_default_is_in_process_and_runs_at_submit():
    ex = E.make_executor()
    assert isinstance(ex, E.SerialExecutor) and ex.serial
    f = ex.submit(divmod, 7, 2)
    assert f.done() and f.result() == (3, 1)
    bad = ex.submit(divmod, 1, 0)
    assert bad.done() and isinstance(bad.exception(), ZeroDivisionError)


@pytest.mark.parametrize("kwargs, message", [
    (dict(workers=2, dask="local:2"), "either --workers"),
    (dict(workers=0), "--workers must be at least 1"),
    (dict(timeout=0), "--timeout must be a positive"),
    (dict(dask="local:zero"), "local:N needs a positive number"),
])
def test_bad_executor_options_say_what_to_do(kwargs, message):
    with pytest.raises(ValueError, match=message):
        E.make_executor(**kwargs)


def test_missing_dask_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` -> ImportError
    with pytest.raises(RuntimeError, match=r"pip install lossforge\[dask\]"):
        E.make_executor(dask="tcp://127.0.0.1:8786")


def test_unreachable_scheduler_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(D, "CONNECT_TIMEOUT", 1.0)
    start = time.monotonic()
    with pytest.raises(RuntimeError) as err:
        E.make_executor(dask="tcp://127.0.0.1:9")
    assert time.monotonic() - start < 15
    msg = str(err.value)
    assert "could not reach the Dask scheduler at 'tcp://127.0.0.1:9'" in msg
    assert "dask scheduler" in msg and "local:N" in msg and "\n" not in msg


# --- tasks travel light ---------------------------------------------------------------------------
def test_task_pickles_without_its_cached_data_and_loads_it_once_per_worker():
    task = tasks.get("digits")
    task.data()
    assert len(pickle.dumps(task)) > 300_000  # the data travels with a plain pickle
    parcel = jobs.Parcels().wrap((task, "formula"))
    blob = pickle.dumps(parcel)
    assert len(blob) < 5_000
    first, second = pickle.loads(blob)[0], pickle.loads(blob)[0]
    assert first is second and first is not task and isinstance(first, type(task))
    assert "_data" in vars(task) and "_data" not in vars(first)  # the original keeps its cache
    assert first.data().train.x.shape == task.data().train.x.shape  # reloaded, same data
    assert jobs.unwrap(parcel)[0] is task  # in-process executors hand over the object itself


_FILE_TASK = """
from lossforge.tasks import Task
from {helper} import CLASSES


class Travelling(Task):
    name = "travelling"
    num_classes = CLASSES

    def __init__(self, scale=1.0):
        self.scale = scale
"""


def _file_task(folder, helper="travel_helper"):
    """A task file importing a sibling module (``helper``), loaded: (path, task)."""
    from lossforge.tasks.spec import load_task

    folder.mkdir()
    (folder / f"{helper}.py").write_text("CLASSES = 4\n")
    path = folder / "travelling_task.py"
    path.write_text(_FILE_TASK.format(helper=helper))
    return path, load_task(f"{path}:Travelling", scale=2.5)


def _as_a_fresh_worker(path, helper):
    """Forget the task module and its sibling, as a fresh worker process starts."""
    from lossforge.tasks.spec import module_name_for

    sys.modules.pop(module_name_for(path), None)
    sys.modules.pop(helper, None)
    jobs._WORKER_TASKS.clear()


def test_a_file_task_travels_with_its_source_and_unpickles_as_itself(tmp_path):
    path, task = _file_task(tmp_path / "project", helper="travel_helper_a")
    parcel = jobs.Parcels().wrap((task, "formula"))
    blob = pickle.dumps(parcel)
    assert path.read_bytes() in blob  # the file's bytes as loaded travel with the task
    _as_a_fresh_worker(path, "travel_helper_a")
    hop = pickle.loads(blob)  # e.g. a Dask scheduler: nothing imported, nothing unpickled
    assert not isinstance(hop[0], tasks.Task)
    assert pickle.loads(pickle.dumps(hop)) is not None
    path.unlink()  # a worker on another machine: no file there; the bytes sent are imported
    got = jobs.unwrap(pickle.loads(pickle.dumps(hop)))[0]
    assert type(got).__name__ == "Travelling" and got is not task
    assert got.scale == 2.5 and got.num_classes == 4 and got.name == "travelling"
    assert jobs.unwrap(pickle.loads(blob))[0] is got  # once per worker and task


def test_a_worker_missing_a_module_the_task_file_imports_fails_the_job_clearly(tmp_path):
    path, task = _file_task(tmp_path / "project", helper="travel_helper_b")
    blob = pickle.dumps(jobs.Parcels().wrap((task,)))
    _as_a_fresh_worker(path, "travel_helper_b")
    (path.parent / "travel_helper_b.py").unlink()
    arrived = pickle.loads(blob)  # unpickling never fails (a worker must not crash on it)
    with pytest.raises(jobs.TaskUnavailableError) as err:
        jobs.run_job(len, arrived, {})
    msg = str(err.value)
    assert "could not load task" in msg and str(path.resolve()) in msg
    assert "travel_helper_b" in msg and "upload_file" in msg
    out = _result(E.make_executor().submit(safe_proxy_job, arrived[0]))
    assert out["status"] == FAILED and "TaskUnavailableError" in out["reason"]


# --- same seed, same study ------------------------------------------------------------------------
def test_serial_and_inprocess_dask_give_the_reference_study(tmp_path, reference, inproc_client):
    want = H.rows_key(reference)
    assert sum(r[4] == TRAINED for r in want) >= 10
    serial = search(tmp_path / "serial.db", E.make_executor(), budget=16)
    assert H.rows_key(serial) == want
    ex = E.make_executor(dask=inproc_client)
    try:
        dask = search(tmp_path / "dask.db", ex, budget=16)
    finally:
        ex.shutdown()
    assert H.rows_key(dask) == want
    assert dask.summary()["hall_of_fame"] == reference.summary()["hall_of_fame"]


# --- per-candidate timeout ------------------------------------------------------------------------
def test_timeout_fails_the_candidate_with_reason_timeout(tmp_path, inproc_client):
    slow = tasks.get("slow-blobs")  # 25 steps of 10 ms forward passes: > 0.25 s
    job = (slow, "-sum_c(y * log(p))", "accuracy", 25, 0, "cpu")
    for ex in (E.make_executor(timeout=0.1), E.make_executor(dask=inproc_client, timeout=0.1)):
        out = _result(ex.submit(safe_proxy_job, job))
        assert out["status"] == FAILED and out["reason"].startswith("timeout:"), out
        assert _result(ex.submit(safe_proxy_job, (slow, "-sum_c(y * log(p))", "accuracy", 2, 0,
                                                  "cpu")))["status"] == TRAINED  # within the limit
        ex.shutdown()
    study = search(tmp_path / "t.db", E.make_executor(timeout=0.1), budget=4, task="slow-blobs")
    proxied = [r for r in study.candidates if "proxy" in r.details["seconds"]]
    assert proxied and all(r.status == FAILED and r.details["reason"].startswith("timeout")
                           for r in proxied)
    assert study.explored == 4


# --- workers that die -----------------------------------------------------------------------------
def _check_crash_study(crashed, reference, ex):
    """Submission 0 always kills its worker, submission 1 once; everything else as the reference."""
    always, once = ex.formulas[0], ex.formulas[1]
    ref = {(r.generation, r.position): r for r in reference.candidates if r.generation == 0}
    rows = {(r.generation, r.position): r for r in crashed.candidates}
    assert crashed.explored == 8 and set(rows) == set(ref)
    failed = [k for k, r in rows.items() if r.status == FAILED]
    assert len(failed) == 1 and rows[failed[0]].formula == always
    for k, r in rows.items():
        if k != failed[0]:
            assert (r.formula, r.status, r.fitness) == (ref[k].formula, ref[k].status, ref[k].fitness)
    assert any(r.formula == once and r.status == TRAINED for r in rows.values())
    return rows[failed[0]].details["reason"]


@pytest.mark.slow
def test_process_pool_isolates_a_job_that_kills_its_worker(tmp_path, reference):
    # two quarantine runs: submission 1 may be killed with the pool by submission 0's crash before
    # its own single crash happens; it then crashes once in quarantine and needs the second run
    inner = E.ProcessExecutor(2, max_retries=2)
    ex = H.CrashingExecutor(inner, always={0}, once={1}, marker=str(tmp_path / "crashed"))
    try:
        study = search(tmp_path / "s.db", ex)
    finally:
        ex.shutdown()
    reason = _check_crash_study(study, reference, ex)
    assert "WorkerCrashedError" in reason and "3 times" in reason


@pytest.mark.slow
def test_dask_two_process_cluster_with_killed_workers(tmp_path, reference):
    """``local:2``: a worker killed once ⇒ its task is re-run elsewhere and the candidate is
    trained; a candidate that kills every worker ⇒ KilledWorker ⇒ failed; the rest as in-process
    (the same study with ``--dask local:2`` unharmed: test_cli)."""
    dask = D.DaskExecutor("local:2", allowed_failures=1)
    try:
        ex = H.CrashingExecutor(dask, always={0}, once={1}, marker=str(tmp_path / "crashed"))
        study = search(tmp_path / "s.db", ex)
        reason = _check_crash_study(study, reference, ex)
        assert "KilledWorker" in reason
        # the cluster has recovered: it still evaluates
        job = (tasks.get("tiny-blobs"), "sum_c(square(p - y))", "accuracy", 5, 0, "cpu")
        assert _result(dask.submit(safe_proxy_job, job))["status"] == TRAINED
    finally:
        dask.shutdown()


RUNNER = ("import sys; sys.path.insert(0, {tests!r}); import lfhelpers; "
          "from lossforge.cli import app; app(prog_name='lossforge')")


def descendants(pid: int) -> set[int]:
    """Child processes, recursively (Linux /proc; empty elsewhere)."""
    found = set()
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in map(int, children.read_text().split()):
            found |= {child} | descendants(child)
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_study_process_killed_then_resumed_with_workers(tmp_path):
    """SIGKILL the study process mid-search (process executor), resume: the in-flight candidates
    are evaluated again and the study equals an uninterrupted run."""
    args = ["--task", "slow-blobs", "--budget", "16", "--seed", "1", "--generation-size", "8",
            *H.NO_LRP_CLI, "--format", "json"]
    code = RUNNER.format(tests=str(H.TESTS_DIR))
    path = tmp_path / "killed.db"
    proc = subprocess.Popen([sys.executable, "-c", code, "search", *args, "--study", str(path),
                             "--workers", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
        if path.exists():
            try:
                if load_study(path).explored >= 3:
                    break
            except Exception:  # the file is being created
                pass
    assert proc.poll() is None, "the search ended before it could be killed"
    workers = descendants(proc.pid)
    assert len(workers) >= 2  # the pool: its worker processes (and a fork server)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    gone = time.monotonic() + 15  # the workers notice that the study process is gone
    while any(alive(p) for p in workers) and time.monotonic() < gone:
        time.sleep(0.2)
    assert not [p for p in workers if alive(p)], "worker processes outlived the killed study"
    partial = load_study(path).explored
    assert 3 <= partial < 16
    done = subprocess.run([sys.executable, "-c", code, "resume", str(path), "--workers", "2",
                           "--format", "json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    reference = search(tmp_path / "ref.db", budget=16, task="slow-blobs")
    assert H.rows_key(load_study(path)) == H.rows_key(reference)
