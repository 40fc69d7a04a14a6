"""The tokeniser: a causal convolutional autoencoder for single-channel space-time crops.

A simplified MAGVIT-style tokeniser (Yu et al. 2023; the "MAGVIT-Simple" of Sotoudeh et al.
2026): residual convolution blocks around a flexible patchify layer, continuous latents (no
quantisation), trained on the mean squared reconstruction error alone (no adversarial or
perceptual loss). As in Tadpole, it sees one field at a time, ``(n, 1, time, *space)``, so one
tokeniser serves systems with any number of fields, and its 1D/2D/3D variants are the same code.

Encoder::

    x (n, 1, T, *S)
      -> SpatialConv 3    1 -> c0              stem, full resolution
      -> FlexPatch        c0 -> c1             strides (s_t, s) chosen per call
      -> ResBlock x blocks at c1
      -> SpatialConv 1    c1 -> latent         z (n, latent, 1 + (T-1)/s_t, *S/s)

The decoder mirrors it (1x1 in, residual blocks, :class:`~physfm.nn.compression.FlexUnpatch`, a 3x3
smoothing convolution to one channel). A residual block is ``x + T(act(N(S(act(N(x))))))`` with a
per-position RMS norm ``N`` over channels (a norm that pooled over time would leak the future),
a spatial 3x3 convolution ``S`` and a causal temporal convolution ``T`` of width 3.

Compression ratio: numbers in over numbers in the latent, ``s_t s^d / latent`` (for a long
sequence). Every layer is causal in time, so latent frame ``tau`` depends only on frames
``<= tau s_t`` and a decoded frame ``t`` only on latents of frames ``<= t``.

Features for skip connections: ``encode(x, return_features=True)`` also returns the encoder's
activations at full and at latent resolution; ``decode(z, skips=...)`` adds tensors of the same
shapes to the decoder's activations at the mirrored places (dynamics fine-tuning uses this).
A dynamics model is built as ``decode(processor(encode(x)))``; :meth:`Tokeniser.encoder_parameters`
and :meth:`Tokeniser.decoder_parameters` name the two halves, to freeze or fine-tune them apart.

Boundaries: every spatial convolution pads circularly by default (the book's synthetic fields
are periodic). :meth:`Tokeniser.set_padding` switches them all to a padding per axis and side,
or to the one that matches a data set's boundary conditions (``tok.set_padding({"x": ("wall",
"wall"), "y": ("open", "open")})``, :func:`physfm.nn.compression.padding_for`), without new
weights: a tokeniser pre-trained on periodic data is applied to a walled data set as it is.
The padding belongs to the data, not to the weights: it is not in the ``state_dict``.

Long sequences: :meth:`Tokeniser.encode_chunks` and :meth:`Tokeniser.decode_chunks` process a few
latent frames at a time, each piece with just enough past context (every temporal layer is a
causal convolution of finite width) to equal the full pass up to rounding. Independent pieces
*without* that context do not equal it, and a layer with unbounded memory in time would make
chunking impossible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from physfm.nn.compression import (
    CausalTimeConv,
    FlexPatch,
    FlexUnpatch,
    Padding,
    SpatialConv,
    check_frames,
    padding_of,
    set_padding,
)

__all__ = ["TokeniserConfig", "Tokeniser", "RMSNorm", "ResBlock"]


class RMSNorm(nn.Module):
    """Root-mean-square norm over channels at each (time, space) position, with a learned gain."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)
        return x * scale * self.gain.reshape(1, -1, *[1] * (x.ndim - 2))


