r"""The selective scan of Mamba (Gu & Dao 2023), and the Mamba block built on it.

**The model.** A state-space model maps a sequence ``x_t`` to ``y_t`` through a hidden state
``h_t``. Mamba keeps one independent state of size ``N`` (``d_state``) per channel ``d`` of
``d_inner`` channels, with a *diagonal*, negative real ``A`` (stored as ``A = -exp(A_log)`` so it
stays negative while trained). Discretised with a step ``Δ`` (Gu & Dao 2023, eq. 4, with the
simplification ``B̄ = Δ B`` that Mamba uses for ``B``):

.. math::
    h_t = \bar A_t \odot h_{t-1} + \Delta_t B_t x_t, \qquad
    \bar A_t = \exp(\Delta_t A), \qquad
    y_t = C_t \cdot h_t + D x_t,

optionally gated as ``y_t · SiLU(z_t)``. Written per channel ``d`` and state ``n``:
``h[t,d,n] = exp(Δ[t,d] A[d,n]) h[t-1,d,n] + Δ[t,d] B[t,n] x[t,d]`` and
``y[t,d] = Σ_n C[t,n] h[t,d,n] + D[d] x[t,d]``, starting from ``h[-1] = 0``.

**Selectivity.** In S4 the parameters ``Δ, B, C`` are constant: the model is linear and time
invariant (LTI), a fixed convolution of the input. Mamba makes them functions of the input at
time ``t``: ``Δ_t`` decides how much of the past to forget (large ``Δ``: reset and take the
current input; small ``Δ``: ignore it and keep the state), ``B_t`` what to write and ``C_t``
what to read. That is what lets it copy selected tokens, skip noise, or switch dynamics, which
no fixed convolution can do; the price is that the convolution trick of S4 is gone, and the
recurrence must be *scanned*.

**Shapes** (channels first, as ``mamba_ssm.selective_scan_fn`` takes them):

========  ==============================  ==========================================
x, delta  ``(batch, d_inner, length)``    input and step (``Δ > 0``: softplus output)
A         ``(d_inner, d_state)``          negative real, diagonal
B, C      ``(batch, d_state, length)``    input-dependent write and read vectors
D         ``(d_inner,)``                  skip connection (optional)
z         ``(batch, d_inner, length)``    gate (optional)
y         ``(batch, d_inner, length)``
========  ==============================  ==========================================

:class:`Mamba` (the block) takes ``(batch, length, d_model)``, as language models do.

Three implementations of the same function live here:

- :func:`selective_scan_ref`: the equations above, one time step at a time, autograd
  differentiates it. It is the definition; it is slow.
- :func:`selective_scan`: the same numbers (to rounding), fast, written for the CPU this book
  is run on. How, and why this way, is explained in :class:`_SelectiveScan` below.
- :class:`Mamba`: the block of Gu & Dao (2023, fig. 3): in-projection, causal depthwise
  convolution, SiLU, input-dependent ``Δ`` (low rank), ``B``, ``C``, the scan, the SiLU gate,
  out-projection. Its parameters have the names of ``mambapy.mamba.MambaBlock`` (and of
  ``mamba_ssm``'s ``Mamba``), so weights load from either.

References: A. Gu, T. Dao, *Mamba: Linear-Time Sequence Modeling with Selective State Spaces*,
arXiv:2312.00752 (2023). T. Dao, A. Gu, *Transformers are SSMs* (Mamba-2), ICML 2024. E. Martin, C. Cundy, *Parallelizing Linear Recurrent Neural Nets Over
Sequence Length*, ICLR 2018. G. Blelloch, *Prefix Sums and Their Applications* (1990).
A. TL, *mamba.py* (github.com/alxndrTL/mamba.py, 2024), the PyTorch scan used as the test oracle.
"""

from __future__ import annotations

import math
import threading

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = ["selective_scan", "selective_scan_ref", "Mamba", "MambaStack", "clear_workspace"]


# ----------------------------------------------------------------------------------------------
# Input checks, shared by the three implementations
# ----------------------------------------------------------------------------------------------


