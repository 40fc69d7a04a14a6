"""Next-frame models in the tokeniser's latent space: encoder -> latent processor -> decoder.

The dynamics model of Sotoudeh et al. (2026) and of this book wraps a tokeniser around a latent
processor. For a window of frames :math:`x_0, \\dots, x_{T-1}` of a system with ``F`` fields,

1. every field is encoded on its own (the tokeniser is single-channel):
   :math:`z_t = E(x_{\\le t})`, at time stride 1 so there is one latent frame per frame;
2. the processor predicts the next latent from the past ones, as a residual on the last:
   :math:`\\hat z_{t+1} = z_t + P(z_{\\le t})_t`, with the fields' latents stacked on channels so
   the processor sees all of them;
3. the decoder turns the predicted latents back into frames, :math:`\\hat x_{t+1} = D(\\hat z_{\\le t+1})`.

Every piece is causal in time, so one pass over a window scores a prediction for every frame
after the first (teacher forcing). :meth:`NextFrameModel.rollout` instead feeds its own
predictions back, frame after frame, as a model is used in practice.

The processor's output layer starts at zero, so an untrained model predicts "nothing changes"
(persistence): :math:`\\hat x_{t+1} = D(E(x_{\\le t}))`, the tokeniser's reconstruction of the
last frame.

**Fine-tuning a pre-trained autoencoder for dynamics** (Tadpole, TUM 2026): instead of training a
large processor on top of a fixed tokeniser, :class:`AutoencoderDynamics` adapts the autoencoder
itself, with three small additions, each of which leaves the autoencoder unchanged at the start:

- **LoRA** (:mod:`physfm.nn.lora`) on every kernel of the encoder and the decoder:
  :math:`W' = W + \\tfrac{\\alpha}{r} B A` with :math:`B = 0` at the start;
- a **latent transform** :class:`LatentTransform`, :math:`z' = a z + f(z)` with :math:`a = 1` and
  the output layer of :math:`f` zero at the start;
- **skip connections** :class:`SkipScales` from the encoder to the decoder, level :math:`l` of the
  decoder receiving :math:`s_l h_l` (the encoder's activations at that level) with learnable
  :math:`s_l = 0` at the start.

So before any training :math:`\\hat x_{t+1} = D(E(x_{\\le t}))` exactly, the autoencoder's
reconstruction of the last frame, and training moves it from there towards the next frame.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from physfm.nn.compression import SpatialConv
from physfm.nn.lora import adaptable, inject_lora
from physfm.nn.tokeniser import ResBlock, RMSNorm, Tokeniser

__all__ = ["LatentProcessor", "NextFrameModel", "LatentTransform", "SkipScales", "AutoencoderDynamics", "ADAPT"]


class LatentProcessor(nn.Module):
    """Causal residual convolutions over a latent sequence ``(n, channels, time, *space)``.

    Returns the *increment* :math:`P(z)_t` such that :math:`\\hat z_{t+1} = z_t + P(z)_t`; the
    output layer is zero at the start (persistence).
    """

    def __init__(self, channels: int, width: int = 64, blocks: int = 2, *, spatial_dims: int = 2):
        super().__init__()
        self.inp = SpatialConv(channels, width, 1, spatial_dims=spatial_dims)
        self.blocks = nn.ModuleList([ResBlock(width, spatial_dims=spatial_dims) for _ in range(blocks)])
        self.norm = RMSNorm(width)
        self.out = SpatialConv(width, channels, 1, spatial_dims=spatial_dims)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        # the residual blocks start as identities; give their temporal branch a small start so
        # gradients reach every weight from the first step
        for block in self.blocks:
            nn.init.normal_(block.time.weight, std=1e-3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.inp(z)
        for block in self.blocks:
            h = block(h)
        return self.out(torch.nn.functional.silu(self.norm(h)))


class _FramePredictor(nn.Module):
    """What the next-frame models share: a tokeniser at spatial ``stride`` (time stride 1) for
    ``fields`` fields, the input check, the teacher-forced loss and the autoregressive rollout.
    Subclasses define ``forward(frames (n, F, T, *S)) -> predictions of frames 1 .. T``."""

    def __init__(self, tokeniser: Tokeniser, fields: int, stride: int):
        super().__init__()
        if isinstance(fields, bool) or not isinstance(fields, int) or fields < 1:
            raise ValueError(f"{type(self).__name__}: fields must be a positive int, got {fields!r}")
        tokeniser.check_stride(stride, 1)
        self.tokeniser = tokeniser
        self.fields = fields
        self.stride = stride

    def _check(self, frames: torch.Tensor) -> None:
        d = self.tokeniser.config.spatial_dims
        if frames.ndim != d + 3 or frames.shape[1] != self.fields:
            raise ValueError(
                f"{type(self).__name__}: expected frames (n, {self.fields} fields, time, *space) with {d} spatial axes, "
                f"got shape {tuple(frames.shape)}"
            )

    def loss(self, window: torch.Tensor) -> torch.Tensor:
        """Mean squared error of the predictions of frames ``1 .. T-1`` of a window ``(n, F, T, *S)``."""
        pred = self(window[:, :, :-1])
        return (pred - window[:, :, 1:]).square().mean()

    @torch.no_grad()
    def rollout(self, context: torch.Tensor, steps: int, *, window: int | None = None) -> torch.Tensor:
        """Autoregressive prediction: each predicted frame is appended to the input of the next step.

        Args:
            context: true frames ``(n, F, c, *space)`` to start from.
            steps: frames to predict.
            window: frames the model sees at each step (default: ``c``); older frames are dropped.

        Returns:
            ``(n, F, steps, *space)``, the predictions of the ``steps`` frames after the context.
        """
        self._check(context)
        window = window or context.shape[2]
        seq = context
        out = []
        for _ in range(steps):
            nxt = self(seq[:, :, -window:])[:, :, -1:]
            out.append(nxt)
            seq = torch.cat([seq, nxt], dim=2)
        return torch.cat(out, dim=2)


class NextFrameModel(_FramePredictor):
    """Tokeniser encoder -> :class:`LatentProcessor` -> tokeniser decoder, for ``fields`` fields.

    Args:
        tokeniser: a single-channel :class:`~physfm.nn.tokeniser.Tokeniser` (pre-trained or not).
        fields: number of fields of the target system.
        stride: the tokeniser's spatial stride to use (time stride is 1).
        width, blocks: size of the processor.
    """

    def __init__(self, tokeniser: Tokeniser, fields: int = 1, *, stride: int = 4, width: int = 64, blocks: int = 2):
        super().__init__(tokeniser, fields, stride)
        self.processor = LatentProcessor(
            fields * tokeniser.config.latent, width, blocks, spatial_dims=tokeniser.config.spatial_dims
        )

    def freeze_tokeniser(self) -> None:
        """Keep the tokeniser's weights fixed: only the processor trains."""
        self.tokeniser.requires_grad_(False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Predictions of frames ``1 .. T`` from a window of frames ``0 .. T-1``.

        Args:
            frames: ``(n, fields, T, *space)``.

        Returns:
            ``(n, fields, T, *space)``; entry ``t`` predicts frame ``t + 1`` from frames ``<= t``.
        """
        self._check(frames)
        n, f, t = frames.shape[:3]
        z = self.tokeniser.encode(rearrange(frames, "n f t ... -> (n f) 1 t ..."), self.stride, 1)
        z = rearrange(z, "(n f) c t ... -> n (f c) t ...", f=f)
        z_next = z + self.processor(z)
        z_next = rearrange(z_next, "n (f c) t ... -> (n f) c t ...", f=f)
        x = self.tokeniser.decode(z_next, self.stride, 1, frames=t)
        return rearrange(x, "(n f) 1 t ... -> n f t ...", f=f)


# ---------------------------------------------------------------------------------------------
# Fine-tuning a pre-trained autoencoder for dynamics (Tadpole)
# ---------------------------------------------------------------------------------------------


class LatentTransform(nn.Module):
    """The latent transform of Tadpole: :math:`z' = a z + f(z)` on ``(n, channels, time, *space)``.

    ``a`` is one learnable number, 1 at the start; ``f`` is a :class:`LatentProcessor` (causal
    residual convolutions, the fields' latents stacked on channels) whose output layer is zero at
    the start, so the transform starts as the identity, exactly.
    """

    def __init__(self, channels: int, width: int = 16, blocks: int = 1, *, spatial_dims: int = 2):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.f = LatentProcessor(channels, width, blocks, spatial_dims=spatial_dims)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.scale * z + self.f(z)


class SkipScales(nn.Module):
    """Encoder-to-decoder skip connections with one learnable scale per level, zero at the start.

    Given the encoder's activations :math:`h_l` at each level (``Tokeniser.encode(...,
    return_features=True)``: full resolution, then latent resolution), returns the tensors
    :math:`s_l h_l` that ``Tokeniser.decode(..., skips=...)`` adds to the decoder's activations at
    the mirrored places. Tadpole re-introduces these skips, absent from the autoencoder (a skip
    would let it bypass the bottleneck), for dynamics, where the input frame is a good
    first guess of the output one.
    """

    levels = ("full", "latent")

    def __init__(self):
        super().__init__()
        self.scales = nn.Parameter(torch.zeros(len(self.levels)))

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(features) != len(self.levels):
            raise ValueError(f"SkipScales: expected {len(self.levels)} feature tensors {self.levels}, got {len(features)}")
        return [s * h for s, h in zip(self.scales, features)]


ADAPT = ("frozen", "lora", "full")


class AutoencoderDynamics(_FramePredictor):
    """A pre-trained autoencoder fine-tuned for next-frame prediction, as Tadpole does:

    .. math::
        z_t = E'(x_{\\le t}), \\qquad z'_t = a z_t + f(z_{\\le t})_t, \\qquad
        \\hat x_{t+1} = D'\\big(z'_{\\le t};\\ s_l h_l(x_{\\le t})\\big),

    where :math:`E', D'` are the tokeniser's encoder and decoder (frozen, with LoRA, or fully
    trained), :math:`a z + f(z)` the :class:`LatentTransform` and :math:`s_l h_l` the
    :class:`SkipScales` skips. Each of the three parts can be left out. At the start every part
    is the identity, so the model *is* the autoencoder: ``model(x)`` equals
    ``tokeniser(x_field, stride, 1)`` for every field, bit for bit.

    Args:
        tokeniser: a pre-trained single-channel :class:`~physfm.nn.tokeniser.Tokeniser`. It is
            changed in place (LoRA layers are injected, ``requires_grad`` set): pass a copy to
            keep the original.
        fields: number of fields of the target system (each is encoded on its own).
        stride: the tokeniser's spatial stride (time stride is 1).
        adapt: ``"frozen"`` (the tokeniser's weights stay fixed), ``"lora"`` (fixed, plus LoRA
            of rank ``rank`` on every kernel of the encoder and the decoder) or ``"full"`` (every
            weight trains).
        rank, alpha: the LoRA rank and scale numerator (``alpha=None``: ``alpha = rank``).
        transform: add the latent transform (else :math:`z' = z`).
        skips: add the skip connections (else none).
        width, blocks: size of :math:`f`.
        generator: draws the LoRA factors ``A`` (default: torch's global generator).
    """

    def __init__(
        self,
        tokeniser: Tokeniser,
        fields: int = 1,
        *,
        stride: int = 4,
        adapt: str = "lora",
        rank: int = 4,
        alpha: float | None = None,
        transform: bool = True,
        skips: bool = True,
        width: int = 16,
        blocks: int = 1,
        generator: torch.Generator | None = None,
    ):
        if adapt not in ADAPT:
            raise ValueError(f"AutoencoderDynamics: adapt must be one of {ADAPT}, got {adapt!r}")
        super().__init__(tokeniser, fields, stride)
        self.adapt = adapt
        tokeniser.requires_grad_(adapt == "full")
        if adapt == "lora":
            inject_lora(tokeniser, adaptable(tokeniser), rank, alpha, generator=generator)
        cfg = tokeniser.config
        self.transform = LatentTransform(fields * cfg.latent, width, blocks, spatial_dims=cfg.spatial_dims) if transform else None
        self.skips = SkipScales() if skips else None

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Predictions of frames ``1 .. T`` from frames ``0 .. T-1``: ``(n, F, T, *S) -> (n, F, T, *S)``,
        entry ``t`` predicting frame ``t + 1`` from frames ``<= t``."""
        self._check(frames)
        f, t = frames.shape[1], frames.shape[2]
        x = rearrange(frames, "n f t ... -> (n f) 1 t ...")
        z, features = self.tokeniser.encode(x, self.stride, 1, return_features=True)
        if self.transform is not None:
            z = rearrange(z, "(n f) c t ... -> n (f c) t ...", f=f)
            z = rearrange(self.transform(z), "n (f c) t ... -> (n f) c t ...", f=f)
        skips = self.skips(features) if self.skips is not None else None
        y = self.tokeniser.decode(z, self.stride, 1, frames=t, skips=skips)
        return rearrange(y, "(n f) 1 t ... -> n f t ...", f=f)
