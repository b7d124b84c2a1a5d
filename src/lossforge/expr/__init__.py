"""The symbolic language of losses: ops registry, Expr, parser, interpreter, exports.

Modules: :mod:`.ops` (the op registry) and :mod:`.kernels` (their torch kernels); :mod:`.expr`
(``Expr``); :mod:`.parse` (text -> ``Expr``); :mod:`.interpret` (tensor values, ``loss_value``,
the ``nn.Module`` losses); :mod:`.export` (``to_torch``, ``to_source``, ``to_sympy``,
``to_latex``); :mod:`.simplify`; :mod:`.spaces` (search spaces, ``VariationError``);
:mod:`.variation` (trees) and :mod:`.dag` (NLFS genomes); :mod:`.bundle` (multi-slot losses).

Imports go one way, from these modules down to :mod:`.expr` and :mod:`.ops`, with ONE allowed
back-edge, the façade: ``Expr.to_sympy/to_latex/to_torch/to_source`` and ``Expr.simplify`` import
:mod:`.export` / :mod:`.simplify` lazily inside the method (and through them :mod:`.interpret`),
and unpickling an ``Expr`` imports :mod:`.parse` lazily, so that an expression is one call away
from every export while ``lossforge.expr.expr`` stays light.
``tests/test_import_graph.py`` allows a cycle only among these façade modules.
"""
from lossforge.expr.expr import Expr, apply, const, var
from lossforge.expr.parse import ParseError, parse

__all__ = ["Expr", "ParseError", "apply", "const", "parse", "var"]
