"""A task's own training loop: ``Task.fit`` overridden, and ``lossforge.objective_task``.

The tasks here train a linear model on three Gaussian blobs in 2-D with a plain PyTorch loop of
their own (SGD with momentum and a cosine learning-rate schedule), a few dozen steps: every search
is tiny. The loops record their calls, so the tests can check that the proxy stage's fitnesses are
what the user's loop returned and that the screening stages never train.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import lossforge
from lossforge import LossSearch
from lossforge.data import DataSplits, Split
from lossforge.evaluation.candidate import FAILED, INVALID, TRAINED, Candidate
from lossforge.evaluation.funnel import Funnel, FunnelConfig
from lossforge.evaluation.lrp import LRPConfig
from lossforge.evaluation.proxy import ProxyStageConfig, proxy_job
from lossforge.execution import make_executor
from lossforge.expr import parse
from lossforge.tasks import LossSlot, Metric, ProxyConfig, Task, overrides_fit
from lossforge.tasks.objective import ObjectiveTask

STEPS = 24
CE = "-sum_c(y * log(p))"
FOCAL = "-sum_c(y * square(1 - p) * log(p))"


def blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points of 3 Gaussian blobs (centres on a triangle, sd 0.8) and their labels."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=gen)
    centres = torch.tensor([[0.0, 2.0], [-1.8, -1.0], [1.8, -1.0]])
    return centres[y] + 0.8 * torch.randn(n, 2, generator=gen), y


TRAIN, VAL = blobs(192, 1), blobs(96, 2)


def own_loop(loss: nn.Module, steps: int, seed: int, report=None, every: int = 8) -> dict:
    """The user's loop: a linear model, SGD + momentum, cosine schedule, batches of 32."""
    torch.manual_seed(seed)
    model = nn.Linear(2, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    gen = torch.Generator().manual_seed(seed + 7)
    x, y = TRAIN
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(x), (32,), generator=gen)
        value = loss(model(x[idx]), y[idx])
        opt.zero_grad()
        value.backward()
        opt.step()
        sched.step()
        if report is not None and step % every == 0:
            report(step, {"accuracy": _accuracy(model)})
    with torch.no_grad():
        val_loss = float(nn.functional.cross_entropy(model(VAL[0]), VAL[1]))
    return {"accuracy": _accuracy(model), "val_ce": val_loss}


def _accuracy(model: nn.Module) -> float:
    with torch.no_grad():
        return float((model(VAL[0]).argmax(1) == VAL[1]).float().mean())


class BlobsOwnLoop(Task):
    """A Task subclass with data (for the probes) and its own loop (``fit``), recording calls."""

    name = "blobs-own-loop"
    kind = "classification"
    num_classes = 3
    metrics = {"accuracy": Metric("accuracy", lossforge.metrics.accuracy),
               "val_ce": Metric("val_ce", lambda p, t: float("nan"), higher_is_better=False)}
    default_metric = "accuracy"
    proxy = ProxyConfig(steps=STEPS)

    def __init__(self):
        self.calls: list[dict] = []
        self.data_calls = 0

    def data(self) -> DataSplits:
        self.data_calls += 1
        return DataSplits(Split(*TRAIN), Split(*VAL), Split(*VAL), 3, self.name)

    def fit(self, loss, *, steps, seed, device="cpu", report=None):
        out = own_loop(loss, steps, seed, report)
        self.calls.append({"loss": getattr(loss, "formula", None), "steps": steps, "seed": seed,
                           "result": out})
        return out


def tiny_funnel(**changes) -> FunnelConfig:
    base = dict(lrp=LRPConfig(steps=20), proxy=ProxyStageConfig(steps=STEPS))
    return FunnelConfig(**{**base, **changes})


def search(task, tmp_path, budget: int = 6, seed: int = 3, **kw):
    seen: list[dict] = []
    tmp_path.mkdir(parents=True, exist_ok=True)
    run = LossSearch(task=task, storage=tmp_path / "s.db", strategy="random", budget=budget,
                     seed=seed, funnel=kw.pop("funnel", tiny_funnel(use_lrp=False)),
                     strategy_options={"batch_size": budget}, progress=seen.append, **kw)
    study = run.run()
    rows = study.candidates
    study.close()
    return rows, seen


