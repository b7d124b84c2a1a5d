"""The task families where the loss matters (issue 17): noisy labels, long tails, heavy-tailed
regression targets; task options (typed, checked, recorded, stored in a study and checked on
resume; ``--task-option`` on the command line). Data: digits, diabetes and Friedman #1 only (all
offline); the MNIST variants are checked for a clear error without their files and skipped when
``make data`` has not been run."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lossforge import cli, tasks
from lossforge.data import DataMissingError
from lossforge.storage import Store, StudyFileError
from lossforge.study import LossSearch, prepare_resume
from lossforge.tasks.long_tail import long_tail_counts
from lossforge.tasks.noisy_labels import corrupt_labels
from lossforge.tasks.options import TaskOptionError, option_specs, task_options
from lossforge.tasks.robust_regression import heavy_tailed_noise

runner = CliRunner()


# --- noisy labels -------------------------------------------------------------------------------
def test_corrupt_labels_exact_rate_and_flip_kinds():
    y = np.repeat(np.arange(10), 100)
    sym = corrupt_labels(y, 0.4, "symmetric", 10, np.random.default_rng(0))
    changed = sym != y
    assert changed.sum() == 400  # exactly round(0.4 * N), every one really wrong
    # the wrong labels spread over the 9 other classes (each ~400/9 ≈ 44)
    offsets = np.bincount((sym[changed] - y[changed]) % 10, minlength=10)
    assert offsets[0] == 0 and offsets[1:].min() > 20
    pair = corrupt_labels(y, 0.3, "pair", 10, np.random.default_rng(0))
    assert (pair != y).sum() == 300 and np.all(pair[pair != y] == (y[pair != y] + 1) % 10)
    assert np.array_equal(corrupt_labels(y, 0.0, "pair", 10, np.random.default_rng(0)), y)
    with pytest.raises(ValueError, match="flip must be one of"):
        corrupt_labels(y, 0.1, "asym", 10, np.random.default_rng(0))


def test_digits_noisy_corrupts_train_and_val_only_and_is_seeded():
    t = tasks.get("digits-noisy", noise=0.4, flip="symmetric")
    clean, noisy = t.clean_data(), t.data()
    rate = lambda a, b: float((a.y != b.y).float().mean())  # noqa: E731
    assert rate(clean.train, noisy.train) == pytest.approx(0.4, abs=1e-3)
    assert rate(clean.val, noisy.val) == pytest.approx(0.4, abs=2e-3)
    assert rate(clean.test, noisy.test) == 0.0
    assert torch.equal(clean.train.x, noisy.train.x)
    again = tasks.get("digits-noisy", noise=0.4).data()
    assert torch.equal(again.train.y, noisy.train.y)  # deterministic
    other = tasks.get("digits-noisy", noise=0.4, noise_seed=1).data()
    assert not torch.equal(other.train.y, noisy.train.y)
    clean_val = tasks.get("digits-noisy", noise=0.4, noisy_val=False).data()
    assert torch.equal(clean_val.val.y, clean.val.y)


# --- long tails -----------------------------------------------------------------------------------
def test_long_tail_profile_and_balanced_eval_splits():
    assert long_tail_counts(100, 3, 100) == [100, 10, 1]
    assert long_tail_counts(106, 10, 100)[:4] == [106, 64, 38, 23]  # 106 * 100^(-i/9)
    t = tasks.get("digits-lt")
    d = t.data()
    counts = np.bincount(d.train.y.numpy(), minlength=10)
    n_max = counts[0]
    assert counts.tolist() == long_tail_counts(int(n_max), 10, 100.0)
    assert counts[0] / counts[-1] == pytest.approx(100, rel=0.1)
    for split in (d.val, d.test):
        per_class = np.bincount(split.y.numpy(), minlength=10)
        assert per_class.min() == per_class.max() > 0
    # many: n > n_max/5, few: n < n_max/25 (the standard 100 and 20 at n_max = 500)
    assert set(t.metrics) == {"balanced_accuracy", "accuracy", "macro_f1", "many_acc",
                              "medium_acc", "few_acc"}
    assert t.default_metric == "balanced_accuracy"
    pred, target = d.test.y.numpy(), d.test.y.numpy().copy()
    pred[target >= 7] = 0  # the three few-shot classes all wrong
    scores = t.compute_metrics(pred, target)
    assert (scores["many_acc"], scores["medium_acc"], scores["few_acc"]) == (1.0, 1.0, 0.0)
    assert scores["balanced_accuracy"] == pytest.approx(0.7)
    # a mild tail has no few-shot class: no few_acc
    assert "few_acc" not in tasks.get("digits-lt", imbalance=10).metrics


# --- heavy-tailed regression ----------------------------------------------------------------------
def test_heavy_tailed_regression_noise_on_train_only():
    t = tasks.get("friedman-heavy")
    clean = tasks.get("friedman-heavy", scale=0.0).data()
    d = t.data()
    assert torch.allclose(d.test.y, clean.test.y)  # clean test targets
    assert float(clean.train.y.std(unbiased=False)) == pytest.approx(1.0, abs=1e-4)  # standardised by clean
    noise = (d.train.y - clean.train.y).numpy()
    assert np.abs(noise).max() > 10 * np.median(np.abs(noise))  # heavy tails
    rng = np.random.default_rng(0)
    out = heavy_tailed_noise(1000, "outliers", rng, scale=0.0, share=0.2, outlier_scale=10)
    assert np.count_nonzero(out) == 200 and np.abs(out[out != 0]).min() >= 10
    assert set(tasks.get("diabetes-heavy").metrics) == {"mae", "rmse"}
    with pytest.raises(TaskOptionError, match="student-t, outliers"):
        tasks.get("friedman-heavy", noise="cauchy")


# --- MNIST variants -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mnist-noisy", "fashion-mnist-noisy", "mnist-lt",
                                  "fashion-mnist-lt"])
def test_mnist_families_without_files_say_make_data(name, tmp_path):
    with pytest.raises(DataMissingError, match="make data"):
        tasks.get(name, data_dir=str(tmp_path)).data()


def test_mnist_noisy_when_the_data_is_there():
    t = tasks.get("mnist-noisy", noise=0.2, n_train=2000)
    try:
        d = t.data()
    except DataMissingError:
        pytest.skip("MNIST not in the data directory (run `make data`)")
    assert len(d.train) == 2000 and len(d.test) == 10_000
    clean = t.clean_data()
    assert float((clean.train.y != d.train.y).float().mean()) == pytest.approx(0.2)
    assert t.make_model()(d.train.x[:2]).shape == (2, 10)


# --- options --------------------------------------------------------------------------------------
def test_options_are_typed_checked_and_recorded():
    t = tasks.get("digits-noisy", noise="0.2", flip="pair", noisy_val="false")
    assert (t.noise, t.flip, t.noisy_val) == (0.2, "pair", False)
    assert task_options(t) == {"noise": 0.2, "flip": "pair", "noise_seed": 0, "noisy_val": False,
                               "seed": 0, "arch": "digits-cnn"}
    assert task_options(tasks.get("digits")) == {}
    assert task_options(tasks.get("digits", arch="mlp")) == {"seed": 0, "arch": "mlp"}
    with pytest.raises(TaskOptionError, match=r"no option 'nosie' \(did you mean 'noise'\?\); "
                                              r"its options are: noise, flip, noise_seed"):
        tasks.get("digits-noisy", nosie=0.4)
    with pytest.raises(TaskOptionError, match="option noise_seed takes int, got 'x'"):
        tasks.get("digits-noisy", noise_seed="x")
    specs = option_specs(tasks.factory("digits-noisy"))
    assert specs["flip"].choices == ("symmetric", "pair") and specs["noise"].default == 0.4


def test_study_stores_task_options_and_checks_them_on_resume(tmp_path):
    path = tmp_path / "s.db"
    run = LossSearch(task=tasks.get("digits-noisy", noise=0.2), storage=path, budget=4)
    assert run.settings()["task_options"]["noise"] == 0.2
    Store.create(path, run.settings()).close()
    resumed = prepare_resume(path)  # the study's task is made again with its options
    assert resumed.task.noise == 0.2 and task_options(resumed.task) == task_options(run.task)
    other = LossSearch(task=tasks.get("digits-noisy", noise=0.3), storage=path, budget=4)
    with pytest.raises(StudyFileError, match="task_options.noise: study has 0.2, requested 0.3"):
        other.check()
    with pytest.raises(StudyFileError, match="task_options.noise"):  # the default is 0.4
        LossSearch(task="digits-noisy", storage=path, budget=4).check()


# --- command line ---------------------------------------------------------------------------------
def test_cli_lists_task_options_and_rejects_unknown_ones():
    listed = runner.invoke(cli.app, ["tasks", "--format", "json"], prog_name="lossforge")
    assert listed.exit_code == 0, listed.output
    entries = {e["task"]: e for e in json.loads(listed.stdout)}
    for name in ("digits-noisy", "mnist-noisy", "fashion-mnist-noisy", "digits-lt", "mnist-lt",
                 "fashion-mnist-lt", "friedman-heavy", "diabetes-heavy"):
        assert name in entries
    noisy = {o["name"]: o for o in entries["digits-noisy"]["options"]}
    assert noisy["flip"]["type"] == "symmetric|pair" and noisy["noise"]["default"] == 0.4
    bad = runner.invoke(cli.app, ["evaluate", "--task", "digits-noisy", "--task-option",
                                  "nosie=0.4", "--loss", "ce"], prog_name="lossforge")
    assert bad.exit_code != 0 and "Traceback" not in bad.output
    assert "no option 'nosie'" in bad.stderr and "noise, flip, noise_seed" in bad.stderr
    bad = runner.invoke(cli.app, ["evaluate", "--task", "digits-noisy", "--task-option", "noise",
                                  "--loss", "ce"], prog_name="lossforge")
    assert bad.exit_code != 0 and "expected KEY=VALUE" in bad.stderr


def test_cli_evaluate_with_task_options():
    out = runner.invoke(cli.app, ["evaluate", "--task", "digits-noisy", "--task-option",
                                  "noise=0.2", "--task-option", "flip=pair", "--loss", "ce",
                                  "--seeds", "1", "--steps", "3", "--format", "json"],
                        prog_name="lossforge")
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["task"] == "digits-noisy"
