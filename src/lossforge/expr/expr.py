"""``Expr``: immutable, hashable, hash-consed loss expressions with a canonical text form.

An expression is a DAG of nodes. A node is a variable (``op == "var"``, ``value`` is its name), a
constant (``op == "const"``, ``value`` is a finite float) or the application of a registered op to
child nodes. Nodes are hash-consed: building the same node twice returns the same object, so
``==`` is identity, hashing is O(1) and shared sub-expressions are stored once.

``str(e)`` is the canonical text form and ``parse(str(e)) == e`` holds for every expression.
"""
from __future__ import annotations

import math
import threading
import weakref
from typing import Iterator

from lossforge.expr import ops as _ops

# Precedence of the text form: atoms bind tightest, then unary minus, then * /, then + -.
_PREC = {"add": 1, "sub": 1, "mul": 2, "div": 2, "neg": 3}
_ATOM = 4

_table: "weakref.WeakValueDictionary[tuple, Expr]" = weakref.WeakValueDictionary()
_lock = threading.Lock()


class Expr:
    """A loss expression node. Build with :func:`var`, :func:`const`, :func:`apply` or ``parse``."""

    __slots__ = ("op", "args", "value", "_hash", "_text", "_size", "_depth", "_vars", "__weakref__")

    op: str
    args: tuple["Expr", ...]
    value: str | float | None

    def __new__(cls, op: str, args: tuple["Expr", ...] = (), value: str | float | None = None):
        key = (op, tuple(id(a) for a in args), value)
        with _lock:
            node = _table.get(key)
            if node is not None:
                return node
            node = super().__new__(cls)
            object.__setattr__(node, "op", op)
            object.__setattr__(node, "args", args)
            object.__setattr__(node, "value", value)
            object.__setattr__(node, "_hash", hash(key))
            for slot in ("_text", "_size", "_depth", "_vars"):
                object.__setattr__(node, slot, None)
            _table[key] = node
            return node

    # immutability ------------------------------------------------------------------------------
    def __setattr__(self, name, value):
        raise AttributeError("Expr is immutable")

    def __reduce__(self):
        return (_rebuild, (str(self),))

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other) -> bool:
        return self is other

    def __ne__(self, other) -> bool:
        return self is not other

    # structure --------------------------------------------------------------------------------
    @property
    def is_var(self) -> bool:
        return self.op == "var"

    @property
    def is_const(self) -> bool:
        return self.op == "const"

    def variables(self) -> frozenset[str]:
        """Names of the variables the expression reads."""
        if self._vars is None:
            if self.is_var:
                found = frozenset({self.value})
            else:
                found = frozenset().union(*(a.variables() for a in self.args))
            object.__setattr__(self, "_vars", found)
        return self._vars

    def size(self) -> int:
        """Number of nodes of the expression written as a tree (shared sub-trees count each time)."""
        if self._size is None:
            object.__setattr__(self, "_size", 1 + sum(a.size() for a in self.args))
        return self._size

    def depth(self) -> int:
        """Length of the longest root-to-leaf path; a leaf has depth 1."""
        if self._depth is None:
            object.__setattr__(self, "_depth", 1 + max((a.depth() for a in self.args), default=0))
        return self._depth

    def cost(self) -> float:
        """Complexity: the sum of the op costs of the tree plus 1 per leaf."""
        if not self.args:
            return 1.0
        return _ops.OPS[self.op].cost + sum(a.cost() for a in self.args)

    def nodes(self) -> Iterator["Expr"]:
        """Each distinct node once, children before parents (a topological order of the DAG)."""
        seen: set[int] = set()
        stack: list[tuple[Expr, bool]] = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if id(node) in seen:
                continue
            if expanded or not node.args:
                seen.add(id(node))
                yield node
            else:
                stack.append((node, True))
                stack.extend((a, False) for a in reversed(node.args) if id(a) not in seen)

    def subexpressions(self) -> list["Expr"]:
        """Every node position in tree (pre-)order; a shared node appears once per position."""
        out: list[Expr] = []
        stack = [self]
        while stack:
            node = stack.pop()
            out.append(node)
            stack.extend(reversed(node.args))
        return out

    def replace(self, old: "Expr", new: "Expr") -> "Expr":
        """This expression with every occurrence of ``old`` replaced by ``new``."""
        if self is old:
            return new
        if not self.args:
            return self
        return apply(self.op, *(a.replace(old, new) for a in self.args))

    def constants(self) -> list[float]:
        """Constant leaves in tree pre-order (the order :meth:`with_constants` consumes)."""
        return [n.value for n in self.subexpressions() if n.is_const]

    def with_constants(self, values: "list[float]") -> "Expr":
        """This expression with its constants (pre-order) replaced by ``values``."""
        it = iter(values)

        def rebuild(node: Expr) -> Expr:
            if node.is_const:
                return const(float(next(it)))
            if not node.args:
                return node
            return apply(node.op, *(rebuild(a) for a in node.args))

        out = rebuild(self)
        if next(it, None) is not None:
            raise ValueError("more values than constants in the expression")
        return out

    # conversions (delegated; imported lazily to keep this module light: the package's one
    # allowed import back-edge, the façade documented in lossforge.expr) ----------------------
    def to_sympy(self, *, protected: bool = True):
        from lossforge.expr.export import to_sympy

        return to_sympy(self, protected=protected)

    def to_latex(self) -> str:
        from lossforge.expr.export import to_latex

        return to_latex(self)

    def to_torch(self, kind: str = "auto", **kwargs):
        from lossforge.expr.export import to_torch

        return to_torch(self, kind=kind, **kwargs)

    def to_source(self, name: str = "SearchedLoss", kind: str = "auto") -> str:
        from lossforge.expr.export import to_source

        return to_source(self, name=name, kind=kind)

    def simplify(self) -> "Expr":
        from lossforge.expr.simplify import simplify

        return simplify(self)

    # text -------------------------------------------------------------------------------------
    def __str__(self) -> str:
        if self._text is None:
            object.__setattr__(self, "_text", _format(self))
        return self._text

    def __repr__(self) -> str:
        return f"Expr({str(self)!r})"


