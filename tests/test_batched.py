"""Population-vectorised screening (``evaluation.batched``) against the per-candidate reference.

The stages' ``__call__`` is the reference; ``batched.run_stage`` must take the same decisions, set
the same candidate fields and count the same stats. Values and gradients are compared directly on
random and deliberately nasty expressions (overflow, poles, constant sub-trees, aggregations over
segmentation probes with ignored pixels).
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from lossforge import metrics as M
from lossforge.evaluation import batched
from lossforge.evaluation.batched.vjp import BACKWARD, FORWARD
from lossforge.evaluation.candidate import PENDING, Candidate
from lossforge.evaluation.checks import Checks, ChecksConfig, numeric_reason
from lossforge.evaluation.gec import GradientEquivalence
from lossforge.evaluation.lrp import LossRejection, LRPConfig, lrp_score
from lossforge.evaluation.probes import Probe, synthetic_probe
from lossforge.expr import apply, ops, parse, spaces, var, variation
from lossforge.expr.interpret import loss_value
from lossforge.tasks import Metric

# the reference's checks convert a tensor that requires grad to a float (harmless)
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")

NASTY = [
    "exp(exp(exp(p * 40))) * y",            # overflows on the way
    "y * exp(inv(p - p))",                  # inv(0) = 1e6, exp overflows
    "inv(p + -0.000001) * y",               # the unguarded pole of inv at -EPS (not hit here)
    "y * inv(p * 0 + -0.000001)",           # exactly on the pole: inf
    "sum_c(2) * p * y + exp(3) * mean_bs(1)",   # constant-only sub-trees
    "p * y * 0",                            # zero gradient
    "p + mean_c(y)",                        # label only through a constant-per-sample term
    "square(p - y)",
    "-sum_c(y * log(p))",
    "mean_s(y * p) / (mean_s(y + p) + 0.001)",
    "mean_bs(p * y) * inv(mean_bs(p + y))",
    "mean_b(p * y) + mean_s(sum_c(p)) * y",
    "sign(p - 0.1) * y",
    "max(p, y) - min(p * 2, y)",
    "aq(p, y) + sqrt(p * y) + log10(p + y)",
    "slog(p - y) * ssqrt(p * y)",
    "tanh(z) * y + sigmoid(z) * softplus(z - y)",
    "i0e(p) * y + i1(p * y) + dtanh(p) * erf(y - p)",
    "relu(p - 0.1) * y + negrelu(z) * y",
    "y * y",                                # no prediction: rejected by structure
]


def _accuracy():
    return Metric("accuracy", M.accuracy)


def _miou(num_classes):
    return Metric("miou", lambda p, t: M.miou(p, t, num_classes))


def _exprs(n, seed=0, space="autoloss-zero"):
    sp = spaces.get(space, variables=["p", "y"])
    rng = np.random.default_rng(seed)
    return [variation.random_expr(sp, rng) for _ in range(n)]


def _seg_probe(samples=2, classes=4, size=6, seed=3):
    probe = synthetic_probe("classification", samples, classes, seed=seed, spatial=(size, size))
    probe.target[0, :2, :] = 255          # ignored pixels
    probe.target[-1, :, :1] = 255
    return probe


def _pair(exprs):
    return [Candidate(e) for e in exprs], [Candidate(e) for e in exprs]


def _fields(c):
    return (c.status, c.reason, c.fingerprint, str(c.expr), c.same_as)


# ---- values and gradients ---------------------------------------------------------------------
def _reference(expr, probe, pred):
    x = pred.clone().requires_grad_(True)
    env, mask = probe.variables(x)
    value = loss_value(expr, env, mask)
    (grad,) = torch.autograd.grad(value, x, allow_unused=True)
    return value.detach(), grad


def _op_exprs():
    """Every non-aggregation op on prediction-dependent arguments (and one constant one)."""
    out = []
    for name in ops.names(arity=1):
        out.append(parse(f"{name}(p * 3 - y) * (y + 0.5)"))
        out.append(parse(f"{name}(z) + y"))
    for name in ops.names(arity=2):
        out.append(parse(f"{name}(p * 2 - y, z) * y"))
        out.append(parse(f"{name}(y, p) + {name}(p, p)"))
        out.append(parse(f"{name}(0.5, p) * y"))
    for name in ops.AGGREGATIONS:
        out.append(parse(f"{name}(p * y) * {name}(exp(z)) + y"))
        out.append(parse(f"{name}(sum_c(p) * y) + {name}(mean_bs(p)) * y"))
    return out


def test_hand_written_derivatives_are_autograd_bit_for_bit():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3000, generator=gen) * 3
    x[:6] = torch.tensor([0.0, -1e-6, 1e-6, -0.0, 1e-7, 2.0])
    y = torch.randn(3000, generator=gen)
    y[5] = 2.0                                # a tie for max/min
    g = torch.randn(3000, generator=gen)
    for name, bw in BACKWARD.items():
        spec = ops.OPS[name]
        args = [x, y][:spec.arity]
        xs = [a.clone().requires_grad_() for a in args]
        want = torch.autograd.grad(spec.torch_fn(*xs), xs, g)
        out = torch.empty(3000)
        ref = spec.torch_fn(*args)
        if name in FORWARD:
            saved = FORWARD[name](args, out)
        else:
            out.copy_(ref)
            saved = None
        assert torch.equal(out.nan_to_num(0.0), ref.nan_to_num(0.0)), name
        for direct in (True, False):
            dest = [torch.empty(3000) for _ in args]
            bw(g, args, out, saved, dest, [direct] * len(args))
            for d, w in zip(dest, want):
                assert torch.equal(d.nan_to_num(0.0), w.nan_to_num(0.0)), name


@pytest.mark.parametrize("materialize", [True, False])
@pytest.mark.parametrize("seg", [False, True])
def test_values_and_gradients_match_autograd(materialize, seg):
    exprs = list(dict.fromkeys(_op_exprs() + _exprs(40, seed=1)))
    probe = _seg_probe() if seg else synthetic_probe("classification", 4, 5, seed=2)
    pred = torch.randn(probe.pred_shape, generator=torch.Generator().manual_seed(5))
    prog = batched.Program(exprs, probe, materialize=materialize)
    values, grads = prog.run(pred.unsqueeze(0).expand(len(exprs), *pred.shape).contiguous())
    for i, e in enumerate(exprs):
        v, g = _reference(e, probe, pred)
        assert torch.allclose(values[i], v, rtol=1e-5, atol=1e-6, equal_nan=True), str(e)
        scale = 1e-4 * (1 + float(g.abs().max()))
        assert torch.allclose(grads[i], g, rtol=1e-4, atol=scale, equal_nan=True), str(e)


def test_regression_probe():
    probe = synthetic_probe("regression", 6, None, seed=4)
    exprs = [parse(t) for t in ["square(f - y)", "abs(f - y) + mean_b(f) * y",
                                "log(1 + square(f - y))", "mean_c(f * y) - sum_c(y * exp(f))"]]
    pred = torch.randn(probe.pred_shape, generator=torch.Generator().manual_seed(1))
    prog = batched.Program(exprs, probe)
    values, grads = prog.run(pred.unsqueeze(0).expand(len(exprs), *pred.shape).contiguous())
    for i, e in enumerate(exprs):
        v, g = _reference(e, probe, pred)
        assert torch.allclose(values[i], v, rtol=1e-5, atol=1e-6)
        assert torch.allclose(grads[i], g, rtol=1e-4, atol=1e-6)


def test_unsupported_expressions():
    probe = synthetic_probe("classification", 3, 4, seed=0)
    assert not batched.supported(parse("y * y"), probe)
    assert not batched.supported(parse("f * y"), probe)
    assert batched.supported(parse("z * y"), probe)
    with pytest.raises(batched.UnsupportedExprError):
        batched.Program([parse("y * 2")], probe)


# ---- stages ----------------------------------------------------------------------------------
def _population(losses_only=False):
    exprs = [parse(t) for t in NASTY] + _exprs(45, seed=7)
    exprs = exprs + exprs[:3]  # duplicates
    if losses_only:  # what reaches GEC and LRP: reads the label and the prediction
        exprs = [e for e in exprs if "y" in e.variables() and e.variables() & {"p", "z"}]
    return exprs


@pytest.mark.parametrize("seg", [False, True])
@pytest.mark.parametrize("integrity", [False, True])
def test_checks_stage_matches_reference(seg, integrity):
    probe = _seg_probe() if seg else synthetic_probe("classification", 6, 5, seed=1)
    cfg = ChecksConfig(integrity=integrity, integrity_points=200)
    ref_stage, bat_stage = Checks(probe, cfg), Checks(probe, cfg)
    ref, bat = _pair(_population())
    done = Candidate(parse("p * y"), status="rejected-lrp")
    ref_stage(ref + [done])
    batched.run_stage(bat_stage, bat + [done])
    assert [_fields(c) for c in ref] == [_fields(c) for c in bat]
    assert (ref_stage.stats.n_in, ref_stage.stats.n_out) == (bat_stage.stats.n_in,
                                                               bat_stage.stats.n_out)
    assert bat_stage.stats.seconds > 0
    assert 0 < ref_stage.stats.n_out < ref_stage.stats.n_in


@pytest.mark.parametrize("seg", [False, True])
def test_losses_constant_in_exact_arithmetic_have_a_zero_gradient_on_every_machine(seg):
    """sum_c(p) = 1: these losses' float32 gradients are rounding noise (~1e-9, above the 1e-12
    threshold), whose last bits (and so the old float32 label test) depended on the CPU; both
    paths judge them in float64 and reject them, and keep a loss that reads the prediction."""
    probe = _seg_probe() if seg else synthetic_probe("classification", 6, 5, seed=1)
    stage = Checks(probe)
    constant = ["y - p", "-p + mean_s(y)", "p + y", "sum_c(p) * y", "y * mean_b(y) + p"]
    exprs = [parse(t) for t in constant + ["y * log(p)"]]
    for e in exprs[:-1]:
        _, grad = probe.loss_and_grad(e, stage.pred)
        assert 1e-12 < float(grad.abs().max()) < 1e-6, str(e)  # noise, not an exact zero
    zero = "zero gradient with respect to the prediction"
    want = [zero] * len(constant) + [""]
    assert [numeric_reason(e, probe, stage.pred, stage.alt) for e in exprs] == want
    assert batched.checks_reasons(exprs, probe, stage.pred, stage.alt) == want


def test_checks_reference_errors_are_kept():
    probe = synthetic_probe("classification", 3, 4, seed=0)
    with pytest.raises(ValueError):
        Checks(probe)([Candidate(parse("f * y"))])
    with pytest.raises(ValueError):
        batched.run_stage(Checks(probe), [Candidate(parse("f * y"))])


@pytest.mark.parametrize("seg", [False, True])
def test_gec_stage_matches_reference(seg):
    probe = _seg_probe() if seg else synthetic_probe("classification", 8, 5, seed=1)
    exprs = _population(losses_only=True)
    exprs += [parse("2 * square(p - y)"), parse("square(p - y) * 2"), parse("square(y - p)")]
    ref_stage, bat_stage = GradientEquivalence(probe), GradientEquivalence(probe)
    ref, bat = _pair(exprs)
    ref_stage(ref)
    batched.run_stage(bat_stage, bat, chunk=16)
    same = sum(_fields(a) == _fields(b) for a, b in zip(ref, bat))
    assert same >= len(ref) - 1   # a 2-digit rounding boundary may differ, nothing else
    assert ref_stage.stats.n_in == bat_stage.stats.n_in
    assert abs(ref_stage.stats.n_out - bat_stage.stats.n_out) <= 1
    assert sum(c.status == "gec-hit" for c in bat) >= 3


def _lrp_pair(probe, metric, cfg, exprs, chunk=None):
    ref_stage, bat_stage = LossRejection(probe, metric, cfg), LossRejection(probe, metric, cfg)
    ref, bat = _pair(exprs)
    ref_stage(ref)
    batched.run_stage(bat_stage, bat, chunk=chunk)
    return ref_stage, bat_stage, ref, bat


def _agree(ref, bat, tol=1e-4):
    decisions = sum(a.status == b.status for a, b in zip(ref, bat)) / len(ref)
    close = 0
    for a, b in zip(ref, bat):
        if a.lrp_score is None or b.lrp_score is None:
            close += a.lrp_score is b.lrp_score
        else:
            close += abs(a.lrp_score - b.lrp_score) <= tol
    return decisions, close / len(ref)


def test_lrp_classification_matches_reference():
    probe = synthetic_probe("classification", 5, 10, seed=11)
    cfg = LRPConfig(steps=40, lr=0.05, threshold=0.2)
    exprs = _population(losses_only=True)
    ref_stage, bat_stage, ref, bat = _lrp_pair(probe, _accuracy(), cfg, exprs, chunk=20)
    decisions, close = _agree(ref, bat)
    assert decisions >= 0.97 and close >= 0.95
    assert ref_stage.stats.n_in == bat_stage.stats.n_in == len(exprs)
    assert abs(ref_stage.stats.n_out - bat_stage.stats.n_out) <= 1
    assert any(c.lrp_score is None for c in bat)            # some blew up ...
    assert sum(c.status == PENDING for c in bat) >= 3       # ... and some passed


def test_lrp_segmentation_with_ignored_pixels():
    probe = _seg_probe(samples=2, classes=4, size=8)
    cfg = LRPConfig(steps=25, lr=0.1, threshold=0.05)
    exprs = _population(losses_only=True)
    _, _, ref, bat = _lrp_pair(probe, _miou(4), cfg, exprs)
    decisions, close = _agree(ref, bat)
    assert decisions >= 0.97 and close >= 0.95


def test_lrp_adam_and_no_momentum():
    probe = synthetic_probe("classification", 4, 6, seed=2)
    exprs = [parse(t) for t in ["-sum_c(y * log(p))", "square(p - y)", "exp(p * 30) * y",
                                "mean_bs(p * y) * inv(mean_bs(p + y)) * -1"]]
    metric = _accuracy()
    for cfg in (LRPConfig(steps=40, lr=0.05, optimizer="adam"),
                LRPConfig(steps=40, lr=0.5, momentum=0.0)):
        stage = LossRejection(probe, metric, cfg)
        got = batched.lrp_scores(exprs, probe, metric, cfg, stage.init)
        for e, (ok, score) in zip(exprs, got):
            want = lrp_score(e, probe, metric, cfg, stage.init)
            assert ok
            assert (score is None) == (want is None)
            if want is not None:
                assert score == pytest.approx(want, abs=1e-6)


def test_non_finite_candidate_does_not_poison_the_others():
    probe = synthetic_probe("classification", 5, 10, seed=3)
    cfg = LRPConfig(steps=50, lr=0.05)
    metric = _accuracy()
    init = LossRejection(probe, metric, cfg).init
    good = [parse("-sum_c(y * log(p))"), parse("square(p - y)"), parse("mean_c(abs(p - y))")]
    # blows up at step 0 (pole of inv), later (exp overflow), or produces NaN gradients only
    bad = [parse("y * inv(p * 0 + -0.000001)"), parse("-exp(exp(z * 2) * 3) * y"),
           parse("y * sqrt(p - p) * 0 + p * y")]
    alone = batched.lrp_scores(good, probe, metric, cfg, init)
    mixed = batched.lrp_scores(bad[:1] + good[:2] + bad[1:] + good[2:], probe, metric, cfg, init)
    assert mixed[0] == (True, None)
    assert [mixed[1], mixed[2], mixed[5]] == alone
    for e, (ok, score) in zip(bad[:2], [mixed[0], mixed[3]]):
        assert lrp_score(e, probe, metric, cfg, init) is None and score is None


def test_chunking_and_duplicates_do_not_change_results():
    probe = synthetic_probe("classification", 5, 10, seed=4)
    cfg = LRPConfig(steps=20, lr=0.05)
    metric = _accuracy()
    exprs = _exprs(30, seed=9)
    exprs = exprs + exprs[::3]
    init = LossRejection(probe, metric, cfg).init
    whole = batched.lrp_scores(exprs, probe, metric, cfg, init)
    parts = batched.lrp_scores(exprs, probe, metric, cfg, init, chunk=7)
    assert whole == parts
    assert batched.chunk_size(exprs, probe) >= 1
    big = Probe("classification", torch.zeros(64, 64, 64, dtype=torch.long), (64, 19, 64, 64), 19)
    assert batched.chunk_size(exprs, big) < batched.chunk_size(exprs, probe)


def test_lrp_never_moves_the_shared_initial_predictions():
    """Regression: a chunk of one candidate optimised a *view* of the stage's initial
    predictions, so every later LRP started from already optimised predictions and rejected
    nearly everything (a whole search's LRP depended on whether some chunk held one candidate)."""
    probe = _seg_probe(samples=2, classes=4, size=8)
    cfg = LRPConfig(steps=25, lr=0.1, threshold=0.05)
    stage = LossRejection(probe, _miou(4), cfg)
    before = stage.init.clone()
    exprs = [parse("-sum_c(y * log(p))"), parse("square(p - y)")]
    singles = [batched.lrp_scores([e], probe, stage.metric, cfg, stage.init) for e in exprs]
    assert torch.equal(stage.init, before)
    chunked = batched.lrp_scores(exprs, probe, stage.metric, cfg, stage.init, chunk=1)
    assert torch.equal(stage.init, before)
    assert chunked == [s[0] for s in singles]
    for e, (ok, score) in zip(exprs, chunked):
        assert ok and score == pytest.approx(lrp_score(e, probe, stage.metric, cfg, before),
                                             abs=1e-6)
        assert score > 0         # the cross-entropy and MSE both improve the probe's mIoU


def test_forked_lrp_shares_give_the_same_scores_and_stats():
    from lossforge.evaluation.batched import forked

    assert forked.shares(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert forked.shares(2, 2) == [(0, 1), (1, 2)]
    probe = synthetic_probe("classification", 5, 10, seed=5)
    cfg = LRPConfig(steps=30, lr=0.05, threshold=0.2)
    metric = _accuracy()
    exprs = _exprs(3 * forked.MIN_SHARE + 2, seed=21)
    stage = LossRejection(probe, metric, cfg)
    one = batched.lrp_scores(exprs, probe, metric, cfg, stage.init)
    three = batched.forked_lrp_scores(exprs, probe, metric, cfg, stage.init, processes=3)
    assert three == one
    assert any(s is not None and s >= 0.2 for _, s in one)   # some pass, some do not
    cands = [Candidate(e) for e in exprs]
    batched.run_stage(stage, cands, processes=2)
    ref_stage = LossRejection(probe, metric, cfg)
    ref = [Candidate(e) for e in exprs]
    batched.run_stage(ref_stage, ref)
    assert [_fields(c) for c in cands] == [_fields(c) for c in ref]
    assert [c.lrp_score for c in cands] == [c.lrp_score for c in ref]
    assert (stage.stats.n_in, stage.stats.n_out) == (ref_stage.stats.n_in, ref_stage.stats.n_out)
    with pytest.raises(ValueError, match="processes"):
        batched.forked_lrp_scores(exprs, probe, metric, cfg, stage.init, processes=0)


def test_other_stages_run_unchanged():
    seen = []

    class Stage:
        def __call__(self, cands):
            seen.extend(cands)

    cands = [Candidate(apply("mul", var("p"), var("y")))]
    batched.run_stage(Stage(), cands)
    assert seen == cands


def test_run_stage_sets_and_restores_threads():
    probe = synthetic_probe("classification", 5, 10, seed=1)
    seen = []

    class Spy(GradientEquivalence):
        def mark(self, c):
            seen.append(torch.get_num_threads())
            super().mark(c)

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        batched.run_stage(Spy(probe), [Candidate(parse("square(p - y)"))])
        assert seen == [1] and torch.get_num_threads() == 2      # default threads=1, restored
        batched.run_stage(Spy(probe), [Candidate(parse("abs(p - y)"))], threads=None)
        assert seen == [1, 2]                                      # None: left as it is
        with pytest.raises(RuntimeError), batched.torch_threads(1):
            raise RuntimeError("boom")
        assert torch.get_num_threads() == 2                        # restored on error too
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    probe = synthetic_probe("classification", 5, 10, seed=1)
    cfg = LRPConfig(steps=30, lr=0.05)
    metric = _accuracy()
    exprs = _exprs(40, seed=2)
    init = LossRejection(probe, metric, cfg).init
    cpu = batched.lrp_scores(exprs, probe, metric, cfg, init)
    gpu = batched.lrp_scores(exprs, probe, metric, cfg, init, device="cuda")
    agree = sum((a[1] is None) == (b[1] is None) and (a[1] is None or math.isclose(
        a[1], b[1], abs_tol=1e-3)) for a, b in zip(cpu, gpu))
    assert agree >= 0.95 * len(exprs)


def test_fingerprint_text_is_the_same_from_a_tensor_and_from_its_floats():
    # the reference formats a tensor of norms, the batched path the same norms as Python floats
    from lossforge.evaluation.gec import format_fingerprint

    rows = [[0.0012345, 3.0, 1e-9, 12345.678], [1.0, float("inf"), 2.0, 3.0],
            [float("nan"), 1.0, 1.0, 1.0], [5e-5, 0.0, 9.95, 9.949999]]
    for row in rows:
        want = format_fingerprint(torch.tensor(row, dtype=torch.float32))
        got = format_fingerprint(torch.tensor(row, dtype=torch.float32).tolist())
        assert got == want
    assert format_fingerprint(torch.tensor([0.0012345, 3.0])) == "1.2e-03,3.0e+00"
    assert format_fingerprint(torch.tensor([1.0, float("inf")])) is None


def test_funnel_screening_batched_equals_reference():
    import lfhelpers  # registers tiny-blobs
    from lossforge import tasks
    from lossforge.evaluation.funnel import Funnel

    task = tasks.get("tiny-blobs")
    exprs = _population(losses_only=True)[:40] + [parse("-sum_c(y * log(p))")]
    results = []
    for use_batched in (False, True):
        funnel = Funnel(task, "accuracy", replace(lfhelpers.FAST, batched=use_batched))
        cands = [Candidate(e) for e in exprs]
        for stage in [s for s in funnel.stages if s is not funnel.proxy]:
            if use_batched:
                batched.run_stage(stage, cands)
            else:
                stage(cands)
        results.append(([_fields(c) for c in cands],
                        {k: (v["n_in"], v["n_out"]) for k, v in funnel.stats().items()}))
    (ref, ref_stats), (bat, bat_stats) = results
    assert ref_stats == bat_stats
    assert sum(a == b for a, b in zip(ref, bat)) >= len(ref) - 1


def test_screening_does_not_depend_on_how_the_population_is_split():
    """A search screens a generation at a time: the stages' decisions must not depend on the
    generation sizes (one call with every candidate vs calls of 1, 2, 3, ... candidates)."""
    import lfhelpers  # registers tiny-blobs
    from lossforge import tasks
    from lossforge.evaluation.funnel import Funnel

    task = tasks.get("tiny-blobs")
    exprs = _population(losses_only=True)[:30] + [parse("-sum_c(y * log(p))")]
    results = []
    for sizes in ([len(exprs)], [1, 2, 3, 1, 5, 1, 4, 1, 9, 1, 1, 2]):
        funnel = Funnel(task, "accuracy", lfhelpers.FAST)
        screens = [s for s in funnel.stages if s is not funnel.proxy]
        cands, start = [], 0
        for size in sizes:
            part = [Candidate(e) for e in exprs[start:start + size]]
            start += size
            for stage in screens:
                batched.run_stage(stage, part)
            cands += part
        assert start == len(exprs)
        results.append([(_fields(c), c.lrp_score) for c in cands])
    assert results[0] == results[1]
    assert sum(c[0][0] == PENDING for c in results[0]) >= 2      # some pass every screen


@pytest.mark.parametrize("name,reference,atol", [("softmax", torch.softmax, 1e-6),
                                                  ("log_softmax", torch.log_softmax, 1e-5)])
def test_class_softmax_and_log_softmax_and_their_backward_equal_torch_up_to_rounding(
        name, reference, atol):
    from lossforge.evaluation.batched import program

    forward = getattr(program, f"class_{name}")
    backward = getattr(program, f"class_{name}_backward")
    gen = torch.Generator().manual_seed(0)
    for shape in [(30, 5, 10), (4, 2, 7, 6, 6)]:  # classes last; with spatial dims
        X = (torch.randn(*shape, generator=gen) * 20).requires_grad_(True)  # large logits too
        ref = reference(X, dim=2)
        g = torch.randn(*shape, generator=gen)
        (dref,) = torch.autograd.grad(ref, X, g)
        out = forward(X.detach())
        assert torch.allclose(out, ref, atol=atol, rtol=1e-5)
        assert torch.allclose(backward(g, out), dref, atol=1e-5, rtol=1e-4)
