"""Low-rank adaptation (LoRA) of linear and convolution layers, injected by module name.

LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", arXiv 2106.09685)
freezes a pre-trained weight :math:`W` and learns a low-rank correction

.. math::  W' = W + \\frac{\\alpha}{r} B A, \\qquad A \\in \\mathbb{R}^{r \\times n_\\text{in}},\\;
           B \\in \\mathbb{R}^{n_\\text{out} \\times r},\\; r \\ll \\min(n_\\text{in}, n_\\text{out}),

with :math:`A` random (Kaiming-uniform, as ``nn.Linear`` initialises) and :math:`B = 0`, so the
adapted model *is* the pre-trained one at the start of fine-tuning. Only :math:`A, B` train:
``r (n_in + n_out)`` numbers instead of ``n_in n_out``. Tadpole fine-tunes its pre-trained
autoencoder for dynamics this way (beside a latent transform and re-introduced skips).

**Convolutions.** A kernel ``W`` of shape ``(c_out, c_in/g, k_1..k_d)`` (``g`` groups) is the
matrix ``(c_out) x (c_in/g * k_1...k_d)``, and LoRA factorises that matrix: ``A`` has the shape
of a kernel with ``r`` output channels, ``(r, c_in/g, *k)``, and ``B`` is ``(c_out, r)``. As a
layer, ``A`` is a convolution with *every* setting of the base one (stride, padding, dilation,
groups, ``padding_mode``) and ``B`` a 1x1 convolution. A transposed convolution's kernel is
``(c_in, c_out/g, *k)``; its adjoint is an ordinary convolution, and LoRA of that adjoint gives
``ΔW = Aᵀ B`` with ``A`` a 1x1 map ``(r, c_in)`` applied first (at the *input* resolution, where
it is cheap) and ``B`` a transposed kernel ``(r, c_out/g, *k)``. With ``g > 1`` groups one ``A``
(resp. ``B``) kernel is shared by all groups, so ``ΔW`` always has the base kernel's shape and
merges exactly (peft's grouped variant cannot be merged).

**Two ways to run an unmerged layer**, equal up to rounding:

- *folded*: ``op(x, W + s B A)``, one base-sized operation plus a tiny fused multiply-add on the
  weights (``torch.addmm``);
- *factored*: ``op(x, W) + s B(op_A(x))``, which never forms ``ΔW`` but runs a thin operation
  over the activations (``r`` channels) and accumulates ``B``'s output into the base output in
  place (one batched GEMM, no temporaries).

Folding is the cheapest forward whenever the activations outnumber the weights (any convolution
over a field, any batch of more than a few hundred tokens): its overhead is the ``r``-term product
``B A``. With gradients, folding makes autograd compute the full weight gradient of ``op``: one
more base-sized operation in the backward pass. The factored form instead adds three thin
operations (the forward, weight gradient and input gradient of ``op_A``), each ``r / c_out`` of
the base in multiplies but, for convolutions, several times slower per multiply than the base
(thin kernels vectorise badly); thin matrix products do not suffer that much. Measured on 2 CPU
cores (``benchmarks/bench_lora.py``), so ``path="auto"`` (the default):

- folds convolutions always, and linear layers when no gradient flows to the adapter (no_grad,
  frozen adapters);
- runs factored when dropout is active (``p > 0`` in training mode; dropout acts on the input of
  ``A`` only, as in Hu et al., so ``ΔW`` cannot be folded), and when multiply counts favour it
  (inputs smaller than the weight).

Set ``layer.path = "folded"`` or ``"factored"`` to force one.

**Merge and unmerge.** :func:`merge_lora` writes ``W + s B A`` into the base weight in place
(with the same fused multiply-add as the folded forward, so merged and unmerged folded outputs
are bit-identical), and inference then costs exactly the base model. It keeps a copy of the
original weight, and :func:`unmerge_lora` copies it back: the base weights after merge + unmerge
are *bit-identical* to those before, whatever happened in between (subtracting ``s ΔW`` again
would be off by rounding). The price is one copy of the adapted weights while merged.
:func:`unload_lora` replaces every adapted layer by its (optionally merged) base layer. A merged
model's ``state_dict`` holds merged base weights: save adapters with :func:`lora_state_dict`.

**Layers with their own forward.** The tokeniser's layers (:mod:`physfm.nn.compression`) run their
own convolutions (time folded into the batch, circular padding, patch kernels pooled per stride),
so they are not ``nn.Conv`` modules and LoRAConv cannot run them. Such a layer names the parameter
that holds its kernel in a class attribute, ``lora_weight = "weight"``; :class:`LoRAKernel` then
treats that kernel, of any shape ``(d_0, *rest)``, as the matrix ``d_0 x prod(rest)`` (as
LoRAConv does), and runs the layer's own forward with ``W + s B A`` in its place: the folded
path, always (there is no factored form of a forward it does not know, hence no dropout).

Tensors: ``nn.Linear`` takes ``(..., n_in)``; convolutions take ``(batch, c_in, *space)`` with
1-3 spatial axes (a ``(batch, field, time, *space)`` tensor reaches a 3D convolution as is).
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from physfm.nn.layers import count_parameters

__all__ = [
    "LoRALayer",
    "LoRALinear",
    "LoRAConv",
    "LoRAConvTranspose",
    "LoRAKernel",
    "SUPPORTED",
    "adaptable",
    "inject_lora",
    "lora_layers",
    "lora_state_dict",
    "merge_lora",
    "unmerge_lora",
    "unload_lora",
    "count_parameters",
    "print_trainable_parameters",
]

Path = Literal["auto", "folded", "factored"]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


class LoRALayer(nn.Module):
    """A frozen base layer plus a trainable low-rank correction ``s B A`` (``s = alpha / r``).

    Subclasses say how ``ΔW`` is shaped and how the base operation runs; this class holds the
    parameters, the scaling, dropout, the choice of forward path and merge/unmerge.

    Attributes:
        base: the wrapped layer (its parameters are left as they are: :func:`inject_lora` freezes them).
        lora_A, lora_B: the factors; ``lora_B`` starts at zero.
        scaling: ``alpha / r``.
        path: ``"auto"`` (default), ``"folded"`` or ``"factored"``: how an unmerged forward runs.
        merged: whether ``s ΔW`` is currently folded into ``base.weight``.
    """

    lora_A: nn.Parameter
    lora_B: nn.Parameter
    #: the name of the base layer's parameter that LoRA adapts
    weight_name: str = "weight"
    #: whether ``path="auto"`` folds while the adapter needs gradients (see the module docstring)
    fold_with_grad: bool = True

    def __init__(
        self,
        base: nn.Module,
        r: int,
        alpha: float | None = None,
        dropout: float = 0.0,
        *,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        name = type(self).__name__
        if isinstance(r, bool) or not isinstance(r, int):
            raise TypeError(f"{name}: r must be an int, got {type(r).__name__} {r!r}")
        if r <= 0:
            raise ValueError(f"{name}: rank r must be a positive integer, got r={r}")
        alpha = float(r if alpha is None else alpha)
        if not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"{name}: alpha must be a positive number, got alpha={alpha}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{name}: dropout must lie in [0, 1), got dropout={dropout}")
        kind = _lora_class("base", base)
        if not issubclass(type(self), kind):
            raise TypeError(f"{name}: cannot wrap a {type(base).__name__}; use {kind.__name__} (or inject_lora)")
        self.base = base
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.path: Path = "auto"
        self.merged = False
        # the weight before merge(): a buffer, so it follows .to(), but not saved in state_dict
        self.register_buffer("_original", None, persistent=False)
        weight = self.base_weight
        a_shape, b_shape, fan_in = self._factor_shapes()
        # A: Kaiming-uniform with a = sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), the
        # default of nn.Linear/nn.Conv and of Hu et al.'s code; drawn on the generator's device.
        init_device = generator.device if generator is not None else weight.device
        a = torch.empty(a_shape, dtype=weight.dtype, device=init_device)
        bound = 1.0 / math.sqrt(fan_in)
        a.uniform_(-bound, bound, generator=generator)
        self.lora_A = nn.Parameter(a.to(weight.device))
        self.lora_B = nn.Parameter(torch.zeros(b_shape, dtype=weight.dtype, device=weight.device))

    # ---- what subclasses define -------------------------------------------------------------
    def _factor_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...], int]:
        """Shapes of A and B, and the fan-in used to initialise A."""
        raise NotImplementedError

    def _delta(self) -> torch.Tensor:
        """``B A`` in the base weight's shape (unscaled)."""
        raise NotImplementedError

    def folded_weight(self) -> torch.Tensor:
        """``W + s B A`` in one fused multiply-add (differentiable in A and B)."""
        raise NotImplementedError

    def _run(self, x: torch.Tensor, weight: torch.Tensor, *args) -> torch.Tensor:
        """The base operation with ``weight`` in place of ``base.weight``."""
        raise NotImplementedError

    def _factored(self, x: torch.Tensor, *args) -> torch.Tensor:
        """``op(x, W) + s B(op_A(dropout(x)))`` without forming ``ΔW``."""
        raise NotImplementedError

    def _multiplies(self, x: torch.Tensor) -> tuple[float, float]:
        """Multiply counts of the adapter's extra work: (folded, factored), roughly."""
        raise NotImplementedError

    # ---- shared machinery -------------------------------------------------------------------
    @property
    def base_weight(self) -> nn.Parameter:
        """The base layer's adapted parameter (``base.weight`` unless :attr:`weight_name` says otherwise)."""
        return getattr(self.base, self.weight_name)

    def delta_weight(self) -> torch.Tensor:
        """The scaled correction ``s B A`` in the shape of ``base.weight`` (differentiable)."""
        return self._delta() * self.scaling

    def _dropout_active(self) -> bool:
        return self.training and isinstance(self.dropout, nn.Dropout)

    def _fold(self, x: torch.Tensor) -> bool:
        if self.path == "folded":
            if self._dropout_active():
                raise ValueError(
                    f"{type(self).__name__}: path='folded' cannot apply dropout to the adapter input; "
                    "use path='factored' or 'auto', or call .eval()"
                )
            return True
        if self.path == "factored" or self._dropout_active():
            return False
        if self.path != "auto":
            raise ValueError(f"{type(self).__name__}: path must be 'auto', 'folded' or 'factored', got {self.path!r}")
        if not self.fold_with_grad and torch.is_grad_enabled() and (self.lora_A.requires_grad or self.lora_B.requires_grad):
            return False
        folded, factored = self._multiplies(x)
        return folded <= factored

    def _check(self, x: torch.Tensor) -> None:
        """ValueError unless ``x`` has the shape the base layer takes."""
        if isinstance(self.base, nn.Linear):
            n_in, axis, want = self.base.in_features, -1, f"(..., {self.base.in_features})"
            ok = x.ndim >= 1
        else:
            n_in, axis = self.base.in_channels, -self.d - 1
            want = f"(batch, {n_in}, *space) or ({n_in}, *space) with {self.d} spatial axes"
            ok = x.ndim in (self.d + 1, self.d + 2)
        if not ok or x.shape[axis] != n_in:
            raise ValueError(
                f"{type(self).__name__} around {type(self.base).__name__}: input of shape {tuple(x.shape)}, expected {want}"
            )

    def forward(self, x: torch.Tensor, *args) -> torch.Tensor:
        self._check(x)
        if self.merged:
            return self.base(x, *args)
        if self._fold(x):
            return self._run(x, self.folded_weight(), *args)
        return self._factored(x, *args)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold ``s ΔW`` into ``base.weight`` in place; keep the original weight for :meth:`unmerge`."""
        if self.merged:
            return
        weight = self.base_weight
        merged = self.folded_weight()  # the same arithmetic as the folded forward
        self._original = weight.detach().clone()
        weight.copy_(merged)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Restore the base weight exactly as it was before :meth:`merge` (bit for bit)."""
        if not self.merged:
            return
        self.base_weight.copy_(self._original)
        self._original = None
        self.merged = False

    def extra_repr(self) -> str:
        p = self.dropout.p if isinstance(self.dropout, nn.Dropout) else 0.0
        return f"r={self.r}, alpha={self.alpha:g}, scaling={self.scaling:g}, dropout={p:g}, merged={self.merged}"