def _rebuild(text: str) -> Expr:
    from lossforge.expr.parse import parse

    return parse(text, variables=None, strict=False)


# constructors --------------------------------------------------------------------------------
def var(name: str) -> Expr:
    """The variable ``name`` (an identifier; see ``ops.VARIABLES`` for the standard ones)."""
    if not name.isidentifier() or name in _ops.OPS:
        raise ValueError(f"invalid variable name {name!r}")
    return Expr("var", (), name)


def const(value: float) -> Expr:
    """A finite numeric constant (``-0.0`` is normalised to ``0.0``)."""
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"constants must be finite, got {value!r}")
    return Expr("const", (), v + 0.0)


def apply(op: str, *args: Expr) -> Expr:
    """The node ``op(*args)``; checks that ``op`` exists and the arity matches."""
    spec = _ops.get(op)
    if len(args) != spec.arity:
        raise ValueError(f"{op} takes {spec.arity} argument(s), got {len(args)}")
    for a in args:
        if not isinstance(a, Expr):
            raise TypeError(f"arguments of {op} must be Expr, got {type(a).__name__}")
    return Expr(op, tuple(args))


# canonical text ------------------------------------------------------------------------------
def format_number(v: float) -> str:
    """Shortest text that parses back to exactly ``v`` (integers without a trailing ``.0``)."""
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


def _prec(e: Expr) -> int:
    if e.is_const and e.value < 0:
        return _PREC["neg"]
    return _PREC.get(e.op, _ATOM)


def _format(e: Expr) -> str:
    if e.is_var:
        return e.value
    if e.is_const:
        return format_number(e.value)
    spec = _ops.OPS[e.op]
    if spec.infix:
        left, right = e.args
        p = _PREC[e.op]
        ls = _paren(left, _prec(left) < p)
        # right operand: parenthesise equal precedence (left-associative) and negative numbers
        rs = _paren(right, _prec(right) <= p or (right.is_const and right.value < 0))
        return f"{ls} {spec.infix} {rs}"
    if e.op == "neg":
        (a,) = e.args
        bare = (a.is_var or (not a.is_const and _prec(a) == _ATOM))
        return "-" + _paren(a, not bare)
    return f"{e.op}({', '.join(str(a) for a in e.args)})"


def _paren(e: Expr, wrap: bool) -> str:
    return f"({e})" if wrap else str(e)
