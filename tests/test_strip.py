"""Stripping constant terms (``lossforge.expr.strip``): the stripped loss has the original's
gradient w.r.t. the logits on random predictions and one-hot targets (torch autograd, float64),
its value differs by an amount that does not depend on the prediction, ``square(inv(p * y))``
reads O(10..100) instead of ~1e11, and losses that cannot be split exactly are left alone."""
from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lossforge import zoo
from lossforge.expr import apply, const, parse, var
from lossforge.expr import kernels as K
from lossforge.expr.interpret import loss_value
from lossforge.expr.strip import display_fields, export_note, strip_constant_terms, substitute

from test_expr import BINARY, UNARY, expr_strategy

# Found in real studies (autoloss-zero / GLO searches on digits) or built to hit each rule.
STRIPPED = [
    "square(inv(p * y))",
    "square(inv(abs(y * p)))",
    "inv(y * p) + -(p * p)",
    "sum_c(square(inv(p * y)))",
    "mean_c(inv(p * y * (y + y) * (p * p * (y + y))))",
    "sum_c(mean_s(y) * (p * y) + inv(y * p))",
    "inv(slog(y * y) * (p * y + y * p))",
    "square(inv(p * y)) + 3 + square(inv(y))",
    "mean_c(y) + y * y + mean_bs(inv(y)) + (abs(y) + (y + y)) * square(inv(p))",
    "log(p * y)",                          # the kept part must keep the protected log(p * y)
    "square(inv(p * (1 - y)))",            # the y = 1 part is the constant one
    "2 * square(inv(z * y)) - inv(y)",     # logits, a scaled term, a constant term
]


def grad_and_value(formula, logits, target):
    """The loss value and its gradient w.r.t. ``logits``, written out here with autograd."""
    x = logits.clone().requires_grad_(True)
    env, mask = K.prepare_classification(x, target)
    value = loss_value(parse(formula) if isinstance(formula, str) else formula, env, mask)
    (grad,) = torch.autograd.grad(value, x, allow_unused=True)
    return value.item(), (torch.zeros_like(x) if grad is None else grad)


def random_batch(seed, shape=(16, 7), ignore=False):
    gen = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(shape, generator=gen, dtype=torch.float64)
    target = torch.randint(0, shape[1], (shape[0],) + tuple(shape[2:]), generator=gen)
    if ignore:
        target.view(-1)[::5] = 255
    return logits, target


def assert_same_gradient_constant_shift(original, stripped, shape, ignore=False):
    """Same gradient on three random predictions of one target, and the same value shift."""
    _, target = random_batch(100, shape, ignore)
    shifts = []
    for seed in range(3):
        logits, _ = random_batch(seed, shape)
        va, ga = grad_and_value(original, logits, target)
        vb, gb = grad_and_value(stripped, logits, target)
        scale = float(ga.abs().max())
        assert torch.allclose(ga, gb, rtol=0, atol=1e-6 * scale + 1e-12), (original, stripped)
        shifts.append((va - vb, abs(va)))
    for shift, size in shifts[1:]:
        assert abs(shift - shifts[0][0]) <= 1e-9 * max(size, shifts[0][1], 1.0)


@pytest.mark.parametrize("formula", STRIPPED)
def test_stripped_loss_has_the_same_gradient_and_a_constant_value_shift(formula):
    result = strip_constant_terms(formula, verify=False)  # the structure alone, not the guard
    assert result.changed and result.expr != result.original and result.dropped
    assert "gradient w.r.t. the prediction is unchanged" in result.reason
    for shape, ignore in (((16, 7), False), ((3, 4, 5, 2), True)):
        assert_same_gradient_constant_shift(formula, result.expr, shape, ignore)


def test_square_inv_p_y_reads_a_sensible_value_after_stripping():
    result = strip_constant_terms("square(inv(p * y))")
    assert str(result.expr) == "y * square(inv(p))"
    assert "y = 0 part" in result.reason and "1e+12" in result.reason
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(256, 10, generator=gen)
    target = torch.randint(0, 10, (256,), generator=gen)
    env, _ = K.prepare_classification(logits, target)
    before = float(loss_value(result.original, env))
    after = float(loss_value(result.expr, env))
    assert before > 1e10                           # 1e12 on 9 of every 10 entries
    assert 1.0 < after < 1e3
    # independently: the mean over (N, C) of y / (p + eps)^2
    p = torch.softmax(logits, 1)
    y = torch.nn.functional.one_hot(target, 10).float()
    assert after == pytest.approx(float((y / (p + 1e-6) ** 2).mean()), rel=1e-5)
    # and the dropped part is (1 - y) * 1e12 on average
    assert before - after == pytest.approx(0.9 / (1e-6) ** 2, rel=1e-5)


