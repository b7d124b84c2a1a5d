"""A compiled population bound to a probe, and its execution: forward and explicit backward.

Contract. ``Program(exprs, probe, device)`` compiles ``exprs`` into a
:class:`~lossforge.evaluation.batched.schedule.Schedule`, allocates its value and edge stores and
binds it to ``probe``: ``bind`` computes the
label-dependent shared values, the fitted masks and counts of the aggregations and the constant
gradient of each root reduction; it can be re-bound to another probe of the same kind and shape.
``run(X)`` (``X (P, *pred_shape)``, ``X[i]`` the prediction of ``exprs[i]``) returns the loss values
``(P,)`` and the gradients ``(P, *pred_shape)``, in the order the expressions were given; ``step``
is the same in the program's internal row/root order (used by the optimiser). Rows never mix
candidates: a non-finite value in one candidate does not touch the others. No autograd graph.
Aggregation groups are evaluated and differentiated here (:func:`_agg_fw`, :func:`_agg_bw`: they
need the probe's fitted mask); every other op through :mod:`~lossforge.evaluation.batched.vjp`.
"""
from __future__ import annotations

import math

import torch

from lossforge.evaluation.batched.schedule import Group, Schedule
from lossforge.evaluation.batched.store_shapes import representative
from lossforge.evaluation.probes import Probe
from lossforge.expr import kernels as K
from lossforge.expr.exact import LOGP
from lossforge.expr.expr import Expr
from lossforge.expr.interpret import interpret


#: Predictions with at most this many elements: every value is stored at the full shape.
MATERIALIZE_NUMEL = 4096


