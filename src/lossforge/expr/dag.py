"""NLFS DAG genomes: random generation, mutation and conversion to an expression.

DAG genomes (``kind="dag"`` spaces, NLFS) are JSON-able dicts::

    {"inputs": ["y", "p", "1", "-1"],          # variable names or number texts
     "nodes": [{"op": "log", "in": [1]},        # node k has index len(inputs) + k and reads
               {"op": "mul", "in": [0, 4]},     # only smaller indices: no cycle can exist
               ...],                            # the last node is the root
     "aggregation": "sum_c", "orientation": 1}

:func:`dag_to_expr` gives ``orientation * sum_c(root)`` (``-sum_c(root)`` for ``-1``);
:func:`random_dag` and :func:`mutate_dag` (70 % change an op, 15 % rewire an input, 15 % switch a
node between unary and binary) keep genomes valid. Choosing the orientation belongs to the NLFS
integrity check, not to this module.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np

from lossforge.expr.expr import Expr, apply, const, format_number, var
from lossforge.expr.spaces import CONTEXT_VARIABLES, LABEL, SearchSpace, VariationError

__all__ = ["dag_inputs", "dag_to_expr", "mutate_dag", "random_dag"]


def dag_inputs(space: SearchSpace) -> list[str]:
    """Input names of a DAG genome: the label, the prediction variable(s), the class prior ``q``
    (``nlfs+q`` only), then the constants."""
    label = [LABEL] if LABEL in space.variables else []  # box spaces (i, u, e) have no label
    context = [v for v in space.variables if v in CONTEXT_VARIABLES]
    return (label + list(space.prediction_variables) + context
            + [format_number(c) for c in (space.constants or ())])


def _input_expr(name: str) -> Expr:
    return var(name) if name.isidentifier() else const(float(name))


def dag_to_expr(genome: dict[str, Any]) -> Expr:
    """The loss of a DAG genome: ``sum_c(root)`` (the genome's aggregation), negated when
    ``orientation == -1``. Only nodes the root depends on appear."""
    values = [_input_expr(n) for n in genome["inputs"]]
    for node in genome["nodes"]:
        values.append(apply(node["op"], *(values[i] for i in node["in"])))
    out = apply(genome.get("aggregation", "sum_c"), values[-1])
    orientation = genome.get("orientation", 1)
    if orientation not in (1, -1):
        raise ValueError(f"orientation must be 1 or -1, got {orientation!r}")
    return out if orientation == 1 else apply("neg", out)


def _reached_inputs(genome: dict[str, Any]) -> set[int]:
    """Indices of the inputs the root depends on."""
    n_in = len(genome["inputs"])
    nodes = genome["nodes"]
    seen, stack, found = set(), [n_in + len(nodes) - 1], set()
    while stack:
        i = stack.pop()
        if i in seen:
            continue
        seen.add(i)
        if i < n_in:
            found.add(i)
        else:
            stack.extend(nodes[i - n_in]["in"])
    return found


def _random_node(space: SearchSpace, rng: np.random.Generator, index: int,
                 unary_prob: float) -> dict[str, Any]:
    if rng.random() < unary_prob:
        return {"op": space.unary[int(rng.integers(len(space.unary)))],
                "in": [int(rng.integers(index))]}
    return {"op": space.binary[int(rng.integers(len(space.binary)))],
            "in": [int(rng.integers(index)), int(rng.integers(index))]}


def random_dag(space: SearchSpace, rng: np.random.Generator, max_tries: int = 2000,
               orientation: int = 1) -> dict[str, Any]:
    """A random NLFS cell whose loss is valid in ``space`` (retried until it is): ``dag_hidden``
    hidden nodes (unary with ``hidden_unary_prob``) and a root (unary with ``root_unary_prob``),
    each reading any earlier input or node."""
    if space.kind != "dag":
        raise ValueError(f"random_dag needs a DAG space, got kind {space.kind!r}")
    inputs = dag_inputs(space)
    agg = space.aggregations[0] if space.aggregations else "sum_c"
    n_in = len(inputs)
    for _ in range(max_tries):
        nodes = []
        for k in range(space.dag_hidden + 1):
            prob = space.root_unary_prob if k == space.dag_hidden else space.hidden_unary_prob
            nodes.append(_random_node(space, rng, n_in + k, prob))
        genome = {"inputs": list(inputs), "nodes": nodes, "aggregation": agg,
                  "orientation": orientation}
        reached = {inputs[i] for i in _reached_inputs(genome)}
        if (LABEL in space.variables and LABEL not in reached) or \
                not reached & set(space.prediction_variables):
            continue  # cheap pre-check before building the expression
        if space.is_valid(dag_to_expr(genome)):
            return genome
    raise VariationError(f"no valid DAG of space {space.name!r} in {max_tries} tries")


def mutate_dag(genome: dict[str, Any], space: SearchSpace, rng: np.random.Generator,
               probs: tuple[float, float, float] = (0.7, 0.15, 0.15),
               max_tries: int = 500) -> dict[str, Any]:
    """NLFS mutation of a copy of ``genome``: with ``probs`` change a node's op (same arity),
    rewire one input of a node to another earlier index, or switch a node unary <-> binary
    (a new binary node keeps its input and gets a random second one; a new unary node keeps one
    input). Retries until the loss differs from the parent's and is valid; falls back to a fresh
    :func:`random_dag` with the parent's orientation."""
    parent = dag_to_expr(genome)
    n_in = len(genome["inputs"])
    p = np.asarray(probs, dtype=float) / sum(probs)
    for _ in range(max_tries):
        child = copy.deepcopy(genome)
        k = int(rng.integers(len(child["nodes"])))
        node = child["nodes"][k]
        index = n_in + k
        kind = int(rng.choice(3, p=p))
        if kind == 0:
            pool = space.unary if len(node["in"]) == 1 else space.binary
            pool = [o for o in pool if o != node["op"]]
            if not pool:
                continue
            node["op"] = pool[int(rng.integers(len(pool)))]
        elif kind == 1:
            j = int(rng.integers(len(node["in"])))
            choices = [i for i in range(index) if i != node["in"][j]]
            if not choices:
                continue
            node["in"][j] = choices[int(rng.integers(len(choices)))]
        elif len(node["in"]) == 1:
            node["op"] = space.binary[int(rng.integers(len(space.binary)))]
            other = int(rng.integers(index))
            node["in"] = [node["in"][0], other] if rng.random() < 0.5 else [other, node["in"][0]]
        else:
            node["op"] = space.unary[int(rng.integers(len(space.unary)))]
            node["in"] = [node["in"][int(rng.integers(2))]]
        expr = dag_to_expr(child)
        if expr is not parent and space.is_valid(expr):
            return child
    return random_dag(space, rng, orientation=genome.get("orientation", 1))