# ---- a Task subclass with its own loop ---------------------------------------------------------
def test_a_task_subclass_with_its_own_loop_is_searched_and_its_loop_gives_the_fitness(tmp_path):
    task = BlobsOwnLoop()
    assert overrides_fit(task) and not overrides_fit(lossforge.tasks.get("digits"))
    rows, seen = search(task, tmp_path)
    assert len(rows) == 6
    trained = [r for r in rows if r.status == TRAINED]
    # one training per candidate that reached the proxy stage, after the study's baseline (ce)
    assert task.calls[0]["loss"] == CE
    assert len(trained) >= 2 and len(task.calls) == 1 + sum(r.status in (TRAINED, INVALID, FAILED)
                                                           for r in rows)
    by_formula = {c["loss"]: c for c in task.calls}
    for r in trained:  # the fitness is the accuracy the user's loop returned, to the bit
        out = by_formula[r.formula]["result"]
        assert r.fitness == out["accuracy"] and 0.0 <= r.fitness <= 1.0
        assert r.details["metrics"] == pytest.approx(out)  # val_ce too: the loop's own metric
    assert all(c["steps"] == STEPS and c["seed"] == 0 for c in task.calls)
    # the screening drew its probes from the task's data, the proxy stage never did
    assert task.data_calls >= 1
    results = [s for s in seen if s.get("event") == "result"]
    assert len({(s["generation"], s["position"]) for s in results}) == 6


def test_reports_of_the_own_loop_reach_the_progress_callback(tmp_path):
    task = BlobsOwnLoop()
    rows, seen = search(task, tmp_path)
    reports = [s for s in seen if s.get("event") == "report"]
    assert "status" not in reports[0] and reports[0]["budget"] == 6
    assert len(reports) == 3 * (len(task.calls) - 1)  # steps 8, 16, 24 of every candidate
    assert [r["step"] for r in reports[:3]] == [8, 16, 24]
    formulas = {r.formula for r in rows if r.status == TRAINED}
    assert {r["formula"] for r in reports} == formulas
    last = {r["formula"]: r["metrics"]["accuracy"] for r in reports}  # the step-24 report
    assert all(last[r.formula] == r.fitness for r in rows if r.status == TRAINED)


def test_reports_pass_through_a_serial_executor_with_a_time_limit(tmp_path):
    task = BlobsOwnLoop()
    rows, seen = search(task, tmp_path / "a", executor=make_executor(timeout=60.0))
    assert any(r.status == TRAINED for r in rows)
    assert len([s for s in seen if s.get("event") == "report"]) == 3 * (len(task.calls) - 1)
    # a task without data: nothing to load before the clock starts (Task.preload)
    CALLS.clear()
    rows, seen = search(blobs_objective(), tmp_path / "b", executor=make_executor(timeout=60.0))
    assert any(r.status == TRAINED for r in rows) and len(CALLS) > 1
    assert len([s for s in seen if s.get("event") == "report"]) == len(CALLS) - 1


def test_the_live_view_shows_the_training_in_progress_and_clears_it_with_its_result(tmp_path):
    from rich.console import Console

    from lossforge.cli.live import SearchView

    task = BlobsOwnLoop()
    _, seen = search(task, tmp_path)
    view = SearchView("searching", budget=6)
    report = next(s for s in seen if s.get("event") == "report")
    view.update(report)
    assert view.explored == 0  # a report is not a result
    console = Console(record=True, width=160)
    console.print(view)
    text = console.export_text()
    assert f"training: step {report['step']} · accuracy {report['metrics']['accuracy']:.4g}" in text
    result = next(s for s in seen if s.get("event") == "result" and s["formula"] == report["formula"])
    view.update(result)
    assert view.explored == 1 and view.training is None


