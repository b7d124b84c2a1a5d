"""K copies of a small model in one forward pass, each with its own parameters.

``make_forward(model, engine)`` returns ``f(stacked_params, x) -> (K, N, ...)`` where
``stacked_params`` are the model's parameters stacked ``(K, *shape)``
(:func:`stack_parameters`) and ``x`` one input batch shared by the copies. Engines
(:data:`ENGINES`; which to use is decided by :mod:`~lossforge.training.stacked`):

- ``"grouped"``: the model's ``torch.fx`` graph run with every per-copy value stored as
  ``(N, K, *rest)``: convolutions become grouped convolutions, linear layers batched matrix
  products, GroupNorm a GroupNorm with ``K × G`` groups; pooling and activations act on all copies
  at once. Knows the layers of the built-in models; anything else raises
  :class:`UnsupportedModelError`.
- ``"vmap"``: ``torch.func.vmap`` over ``functional_call`` of the model's own forward (general,
  slower). Dropout draws one mask per layer and step for all copies (``randomness="same"``).
"""
from __future__ import annotations

import operator

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

__all__ = ["ENGINES", "UnsupportedModelError", "make_forward", "stack_parameters"]

#: The two ways to run K copies of a model (see the module docstring).
ENGINES = ("grouped", "vmap")


def stack_parameters(model: nn.Module, k: int, device) -> dict[str, torch.Tensor]:
    """The model's parameters repeated ``k`` times, as leaf tensors ``(k, *shape)``."""
    return {name: p.detach().to(device).unsqueeze(0).repeat(k, *([1] * p.dim()))
            .requires_grad_(p.requires_grad) for name, p in model.named_parameters()}


# ---- engine "vmap": torch.func over the model's own forward ------------------------------------
def _vmap_forward(model: nn.Module):
    """``f(stacked_params, x) -> (K, N, ...)``: the model's forward, vmapped over the parameters."""
    def one(params, x):
        return functional_call(model, params, (x,))

    return vmap(one, in_dims=(0, None), randomness="same")


# ---- engine "grouped": the traced graph, K copies side by side in every tensor ------------------
class UnsupportedModelError(Exception):
    """The grouped engine cannot run this model (the vmap engine may)."""


class _G:
    """A value that differs between copies: tensor ``(N, K, *rest)`` where one copy's value is
    ``(N, *rest)``. Copies sit next to the channels, so ``t.flatten(1, 2)`` is the layout of a
    grouped convolution (copy-major channel blocks), without a copy."""

    __slots__ = ("t",)

    def __init__(self, t: torch.Tensor):
        self.t = t


def _grouped(x, k: int) -> _G:
    """A shared value (the input, or computed from it only) as a grouped one."""
    if isinstance(x, _G):
        return x
    return _G(x.unsqueeze(1).expand(x.shape[0], k, *x.shape[1:]))


def _cdim(d: int, nd: int) -> int:
    """A copy's dimension ``d`` (of ``nd``; not the batch) as the grouped tensor's dimension."""
    d = d % nd if nd else d
    if d == 0:
        raise UnsupportedModelError("an operation over the batch dimension")
    return d + 1


def _conv(mod, name, x, P, k):
    if getattr(mod, "padding_mode", "zeros") != "zeros":
        raise UnsupportedModelError("padding_mode")
    w, b = P[name + ".weight"], P.get(name + ".bias")
    bias = None if b is None else b.flatten()
    nd = w.dim() - 3
    transposed = isinstance(mod, nn.modules.conv._ConvTransposeNd)
    if transposed:
        fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[nd - 1]
        if not isinstance(x, _G) and mod.groups == 1:  # shared input: one convolution, K*O outputs
            wt = w.transpose(0, 1).flatten(1, 2)
            out = fn(x, wt, bias, mod.stride, mod.padding, mod.output_padding, 1, mod.dilation)
        else:
            out = fn(_grouped(x, k).t.flatten(1, 2), w.flatten(0, 1), bias, mod.stride, mod.padding,
                     mod.output_padding, k * mod.groups, mod.dilation)
    else:
        fn = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
        if not isinstance(x, _G) and mod.groups == 1:
            out = fn(x, w.flatten(0, 1), bias, mod.stride, mod.padding, mod.dilation, 1)
        else:
            out = fn(_grouped(x, k).t.flatten(1, 2), w.flatten(0, 1), bias, mod.stride, mod.padding,
                     mod.dilation, k * mod.groups)
    return _G(out.unflatten(1, (k, -1)))


def _linear(mod, name, x, P, k):
    w, b = P[name + ".weight"], P.get(name + ".bias")  # (K, O, F), (K, O)
    if not isinstance(x, _G):  # shared input: one matrix product with the K*O stacked rows
        out = F.linear(x, w.flatten(0, 1), None if b is None else b.flatten())
        return _G(out.unflatten(-1, (k, -1)).movedim(-2, 1))
    t = x.t.movedim(1, 0)  # (K, N, *mid, F)
    flat = t.reshape(k, -1, t.shape[-1])
    wt = w.transpose(1, 2)
    out = torch.bmm(flat, wt) if b is None else torch.baddbmm(b.unsqueeze(1), flat, wt)
    return _G(out.view(k, *t.shape[1:-1], -1).movedim(0, 1))


