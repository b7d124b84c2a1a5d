"""shapes-pose: generator, heatmaps, keypoint metrics, decoding, a short training and the LRP."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from lossforge import metrics as M
from lossforge import tasks
from lossforge.data.shapes_pose import MARGIN, heatmaps, render_pose, shapes_pose
from lossforge.evaluation.probes import task_probe
from lossforge.expr import parse
from lossforge.tasks.pose import ShapesPose, decode
from lossforge.training import score_model, train

SMALL = dict(n_train=64, n_val=16, n_test=16)
MSE = "mean_c(square(f - y))"


# ---------------------------------------------------------------- generator
def test_generator_deterministic_and_splits_independent():
    a, b = shapes_pose(**SMALL, seed=0), shapes_pose(**SMALL, seed=0)
    for name in ("train", "val", "test"):
        assert torch.equal(getattr(a, name).x, getattr(b, name).x)
        assert torch.equal(getattr(a, name).y, getattr(b, name).y)
    c = shapes_pose(**SMALL, seed=1)
    assert not torch.equal(a.train.x, c.train.x)
    bigger = shapes_pose(n_train=100, n_val=16, n_test=16, seed=0)  # other splits unchanged
    assert torch.equal(a.val.y, bigger.val.y) and torch.equal(a.test.x, bigger.test.x)
    assert a.num_classes is None and a.train.x.shape == (64, 3, 32, 32)
    assert a.train.y.shape == (64, 5, 16, 16) and a.train.y.dtype == torch.float32
    assert 0.0 <= float(a.train.x.min()) and float(a.train.x.max()) <= 1.0


@pytest.mark.parametrize("stride", [1, 2])
def test_keypoints_inside_image_on_the_grid(stride):
    _, kp = render_pose(300, size=32, num_keypoints=5, stride=stride,
                        rng=np.random.default_rng(3))
    assert kp.shape == (300, 5, 2)
    assert kp.min() >= MARGIN and kp.max() <= 31 - MARGIN
    assert np.array_equal(kp, np.rint(kp / stride) * stride)
    # the joints are distinct and the arm has some extent
    assert (np.abs(np.diff(kp, axis=1)).sum(-1) > 0).all()


def test_heatmap_peak_at_keypoint():
    d = shapes_pose(**SMALL, seed=0, sigma=1.5, stride=2)
    y = d.train.y.numpy()
    dec = M.decode_heatmaps(y)
    assert np.array_equal(dec[..., 2], np.ones(dec.shape[:2]))  # peak 1 at the keypoint
    kp = np.array([[[3.0, 4.0], [10.0, 12.0]]])
    h = heatmaps(kp, 16, sigma=1.0)
    assert h.shape == (1, 2, 16, 16) and h[0, 0, 3, 4] == 1.0 and h[0, 1, 10, 12] == 1.0
    assert h[0, 0, 3, 5] == pytest.approx(np.exp(-0.5))
    assert np.array_equal(M.keypoints_of(h), kp)


# ---------------------------------------------------------------- metrics
def test_pck_hand_cases():
    # image 0: keypoints (0, 0) and (10, 0): box side 10; image 1: (0, 0) and (0, 20): side 20
    target = np.array([[[0.0, 0.0], [10.0, 0.0]], [[0.0, 0.0], [0.0, 20.0]]])
    assert M.pck(target, target, alpha=0.1) == 1.0
    assert M.pck(target + [0.0, 2.5], target, alpha=0.1) == 0.0
    shifted = target + [0.0, 3.0]
    assert M.pck(shifted, target, alpha=0.2) == 0.5  # image 1 (4 px) hits, image 0 (2 px) misses
    partial = target.copy()
    partial[0, 1] += [1.0, 0.0]  # exactly at the threshold 0.1 * 10: a hit (inclusive)
    partial[1, 0] += [0.0, 3.0]  # 3 > 0.1 * 20: a miss
    assert M.pck(partial, target, alpha=0.1) == 0.75
    assert M.keypoint_error(partial, target) == pytest.approx(4.0 / 4)
    with_conf = np.concatenate([partial, np.ones((2, 2, 1))], axis=-1)  # (N, K, 3) works too
    assert M.pck(with_conf, target, alpha=0.1) == 0.75
    nan = partial.copy()
    nan[0, 0] = np.nan
    assert M.pck(nan, target, alpha=0.1) == 0.5
    with pytest.raises(ValueError):
        M.pck(target[:, :1], target)


def test_pck_on_heatmaps_equals_pck_on_coordinates():
    d = shapes_pose(**SMALL, seed=2)
    y = d.val.y
    kp = M.keypoints_of(y)
    rng = np.random.default_rng(0)
    pred_kp = np.clip(kp + rng.integers(-2, 3, kp.shape), 0, 15)
    pred_h = heatmaps(pred_kp, 16, sigma=1.5)
    for alpha in (0.1, 0.2):
        assert M.pck(pred_h, y, alpha) == M.pck(pred_kp, kp, alpha)
    assert 0.0 < M.pck(pred_h, y, 0.1) < 1.0


@pytest.mark.skipif(not M.HAS_PYCOCOTOOLS, reason="pycocotools not installed")
def test_oks_ap_hand_cases():
    target = np.array([[[0.0, 0.0], [10.0, 0.0], [10.0, 10.0]]] * 4)
    assert M.oks_ap(target, target, sigmas=0.1) == pytest.approx(1.0)
    assert M.oks_ap(target + 8.0, target, sigmas=0.1) == pytest.approx(0.0)
    # OKS = exp(-d^2 / (2 s^2 (2 sigma)^2)): d = 1, s = 10, sigma = 0.1 -> 0.88, which passes the
    # thresholds 0.50 .. 0.85 (8 of 10) -> AP 0.8
    assert M.oks_ap(target + [1.0, 0.0], target, sigmas=0.1) == pytest.approx(0.8)


# ---------------------------------------------------------------- task
def test_task_registered_with_regression_signature():
    t = tasks.get("shapes-pose")
    assert isinstance(t, ShapesPose) and t.kind == "regression"
    assert t.variables == frozenset({"f", "y"}) and t.default_metric == "pck"
    assert {"pck", "pck@0.1", "error"} <= set(t.metrics)


def test_predict_on_perfect_heatmaps_returns_exact_coordinates():
    t = ShapesPose(**SMALL)
    y = t.data().val.y
    pred = t.predict(y)
    kp = M.keypoints_of(y)
    assert pred.shape == (16, 5, 3)
    assert np.array_equal(pred[..., :2].numpy(), kp) and torch.all(pred[..., 2] == 1.0)
    scores = t.compute_metrics(pred.numpy(), y.numpy())
    assert scores["pck"] == 1.0 and scores["pck@0.1"] == 1.0 and scores["error"] == 0.0
    # decode agrees with the NumPy decoder on arbitrary maps (first maximum on ties)
    h = torch.randn(4, 5, 16, 16)
    h[0, 0] = 0.0
    assert np.array_equal(decode(h).numpy().astype(np.float64), M.decode_heatmaps(h))


def test_short_training_beats_untrained_model():
    start = time.process_time()  # CPU seconds: wall time depends on the machine's load
    t = ShapesPose(n_train=512, n_val=128, n_test=16, width=8)
    untrained = score_model(t, t.seeded_model(0), t.data().val, 128, "cpu")["pck"]
    r = train(t, MSE, steps=80, batch_size=32, lr=1e-2, seed=0, splits=("val",))
    assert r.status == "ok"
    assert r.val["pck"] > untrained + 0.1, (untrained, r.val)
    assert time.process_time() - start < 20


def test_lrp_mse_passes_on_pose_probe():
    from lossforge.evaluation.funnel import BASELINES, Funnel

    t = ShapesPose(**SMALL)
    probe = task_probe(t, 5, 0, spatial_size=32)
    assert probe.kind == "regression" and probe.pred_shape == (5, 5, 16, 16)
    funnel = Funnel(t, "pck")
    score = funnel.lrp.score(parse(MSE))  # as configured: Adam, a step in target units
    assert score is not None and score >= funnel.lrp.config.threshold, score
    # calibration (as a study runs it) makes every hand-made regression loss pass (L1 needs a
    # larger step to beat the N(0, 1) initial noise on 1,280 values per sample)
    scores = funnel.calibrate()
    assert set(scores) == {MSE, "mean_c(abs(f - y))", *BASELINES["regression"]}
    for formula, score in scores.items():
        assert score is not None and score >= funnel.lrp.config.threshold, (formula, score)
    # a loss that pushes the prediction away from the target fails
    assert (funnel.lrp.score(parse("-mean_c(square(f - y))")) or -1.0) < funnel.lrp.config.threshold


def test_regression_probe_pools_wide_dense_targets():
    t = ShapesPose(**SMALL)
    probe = task_probe(t, 3, 0, spatial_size=8)
    assert probe.pred_shape == (3, 5, 8, 8)
    full = task_probe(t, 3, 0, spatial_size=None).target
    assert torch.allclose(probe.target, torch.nn.functional.avg_pool2d(full, 2))


def test_batched_lrp_matches_reference_on_pose_probe():
    from lossforge.evaluation import batched
    from lossforge.evaluation.lrp import LossRejection, LRPConfig

    t = ShapesPose(**SMALL)
    probe = task_probe(t, 5, 0, spatial_size=32)
    stage = LossRejection(probe, t.metric("pck"), LRPConfig(steps=100, lr=12.8))
    exprs = [parse(MSE), parse("mean_c(abs(f - y))"), parse("mean_s(square(f - y) * (y + 1))")]
    found = batched.lrp_scores(exprs, probe, stage.metric, stage.config, stage.init)
    for e, (ok, score) in zip(exprs, found):
        assert ok and score == pytest.approx(stage.score(e), abs=1e-9), str(e)
