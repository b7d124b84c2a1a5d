"""Multi-slot (multi-branch) losses and the box loss kind (issue 8, part 3).

The multi-slot task below is written only here, as a user would: tiny "classify and localise one
box per image" data, an MLP with a class head and a box head, slots ``cls`` and ``box``.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import lossforge
from lossforge import zoo
from lossforge.data import DataSplits, Split
from lossforge.evaluation.funnel import FunnelConfig
from lossforge.evaluation.lrp import LRPConfig, mean_iou
from lossforge.evaluation.proxy import ProxyStageConfig
from lossforge.expr import kernels as K
from lossforge.expr import parse
from lossforge.expr.bundle import Bundle, parse_bundle
from lossforge.training.loss_spec import load_loss, load_source_file
from lossforge.study import LossSearch, load_study, resume
from lossforge.tasks import LossSlot, Metric, ProxyConfig, Task
from lossforge.training import train

SIZE = 12


def _make_split(n: int, gen: torch.Generator) -> Split:
    """Images with one bright rectangle; class 1 = wider than tall; target (class, x1, y1, x2, y2)."""
    x = 0.1 * torch.randn(n, 1, SIZE, SIZE, generator=gen)
    y = torch.zeros(n, 5)
    for k in range(n):
        w, h = (int(v) for v in torch.randint(2, 7, (2,), generator=gen))
        x1 = int(torch.randint(0, SIZE - w + 1, (1,), generator=gen))
        y1 = int(torch.randint(0, SIZE - h + 1, (1,), generator=gen))
        x[k, 0, y1:y1 + h, x1:x1 + w] += 1.0
        y[k] = torch.tensor([float(w > h), x1, y1, x1 + w, y1 + h])
    return Split(x, y)


def _acc(pred: np.ndarray, target: np.ndarray) -> float:
    return float((pred[:, :2].argmax(1) == target[:, 0]).mean())


def _miou(pred: np.ndarray, target: np.ndarray) -> float:
    return mean_iou(pred[:, 2:], target[:, 1:])


class Localise(Task):
    """Classify (wide vs tall) and localise one rectangle per image: slots ``cls`` and ``box``."""

    name = "test-localise"
    kind = "classification"
    num_classes = 2
    metrics = {"accuracy": Metric("accuracy", _acc), "miou": Metric("miou", _miou)}
    default_metric = "miou"
    proxy = ProxyConfig(steps=20, batch_size=32, lr=0.01)
    slots = (LossSlot("cls", "classification", "ce"), LossSlot("box", "box", "l1", weight=0.5))

    def data(self) -> DataSplits:
        gen = torch.Generator().manual_seed(0)
        return DataSplits(_make_split(160, gen), _make_split(64, gen), _make_split(64, gen), 2,
                          "localise")

    def make_model(self) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(SIZE * SIZE, 16), nn.ReLU(), nn.Linear(16, 6))

    def slot_inputs(self, outputs, target):
        return {"cls": (outputs[:, :2], target[:, 0].long()),
                "box": (outputs[:, 2:] * SIZE, target[:, 1:])}

    def predict(self, outputs):
        return torch.cat([outputs[:, :2], outputs[:, 2:] * SIZE], dim=1)


@pytest.fixture(scope="module")
def task():
    return Localise()


def tiny_funnel(steps: int = 3) -> FunnelConfig:
    return FunnelConfig(lrp=LRPConfig(samples=4, steps=30), proxy=ProxyStageConfig(steps=steps),
                        probe_samples=4)


# ---- the box kernel -----------------------------------------------------------------------------
BOXES = [  # pred, target, i, u, e (by hand)
    ([0, 0, 2, 2], [1, 1, 3, 3], 1.0, 7.0, 9.0),          # overlapping corners
    ([0, 0, 1, 1], [2, 2, 4, 4], 0.0, 5.0, 16.0),         # disjoint
    ([1, 1, 2, 2], [0, 0, 4, 4], 1.0, 16.0, 16.0),        # nested (pred inside)
    ([0, 0, 6, 3], [1, 1, 2, 2], 1.0, 18.0, 18.0),        # nested (target inside)
    ([3, 3, 1, 1], [0, 0, 2, 2], 0.0, 4.0, 4.0),          # inverted pred: area 0, e spans both
    ([0, 0, 2, 2], [0, 0, 2, 2], 4.0, 4.0, 4.0),          # identical
]


def test_prepare_box_matches_hand_computed_areas():
    pred = torch.tensor([b[0] for b in BOXES], dtype=torch.float64)
    target = torch.tensor([b[1] for b in BOXES], dtype=torch.float64)
    env, mask = K.prepare_box(pred, target)
    assert mask is None
    for name, col in (("i", 2), ("u", 3), ("e", 4)):
        assert env[name].shape == (len(BOXES), 1)
        torch.testing.assert_close(env[name][:, 0], torch.tensor([b[col] for b in BOXES],
                                                                 dtype=torch.float64))
    with pytest.raises(ValueError, match="boxes"):
        K.prepare_box(pred[:, :3], target[:, :3])


def _hand_iou(p, t):
    iw = max(0.0, min(p[2], t[2]) - max(p[0], t[0]))
    ih = max(0.0, min(p[3], t[3]) - max(p[1], t[1]))
    area = lambda b: max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    inter = iw * ih
    union = area(p) + area(t) - inter
    enc = (max(p[2], t[2]) - min(p[0], t[0])) * (max(p[3], t[3]) - min(p[1], t[1]))
    return inter / union, inter / union - (enc - union) / enc


def test_iou_giou_zoo_values_and_gradients():
    assert zoo.names("box") == ["iou", "giou", "l1"]
    assert zoo.get("giou").formula == "1 - i / u + (e - u) / e"
    assert "1902.09630" in zoo.get("giou").source and "UnitBox" in zoo.get("iou").source
    pred = torch.tensor([b[0] for b in BOXES], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([b[1] for b in BOXES], dtype=torch.float64)
    hand = [_hand_iou(b[0], b[1]) for b in BOXES]
    iou = zoo.get("iou").module()(pred, target)
    giou = zoo.get("giou").module()(pred, target)
    assert iou.item() == pytest.approx(np.mean([1 - h[0] for h in hand]), abs=1e-5)
    assert giou.item() == pytest.approx(np.mean([1 - h[1] for h in hand]), abs=1e-5)
    for loss in (iou, giou, zoo.get("l1").module()(pred, target)):
        (g,) = torch.autograd.grad(loss, pred)
        assert torch.isfinite(g).all()
    l1 = zoo.get("l1").module()(pred, target)
    assert l1.item() == pytest.approx((pred - target).abs().mean().item())
    empty = torch.zeros(0, 4, requires_grad=True)
    for name in ("iou", "giou", "l1"):
        v = zoo.get(name).module()(empty, torch.zeros(0, 4))
        v.backward()
        assert v.item() == 0.0 and empty.grad is not None


def test_box_expr_exports(tmp_path):
    e = parse("1 - i / u + (e - u) / e")
    assert e.to_torch().__class__.__name__ == "BoxExprLoss"
    path = tmp_path / "giou.py"
    path.write_text(e.to_source(name="GIoU", kind="box"))
    module = load_source_file(path)
    pred, target = torch.rand(5, 4) * 4, torch.rand(5, 4) * 4 + 1
    pred[:, 2:] += pred[:, :2]
    target[:, 2:] += target[:, :2]
    assert module(pred, target).item() == pytest.approx(e.to_torch()(pred, target).item(), abs=1e-7)
    assert module(torch.zeros(0, 4), torch.zeros(0, 4)).item() == 0.0


# ---- Task slot API ---------------------------------------------------------------------------
def test_slot_api(task):
    assert [s.name for s in task.loss_slots()] == ["cls", "box"]
    assert task.slot("box").variables == frozenset({"i", "u", "e"})
    with pytest.raises(KeyError, match="cls, box"):
        task.slot("mask")
    blobs = lossforge.tasks.get("digits")
    assert blobs.loss_slots() == (LossSlot("loss", "classification", blobs.baseline),)
    assert set(blobs.slot_inputs(torch.zeros(2, 10), torch.zeros(2))) == {"loss"}
    boxes = task.slot_probe_targets("box", 5, 0)
    assert boxes.shape == (5, 4) and bool((boxes[:, 2:] > boxes[:, :2]).all())


def test_load_loss_is_slot_aware(task):
    assert load_loss("giou", task, slot="box").expr is zoo.get("giou").expr
    with pytest.raises(ValueError, match="box loss"):
        load_loss("l1", task, slot="cls")
    with pytest.raises(ValueError, match="does not provide"):
        load_loss("-sum_c(y * log(p))", task, slot="box")
    assert load_loss({"box": "giou"}, task).name == "cls=ce; box=giou"
    assert load_loss("giou", task).name == "cls=ce; box=giou"  # the only box slot
    assert load_loss("cls=focal; box=iou", task).name == "cls=focal; box=iou"
    with pytest.raises(ValueError, match="no loss slot"):
        load_loss({"mask": "ce"}, task)


# ---- training and evaluation -----------------------------------------------------------------
def test_train_with_dict_losses(task):
    r = train(task, {"cls": "focal", "box": "giou"}, steps=15, seed=0)
    assert r.status == "ok" and r.loss == "cls=focal; box=giou"
    assert set(r.val) == {"accuracy", "miou"} and 0.0 <= r.val["miou"] <= 1.0
    again = train(task, "cls=focal; box=giou", steps=15, seed=0)
    assert again.val == r.val
    d = train(task, {}, steps=5)  # every slot at its default
    assert d.loss == "cls=ce; box=l1"


def test_evaluate_multi_slot(task):
    from lossforge.comparison import evaluate

    result = evaluate(task, ["box=giou", "cls=focal; box=iou"], seeds=1, steps=5)
    assert [r.loss for r in result.rows] == ["ce", "box=giou", "cls=focal; box=iou"]
    assert all(r.invalid == 0 and set(r.mean) == {"accuracy", "miou"} for r in result.rows)


def test_cli_evaluate_search_export_multi_slot(task, tmp_path):
    import json

    from typer.testing import CliRunner

    from lossforge import cli

    lossforge.tasks.register(task.name, Localise)
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(cli.app, [str(a) for a in args], prog_name="lossforge")

    help_text = " ".join(invoke("evaluate", "--help").output.split())
    assert "box=giou" in help_text
    r = invoke("evaluate", "--task", task.name, "--loss", "box=giou", "--seeds", "1", "--steps",
               "3", "--format", "json")
    assert r.exit_code == 0, r.output
    assert [row["loss"] for row in json.loads(r.stdout)["rows"]] == ["ce", "box=giou"]
    study = tmp_path / "cli.db"
    r = invoke("search", "--task", task.name, "--study", study, "--budget", "4", "--strategy",
               "random", "--generation-size", "4", "--proxy-steps", "2", "--no-lrp")
    assert r.exit_code != 0 and "--slot" in r.stderr
    r = invoke("search", "--task", task.name, "--study", study, "--budget", "4", "--strategy",
               "random", "--generation-size", "4", "--proxy-steps", "2", "--no-lrp",
               "--slot", "box", "--fixed", "cls=focal", "--format", "json")
    assert r.exit_code == 0, r.output
    show = json.loads(invoke("show", study, "--format", "json").stdout)
    assert show["slot"] == "box" and show["fixed"] == {"cls": "focal"}
    assert show["hall_of_fame"]
    if True:
        out = tmp_path / "box_loss.py"
        assert invoke("export", study, "-o", out, "--name", "BoxLoss").exit_code == 0
        module = load_source_file(out)
        expr = parse(show["hall_of_fame"][0]["formula"])
        pred = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
        target = torch.tensor([[1.0, 1.0, 3.0, 3.0]])
        assert module(pred, target).item() == pytest.approx(
            expr.to_torch(kind="box")(pred, target).item(), rel=1e-6, abs=1e-7)
    joint = tmp_path / "joint.db"
    r = invoke("search", "--task", task.name, "--study", joint, "--budget", "3", "--strategy",
               "random", "--generation-size", "3", "--proxy-steps", "2", "--no-lrp", "--joint")
    assert r.exit_code == 0, r.output
    r = invoke("search", "--task", task.name, "--study", joint, "--budget", "3", "--slot", "box",
               "--proxy-steps", "2", "--no-lrp")
    assert r.exit_code != 0 and "settings" in r.stderr  # a joint study resumes only as joint
    assert json.loads(invoke("show", joint, "--format", "json").stdout)["hall_of_fame"]
    if True:
        assert invoke("export", joint, "-o", tmp_path / "j.py").exit_code == 0
        assert load_source_file(tmp_path / "j_box.py") is not None
        assert load_source_file(tmp_path / "j_cls.py") is not None


# ---- search --------------------------------------------------------------------------------------
def test_search_needs_a_slot_for_multi_slot_tasks(task, tmp_path):
    with pytest.raises(ValueError, match="slot="):
        LossSearch(task=task, storage=tmp_path / "a.db", budget=2)
    with pytest.raises(ValueError, match="autoloss-zero and random"):
        LossSearch(task=task, storage=tmp_path / "b.db", budget=2, joint=True, strategy="glo")
    with pytest.raises(ValueError, match="box loss"):
        LossSearch(task=task, storage=tmp_path / "c.db", budget=2, slot="box", fixed={"cls": "l1"})


def test_search_box_slot_resume_and_export(task, tmp_path):
    path = tmp_path / "box.db"
    seen = []

    class Stop(Exception):
        pass

    def stop_after_three(state):
        seen.append(state)
        if len(seen) == 3:
            raise Stop

    funnel = FunnelConfig(use_lrp=False, proxy=ProxyStageConfig(steps=3), probe_samples=4)
    search = LossSearch(task=task, storage=path, budget=8, slot="box", fixed={"cls": "focal"},
                        strategy="random", funnel=funnel,
                        strategy_options={"batch_size": 4}, progress=stop_after_three)
    with pytest.raises(Stop):
        search.run()
    partial = load_study(path)
    assert 1 <= partial.explored < 8
    assert partial.settings["slot"] == "box" and partial.settings["fixed"] == {"cls": "focal"}
    partial.close()
    study = resume(path, task=task)
    assert study.explored == 8
    rows = study.candidates
    assert len({(r.generation, r.position) for r in rows}) == 8
    for r in rows:
        assert parse(r.formula).variables() <= {"i", "u", "e"}
    with pytest.raises(Exception, match="slot"):
        LossSearch(task=task, storage=path, budget=8, slot="cls", strategy="random",
                   funnel=funnel).run()
    best = study.best
    assert best is not None and study.hall_of_fame[0].formula == best.formula
    if best is not None:  # export the found box loss; standalone file == to_torch
        expr = study.parse_candidate(best.formula)
        out = tmp_path / "found.py"
        out.write_text(expr.to_source(name="FoundBox", kind="box"))
        module = load_source_file(out)
        pred = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 4.0, 3.0]])
        target = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 4.0, 4.0]])
        ref = expr.to_torch(kind="box")(pred, target)
        assert module(pred, target).item() == pytest.approx(ref.item(), rel=1e-6, abs=1e-7)


def test_box_funnel_screens_with_iou_lrp(task):
    from lossforge.evaluation.batched import lrp_scores
    from lossforge.evaluation.funnel import Funnel

    cfg = FunnelConfig(lrp=LRPConfig(samples=4, steps=60), proxy=ProxyStageConfig(steps=3),
                       probe_samples=4)
    funnel = Funnel(task, "miou", cfg, slot="box", fixed={"cls": "focal"})
    assert funnel.lrp.config.threshold == pytest.approx(0.3)  # BOX_THRESHOLD_SCALE * 0.6
    scores = funnel.calibrate()
    assert set(scores) == {"1 - i / u", "1 - i / u + (e - u) / e"}
    assert all(v >= funnel.lrp.config.threshold for v in scores.values())
    exprs = [zoo.get("giou").expr, parse("u"), parse("exp(u)"), parse("u * e")]
    batched = lrp_scores(exprs, funnel.lrp.probe, funnel.lrp.metric, funnel.lrp.config,
                         funnel.lrp.init)
    assert [s for _, s in batched] == [funnel.lrp.score(e) for e in exprs]  # stacked == reference
    cands = funnel.run(exprs)
    assert [c.status for c in cands][:2] == ["trained", "rejected-lrp"]
    assert cands[2].status in ("rejected-checks", "rejected-lrp")
    assert cands[0].fitness is not None and 0.0 <= cands[0].metrics["miou"] <= 1.0


def test_joint_search(task, tmp_path):
    path = tmp_path / "joint.db"
    study = LossSearch(task=task, storage=path, budget=6, joint=True, strategy="autoloss-zero",
                       funnel=tiny_funnel(2), strategy_options={"population_size": 2,
                                                                "batch_size": 3}).run()
    assert study.explored == 6 and study.slot == "joint"
    assert set(study.store.meta("calibration")["slots"]) == {"cls", "box"}
    rejected = [r for r in study.candidates if r.status.startswith("rejected")]
    assert all(r.details["reason"].split(":")[0] in ("cls", "box") for r in rejected)
    for r in study.candidates:
        b = parse_bundle(r.formula)
        assert b.slots == ("cls", "box") and r.size == b.size()
    study.close()
    again = resume(path, task=task, budget=9)
    assert again.explored == 9
    # the joint funnel trains every part of a bundle together; any failing part rejects it
    from lossforge.evaluation.joint import JointFunnel

    funnel = JointFunnel(task, "miou", FunnelConfig(use_lrp=False, probe_samples=4,
                                                    proxy=ProxyStageConfig(steps=3)))
    good = Bundle({"cls": zoo.get("focal").expr, "box": zoo.get("giou").expr})
    same = Bundle({"cls": zoo.get("focal").expr, "box": parse("1 - i / u + (e - u) / e + 0")})
    bad = Bundle({"cls": zoo.get("ce").expr, "box": parse("exp(exp(u))")})
    cands = funnel.run([good, bad, same])
    assert cands[0].status == "trained" and cands[0].metrics
    assert cands[1].status == "rejected-checks" and cands[1].reason.startswith("box:")
    assert cands[2].status == "gec-hit" and cands[2].fitness == cands[0].fitness


def test_bundle_text_round_trip():
    b = Bundle({"cls": parse("-sum_c(y * log(p))"), "box": parse("1 - i / u")})
    assert str(b) == "cls: -sum_c(y * log(p)) | box: 1 - i / u"
    assert parse_bundle(str(b)) == b and hash(parse_bundle(str(b))) == hash(b)
    assert b.size() == b["cls"].size() + b["box"].size()
    assert b.replace_part("box", parse("u - i"))["box"] == parse("u - i")
    with pytest.raises(ValueError):
        parse_bundle("-sum_c(y * log(p))")
    with pytest.raises(AttributeError):
        b.x = 1


def test_report_of_box_and_joint_studies(task, tmp_path):
    from lossforge.report import probe_curve, write_report

    xs, values, grads = probe_curve(parse("1 - i / u + (e - u) / e"), 2)
    assert all(math.isfinite(v) for v in values) and values[len(xs) // 2] == pytest.approx(0, abs=1e-6)
    for name, kw in (("box", {"slot": "box"}), ("joint", {"joint": True})):
        path = tmp_path / f"{name}.db"
        LossSearch(task=task, storage=path, budget=3, strategy="random", funnel=FunnelConfig(
            use_lrp=False, proxy=ProxyStageConfig(steps=2), probe_samples=4),
            strategy_options={"batch_size": 3}, **kw).run().close()
        index = write_report(path, tmp_path / f"report_{name}", top=2)
        assert index.exists()


def test_slot_probe_targets_default_error():
    class NoBoxes(Localise):
        def slot_inputs(self, outputs, target):
            inputs = super().slot_inputs(outputs, target)
            return {**inputs, "box": (inputs["box"][0][:0], inputs["box"][1][:0])}

    with pytest.raises(ValueError, match="slot_probe_targets"):
        NoBoxes().slot_probe_targets("box", 4, 0)
    r = train(NoBoxes(), {"box": "giou"}, steps=3)  # M = 0 boxes: the box loss is a plain 0
    assert r.status == "ok"