def test_the_screening_stages_never_call_fit():
    task = BlobsOwnLoop()
    funnel = Funnel(task, "accuracy", tiny_funnel())
    funnel.calibrate()
    exprs = [parse(f) for f in (CE, FOCAL, "sum_c(square(p - y))", "-sum_c(y * p)", "y + p")]
    cands = [Candidate(e) for e in exprs]
    for stage in funnel.stages:
        if stage is not funnel.proxy:
            stage(cands)
    assert task.calls == []
    assert funnel.lrp.stats.n_in >= 1 and funnel.checks.stats.n_in == len(exprs)
    funnel.proxy(cands)  # only the proxy stage trains: once per candidate still pending
    assert len(task.calls) == sum(c.status == TRAINED for c in cands) >= 2


# ---- what fit returns or raises ----------------------------------------------------------------
class Scripted(BlobsOwnLoop):
    """``fit`` returns (or raises) what the test scripted."""

    name = "blobs-scripted"

    def __init__(self, result):
        super().__init__()
        self.result = result

    def fit(self, loss, *, steps, seed, device="cpu", report=None):
        self.calls.append({"steps": steps})
        return self.result(loss) if callable(self.result) else self.result


def test_a_nan_target_metric_is_invalid_and_says_so():
    out = proxy_job(Scripted({"accuracy": float("nan"), "val_ce": 1.0}), CE, "accuracy", 5, 0)
    assert out["status"] == INVALID and out["fitness"] is None
    assert "accuracy = nan" in out["reason"] and "diverged" in out["reason"]
    assert out["metrics"] == {"val_ce": 1.0}


@pytest.mark.parametrize("returned, words", [
    ({"acc": 0.5}, ["no 'accuracy'", "'acc'", "target metric 'accuracy'"]),
    ({"accuracy": "high"}, ["'accuracy' = 'high'", "not a number"]),
    (0.75, ["returned float", "not a dict"]),
])
def test_a_missing_or_malformed_metric_fails_with_a_reason(returned, words):
    out = proxy_job(Scripted(returned), CE, "accuracy", 5, 0)
    assert out["status"] == FAILED and out["fitness"] is None
    assert all(w in out["reason"] for w in words), out["reason"]


def test_tensor_and_numpy_metrics_are_numbers_and_the_direction_is_applied():
    task = Scripted({"accuracy": torch.tensor(0.25), "val_ce": np.float32(0.5)})
    out = proxy_job(task, CE, "accuracy", 5, 0)
    assert out["status"] == TRAINED and out["fitness"] == 0.25
    assert proxy_job(task, CE, "val_ce", 5, 0)["fitness"] == -0.5  # lower is better


def _raise_in_user_code(loss):
    raise KeyError("no such column 'label'")  # the line the reason must name


def test_an_exception_in_the_users_loop_fails_the_candidate_with_the_users_line(tmp_path):
    line = _raise_in_user_code.__code__.co_firstlineno + 1
    out = proxy_job(Scripted(_raise_in_user_code), CE, "accuracy", 5, 0)
    assert out["status"] == FAILED
    assert f"{__file__}:{line}" in out["reason"] and "_raise_in_user_code" in out["reason"]
    assert out["reason"].startswith("KeyError") and "no such column" in out["reason"]


class FailsEveryOther(BlobsOwnLoop):
    name = "blobs-fails-every-other"

    def fit(self, loss, *, steps, seed, device="cpu", report=None):
        if len(self.calls) % 2 == 1:
            self.calls.append({"loss": getattr(loss, "formula", None), "result": None})
            raise RuntimeError("CUDA out of memory (simulated)")
        return super().fit(loss, steps=steps, seed=seed, device=device, report=report)


def test_a_search_goes_on_when_the_users_loop_raises(tmp_path):
    task = FailsEveryOther()
    rows, _ = search(task, tmp_path)
    assert len(rows) == 6  # the whole budget explored
    failed = [r for r in rows if r.status == FAILED]
    assert failed and any(r.status == TRAINED for r in rows)
    assert all("RuntimeError" in r.details["reason"] and f"{__file__}:" in r.details["reason"]
               and "(in fit)" in r.details["reason"] for r in failed)


