"""physfm.autoencoder: shapes for every ratio, strict causality, chunked encoding, 3D."""

from __future__ import annotations

import pytest
import torch

from physfm.autoencoder import Tokeniser, TokeniserConfig

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


@pytest.mark.parametrize("time_stride", [1, 2, 4])
def test_the_whole_autoencoder_is_causal(time_stride):
    tok = _tok()
    with torch.no_grad():
        for p in tok.parameters():  # make every block active (residual branches start at zero)
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(1, 1, 9, 8, 8)
    y = tok(x, 2, time_stride)
    for t in range(8):
        x2 = x.clone()
        x2[:, :, t + 1 :] = torch.randn_like(x2[:, :, t + 1 :])
        torch.testing.assert_close(tok(x2, 2, time_stride)[:, :, : t + 1], y[:, :, : t + 1])
        assert (tok(x2, 2, time_stride)[:, :, t + 1 :] - y[:, :, t + 1 :]).abs().max() > 0


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
    n = tok.n_parameters()
    x = torch.randn(1, 1, 5, 8, 8)
    for s in (1, 2, 4):
        for st in (1, 2, 4):
            tok(x, s, st)
    assert tok.n_parameters() == n


@pytest.mark.parametrize("time_stride", [1, 2])
def test_chunked_encoding_equals_a_full_pass(time_stride):
    tok = _tok(blocks=2)
    with torch.no_grad():
        for p in tok.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(1, 1, 1 + 12 * time_stride, 8, 8)
    full = tok.encode(x, 2, time_stride)
    torch.testing.assert_close(tok.encode_chunks(x, 3, 2, time_stride), full, rtol=1e-5, atol=1e-5)
    # naive pieces without context do not equal it: the temporal convolutions look back
    naive = torch.cat([full[:, :, :4], tok.encode(x[:, :, 4 * time_stride : 8 * time_stride + 1], 2, time_stride)[:, :, 1:]], 2)
    assert (naive - full[:, :, : naive.shape[2]]).abs().max() > 1e-3


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
    for _ in range(8):
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