def test_what_is_kept_and_dropped():
    r = strip_constant_terms("square(inv(p * y)) + 3 + square(inv(y))")
    assert str(r.expr) == "y * square(inv(p)) + 3"  # a plain number is a readable offset: kept
    assert len(r.dropped) == 2 and "the constant term square(inv(y))" in r.reason
    assert str(strip_constant_terms("log(p * y)").expr) == "y * log(p * y)"  # not exact log(p)
    assert str(strip_constant_terms("square(inv(p * (1 - y)))").expr) == "(1 - y) * square(inv(p))"
    assert str(strip_constant_terms("2 * square(inv(z * y)) - inv(y)").expr) == \
        "2 * (y * square(inv(z)))"


@pytest.mark.parametrize("formula, why", [
    ("-sum_c(y * log(p))", "nothing to strip"),
    ("square(slog(tanh(y * p)))", "nothing to strip"),     # its y = 0 part is 0: nothing to gain
    ("y + (square(inv(y)) + p) * p", "not stripped"),      # the 1e12 multiplies p: not constant
    ("square(inv(mean_c(y * p)))", "reduction mixes y"),
    ("mean_s(sum_c(y * log(p))) + square(inv(y))", "change the shape"),
    ("square(inv(f * y))", "regression loss's target is not one-hot"),
    ("square(inv(y))", "whole loss is constant"),
])
def test_left_alone_with_a_reason(formula, why):
    r = strip_constant_terms(formula)
    if "(square(inv(y)) + p) * p" in formula:  # the constant term y is dropped, the rest is kept
        assert str(r.expr) == "(square(inv(y)) + p) * p"
        return
    assert not r.changed and r.expr is r.original and not r.dropped
    assert why in r.reason, r.reason


def test_zoo_classification_losses_are_unchanged():
    for entry in zoo.entries():
        if getattr(entry, "expr", None) is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                assert not strip_constant_terms(entry.expr).changed, entry.name


def test_substitute_folds_exactly():
    e = parse("inv(p * y) + square(1 - y) * z")
    assert str(substitute(e, "y", 0.0)) == "inv(0) + z"
    assert str(substitute(e, "y", 1.0)) == "inv(p)"
    assert substitute(parse("p * y + 0.5"), "y", 1.0) == apply("add", var("p"), const(0.5))


def test_display_fields_and_export_note():
    assert display_fields("-sum_c(y * log(p))") == {"display_formula": "-sum_c(y * log(p))",
                                                    "stripped": None}
    shown = display_fields("square(inv(p * y))")
    assert shown["display_formula"] == "y * square(inv(p))" and "y = 0 part" in shown["stripped"]
    assert display_fields("cls: square(inv(p * y)) | box: 1 - i / u")["stripped"] is None
    assert display_fields("not a formula (")["stripped"] is None
    note = export_note(strip_constant_terms("square(inv(p * y))"))
    assert "Searched formula: square(inv(p * y))" in note and "gradient" in note
    assert "one-hot" in " ".join(note.split())  # soft targets: the split is not exact
    assert export_note(strip_constant_terms("-sum_c(y * log(p))")) == ""


def test_a_y_split_that_overflows_where_the_original_does_not_is_refused():
    # at y = 0 the original is exp(0) = 1; the split's exp(z / -p) overflows there: 0 * inf = NaN
    e = parse("exp(y * z / -(p * y))")
    unguarded = strip_constant_terms(e, verify=False)
    assert str(unguarded.expr) == "y * exp(z / -p)"
    guarded = strip_constant_terms(e)
    assert not guarded.changed and str(guarded.expr) == str(e)
    # the split of a bounded term still goes through the guard
    assert strip_constant_terms("square(inv(p * y))").changed


def test_exported_source_computes_the_stripped_loss(tmp_path):
    from lossforge.expr.strip import stripped_source

    text = stripped_source(parse("square(inv(p * y))"), name="Found")
    assert "Searched formula: square(inv(p * y))" in text and "formula = 'y * square(inv(p))'" in text
    namespace: dict = {}
    exec(compile(text, "found.py", "exec"), namespace)
    logits, target = random_batch(3)
    module = namespace["Found"]()
    x = logits.clone().requires_grad_(True)
    value = module(x, target)
    (grad,) = torch.autograd.grad(value, x)
    value = value.item()
    v_ref, g_ref = grad_and_value("square(inv(p * y))", logits, target)
    assert torch.allclose(grad, g_ref, rtol=1e-6, atol=1e-12 * float(g_ref.abs().max()))
    assert value < 1e6 < 1e11 < v_ref  # logits of std 2: small p, large 1 / p^2


