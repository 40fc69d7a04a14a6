"""physfm.nn.compression: causality for every stride, shared weights, shapes and errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from physfm.nn.compression import CausalTimeConv, FlexPatch, FlexUnpatch, SpatialConv, latent_frames

torch.manual_seed(0)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_spatial_conv_is_circular(d):
    conv = SpatialConv(2, 3, 3, spatial_dims=d)
    x = torch.randn(1, 2, 2, *[8] * d)
    shifted = torch.roll(x, shifts=[3] * d, dims=list(range(3, 3 + d)))
    torch.testing.assert_close(conv(shifted), torch.roll(conv(x), shifts=[3] * d, dims=list(range(3, 3 + d))), rtol=1e-5, atol=1e-5)


def test_causal_time_conv_ignores_the_future():
    conv = CausalTimeConv(2, 2, 3)
    x = torch.randn(2, 2, 9, 4, 4)
    for t in range(8):
        y = x.clone()
        y[:, :, t + 1 :] += torch.randn_like(y[:, :, t + 1 :])
        torch.testing.assert_close(conv(y)[:, :, : t + 1], conv(x)[:, :, : t + 1])


STRIDES = [(s, st) for s in (1, 2, 4) for st in (1, 2, 4)]


@pytest.mark.parametrize("stride, time_stride", STRIDES)
def test_patch_and_unpatch_are_causal_for_every_stride(stride, time_stride):
    down = FlexPatch(2, 3, patch=4, time_patch=4, spatial_dims=2)
    up = FlexUnpatch(3, 2, patch=4, time_patch=4, spatial_dims=2)
    frames = 9
    x = torch.randn(1, 2, frames, 8, 8)
    z = down(x, stride, time_stride)
    assert z.shape == (1, 3, latent_frames(frames, time_stride), 8 // stride, 8 // stride)
    y = up(z, stride, time_stride, frames)
    assert y.shape == x.shape[:1] + (2,) + x.shape[2:]
    for t in range(frames - 1):
        x2 = x.clone()
        x2[:, :, t + 1 :] += 10 * torch.randn_like(x2[:, :, t + 1 :])
        z2 = down(x2, stride, time_stride)
        # latent tau summarises frames up to tau * s_t: those with tau * s_t <= t are unchanged
        keep = t // time_stride + 1
        torch.testing.assert_close(z2[:, :, :keep], z[:, :, :keep])
        torch.testing.assert_close(up(z2, stride, time_stride, frames)[:, :, : t + 1], y[:, :, : t + 1])


def test_one_set_of_weights_serves_every_stride():
    down = FlexPatch(1, 4, patch=4, time_patch=4, spatial_dims=2)
    names = {n for n, _ in down.named_parameters()}
    assert names == {"space_weight", "time_weight", "bias"}
    x = torch.randn(2, 1, 5, 16, 16)
    outs = {s: down(x, s, 1) for s in (1, 2, 4)}
    assert [o.shape[-1] for o in outs.values()] == [16, 8, 4]
    loss = sum(o.square().mean() for o in outs.values())
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in down.parameters())


def test_small_stride_equals_base_kernel_on_upsampled_input():
    """A stride-s patch gives the token the base kernel gives to that patch repeated P/s times."""
    down = FlexPatch(1, 3, patch=4, time_patch=1, spatial_dims=2)
    x = torch.randn(2, 1, 1, 8, 8)
    small = down(x, 2, 1)
    upsampled = x.repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2)
    torch.testing.assert_close(small, down(upsampled, 4, 1), rtol=1e-5, atol=1e-5)


def test_unpatch_small_stride_equals_averaged_base_output():
    up = FlexUnpatch(3, 1, patch=4, time_patch=1, spatial_dims=1)
    z = torch.randn(2, 3, 1, 5)
    big = up(z, 4, 1)  # (2, 1, 1, 20)
    small = up(z, 2, 1)  # (2, 1, 1, 10)
    bias = up.bias.reshape(1, -1, 1, 1)
    averaged = F.avg_pool1d((big - bias).reshape(2, 1, 20), 2).reshape(2, 1, 1, 10) + bias
    torch.testing.assert_close(small, averaged, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("d", [1, 3])
def test_other_dimensions(d):
    down = FlexPatch(1, 2, patch=2, time_patch=2, spatial_dims=d)
    up = FlexUnpatch(2, 1, patch=2, time_patch=2, spatial_dims=d)
    x = torch.randn(1, 1, 5, *[6] * d)
    z = down(x, 2, 2)
    assert z.shape == (1, 2, 3, *[3] * d)
    assert up(z, 2, 2, 5).shape == x.shape


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: FlexPatch(1, 2, patch=4, time_patch=4, spatial_dims=2)(torch.randn(1, 1, 5, 8, 8), 3, 1), r"spatial stride 3 is not one of \(1, 2, 4\)"),
        (lambda: FlexPatch(1, 2, patch=4, time_patch=4, spatial_dims=2)(torch.randn(1, 1, 5, 8, 8), 1, 3), r"time stride 3 is not one of \(1, 2, 4\)"),
        (lambda: FlexPatch(1, 2, patch=4, time_patch=4, spatial_dims=2)(torch.randn(1, 1, 5, 10, 8), 4, 1), r"spatial stride 4 does not divide the grid \(10, 8\)"),
        (lambda: FlexPatch(1, 2, patch=4, time_patch=4, spatial_dims=2)(torch.randn(1, 1, 8, 8, 8), 1, 4), r"time length 8 cannot be compressed with time stride 4: need 1 \+ 4\*n frames \(e.g. 5, 9, 13\)"),
        (lambda: FlexPatch(1, 2, patch=4, time_patch=4, spatial_dims=2)(torch.randn(1, 2, 5, 8, 8), 1, 1), "expected 1 channels, got 2"),
        (lambda: FlexPatch(1, 2, patch=4, time_patch=4, spatial_dims=2)(torch.randn(1, 1, 5, 8), 1, 1), "with 2 spatial axes"),
        (lambda: SpatialConv(1, 1, 2), "kernel must be odd"),
        (lambda: FlexPatch(1, 1, patch=2, time_patch=1, spatial_dims=4), "spatial_dims must be 1, 2 or 3"),
    ],
)
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_time_stride_one_folds_the_time_kernel_into_the_spatial_one():
    """The folded single convolution equals spatial convolution followed by the one-tap time mixing."""
    down = FlexPatch(2, 3, patch=2, time_patch=4, spatial_dims=2)
    up = FlexUnpatch(3, 2, patch=2, time_patch=4, spatial_dims=2)
    x = torch.randn(2, 2, 3, 8, 8)
    mix_down, mix_up = down.time_kernel(1)[:, :, 0], up.time_kernel(1)[:, :, 0]
    y = torch.stack([F.conv2d(x[:, :, t], down.space_kernel(2), stride=2) for t in range(3)], 2)
    expected = torch.einsum("oc,nct...->not...", mix_down, y) + down.bias.reshape(1, -1, 1, 1, 1)
    torch.testing.assert_close(down(x, 2, 1), expected, rtol=1e-5, atol=1e-5)
    z = torch.randn(2, 3, 3, 4, 4)
    u = torch.stack([F.conv_transpose2d(z[:, :, t], up.space_kernel(2), stride=2) for t in range(3)], 2)
    expected = torch.einsum("co,nct...->not...", mix_up, u) + up.bias.reshape(1, -1, 1, 1, 1)
    torch.testing.assert_close(up(z, 2, 1), expected, rtol=1e-5, atol=1e-5)
