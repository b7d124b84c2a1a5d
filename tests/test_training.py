"""Tasks, proxy training and `evaluate` on real (tiny) trainings."""
import math
import threading
import time

import numpy as np
import pytest
import torch
from torch import nn

import lossforge
from lossforge import tasks
from lossforge.comparison import evaluate, welch_p
from lossforge.data import DataMissingError, DataSplits, Split
from lossforge.tasks import Metric, ProxyConfig, Task
from lossforge.training import INVALID, OK, train


class BlobsTask(Task):
    """A user-defined task that lives only in this test file: 3 Gaussian blobs in 2-D."""

    name = "blobs"
    num_classes = 3
    metrics = {"accuracy": Metric("accuracy", lambda p, t: float((p == t).mean()))}
    default_metric = "accuracy"
    proxy = ProxyConfig(steps=60, batch_size=32, lr=0.05)

    def data(self) -> DataSplits:
        g = torch.Generator().manual_seed(0)
        centres = torch.tensor([[0.0, 3.0], [3.0, -2.0], [-3.0, -2.0]])

        def split(n):
            y = torch.randint(0, 3, (n,), generator=g)
            return Split(centres[y] + torch.randn(n, 2, generator=g), y)

        return DataSplits(split(300), split(100), split(100), 3, "blobs")

    def make_model(self) -> nn.Module:
        return nn.Linear(2, 3)


def test_user_task_trains_and_evaluates_like_a_builtin():
    r = train(BlobsTask(), "ce", seed=0)
    assert r.status == OK and r.steps_done == 60
    assert r.val["accuracy"] > 0.9 and r.test["accuracy"] > 0.9
    assert r.loss_curve[-1] < r.loss_curve[0]
    table = evaluate(BlobsTask(), ["baikal"], seeds=2, steps=30)
    assert [row.loss for row in table.rows] == ["ce", "baikal"]
    assert table.rows[0].runs == 2


def test_training_is_deterministic_for_a_seed():
    a = train(BlobsTask(), "focal", seed=3)
    b = train(BlobsTask(), "focal", seed=3)
    c = train(BlobsTask(), "focal", seed=4)
    assert a.loss_curve == b.loss_curve and a.test == b.test
    assert a.loss_curve != c.loss_curve


def test_non_finite_loss_stops_with_status_invalid():
    r = train(BlobsTask(), "exp(100 * z) * y", seed=0)
    assert r.status == INVALID
    assert r.steps_done == 0 and r.val == {} and math.isnan(r.loss_curve[-1])


def test_digits_ce_learns():
    r = train("digits", "ce", steps=150, seed=0, splits=("val",))
    assert r.status == OK and r.val["accuracy"] > 0.85


def test_regression_task_uses_f_and_y():
    r = train("diabetes", "mean_c(abs(f - y))", steps=100, seed=0)
    assert r.status == OK and 0 < r.test["mae"] < 1.0


def test_loss_from_exported_file(tmp_path):
    path = tmp_path / "myloss.py"
    path.write_text(lossforge.parse("-mean_c(log(p) - y / p)").to_source("Baikal"))
    a = train(BlobsTask(), str(path), seed=1)
    b = train(BlobsTask(), "baikal", seed=1)
    assert a.loss_curve == pytest.approx(b.loss_curve, rel=1e-5)


def test_bad_inputs_give_clear_errors():
    with pytest.raises(KeyError, match="known tasks"):
        tasks.get("digitz")
    with pytest.raises(KeyError, match="has no metric"):
        tasks.get("digits").metric("miou")
    with pytest.raises(ValueError, match="does not provide"):
        train(BlobsTask(), "mean_c(square(f - y))", steps=1)
    with pytest.raises(ValueError, match="not a zoo name"):
        train(BlobsTask(), "log(p +", steps=1)

    class WrongShape(BlobsTask):
        def make_model(self):
            return nn.Linear(2, 4)

    with pytest.raises(ValueError, match=r"model output has shape \(32, 4\), expected \(32, 3\)"):
        train(WrongShape(), "ce", steps=1)


def test_missing_mnist_directory_names_make_data(tmp_path):
    with pytest.raises(DataMissingError, match="make data"):
        tasks.get("mnist", data_dir=str(tmp_path / "nowhere")).data()


def test_welch_p_against_scipy_by_hand():
    a, b = [0.9, 0.92, 0.91], [0.8, 0.82, 0.79]
    ma, mb = np.mean(a), np.mean(b)
    va, vb = np.var(a, ddof=1) / 3, np.var(b, ddof=1) / 3
    t = (ma - mb) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)
    from scipy import stats

    assert welch_p(a, b) == pytest.approx(2 * stats.t.sf(abs(t), df))
    assert math.isnan(welch_p([1.0], b))


def test_every_builtin_task_builds_a_model_that_fits_its_data():
    from lossforge.data._common import DataMissingError

    for name in tasks.names():
        t = tasks.get(name)
        try:
            d = t.data()
        except DataMissingError:  # mnist, fashion-mnist and their families: `make data` only
            continue
        out = t.make_model()(d.train.x[:4])
        tasks.check_output_shape(t, out, d.train.y[:4])


def test_eval_every_records_a_validation_curve_without_changing_the_run():
    plain = train("digits", "ce", steps=12, seed=3, splits=("val",))
    curved = train("digits", "ce", steps=12, seed=3, splits=("val",), eval_every=5)
    assert [c["step"] for c in curved.val_curve] == [5, 10]
    assert all(0.0 <= c["accuracy"] <= 1.0 for c in curved.val_curve)
    assert curved.val == plain.val and curved.loss_curve == plain.loss_curve  # same training
    assert plain.val_curve == []


class SlowInitBlobs(BlobsTask):
    """Model initialisation pauses between layers, so concurrent threads would interleave draws."""

    def make_model(self) -> nn.Module:
        first = nn.Linear(2, 8)
        time.sleep(0.005)
        return nn.Sequential(first, nn.ReLU(), nn.Linear(8, 3))


def test_models_trained_in_threads_at_once_match_the_serial_runs():
    """An in-process Dask cluster runs proxy trainings in threads of one process: their model
    initialisations must not share torch's global RNG draws."""
    task = SlowInitBlobs()
    serial = {s: train(task, "ce", steps=5, seed=s).val for s in range(6)}
    threaded: dict[int, dict] = {}
    threads = [threading.Thread(target=lambda s=s: threaded.__setitem__(
        s, train(task, "ce", steps=5, seed=s).val)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert threaded == serial
    assert len({tuple(v.values()) for v in serial.values()}) > 1  # the seeds give different models