def test_report_checks_its_arguments_and_reports_reach_the_caller():
    from lossforge.evaluation.own_loop import Reports, fit_job

    got = []
    reports = Reports(lambda step, metrics: got.append((step, metrics)))
    out = fit_job(BlobsOwnLoop(), CE, "accuracy", 16, 0, report=reports)
    assert out["status"] == TRAINED and out["steps_done"] == 16
    assert [s for s, _ in got] == [8, 16] and got[-1][1]["accuracy"] == out["fitness"]
    with pytest.raises(TypeError, match="step must be the number of optimisation steps"):
        reports(2.5, {"accuracy": 0.1})
    with pytest.raises(ValueError, match="must not decrease"):
        reports(3, {"accuracy": 0.1})
    with pytest.raises(TypeError, match="not a number"):
        reports(20, {"accuracy": "x"})


class ReportsBadly(BlobsOwnLoop):
    name = "blobs-reports-badly"

    def fit(self, loss, *, steps, seed, device="cpu", report=None):
        report(0.5, {"accuracy": 0.0})  # a float step: the user's mistake
        return {"accuracy": 0.0}


def test_a_report_with_a_wrong_step_fails_with_the_users_line():
    out = proxy_job(ReportsBadly(), CE, "accuracy", 5, 0)
    assert out["status"] == FAILED and "TypeError" in out["reason"]
    assert "step must be the number of optimisation steps" in out["reason"]
    assert f"{__file__}:" in out["reason"] and "(in fit)" in out["reason"]


# ---- the default fit and multi-slot tasks ------------------------------------------------------
def test_the_default_fit_is_the_proxy_stages_own_loop():
    digits = lossforge.tasks.get("digits")
    seen = []
    metrics = digits.fit(parse(CE).to_torch(kind="classification"), steps=10, seed=0,
                         report=lambda s, m: seen.append((s, m)))
    job = proxy_job(digits, CE, "accuracy", 10, 0)
    assert metrics == job["metrics"] and job["status"] == TRAINED
    assert seen == [(10, metrics)]  # the default loop reports once, at the end


class TwoSlots(Task):
    """Two heads (classes and a value); ``fit`` checks the composite loss it is given."""

    name = "two-slots-own-loop"
    kind = "classification"
    num_classes = 3
    slots = (LossSlot("cls", "classification", "ce"), LossSlot("reg", "regression", "mse", 0.5))
    metrics = {"accuracy": Metric("accuracy", lossforge.metrics.accuracy)}
    default_metric = "accuracy"

    def slot_inputs(self, outputs, target):
        return {"cls": (outputs[0], target[0]), "reg": (outputs[1], target[1])}

    def fit(self, loss, *, steps, seed, device="cpu", report=None):
        assert set(loss.losses) == {"cls", "reg"}
        logits, value = torch.zeros(4, 3, requires_grad=True), torch.zeros(4, 1, requires_grad=True)
        labels, targets = torch.tensor([0, 1, 2, 0]), torch.ones(4, 1)
        total = loss((logits, value), (labels, targets)).detach()
        parts = [loss.losses["cls"](logits, labels).detach(), loss.losses["reg"](value, targets).detach()]
        return {"accuracy": 0.5, "total": total, "cls": parts[0], "reg": parts[1]}


def test_a_multi_slot_task_gets_the_weighted_composite_loss():
    out = proxy_job(TwoSlots(), {"cls": CE, "reg": "mean_c(square(f - y))"}, "accuracy", 3, 0)
    m = out["metrics"]
    assert out["status"] == TRAINED
    assert m["cls"] == pytest.approx(math.log(3), rel=1e-5) and m["reg"] == pytest.approx(1.0)
    assert m["total"] == pytest.approx(m["cls"] + 0.5 * m["reg"], rel=1e-6)


# ---- objective_task ----------------------------------------------------------------------------
CALLS: list[tuple] = []


def objective(loss, steps, seed, report):
    """A plain function: the user's whole training, as Optuna's objective."""
    out = own_loop(loss, steps, seed, report, every=steps)
    CALLS.append((steps, seed, out["accuracy"]))
    return out


