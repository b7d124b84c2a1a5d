"""The zoo: every entry equals an independent formula written directly in torch (or torch's own
loss), Lovász-softmax on hand-worked cases and against a brute-force Lovász extension; a name means
the usual thing for the loss kind (``mse`` on regression is ``F.mse_loss``, on classification the
Brier score), and the regression entries equal torch's ``mse_loss``/``l1_loss``/``huber_loss``."""
from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F

from lossforge import zoo
from lossforge.expr import Expr, parse

EPS = 1e-6


def log(x):
    """The documented protected log of the op registry: log(|x| + 1e-6)."""
    return torch.log(x.abs() + EPS)


def exact_log(p):
    """``log`` of the softmax itself: exact, no guard (the rule of lossforge.expr.exact)."""
    return torch.log(p)


def div(a, b):
    """The documented protected division: a / (b + 1e-6)."""
    return a / (b + EPS)


EXPECTED = {"ce", "wce", "focal", "poly1", "mse", "brier", "dice", "baikal", "baikal-cma", "lovasz",
            "mae", "gce", "sce", "nce+rce", "logit-adjusted", "balanced-softmax", "cb-focal"}
REGRESSION = {"mse", "mae", "huber", "barron"}
BOX = {"iou", "giou", "l1"}  # box-regression entries: tests/test_slots.py
PRIOR_LOSSES = {"logit-adjusted", "balanced-softmax", "cb-focal"}  # read the class prior q
VARIABLES = {"classification": {"p", "y", "z", "q"}, "regression": {"f", "y"}, "box": {"i", "u", "e"}}


def data(seed: int, shape, ignore: bool):
    gen = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(shape, generator=gen, dtype=torch.float64)
    target = torch.randint(0, shape[1], (shape[0],) + tuple(shape[2:]), generator=gen)
    if ignore:
        target[torch.rand(target.shape, generator=gen) < 0.25] = 255
    return logits, target


CASES = [  # (N, C) classification; (N, C, H, W) segmentation with pixels labelled 255
    pytest.param((16, 5), False, id="classification"),
    pytest.param((3, 4, 5, 6), True, id="segmentation-ignore"),
    pytest.param((2, 3, 4, 4), False, id="segmentation"),
]


def flat(logits, target):
    """Non-ignored positions: probabilities (V, C), one-hot (V, C), labels (V,)."""
    c = logits.shape[1]
    p = torch.softmax(logits, 1).movedim(1, -1).reshape(-1, c)
    t = target.reshape(-1)
    keep = t != 255
    return p[keep], F.one_hot(t[keep], c).to(p.dtype), t[keep]


def value(name_or_expr, logits, target):
    if isinstance(name_or_expr, Expr):
        return name_or_expr.to_torch()(logits, target).item()
    return zoo.get(name_or_expr).module()(logits, target).item()


# ---- registry ----------------------------------------------------------------------------------
def test_registry():
    assert set(zoo.names()) == EXPECTED | REGRESSION | BOX
    assert len(zoo.names()) == len(set(zoo.names()))  # a name with two forms is listed once
    assert set(zoo.names("classification")) == EXPECTED and set(zoo.names("box")) == BOX
    assert set(zoo.names("regression")) == REGRESSION
    assert len(zoo.entries()) == len(EXPECTED) + len(REGRESSION) + len(BOX)  # mse: two forms
    for entry in zoo.entries():
        assert zoo.get(entry.name, entry.kind) is entry
        assert entry.kind in zoo.kinds(entry.name)
        assert entry.source and entry.doc
        assert isinstance(entry.module(), torch.nn.Module)
        if entry.expr is not None:
            assert entry.formula == str(entry.expr)
            assert parse(entry.formula) is entry.expr
            assert entry.expr.variables() <= VARIABLES[entry.kind]
        else:
            assert entry.formula is None and entry.factory is not None
    with pytest.raises(Exception):
        zoo.get("ce").name = "other"  # frozen


