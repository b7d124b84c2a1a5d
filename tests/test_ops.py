"""The op registry: every op's torch kernel agrees with its sympy form numerically (protected points
included), gradients are finite where the value is, and aggregations follow the documented
numpy semantics, the position mask included."""
from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import sympy
import torch

from lossforge.expr import apply, export, ops, var
from lossforge.expr import kernels as K
from lossforge.expr.interpret import interpret

EPS = ops.EPS
# Values at and around every guarded point (0, +-EPS), moderate and large magnitudes.
SPECIAL = [0.0, 1e-7, -1e-7, EPS, -EPS, -EPS + 1e-9, -EPS - 1e-9, 2e-6, -2e-6, 1e-3, -1e-3,
           0.3, -0.3, 0.5, -0.5, 1.0, -1.0, 2.0, -2.0, 3.7, -3.7, 30.0, -30.0, 1e3, -1e3]
ELEMENTWISE = ops.names()  # every non-aggregation op


def _inputs(arity: int) -> list[np.ndarray]:
    rng = np.random.default_rng(1234)
    base = np.concatenate([np.array(SPECIAL), rng.normal(0, 3, 40)])
    if arity == 1:
        return [base]
    pairs = np.array(list(itertools.product(SPECIAL, SPECIAL)) + [tuple(rng.normal(0, 3, 2)) for _ in range(40)])
    return [pairs[:, 0].copy(), pairs[:, 1].copy()]


def _sympy_fn(name: str):
    spec = ops.OPS[name]
    syms = [sympy.Symbol(s, real=True) for s in ("a", "b")[: spec.arity]]
    expr = apply(name, *(var(s.name) for s in syms))
    s = export.to_sympy(expr)
    return sympy.lambdify(syms, s, modules=[export.numpy_aggregations(), "scipy", "numpy"])


def test_registry_is_consistent():
    assert len(ops.OPS) == len(ops._OPS), "duplicate op names"
    assert set(ops.INFIX) == {"+", "-", "*", "/"}
    for name, spec in ops.OPS.items():
        assert spec.arity in (1, 2)
        assert isinstance(spec.cost, (int, float)) and spec.cost > 0, name
        assert isinstance(spec.doc, str) and spec.doc, name
        assert callable(spec.sympy_fn) and callable(spec.torch_fn), name
        assert spec.torch_fn is getattr(K, "k_" + name)
    assert set(ops.AGGREGATIONS) == {"sum_c", "mean_c", "mean_s", "mean_bs", "mean_b"}
    assert all(ops.OPS[a].arity == 1 for a in ops.AGGREGATIONS)
    assert set(ops.names()) | set(ops.AGGREGATIONS) == set(ops.OPS)
    # the AutoLoss-Zero space: exactly the 10 primitives of the paper (protected Log/Sqrt forms)
    assert set(ops.names(tag="autoloss-zero")) == {
        "add", "mul", "neg", "abs", "inv", "slog", "exp", "tanh", "square", "ssqrt"}
    with pytest.raises(KeyError, match="known ops"):
        ops.get("nope")


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_torch_matches_sympy(name):
    spec = ops.OPS[name]
    args = _inputs(spec.arity)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = np.broadcast_to(np.asarray(_sympy_fn(name)(*args), dtype=float), args[0].shape)
    got = spec.torch_fn(*(torch.tensor(a, dtype=torch.float64) for a in args)).numpy()
    both = np.isfinite(ref) & np.isfinite(got)
    # overflow (exp, sinh, i0, i1 at 1e3; inv/div at -EPS) is the only reason to skip a point
    assert both.mean() > 0.85, f"{name}: too many non-finite values"
    # the kernel is never less robust than the plain formula (it may be more: softplus, i0e)
    assert not (np.isfinite(ref) & ~np.isfinite(got)).any(), f"{name}: torch overflows first"
    np.testing.assert_allclose(got[both], ref[both], rtol=1e-9, atol=1e-12, err_msg=name)


def test_protected_forms_at_guarded_points():
    z = torch.tensor([0.0, EPS, -EPS], dtype=torch.float64)
    assert torch.allclose(K.k_log(z[:1]), torch.log(torch.tensor(EPS, dtype=torch.float64)))
    assert torch.allclose(K.k_sqrt(z[:1]), torch.tensor(EPS, dtype=torch.float64).sqrt())
    assert K.k_inv(z[:1]).item() == pytest.approx(1 / EPS)
    assert K.k_div(torch.tensor(2.0, dtype=torch.float64), z[:1]).item() == pytest.approx(2 / EPS)
    assert torch.isinf(K.k_inv(z[2:])).all()  # documented: -EPS is not guarded
    assert K.k_slog(z[:1]).item() == 0.0 and K.k_ssqrt(z[:1]).item() == 0.0
    assert K.k_slog(torch.tensor(-np.e, dtype=torch.float64)).item() == pytest.approx(-1, abs=1e-6)
    assert K.k_aq(torch.tensor(3.0), torch.tensor(0.0)).item() == 3.0
    assert K.k_sign(torch.tensor(0.0)).item() == 0.0


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_gradients_finite(name):
    spec = ops.OPS[name]
    args = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in _inputs(spec.arity)]
    out = spec.torch_fn(*args)
    out.sum().backward()
    finite = torch.isfinite(out).detach()
    for a in args:
        # where the value is finite the gradient is too; documented exceptions are exactly the
        # points where the value is not (inv/div at -EPS; exp/sinh/i0/i1 overflow)
        bad = finite & ~torch.isfinite(a.grad)
        assert not bad.any(), f"{name}: non-finite gradient at {a.detach()[bad][:5].tolist()}"
    if name in ("inv", "div"):
        assert not torch.isfinite(out).all()  # -EPS is among the inputs