def blobs_objective(**changes) -> ObjectiveTask:
    kw = dict(name="blobs-objective", kind="classification", num_classes=3,
              metrics={"accuracy": "max", "val_ce": "min"}, default_metric="accuracy",
              probe_targets=TRAIN[1][:32], steps=STEPS)
    return lossforge.objective_task(objective, **{**kw, **changes})


def test_an_objective_task_from_a_function_is_searched(tmp_path):
    CALLS.clear()
    task = blobs_objective()
    # with the LRP (scoring the probes with lossforge's accuracy); seed 5 lets two losses through
    rows, seen = search(task, tmp_path, seed=5, funnel=tiny_funnel())
    trained = [r for r in rows if r.status == TRAINED]
    assert len(rows) == 6 and trained
    assert len(CALLS) == 1 + sum(r.status in (TRAINED, INVALID, FAILED) for r in rows)  # + baseline
    assert sorted(r.fitness for r in trained) == sorted(a for _, _, a in CALLS[1:] if not math.isnan(a))
    assert all(s == STEPS and seed == 0 for s, seed, _ in CALLS)
    assert [s["step"] for s in seen if s.get("event") == "report"] == [STEPS] * (len(CALLS) - 1)


def test_an_objective_task_without_probe_targets_or_data_says_what_is_missing(tmp_path):
    task = blobs_objective(probe_targets=None)
    with pytest.raises(ValueError, match=r"no probe_targets and no data\(\).*pass probe_targets="):
        LossSearch(task=task, storage=tmp_path / "s.db", budget=2).run()
    with pytest.raises(ValueError, match="probe_targets"):
        Funnel(task, "accuracy")


def test_a_task_subclass_with_neither_data_nor_probe_targets_says_what_is_missing():
    class NoData(Task):
        name = "no-data"
        num_classes = 3
        metrics = {"accuracy": Metric("accuracy", lossforge.metrics.accuracy)}

        def fit(self, loss, *, steps, seed, device="cpu", report=None):
            return {"accuracy": 1.0}

    with pytest.raises(ValueError, match=r"no data\(\).*Task\.probe_targets\(n, seed\)"):
        Funnel(NoData(), "accuracy")
    NoData().preload()  # nothing to load, no error (the worker runtime calls it)


def test_objective_task_screening_metric():
    task = blobs_objective()
    m = task.screening_metric("accuracy")  # lossforge's accuracy over non-ignored targets
    pred, target = np.array([0, 1, 2, 1]), np.array([0, 1, 255, 2])
    assert m.higher_is_better and m.fn(pred, target) == pytest.approx(2 / 3)
    standin = task.screening_metric("val_ce")  # unknown name: the kind's stand-in, maximised
    assert standin.name.startswith("accuracy") and standin.higher_is_better
    own = Metric("top1", lambda p, t: 0.125)
    assert blobs_objective(metrics=[own], default_metric="top1").screening_metric() is own
    reg = lossforge.objective_task(objective, name="r", kind="regression", num_classes=None,
                                   metrics={"rmse": "min"}, default_metric="rmse",
                                   probe_targets=torch.zeros(4, 1))
    assert reg.screening_metric().fn(np.ones(3), np.zeros(3)) == pytest.approx(1.0)
    assert reg.probe_targets(2, 0).shape == (2, 1)


def test_objective_task_passes_device_when_the_function_takes_it():
    got = {}

    def fn(loss, steps, seed, report, device="cpu"):
        got.update(steps=steps, seed=seed, device=device)
        report(steps, {"accuracy": 0.5})  # a report=None call still gets a callable
        return {"accuracy": 0.5}

    task = blobs_objective()
    task.fn, task._passes_device = fn, True
    assert task.fit(nn.Identity(), steps=3, seed=4, device="meta") == {"accuracy": 0.5}
    assert got == {"steps": 3, "seed": 4, "device": "meta"}
    plain = lossforge.objective_task(lambda loss, steps, seed, report: {"a": float(steps)},
                                     name="p", kind="regression", num_classes=None,
                                     metrics={"a": "max"}, default_metric="a")
    assert plain.fit(nn.Identity(), steps=2, seed=0) == {"a": 2.0}