#: Leaves that make constant parts likely: products and sums of the prediction with y.
_LEAVES = [parse(t) for t in ("p * y", "y * z", "p + y", "p * (1 - y)", "y", "p", "z", "inv(y)")]


def strippable_exprs(max_leaves: int = 6) -> st.SearchStrategy:
    """Random expressions over the registry's ops whose leaves are :data:`_LEAVES`, random
    expressions of ``p, y, z`` (from test_expr) and small constants."""
    leaves = st.one_of(st.sampled_from(_LEAVES), expr_strategy(max_leaves=2),
                       st.sampled_from([0.0, 1.0, 2.0, -0.5, 3.0]).map(const))

    def extend(children):
        return st.one_of(
            st.builds(lambda op, a: apply(op, a), st.sampled_from(UNARY), children),
            st.builds(lambda op, a, b: apply(op, a, b), st.sampled_from(BINARY), children, children))

    return st.recursive(leaves, extend, max_leaves=max_leaves)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strippable_exprs(), st.integers(0, 3))
def test_any_stripped_expression_keeps_the_gradient(e, seed):
    """Property: whatever random expression is stripped (with the numeric guard, which also
    refuses a y-split that overflows where the original does not), its gradient is the
    original's wherever the original's is finite."""
    try:
        result = strip_constant_terms(e)
    except ValueError:
        return
    if not result.changed:
        return
    logits, target = random_batch(seed, (4, 3, 2), ignore=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        va, ga = grad_and_value(e, logits, target)
        vb, gb = grad_and_value(result.expr, logits, target)
    if not (torch.isfinite(ga).all() and abs(va) < float("inf")):
        return
    scale = float(ga.abs().max())
    assert torch.allclose(ga, gb, rtol=0, atol=1e-6 * scale + 1e-12), (str(e), str(result.expr))


# ---- where a user reads or takes the loss: show (JSON and tables) and export --------------------
def test_show_and_export_strip_what_the_user_reads_and_keep_the_stored_formula(tmp_path):
    import json

    from typer.testing import CliRunner

    import lfhelpers as H
    from lossforge import cli
    from lossforge.study import LossSearch

    path = tmp_path / "s.db"
    LossSearch(task="tiny-blobs", storage=str(path), budget=2, seed=1, funnel=H.NO_LRP,
               strategy_options={"initial": ["square(inv(p * y))"], "batch_size": 2}).run().close()
    runner = CliRunner()
    shown = runner.invoke(cli.app, ["show", str(path), "--format", "json"], prog_name="lossforge")
    assert shown.exit_code == 0, shown.output
    hof = {h["formula"]: h for h in json.loads(shown.stdout)["hall_of_fame"]}
    entry = hof["square(inv(p * y))"]                      # the stored formula, unchanged
    assert entry["display_formula"] == "y * square(inv(p))" and "1e+12" in entry["stripped"]
    assert all(h["stripped"] is None for f, h in hof.items() if f != "square(inv(p * y))")
    table = runner.invoke(cli.app, ["show", str(path)], prog_name="lossforge", terminal_width=200)
    assert table.exit_code == 0 and "y * square(inv(p)) + const (same gradient)" in table.stdout

    rank = list(hof).index("square(inv(p * y))") + 1
    out = tmp_path / "found.py"
    exported = runner.invoke(cli.app, ["export", str(path), "-o", str(out), "--rank", str(rank),
                                       "--name", "Found"], prog_name="lossforge",
                             terminal_width=200)
    assert exported.exit_code == 0, exported.output
    assert "without its constant terms" in exported.stdout
    text = out.read_text()
    assert "Searched formula: square(inv(p * y))" in text and "gradient" in text
    namespace: dict = {}
    exec(compile(text, str(out), "exec"), namespace)
    logits, target = random_batch(7, (16, 3))
    x = logits.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(namespace["Found"]()(x, target), x)
    _, g_ref = grad_and_value("square(inv(p * y))", logits, target)
    assert torch.allclose(grad, g_ref, rtol=0, atol=1e-6 * float(g_ref.abs().max()))
    report = runner.invoke(cli.app, ["report", str(path), "-o", str(tmp_path / "r"), "--top", "1"],
                           prog_name="lossforge")
    assert report.exit_code == 0, report.output
    assert "<code>y * square(inv(p))</code> + const" in (tmp_path / "r" / "index.html").read_text()