class LoRALinear(LoRALayer):
    """LoRA around ``nn.Linear``: ``A (r, n_in)``, ``B (n_out, r)``; input ``(..., n_in)``."""

    fold_with_grad = False

    def _factor_shapes(self):
        return (self.r, self.base.in_features), (self.base.out_features, self.r), self.base.in_features

    def _delta(self):
        return self.lora_B @ self.lora_A

    def folded_weight(self):
        return torch.addmm(self.base.weight, self.lora_B, self.lora_A, alpha=self.scaling)

    def _run(self, x, weight):
        return F.linear(x, weight, self.base.bias)

    def _multiplies(self, x):
        n_in, n_out = self.base.in_features, self.base.out_features
        tokens = x.numel() // n_in
        return self.r * n_in * n_out, tokens * self.r * (n_in + n_out)

    def _factored(self, x):
        lead = x.shape[:-1]
        x2 = rearrange(x, "... i -> (...) i")
        h = F.linear(self.dropout(x2), self.lora_A)  # (tokens, r)
        bias = self.base.bias
        # the thin product s h Bᵀ (+ bias) first, then the base GEMM accumulates into it (beta = 1):
        # the output is written once and never re-read in a separate pass
        if bias is None:
            y = torch.mm(h, self.lora_B.t() * self.scaling)
        else:
            y = torch.addmm(bias, h, self.lora_B.t(), alpha=self.scaling)
        y.addmm_(x2, self.base.weight.t())
        return y.view(*lead, y.shape[-1])


