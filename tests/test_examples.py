"""The examples of ``examples/`` run, at a tiny size: the tabular task searched from the command
line and shown and exported; the VOC-layout folder written from the procedural shapes, read by
its ``Dataset``, checked, searched through the user's own loop; the found loss dropped into that
loop by ``train_with_found_loss.py``. Studies and data go to temporary folders."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import f1_score
from typer.testing import CliRunner

from lossforge import cli
from lossforge.study import load_study

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TABULAR = EXAMPLES / "tabular_task.py"
VOC = EXAMPLES / "voc_segmentation"
runner = CliRunner()


def load_example(path: Path, name: str):
    """Import the example file at ``path`` as a module called ``name`` (not put in
    ``sys.modules``: each call gives a fresh module)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def invoke(*args):
    result = runner.invoke(cli.app, [str(a) for a in args], prog_name="lossforge")
    assert result.exit_code == 0, result.output
    return result


# ---- (a) a tabular task in one file ------------------------------------------------------------
def test_the_tabular_task_is_imbalanced_and_judged_by_macro_f1():
    task = load_example(TABULAR, "example_tabular").ImbalancedTabular()
    splits = task.data()
    counts = np.bincount(splits.train.y.numpy(), minlength=3)
    assert len(splits.train) == 900 and counts.sum() == 900
    assert counts[0] > 0.75 * 900 and counts[2] < 0.07 * 900  # 80 % / 15 % / 5 %
    assert task.default_metric == "macro_f1" and task.metrics["macro_f1"].higher_is_better
    pred, target = np.array([0, 0, 0, 0, 1, 2]), np.array([0, 0, 0, 1, 1, 1])
    # F1 = 2tp / (2tp + fp + fn): class 0: 6 / 7; class 1: 2 / 4; class 2: 0 (predicted, never true)
    assert task.metrics["macro_f1"].fn(pred, target) == pytest.approx((6 / 7 + 1 / 2 + 0) / 3)
    assert task.metrics["macro_f1"].fn(pred, target) == pytest.approx(
        f1_score(target, pred, average="macro"))


def test_the_tabular_task_is_searched_shown_and_exported_from_the_cli(tmp_path):
    study = tmp_path / "tabular.db"
    invoke("search", "--task", TABULAR, "--budget", "8", "--generation-size", "8",
           "--proxy-steps", "20", "--no-lrp", "--study", study)
    s = load_study(study)
    try:
        assert s.explored == 8 and s.settings["task"] == "imbalanced-tabular"
        assert s.settings["metric"] == "macro_f1" and s.trained()
        best = s.hall_of_fame[0]
    finally:
        s.close()
    assert 0.0 <= best.fitness <= 1.0
    shown = json.loads(invoke("show", study, "--top", "3", "--format", "json").stdout)
    assert shown["best"]["formula"] == best.formula and shown["task"] == "imbalanced-tabular"
    invoke("export", study, "--rank", "1", "-o", tmp_path / "found_loss.py")
    exported = load_example(tmp_path / "found_loss.py", "example_found_tabular")
    value = exported.SearchedLoss()(torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 0]))
    assert value.dim() == 0 and torch.isfinite(value)


# ---- (b) the VOC layout -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> Path:
    maker = load_example(VOC / "make_voc_folder.py", "example_make_voc")
    return maker.write_voc_folder(tmp_path_factory.mktemp("voc") / "VOCshapes", n_train=8,
                                  n_val=4, size=32, seed=3)


@pytest.fixture(scope="module")
def voc_task_module():
    return load_example(VOC / "task.py", "example_voc_task")


def test_the_folder_has_the_voc_layout_with_void_along_the_outlines(voc_root):
    lists = voc_root / "ImageSets" / "Segmentation"
    train, val = lists.joinpath("train.txt").read_text().split(), lists.joinpath("val.txt").read_text().split()
    assert len(train) == 8 and len(val) == 4 and not set(train) & set(val)
    for image_id in train + val:
        assert (voc_root / "JPEGImages" / f"{image_id}.jpg").is_file()
        with Image.open(voc_root / "SegmentationClass" / f"{image_id}.png") as mask:
            assert mask.mode == "P" and mask.size == (32, 32)
            assert mask.getpalette()[3 * 255:3 * 256] == [224, 224, 192]  # VOC's void colour
            m = np.asarray(mask)
        assert set(np.unique(m)) <= set(range(7)) | {255}
        # void only on background pixels next to an object: each has a foreground 8-neighbour
        padded = np.pad(m, 1, constant_values=0)
        for i, j in zip(*np.nonzero(m == 255)):
            window = padded[i:i + 3, j:j + 3]
            assert ((window != 0) & (window != 255)).any()