def _check(fn: str, x, delta, A, B, C, D=None, z=None) -> tuple[int, int, int, int]:
    """``(batch, d_inner, length, d_state)``, or a ValueError/TypeError naming the argument."""
    args = {"x": x, "delta": delta, "A": A, "B": B, "C": C, "D": D, "z": z}
    for name, t in args.items():
        if t is not None and not isinstance(t, torch.Tensor):
            raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if x.ndim != 3:
        raise ValueError(f"{fn}: x must be (batch, d_inner, length), got shape {tuple(x.shape)}")
    b, d, L = x.shape
    if A.ndim != 2 or A.shape[0] != d:
        raise ValueError(f"{fn}: A must be (d_inner, d_state) = ({d}, d_state), got shape {tuple(A.shape)}")
    n = A.shape[1]
    want = {"delta": (b, d, L), "B": (b, n, L), "C": (b, n, L), "D": (d,), "z": (b, d, L)}
    what = {
        "delta": "(batch, d_inner, length)",
        "B": "(batch, d_state, length)",
        "C": "(batch, d_state, length)",
        "D": "(d_inner,)",
        "z": "(batch, d_inner, length)",
    }
    for name, shape in want.items():
        t = args[name]
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(
                f"{fn}: {name} must be {what[name]} = {shape} to match x {tuple(x.shape)} "
                f"and A {tuple(A.shape)}, got shape {tuple(t.shape)}"
            )
    if not x.is_floating_point():
        raise TypeError(f"{fn}: x must be a floating-point tensor, got dtype {x.dtype}")
    for name, t in args.items():
        if t is None:
            continue
        if t.dtype != x.dtype:
            raise TypeError(f"{fn}: {name} has dtype {t.dtype} but x has {x.dtype}; pass them all in one dtype")
        if t.device != x.device:
            raise ValueError(f"{fn}: {name} is on {t.device} but x is on {x.device}")
    return b, d, L, n


# ----------------------------------------------------------------------------------------------
# (a) The definition: one step at a time
# ----------------------------------------------------------------------------------------------


def selective_scan_ref(
    x: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
) -> torch.Tensor:
    """The selective scan, written as the recurrence: a loop over time (shapes in the module doc).

    ``h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t x_t``, ``y_t = C_t·h_t + D x_t``, times ``SiLU(z_t)``
    when ``z`` is given. Differentiable by autograd. Returns ``(batch, d_inner, length)``.
    """
    b, d, L, n = _check("selective_scan_ref", x, delta, A, B, C, D, z)
    h = x.new_zeros(b, d, n)
    ys = []
    # unbind, not x[..., t]: indexing inside the loop makes autograd's backward quadratic in L
    for x_t, dt_t, B_t, C_t in zip(x.unbind(-1), delta.unbind(-1), B.unbind(-1), C.unbind(-1)):
        decay = torch.exp(dt_t[:, :, None] * A)  # (b, d, n)
        h = decay * h + (dt_t * x_t)[:, :, None] * B_t[:, None, :]  # (b, d, n)
        ys.append(torch.einsum("bdn,bn->bd", h, C_t))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + D[:, None] * x
    if z is not None:
        y = y * F.silu(z)
    return y


# ----------------------------------------------------------------------------------------------
# (b) The fast scan
# ----------------------------------------------------------------------------------------------