def test_a_name_means_the_usual_thing_for_its_kind():
    assert zoo.kinds("mse") == ("classification", "regression") and zoo.kinds("nope") == ()
    assert zoo.get("mse").kind == "classification"  # without a kind: the name's first form
    assert zoo.get("mse", "classification").formula == zoo.get("brier").formula == "sum_c(square(p - y))"
    assert zoo.get("mse", "regression").formula == "square(f - y)"
    assert zoo.get("mae", "regression").formula == "abs(f - y)"
    assert zoo.get("mae").kind == "regression"  # its first form; on probabilities: Ghosh et al.
    assert zoo.get("mae", "classification").formula == "sum_c(abs(p - y))"
    with pytest.raises(KeyError, match="'huber' is a regression loss, not a classification loss"):
        zoo.get("huber", "classification")
    with pytest.raises(KeyError) as info:
        zoo.get("ce", "regression")
    assert "regression losses: mse, mae, huber, barron" in str(info.value)


def test_known_formulas():
    assert zoo.get("ce").formula == "-sum_c(y * log(p))"
    assert zoo.get("focal").formula == "-sum_c(y * square(1 - p) * log(p))"
    assert zoo.get("baikal").formula == "-mean_c(log(p) - y / p)"
    assert zoo.get("baikal-cma").formula == "-mean_c(2.6904 * log(1.5352 * p) - 1.8158 * y / p)"
    assert zoo.get("dice").formula == (
        "1 - mean_c((2 * mean_bs(p * y) + 1) / (mean_bs(p) + mean_bs(y) + 1))")


def test_unknown_name():
    with pytest.raises(KeyError) as info:
        zoo.get("focl")
    message = str(info.value)
    assert "did you mean 'focal'" in message
    for name in zoo.names():
        assert name in message
    with pytest.raises(KeyError, match="known"):
        zoo.get("zzzzzz")


def test_importable_from_package():
    import lossforge

    assert lossforge.zoo is zoo


# ---- expression entries vs independent torch formulas ------------------------------------------
@pytest.mark.parametrize("shape, ignore", CASES)
def test_ce_matches_torch(shape, ignore):
    logits, target = data(1, shape, ignore)
    ref = F.cross_entropy(logits, target, ignore_index=255).item()
    assert value("ce", logits, target) == pytest.approx(ref, rel=1e-4)
    p, y, _ = flat(logits, target)
    assert value("ce", logits, target) == pytest.approx((-(y * exact_log(p)).sum(1)).mean().item(), rel=1e-9)


@pytest.mark.parametrize("shape, ignore", CASES)
def test_wce_matches_torch_weighted_cross_entropy(shape, ignore):
    logits, target = data(2, shape, ignore)
    _, _, labels = flat(logits, target)
    freq = torch.bincount(labels, minlength=shape[1]).double() / labels.numel()
    weight = torch.where(freq > 0, 1.0 / freq.clamp_min(1e-12), torch.zeros_like(freq))
    ref = F.cross_entropy(logits, target, weight=weight, ignore_index=255).item()
    assert value("wce", logits, target) == pytest.approx(ref, rel=1e-4)
    # with balanced classes it is plain cross-entropy
    balanced = torch.arange(shape[0]) % shape[1] if len(shape) == 2 else None
    if balanced is not None and shape[0] % shape[1] == 0:
        assert value("wce", logits, balanced) == pytest.approx(value("ce", logits, balanced), rel=1e-4)


@pytest.mark.parametrize("shape, ignore", CASES)
def test_focal_matches_direct_formula(shape, ignore):
    logits, target = data(3, shape, ignore)
    p, y, _ = flat(logits, target)
    pt = (p * y).sum(1)
    for gamma, expr in [(2.0, zoo.get("focal").expr), (2.0, zoo.focal(2)), (3.0, zoo.focal(3)),
                        (0.5, zoo.focal(0.5)), (1.7, zoo.focal(1.7))]:
        # integer gamma: (1 - p)^gamma exactly; otherwise through the protected log
        modulator = (1 - pt) ** gamma if gamma == int(gamma) else ((1 - pt).abs() + EPS) ** gamma
        ref = (-modulator * exact_log(pt)).mean().item()
        assert value(expr, logits, target) == pytest.approx(ref, rel=1e-9), gamma
        textbook = (-(1 - pt) ** gamma * torch.log(pt)).mean().item()
        assert value(expr, logits, target) == pytest.approx(textbook, rel=1e-3), gamma
    assert value(zoo.focal(0), logits, target) == pytest.approx(value("ce", logits, target), rel=1e-9)
    with pytest.raises(ValueError):
        zoo.focal(-1)