def _group_norm(mod, name, x, P, k):
    w, b = P.get(name + ".weight"), P.get(name + ".bias")
    out = F.group_norm(_grouped(x, k).t.flatten(1, 2), k * mod.num_groups,
                       None if w is None else w.flatten(), None if b is None else b.flatten(),
                       mod.eps)
    return _G(out.unflatten(1, (k, -1)))


def _per_channel(mod, name, x, P, k):
    """Pooling, upsampling: acts on each channel of each sample."""
    if not isinstance(x, _G):
        return mod(x)
    if x.t.dim() < 4:
        raise UnsupportedModelError(f"{type(mod).__name__} on an input without channels")
    return _G(mod(x.t.flatten(1, 2)).unflatten(1, (k, -1)))


def _elementwise(mod, name, x, P, k):
    return _G(mod(x.t)) if isinstance(x, _G) else mod(x)


def _flatten(mod, name, x, P, k):
    if not isinstance(x, _G):
        return mod(x)
    nd = x.t.dim() - 1
    return _G(x.t.flatten(_cdim(mod.start_dim, nd), _cdim(mod.end_dim, nd)))


def _unflatten(mod, name, x, P, k):
    if not isinstance(x, _G):
        return mod(x)
    return _G(x.t.unflatten(_cdim(mod.dim, x.t.dim() - 1), mod.unflattened_size))


def _dropout(mod, name, x, P, k):
    """One mask of a copy's shape, shared by the copies: the draws of one sequential run."""
    if not mod.training or mod.p == 0:
        return x
    if not isinstance(x, _G):
        return mod(x)
    t = x.t
    noise = F.dropout(torch.ones((t.shape[0], *t.shape[2:]), dtype=t.dtype, device=t.device),
                      mod.p, True)
    return _G(t * noise.unsqueeze(1))


_MODULES = {
    **{c: _conv for c in (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                          nn.ConvTranspose3d)},
    nn.Linear: _linear,
    nn.GroupNorm: _group_norm,
    **{c: _per_channel for c in (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d,
                                 nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
                                 nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
                                 nn.AdaptiveMaxPool2d, nn.Upsample)},
    **{c: _elementwise for c in (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU,
                                 nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Softplus,
                                 nn.Softsign, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid,
                                 nn.Tanhshrink, nn.Identity)},
    nn.Flatten: _flatten,
    nn.Unflatten: _unflatten,
    nn.Dropout: _dropout,
}

_UNARY = {torch.relu, torch.sigmoid, torch.tanh, torch.exp, torch.abs, torch.neg, F.relu, F.gelu,
          F.silu, F.leaky_relu, F.elu, F.softplus, F.hardtanh, F.mish, F.relu6, operator.neg}
_BINARY = {operator.add, operator.sub, operator.mul, operator.truediv, torch.add, torch.sub,
           torch.mul, torch.div, torch.maximum, torch.minimum}
_UNARY_METHODS = {"relu", "sigmoid", "tanh", "exp", "abs", "neg", "contiguous"}
_BINARY_METHODS = {"add", "sub", "mul", "div"}
_DIM_METHODS = {"squeeze", "unsqueeze", "softmax", "log_softmax", "mean", "sum", "amax", "amin"}
_SHAPE_METHODS = {"size", "dim", "flatten", "view", "reshape"}


def _has_tensor(values) -> bool:
    return any(isinstance(v, (_G, torch.Tensor)) for v in values)


def _align(a, b, k):
    """Operands of an element-wise op: a shared tensor with the batch dimension gets the copies'."""
    if isinstance(a, _G) and isinstance(b, torch.Tensor) and b.dim() >= a.t.dim() - 1:
        b = b.unsqueeze(1)
    return a.t if isinstance(a, _G) else a, b.t if isinstance(b, _G) else b