def test_outline_void_on_a_hand_made_map():
    maker = load_example(VOC / "make_voc_folder.py", "example_make_voc")
    labels = np.zeros((5, 5), np.int64)
    labels[2, 2] = 4  # one object pixel: its 8 neighbours become void, the rest stays background
    out = maker.outline_void(labels)
    expected = np.zeros((5, 5), np.uint8)
    expected[1:4, 1:4] = 255
    expected[2, 2] = 4
    assert out.dtype == np.uint8 and np.array_equal(out, expected)


def test_the_dataset_reads_images_and_palette_masks(voc_root, voc_task_module):
    ds = voc_task_module.VOCSegmentation(voc_root, "train")
    x, y = ds[0]
    assert len(ds) == 8 and x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert y.shape == (32, 32) and y.dtype == torch.int64 and 0.0 <= x.min() <= x.max() <= 1.0
    with Image.open(voc_root / "SegmentationClass" / f"{ds.ids[0]}.png") as mask:
        assert np.array_equal(y.numpy(), np.asarray(mask))
    with pytest.raises(FileNotFoundError, match="make_voc_folder.py --root"):
        voc_task_module.voc_root(voc_root.parent / "nowhere")


def test_augmentation_moves_image_and_mask_together(voc_task_module):
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 7, (6, 12, 12), generator=gen)
    x = y[:, None].float().repeat(1, 3, 1, 1)  # the image is its mask: they must stay equal
    xa, ya = voc_task_module.augment(x, y, torch.Generator().manual_seed(1), shift=3)
    assert xa.shape == x.shape and ya.shape == y.shape
    inside = ya != 255  # padding: void in the mask, replicated pixels in the image
    assert torch.equal(xa[:, 0][inside], ya[inside].float())
    assert not torch.equal(ya, y)  # something moved


def test_the_warmup_cosine_schedule(voc_task_module):
    f = voc_task_module.warmup_cosine
    assert [f(i, steps=20) for i in (0, 1)] == [0.5, 1.0]  # warm-up over 2 steps
    assert f(11, steps=20) == pytest.approx(0.5) and f(19, steps=20) == pytest.approx(
        0.5 * (1 + np.cos(np.pi * 17 / 18)))


def test_the_voc_task_checks_and_is_searched_through_its_own_loop(voc_root, tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSFORGE_VOC_ROOT", str(voc_root))
    spec = VOC / "task.py"
    assert "ready" in invoke("tasks", "--check", spec).stdout
    study = tmp_path / "voc.db"
    invoke("search", "--task", spec, "--budget", "4", "--generation-size", "4",
           "--proxy-steps", "3", "--no-lrp", "--study", study)
    s = load_study(study)
    try:
        assert s.explored == 4 and s.settings["task"] == "voc-shapes"
        assert s.meta("baseline")["status"] == "trained"
        trained = s.trained()
        assert trained and all(0.0 <= r.fitness <= 1.0 for r in trained)
        assert all(set(r.details["metrics"]) == {"miou", "bf1"} for r in trained)
    finally:
        s.close()


def test_the_own_loop_reports_and_returns_validation_metrics(voc_root, voc_task_module):
    task = voc_task_module.VOCShapes(root=str(voc_root))
    task.eval_every = 2
    seen = []
    out = task.fit(torch.nn.CrossEntropyLoss(ignore_index=255), steps=5, seed=0,
                   report=lambda step, metrics: seen.append((step, metrics)))
    assert [s for s, _ in seen] == [2, 4, 5] and seen[-1][1] == out
    again = task.fit(torch.nn.CrossEntropyLoss(ignore_index=255), steps=5, seed=0)
    assert again == out  # reproducible for a seed
    assert set(out) == {"miou", "bf1"} and 0.0 <= out["miou"] <= 1.0


# ---- (c) the found loss in the user's loop ------------------------------------------------------
def test_train_with_found_loss_compares_with_cross_entropy(voc_root, tmp_path):
    env = {**os.environ, "LOSSFORGE_VOC_ROOT": str(voc_root), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "found_loss.py"
    done = subprocess.run(
        [sys.executable, str(VOC / "train_with_found_loss.py"), "--formula",
         "-sum_c(y * square(1 - p) * log(p))", "--steps", "2", "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "class FoundLoss" in out.read_text()
    lines = done.stdout.splitlines()
    assert any(ln.startswith("found ") and "val miou" in ln for ln in lines), done.stdout
    assert any(ln.startswith("cross-entropy ") and "val miou" in ln for ln in lines), done.stdout
