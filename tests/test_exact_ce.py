"""Cross-entropy that is cross-entropy: ``log`` of the softmax variable ``p`` is ``log_softmax`` of
the logits (``lossforge.expr.exact``), with no guard, in every path that evaluates a loss — the
interpreter, ``to_torch``, the standalone ``to_source`` module, the batched screening — while
``log`` of anything else keeps its protected form."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lossforge import zoo
from lossforge.evaluation.batched import Program
from lossforge.evaluation.probes import Probe
from lossforge.expr import parse
from lossforge.expr.exact import LOGP, exact_form, is_softmax_log
from lossforge.expr.interpret import loss_value
from lossforge.expr.kernels import prepare_classification

MARGINS = [0.0, 1.0, 10.0, 14.0, 20.0, 30.0, 50.0]


def _margin_case(m: float, dtype=torch.float32):
    """Two samples of 3 classes whose target class is behind the best class by ``m``."""
    logits = torch.tensor([[0.0, m, 0.5], [m / 2, 0.0, -m / 2]], dtype=dtype)
    target = torch.tensor([0, 1])
    return logits, target


def _value_grad(module, logits, target):
    x = logits.clone().requires_grad_(True)
    value = module(x, target)
    (grad,) = torch.autograd.grad(value, x)
    return value.detach(), grad


def _standalone(expr, name="Exported"):
    namespace: dict = {}
    exec(expr.to_source(name), namespace)  # plain torch, no lossforge
    return namespace[name]()


def test_issue_case_margin_20_gives_20_and_gradient_minus_1():
    logits = torch.tensor([[0.0, 20.0]], requires_grad=True)
    value = zoo.get("ce").module()(logits, torch.tensor([0]))
    value.backward()
    assert value.item() == pytest.approx(20.0, rel=1e-6)
    assert logits.grad[0, 0].item() == pytest.approx(-1.0, abs=1e-6)


@pytest.mark.parametrize("m", MARGINS)
@pytest.mark.parametrize("path", ["to_torch", "to_source"])
def test_ce_equals_torch_cross_entropy_at_large_margins(m, path):
    ce = zoo.get("ce").expr
    module = ce.to_torch() if path == "to_torch" else _standalone(ce)
    logits, target = _margin_case(m)
    got, g = _value_grad(module, logits, target)
    ref, g_ref = _value_grad(lambda x, t: F.cross_entropy(x, t), logits, target)
    assert got.item() == pytest.approx(ref.item(), rel=1e-6, abs=1e-6)
    torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-7)


def test_ce_equals_torch_on_segmentation_with_ignored_pixels():
    gen = torch.Generator().manual_seed(0)
    logits = 15 * torch.randn(2, 4, 5, 5, generator=gen)   # many confidently wrong pixels
    target = torch.randint(0, 4, (2, 5, 5), generator=gen)
    target[0, :2] = 255
    got, g = _value_grad(zoo.get("ce").module(), logits, target)
    ref, g_ref = _value_grad(lambda x, t: F.cross_entropy(x, t, ignore_index=255), logits, target)
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-7)
    source, gs = _value_grad(_standalone(zoo.get("ce").expr), logits, target)
    assert source.item() == got.item()
    torch.testing.assert_close(gs, g)


@pytest.mark.parametrize("m", [20.0, 50.0])
def test_the_batched_screening_evaluates_the_exact_log(m):
    """Program.run (explicit backward) gives the values and gradients of F.cross_entropy."""
    logits, target = _margin_case(m)
    probe = Probe("classification", target, tuple(logits.shape), 3)
    exprs = [zoo.get("ce").expr, parse("-sum_c(y * slog(p))"), parse("-sum_c(y * log10(p))"),
             parse("-sum_c(y * log(p)) * mean_c(p)")]
    prog = Program(exprs, probe)
    values, grads = prog.run(logits.unsqueeze(0).expand(len(exprs), -1, -1).contiguous())
    ref, g_ref = _value_grad(lambda x, t: F.cross_entropy(x, t), logits, target)
    assert values[0].item() == pytest.approx(ref.item(), rel=1e-6)
    torch.testing.assert_close(grads[0], g_ref, rtol=1e-5, atol=1e-7)
    assert values[1].item() == pytest.approx(ref.item(), rel=1e-6)
    assert values[2].item() == pytest.approx(ref.item() / math.log(10), rel=1e-6)
    for j, e in enumerate(exprs):  # and each agrees with the per-candidate reference
        x = logits.clone().requires_grad_(True)
        env, mask = probe.variables(x)
        v = loss_value(e, env, mask)
        (g,) = torch.autograd.grad(v, x)
        assert values[j].item() == pytest.approx(v.item(), rel=1e-6)
        torch.testing.assert_close(grads[j], g, rtol=1e-5, atol=1e-7)


def test_slog_and_log10_of_p_are_exact_and_other_logs_stay_protected():
    logits, target = _margin_case(30.0, torch.float64)
    env, mask = prepare_classification(logits, target)
    logp = torch.log_softmax(logits, 1)
    torch.testing.assert_close(loss_value(parse("slog(p) * y"), env), (logp * env["y"]).mean())
    torch.testing.assert_close(loss_value(parse("log10(p) * y"), env),
                               (logp * env["y"]).mean() / math.log(10))
    # log of an expression of p, of y, of z: the protected log(|x| + 1e-6)
    for text, arg in [("log(1 - p)", 1 - env["p"]), ("log(-2 * p)", -2 * env["p"]),
                      ("log(p * y)", env["p"] * env["y"]), ("log(y)", env["y"]),
                      ("log(z)", env["z"])]:
        torch.testing.assert_close(loss_value(parse(text), env),
                                   torch.log(arg.abs() + 1e-6).mean(), msg=text)


def test_the_rule_is_a_rewrite_that_keeps_the_formula_text():
    e = parse("-sum_c(y * log(p)) + log(1 - p) * y")
    exact = exact_form(e)
    assert LOGP in exact.variables() and str(e) == "-sum_c(y * log(p)) + log(1 - p) * y"
    assert [n for n in e.nodes() if is_softmax_log(n)] == [parse("log(p)")]
    assert exact_form(exact_form(e)) is exact_form(e)          # cached, idempotent
    assert exact_form(parse("log(1 - p) * y")) is parse("log(1 - p) * y")  # nothing to rewrite
    assert str(exact_form(parse("log10(p)"))) == f"logp * {1 / math.log(10)!r}"
    # a positive constant multiple: log(c * p) = log p + ln c (GLO's coefficient form, BaikalCMA)
    assert str(exact_form(parse("log(2 * p)"))) == f"logp + {math.log(2)!r}"
    logits, target = _margin_case(30.0, torch.float64)
    env, _ = prepare_classification(logits, target)
    torch.testing.assert_close(loss_value(parse("log(1.5 * p) * y"), env),
                               ((torch.log_softmax(logits, 1) + math.log(1.5)) * env["y"]).mean())


@pytest.mark.parametrize("m", [20.0, 30.0])
def test_focal_poly1_and_weighted_ce_follow_their_textbook_forms_at_large_margins(m):
    logits, target = _margin_case(m, torch.float64)
    logp = torch.log_softmax(logits, 1).gather(1, target[:, None])[:, 0]
    pt = logp.exp()
    focal = zoo.get("focal").module()(logits, target).item()
    assert focal == pytest.approx((-(1 - pt) ** 2 * logp).mean().item(), rel=1e-9)
    poly = zoo.get("poly1").module()(logits, target).item()
    assert poly == pytest.approx((-logp + 1 - pt).mean().item(), rel=1e-9)
    # inverse-frequency weights of the batch (1 sample per class here): plain CE
    assert zoo.get("wce").module()(logits, target).item() == pytest.approx(
        F.cross_entropy(logits, target).item(), rel=1e-5)
