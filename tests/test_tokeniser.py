"""physfm.nn.tokeniser: shapes for every ratio, strict causality, chunked encoding, 3D."""

from __future__ import annotations

import pytest
import torch

from physfm.nn.compression import SpatialConv
from physfm.nn.tokeniser import Tokeniser, TokeniserConfig

SMALL = dict(channels=(4, 8), latent=4, blocks=1, patch=4, time_patch=4)


def _tok(d=2, **kw):
    torch.manual_seed(0)
    return Tokeniser(spatial_dims=d, **{**SMALL, **kw})


@pytest.mark.parametrize("stride", [1, 2, 4])
@pytest.mark.parametrize("time_stride", [1, 2, 4])
def test_shapes_for_every_ratio(stride, time_stride):
    tok = _tok()
    x = torch.randn(2, 1, 9, 16, 12)
    z = tok.encode(x, stride, time_stride)
    assert z.shape == (2, 4, *tok.latent_shape(9, (16, 12), stride, time_stride)[1:])
    assert tok(x, stride, time_stride).shape == x.shape
    assert tok.config.ratio(stride, time_stride) == time_stride * stride**2 / 4


def _active(tok):
    """Perturb every weight so that every residual branch is active (they start at zero)."""
    with torch.no_grad():
        for p in tok.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return tok


def _futures(x):
    """``(1, 1, T, *S) -> (T, 1, T, *S)``: row ``k`` is ``x`` with frames ``>= k`` replaced by noise."""
    frames = x.shape[2]
    rows = x.repeat(frames, *[1] * (x.ndim - 1))
    for k in range(1, frames):
        rows[k, :, k:] = torch.randn_like(rows[k, :, k:])
    return rows


@pytest.mark.parametrize("stride", [1, 2, 4])
@pytest.mark.parametrize("time_stride", [1, 2, 4])
def test_the_whole_autoencoder_is_causal(stride, time_stride):
    """Changing frames > t changes no latent of frames <= t and no output frame <= t, with and without skips."""
    tok = _active(_tok())
    rows = _futures(torch.randn(1, 1, 9, 8, 8))  # row k differs from row 0 from frame k on
    with torch.no_grad():
        z, features = tok.encode(rows, stride, time_stride, return_features=True)
        y = tok.decode(z, stride, time_stride, frames=9)
        y_skip = tok.decode(z, stride, time_stride, frames=9, skips=features)
    for k in range(1, 9):
        keep = (k - 1) // time_stride + 1  # latents tau with tau * s_t <= k - 1
        torch.testing.assert_close(z[k, :, :keep], z[0, :, :keep], rtol=0, atol=0)
        for out in (y, y_skip):
            torch.testing.assert_close(out[k, :, :k], out[0, :, :k], rtol=0, atol=0)
            assert (out[k, :, k:] - out[0, :, k:]).abs().max() > 0  # ... and the future does change


@pytest.mark.parametrize("time_stride", [1, 2, 4])
def test_the_decoder_is_causal_in_latent_time(time_stride):
    tok = _active(_tok())
    z = torch.randn(1, 4, 4, 4, 4)
    rows = z.repeat(4, 1, 1, 1, 1)
    for k in range(1, 4):
        rows[k, :, k:] = torch.randn_like(rows[k, :, k:])
    with torch.no_grad():
        y = tok.decode(rows, 2, time_stride)
    for k in range(1, 4):  # latent k makes frames k*s_t ...: everything before is unchanged
        torch.testing.assert_close(y[k, :, : k * time_stride], y[0, :, : k * time_stride], rtol=0, atol=0)


@pytest.mark.parametrize("time_stride", [1, 2])
def test_receptive_frames_is_exact(time_stride):
    tok = _active(_tok(blocks=2))
    r = tok.receptive_frames(time_stride)
    assert r == 5 * time_stride - 1
    tau = 7
    x = torch.randn(1, 1, 1 + tau * time_stride, 8, 8)
    rows = x.repeat(3, 1, 1, 1, 1)
    rows[1, :, tau * time_stride - r] += 1.0  # the oldest frame latent tau sees
    rows[2, :, tau * time_stride - r - 1] += 1.0  # one further back
    with torch.no_grad():
        z = tok.encode(rows, 2, time_stride)[:, :, tau]
    assert (z[1] - z[0]).abs().max() > 0
    torch.testing.assert_close(z[2], z[0], rtol=0, atol=0)