@pytest.mark.parametrize("shape, ignore", CASES)
def test_poly1_matches_direct_formula(shape, ignore):
    logits, target = data(4, shape, ignore)
    p, y, _ = flat(logits, target)
    pt = (p * y).sum(1)
    for eps, expr in [(1.0, zoo.get("poly1").expr), (2.5, zoo.poly1(2.5)), (-0.5, zoo.poly1(-0.5))]:
        ref = (-exact_log(pt) + eps * (1 - pt)).mean().item()
        assert value(expr, logits, target) == pytest.approx(ref, rel=1e-9), eps


@pytest.mark.parametrize("shape, ignore", CASES)
def test_mse_matches_direct_formula(shape, ignore):
    logits, target = data(5, shape, ignore)
    p, y, _ = flat(logits, target)
    ref = ((p - y) ** 2).sum(1).mean().item()
    assert value("mse", logits, target) == pytest.approx(ref, rel=1e-9)
    if not ignore:
        assert ref == pytest.approx(shape[1] * F.mse_loss(p, y).item(), rel=1e-9)


@pytest.mark.parametrize("shape, ignore", CASES)
def test_brier_is_classification_mse(shape, ignore):
    logits, target = data(5, shape, ignore)
    p, y, _ = flat(logits, target)
    assert value("brier", logits, target) == pytest.approx(((p - y) ** 2).sum(1).mean().item(), rel=1e-9)
    assert value("brier", logits, target) == value("mse", logits, target)


REGRESSION_SHAPES = [pytest.param((32,), id="N"), pytest.param((16, 3), id="N,D"),
                     pytest.param((4, 5, 6, 6), id="N,C,H,W")]
TORCH_LOSS = {"mse": F.mse_loss, "mae": F.l1_loss,
              "huber": lambda a, b: F.huber_loss(a, b, delta=1.0)}


@pytest.mark.parametrize("shape", REGRESSION_SHAPES)
@pytest.mark.parametrize("name", sorted(TORCH_LOSS))  # barron: tests/test_expert_losses.py
def test_regression_entries_match_torch(name, shape):
    """Value and gradient equal torch's loss (reduction 'mean') on random tensors whose residuals
    fall on both sides of Huber's delta = 1; the exported standalone module gives the same."""
    gen = torch.Generator().manual_seed(11)
    pred = (2.0 * torch.randn(shape, generator=gen, dtype=torch.float64)).requires_grad_(True)
    target = torch.randn(shape, generator=gen, dtype=torch.float64)
    residual = (pred - target).abs()
    assert (residual < 1).any() and (residual > 1).any()
    entry = zoo.get(name, "regression")
    ours = entry.module()(pred, target)
    (g_ours,) = torch.autograd.grad(ours, pred)
    ref = TORCH_LOSS[name](pred, target)
    (g_ref,) = torch.autograd.grad(ref, pred)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-12, abs=1e-15)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-12, atol=1e-15)
    namespace: dict = {}
    exec(entry.expr.to_source("Exported"), namespace)  # the export: plain torch, no lossforge
    assert namespace["Exported"]()(pred, target).item() == pytest.approx(ref.item(), rel=1e-12)


def test_huber_is_quadratic_inside_delta_and_linear_outside():
    huber = zoo.get("huber").module()
    r = torch.tensor([0.0, 0.5, -0.9, 1.0, 2.0, -3.5], dtype=torch.float64)
    per_element = [huber(v.reshape(1), torch.zeros(1, dtype=torch.float64)).item() for v in r]
    assert per_element == pytest.approx([0.0, 0.125, 0.405, 0.5, 1.5, 3.0], rel=1e-12)