def _call(target, args, kwargs, k, method: bool):
    """A function or method of the traced graph on shared/grouped values."""
    vals = list(args) + list(kwargs.values())
    if not any(isinstance(v, _G) for v in vals) and not any(
            isinstance(v, (list, tuple)) and any(isinstance(u, _G) for u in v) for v in vals):
        return getattr(args[0], target)(*args[1:], **kwargs) if method else target(*args, **kwargs)
    x = args[0]
    if method and target in _UNARY_METHODS or not method and target in _UNARY:
        if _has_tensor(list(args[1:]) + list(kwargs.values())):
            raise UnsupportedModelError("a tensor argument to a unary op")
        return _G(getattr(x.t, target)(*args[1:], **kwargs) if method else target(x.t, *args[1:], **kwargs))
    if method and target in _BINARY_METHODS or not method and target in _BINARY:
        if len(args) != 2 or _has_tensor(kwargs.values()):
            raise UnsupportedModelError("binary op form")
        a, b = args
        if not isinstance(a, _G):
            b, a = _align(b, a, k)
        else:
            a, b = _align(a, b, k)
        return _G(getattr(a, target)(b, **kwargs) if method else target(a, b, **kwargs))
    if not method and target in (torch.cat, torch.concat):
        tensors = args[0]
        dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
        gs = [_grouped(t, k).t for t in tensors]
        nd = gs[0].dim() - 1
        d = dim % nd
        return _G(torch.cat(gs, dim=0 if d == 0 else d + 1))
    if not isinstance(x, _G):
        raise UnsupportedModelError(f"{target} with a per-copy argument")
    t, nd = x.t, x.t.dim() - 1
    if method and target in _DIM_METHODS or not method and target in (torch.softmax, F.softmax,
                                                                          F.log_softmax):
        name = target if method else target.__name__
        dim = args[1] if len(args) > 1 else kwargs.pop("dim", None)
        if dim is None or _has_tensor(list(args[2:]) + list(kwargs.values())):
            raise UnsupportedModelError(f"{name} without a dimension")
        dims = tuple(_cdim(d, nd) for d in dim) if isinstance(dim, (tuple, list)) else _cdim(dim, nd)
        return _G(getattr(t, name)(dims, *args[2:], **kwargs))
    if method and target == "size":
        size = torch.Size((t.shape[0], *t.shape[2:]))
        return size if len(args) == 1 else size[args[1]]
    if method and target == "dim":
        return nd
    if method and target == "flatten" or not method and target is torch.flatten:
        start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
        end = args[2] if len(args) > 2 else kwargs.get("end_dim", -1)
        return _G(t.flatten(_cdim(start, nd), _cdim(end, nd)))
    if method and target in ("view", "reshape"):
        shape = args[1] if len(args) == 2 and isinstance(args[1], (tuple, list)) else args[1:]
        if not shape or shape[0] != t.shape[0]:
            raise UnsupportedModelError(f"{target} that does not keep the batch dimension first")
        return _G(t.reshape(t.shape[0], k, *shape[1:]))
    if not method and target is getattr and args[1] == "shape":
        return torch.Size((t.shape[0], *t.shape[2:]))
    raise UnsupportedModelError(f"{target}")


class _GroupedForward:
    """``f(stacked_params, x) -> (K, N, ...)`` from the model's ``torch.fx`` graph: convolutions
    become grouped convolutions (the shared input's first one a single convolution with ``K × O``
    outputs), linear layers batched matrix products, GroupNorm a GroupNorm with ``K × G`` groups,
    pooling and activations act on all copies at once. ``UnsupportedModelError`` for other graphs."""

    def __init__(self, model: nn.Module):
        try:
            graph = torch.fx.symbolic_trace(model).graph
        except Exception as err:  # not traceable (data-dependent control flow, ...)
            raise UnsupportedModelError(f"torch.fx cannot trace the model: {err}") from None
        self.model, self.nodes = model, list(graph.nodes)
        self.modules = dict(model.named_modules())
        params = dict(model.named_parameters())
        if sum(n.op == "placeholder" for n in self.nodes) != 1:
            raise UnsupportedModelError("a forward with more than one input")
        for node in self.nodes:
            if node.op == "call_module":
                mod = self.modules[node.target]
                if type(mod) not in _MODULES or len(node.args) != 1 or node.kwargs:
                    raise UnsupportedModelError(f"module {type(mod).__name__}")
                for pn, p in mod.named_parameters(recurse=False):
                    if params.get(f"{node.target}.{pn}") is not p:
                        raise UnsupportedModelError("a parameter shared between modules")
            elif node.op == "get_attr":
                raise UnsupportedModelError("a forward that reads attributes")
            elif node.op == "call_function" and not callable(node.target):
                raise UnsupportedModelError(f"function {node.target}")

    def __call__(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        k = next(iter(params.values())).shape[0]
        env: dict = {}
        load = lambda a: torch.fx.node.map_arg(a, lambda n: env[n])  # noqa: E731
        for node in self.nodes:
            if node.op == "placeholder":
                env[node] = x
            elif node.op == "call_module":
                mod = self.modules[node.target]
                env[node] = _MODULES[type(mod)](mod, node.target, load(node.args[0]), params, k)
            elif node.op in ("call_function", "call_method"):
                env[node] = _call(node.target, load(node.args), dict(load(node.kwargs)), k,
                                  node.op == "call_method")
            elif node.op == "output":
                out = load(node.args[0])
                if not isinstance(out, (_G, torch.Tensor)):
                    raise UnsupportedModelError("a model output that is not one tensor")
                return _grouped(out, k).t.movedim(1, 0)
        raise UnsupportedModelError("a graph without output")


def make_forward(model: nn.Module, engine: str):
    if engine == "grouped":
        return _GroupedForward(model)
    if engine == "vmap":
        return _vmap_forward(model)
    raise ValueError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
