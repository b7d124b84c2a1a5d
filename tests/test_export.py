"""Exports: ``to_torch`` agrees with ``to_sympy`` numerically, ``to_source`` runs in a fresh
interpreter (importing only torch) and equals ``to_torch``, module contracts, LaTeX."""
from __future__ import annotations

import functools
import json
import math
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import sympy
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lossforge import zoo
from lossforge.expr import Expr, export, parse
from lossforge.expr import kernels as K
from lossforge.expr.interpret import RegressionExprLoss, interpret, loss_kind

from test_expr import classification_inputs, exprs, full, reliable_points


def sympy_values(e: Expr, env: dict[str, torch.Tensor]) -> np.ndarray:
    """``to_sympy(e)`` lambdified with NumPy/SciPy on the variables of ``env`` (full shape;
    complex or non-finite results become NaN)."""
    shape = tuple(next(iter(env.values())).shape)
    names = sorted(e.variables())
    syms = [sympy.Symbol(n, real=True) for n in names]
    # a division by exactly zero (e.g. p / -(1e-06)) is sympy's complex infinity: NumPy has no
    # name for it, and torch gives inf or nan there, which the comparison skips anyway
    s = export.to_sympy(e).xreplace({sympy.zoo: sympy.nan})
    fn = sympy.lambdify(syms, s, modules=[export.numpy_aggregations(shape), "scipy", "numpy"])
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = np.asarray(fn(*(env[n].numpy() for n in names)))
        if np.iscomplexobj(out):
            out = np.where(out.imag == 0, out.real, np.nan)
        return np.broadcast_to(out.astype(np.float64), shape)


