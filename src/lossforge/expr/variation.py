"""Random generation and variation of loss expressions, all seeded by a ``numpy.random.Generator``.

Trees (``kind="tree"`` spaces, AutoLoss-Zero and GLO):

* :func:`random_tree` builds an unconstrained tree; :func:`random_expr` retries until the result
  is valid in the space (reads the label and the prediction, within the size/depth limits).
* AutoLoss-Zero point mutations (:func:`mutate`): insert a node on an edge, delete a node (it is
  replaced by one of its inputs), replace an op by another of the same arity, replace a leaf.
* GP variation (GLO, EvoMAL): :func:`subtree_crossover` and :func:`subtree_mutation`.

Positions are tree positions (paths of child indices), so a sub-expression shared by
hash-consing is changed only where it was picked. Every variation returns an expression that is
valid in the space and differs from its parent(s), or the documented fallback.

DAG genomes (``kind="dag"`` spaces, NLFS) live in :mod:`lossforge.expr.dag`.
"""
from __future__ import annotations

import numpy as np

from lossforge.expr.expr import Expr, apply, const, var
from lossforge.expr.spaces import SearchSpace, VariationError

Path = tuple[int, ...]

#: Default weights of the op categories in random trees (normalised over those the space has).
CATEGORY_WEIGHTS = {"binary": 0.45, "unary": 0.4, "aggregation": 0.15}
MUTATIONS = ("insert", "delete", "replace", "leaf")


# ---- tree positions ---------------------------------------------------------------------------
def positions(expr: Expr) -> list[tuple[Path, Expr]]:
    """Every tree position ``(path, node)`` in pre-order (the root has path ``()``)."""
    out: list[tuple[Path, Expr]] = []
    stack: list[tuple[Path, Expr]] = [((), expr)]
    while stack:
        path, node = stack.pop()
        out.append((path, node))
        for i in reversed(range(len(node.args))):
            stack.append((path + (i,), node.args[i]))
    return out


def replace_at(expr: Expr, path: Path, new: Expr) -> Expr:
    """``expr`` with the node at tree position ``path`` replaced by ``new``."""
    if not path:
        return new
    i = path[0]
    args = list(expr.args)
    args[i] = replace_at(args[i], path[1:], new)
    return apply(expr.op, *args)


def _depth_of_path(path: Path) -> int:
    return len(path) + 1


# ---- random trees -----------------------------------------------------------------------------
def _leaf(value: str | float) -> Expr:
    return var(value) if isinstance(value, str) else const(value)


def random_leaf(space: SearchSpace, rng: np.random.Generator, const_prob: float = 0.2,
                exclude: Expr | None = None) -> Expr:
    """A variable of the space, or (with ``const_prob``, when the space has any) a constant."""
    for _ in range(20):
        if space.constants and rng.random() < const_prob:
            leaf = const(space.constants[int(rng.integers(len(space.constants)))])
        else:
            leaf = var(space.variables[int(rng.integers(len(space.variables)))])
        if leaf is not exclude:
            return leaf
    return leaf


def _categories(space: SearchSpace, weights: dict[str, float]) -> tuple[list[str], np.ndarray]:
    avail = {"binary": space.binary, "unary": space.unary, "aggregation": space.aggregations}
    cats = [c for c in ("binary", "unary", "aggregation") if avail[c]]
    w = np.array([weights.get(c, 0.0) for c in cats], dtype=float)
    if w.sum() <= 0:
        w = np.ones(len(cats))
    return cats, w / w.sum()


def random_op(space: SearchSpace, rng: np.random.Generator, arity: int | None = None,
              weights: dict[str, float] | None = None) -> str:
    """A random op of the space: category by ``weights`` (default :data:`CATEGORY_WEIGHTS`),
    then uniform within it. ``arity=1`` draws among unary ops and aggregations."""
    cats, w = _categories(space, weights or CATEGORY_WEIGHTS)
    if arity is not None:
        keep = [i for i, c in enumerate(cats) if (c == "binary") == (arity == 2)]
        if not keep:
            raise VariationError(f"space {space.name!r} has no op of arity {arity}")
        cats = [cats[i] for i in keep]
        w = w[keep] / w[keep].sum()
    cat = cats[int(rng.choice(len(cats), p=w))]
    pool = {"binary": space.binary, "unary": space.unary, "aggregation": space.aggregations}[cat]
    return pool[int(rng.integers(len(pool)))]


