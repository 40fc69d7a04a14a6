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
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from physfm.autoencoder import ResBlock, RMSNorm, Tokeniser
from physfm.compression import SpatialConv

__all__ = ["LatentProcessor", "NextFrameModel"]


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


class NextFrameModel(nn.Module):
    """Tokeniser encoder -> :class:`LatentProcessor` -> tokeniser decoder, for ``fields`` fields.

    Args:
        tokeniser: a single-channel :class:`~physfm.autoencoder.Tokeniser` (pre-trained or not).
        fields: number of fields of the target system.
        stride: the tokeniser's spatial stride to use (time stride is 1).
        width, blocks: size of the processor.
    """

    def __init__(self, tokeniser: Tokeniser, fields: int = 1, *, stride: int = 4, width: int = 64, blocks: int = 2):
        super().__init__()
        tokeniser.check_stride(stride, 1)
        self.tokeniser = tokeniser
        self.fields = fields
        self.stride = stride
        self.processor = LatentProcessor(fields * tokeniser.config.latent, width, blocks, spatial_dims=tokeniser.config.spatial_dims)

    def freeze_tokeniser(self) -> None:
        """Keep the tokeniser's weights fixed: only the processor trains."""
        self.tokeniser.requires_grad_(False)

    def _check(self, frames: torch.Tensor) -> None:
        d = self.tokeniser.config.spatial_dims
        if frames.ndim != d + 3 or frames.shape[1] != self.fields:
            raise ValueError(
                f"NextFrameModel: expected frames (n, {self.fields} fields, time, *space) with {d} spatial axes, "
                f"got shape {tuple(frames.shape)}"
            )

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