def _padding_pairs(conv: nn.Module, d: int) -> list[int]:
    """F.pad amounts (last axis first) that realise ``conv.padding`` with ``conv.padding_mode``."""
    if conv.padding == "valid":
        return [0] * (2 * d)
    if conv.padding == "same":
        pairs = []
        for k, dil in zip(reversed(conv.kernel_size), reversed(conv.dilation)):
            total = dil * (k - 1)
            pairs += [total // 2, total - total // 2]
        return pairs
    return [p for p in reversed(conv.padding) for _ in range(2)]


class LoRAConv(LoRALayer):
    """LoRA around ``nn.Conv1d/2d/3d``: ``A (r, c_in/g, *k)`` keeps every setting, ``B (c_out, r)`` is 1x1.

    Input ``(batch, c_in, *space)``; output as the base layer's. Padding modes other than zeros
    (circular, reflect, replicate) are applied once to the input and shared by both paths.
    """

    def __init__(self, base: nn.Module, *args, **kwargs):
        self.d = base.weight.ndim - 2
        super().__init__(base, *args, **kwargs)

    def _factor_shapes(self):
        w = self.base.weight
        fan_in = math.prod(w.shape[1:])
        return (self.r, *w.shape[1:]), (w.shape[0], self.r), fan_in

    def _delta(self):
        return torch.tensordot(self.lora_B, self.lora_A, dims=1)

    def folded_weight(self):
        w = self.base.weight
        flat = torch.addmm(
            rearrange(w, "o i ... -> o (i ...)"), self.lora_B, rearrange(self.lora_A, "r i ... -> r (i ...)"), alpha=self.scaling
        )
        return flat.view(w.shape)

    def _padded(self, x: torch.Tensor) -> tuple[torch.Tensor, int | tuple[int, ...] | str]:
        conv = self.base
        if conv.padding_mode == "zeros":
            return x, conv.padding
        return F.pad(x, _padding_pairs(conv, self.d), mode=conv.padding_mode), 0

    def _conv(self, x_padded, weight, bias, padding):
        c = self.base
        return _CONV[self.d](x_padded, weight, bias, c.stride, padding, c.dilation, c.groups)

    def _run(self, x, weight):
        xp, padding = self._padded(x)
        return self._conv(xp, weight, self.base.bias, padding)

    def _multiplies(self, x):
        w, g = self.base.weight, self.base.groups
        positions = x.numel() // x.shape[-self.d - 1] // math.prod(self.base.stride)  # output positions x batch, roughly
        return self.r * w.numel(), positions * self.r * (g * math.prod(w.shape[1:]) + w.shape[0])

    def _factored(self, x):
        if x.ndim == self.d + 1:  # unbatched, as nn.Conv accepts
            return self._factored(x.unsqueeze(0)).squeeze(0)
        c, g = self.base, self.base.groups
        xp, padding = self._padded(x)
        y = self._conv(xp, c.weight, c.bias, padding)
        xa = xp if not self._dropout_active() else self._padded(self.dropout(x))[0]
        a = self.lora_A if g == 1 else repeat(self.lora_A, "r i ... -> (g r) i ...", g=g)
        h = self._conv(xa, a, None, padding)  # (batch, g r, *space_out): thin, r channels per group
        b = rearrange(self.lora_B, "(g o) r -> g o r", g=g)
        n = y.shape[0]
        if y.is_contiguous() and h.is_contiguous():
            # y_(n,group) += s B_group h_(n,group): one batched GEMM accumulating into the output.
            # .view (not rearrange) because the in-place update must land in y itself.
            y.view(n * g, -1, y[0, 0].numel()).baddbmm_(
                repeat(b, "g o r -> (n g) o r", n=n), h.view(n * g, self.r, -1), alpha=self.scaling
            )
            return y
        hg = rearrange(h, "n (g r) ... -> n g r ...", g=g)
        return y + self.scaling * rearrange(torch.einsum("gor,ngr...->ngo...", b, hg), "n g o ... -> n (g o) ...")


class LoRAConvTranspose(LoRALayer):
    """LoRA around ``nn.ConvTranspose1d/2d/3d``: ``A (r, c_in)`` is 1x1 on the input, ``B (r, c_out/g, *k)``.

    ``B`` runs as a transposed convolution with every setting of the base one (stride, padding,
    output_padding, dilation, groups, and ``output_size`` when given to ``forward``).
    """

    def __init__(self, base: nn.Module, *args, **kwargs):
        self.d = base.weight.ndim - 2
        super().__init__(base, *args, **kwargs)

    def _factor_shapes(self):
        w = self.base.weight
        return (self.r, w.shape[0]), (self.r, *w.shape[1:]), w.shape[0] // self.base.groups

    def _delta(self):
        return torch.tensordot(self.lora_A.t(), self.lora_B, dims=1)

    def folded_weight(self):
        w = self.base.weight
        flat = torch.addmm(
            rearrange(w, "i o ... -> i (o ...)"),
            self.lora_A.t(),
            rearrange(self.lora_B, "r o ... -> r (o ...)"),
            alpha=self.scaling,
        )
        return flat.view(w.shape)

    def _output_padding(self, x, output_size):
        c = self.base
        if output_size is None:
            return c.output_padding
        return c._output_padding(x, output_size, c.stride, c.padding, c.kernel_size, self.d, c.dilation)

    def _conv_t(self, x, weight, bias, output_padding):
        c = self.base
        return _CONV_T[self.d](x, weight, bias, c.stride, c.padding, output_padding, c.groups, c.dilation)

    def _run(self, x, weight, output_size=None):
        return self._conv_t(x, weight, self.base.bias, self._output_padding(x, output_size))

    def _multiplies(self, x):
        w = self.base.weight
        positions = x.numel() // x.shape[-self.d - 1]  # input positions x batch
        return self.r * w.numel(), positions * self.r * (w.shape[0] + self.base.groups * math.prod(w.shape[1:]))

    def _factored(self, x, output_size=None):
        if x.ndim == self.d + 1:  # unbatched, as nn.ConvTranspose accepts
            return self._factored(x.unsqueeze(0), output_size).squeeze(0)
        c, g = self.base, self.base.groups
        op = self._output_padding(x, output_size)
        y = self._conv_t(x, c.weight, c.bias, op)
        xa = self.dropout(x)
        a = rearrange(self.lora_A, "r (g i) -> g r i", g=g)
        h = torch.einsum("gri,ngi...->ngr...", a, rearrange(xa, "n (g i) ... -> n g i ...", g=g))
        h = rearrange(h, "n g r ... -> n (g r) ...")  # (batch, g r, *space_in): 1x1 at the input resolution
        b = self.lora_B if g == 1 else repeat(self.lora_B, "r o ... -> (g r) o ...", g=g)
        # y += s B(h): in place (a transposed convolution does not keep its output for backward)
        return y.add_(self._conv_t(h, b, None, op), alpha=self.scaling)


class LoRAKernel(LoRALayer):
    """LoRA around a layer with its own forward that names its kernel in ``lora_weight``.

    The kernel ``W`` (any shape ``(d_0, *rest)``) is the matrix ``d_0 x prod(rest)``: ``A`` has
    shape ``(r, *rest)`` and ``B`` ``(d_0, r)``, so for a convolution kernel ``(c_out, c_in, *k)``
    this is LoRAConv's factorisation. The forward is the layer's own, run with ``W + s B A`` in
    place of ``W`` (:func:`torch.func.functional_call`); the layer checks its input itself, and
    every other argument (a stride chosen per call, say) passes through. The layer's other
    attributes and methods (a patch layer's ``check_stride``) are read through the wrapper, so the
    model around it runs unchanged.
    """

    def __init__(self, base: nn.Module, r: int, alpha: float | None = None, dropout: float = 0.0, **kwargs):
        name = getattr(type(base), "lora_weight", None)
        if not isinstance(name, str) or not isinstance(getattr(base, name, None), nn.Parameter):
            raise TypeError(f"LoRAKernel: a {type(base).__name__} does not name its kernel parameter in `lora_weight`")
        if dropout:
            raise ValueError(
                f"LoRAKernel: dropout must be 0 (got {dropout}): the adapter is folded into the kernel of "
                f"{type(base).__name__}'s own forward, so its input cannot be dropped"
            )
        self.weight_name = name
        super().__init__(base, r, alpha, dropout, **kwargs)

    def _factor_shapes(self):
        w = self.base_weight
        return (self.r, *w.shape[1:]), (w.shape[0], self.r), math.prod(w.shape[1:])

    def _delta(self):
        return torch.tensordot(self.lora_B, self.lora_A, dims=1)

    def folded_weight(self):
        w = self.base_weight
        flat = torch.addmm(
            rearrange(w, "o ... -> o (...)"), self.lora_B, rearrange(self.lora_A, "r ... -> r (...)"), alpha=self.scaling
        )
        return flat.view(w.shape)

    def _check(self, x):
        pass  # the base layer checks its own input

    def _fold(self, x):
        if self.path not in ("auto", "folded"):
            raise ValueError(
                f"LoRAKernel: path must be 'auto' or 'folded' (a layer with its own forward has no "
                f"factored form), got {self.path!r}"
            )
        return True

    def _run(self, x, weight, *args):
        return torch.func.functional_call(self.base, {self.weight_name: weight}, (x, *args))

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            base = self.__dict__.get("_modules", {}).get("base")
            if base is None:
                raise
            return getattr(base, name)

    def extra_repr(self) -> str:
        return f"{self.weight_name}, " + super().extra_repr()


SUPPORTED: dict[type[nn.Module], type[LoRALayer]] = {
    nn.Linear: LoRALinear,
    nn.Conv1d: LoRAConv,
    nn.Conv2d: LoRAConv,
    nn.Conv3d: LoRAConv,
    nn.ConvTranspose1d: LoRAConvTranspose,
    nn.ConvTranspose2d: LoRAConvTranspose,
    nn.ConvTranspose3d: LoRAConvTranspose,
}


def _lora_class(name: str, module: nn.Module) -> type[LoRALayer]:
    """The LoRA wrapper for ``module``; TypeError if its type (or a custom forward) is not supported."""
    if isinstance(getattr(type(module), "lora_weight", None), str):
        return LoRAKernel
    for kind in type(module).__mro__:
        if kind in SUPPORTED:
            if type(module).forward is not kind.forward or getattr(type(module), "_conv_forward", None) is not getattr(
                kind, "_conv_forward", None
            ):
                raise TypeError(
                    f"inject_lora: module {name!r} is a {type(module).__name__}, a subclass of "
                    f"{kind.__name__} with its own forward, which LoRA here would bypass; "
                    "adapt its inner layers instead"
                )
            return SUPPORTED[kind]
    supported = ", ".join(k.__name__ for k in SUPPORTED)
    raise TypeError(
        f"inject_lora: module {name!r} is a {type(module).__name__}; LoRA supports {supported} "
        "and layers that name their kernel in `lora_weight` (narrow the target pattern so it matches only those)"
    )


def _adaptable(module: nn.Module) -> bool:
    try:
        _lora_class("", module)
    except TypeError:
        return False
    return not isinstance(module, LoRALayer)


def adaptable(model: nn.Module) -> list[str]:
    """Names of the modules of ``model`` that :func:`inject_lora` can wrap, in model order
    (pass them as ``targets`` to adapt every one of them)."""
    return [
        name
        for name, m in model.named_modules()
        if name and _adaptable(m) and not any(isinstance(p, LoRALayer) for p in _parents(model, name))
    ]


def _parents(model: nn.Module, name: str) -> list[nn.Module]:
    parts = name.split(".")
    return [model.get_submodule(".".join(parts[:i])) for i in range(1, len(parts))]


def _matches(names: Iterable[str], pattern: str, regex: bool) -> list[str]:
    if regex:
        compiled = re.compile(pattern)
        return [n for n in names if compiled.fullmatch(n)]
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def inject_lora(
    model: nn.Module,
    targets: str | Sequence[str],
    r: int,
    alpha: float | None = None,
    dropout: float = 0.0,
    *,
    regex: bool = False,
    freeze_base: bool = True,
    generator: torch.Generator | None = None,
) -> list[str]:
    """Wrap every module whose name matches ``targets`` in a LoRA layer, in place.

    Args:
        model: the model to adapt; matching runs on the names of ``model.named_modules()``
            (e.g. ``"encoder.blocks.0.conv"``).
        targets: one pattern or several. Globs (``fnmatch``, matched against the whole name:
            ``"*.conv"``, ``"encoder.*"``) unless ``regex=True``, then ``re.fullmatch``.
            Every pattern must match at least one module, and every matched module must be a
            supported type (:data:`SUPPORTED`).
        r: the rank (a positive int).
        alpha: the scale numerator, ``scaling = alpha / r``; ``None`` means ``alpha = r``.
        dropout: dropout probability on the adapter's input (training mode only).
        freeze_base: set ``requires_grad=False`` on every parameter the model had before
            injection, so only the adapters train (modules added later train as usual).
        generator: draws the initial ``A`` factors (in the order of ``named_modules``).

    Returns:
        The names of the adapted modules, in model order.

    Raises:
        ValueError: a bad ``r``/``alpha``/``dropout``, no patterns, a pattern that matches
            nothing, or a module that already carries LoRA.
        TypeError: a matched module whose type LoRA does not support.
    """
    patterns = [targets] if isinstance(targets, str) else list(targets)
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise ValueError(f"inject_lora: targets must be a non-empty pattern or list of patterns, got {targets!r}")
    if isinstance(r, bool) or not isinstance(r, int):
        raise TypeError(f"inject_lora: r must be an int, got {type(r).__name__} {r!r}")
    if r <= 0:
        raise ValueError(f"inject_lora: rank r must be a positive integer, got r={r}")
    modules = {name: m for name, m in model.named_modules() if name}
    chosen: set[str] = set()
    for pattern in patterns:
        try:
            hits = _matches(modules, pattern, regex)
        except re.error as err:
            raise ValueError(f"inject_lora: target {pattern!r} is not a valid regular expression ({err})") from None
        if not hits:
            names = adaptable(model)
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            kind = "regex" if regex else "glob"
            raise ValueError(
                f"inject_lora: target {pattern!r} ({kind}) matches no module name; adaptable modules are: {shown or 'none'}"
            )
        chosen.update(hits)
    order = [n for n in modules if n in chosen]
    for name in order:
        if isinstance(modules[name], LoRALayer) or any(
            name.startswith(p + ".") for p, m in modules.items() if isinstance(m, LoRALayer)
        ):
            raise ValueError(f"inject_lora: module {name!r} already carries LoRA (call unload_lora first)")
        _lora_class(name, modules[name])
    if freeze_base:
        for p in model.parameters():
            p.requires_grad_(False)
    for name in order:
        module = modules[name]
        wrapper = _lora_class(name, module)(module, r, alpha, dropout, generator=generator)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, wrapper)
    return order


