"""The exact-log rule: ``log`` of the softmax variable ``p`` is evaluated as ``log_softmax(z)``.

The loss language's ``log`` is protected (``log(|x| + EPS)``, :mod:`lossforge.expr.ops`). Applied
to the softmax probabilities that guard changes cross-entropy: it caps ``-log p_t`` at
``-log(1e-6) = 13.8`` and removes the gradient of confidently wrong samples (a margin of 20 gives
13.81 instead of 20 and ``dL/dz_t = -0.002`` instead of ``-1``). ``p`` is a softmax, so
``log p = z - logsumexp(z)`` is known exactly and stably without a guard.

The rule, defined here and nowhere else: a node ``op(p)`` with ``op`` in :data:`SOFTMAX_LOG`
(``log``, ``slog``, ``log10``) and the bare variable ``p`` as its argument is evaluated as
``scale * logp``, where ``logp`` is the derived variable ``log_softmax(z)`` over the classes
(:func:`lossforge.expr.kernels.log_softmax_classes`) and ``scale`` is 1 (``log``; ``slog`` too,
since ``p > 0``) or ``1 / ln 10`` (``log10``). A constant multiple, ``log(c * p)`` or
``log(p * c)`` with ``c > 0``, is ``scale * (logp + ln c)`` (GLO's coefficient form writes
``log(1 * p)`` for ``log(p)``; BaikalCMA reads ``log(1.5352 * p)``). Anything else —
``log(1 - p)``, ``log(p * y)``, ``log(y)``, ``log(-2 * p)`` — keeps the protected form.

How the backends apply it. :func:`exact_form` rewrites an expression into one where those nodes
are the variable :data:`LOGP` (times ``scale``); the canonical text of a loss never changes (its
``str`` still reads ``log(p)``), only what is evaluated. The tensor interpreter
(:func:`lossforge.expr.interpret.interpret`), the standalone source
(:func:`lossforge.expr.export.to_source`) and the batched screening
(:mod:`lossforge.evaluation.batched.schedule`, where ``logp`` is a prediction variable with the
log-softmax backward) all evaluate ``exact_form(expr)``; sympy/LaTeX show ``log(p)`` without the
guard (:func:`is_softmax_log`).
"""
from __future__ import annotations

import math
import weakref

from lossforge.expr.expr import Expr, apply, const, var

#: The softmax variable the rule applies to, and the derived variable it is rewritten into.
SOFTMAX = "p"
LOGP = "logp"

#: op -> scale of ``log_softmax(z)`` that ``op(p)`` equals exactly (``p > 0``).
SOFTMAX_LOG: dict[str, float] = {"log": 1.0, "slog": 1.0, "log10": 1.0 / math.log(10.0)}

#: original -> rewritten (only expressions the rule changes; weak keys: entries go with them).
_CACHE: "weakref.WeakKeyDictionary[Expr, Expr]" = weakref.WeakKeyDictionary()
_UNCHANGED: "weakref.WeakSet[Expr]" = weakref.WeakSet()


def _is_p(e: Expr) -> bool:
    return e.is_var and e.value == SOFTMAX


def softmax_factor(arg: Expr) -> float | None:
    """``c`` when ``arg`` is ``p`` (``c = 1``), ``c * p`` or ``p * c`` with a constant ``c > 0``;
    ``None`` otherwise."""
    if _is_p(arg):
        return 1.0
    if arg.op == "mul":
        a, b = arg.args
        c = a if _is_p(b) else b if _is_p(a) else None
        if c is not None and c.is_const and c.value > 0:
            return float(c.value)
    return None


def is_softmax_log(node: Expr) -> bool:
    """Whether ``node`` is ``log``, ``slog`` or ``log10`` of ``p`` or of a positive constant
    multiple of ``p`` (the rule applies to it)."""
    return node.op in SOFTMAX_LOG and softmax_factor(node.args[0]) is not None


def exact_form(expr: Expr) -> Expr:
    """``expr`` with every :func:`is_softmax_log` node replaced by ``scale * logp``.

    The result reads ``logp`` instead of (or besides) ``p``; it is ``expr`` itself when the rule
    does not apply. Cached per expression (the rewritten expression lives as long as the
    original, so ``id``-keyed caches of its nodes stay valid)."""
    if expr in _UNCHANGED:
        return expr
    done = _CACHE.get(expr)
    if done is not None:
        return done
    out = _rewrite(expr)
    if out is expr:
        _UNCHANGED.add(expr)
    else:
        _CACHE[expr] = out
    return out


def _rewrite(expr: Expr) -> Expr:
    if not any(is_softmax_log(n) for n in expr.nodes()):
        return expr
    logp = var(LOGP)
    new: dict[int, Expr] = {}
    for node in expr.nodes():
        if is_softmax_log(node):
            scale, c = SOFTMAX_LOG[node.op], softmax_factor(node.args[0])
            value = logp if c == 1.0 else apply("add", logp, const(math.log(c)))
            new[id(node)] = value if scale == 1.0 else apply("mul", value, const(scale))
        elif node.args:
            new[id(node)] = apply(node.op, *(new[id(a)] for a in node.args))
        else:
            new[id(node)] = node
    return new[id(expr)]


__all__ = ["LOGP", "SOFTMAX", "SOFTMAX_LOG", "exact_form", "is_softmax_log", "softmax_factor"]