class Program:
    """A population of expressions compiled for one probe shape.

    ``Program(exprs, probe, device)`` compiles and binds to ``probe`` (label-dependent values,
    masks); :meth:`bind` re-binds to another probe of the same kind and shape (other labels).
    :meth:`run` gives every loss value ``(P,)`` and the gradients ``(P, *pred_shape)`` with respect
    to each candidate's own prediction ``X[i]``. ``materialize``: store every value at the full
    prediction shape (fewest groups: best for small probes); default when the prediction has at
    most :data:`MATERIALIZE_NUMEL` elements. Raises
    :class:`~lossforge.evaluation.batched.support.UnsupportedExprError` for an expression that
    reads no prediction variable or a variable the probe does not provide.
    """

    def __init__(self, exprs: list[Expr], probe: Probe, device=None, dtype=torch.float32,
                 materialize: bool | None = None):
        self.exprs = list(exprs)
        self.P = len(self.exprs)
        self.kind = probe.kind
        self.shape = tuple(probe.pred_shape)
        self.nd = len(self.shape)
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else probe.target.device
        if materialize is None:
            materialize = math.prod(self.shape) <= MATERIALIZE_NUMEL
        self.materialize = materialize
        self.schedule = sched = Schedule(self.exprs, self.kind, self.shape, materialize,
                                         self.device)
        self.order, self.row_exprs = sched.order, sched.row_exprs
        # values are written before they are read; edge rows too, except the zero rows
        self.S = [torch.empty((n, *sh), dtype=self.dtype, device=self.device)
                  for n, sh in zip(sched.value_rows, sched.keys)]
        self.E = [torch.empty((n, *sh), dtype=self.dtype, device=self.device)
                  for n, sh in zip(sched.edge_rows, sched.keys)]
        for t in self.E:
            t[0].zero_()
        self._views()
        self.bind(probe)

    def _views(self) -> None:
        """The per-step views of the persistent buffers (the eager path)."""
        dev = self.device
        self._zero = torch.zeros((), dtype=self.dtype, device=dev)
        self._bound = self._bind_buffers(self.S, self.E)
        for L in self.schedule.levels:
            for g in L.groups:
                g.zero = self._zero

    def _bind_buffers(self, S, E) -> "_Bound":
        """Gather buffers and every view a step reads or writes, for value stores ``S`` and edge
        stores ``E`` (made once: a step then only calls kernels)."""
        dt, dev, sched = self.dtype, self.device, self.schedule
        b = _Bound()
        b.var_views = [(v, S[sched.kR][base:base + self.P]) for v, base in sched.var_base.items()]
        b.levels = []
        for L in sched.levels:
            bufs = {}
            gathers = []
            for pos, kk, idx in L.gather_rows:
                if type(idx) is slice:
                    bufs[(pos, kk)] = S[kk][idx]
                else:
                    buf = torch.empty((len(idx), *sched.keys[kk]), dtype=dt, device=dev)
                    bufs[(pos, kk)] = buf
                    gathers.append((S[kk], idx, buf))
            pulled = {}
            pulls = []
            for kk, lo, n, plan in L.pulls:
                buf = torch.empty((n, *sched.keys[kk]), dtype=dt, device=dev)
                pulled[kk] = buf
                pulls.append((E[kk], _bind_plan(plan, buf), buf))
            groups = []
            for g in L.groups:
                argv = [bufs[(pos, kk)][lo:hi] for pos, kk, lo, hi in g.args]
                outv = S[g.out_key][g.lo:g.hi]
                gv = pulled[g.out_key][g.glo:g.ghi]
                destv = [None if d is None else E[d[0]][d[1]:d[2]] for d in g.dest]
                if g.agg:
                    # aggregations read the representative copy of their argument and write the
                    # gradient to the representative copy of their edge (the rest stays zero)
                    if g.rep_in is not None:
                        argv = [argv[0][g.rep_in]]
                        if destv[0] is not None:
                            destv[0].zero_()
                            destv = [destv[0][g.rep_in]]
                groups.append((g, argv, outv, gv, destv))
            b.levels.append((gathers, pulls, groups))
        b.var_pulls = []
        for v, base, plan in sched.var_pulls:
            buf = torch.empty((self.P, *self.shape), dtype=dt, device=dev)
            b.var_pulls.append((v, E[sched.kR], _bind_plan(plan, buf), buf))
        b.roots = []
        for r in sched.roots:
            rep = representative(sched.keys[r.key], r.tshape)
            if type(r.idx) is slice:
                src, buf = None, S[r.key][r.idx]
            else:
                src = S[r.key]
                buf = torch.empty((r.n, *sched.keys[r.key]), dtype=dt, device=dev)
            b.roots.append((r, src, buf, buf if rep is None else buf[rep]))
        return b

    # ---- bind to a probe ---------------------------------------------------------------------
    def bind(self, probe: Probe) -> None:
        """Compute the label-dependent values, masks, counts and root weights for ``probe``."""
        if tuple(probe.pred_shape) != self.shape or probe.kind != self.kind:
            raise ValueError("bind() needs a probe of the compiled kind and shape")
        probe = probe.to(self.device)
        dummy = torch.zeros(self.shape, dtype=self.dtype, device=self.device)
        env, mask = probe.variables(dummy)
        self.mask = mask
        values: dict[int, torch.Tensor] = {}  # shared across the prediction-free sub-trees

        with torch.no_grad():
            for n, kk, r in self.schedule.shared:
                v = interpret(n, env, mask, cache=values)
                self.S[kk][r].copy_(v.reshape((1,) * self.nd) if v.dim() == 0 else v)
            for L in self.schedule.levels:
                for g in L.groups:
                    if not g.agg:
                        continue
                    dims = tuple(d - 1 for d in g.dims)
                    if mask is None or g.op in ("sum_c", "mean_c"):
                        g.mask = g.count = None
                        g.divisor = math.prod(g.ts_in[d] for d in dims)
                    else:
                        m = K._fit_mask(mask, torch.empty(g.ts_in, device=self.device))
                        g.mask = m.unsqueeze(0)
                        g.count = m.to(self.dtype).sum(dim=dims, keepdim=True).clamp_min(1.0) \
                            .unsqueeze(0)
            one = torch.ones((), dtype=self.dtype, device=self.device)
            for r in self.schedule.roots:
                if mask is None:
                    w = one.expand(r.tshape) / math.prod(r.tshape)
                    r.mask = r.count = None
                else:
                    m = K._fit_mask(mask, torch.empty(r.tshape, device=self.device))
                    r.count = m.sum().clamp_min(1)
                    w = torch.where(m, one / r.count, 0.0)
                    r.mask = m.unsqueeze(0)
                dest = self.E[r.key][r.e_lo:r.e_lo + r.n]
                dest.zero_()
                rep = dest if r.rep is None else dest[r.rep]
                rep.copy_(w.unsqueeze(0).expand(r.n, *r.tshape))

    # ---- evaluation ----------------------------------------------------------------------------
    def run(self, X: torch.Tensor, grad: bool = True):
        """Loss values ``(P,)`` and (``grad=True``) gradients ``(P, *pred_shape)`` at the
        predictions ``X (P, *pred_shape)``: ``X[i]`` is the prediction of ``exprs[i]``."""
        with torch.no_grad():
            v, dX = self.step(X.index_select(0, self.schedule.order_index), grad)
            return self.to_given(self.roots_to_rows(v)), (None if dX is None else
                                                          self.to_given(dX))

    def roots_to_rows(self, v: torch.Tensor) -> torch.Tensor:
        """Per-candidate values from the step's root order to row order."""
        out = torch.empty_like(v)
        out[self.schedule.root_order] = v
        return out

    def to_given(self, t: torch.Tensor) -> torch.Tensor:
        """Per-candidate rows (row order) to the order of the expressions given."""
        out = torch.empty_like(t)
        out[self.schedule.order_index] = t
        return out

    def step(self, X, grad, bound=None, fast_softmax=False):
        """(values in root order, gradients in candidate order) at the predictions ``X`` given in
        row order (:attr:`order`). ``fast_softmax``: use :func:`class_softmax` and
        :func:`class_log_softmax` (equal to torch's up to rounding; the LRP's many steps) instead
        of torch's kernels (bit-for-bit the reference's: GEC fingerprints and checks, where chaotic
        expressions amplify a last-bit difference into another 2-digit fingerprint)."""
        b = bound or self._bound
        soft = logsoft = None
        for v, view in b.var_views:
            if v == "p":
                soft = class_softmax(X) if fast_softmax else torch.softmax(X, dim=2)
                view.copy_(soft)
            elif v == LOGP:  # the exact log(p) of lossforge.expr.exact: log_softmax over classes
                logsoft = class_log_softmax(X) if fast_softmax else torch.log_softmax(X, dim=2)
                view.copy_(logsoft)
            else:
                view.copy_(X)
        index_select = torch.index_select
        saved = []
        for gathers, _, groups in b.levels:
            for src, idx, buf in gathers:
                index_select(src, 0, idx, out=buf)
            for g, argv, outv, _, _ in groups:
                saved.append(_agg_fw(g, argv[0], outv) if g.agg else g.fw(argv, outv))
        vals = []
        for r, src, buf, x in b.roots:
            if src is not None:
                index_select(src, 0, r.idx, out=buf)
            # one flat reduction per candidate, as the reference's ``x.mean()`` / ``x.sum()``
            if r.mask is None:
                vals.append(x.reshape(r.n, -1).mean(1))
            else:
                vals.append(torch.where(r.mask, x, self._zero).reshape(r.n, -1).sum(1) / r.count)
        values = vals[0] if len(vals) == 1 else torch.cat(vals)
        if not grad:
            return values, None
        k = len(saved)
        for _, pulls, groups in reversed(b.levels):
            for E, plan, buf in pulls:
                _pull(E, plan, buf)
            k -= len(groups)
            for (g, argv, outv, gv, destv), sv in zip(groups, saved[k:k + len(groups)]):
                if g.agg:
                    _agg_bw(g, gv, destv[0])
                else:
                    g.bw(gv, argv, outv, sv, destv, g.direct)
        dX = None
        for v, E, plan, buf in b.var_pulls:
            gv = _pull(E, plan, buf)
            if v == "p":
                gv = (class_softmax_backward(gv, soft) if fast_softmax
                      else torch._softmax_backward_data(gv, soft, 2, X.dtype))
            elif v == LOGP:
                gv = (class_log_softmax_backward(gv, logsoft) if fast_softmax
                      else torch._log_softmax_backward_data(gv, logsoft, 2, X.dtype))
            fresh = v in ("p", LOGP)  # gv is a new tensor, not the pull buffer
            dX = gv.clone() if dX is None and not fresh else (gv if dX is None else dX + gv)
        if dX is None:
            dX = torch.zeros_like(X)
        return values, dX