def test_odd_sizes_work_with_stride_one_and_fail_clearly_otherwise():
    tok = _tok(d=1)
    x = torch.randn(1, 1, 3, 13)
    assert tok(x, 1, 1).shape == x.shape
    with pytest.raises(ValueError, match=r"spatial stride 2 does not divide the grid \(13,\)"):
        tok(x, 2, 1)
    with pytest.raises(ValueError, match="time length 3 cannot be compressed with time stride 4"):
        tok(torch.randn(1, 1, 3, 16), 1, 4)


def test_same_parameters_serve_every_ratio():
    tok = _tok()
    before = {k: v.clone() for k, v in tok.state_dict().items()}
    x = torch.randn(1, 1, 5, 8, 8)
    loss = 0
    for s in (1, 2, 4):
        for st in (1, 2, 4):
            loss = loss + tok(x, s, st).square().mean()
    loss.backward()  # every parameter takes part in the ratios, and no new one appeared
    assert tok.state_dict().keys() == before.keys()
    assert all(torch.equal(tok.state_dict()[k], v) for k, v in before.items())
    assert all(p.grad is not None for p in tok.parameters())


@pytest.mark.parametrize("time_stride", [1, 2, 4])
def test_chunked_encoding_and_decoding_equal_a_full_pass(time_stride):
    tok = _active(_tok(blocks=2))
    x = torch.randn(1, 1, 1 + 12 * time_stride, 8, 8)
    with torch.no_grad():
        full = tok.encode(x, 2, time_stride)
        torch.testing.assert_close(tok.encode_chunks(x, 3, 2, time_stride), full, rtol=1e-5, atol=1e-5)
        decoded = tok.decode(full, 2, time_stride)
        torch.testing.assert_close(tok.decode_chunks(full, 5, 2, time_stride), decoded, rtol=1e-5, atol=1e-5)
        if time_stride > 1:  # a sequence that ends inside a group of frames
            short = decoded.shape[2] + time_stride - 1
            torch.testing.assert_close(
                tok.decode_chunks(full, 5, 2, time_stride, frames=short),
                tok.decode(full, 2, time_stride, frames=short),
                rtol=1e-5,
                atol=1e-5,
            )
        # naive pieces without context do not equal it: the temporal convolutions look back
        naive = torch.cat(
            [full[:, :, :4], tok.encode(x[:, :, 4 * time_stride : 8 * time_stride + 1], 2, time_stride)[:, :, 1:]], 2
        )
    assert (naive - full[:, :, : naive.shape[2]]).abs().max() > 1e-3


def test_encoder_and_decoder_halves_partition_the_parameters():
    tok = _tok()
    enc, dec = list(tok.encoder_parameters()), list(tok.decoder_parameters())
    assert {id(p) for p in enc}.isdisjoint({id(p) for p in dec})
    assert {id(p) for p in enc} | {id(p) for p in dec} == {id(p) for p in tok.parameters()}
    for p in enc:  # a frozen encoder gets no gradient, the decoder still does
        p.requires_grad_(False)
    x = torch.randn(1, 1, 5, 8, 8)
    tok(x, 2, 2).square().mean().backward()
    assert all(p.grad is None for p in enc) and all(p.grad is not None for p in dec)


def test_features_and_skips_have_mirrored_shapes():
    tok = _tok()
    x = torch.randn(2, 1, 5, 8, 8)
    z, (full, latent) = tok.encode(x, 2, 1, return_features=True)
    assert full.shape == (2, 4, 5, 8, 8) and latent.shape == (2, 8, 5, 4, 4)
    plain = tok.decode(z, 2, 1)
    with_zero_skips = tok.decode(z, 2, 1, skips=[torch.zeros_like(full), torch.zeros_like(latent)])
    torch.testing.assert_close(plain, with_zero_skips)


