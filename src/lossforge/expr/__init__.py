"""The symbolic language of losses: ops registry, Expr, parser, exports."""
from lossforge.expr.expr import Expr, apply, const, var
from lossforge.expr.parse import ParseError, parse

__all__ = ["Expr", "ParseError", "apply", "const", "parse", "var"]