# ---- aggregations ------------------------------------------------------------------------------
def _agg_fw(g: Group, x, out):
    """``out`` <- the aggregation of ``x`` (the representative copy of the argument)."""
    if g.op == "sum_c":
        r = x.sum(dim=2, keepdim=True)
    elif g.mask is None:
        r = x.mean(dim=g.dims, keepdim=True)
    else:
        r = torch.where(g.mask, x, g.zero).sum(dim=g.dims, keepdim=True) / g.count
    out.copy_(r)


def _agg_bw(g: Group, go, dest):
    """``go`` holds the gradients of every stored copy of the (reduced) result: their sum is the
    gradient of the result. ``dest``: the representative copy of the argument's edge slot."""
    if dest is None:
        return
    if g.copy_out:
        go = go.sum(dim=g.copy_out, keepdim=True)
    if g.op == "sum_c":
        dest.copy_(go)
    elif g.mask is None:
        dest.copy_(go / g.divisor)
    else:
        torch.where(g.mask, go / g.count, g.zero, out=dest)


class _Bound:
    """Per-step buffers and views of a :class:`Program` (see ``_bind_buffers``)."""

    __slots__ = ("var_views", "levels", "var_pulls", "roots")


def class_softmax(X: torch.Tensor) -> torch.Tensor:
    """``torch.softmax(X, dim=2)`` over the classes of ``X (P, B, C, *spatial)``. Without spatial
    dimensions (classes last): max-shifted ``exp`` divided by its sum taken as a product with a
    ones vector: the same values up to float rounding (~1e-7), and several times faster on CPU than
    torch's kernel for a few classes (measured on (1000, 5, 10): ~8x; a softmax with its backward
    was ~30% of an LRP step). With spatial dimensions torch's kernels are the faster ones."""
    if X.dim() != 3:
        return torch.softmax(X, dim=2)
    e = (X - X.amax(dim=2, keepdim=True)).exp_()
    return e.div_(e @ torch.ones(X.shape[2], 1, dtype=X.dtype, device=X.device))