class ResBlock(nn.Module):
    """``x + T(act(N(S(act(N(x))))))``: spatial 3x3 then causal temporal 3, pre-norm, SiLU."""

    def __init__(self, channels: int, *, spatial_dims: int, time_kernel: int = 3):
        super().__init__()
        self.norm1 = RMSNorm(channels)
        self.space = SpatialConv(channels, channels, 3, spatial_dims=spatial_dims)
        self.norm2 = RMSNorm(channels)
        self.time = CausalTimeConv(channels, channels, time_kernel)
        self.act = nn.SiLU()
        nn.init.zeros_(self.time.weight)  # every block starts as the identity
        nn.init.zeros_(self.time.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.space(self.act(self.norm1(x)))
        return x + self.time(self.act(self.norm2(h)))


@dataclass(frozen=True)
class TokeniserConfig:
    """Plain-data description of a tokeniser (what the profiles and the cache store).

    Attributes:
        spatial_dims: 1, 2 or 3.
        channels: ``(c0, c1)``, widths at full and at latent resolution.
        latent: channels of the latent ``z``.
        blocks: residual blocks in the encoder and in the decoder.
        patch, time_patch: base patch sizes; the allowed strides are their divisors.
        stride, time_stride: the default compression used when a call names none.
    """

    spatial_dims: int = 2
    channels: tuple[int, int] = (16, 64)
    latent: int = 8
    blocks: int = 2
    patch: int = 4
    time_patch: int = 4
    stride: int = 4
    time_stride: int = 1

    def ratio(self, stride: int | None = None, time_stride: int | None = None) -> float:
        """Compression ratio ``s_t s^d / latent`` of a long sequence."""
        s = stride or self.stride
        st = time_stride or self.time_stride
        return st * s**self.spatial_dims / self.latent


class Tokeniser(nn.Module):
    """Single-channel causal autoencoder with run-time compression; see the module docstring.

    Args:
        config: a :class:`TokeniserConfig`, or its fields as keyword arguments.
        padding: spatial padding of every convolution (default ``"circular"``; see
            :meth:`set_padding`).
    """

    def __init__(self, config: TokeniserConfig | None = None, *, padding: Padding = "circular", **kwargs):
        super().__init__()
        if config is None:
            if "channels" in kwargs:
                kwargs["channels"] = tuple(kwargs["channels"])
            config = TokeniserConfig(**kwargs)
        elif kwargs:
            raise TypeError("Tokeniser: pass either a config or keyword arguments, not both")
        self.config = cfg = config
        d, (c0, c1) = cfg.spatial_dims, cfg.channels
        if d not in (1, 2, 3):
            raise ValueError(f"Tokeniser: spatial_dims must be 1, 2 or 3, got {d}")
        self.stem = SpatialConv(1, c0, 3, spatial_dims=d)
        self.down = FlexPatch(c0, c1, patch=cfg.patch, time_patch=cfg.time_patch, spatial_dims=d)
        self.enc_blocks = nn.ModuleList([ResBlock(c1, spatial_dims=d) for _ in range(cfg.blocks)])
        self.enc_out = nn.Sequential(RMSNorm(c1), nn.SiLU(), SpatialConv(c1, cfg.latent, 1, spatial_dims=d))
        self.dec_in = SpatialConv(cfg.latent, c1, 1, spatial_dims=d)
        self.dec_blocks = nn.ModuleList([ResBlock(c1, spatial_dims=d) for _ in range(cfg.blocks)])
        self.up = FlexUnpatch(c1, c0, patch=cfg.patch, time_patch=cfg.time_patch, spatial_dims=d)
        self.dec_out = nn.Sequential(RMSNorm(c0), nn.SiLU(), SpatialConv(c0, 1, 3, spatial_dims=d))
        self.check_stride(cfg.stride, cfg.time_stride)
        if padding != "circular":
            self.set_padding(padding)

    # -- boundaries -----------------------------------------------------------------------

    def set_padding(self, padding: Padding | Mapping[str, Sequence[str]]) -> Tokeniser:
        """Pad every spatial convolution with ``padding`` from now on, the weights unchanged.

        ``padding``: modes per axis and side (:func:`physfm.nn.compression.padding_modes`, e.g.
        ``"circular"`` or ``[("symmetric", "symmetric"), "replicate"]``), or boundary
        conditions ``axis -> (low, high)`` named as The Well names them (``"periodic"``,
        ``"wall"``, ``"open"``; :func:`physfm.nn.compression.padding_for`). Returns the tokeniser.
        """
        set_padding(self, padding)
        return self

    @property
    def padding(self) -> tuple[tuple[str, str], ...]:
        """The spatial padding in use, ``((low, high), ...)`` per axis."""
        return padding_of(self)

    # -- strides --------------------------------------------------------------------------

    @property
    def strides(self) -> tuple[int, ...]:
        """Allowed spatial strides (divisors of ``patch``)."""
        return self.down.strides

    @property
    def time_strides(self) -> tuple[int, ...]:
        """Allowed time strides (divisors of ``time_patch``)."""
        return self.down.time_strides

    def check_stride(self, stride: int, time_stride: int) -> None:
        self.down.check_stride(stride, time_stride)

    def _strides(self, stride, time_stride):
        s = self.config.stride if stride is None else stride
        st = self.config.time_stride if time_stride is None else time_stride
        self.check_stride(s, st)
        return s, st

    # -- encode / decode ------------------------------------------------------------------

    def encode(
        self,
        x: torch.Tensor,
        stride: int | None = None,
        time_stride: int | None = None,
        *,
        return_features: bool = False,
    ):
        """``x (n, 1, T, *S) -> z (n, latent, 1 + (T-1)/s_t, *S/s)``.

        With ``return_features``: ``(z, [full, latent])``, the encoder activations after the stem
        ``(n, c0, T, *S)`` and after the residual blocks ``(n, c1, T', *S/s)``.
        """
        s, st = self._strides(stride, time_stride)
        d = self.config.spatial_dims
        if x.ndim != d + 3 or x.shape[1] != 1:
            raise ValueError(f"Tokeniser.encode: expected (n, 1, time, *space) with {d} spatial axes, got shape {tuple(x.shape)}")
        check_frames(x.shape[2], st)
        full = self.stem(x)
        h = self.down(full, s, st)
        for block in self.enc_blocks:
            h = block(h)
        z = self.enc_out(h)
        return (z, [full, h]) if return_features else z

    def decode(
        self,
        z: torch.Tensor,
        stride: int | None = None,
        time_stride: int | None = None,
        *,
        frames: int | None = None,
        skips: Sequence[torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """``z (n, latent, tau, *s) -> (n, 1, frames, *s * stride)``; ``frames`` defaults to
        ``1 + (tau - 1) s_t``. ``skips``: ``[full, latent]`` tensors added at the mirrored places."""
        s, st = self._strides(stride, time_stride)
        d = self.config.spatial_dims
        if z.ndim != d + 3 or z.shape[1] != self.config.latent:
            raise ValueError(
                f"Tokeniser.decode: expected (n, {self.config.latent}, time, *space) with {d} spatial axes, got shape {tuple(z.shape)}"
            )
        full_skip, latent_skip = (list(skips) + [None, None])[:2] if skips else (None, None)
        h = self.dec_in(z)
        if latent_skip is not None:
            h = h + latent_skip
        for block in self.dec_blocks:
            h = block(h)
        y = self.up(h, s, st, frames)
        if full_skip is not None:
            y = y + full_skip
        return self.dec_out(y)

    def forward(self, x: torch.Tensor, stride: int | None = None, time_stride: int | None = None) -> torch.Tensor:
        """Reconstruction ``decode(encode(x))`` at the given (or default) compression."""
        return self.decode(self.encode(x, stride, time_stride), stride, time_stride, frames=x.shape[2])

    def encode_chunks(
        self, x: torch.Tensor, chunk: int, stride: int | None = None, time_stride: int | None = None
    ) -> torch.Tensor:
        """Encode a long sequence ``chunk`` latent frames at a time; equals :meth:`encode`.

        Cutting the sequence into independent pieces would *not* give the full pass's latents:
        every causal temporal convolution looks back over a few frames, and at the start of a piece
        it would see zero padding instead of the frames before it. Each piece is therefore
        encoded with :meth:`context_latents` latent frames of past context in front of it, whose
        latents are discarded; the result equals the full pass up to floating-point rounding
        (a convolution over a shorter sequence may sum in another order). Memory then grows with
        ``chunk``, not with the sequence length. This works because nothing in the tokeniser mixes
        frames other than causal convolutions of finite width; a layer with unbounded memory (a
        norm over time, attention over all frames, a recurrent state) would break it.
        """
        s, st = self._strides(stride, time_stride)
        frames = x.shape[2]
        check_frames(frames, st)
        if chunk < 1:
            raise ValueError(f"Tokeniser.encode_chunks: chunk must be >= 1 latent frame, got {chunk}")
        n_latent = 1 + (frames - 1) // st
        context = self.context_latents(st)
        pieces = []
        for start in range(0, n_latent, chunk):
            end = min(start + chunk, n_latent)
            first = max(0, start - context)
            z = self.encode(x[:, :, first * st : (end - 1) * st + 1], s, st)
            pieces.append(z[:, :, start - first :])
        return torch.cat(pieces, dim=2)

    def decode_chunks(
        self,
        z: torch.Tensor,
        chunk: int,
        stride: int | None = None,
        time_stride: int | None = None,
        *,
        frames: int | None = None,
    ) -> torch.Tensor:
        """Decode a long latent sequence ``chunk`` latent frames at a time; equals :meth:`decode`.

        The decoder's residual blocks look back ``2 * blocks`` latent frames, so each piece is
        decoded with that many latent frames of context in front of it, whose frames are dropped.
        Skip connections are not supported here (decode with :meth:`decode` to use them).
        """
        s, st = self._strides(stride, time_stride)
        if chunk < 1:
            raise ValueError(f"Tokeniser.decode_chunks: chunk must be >= 1 latent frame, got {chunk}")
        tau = z.shape[2]
        frames = frames if frames is not None else 1 + (tau - 1) * st
        if not (tau - 1) * st + 1 <= frames <= tau * st:
            raise ValueError(f"Tokeniser.decode_chunks: {tau} latent frames at time stride {st} cannot give {frames} frames")
        context = 2 * self.config.blocks
        pieces = []
        for start in range(0, tau, chunk):
            end = min(start + chunk, tau)
            first = max(0, start - context)
            want = min(end * st, frames) - first * st  # frames of this piece, context included
            y = self.decode(z[:, :, first:end], s, st, frames=want)
            pieces.append(y[:, :, (start - first) * st :])
        return torch.cat(pieces, dim=2)

    def latent_shape(self, frames: int, space: Sequence[int], stride: int | None = None, time_stride: int | None = None):
        """Shape of ``z`` (without batch) for an input of ``frames`` frames on grid ``space``."""
        s, st = self._strides(stride, time_stride)
        check_frames(frames, st)
        return (self.config.latent, 1 + (frames - 1) // st, *[n // s for n in space])

    def receptive_frames(self, time_stride: int | None = None) -> int:
        """How many frames before ``tau * s_t`` the latent frame ``tau`` depends on.

        The patch layer sees the ``s_t`` frames ``(tau-1) s_t + 1 ... tau s_t``, and each residual
        block's causal temporal convolution (width 3) two more latent frames back, so latent
        ``tau`` depends on frames ``tau s_t - R ... tau s_t`` with ``R = (2 blocks + 1) s_t - 1``.
        """
        _, st = self._strides(None, time_stride)
        return (2 * self.config.blocks + 1) * st - 1

    def context_latents(self, time_stride: int | None = None) -> int:
        """Latent frames of past context a chunk of :meth:`encode_chunks` needs to be exact:
        ``ceil(R / s_t)`` with ``R`` from :meth:`receptive_frames` (the first latent of a piece
        sees a zero-padded group unless ``s_t = 1``, and each block spreads that two frames on)."""
        _, st = self._strides(None, time_stride)
        return -(-self.receptive_frames(st) // st)

    def encoder_parameters(self):
        """Parameters of the encoder half (stem, patch layer, blocks, output projection)."""
        for module in (self.stem, self.down, self.enc_blocks, self.enc_out):
            yield from module.parameters()

    def decoder_parameters(self):
        """Parameters of the decoder half (input projection, blocks, un-patch layer, output)."""
        for module in (self.dec_in, self.dec_blocks, self.up, self.dec_out):
            yield from module.parameters()

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return f"{asdict(self.config)}, parameters={self.n_parameters():,}"