@pytest.mark.parametrize("shape, ignore", CASES)
def test_dice_matches_direct_formula(shape, ignore):
    logits, target = data(6, shape, ignore)
    p, y, _ = flat(logits, target)
    per_class = div(2 * (p * y).mean(0) + 1, p.mean(0) + y.mean(0) + 1)
    ref = (1 - per_class.mean()).item()
    assert value("dice", logits, target) == pytest.approx(ref, rel=1e-9)
    # the textbook soft Dice with means and smoothing 1
    textbook = 1 - ((2 * (p * y).mean(0) + 1) / (p.mean(0) + y.mean(0) + 1)).mean().item()
    assert value("dice", logits, target) == pytest.approx(textbook, rel=1e-5)


@pytest.mark.parametrize("shape, ignore", CASES)
def test_baikal_matches_direct_formula(shape, ignore):
    logits, target = data(7, shape, ignore)
    p, y, _ = flat(logits, target)
    ref = (-(exact_log(p) - div(y, p)).mean(1)).mean().item()
    assert value("baikal", logits, target) == pytest.approx(ref, rel=1e-9)
    w0, w1, w2 = 2.6904, 1.5352, 1.8158
    # log(w1 * p) of the softmax is exact too: log p + ln w1 (lossforge.expr.exact)
    ref = (-(w0 * (exact_log(p) + math.log(w1)) - w2 * div(y, p)).mean(1)).mean().item()
    assert value("baikal-cma", logits, target) == pytest.approx(ref, rel=1e-9)
    # away from tiny probabilities the guards do not matter: the textbook formula
    mild = (logits / 4, target)
    p, y, _ = flat(*mild)
    textbook = (-(torch.log(p) - y / p).mean(1)).mean().item()
    assert value("baikal", *mild) == pytest.approx(textbook, rel=1e-4)


def test_baikal_optimum_is_underconfident():
    """FIELD.md: Baikal's optimum puts only p ~ 0.32 on the true class for 10 classes."""
    from lossforge.expr import interpret
    from lossforge.expr import kernels as K

    # by symmetry the optimum has equal wrong-class logits: scan the true-class logit
    a = torch.linspace(-2, 6, 8001, dtype=torch.float64)
    logits = torch.zeros(len(a), 10, dtype=torch.float64)
    logits[:, 0] = a
    env, mask = K.prepare_classification(logits, torch.zeros(len(a), dtype=torch.long))
    per_row = interpret.interpret(zoo.get("baikal").expr, env, mask)[:, 0]
    best = int(per_row.argmin())
    p_true = env["p"][best, 0].item()
    assert 0.3 < p_true < 0.34
    # cross-entropy, for contrast, keeps pushing p_true to 1
    per_row = interpret.interpret(zoo.get("ce").expr, env, mask)[:, 0]
    assert int(per_row.argmin()) == len(a) - 1


def _taylor_direct(theta, p, y):
    t0, t1, t2, t3, t4, t5, t6, t7 = theta
    dp, dy = p - t1, y - t0
    f = (t2 * dp + t3 * dp**2 + t4 * dp**3 + t5 * dy * dp + t6 * dy * dp**2 + t7 * dy**2 * dp)
    return (-f.sum(1)).mean().item()


@pytest.mark.parametrize("shape, ignore", CASES)
def test_taylorglo_matches_direct_formula(shape, ignore):
    logits, target = data(8, shape, ignore)
    p, y, _ = flat(logits, target)
    rng = random.Random(0)
    for _ in range(5):
        theta = [rng.uniform(-2, 2) for _ in range(8)]
        got = value(zoo.taylorglo(theta), logits, target)
        assert got == pytest.approx(_taylor_direct(theta, p, y), rel=1e-9, abs=1e-12)
        # not the re-implementation that swaps label and prediction
        assert abs(got - _taylor_direct(theta, y, p)) > 1e-6
    with pytest.raises(ValueError):
        zoo.taylorglo([1, 2, 3])
    with pytest.raises(ValueError):
        zoo.taylorglo([float("nan")] * 8)