# ---- aggregations --------------------------------------------------------------------------
AGGS = list(ops.AGGREGATIONS)


@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (7, 4), (2, 3, 4)])
@pytest.mark.parametrize("name", AGGS)
def test_aggregation_matches_numpy(name, shape):
    x = np.random.default_rng(0).normal(size=shape)
    got = ops.OPS[name].torch_fn(torch.tensor(x))
    ref = export.numpy_aggregations()[name](x)
    assert got.dim() == x.ndim  # keep dimensions
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12)
    expected_shape = {
        "sum_c": (shape[0], 1) + shape[2:],
        "mean_c": (shape[0], 1) + shape[2:],
        "mean_s": shape[:2] + (1,) * (len(shape) - 2),
        "mean_bs": (1, shape[1]) + (1,) * (len(shape) - 2),
        "mean_b": (1,) + shape[1:],
    }[name]
    assert tuple(got.shape) == expected_shape


def test_aggregation_values_by_hand():
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.float64).reshape(2, 3, 2, 2)
    assert K.k_sum_c(x)[1, 0, 1, 0].item() == x[1, :, 1, 0].sum().item()
    assert K.k_mean_c(x)[0, 0, 0, 1].item() == x[0, :, 0, 1].mean().item()
    assert K.k_mean_s(x)[1, 2, 0, 0].item() == x[1, 2].mean().item()
    assert K.k_mean_bs(x)[0, 1, 0, 0].item() == x[:, 1].mean().item()
    assert K.k_mean_b(x)[0, 2, 1, 1].item() == x[:, 2, 1, 1].mean().item()


def test_numpy_aggregations_broadcast_constants():
    agg = export.numpy_aggregations(shape=(2, 3, 4, 4))
    assert np.all(agg["sum_c"](2.0) == 6.0)
    assert agg["mean_bs"](1.5).shape == (1, 3, 1, 1)


def _masked_setup(seed=0, shape=(3, 4, 5, 6)):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    mask = torch.rand((shape[0], 1) + shape[2:], generator=gen) > 0.4
    mask[1, 0] = False  # one image entirely ignored
    return x, mask


def test_masked_aggregations_ignore_masked_positions():
    x, mask = _masked_setup()
    poisoned = torch.where(mask, x, torch.full_like(x, float("nan")))  # masked values must not count
    n, c = x.shape[:2]
    # mean_s: per sample and class, over that sample's valid positions (0 when none is valid)
    got = K.k_mean_s(poisoned, mask)
    for i in range(n):
        for k in range(c):
            valid = x[i, k][mask[i, 0]]
            ref = valid.mean().item() if valid.numel() else 0.0
            assert got[i, k, 0, 0].item() == pytest.approx(ref, rel=1e-12, abs=1e-15)
    # mean_bs: per class over every valid (sample, position)
    got = K.k_mean_bs(poisoned, mask)
    for k in range(c):
        ref = torch.cat([x[i, k][mask[i, 0]] for i in range(n)]).mean().item()
        assert got[0, k, 0, 0].item() == pytest.approx(ref, rel=1e-12)
    # mean_b: per class and position over the samples valid there
    got = K.k_mean_b(poisoned, mask)
    for k, h, w in [(0, 0, 0), (3, 4, 5), (2, 1, 3)]:
        valid = x[:, k, h, w][mask[:, 0, h, w]]
        ref = valid.mean().item() if valid.numel() else 0.0
        assert got[0, k, h, w].item() == pytest.approx(ref, rel=1e-12, abs=1e-15)
    # class aggregations act per position; the mask does not change them
    assert torch.equal(K.k_sum_c(x, mask), K.k_sum_c(x))
    assert torch.equal(K.k_mean_c(x, mask), K.k_mean_c(x))


def test_masked_aggregation_of_reduced_input_and_loss_reduction():
    x, mask = _masked_setup(1)
    # mean_b of a per-(sample, class) quantity: samples with no valid position drop out
    per_sample = K.k_mean_s(x, mask)
    got = K.k_mean_b(per_sample, mask)
    keep = mask.flatten(1).any(1)
    assert not keep[1]
    np.testing.assert_allclose(got[0, :, 0, 0].numpy(), per_sample[keep, :, 0, 0].mean(0).numpy(),
                               rtol=1e-12)
    # the loss value: mean over valid positions only
    poisoned = torch.where(mask, x, torch.full_like(x, float("inf")))
    ref = x.permute(0, 2, 3, 1)[mask[:, 0]].mean().item()
    assert K.reduce_loss(poisoned, mask).item() == pytest.approx(ref, rel=1e-12)
    assert K.reduce_loss(x, None).item() == pytest.approx(x.mean().item(), rel=1e-12)


def test_masked_aggregations_through_evaluate():
    """``mean_bs`` in a loss sees only non-ignored pixels: same value as on the valid subset."""
    from lossforge.expr import parse

    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 4, 4, generator=gen, dtype=torch.float64)
    target = torch.randint(0, 3, (2, 4, 4), generator=gen)
    target[0, :, :2] = 255
    e = parse("mean_bs(p * y) / mean_bs(p)")
    env, mask = K.prepare_classification(logits, target)
    got = interpret(e, env, mask)
    valid = target != 255
    p = torch.softmax(logits, 1).permute(0, 2, 3, 1)[valid]  # (V, C)
    y = torch.nn.functional.one_hot(target[valid], 3).double()
    ref = (p * y).mean(0) / ((p).mean(0) + EPS)
    np.testing.assert_allclose(got[0, :, 0, 0].numpy(), ref.numpy(), rtol=1e-12)
