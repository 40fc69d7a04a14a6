r"""A PDE-FM-style model: one network for many PDE systems (after arXiv 2511.21861).

PDE-FM (Towards a Foundation Model for Partial Differential Equations Across Physics Domains,
2025) predicts the next frame of systems with different fields, coefficients and time steps
with one set of shared weights. This module builds that model from the library's pieces. For a
window of frames :math:`x_0, \dots, x_{T-1}` of system :math:`s` with :math:`F_s` fields,

1. **Adapter in** (one per system, a 1x1 convolution): :math:`a_t = W_s x_t + b_s`, from
   :math:`F_s` fields to a shared latent width :math:`C`. Systems with 1, 2 or 3 fields meet
   in the same latent space.
2. **Spatial patch tokens**: a strided convolution cuts :math:`a_t` into :math:`P`
   non-overlapping patches, :math:`u_{t,p} \in \mathbb R^D`.
3. **One spectral token** per frame from the truncated Fourier transform of :math:`a_t`:
   :math:`\sigma_t = W_\sigma\,[\Re \hat a_{t,k}, \Im \hat a_{t,k}]_{0 < |k|_\infty \le m}`.
   The zero mode is left out, so the token ignores a constant shift of the field (the mean
   is the patches' business) and sees only its shape, globally.
4. **Fusion by cross-attention**: every patch token attends to the spectral token,
   :math:`u_{t,p} \leftarrow u_{t,p} + \mathrm{Attn}(q = u_{t,p};\ k, v \in \{\sigma_t, \nu\})`.
   With a single key a softmax always gives it weight 1, and "attention" would be a constant
   broadcast; a learnt *null* token :math:`\nu` next to it turns the softmax into a per-patch,
   per-head gate :math:`g_{t,p} = \mathrm{sigmoid}(q\cdot k_\sigma - q\cdot k_\nu)`: each patch
   decides how much global spectral context it takes.
5. **FiLM on physics metadata**: :math:`c = [e_s, \tilde\theta, \log\Delta t]` (a learnt
   embedding of the system, its coefficients scaled to :math:`[-1, 1]`, the log of the time
   between frames) gives :math:`u \leftarrow (1 + \gamma(c)) \odot u + \beta(c)`, with the last
   layer of :math:`\gamma, \beta` zero at the start, so FiLM starts as the identity.
6. **Mamba over time** (:class:`~physfm.nn.scan.MambaStack`), per patch position:
   :math:`h_{\cdot,p} = \mathrm{Mamba}(u_{\cdot,p})`, causal, linear in :math:`T`.
   (:class:`CausalTransformer` is the backbone it is compared with.)
7. **FNO decoder** (:class:`~physfm.nn.fno.FNODecoder`) from the token grid back to the full grid,
   and an **adapter out** (one per system, 1x1, zero at the start) to :math:`F_s` fields:
   :math:`\hat x_{t+1} = x_t + \mathrm{Out}_s(\mathrm{FNO}(h_t))`. An untrained model predicts
   persistence, :math:`\hat x_{t+1} = x_t`.

Every step but the backbone acts on one frame at a time and the backbone is causal, so entry
:math:`t` of the output depends on frames :math:`\le t` only: one pass over a window scores a
prediction of every frame after the first (teacher forcing).

**A system the model has not seen** has no adapter. The model also holds a *generic*,
single-field adapter pair and an "unknown system" embedding: with ``system=None`` every field is
lifted on its own (fields folded into the batch, as the book's tokeniser does), coefficients
are withheld and only the time step is known. Training with a fraction of batches on this path
is what makes zero-shot prediction of a held-out system possible at all.

**Loss** (the paper's dual spatial-spectral objective):

.. math::
    \mathcal L = \mathrm{VRMSE}(\hat x, x) + \lambda\,
    \frac{\sum_k \big(|\hat{\mathcal F}(\hat x)_k| - |\mathcal F(x)_k|\big)^2}{\sum_k |\mathcal F(x)_k|^2},

VRMSE as The Well defines it (:func:`physfm.eval.metrics.vrmse`), and a relative L2 error of the
*amplitude* spectrum. (The L2 error of the complex spectrum would be the MSE again, by
Parseval; the amplitude error is blind to phase and penalises what VRMSE tolerates: a blurred
prediction, whose high wavenumbers carry too little energy.)

Shapes are channels first, ``(batch, fields, time, *space)``, 1 to 3 spatial axes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from physfm.eval.metrics import vrmse
from physfm.nn.fno import FNODecoder
from physfm.nn.layers import CONV as _CONV
from physfm.nn.scan import MambaStack

__all__ = [
    "FiLM",
    "SpectralToken",
    "SpectralFusion",
    "CausalTransformer",
    "PDEFM",
    "spectral_l2",
    "pdefm_loss",
    "matched_transformer_hidden",
]


def _axes(d: int) -> str:
    """``"s0 s1"`` for d = 2: names of the spatial axes in einops patterns."""
    return " ".join(f"s{i}" for i in range(d))


# ----------------------------------------------------------------------------------------------
# Physics conditioning
# ----------------------------------------------------------------------------------------------


class FiLM(nn.Module):
    """Feature-wise linear modulation: ``tokens * (1 + gamma(c)) + beta(c)``.

    ``c: (n, cond_dim)`` modulates ``tokens: (n, ..., dim)`` (every token of sample ``i`` with the
    same ``gamma_i, beta_i``). The last layer starts at zero: at initialisation FiLM is exactly
    the identity, and the model learns how much the metadata should matter.
    """

    def __init__(self, cond_dim: int, dim: int, hidden: int = 32):
        super().__init__()
        self.dim = dim
        self.net = nn.Sequential(nn.Linear(cond_dim, hidden), nn.SiLU(), nn.Linear(hidden, 2 * dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, tokens: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if tokens.shape[-1] != self.dim or c.ndim != 2 or c.shape[0] != tokens.shape[0]:
            raise ValueError(
                f"FiLM: want tokens (n, ..., {self.dim}) and c (n, cond_dim), "
                f"got tokens {tuple(tokens.shape)} and c {tuple(c.shape)}"
            )
        gamma, beta = self.net(c).chunk(2, dim=-1)  # (n, dim) each
        shape = (c.shape[0],) + (1,) * (tokens.ndim - 2) + (self.dim,)
        return tokens * (1 + gamma.reshape(shape)) + beta.reshape(shape)


# ----------------------------------------------------------------------------------------------
# The spectral token and its fusion with the patch tokens
# ----------------------------------------------------------------------------------------------


class SpectralToken(nn.Module):
    """One token from the lowest Fourier modes of a frame, the zero mode left out.

    ``a: (n, channels, *space) -> (n, dim)``. Kept are the wavenumbers with
    ``|k_i| <= modes`` on every axis (integer wavenumbers, box of side 1), on the half-space of
    the real FFT (last axis ``k >= 0``), without ``k = 0``: ``M = (2m+1)^(d-1) (m+1) - 1`` modes,
    so the token is a linear map of ``channels * M * 2`` real numbers (:meth:`features`).
    Fourier coefficients are normalised by the number of grid points (``norm="forward"``), so
    the same field sampled on a finer grid gives the same token.
    """

    def __init__(self, channels: int, dim: int, modes: int, spatial_dims: int = 2):
        super().__init__()
        if isinstance(modes, bool) or not isinstance(modes, int) or modes < 1:
            raise ValueError(f"SpectralToken: modes must be a positive int, got {modes!r}")
        if spatial_dims not in _CONV:
            raise ValueError(f"SpectralToken: spatial_dims must be 1, 2 or 3, got {spatial_dims!r}")
        self.channels, self.modes, self.d = channels, modes, spatial_dims
        self.n_modes = (2 * modes + 1) ** (spatial_dims - 1) * (modes + 1) - 1
        self.proj = nn.Linear(channels * self.n_modes * 2, dim)

    def features(self, a: torch.Tensor) -> torch.Tensor:
        """The truncated spectrum as real numbers: ``(n, channels * M * 2)``."""
        d, m = self.d, self.modes
        if a.ndim != d + 2 or a.shape[1] != self.channels:
            raise ValueError(
                f"SpectralToken: a must be (n, {self.channels}, *space) with {d} spatial axes, got shape {tuple(a.shape)}"
            )
        space = a.shape[2:]
        if any(n < 2 * m + 1 for n in space):
            raise ValueError(f"SpectralToken: modes={m} needs every spatial size >= {2 * m + 1}, got {tuple(space)}")
        ah = torch.fft.rfftn(a, dim=tuple(range(-d, 0)), norm="forward")
        for i, n in enumerate(space):  # wavenumbers 0, 1, ..., m (then -m, ..., -1 but on the last axis)
            idx = torch.arange(0, m + 1) if i == d - 1 else torch.cat([torch.arange(0, m + 1), torch.arange(-m, 0) % n])
            ah = ah.index_select(2 + i, idx.to(a.device))  # (n, c, 2m+1, ..., m+1)
        z = rearrange(ah, "n c ... -> n c (...)")[..., 1:]  # k = 0 comes first: drop it
        return rearrange(torch.view_as_real(z), "n c k two -> n (c k two)")

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        """``a: (n, channels, *space) -> (n, dim)``."""
        return self.proj(self.features(a))


class SpectralFusion(nn.Module):
    """Patch tokens attend to the spectral token (and a learnt null token): cross-attention.

    ``patches: (b, P, dim)``, ``spectral: (b, 1, dim)`` -> ``(b, P, dim)``, residual:
    ``patches + Attn(LN(patches), LN([spectral, null]))``. :meth:`gate` returns the attention
    weight every patch (and head) gives the spectral token.
    """

    def __init__(self, dim: int, heads: int = 2):
        super().__init__()
        if dim % heads:
            raise ValueError(f"SpectralFusion: dim={dim} must be a multiple of heads={heads}")
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.null = nn.Parameter(0.02 * torch.randn(1, 1, dim))
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def _kv(self, spectral: torch.Tensor) -> torch.Tensor:
        return self.norm_kv(torch.cat([spectral, self.null.expand(spectral.shape[0], -1, -1)], dim=1))

    def forward(self, patches: torch.Tensor, spectral: torch.Tensor) -> torch.Tensor:
        kv = self._kv(spectral)
        out, _ = self.attn(self.norm_q(patches), kv, kv, need_weights=False)
        return patches + out

    def gate(self, patches: torch.Tensor, spectral: torch.Tensor) -> torch.Tensor:
        """Weight on the spectral token, ``(b, heads, P)``, each in (0, 1)."""
        kv = self._kv(spectral)
        _, w = self.attn(self.norm_q(patches), kv, kv, need_weights=True, average_attn_weights=False)
        return w[..., 0]


# ----------------------------------------------------------------------------------------------
# The transformer backbone it is compared with
# ----------------------------------------------------------------------------------------------


class _TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.RMSNorm(dim), nn.RMSNorm(dim)
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(self.norm1(u)), "b l (three h e) -> three b h l e", three=3, h=self.heads)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        u = u + self.out(rearrange(y, "b h l e -> b l (h e)"))
        return u + self.mlp(self.norm2(u))


class CausalTransformer(nn.Module):
    """Pre-norm causal self-attention over time: ``(batch, length, dim) -> same``.

    A sinusoidal time encoding (no parameters) is added at the input, since attention by itself
    does not know the order of the frames; the causal mask keeps output ``t`` from seeing inputs
    after ``t``. Cost per layer: ``O(length^2)`` for attention against Mamba's ``O(length)``.
    """

    def __init__(self, dim: int, n_layers: int, *, heads: int = 2, hidden: int = 64):
        super().__init__()
        if dim % heads or dim % 2:
            raise ValueError(f"CausalTransformer: dim={dim} must be even and a multiple of heads={heads}")
        self.dim = dim
        self.layers = nn.ModuleList(_TransformerBlock(dim, heads, hidden) for _ in range(n_layers))

    def encoding(self, length: int, device, dtype) -> torch.Tensor:
        pos = torch.arange(length, device=device, dtype=torch.float64)[:, None]
        freq = torch.exp(-math.log(10_000.0) * torch.arange(0, self.dim, 2, device=device, dtype=torch.float64) / self.dim)
        return torch.cat([torch.sin(pos * freq), torch.cos(pos * freq)], dim=-1).to(dtype)  # (length, dim)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        u = u + self.encoding(u.shape[1], u.device, u.dtype)
        for layer in self.layers:
            u = layer(u)
        return u


def matched_transformer_hidden(dim: int, n_layers: int, target: int) -> int:
    """The MLP width that gives a :class:`CausalTransformer` of ``n_layers`` about ``target``
    parameters (each layer: ``4 dim^2 + 6 dim`` for norms and attention, ``(2 dim + 1) hidden + dim``
    for the MLP)."""
    per_layer = target / n_layers
    hidden = round((per_layer - 4 * dim * dim - 7 * dim) / (2 * dim + 1))
    if hidden < 1:
        raise ValueError(
            f"matched_transformer_hidden: {target} parameters are too few for {n_layers} "
            f"attention layers of width {dim} (attention alone needs {n_layers * (4 * dim * dim + 7 * dim)})"
        )
    return hidden


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------


class PDEFM(nn.Module):
    """Adapters -> patch tokens + spectral token -> cross-attention -> FiLM -> backbone over time
    -> FNO decoder -> adapters (see the module docstring for the equations).

    Args:
        systems: system name -> number of fields, one adapter pair each.
        width: ``C``, the shared latent width of the adapters.
        dim: ``D``, the width of the tokens and of the backbone.
        patch: patch side (the grid must be a multiple of it).
        spectral_modes: ``m``, the spectral token's modes per axis; ``spectral_token=False`` drops
            the token and its fusion (the ablation).
        n_coefficients: length of the (zero-padded) coefficient vector of the metadata.
        layers, d_state: the backbone; ``backbone="mamba"`` (:class:`~physfm.nn.scan.MambaStack`) or
            ``"transformer"`` (:class:`CausalTransformer`, ``heads`` and ``transformer_hidden``).
        decoder_width, decoder_modes, decoder_blocks: the :class:`~physfm.nn.fno.FNODecoder`.
        heads: heads of the fusion attention.
        embed: width of the system embedding in the metadata.
        spatial_dims: 1, 2 or 3.
    """

    def __init__(
        self,
        systems: Mapping[str, int],
        *,
        width: int = 8,
        dim: int = 32,
        patch: int = 4,
        spectral_modes: int = 4,
        spectral_token: bool = True,
        n_coefficients: int = 4,
        layers: int = 2,
        d_state: int = 8,
        backbone: str = "mamba",
        transformer_hidden: int = 64,
        decoder_width: int = 16,
        decoder_modes: int = 8,
        decoder_blocks: int = 1,
        heads: int = 2,
        embed: int = 8,
        spatial_dims: int = 2,
    ):
        super().__init__()
        if not systems or any(isinstance(f, bool) or not isinstance(f, int) or f < 1 for f in systems.values()):
            raise ValueError(f"PDEFM: systems must map names to positive field counts, got {dict(systems)!r}")
        if spatial_dims not in _CONV:
            raise ValueError(f"PDEFM: spatial_dims must be 1, 2 or 3, got {spatial_dims!r}")
        if backbone not in ("mamba", "transformer"):
            raise ValueError(f"PDEFM: backbone must be 'mamba' or 'transformer', got {backbone!r}")
        conv = _CONV[spatial_dims]
        self.systems = dict(systems)
        self.names = list(systems)
        self.d, self.patch, self.n_coefficients = spatial_dims, patch, n_coefficients
        self.backbone_kind, self.spectral_token = backbone, bool(spectral_token)
        self.adapters_in = nn.ModuleDict({s: conv(f, width, 1) for s, f in systems.items()})
        self.adapters_out = nn.ModuleDict({s: conv(decoder_width, f, 1) for s, f in systems.items()})
        self.generic_in, self.generic_out = conv(1, width, 1), conv(decoder_width, 1, 1)
        for out in [*self.adapters_out.values(), self.generic_out]:  # persistence at the start
            nn.init.zeros_(out.weight)
            nn.init.zeros_(out.bias)
        self.embed = nn.Embedding(len(systems) + 1, embed)  # the last row: "unknown system"
        self.patches = conv(width, dim, patch, stride=patch)
        if self.spectral_token:
            self.spectral = SpectralToken(width, dim, spectral_modes, spatial_dims)
            self.fusion = SpectralFusion(dim, heads)
        self.film = FiLM(embed + n_coefficients + 1, dim)
        if backbone == "mamba":
            self.backbone = MambaStack(dim, layers, d_state=d_state)
        else:
            self.backbone = CausalTransformer(dim, layers, heads=heads, hidden=transformer_hidden)
        self.norm = nn.RMSNorm(dim)
        self.decoder = FNODecoder(
            dim,
            decoder_width,
            (decoder_modes,) * spatial_dims,
            width=decoder_width,
            blocks=decoder_blocks,
            spatial_dims=spatial_dims,
        )

    # -- the pieces --------------------------------------------------------------------------

    def _check(self, x: torch.Tensor, system: str | None) -> None:
        if system is not None and system not in self.systems:
            raise ValueError(
                f"PDEFM: system {system!r} has no adapter; known systems: {self.names} (system=None takes the generic path)"
            )
        if not isinstance(x, torch.Tensor) or x.ndim != self.d + 3:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"PDEFM: x must be (n, fields, time, *space) with {self.d} spatial axes, got {got}")
        if system is not None and x.shape[1] != self.systems[system]:
            raise ValueError(f"PDEFM: {system} has {self.systems[system]} fields, x has shape {tuple(x.shape)}")
        if any(n % self.patch for n in x.shape[3:]):
            raise ValueError(f"PDEFM: spatial sizes {tuple(x.shape[3:])} must be multiples of patch={self.patch}")

    def condition(
        self, n: int, system: str | None, coefficients: torch.Tensor | None, dt: torch.Tensor | float | None, device
    ) -> torch.Tensor:
        """The metadata vector ``c = [e_s, coefficients, log dt]``: ``(n, embed + K + 1)``.

        ``coefficients: (n, k)`` with ``k <= n_coefficients`` (zero-padded; ``None``: zeros);
        ``dt``: the time between frames, ``(n,)`` or a number (``None``: ``log dt = 0``).
        """
        index = len(self.names) if system is None else self.names.index(system)
        e = self.embed(torch.full((n,), index, dtype=torch.long, device=device))
        coef = torch.zeros(n, self.n_coefficients, device=device)
        if coefficients is not None:
            if coefficients.ndim != 2 or coefficients.shape[0] != n or coefficients.shape[1] > self.n_coefficients:
                raise ValueError(
                    f"PDEFM: coefficients must be (n={n}, k <= {self.n_coefficients}), got shape {tuple(coefficients.shape)}"
                )
            coef[:, : coefficients.shape[1]] = coefficients
        log_dt = torch.zeros(n, 1, device=device)
        if dt is not None:
            dt = torch.as_tensor(dt, dtype=torch.float32, device=device).reshape(-1, 1)
            if dt.shape[0] not in (1, n):
                raise ValueError(f"PDEFM: dt must be a number or have one entry per sample (n={n}), got {dt.shape[0]} entries")
            dt = dt.expand(n, 1)
            if (dt <= 0).any():
                raise ValueError(f"PDEFM: dt must be positive, got {dt.flatten().tolist()}")
            log_dt = torch.log(dt)
        return torch.cat([e, coef, log_dt], dim=1)

    def tokens(self, x: torch.Tensor, system: str | None, c: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """Adapted, tokenised, fused and modulated frames: ``(n', time, P, dim)`` and the token grid.

        ``n' = n`` on a system's own path; on the generic path fields are folded into the batch.
        """
        s = _axes(self.d)
        t = x.shape[2]
        frames = rearrange(x, f"n f t {s} -> (n t) f {s}")
        a = self.adapters_in[system](frames) if system is not None else self.generic_in(frames)  # (n' t, C, *S)
        u = self.patches(a)  # (n' t, D, *grid)
        grid = tuple(u.shape[2:])
        u = rearrange(u, f"b d {s} -> b ({s}) d")
        if self.spectral_token:
            u = self.fusion(u, rearrange(self.spectral(a), "b d -> b 1 d"))
        u = rearrange(u, "(n t) p d -> n t p d", t=t)
        return self.film(u, c), grid

    def forward(
        self,
        x: torch.Tensor,
        system: str | None,
        coefficients: torch.Tensor | None = None,
        dt: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        """Predictions of frames ``1 .. T`` from frames ``0 .. T-1``.

        Args:
            x: ``(n, fields, T, *space)``.
            system: a name from ``systems`` (its adapters), or ``None`` for the generic,
                per-field path of systems without an adapter (then ``coefficients`` are ignored).
            coefficients: ``(n, k)`` scaled coefficients, or ``None``.
            dt: time between frames, ``(n,)`` or a number, or ``None``.

        Returns:
            ``(n, fields, T, *space)``; entry ``t`` predicts frame ``t + 1`` from frames ``<= t``.
        """
        self._check(x, system)
        n, f, t = x.shape[:3]
        s = _axes(self.d)
        if system is None:
            x_in = rearrange(x, "n f ... -> (n f) 1 ...")
            if dt is not None and torch.as_tensor(dt).numel() == n:
                dt = repeat(torch.as_tensor(dt), "n -> (n f)", f=f)
            c = self.condition(n * f, None, None, dt, x.device)
        else:
            x_in = x
            c = self.condition(n, system, coefficients, dt, x.device)
        u, grid = self.tokens(x_in, system, c)  # (n', t, P, D)
        h = self.norm(self.backbone(rearrange(u, "n t p d -> (n p) t d")))
        sizes = dict(zip(s.split(), grid))
        h = rearrange(h, f"(n {s}) t d -> n d t {s}", **sizes)
        y = self.decoder(h, x.shape[3:])  # (n', Cd, t, *S)
        out = self.adapters_out[system] if system is not None else self.generic_out
        delta = rearrange(out(rearrange(y, f"n c t {s} -> (n t) c {s}")), f"(n t) f {s} -> n f t {s}", t=t)
        if system is None:
            delta = rearrange(delta, "(n f) 1 ... -> n f ...", f=f)
        return x + delta

    @torch.no_grad()
    def rollout(
        self,
        context: torch.Tensor,
        steps: int,
        system: str | None,
        coefficients: torch.Tensor | None = None,
        dt: torch.Tensor | float | None = None,
        *,
        window: int | None = None,
    ) -> torch.Tensor:
        """Autoregressive prediction of ``steps`` frames after ``context: (n, F, c, *space)``,
        each predicted frame fed back; the model sees the last ``window`` frames (default ``c``)."""
        window = window or context.shape[2]
        seq, out = context, []
        for _ in range(steps):
            nxt = self(seq[:, :, -window:], system, coefficients, dt)[:, :, -1:]
            out.append(nxt)
            seq = torch.cat([seq, nxt], dim=2)
        return torch.cat(out, dim=2)


# ----------------------------------------------------------------------------------------------
# The loss
# ----------------------------------------------------------------------------------------------


def spectral_l2(pred: torch.Tensor, target: torch.Tensor, *, n_spatial: int | None = None, eps: float = 1e-12) -> torch.Tensor:
    """Relative L2 error of the amplitude spectrum, one value per ``pred.shape[:-n_spatial]``:
    ``sum_k (|F(pred)_k| - |F(target)_k|)^2 / sum_k |F(target)_k|^2``."""
    if pred.shape != target.shape:
        raise ValueError(f"spectral_l2: pred has shape {tuple(pred.shape)} but target has shape {tuple(target.shape)}")
    d = n_spatial if n_spatial is not None else pred.ndim - 3
    if not 1 <= d <= 3 or d > pred.ndim:
        raise ValueError(f"spectral_l2: need 1 to 3 spatial axes, got shape {tuple(pred.shape)} and n_spatial={n_spatial}")
    dims = tuple(range(-d, 0))
    amp = lambda z: torch.sqrt(torch.view_as_real(torch.fft.fftn(z, dim=dims, norm="ortho")).square().sum(-1) + eps)  # noqa: E731
    a, b = amp(pred), amp(target)
    return (a - b).square().sum(dims) / (b.square().sum(dims) + eps)


def pdefm_loss(pred: torch.Tensor, target: torch.Tensor, *, spectral_weight: float = 0.1) -> torch.Tensor:
    """``mean VRMSE + spectral_weight * mean spectral L2``, over batch, fields and time."""
    return vrmse(pred, target).mean() + spectral_weight * spectral_l2(pred, target).mean()