def test_taylorglo_gradient_polynomial():
    """dL/dp per element is -(c1 + ch p + chh p^2 + chy y p + cy y + cyy y^2) / N, with the
    coefficients of the TaylorGLO invariant (c1 including its 3 θ4 θ1² term)."""
    from lossforge.expr import interpret
    from lossforge.expr import kernels as K

    theta = [0.3, -0.7, 1.1, 0.4, -0.9, 1.3, 0.6, -0.5]
    t0, t1, t2, t3, t4, t5, t6, t7 = theta
    c1 = -2 * t1 * t3 + 2 * t0 * t1 * t6 + t2 - t5 * t0 + t7 * t0**2 + 3 * t4 * t1**2
    ch, chh, chy = 2 * t3 - 2 * t6 * t0 - 6 * t4 * t1, 3 * t4, 2 * t6
    cy, cyy = -2 * t1 * t6 + t5 - 2 * t7 * t0, t7
    logits, target = data(9, (6, 4), False)
    env, mask = K.prepare_classification(logits, target)
    p = env["p"].detach().requires_grad_(True)
    y = env["y"]
    loss = interpret.loss_value(zoo.taylorglo(theta), {"p": p, "y": y, "z": env["z"]}, mask)
    (grad,) = torch.autograd.grad(loss, p)
    ref = -(c1 + ch * p + chh * p**2 + chy * y * p + cy * y + cyy * y**2) / p.shape[0]
    torch.testing.assert_close(grad, ref.detach(), rtol=1e-10, atol=1e-12)


def test_expression_entries_have_finite_gradients():
    logits, target = data(10, (2, 4, 5, 5), True)
    for name in zoo.names("classification"):
        x = logits.clone().requires_grad_(True)
        loss = zoo.get(name, "classification").module(**(
            {"prior": torch.tensor([0.4, 0.3, 0.2, 0.1])} if name in PRIOR_LOSSES else {}))(x, target)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(x.grad).all(), name


# ---- Lovász-softmax ----------------------------------------------------------------------------
def _brute_force_lovasz(probs, target, classes="present"):
    """Lovász extension of the Jaccard set function, from its integral definition on sets.

    For errors x >= 0, f(x) = ∫_0^max(x) F({i : x_i >= t}) dt with F(M) = |M| / |gt ∪ M|
    computed on Python sets: a sum over the distinct error values, independent of the sorting and
    cumulative-sum formulas of the implementation.
    """
    c = probs.shape[1]
    p = probs.movedim(1, -1).reshape(-1, c).tolist()
    t = target.reshape(-1).tolist()
    keep = [i for i, v in enumerate(t) if v != 255]
    if classes == "present":
        chosen = sorted({t[i] for i in keep})
    else:
        chosen = list(range(c)) if classes == "all" else list(classes)
    losses = []
    for k in chosen:
        gt = {i for i in keep if t[i] == k}
        err = {i: abs((1.0 if i in gt else 0.0) - p[i][k]) for i in keep}
        levels = sorted(set(err.values()), reverse=True) + [0.0]
        total = 0.0
        for hi, lo in zip(levels, levels[1:]):
            m = {i for i in keep if err[i] >= hi}
            total += (hi - lo) * len(m) / len(gt | m)
        losses.append(total)
    return sum(losses) / len(losses)


def test_lovasz_hand_case():
    # 3 pixels, 2 classes, target [0, 0, 1]; P(class 0) = [0.9, 0.4, 0.3].
    # class 0: errors [0.1, 0.6, 0.3] sorted 0.6(fg) 0.3(bg) 0.1(fg): Jaccard losses of the
    #   prefixes 1/2, 2/3, 1 -> increments 1/2, 1/6, 1/3 -> 0.6/2 + 0.3/6 + 0.1/3 = 23/60
    # class 1: errors [0.1, 0.6, 0.3] sorted 0.6(bg) 0.3(fg) 0.1(bg): prefixes 1/2, 1, 1
    #   -> increments 1/2, 1/2, 0 -> 0.3 + 0.15 = 27/60;   mean = 25/60 = 5/12
    probs = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7]], dtype=torch.float64)
    target = torch.tensor([0, 0, 1])
    loss = zoo.get("lovasz").module()(probs.log(), target)
    assert loss.item() == pytest.approx(5 / 12, rel=1e-12)
    assert zoo.lovasz_softmax(probs, target).item() == pytest.approx(5 / 12, rel=1e-12)