@pytest.mark.parametrize("changes, error, words", [
    ({"kind": "box"}, ValueError, "kind must be 'classification'"),
    ({"num_classes": 1}, ValueError, "needs num_classes, an int >= 2"),
    ({"metrics": {"accuracy": "up"}}, ValueError, "give the direction 'max'"),
    ({"metrics": ["accuracy"]}, TypeError, "dict name -> 'max' | 'min' | Metric"),
    ({"default_metric": "miou"}, ValueError, "default_metric 'miou' is not among its metrics"),
    ({"probe_targets": torch.tensor([0, 3])}, ValueError, "label 3, outside 0..2"),
    ({"probe_targets": torch.tensor([0.5, 1.0])}, ValueError, "must be class indices"),
    ({"probe_targets": torch.tensor([], dtype=torch.long)}, ValueError, "at least one target"),
])
def test_objective_task_rejects_bad_arguments_with_a_clear_message(changes, error, words):
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")
                       .replace("|", r"\|").replace(".", r"\.").replace("+", r"\+")):
        blobs_objective(**changes)


def test_objective_task_probe_targets_keep_the_ignore_index_and_are_seeded():
    targets = torch.tensor([[0, 255], [2, 1], [1, 1], [0, 0]])
    task = blobs_objective(probe_targets=targets)
    a, b = task.probe_targets(3, seed=5), task.probe_targets(3, seed=5)
    assert torch.equal(a, b) and a.shape == (3, 2) and a.dtype == torch.long
    assert task.probe_targets(10, seed=0).shape == (4, 2)  # all of them when fewer than asked
    assert repr(task).startswith("<ObjectiveTask blobs-objective")


def test_objective_task_is_a_lazy_public_name():
    from lossforge.tasks.objective import objective_task

    assert "objective_task" in lossforge.__all__ and lossforge.objective_task is objective_task


def test_an_objective_task_runs_in_a_worker_process_with_the_same_results(tmp_path):
    """The task (its function included) travels to the worker; reports stay there (dropped)."""
    inline, _ = search(blobs_objective(), tmp_path / "a", funnel=tiny_funnel(use_lrp=False))
    executor = make_executor(workers=1)
    try:
        pooled, seen = search(blobs_objective(), tmp_path / "b", funnel=tiny_funnel(use_lrp=False),
                              executor=executor)
    finally:
        executor.shutdown()
    assert [(r.formula, r.status, r.fitness) for r in pooled] == \
        [(r.formula, r.status, r.fitness) for r in inline]
    assert any(r.status == TRAINED for r in pooled)
    assert not [s for s in seen if s.get("event") == "report"]


# ---- evaluate, successive halving and refine train with the task's own loop --------------------
def test_evaluate_trains_with_the_tasks_own_loop_and_scores_what_it_returned():
    task = BlobsOwnLoop()
    with pytest.warns(UserWarning, match="validation split, not the test split"):
        result = lossforge.evaluate(task, [FOCAL], seeds=[0, 1], steps=12, split="test")
    assert result.split == "val" and result.baseline == "ce"
    # the baseline first, then the loss, once per seed, all through fit with the asked steps
    assert [(c["steps"], c["seed"]) for c in task.calls] == [(12, 0), (12, 1)] * 2
    assert [c["loss"] for c in task.calls] == [CE, CE, FOCAL, FOCAL]
    direct = [own_loop(parse(f).to_torch(kind="classification"), 12, s) for f in (CE, FOCAL)
              for s in (0, 1)]
    assert [r.val for r in result.runs] == direct  # to the bit; val_ce too: the loop's metric
    focal = next(r for r in result.rows if r.loss == FOCAL)
    assert focal.mean["accuracy"] == pytest.approx(np.mean([d["accuracy"] for d in direct[2:]]))
    assert lossforge.evaluate(BlobsOwnLoop(), [FOCAL], seeds=1, steps=4).split == "val"  # no warning