def lora_layers(model: nn.Module) -> dict[str, LoRALayer]:
    """Every LoRA layer in ``model``, by module name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALayer)}


def _require_layers(model: nn.Module, who: str) -> dict[str, LoRALayer]:
    layers = lora_layers(model)
    if not layers:
        raise ValueError(f"{who}: the model has no LoRA layers (call inject_lora first)")
    return layers


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight (inference then costs exactly the base model)."""
    for layer in _require_layers(model, "merge_lora").values():
        layer.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Undo :func:`merge_lora`: restore every base weight bit for bit."""
    for layer in _require_layers(model, "unmerge_lora").values():
        layer.unmerge()
    return model


def unload_lora(model: nn.Module, merge: bool = True) -> nn.Module:
    """Replace every LoRA layer by its base layer, with the adapter merged in (``merge=True``) or dropped.

    The model's parameters keep their ``requires_grad`` flags. Returns ``model``.
    """
    for name, layer in _require_layers(model, "unload_lora").items():
        if merge:
            layer.merge()
            layer._original = None  # the merged weight stays; nothing to restore
        else:
            layer.unmerge()
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, layer.base)
    return model


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter factors alone (``<layer>.lora_A`` / ``.lora_B``), to save a fine-tune in kilobytes.

    Load them back with ``model.load_state_dict(sd, strict=False)`` into a model with the same
    LoRA layers.
    """
    return {k: v for k, v in model.state_dict().items() if k.rsplit(".", 1)[-1] in ("lora_A", "lora_B")}


def print_trainable_parameters(model: nn.Module) -> str:
    """Print and return ``trainable params: ... || all params: ... || trainable%: ...`` (as peft does)."""
    trainable, total = count_parameters(model)
    line = f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / max(total, 1):.4f}"
    print(line)
    return line