class _Workspace(threading.local):
    """Large scratch buffers kept between calls (one set per thread and dtype), and their rows.

    On a small CPU, a fresh 50 MB tensor costs page faults on first touch: allocating the
    three state-sized buffers anew on every call is slower than the arithmetic done in them.
    The scan therefore writes into buffers it keeps; no tensor handed back to the caller ever
    points into them, and they are only in use during one forward or one backward call, so
    nested layers share them safely. The per-step views the sequential loop walks through
    (``unbind``: one small tensor object per time step, about a microsecond each) are kept too,
    since the same buffers give the same views on the next call of the same size. CUDA's
    caching allocator already reuses memory, so there the buffers are plain ``torch.empty``.
    :func:`clear_workspace` frees everything.
    """

    def __init__(self) -> None:
        self.buffers: dict[tuple, torch.Tensor] = {}
        self.row_cache: dict[tuple, tuple[torch.Tensor, ...]] = {}

    def get(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        if like.device.type != "cpu":
            return torch.empty(shape, dtype=like.dtype, device=like.device)
        key = (name, like.dtype)
        numel = math.prod(shape)
        flat = self.buffers.get(key)
        if flat is None or flat.numel() < numel:
            self.row_cache.clear()  # its views would keep the old buffer alive
            self.buffers[key] = flat = torch.empty(numel, dtype=like.dtype)
        return flat[:numel].view(shape)

    def rows(self, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``t.unbind(0)``, remembered for views of the CPU buffers."""
        if t.device.type != "cpu":
            return t.unbind(0)
        key = (t.data_ptr(), t.dtype, tuple(t.shape), t.stride())
        rows = self.row_cache.get(key)
        if rows is None:
            rows = self.row_cache[key] = t.unbind(0)
        return rows


_WORKSPACE = _Workspace()


def clear_workspace() -> None:
    """Free the scratch buffers :func:`selective_scan` keeps between calls (this thread's)."""
    _WORKSPACE.buffers.clear()
    _WORKSPACE.row_cache.clear()


Job = tuple[torch.Tensor, torch.Tensor, bool]  # (coef, h, reverse), both (length, m)


def _recurrence_(jobs: list[Job], chunk: int) -> None:
    """Solve ``h[t] <- h[t] + coef[t] * h[t-1]`` for all t in place (``h[t+1]`` if ``reverse``).

    Each job is ``(coef, h, reverse)`` with ``coef`` and ``h`` of shape ``(length, m)``: time
    first, everything else flattened, so each step works on one contiguous block. The jobs are
    independent recurrences of the same length (the backward pass recomputes the states forwards
    while it scans the adjoint backwards).

    ``chunk == 1`` is the plain loop: one fused multiply-add per step, and with two jobs one
    ``torch._foreach_addcmul_`` call advances both (on a CPU each torch call costs a few
    microseconds whatever its size, as much as the arithmetic on a ``(4, 64, 16)`` block).
    ``chunk > 1`` runs :func:`_chunked_recurrence_` on each job.
    """
    L = jobs[0][1].shape[0]
    if chunk > 1 and chunk < L:
        for coef, h, reverse in jobs:
            _chunked_recurrence_(coef, h, chunk, reverse)
        return
    steps = []
    for coef, h, reverse in jobs:
        hs, cs = _WORKSPACE.rows(h), _WORKSPACE.rows(coef)
        if reverse:  # t = L-2, ..., 0:  h[t] += coef[t] h[t+1]
            steps.append((hs[-2::-1], cs[-2::-1], hs[:0:-1]))
        else:  # t = 1, ..., L-1:  h[t] += coef[t] h[t-1]
            steps.append((hs[1:], cs[1:], hs[:-1]))
    if len(steps) == 1:
        for h_t, c_t, h_prev in zip(*steps[0]):
            h_t.addcmul_(c_t, h_prev)
    else:
        (h1, c1, p1), (h2, c2, p2) = steps
        addcmul_ = torch._foreach_addcmul_
        for h1_t, h2_t, c1_t, c2_t, p1_t, p2_t in zip(h1, h2, c1, c2, p1, p2):
            addcmul_((h1_t, h2_t), (c1_t, c2_t), (p1_t, p2_t))


def _chunked_recurrence_(coef: torch.Tensor, h: torch.Tensor, chunk: int, reverse: bool) -> None:
    """The recurrence of :func:`_recurrence_` as a two-level scan over chunks of ``chunk`` steps.

    ``length`` must be a multiple of ``chunk = T``. This is the scan of Martin & Cundy (2018),
    for devices where the cost of launching an operation dominates (GPUs): it needs about
    ``3T + length/T`` operations instead of ``length``, each on a bigger block:

    1. inside every chunk at once, the local scan from a zero state (T steps, each on all
       ``length/T`` chunks together), keeping each chunk's total decay ``P_k = Π_j coef[k, j]``;
    2. across chunks, the true state at each chunk's end, ``H_k = h_loc[k, end] + P_k H_{k-1}``
       (``length/T`` small steps);
    3. inside every chunk again, the state carried in from the previous chunk, decayed step by
       step: ``h[k, j] += (Π_{i<=j} coef[k, i]) H_{k-1}`` (T steps).

    Every factor is a product of decays in (0, 1]: nothing is divided, nothing grows. (The
    reverse direction mirrors it: chunks are entered from their last step.)
    """
    K = h.shape[0] // chunk
    step = 1 if reverse else -1
    hv = rearrange(h, "(k j) m -> k j m", j=chunk)
    cv = rearrange(coef, "(k j) m -> k j m", j=chunk)
    js = list(range(chunk - 1, -1, -1)) if reverse else list(range(chunk))
    # 1. local scans, all chunks at once
    total = cv[:, js[0]].clone()  # (K, m)
    for prev, j in zip(js[:-1], js[1:]):
        hv[:, j].addcmul_(cv[:, j], hv[:, prev])
        total.mul_(cv[:, j])
    # 2. carries: true state at the end of every chunk
    carry = hv[:, js[-1]].clone()  # (K, m)
    carries, totals = carry.unbind(0), total.unbind(0)
    for k in range(K - 2, -1, -1) if reverse else range(1, K):
        carries[k].addcmul_(totals[k], carries[k + step])
    # 3. what flows in from the neighbouring chunk, decayed along this one
    inflow = carry[1:] if reverse else carry[:-1]  # (K-1, m)
    target = slice(0, K - 1) if reverse else slice(1, K)
    for j in js:
        inflow = cv[target, j] * inflow
        hv[target, j].add_(inflow)


def _inputs_to_state(
    x: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decays ``exp(Δ_t A)`` and inputs ``Δ_t B_t x_t`` of the scan, in workspace buffers.

    Inputs are time first: ``x, delta: (L, b, d)``, ``B: (L, b, n)``, ``A: (d, n)``. Returns
    ``decay: (Lp + 1, b, d, n)`` with ``decay[t] = exp(Δ_t A)`` for ``t < L``, 1 on the padding
    up to ``Lp`` (a multiple of ``chunk``) and 0 at ``Lp`` (so ``decay[1:]`` is the decay the
    reverse scan needs, ``exp(Δ_{t+1} A)``), and ``u: (Lp, b, d, n)``, zero on the padding.
    """
    L, b, d = x.shape
    n = A.shape[1]
    Lp = -(-L // chunk) * chunk
    decay = _WORKSPACE.get("decay", (Lp + 1, b, d, n), x)
    u = _WORKSPACE.get("state", (Lp, b, d, n), x)
    torch.mul(delta[..., None], A, out=decay[:L])  # Δ_t A   (<= 0)
    decay[:L].exp_()
    decay[L:Lp].fill_(1.0)
    decay[Lp].zero_()
    torch.mul((delta * x)[..., None], B[:, :, None, :], out=u[:L])  # Δ_t B_t x_t
    u[L:].zero_()
    return decay, u


def _contract_state(s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``Σ_n v[t,b,n] s[t,b,d,n]``: ``s (L, b, d, n)``, ``v (L, b, n)`` -> ``(L, b, d)``.

    Written as ``v (1 x n) @ sᵀ (n x d)`` per (t, b): BLAS then reads ``s`` as a transposed
    operand, which here is 4x faster than ``s (d x n) @ v (n x 1)``, the obvious form.
    """
    L, b, d, n = s.shape
    out = torch.bmm(v.reshape(L * b, 1, n), s.reshape(L * b, d, n).transpose(1, 2))
    return out.view(L, b, d)


def _contract_channels(s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``Σ_d v[t,b,d] s[t,b,d,n]``: ``s (L, b, d, n)``, ``v (L, b, d)`` -> ``(L, b, n)``."""
    L, b, d, n = s.shape
    return torch.bmm(v.reshape(L * b, 1, d), s.reshape(L * b, d, n)).view(L, b, n)


class _SelectiveScan(torch.autograd.Function):
    r"""``y[t] = Σ_n C[t,n] h[t,·,n]`` for the scan above, with its own backward pass.

    **Why not autograd through a scan.** mamba.py builds ``exp(ΔA)``, ``ΔB``, ``ΔBx`` and the
    states as tensors of the full size ``(b, L, d, n)``, its Blelloch scan clones and pads them,
    and autograd keeps several of them alive until the backward pass, which builds as many again.
    On a 2-core CPU the scan is limited by memory traffic and by the fixed cost of each torch
    operation, not by arithmetic, and every fresh 50 MB tensor costs page faults; the win is in
    fewer passes over memory, into buffers that already exist.

    **Forward.** Build ``exp(Δ_t A)`` and ``Δ_t B_t x_t`` (time first, ``(L, b, d, n)``) in two
    reused buffers, run the recurrence in place (:func:`_recurrence_`: one fused multiply-add
    per step on a contiguous ``(b, d, n)`` block), and contract with ``C`` in one batched matrix
    product. Only the inputs are saved: nothing state-sized outlives the call.

    **Backward** (the adjoint of a linear recurrence is the same recurrence run backwards).
    With ``g_t = ∂L/∂y_t`` and ``λ_t = ∂L/∂h_t``,

    .. math::
        \lambda_t = C_t g_t + \bar A_{t+1} \odot \lambda_{t+1}, \qquad \lambda_{L} = 0,

    one reverse scan. Then, recomputing ``h`` (cheaper than having stored it) and writing
    ``W_t = λ_t ⊙ Ā_t ⊙ h_{t-1}`` (the gradient with respect to the log-decay ``Δ_t A``):

    .. math::
        \partial C_t = \textstyle\sum_d g_t h_t, \quad
        \partial B_t = \sum_d \lambda_t \Delta_t x_t, \quad
        \partial x_t = \Delta_t \sum_n \lambda_t B_t, \quad
        \partial \Delta_t = x_t \sum_n \lambda_t B_t + \sum_n W_t A, \quad
        \partial A = \sum_{b,t} W_t \Delta_t.

    Three state-sized buffers in all, reused from call to call.

    **Chunks.** ``chunk > 1`` switches the recurrence to the two-level scan of
    :func:`_chunked_recurrence_`: a local scan inside every chunk, a short recurrence across
    chunks, and a fix-up with the carried state. Its factors are all products of decays in
    (0, 1]. The other way to go inside a chunk, a closed form with cumulative log-decays
    ``S_t = Σ_{s<=t} Δ_s A``, needs either ``exp(-S_s)`` (which overflows once ``|S|`` passes
    ~88 in float32) or every pair ``exp(S_t - S_s)``, ``T²`` work per chunk per state, which only
    pays off when it becomes a matrix product, as in Mamba-2 where the decay is one scalar per
    head (Dao & Gu 2024); with Mamba-1's per-``(d, n)`` decay it does not. The chunked scan needs
    about ``3T + L/T`` operations instead of ``L``, but touches the state about twice as often.
    On this book's 2-core CPU one step on a ``(b, d, n) = (4, 64, 16)`` block costs a few
    microseconds, about what the arithmetic of a chunked step saves, so the plain loop is as
    fast or faster (``benchmarks/bench_scan.py`` times both), and when other processes compete
    for the cores, each operation big enough to be split across threads waits for a free core,
    which makes a few hundred mid-sized operations far slower than thousands of small ones.
    ``chunk=1`` is therefore the default on CPU. Blelloch's log-depth scan (mamba.py's
    ``pscan``) is the extreme of the same trade: ``2 log₂ L`` steps, but each level another pass
    over the state; on a CPU it is no faster than the loop.
    """

    @staticmethod
    def forward(ctx, x, delta, A, B, C, chunk: int):
        # x, delta: (L, b, d); A: (d, n); B, C: (L, b, n)   (time first, contiguous)
        ctx.save_for_backward(x, delta, A, B, C)
        ctx.chunk = chunk
        L = x.shape[0]
        decay, h = _inputs_to_state(x, delta, A, B, chunk)
        Lp = h.shape[0]
        _recurrence_([(decay[:Lp].view(Lp, -1), h.view(Lp, -1), False)], chunk)  # h_t
        return _contract_state(h[:L], C)  # Σ_n C h      (L, b, d)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        x, delta, A, B, C = ctx.saved_tensors
        need_x, need_delta, need_A, need_B, need_C, _ = ctx.needs_input_grad
        L, b, d = x.shape
        n = A.shape[1]
        g = g.contiguous()
        decay, h = _inputs_to_state(x, delta, A, B, ctx.chunk)
        Lp = h.shape[0]
        flat = lambda t: t.view(Lp, -1)  # noqa: E731
        jobs = [(flat(decay[:Lp]), flat(h), False)]  # recompute h_t
        need_adjoint = need_x or need_delta or need_A or need_B
        if need_adjoint:
            lam = _WORKSPACE.get("adjoint", (Lp, b, d, n), x)
            torch.mul(g[..., None], C[:, :, None, :], out=lam[:L])  # C_t g_t
            lam[L:].zero_()
            jobs.append((flat(decay[1:]), flat(lam), True))  # λ_t, backwards in time
        _recurrence_(jobs, ctx.chunk)
        dx = ddelta = dA = dB = dC = None
        if need_C:
            dC = _contract_channels(h[:L], g)  # Σ_d g h       (L, b, n)
        if not need_adjoint:
            return dx, ddelta, dA, dB, dC, None
        lam = lam[:L]
        if need_x or need_delta:
            q = _contract_state(lam, B)  # Σ_n λ B       (L, b, d)
            dx = delta * q if need_x else None
            ddelta = x * q if need_delta else None
        if need_B:
            dB = _contract_channels(lam, delta * x)  # Σ_d λ Δx      (L, b, n)
        if need_delta or need_A:
            w = decay[:L]  # W = λ Ā h_{t-1}, in place
            w[1:].mul_(h[: L - 1])
            w[0].zero_()
            w.mul_(lam)
            if need_delta:
                ddelta += torch.mul(w, A, out=h[:L]).sum(-1)  # Σ_n W A
            if need_A:
                dA = w.mul_(delta[..., None]).sum((0, 1))  # Σ_{t,b} W Δ   (d, n)
        return dx, ddelta, dA, dB, dC, None


def _default_chunk(device: torch.device, length: int) -> int:
    """1 (the plain loop) on CPU; about √length where launching an operation is the cost."""
    if device.type == "cpu":
        return 1
    return max(1, 2 ** round(math.log2(max(1.0, math.sqrt(length)))))


def _scan_time_first(x, delta, A, B, C, D, z, chunk):
    """The fast scan on time-first tensors ``(L, b, d)``/``(L, b, n)``; returns ``(L, b, d)``."""
    if chunk is None:
        chunk = _default_chunk(x.device, x.shape[0])
    y = _SelectiveScan.apply(x.contiguous(), delta.contiguous(), A.contiguous(), B.contiguous(), C.contiguous(), chunk)
    if D is not None:
        y = y + D * x
    if z is not None:
        y = y * F.silu(z)
    return y


def selective_scan(
    x: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    *,
    chunk: int | None = None,
) -> torch.Tensor:
    """The selective scan, fast: same arguments and result as :func:`selective_scan_ref`.

    Args:
        x, delta: ``(batch, d_inner, length)``; ``delta`` is the step ``Δ`` (positive).
        A: ``(d_inner, d_state)``, negative (``-exp(A_log)``).
        B, C: ``(batch, d_state, length)``.
        D: ``(d_inner,)`` skip, or ``None``.
        z: ``(batch, d_inner, length)`` gate (the output is multiplied by ``SiLU(z)``), or ``None``.
        chunk: time steps per chunk of the two-level scan; ``1`` is the plain loop (the default
            on CPU, where it is fastest), ``None`` picks per device. Any length works: the
            sequence is padded internally to a multiple of ``chunk``.

    Returns:
        ``y``: ``(batch, d_inner, length)``.

    Differentiable in every tensor argument (first order) through a hand-written backward pass
    that runs the scan in reverse; see :class:`_SelectiveScan`.
    """
    _check("selective_scan", x, delta, A, B, C, D, z)
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"selective_scan: chunk must be a positive int or None, got {chunk!r}")
    tf = lambda t: None if t is None else rearrange(t, "b c l -> l b c")  # noqa: E731
    y = _scan_time_first(tf(x), tf(delta), A, tf(B), tf(C), D, tf(z), chunk)
    return rearrange(y, "l b d -> b d l").contiguous()


# ----------------------------------------------------------------------------------------------
# (c) The Mamba block
# ----------------------------------------------------------------------------------------------


class Mamba(nn.Module):
    """The Mamba block (Gu & Dao 2023, fig. 3): ``(batch, length, d_model) -> same shape``.

    ::

        u ─ in_proj ─┬─ x ─ causal depthwise conv1d ─ SiLU ─┬─ x_proj → (Δ_r, B, C)
                     │                                       │  Δ = softplus(dt_proj(Δ_r))
                     │                                       └─ selective scan(x, Δ, A, B, C, D)
                     └─ z ──────────────────────── SiLU(z) ⊙ ────────────┘ ─ out_proj ─ y

    ``d_inner = expand · d_model``. ``Δ`` goes through a rank-``dt_rank`` bottleneck (default
    ``ceil(d_model / 16)``); ``dt_proj``'s bias is initialised so that ``softplus(bias)`` is
    log-uniform in ``[dt_min, dt_max]``, and ``A = -exp(A_log)`` starts at ``A[d, n] = -(n+1)``
    (S4D-real), both as in Mamba. The convolution pads only the past: output ``t`` depends on
    inputs ``<= t``.

    ``selective=False`` gives the ablation of Gu & Dao's section 3: ``(Δ_r, B, C)`` become one
    learnt vector ``lti`` shared by every time step instead of ``x_proj(x_t)``, so the scan is
    linear and time-invariant (a fixed causal convolution, as in S4), while everything around it
    (convolution, gate, projections) stays.

    Args:
        d_model: width of the input and output.
        d_state: ``N``, the state size per channel.
        d_conv: kernel size of the causal convolution.
        expand: ``d_inner / d_model``.
        dt_rank: rank of the ``Δ`` projection, or ``"auto"``.
        dt_min, dt_max, dt_init_floor: range of the initial steps.
        conv_bias, bias: biases of the convolution and of the in/out projections.
        selective: input-dependent ``Δ, B, C`` (Mamba) or constant ones (LTI).
        chunk: passed to :func:`selective_scan`.
        generator: draw the initial weights from it (for reproducible models); ``None``: the
            global generator, as every torch layer does.
    """

    def __init__(
        self,
        d_model: int,
        *,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        selective: bool = True,
        chunk: int | None = None,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        for name, v in {"d_model": d_model, "d_state": d_state, "d_conv": d_conv, "expand": expand}.items():
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Mamba: {name} must be a positive int, got {v!r}")
        if dt_rank == "auto":
            dt_rank = math.ceil(d_model / 16)
        if isinstance(dt_rank, bool) or not isinstance(dt_rank, int) or dt_rank < 1:
            raise ValueError(f"Mamba: dt_rank must be a positive int or 'auto', got {dt_rank!r}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"Mamba: need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        self.d_model, self.d_state, self.d_conv, self.dt_rank = d_model, d_state, d_conv, dt_rank
        self.d_inner = d_inner = expand * d_model
        self.selective, self.chunk = bool(selective), chunk
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=bias)
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1, bias=conv_bias)
        if self.selective:
            self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        else:
            self.lti = nn.Parameter(torch.empty(dt_rank + 2 * d_state))
        self.dt_proj = nn.Linear(dt_rank, d_inner, bias=True)
        self.A_log = nn.Parameter(torch.empty(d_inner, d_state))
        self.D = nn.Parameter(torch.empty(d_inner))
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias)
        self._dt_range = (dt_min, dt_max, dt_init_floor)
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Mamba's initialisation (torch's default for the projections and the convolution)."""
        layers = [self.in_proj, self.conv1d, self.out_proj, self.dt_proj]
        if self.selective:
            layers.append(self.x_proj)
        else:  # Δ_r = 0 (Δ = softplus(bias) as in Mamba), B and C of unit size
            self.lti.zero_()
            nn.init.normal_(self.lti[self.dt_rank :], generator=generator)
        for layer in layers:
            fan_in = layer.weight[0].numel()
            nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
            if layer.bias is not None:
                bound = 1 / math.sqrt(fan_in)
                nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
        std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std, generator=generator)
        dt_min, dt_max, floor = self._dt_range
        u = torch.rand(self.d_inner, generator=generator).to(self.D.device)
        dt = torch.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^{-1}(dt)
        n = torch.arange(1, self.d_state + 1, dtype=self.A_log.dtype, device=self.A_log.device)
        self.A_log.copy_(torch.log(n).expand(self.d_inner, -1))
        self.D.fill_(1.0)

    def ssm_parameters(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(Δ, B, C)`` for the scan input ``x: (L, b, d_inner)`` (time first): shapes
        ``(L, b, d_inner)``, ``(L, b, d_state)``, ``(L, b, d_state)``."""
        if self.selective:
            dtBC = self.x_proj(x)
        else:
            dtBC = self.lti.expand(*x.shape[:2], -1)
        dt, B, C = torch.split(dtBC, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        return F.softplus(self.dt_proj(dt)), B, C

    def _branches(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The scan input ``x`` and the gate ``z``, both time first ``(L, b, d_inner)``."""
        if not isinstance(u, torch.Tensor) or u.ndim != 3 or u.shape[-1] != self.d_model:
            got = tuple(u.shape) if isinstance(u, torch.Tensor) else type(u).__name__
            raise ValueError(f"Mamba: u must be (batch, length, d_model={self.d_model}), got {got}")
        L = u.shape[1]
        x, z = self.in_proj(u).chunk(2, dim=-1)  # (b, L, d_inner)
        x = self.conv1d(rearrange(x, "b l d -> b d l"))[..., :L]  # causal: cut the tail
        return F.silu(rearrange(x, "b d l -> l b d")), rearrange(z, "b l d -> l b d")

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """``u: (batch, length, d_model)`` -> ``(batch, length, d_model)``."""
        x, z = self._branches(u)
        delta, B, C = self.ssm_parameters(x)
        A = -torch.exp(self.A_log)
        y = _scan_time_first(x, delta, A, B, C, self.D, z, self.chunk)
        return self.out_proj(rearrange(y, "l b d -> b l d"))

    def steps(self, u: torch.Tensor) -> torch.Tensor:
        """The step ``Δ`` the block uses at every time and channel: ``(batch, length, d_inner)``.

        Large ``Δ``: the state is reset to the current input; small ``Δ``: the input is ignored
        and the state kept. Plotting it shows what a trained block has learnt to select.
        """
        delta, _, _ = self.ssm_parameters(self._branches(u)[0])
        return rearrange(delta, "l b d -> b l d")

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_inner={self.d_inner}, d_state={self.d_state}, "
            f"d_conv={self.d_conv}, dt_rank={self.dt_rank}, selective={self.selective}"
        )


class _Residual(nn.Module):
    """``u + mixer(RMSNorm(u))``: one layer of a Mamba stack (pre-norm residual)."""

    def __init__(self, mixer: nn.Module, d_model: int, eps: float):
        super().__init__()
        self.mixer = mixer
        self.norm = nn.RMSNorm(d_model, eps=eps)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return u + self.mixer(self.norm(u))


class MambaStack(nn.Module):
    """``n_layers`` Mamba blocks with pre-norm residual connections: ``u <- u + Mamba(RMSNorm(u))``.

    The backbone of Mamba language models (without embedding and head), and of PDE-FM's latent
    processor. ``(batch, length, d_model) -> same shape``; causal, as each block is. Parameter
    names follow ``mambapy.mamba.Mamba`` (``layers.{i}.mixer``, ``layers.{i}.norm``), so its
    weights load directly. Keyword arguments go to every :class:`Mamba` block.
    """

    def __init__(self, d_model: int, n_layers: int, *, eps: float = 1e-5, generator: torch.Generator | None = None, **block):
        super().__init__()
        if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
            raise ValueError(f"MambaStack: n_layers must be a positive int, got {n_layers!r}")
        self.layers = nn.ModuleList(
            _Residual(Mamba(d_model, generator=generator, **block), d_model, eps) for _ in range(n_layers)
        )

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """``u: (batch, length, d_model)`` -> ``(batch, length, d_model)``."""
        for layer in self.layers:
            u = layer(u)
        return u