def test_a_3d_tokeniser_trains_a_few_steps():
    tok = _tok(d=3)
    opt = torch.optim.Adam(tok.parameters(), lr=3e-3)
    x = torch.randn(2, 1, 5, 8, 8, 8)
    losses = []
    for _ in range(5):
        loss = (tok(x, 2, 2) - x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


def test_config_round_trip_and_errors():
    cfg = TokeniserConfig(spatial_dims=1, channels=(4, 8), latent=2, blocks=1)
    assert Tokeniser(cfg).config == cfg
    with pytest.raises(TypeError, match="either a config or keyword arguments"):
        Tokeniser(cfg, latent=3)
    with pytest.raises(ValueError, match="spatial_dims must be 1, 2 or 3"):
        Tokeniser(spatial_dims=4)
    with pytest.raises(ValueError, match=r"expected \(n, 1, time, \*space\)"):
        _tok().encode(torch.randn(1, 2, 5, 8, 8))
    with pytest.raises(ValueError, match=r"expected \(n, 4, time, \*space\)"):
        _tok().decode(torch.randn(1, 3, 5, 8, 8))


def test_float64_and_one_dimensional_space():
    tok = _tok(d=1).double()
    x = torch.randn(2, 1, 9, 16, dtype=torch.float64)
    z = tok.encode(x, 4, 2)
    assert z.dtype == torch.float64 and z.shape == (2, 4, 5, 4)
    assert tok.decode(z, 4, 2).shape == x.shape


# ---------------------------------------------------------------------------------------------
# Padding: the default unchanged, switched on a built tokeniser without new weights
# ---------------------------------------------------------------------------------------------


def _circular_forward(self, x):
    """SpatialConv.forward as it was before padding modes existed."""
    import torch.nn.functional as F
    from einops import rearrange

    n, t = x.shape[0], x.shape[2]
    y = rearrange(x, "n c t ... -> (n t) c ...")
    if self.k > 1:
        y = F.pad(y, [self.k // 2] * (2 * self.d), mode="circular")
    y = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[self.d](y, self.weight, self.bias)
    return rearrange(y, "(n t) c ... -> n c t ...", n=n, t=t)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_the_default_tokeniser_is_bit_identical_to_circular_padding(d, monkeypatch):
    tok = _tok(d=d)
    x = torch.randn(2, 1, 5, *[8] * d)
    now = (tok(x, 2, 2), tok.encode(x, 4, 1))
    assert tok.padding == (("circular", "circular"),) * d
    monkeypatch.setattr(SpatialConv, "forward", _circular_forward)
    before = (tok(x, 2, 2), tok.encode(x, 4, 1))
    assert all(torch.equal(a, b) for a, b in zip(now, before))


def test_a_built_tokeniser_switches_padding_without_new_weights():
    """Walls along x change the reconstruction near the walls only, and the weights not at all."""
    tok = _tok(blocks=1).eval()
    weights = {k: v.clone() for k, v in tok.state_dict().items()}
    x = torch.randn(2, 1, 5, 64, 16)
    with torch.no_grad():
        periodic = tok(x)
        tok.set_padding({"x": ("wall", "wall"), "y": ("periodic", "periodic")})
        walled = tok(x)
    assert tok.padding == (("symmetric", "symmetric"), ("circular", "circular"))
    assert all(c.padding == tok.padding for c in tok.modules() if isinstance(c, SpatialConv))
    assert tok.state_dict().keys() == weights.keys() and all(torch.equal(v, weights[k]) for k, v in tok.state_dict().items())
    changed = (walled - periodic).abs().amax(dim=(0, 1, 2, 4))  # per x
    assert changed[:4].min() > 0 and changed[-4:].min() > 0  # at the walls
    assert torch.equal(changed[24:40], torch.zeros(16))  # far from them: the same numbers
    with torch.no_grad():
        assert torch.equal(tok.set_padding("circular")(x), periodic)


def test_padding_is_set_at_construction_and_reaches_adapted_layers():
    import copy

    from physfm.nn.lora import inject_lora

    tok = Tokeniser(spatial_dims=2, padding=["replicate", ("symmetric", "zeros")], **SMALL)
    assert tok.padding == (("replicate", "replicate"), ("symmetric", "zeros"))
    plain = copy.deepcopy(tok)
    assert inject_lora(tok, ["stem", "enc_blocks.*.space", "dec_out.2"], r=2)
    walls = {"x": ("open", "open"), "y": ("wall", "wall")}
    tok.set_padding(walls)
    plain.set_padding(walls)
    assert tok.padding == (("replicate", "replicate"), ("symmetric", "symmetric"))
    x = torch.randn(1, 1, 5, 16, 16)
    with torch.no_grad():  # the adapters start at zero: the adapted layers pad as the plain ones
        torch.testing.assert_close(tok(x), plain(x))
    with pytest.raises(ValueError, match="padding must be one of"):
        tok.set_padding("mirror")