# ---- to_torch == to_sympy ----------------------------------------------------------------------
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(exprs, st.integers(0, 5))
def test_to_torch_matches_to_sympy(e, seed):
    logits, target = classification_inputs(seed)
    env, mask = K.prepare_classification(logits, target)
    with torch.no_grad():
        got = full(interpret(e, env), logits.shape)
    ref = sympy_values(e, env)
    ok = reliable_points(e, env) & np.isfinite(ref)
    np.testing.assert_allclose(got[ok], ref[ok], rtol=1e-6, atol=1e-9, err_msg=str(e))
    # the module is the mean of the element-wise values
    if ok.all():
        value = e.to_torch()(logits, target)
        assert value.dim() == 0
        assert value.item() == pytest.approx(float(ref.mean()), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("name", [n for n in zoo.names("classification")
                                  if zoo.get(n, "classification").expr is not None])
def test_zoo_to_torch_matches_to_sympy(name):
    e = zoo.get(name, "classification").expr
    logits, target = classification_inputs(7, shape=(3, 4, 3, 3))
    env, _ = K.prepare_classification(logits, target)
    got = full(interpret(e, env), logits.shape)
    np.testing.assert_allclose(got, sympy_values(e, env), rtol=1e-9)


# ---- to_source in a fresh interpreter ----------------------------------------------------------
RUNNER = textwrap.dedent(
    """
    import importlib.util, json, sys
    sys.modules["lossforge"] = None  # exported files must not import lossforge
    import torch
    inputs = torch.load(sys.argv[2])
    results = []
    for i, path in enumerate(json.load(open(sys.argv[1]))):
        spec = importlib.util.spec_from_file_location(f"loss_{i}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        loss = mod.Exported()
        results.append([float(loss(logits, target)).hex() for logits, target in inputs])
    print(json.dumps(results))
    """
)


@functools.lru_cache(maxsize=1)
def _export_inputs():
    return [classification_inputs(11, shape=(2, 3, 3, 4), ignore=True),
            classification_inputs(12, shape=(5, 4)),
            classification_inputs(13, shape=(2, 3, 2, 2))]


def _same(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-300)


def run_exported(expressions: list[Expr], tmp_path) -> list[list[float]]:
    """Write ``to_source`` of each expression, import all in ONE fresh interpreter, evaluate."""
    paths = []
    for i, e in enumerate(expressions):
        path = tmp_path / f"loss_{i}.py"
        path.write_text(e.to_source("Exported"))
        paths.append(str(path))
    (tmp_path / "paths.json").write_text(json.dumps(paths))
    torch.save(_export_inputs(), tmp_path / "inputs.pt")
    (tmp_path / "runner.py").write_text(RUNNER)
    proc = subprocess.run([sys.executable, str(tmp_path / "runner.py"), str(tmp_path / "paths.json"),
                           str(tmp_path / "inputs.pt")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return [[float.fromhex(v) for v in row] for row in json.loads(proc.stdout)]


ZOO_EXPRS = [zoo.get(n, "classification").expr for n in zoo.names("classification")
             if zoo.get(n, "classification").expr is not None]


@settings(max_examples=1, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(exprs, min_size=100, max_size=100))
def test_to_source_matches_to_torch_in_fresh_interpreter(tmp_path_factory, expressions):
    """One subprocess (one example: starting python + torch is the cost) evaluates 100 random
    expressions and every zoo expression on three inputs."""
    expressions = expressions + ZOO_EXPRS
    got = run_exported(expressions, tmp_path_factory.mktemp("exported"))
    assert len(got) == len(expressions)
    for e, row in zip(expressions, got):
        module = e.to_torch()
        for (logits, target), value in zip(_export_inputs(), row):
            expected = float(module(logits, target))
            assert _same(value, expected), f"{e}: source {value!r} != torch {expected!r}"


def test_source_text():
    e = parse("-mean_c(log(p) - y / p)")
    src = e.to_source("BaikalLoss")
    assert "class BaikalLoss(torch.nn.Module)" in src
    assert "-mean_c(log(p) - y / p)" in src
    imports = [line for line in src.splitlines() if line.startswith(("import ", "from "))]
    assert imports == ["import torch"]
    compile(src, "<exported>", "exec")
    with pytest.raises(ValueError, match="identifier"):
        e.to_source("not a name")


def test_regression_source_and_module():
    e = parse("mean_c(square(f - y))")
    ns: dict = {}
    exec(compile(e.to_source("Reg"), "<exported>", "exec"), ns)
    pred = torch.randn(6, 2, dtype=torch.float64)
    target = torch.randn(6, 2, dtype=torch.float64)
    ref = torch.nn.functional.mse_loss(pred, target)
    assert ns["Reg"]()(pred, target).item() == pytest.approx(ref.item(), rel=1e-12)
    module = e.to_torch()
    assert isinstance(module, RegressionExprLoss)
    assert module(pred, target).item() == pytest.approx(ref.item(), rel=1e-12)
    # 1-D predictions
    assert module(pred[:, 0], target[:, 0]).item() == pytest.approx(
        torch.nn.functional.mse_loss(pred[:, 0], target[:, 0]).item(), rel=1e-12)


# ---- module contract ---------------------------------------------------------------------------
def test_module_is_a_drop_in_for_cross_entropy():
    e = parse("-sum_c(y * log(p))")
    module = e.to_torch()
    assert isinstance(module, torch.nn.Module) and module.formula == str(e)
    assert "ignore_index=255" in repr(module)
    logits, target = classification_inputs(3, shape=(4, 5, 3, 3), ignore=True)
    logits.requires_grad_(True)
    loss = module(logits, target)
    ref = torch.nn.functional.cross_entropy(logits, target, ignore_index=255)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-4)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    # ignored positions get no gradient
    ignored = (target == 255).unsqueeze(1).expand_as(logits)
    assert (logits.grad[ignored] == 0).all()
    # custom ignore index
    target2 = target.clone()
    target2[target == 255] = -1
    assert e.to_torch(ignore_index=-1)(logits, target2).item() == pytest.approx(loss.item())


def test_module_input_validation():
    module = parse("-sum_c(y * log(p))").to_torch()
    with pytest.raises(ValueError, match="target must be class indices"):
        module(torch.randn(2, 3, 4), torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="outside"):
        module(torch.randn(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="logits must be"):
        module(torch.randn(3), torch.zeros(3, dtype=torch.long))


def test_loss_kind_and_missing_variables():
    assert loss_kind(parse("log(p) * y")) == "classification"
    assert loss_kind(parse("square(f - y)")) == "regression"
    with pytest.raises(ValueError, match="cannot infer"):
        loss_kind(parse("i / u + p"))
    env = {"p": torch.rand(2, 3)}
    with pytest.raises(ValueError, match="variable 'y'"):
        interpret(parse("p * y"), env)
    with pytest.raises(ValueError, match="unknown loss kind"):
        export.to_torch(parse("p"), kind="ranking")


def test_constant_and_aggregated_constant_expressions():
    logits, target = classification_inputs(5, shape=(2, 3, 2, 2), ignore=True)
    assert parse("2").to_torch()(logits, target).item() == 2.0
    assert parse("sum_c(2)").to_torch()(logits, target).item() == 6.0  # 2 summed over C = 3
    assert parse("mean_bs(1) + p * 0").to_torch()(logits, target).item() == 1.0


# ---- sympy and LaTeX -------------------------------------------------------------------------
def test_to_sympy_spells_out_protected_forms():
    p, y = sympy.symbols("p y", real=True)
    assert sympy.simplify(parse("log(y)").to_sympy() - sympy.log(sympy.Abs(y) + 1e-6)) == 0
    assert sympy.simplify(parse("log(1 - p)").to_sympy() - sympy.log(sympy.Abs(1 - p) + 1e-6)) == 0
    # log of the softmax itself is exact (lossforge.expr.exact): no guard to spell out
    assert parse("log(p)").to_sympy() == sympy.log(p)
    assert parse("slog(p)").to_sympy() == sympy.log(p)
    assert parse("log10(p)").to_sympy() == sympy.log(p, 10)
    assert sympy.simplify(parse("p / y").to_sympy() - p / (y + 1e-6)) == 0
    s = parse("-sum_c(y * log(p))").to_sympy()
    assert s.has(sympy.Function("sum_c"))
    opaque = parse("log(p) + log(p)").to_sympy(protected=False)
    assert opaque == 2 * sympy.Function("log")(p)


@pytest.mark.parametrize("text, expected", [
    ("-sum_c(y * log(p))", r"-\sum_{c}\left[y \cdot \log\left(p\right)\right]"),
    ("p / y", r"\frac{p}{y}"),
    ("inv(p)", r"\frac{1}{p}"),
    ("square(p - y)", r"\left(p - y\right)^{2}"),
    ("abs(p)", r"\left|p\right|"),
    ("sqrt(p)", r"\sqrt{p}"),
    ("1e-07 * p", r"1 \cdot 10^{-7} \cdot p"),
    ("(p + y) * z", r"\left(p + y\right) \cdot z"),
])
def test_to_latex(text, expected):
    assert parse(text).to_latex() == expected


def test_every_zoo_expression_has_latex():
    for name in zoo.names():
        e = zoo.get(name).expr
        if e is not None:
            latex = e.to_latex()
            assert latex and "None" not in latex