def random_tree(space: SearchSpace, rng: np.random.Generator, max_depth: int,
                method: str = "grow", leaf_prob: float = 0.3, const_prob: float = 0.2,
                weights: dict[str, float] | None = None) -> Expr:
    """An unconstrained random tree of depth at most ``max_depth``.

    ``method="full"``: every branch reaches ``max_depth``; ``"grow"``: below the root, a node is
    a leaf with probability ``leaf_prob``. The tree need not be a valid loss (see
    :func:`random_expr`).
    """
    if method not in ("grow", "full"):
        raise ValueError(f"method must be 'grow' or 'full', got {method!r}")

    def gen(depth_left: int, is_root: bool) -> Expr:
        if depth_left <= 1:
            return random_leaf(space, rng, const_prob)
        if method == "grow" and not is_root and rng.random() < leaf_prob:
            return random_leaf(space, rng, const_prob)
        op = random_op(space, rng, weights=weights)
        arity = 2 if op in space.binary else 1
        return apply(op, *(gen(depth_left - 1, False) for _ in range(arity)))

    return gen(max_depth, True)


def random_expr(space: SearchSpace, rng: np.random.Generator, min_depth: int = 2,
                max_depth: int | None = None, method: str = "ramped", max_tries: int = 2000,
                **kwargs) -> Expr:
    """A random expression valid in ``space`` (tree spaces; DAG spaces go through a genome).

    ``method="ramped"`` (ramped half-and-half): each try draws a depth in
    ``[min_depth, max_depth]`` (default ``max_depth = min(6, space.max_depth)``) and grow or full;
    ``"grow"``/``"full"`` use ``max_depth``. Retries until :meth:`SearchSpace.is_valid`.
    A :class:`~lossforge.expr.bundle.ProductSpace` (joint search) gives a bundle, one random
    expression per slot.
    """
    if space.kind == "product":
        return space.random_expr(rng, min_depth=min_depth, max_depth=max_depth, method=method,
                                 max_tries=max_tries, **kwargs)
    if space.kind == "dag":
        from lossforge.expr.dag import dag_to_expr, random_dag  # dag builds on this module

        return dag_to_expr(random_dag(space, rng, max_tries=max_tries))
    if space.kind != "tree":
        raise ValueError(f"random_expr needs a tree or DAG space, got kind {space.kind!r}")
    hi = min(6, space.max_depth) if max_depth is None else min(max_depth, space.max_depth)
    lo = max(2, min(min_depth, hi))
    for _ in range(max_tries):
        if method == "ramped":
            depth = int(rng.integers(lo, hi + 1))
            how = "grow" if rng.random() < 0.5 else "full"
        else:
            depth, how = hi, method
        e = random_tree(space, rng, depth, method=how, **kwargs)
        if space.is_valid(e):
            return e
    raise VariationError(f"no valid expression of space {space.name!r} in {max_tries} tries; "
                         "raise max_size/max_depth or check the space's variables")


# ---- AutoLoss-Zero point mutations ---------------------------------------------------------------
def mutate_insert(expr: Expr, space: SearchSpace, rng: np.random.Generator) -> Expr:
    """Insert a node on a random edge: ``x -> u(x)`` or ``x -> b(x, leaf)`` (operand order
    random; the new operand is a leaf, or with probability 0.3 a depth-2 subtree)."""
    pos = positions(expr)
    path, node = pos[int(rng.integers(len(pos)))]
    op = random_op(space, rng)
    if op in space.binary:
        other = random_tree(space, rng, 2 if rng.random() < 0.3 else 1)
        args = (node, other) if rng.random() < 0.5 else (other, node)
        new = apply(op, *args)
    else:
        new = apply(op, node)
    return replace_at(expr, path, new)


def mutate_delete(expr: Expr, space: SearchSpace, rng: np.random.Generator) -> Expr | None:
    """Delete a random op node: it is replaced by one of its inputs. ``None`` for a leaf-only
    expression."""
    inner = [(p, n) for p, n in positions(expr) if n.args]
    if not inner:
        return None
    path, node = inner[int(rng.integers(len(inner)))]
    return replace_at(expr, path, node.args[int(rng.integers(len(node.args)))])


