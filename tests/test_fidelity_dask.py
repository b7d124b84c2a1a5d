"""Multi-fidelity (ASHA rungs) on Dask: the same candidates and rung results as in-process, on an
in-process Dask cluster and on ``--dask local:2`` (two worker processes; the rung jobs and their
continuation state files travel between processes)."""
from __future__ import annotations

import pytest

import lfhelpers as H
from lossforge import execution as E
from lossforge.evaluation.rungs import FidelityConfig
from lossforge.study import LossSearch

distributed = pytest.importorskip("distributed")

FID = FidelityConfig("asha", min_steps=2, max_steps=18, eta=3)


def _search(path, executor=None):
    """Two generations of 9 on tiny-blobs (the LRP off: most candidates reach the rungs)."""
    return LossSearch(task="tiny-blobs", storage=path, budget=18, seed=2, funnel=H.NO_LRP,
                      fidelity=FID, strategy_options={"batch_size": 9}, executor=executor).run()


def _outcome(study):
    """Every candidate (with the rung it reached) and every stored rung result."""
    cands = sorted((r.generation, r.position, r.formula, r.status, r.fitness,
                    (r.details.get("fidelity") or {}).get("steps")) for r in study.candidates)
    rungs = [(r.generation, r.position, r.rung, r.bracket, r.steps, r.formula, r.status, r.fitness,
              r.metrics, r.details.get("started_at")) for r in study.store.rung_rows()]
    return cands, rungs


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    study = _search(tmp_path_factory.mktemp("ref") / "ref.db")
    out = _outcome(study)
    study.close()
    cands, rungs = out
    assert {r[4] for r in rungs} == {2, 6, 18}, "the test needs candidates on every rung"
    assert any(r[9] for r in rungs), "the test needs a rung continued from a stored state"
    return out


def _on(executor, path):
    try:
        study = _search(path, executor)
        out = _outcome(study)
        study.close()
    finally:
        executor.shutdown()
    return out


def test_inprocess_dask_cluster_gives_the_in_process_rungs(reference, tmp_path):
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                       dashboard_address=":0")
    client = distributed.Client(cluster, set_as_default=False)
    try:
        assert _on(E.make_executor(dask=client), tmp_path / "inproc.db") == reference
    finally:
        client.close()
        cluster.close()


@pytest.mark.slow
def test_dask_local_2_gives_the_in_process_rungs(reference, tmp_path):
    assert _on(E.make_executor(dask="local:2"), tmp_path / "local2.db") == reference
    assert not list(tmp_path.glob("local2.db.rungs/*.pt"))  # states removed once final