def class_softmax_backward(g: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """The gradient with respect to ``X`` of :func:`class_softmax`, given ``g`` with respect to
    its output ``soft``: ``soft * (g - sum_c(g * soft))``."""
    if soft.dim() != 3:
        return torch._softmax_backward_data(g, soft, 2, soft.dtype)
    ones = torch.ones(soft.shape[2], 1, dtype=soft.dtype, device=soft.device)
    return soft * (g - (g * soft) @ ones)


def class_log_softmax(X: torch.Tensor) -> torch.Tensor:
    """``torch.log_softmax(X, dim=2)``, as :func:`class_softmax` computes the softmax: without
    spatial dimensions the max-shifted ``X`` minus the log of its ``exp``'s sum, the sum taken as
    a product with a ones vector (the same values up to float rounding; torch's kernel for a few
    classes made the LRP of a population with ``log(p)`` losses ~30 % slower)."""
    if X.dim() != 3:
        return torch.log_softmax(X, dim=2)
    shifted = X - X.amax(dim=2, keepdim=True)
    ones = torch.ones(X.shape[2], 1, dtype=X.dtype, device=X.device)
    return shifted.sub_((shifted.exp() @ ones).log_())


def class_log_softmax_backward(g: torch.Tensor, logsoft: torch.Tensor) -> torch.Tensor:
    """The gradient with respect to ``X`` of :func:`class_log_softmax`, given ``g`` with respect
    to its output ``logsoft``: ``g - softmax * sum_c(g)``."""
    if logsoft.dim() != 3:
        return torch._log_softmax_backward_data(g, logsoft, 2, logsoft.dtype)
    ones = torch.ones(logsoft.shape[2], 1, dtype=logsoft.dtype, device=logsoft.device)
    return g - logsoft.exp() * (g @ ones)


def _bind_plan(plan, buf):
    primary, extras = plan
    return primary, [(rows, buf[rows] if type(rows) is slice else None, table, d)
                     for rows, table, d in extras]


def _pull(E, plan, buf):
    """``buf[r] = sum of the edge rows of value row r`` (the gradient of the value in row ``r``)."""
    primary, extras = plan
    torch.index_select(E, 0, primary, out=buf)
    for rows, view, table, d in extras:
        t = torch.index_select(E, 0, table)
        if d > 1:
            t = t.view(-1, d, *t.shape[1:]).sum(1)
        if view is not None:
            view.add_(t)
        else:
            buf.index_put_((rows,), buf.index_select(0, rows).add_(t))
    return buf


__all__ = ["MATERIALIZE_NUMEL", "Program", "class_softmax", "class_softmax_backward"]