def mutate_replace(expr: Expr, space: SearchSpace, rng: np.random.Generator) -> Expr | None:
    """Replace a random op by another op of the same arity (unary ops and aggregations are both
    arity 1). ``None`` when no op has an alternative."""
    inner = [(p, n) for p, n in positions(expr) if n.args]
    if not inner:
        return None
    path, node = inner[int(rng.integers(len(inner)))]
    pool = space.binary if len(node.args) == 2 else space.unary + space.aggregations
    pool = tuple(o for o in pool if o != node.op)
    if not pool:
        return None
    return replace_at(expr, path, apply(pool[int(rng.integers(len(pool)))], *node.args))


def mutate_leaf(expr: Expr, space: SearchSpace, rng: np.random.Generator) -> Expr | None:
    """Replace a random leaf by a different variable or constant of the space."""
    leaves = [(p, n) for p, n in positions(expr) if not n.args]
    path, node = leaves[int(rng.integers(len(leaves)))]
    new = random_leaf(space, rng, exclude=node)
    return None if new is node else replace_at(expr, path, new)


_MUTATORS = {"insert": mutate_insert, "delete": mutate_delete, "replace": mutate_replace,
             "leaf": mutate_leaf}


def mutate(expr: Expr, space: SearchSpace, rng: np.random.Generator,
           kinds: tuple[str, ...] = MUTATIONS, max_tries: int = 200) -> Expr:
    """One AutoLoss-Zero mutation, of a kind drawn uniformly from ``kinds``
    (``insert``, ``delete``, ``replace``, ``leaf``).

    Retries until the child differs from ``expr`` and is valid in ``space``; after ``max_tries``
    falls back to a fresh :func:`random_expr` (always different and valid). A
    :class:`~lossforge.expr.bundle.ProductSpace` mutates one uniformly chosen slot of the bundle.
    """
    if space.kind == "product":
        return space.mutate(expr, rng, kinds=kinds, max_tries=max_tries)
    unknown = set(kinds) - set(_MUTATORS)
    if unknown:
        raise ValueError(f"unknown mutation kinds {sorted(unknown)}; use {MUTATIONS}")
    for _ in range(max_tries):
        kind = kinds[int(rng.integers(len(kinds)))]
        child = _MUTATORS[kind](expr, space, rng)
        if child is not None and child is not expr and space.is_valid(child):
            return child
    for _ in range(100):
        child = random_expr(space, rng)
        if child is not expr:
            return child
    raise VariationError("mutation could not change the expression")


# ---- GP variation (GLO / EvoMAL) ---------------------------------------------------------------
def subtree_crossover(a: Expr, b: Expr, space: SearchSpace, rng: np.random.Generator,
                      max_tries: int = 50) -> tuple[Expr, Expr]:
    """Swap a random subtree of ``a`` with a random subtree of ``b``.

    Each child is the first valid one found in ``max_tries`` swaps; a child for which none is
    valid is its parent unchanged (the caller sees ``child is parent``).
    """
    pa, pb = positions(a), positions(b)
    c1 = c2 = None
    for _ in range(max_tries):
        path_a, sub_a = pa[int(rng.integers(len(pa)))]
        path_b, sub_b = pb[int(rng.integers(len(pb)))]
        if c1 is None:
            x = replace_at(a, path_a, sub_b)
            if x is not a and space.is_valid(x):
                c1 = x
        if c2 is None:
            x = replace_at(b, path_b, sub_a)
            if x is not b and space.is_valid(x):
                c2 = x
        if c1 is not None and c2 is not None:
            break
    return (a if c1 is None else c1), (b if c2 is None else c2)


def subtree_mutation(expr: Expr, space: SearchSpace, rng: np.random.Generator,
                     max_subtree_depth: int = 4, max_tries: int = 100) -> Expr:
    """Replace a random subtree by a fresh random (grow) subtree of depth at most
    ``max_subtree_depth``; retries until different and valid, falls back to :func:`mutate`."""
    pos = positions(expr)
    for _ in range(max_tries):
        path, _node = pos[int(rng.integers(len(pos)))]
        room = space.max_depth - len(path)
        if room < 1:
            continue
        sub = random_tree(space, rng, int(rng.integers(1, min(max_subtree_depth, room) + 1)))
        child = replace_at(expr, path, sub)
        if child is not expr and space.is_valid(child):
            return child
    return mutate(expr, space, rng)


__all__ = [
    "MUTATIONS", "mutate", "mutate_delete", "mutate_insert", "mutate_leaf",
    "mutate_replace", "positions", "random_expr", "random_leaf", "random_op", "random_tree",
    "replace_at", "subtree_crossover", "subtree_mutation",
]