def test_an_exception_in_the_own_loop_raises_from_evaluate_with_the_users_line():
    class Raises(BlobsOwnLoop):
        def fit(self, loss, *, steps, seed, device="cpu", report=None):
            raise RuntimeError("out of memory in my loop")

    from lossforge.evaluation.own_loop import OwnLoopError

    with pytest.raises(OwnLoopError, match="out of memory in my loop") as info:
        lossforge.evaluate(Raises(), [FOCAL], seeds=1, steps=4)
    assert f"{__file__}:" in str(info.value)


def test_successive_halving_trains_with_the_tasks_own_loop_even_when_batched():
    from lossforge.evaluation.halving import HalvingRound, successive_halving

    task = BlobsOwnLoop()
    bad = "-sum_c(y * p)"  # rewards confidence in the label but ignores the rest
    res = successive_halving([CE, FOCAL, bad], [HalvingRound(task, 2, steps=10, seeds=(1, 2)),
                                                HalvingRound(task, 1, steps=14, seeds=(3,))],
                             batched=True)
    assert [(c["loss"], c["steps"], c["seed"]) for c in task.calls] == \
        [(f, 10, s) for s in (1, 2) for f in (CE, FOCAL, bad)] + \
        [(f, 14, 3) for f in res.rounds[0].kept]
    first = {s.loss: s for s in res.rounds[0].standings}
    for f in (CE, FOCAL, bad):  # the round's means are the user's loop's accuracies
        direct = [own_loop(parse(f).to_torch(kind="classification"), 10, s)["accuracy"]
                  for s in (1, 2)]
        assert first[f].values == pytest.approx(direct) and first[f].mean == pytest.approx(
            np.mean(direct))
    assert len(res.survivors) == 1 and res.survivors[0] in res.rounds[0].kept


def test_refine_retrains_a_studys_best_with_the_tasks_own_loop(tmp_path):
    from lossforge.refine import RoundSpec, refine_study

    search(BlobsOwnLoop(), tmp_path, budget=6)
    task = BlobsOwnLoop()
    state = refine_study(tmp_path / "s.db", [RoundSpec(9, (1,), 1)], top=2, task=task)
    assert [(c["steps"], c["seed"]) for c in task.calls] == [(9, 1)] * len(state["search_fitness"])
    standings = state["results"][0]["standings"]
    by_loss = {c["loss"]: c["result"]["accuracy"] for c in task.calls}
    assert {s["loss"]: s["mean"] for s in standings} == pytest.approx(by_loss)


def test_objective_task_class_prior_reaches_a_loss_reading_q():
    """``class_prior=`` is what ``q`` reads in the user's loop (no data: no other source)."""
    import torch.nn.functional as F

    from lossforge import objective_task
    from lossforge.training.loss_spec import load_losses

    seen = {}

    def fn(loss, steps, seed, report):
        logits = torch.tensor([[2.0, 0.0, -1.0]])
        seen["value"] = float(loss(logits, torch.tensor([0])))
        return {"accuracy": 1.0}

    prior = torch.tensor([0.7, 0.2, 0.1])
    task = objective_task(fn, name="prior-task", kind="classification", num_classes=3,
                          metrics={"accuracy": "max"}, default_metric="accuracy",
                          class_prior=prior)
    loss = load_losses("logit-adjusted", task).module
    task.fit(loss, steps=1, seed=0)
    # logit adjustment (Menon et al. 2021, tau = 1): CE of z + log(prior)
    want = float(F.cross_entropy(torch.tensor([[2.0, 0.0, -1.0]]) + prior.log(), torch.tensor([0])))
    assert abs(seen["value"] - want) < 1e-4
    with pytest.raises(ValueError, match="num_classes is 3"):
        objective_task(fn, name="bad", kind="classification", num_classes=3,
                       metrics={"accuracy": "max"}, default_metric="accuracy",
                       class_prior=[0.5, 0.5])


def test_a_failed_baseline_keeps_the_users_exception_and_line():
    from lossforge.evaluation.baseline import describe, measure_baseline

    line = _raise_in_user_code.__code__.co_firstlineno + 1
    out = measure_baseline(Scripted(_raise_in_user_code), "accuracy", ProxyStageConfig(steps=5))
    assert out["status"] == FAILED and f"{__file__}:{line}" in out["reason"]
    assert "no such column" in describe(out)
