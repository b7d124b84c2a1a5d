"""Population-vectorised screening: checks, GEC and LRP for many candidates at once.

``run_stage(stage, candidates)`` takes the same decisions as ``stage(candidates)`` (the
per-candidate reference path of :mod:`~lossforge.evaluation.checks`, :mod:`~.gec` and
:mod:`~.lrp`), updates the stage's ``stats`` the same way and sets the same candidate fields, but
evaluates the whole population in a few vectorised passes instead of a Python loop per candidate.

How it works. The pending expressions are compiled into a :class:`Program`:

* *Shared values* (sub-expressions that do not read the prediction: label-only and
  constant-only sub-trees) are computed once per probe, with the reference's own kernels,
  whatever the number of candidates using them (``Expr`` is hash-consed, so a sub-expression
  common to many candidates is one object). Identical candidates are evaluated once.
* Every other node of every candidate is an *instance* (a row): each candidate has its own
  prediction (its own LRP trajectory), so its prediction-dependent values differ from every
  other candidate's.
* Instances are scheduled by topological level and grouped by ``(level, op, argument stores)``:
  one kernel call evaluates an op for all candidates of a group, on arguments gathered (one
  ``index_select`` per level and argument position) from value stores ``(rows, *shape)``.
  Small probes store every value broadcast to the full prediction shape (fewest groups; a
  reduced value's copies are summed where its gradient is needed); large probes store values
  at their true shape. Either way aggregations see the reference's shapes and fitted masks.
* The backward pass is explicit (no autograd graph): the groups are walked in reverse; each
  op's vector-Jacobian product is PyTorch's own derivative formula for the kernel's calls (bit
  for bit; ops without a hand-written one use autograd on the group) and is written to an *edge*
  row; a value's gradient is the sum of its edges, gathered once per level. Rows never mix
  candidates, so a candidate whose values turn non-finite cannot poison the others.
* SGD (with momentum) and Adam are applied to the stacked ``(P, *pred_shape)`` predictions with
  the same tensor operations as ``torch.optim``'s single-tensor implementations; a candidate is
  dead from its first non-finite loss value, like the reference's early stop.

Candidates the program cannot represent (a loss that reads no prediction variable, or a variable
the probe does not provide) go through the reference path, which keeps its exact behaviour
(including its errors). Populations are processed in chunks sized by a memory budget. Differences
from the reference come only from the order of floating-point sums; the label-dependence test of
``checks``, which compares two loss values bit for bit, recomputes near-ties with the reference.
``run_stage`` runs with one torch intra-op thread by default (``threads=``), restored after.

Modules (each states its contract at its top), from the bottom up:

* :mod:`.vjp` — per-op forward kernels and vector-Jacobian products of a group of rows;
* :mod:`.store_shapes` — shape arithmetic of stored values (broadcast copies, reductions);
* :mod:`.support` — which expressions a program can represent (:class:`UnsupportedExprError`);
* :mod:`.schedule` — compiling a population into a :class:`~.schedule.Schedule` (grouped levels,
  stores, pull plans), template cache;
* :mod:`.program` — :class:`Program`: a schedule's stores bound to a probe, forward and explicit
  backward (aggregations included);
* :mod:`.chunks` — memory-budgeted chunking of a population into programs, shared helpers;
* :mod:`.optim` — :func:`optimise`, the LRP's SGD/Adam on every candidate at once;
* :mod:`.box_lrp` — the LRP of box losses, stacked (box probes are not programs);
* :mod:`.scores` — the pure vectorised scores (:func:`checks_reasons`, :func:`fingerprints`,
  :func:`lrp_scores`) and :func:`torch_threads`;
* :mod:`.forked` — the LRP scores of a population split over several CPU processes
  (``processes=``);
* :mod:`.runners` — the checks/GEC/LRP runners that update candidates and stages, and
  :func:`run_stage`.

The names below are re-exported here; module-level settings (``MEMORY_BUDGET``,
``MATERIALIZE_NUMEL``, ...) are read from the module that defines them, and so are the internals
tests look at (``vjp.FORWARD``, ``vjp.BACKWARD``, ``program.class_softmax``).
"""
from __future__ import annotations

from lossforge.evaluation.batched.chunks import MAX_CHUNK, MEMORY_BUDGET, chunk_size
from lossforge.evaluation.batched.forked import forked_lrp_scores
from lossforge.evaluation.batched.optim import optimise
from lossforge.evaluation.batched.program import MATERIALIZE_NUMEL, Program
from lossforge.evaluation.batched.runners import run_stage
from lossforge.evaluation.batched.schedule import clear_cache
from lossforge.evaluation.batched.scores import (
    DEFAULT_THREADS, checks_reasons, fingerprints, lrp_scores, torch_threads)
from lossforge.evaluation.batched.support import UnsupportedExprError, supported
from lossforge.evaluation.batched.vjp import EPS

__all__ = ["Program", "UnsupportedExprError", "run_stage", "checks_reasons", "fingerprints",
           "lrp_scores", "forked_lrp_scores", "optimise", "chunk_size", "supported",
           "clear_cache", "torch_threads",
           "MEMORY_BUDGET", "MAX_CHUNK", "MATERIALIZE_NUMEL", "DEFAULT_THREADS", "EPS"]