def test_lovasz_perfect_prediction_is_zero():
    target = torch.randint(0, 4, (2, 6, 6), generator=torch.Generator().manual_seed(0))
    logits = 30.0 * F.one_hot(target, 4).movedim(-1, 1).double()
    assert zoo.get("lovasz").module()(logits, target).item() == pytest.approx(0.0, abs=1e-10)
    # and the worst prediction (all mass on a wrong class) is 1
    wrong = 30.0 * F.one_hot((target + 1) % 4, 4).movedim(-1, 1).double()
    assert zoo.get("lovasz").module()(wrong, target).item() == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize("seed", range(6))
def test_lovasz_matches_brute_force(seed):
    shape = [(7, 3), (2, 3, 3, 4), (1, 5, 4, 4)][seed % 3]
    logits, target = data(20 + seed, shape, ignore=seed % 2 == 1)
    if seed == 4:  # ties among errors
        logits = torch.round(logits)
    probs = torch.softmax(logits, 1)
    for classes in ("present", "all"):
        got = zoo.LovaszSoftmax(classes=classes)(logits, target).item()
        assert got == pytest.approx(_brute_force_lovasz(probs, target, classes), rel=1e-10, abs=1e-12)


def test_lovasz_options_and_gradients():
    logits, target = data(30, (3, 4, 5, 5), True)
    module = zoo.get("lovasz").module()
    assert module.ignore_index == 255 and module.classes == "present"
    # ignored pixels do not matter, whatever their logits
    poisoned = logits.clone()
    poisoned[(target == 255).unsqueeze(1).expand_as(logits)] = 50.0
    assert module(poisoned, target).item() == pytest.approx(module(logits, target).item(), rel=1e-12)
    # (N, C, H, W) equals the flattened (N*H*W, C) classification case
    flat_logits = logits.movedim(1, -1).reshape(-1, 4)
    assert module(flat_logits, target.reshape(-1)).item() == pytest.approx(
        module(logits, target).item(), rel=1e-12)
    # per-image: mean of the per-image losses
    per_image = zoo.get("lovasz").module(per_image=True)(logits, target).item()
    ref = sum(module(logits[i:i + 1], target[i:i + 1]).item() for i in range(3)) / 3
    assert per_image == pytest.approx(ref, rel=1e-12)
    # explicit classes
    only = zoo.LovaszSoftmax(classes=[1, 3])(logits, target).item()
    assert only == pytest.approx(_brute_force_lovasz(torch.softmax(logits, 1), target, [1, 3]),
                                 rel=1e-10)
    # gradients are finite and reach only the non-ignored pixels
    x = logits.clone().requires_grad_(True)
    module(x, target).backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad[(target == 255).unsqueeze(1).expand_as(x)] == 0).all()
    # everything ignored: a zero that keeps the graph
    x = logits.clone().requires_grad_(True)
    loss = module(x, torch.full_like(target, 255))
    assert loss.item() == 0.0
    loss.backward()
    with pytest.raises(ValueError):
        module(logits, target[:, :2])
    with pytest.raises(ValueError):
        zoo.LovaszSoftmax(classes="some")(logits, target)


def test_lovasz_decreases_with_training():
    """A few SGD steps on free logits with Lovász-softmax raise the IoU of the argmax."""
    target = torch.randint(0, 3, (2, 8, 8), generator=torch.Generator().manual_seed(1))
    logits = torch.zeros(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    module = zoo.get("lovasz").module()
    opt = torch.optim.SGD([logits], lr=20.0)
    first = None
    for _ in range(30):
        opt.zero_grad()
        loss = module(logits, target)
        first = loss.item() if first is None else first
        loss.backward()
        opt.step()
    assert module(logits, target).item() < 0.5 * first
    assert (logits.argmax(1) == target).double().mean().item() > 0.9
