"""physfm.nn.compression: causality for every stride, shared weights, padding per axis, shapes and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from physfm.nn.compression import (
    BOUNDARY_PADDING,
    CausalTimeConv,
    FlexPatch,
    FlexUnpatch,
    SpatialConv,
    boundary_distance,
    latent_frames,
    pad,
    padding_for,
    padding_modes,
    padding_of,
    set_padding,
)

torch.manual_seed(0)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_spatial_conv_is_circular(d):
    conv = SpatialConv(2, 3, 3, spatial_dims=d)
    x = torch.randn(1, 2, 2, *[8] * d)
    shifted = torch.roll(x, shifts=[3] * d, dims=list(range(3, 3 + d)))
    torch.testing.assert_close(
        conv(shifted), torch.roll(conv(x), shifts=[3] * d, dims=list(range(3, 3 + d))), rtol=1e-5, atol=1e-5
    )


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
        (
            lambda: FlexPatch(1, 2, patch=4, time_patch=4, spatial_dims=2)(torch.randn(1, 1, 5, 8, 8), 3, 1),
            r"spatial stride 3 is not one of \(1, 2, 4\)",
        ),
        (
            lambda: FlexPatch(1, 2, patch=4, time_patch=4, spatial_dims=2)(torch.randn(1, 1, 5, 8, 8), 1, 3),
            r"time stride 3 is not one of \(1, 2, 4\)",
        ),
        (
            lambda: FlexPatch(1, 2, patch=4, time_patch=4, spatial_dims=2)(torch.randn(1, 1, 5, 10, 8), 4, 1),
            r"spatial stride 4 does not divide the grid \(10, 8\)",
        ),
        (
            lambda: FlexPatch(1, 2, patch=4, time_patch=4, spatial_dims=2)(torch.randn(1, 1, 8, 8, 8), 1, 4),
            r"time length 8 cannot be compressed with time stride 4: need 1 \+ 4\*n frames \(e.g. 5, 9, 13\)",
        ),
        (
            lambda: FlexPatch(1, 2, patch=4, time_patch=4, spatial_dims=2)(torch.randn(1, 2, 5, 8, 8), 1, 1),
            "expected 1 channels, got 2",
        ),
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


# ---------------------------------------------------------------------------------------------
# Padding per axis and side
# ---------------------------------------------------------------------------------------------

NUMPY_MODE = {"circular": "wrap", "symmetric": "symmetric", "reflect": "reflect", "replicate": "edge", "zeros": "constant"}
MODES = list(NUMPY_MODE)


def _numpy_pad(x: np.ndarray, amount: int, modes) -> np.ndarray:
    """np.pad, the oracle: each trailing axis and side with its own mode."""
    d = len(modes)
    for i, (lo, hi) in enumerate(modes):
        axis = x.ndim - d + i
        widths = [(0, 0)] * x.ndim
        widths[axis] = (amount, amount)
        low = np.take(np.pad(x, widths, mode=NUMPY_MODE[lo]), range(amount), axis=axis)
        high = np.take(
            np.pad(x, widths, mode=NUMPY_MODE[hi]), range(x.shape[axis] + amount, x.shape[axis] + 2 * amount), axis=axis
        )
        x = np.concatenate([low, x, high], axis=axis)
    return x


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("mode", MODES)
def test_every_padding_mode_pads_as_numpy_does(d, mode):
    x = torch.randn(2, 3, *[7, 6, 5][:d], dtype=torch.float64)
    for amount in (1, 2, 3):
        modes = padding_modes(mode, d)
        np.testing.assert_array_equal(pad(x, amount, modes).numpy(), _numpy_pad(x.numpy(), amount, modes))


def test_each_axis_and_side_is_padded_with_its_own_mode():
    x = torch.randn(2, 1, 6, 7, 5, dtype=torch.float64)
    modes = padding_modes([("symmetric", "replicate"), "circular", ("zeros", "reflect")], 3)
    assert modes == (("symmetric", "replicate"), ("circular", "circular"), ("zeros", "reflect"))
    np.testing.assert_array_equal(pad(x, 2, modes).numpy(), _numpy_pad(x.numpy(), 2, modes))


@pytest.mark.parametrize("mode", MODES)
def test_spatial_conv_is_a_valid_convolution_of_the_padded_frames(mode):
    conv = SpatialConv(2, 3, 5, spatial_dims=2, padding=[mode, "circular"])
    x = torch.randn(2, 2, 3, 9, 8)
    frames = rearrange(x, "n c t ... -> (n t) c ...")
    padded = torch.from_numpy(_numpy_pad(frames.numpy(), 2, conv.padding))
    expected = rearrange(F.conv2d(padded, conv.weight, conv.bias), "(n t) c ... -> n c t ...", n=2)
    torch.testing.assert_close(conv(x), expected, rtol=1e-5, atol=1e-5)


def test_a_wall_does_not_wrap_around():
    """A bump at the high end of a walled axis reaches the low end only with circular padding;
    along a periodic axis it still does."""
    x = torch.zeros(1, 1, 1, 12, 12)
    x[..., -1, 4] = 1.0  # at the high end of axis 0 (x)
    y = torch.zeros(1, 1, 1, 12, 12)
    y[..., 4, -1] = 1.0  # at the high end of axis 1 (y)
    conv = SpatialConv(1, 1, 3, spatial_dims=2)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.zero_()
    assert conv(x)[..., 0, :].abs().sum() > 0  # circular: the bump wraps to the low side
    conv.set_padding([("symmetric", "symmetric"), "circular"])  # x has walls
    assert conv(x)[..., 0, :].abs().sum() == 0  # a wall: nothing crosses to the other side
    assert conv(x)[..., -1, 3:6].eq(2.0).all()  # the mirror doubles the edge cell
    assert conv(y)[..., 4, 0] == 1.0  # y is still periodic
    set_padding(conv, {"x": ("wall", "wall"), "y": ("open", "open")})
    assert conv.padding == (("symmetric", "symmetric"), ("replicate", "replicate"))
    assert conv(x)[..., 0, :].abs().sum() == 0 and conv(y)[..., :, 0].abs().sum() == 0


@pytest.mark.parametrize("d", [1, 2, 3])
def test_the_default_is_bit_identical_to_circular_padding(d):
    """The code before padding modes existed: F.pad(mode="circular") and the convolution."""
    conv = SpatialConv(2, 3, 3, spatial_dims=d)
    x = torch.randn(2, 2, 3, *[8] * d)
    frames = rearrange(x, "n c t ... -> (n t) c ...")
    before = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[d](F.pad(frames, [1] * (2 * d), mode="circular"), conv.weight, conv.bias)
    before = rearrange(before, "(n t) c ... -> n c t ...", n=2)
    assert conv.padding == (("circular", "circular"),) * d
    assert torch.equal(conv(x), before)
    weights = {k: v.clone() for k, v in conv.state_dict().items()}
    conv.set_padding("symmetric")
    assert not torch.equal(conv(x), before)
    conv.set_padding("circular")
    assert torch.equal(conv(x), before)
    assert weights.keys() == conv.state_dict().keys() and all(torch.equal(weights[k], v) for k, v in conv.state_dict().items())


def test_boundary_conditions_map_to_paddings():
    assert BOUNDARY_PADDING == {"periodic": "circular", "wall": "symmetric", "open": "replicate"}
    got = padding_for({"x": ("periodic", "periodic"), "y": ("wall", "open")})
    assert got == (("circular", "circular"), ("symmetric", "replicate"))
    assert padding_for({"x": "wall", "y": "periodic"}, axes=["y", "x"]) == (("circular", "circular"), ("symmetric", "symmetric"))
    assert padding_for([("WALL", "OPEN")]) == (("symmetric", "replicate"),)
    model = torch.nn.Sequential(SpatialConv(1, 2, 3), torch.nn.SiLU(), SpatialConv(2, 1, 1))
    set_padding(model, {"x": ("wall", "wall"), "y": ("periodic", "periodic")})
    assert padding_of(model) == (("symmetric", "symmetric"), ("circular", "circular"))
    model[2].set_padding("zeros")
    with pytest.raises(ValueError, match="mixed paddings"):
        padding_of(model)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: SpatialConv(1, 1, 3, padding="mirror"), r"padding must be one of .*axis 0 has 'mirror'"),
        (lambda: SpatialConv(1, 1, 3, padding=["circular"]), "expected 2 entries"),
        (lambda: SpatialConv(1, 1, 3, padding=[("circular", "zeros"), "zeros"]), "circular on one side only"),
        (lambda: padding_for({"x": ("wall", "sticky")}), r"conditions among \['open', 'periodic', 'wall'\]"),
        (lambda: padding_for({"x": "wall"}, axes=["x", "y"]), r"no axes \['y'\]"),
        (lambda: padding_for("wall"), "must map axes"),
        (lambda: set_padding(torch.nn.Linear(2, 2), "zeros"), "holds no SpatialConv"),
        (lambda: SpatialConv(1, 1, 3, padding="reflect")(torch.randn(1, 1, 1, 1, 4)), "axis 0 has 1 points, too few"),
    ],
)
def test_bad_padding_is_named(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_boundary_distance_counts_cells_to_the_nearest_non_periodic_edge():
    d = boundary_distance((5, 4), [("symmetric", "replicate"), "circular"])
    assert torch.equal(d[:, 0], torch.tensor([0.0, 1, 2, 1, 0])) and torch.equal(d, d[:, :1].expand(5, 4))
    d = boundary_distance((6, 5), [("circular", "circular"), ("zeros", "symmetric")])
    assert torch.equal(d[0], torch.tensor([0.0, 1, 2, 1, 0]))
    d = boundary_distance((6, 6), "symmetric")
    assert d[2, 3] == 2 and d[0, 3] == 0 and d.max() == 2
    assert torch.isinf(boundary_distance((4,), "circular")).all()
    # a convolution's output differs between two paddings only within its radius of such an edge
    conv = SpatialConv(1, 1, 5, spatial_dims=2)
    x = torch.randn(1, 1, 1, 12, 9)
    changed = (conv(x) - conv.set_padding(["replicate", "circular"])(x)).abs()[0, 0, 0] > 0
    far = boundary_distance((12, 9), conv.padding) >= 2
    assert not changed[far].any() and changed[~far].all()
