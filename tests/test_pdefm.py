"""physfm.nn.pdefm: the PDE-FM-style model (adapters, spectral token, FiLM, backbones, loss)."""

from __future__ import annotations

import math

import pytest
import torch

from physfm.nn.layers import count_parameters
from physfm.nn.pdefm import PDEFM, FiLM, SpectralToken, matched_transformer_hidden, pdefm_loss, spectral_l2


def _model(systems=None, **kw) -> PDEFM:
    torch.manual_seed(0)
    kw = {
        "width": 4,
        "dim": 8,
        "patch": 4,
        "spectral_modes": 2,
        "layers": 1,
        "d_state": 4,
        "decoder_width": 4,
        "decoder_modes": 4,
        "embed": 4,
        "n_coefficients": 3,
        **kw,
    }
    return PDEFM(systems or {"one": 1, "two": 2, "three": 3}, **kw)


def _perturbed(model: PDEFM) -> PDEFM:
    """Zero-initialised layers (FiLM's last layer, the output adapters) made non-zero."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


# -- FiLM ---------------------------------------------------------------------------------------


def test_film_at_zero_init_is_the_identity():
    film = FiLM(5, 8)
    tokens, c = torch.randn(3, 4, 6, 8), torch.randn(3, 5)
    torch.testing.assert_close(film(tokens, c), tokens, rtol=0, atol=0)
    model = _model()
    u = torch.randn(2, 3, 4, model.film.dim)
    torch.testing.assert_close(model.film(u, model.condition(2, "two", torch.randn(2, 3), 0.5, "cpu")), u, rtol=0, atol=0)


def test_film_modulates_once_trained():
    film = FiLM(5, 8)
    with torch.no_grad():
        film.net[-1].weight.normal_()
    tokens, c = torch.randn(3, 4, 8), torch.randn(3, 5)
    assert not torch.allclose(film(tokens, c), tokens)
    with pytest.raises(ValueError, match=r"tokens \(n, \.\.\., 8\) and c \(n, cond_dim\)"):
        film(tokens, c[:2])


# -- the spectral token ------------------------------------------------------------------------


@pytest.mark.parametrize("d, m, shape", [(1, 3, (16,)), (2, 2, (12, 16)), (3, 2, (8, 8, 6))])
def test_spectral_token_shape(d, m, shape):
    tok = SpectralToken(3, 10, m, spatial_dims=d)
    a = torch.randn(4, 3, *shape)
    n_modes = (2 * m + 1) ** (d - 1) * (m + 1) - 1
    assert tok.n_modes == n_modes
    assert tok.features(a).shape == (4, 3 * n_modes * 2)
    assert tok(a).shape == (4, 10)


def test_spectral_token_ignores_a_constant_shift_but_not_a_change_of_shape():
    torch.manual_seed(0)
    tok = SpectralToken(2, 6, 3)
    a = torch.randn(5, 2, 16, 16)
    shift = torch.tensor([3.0, -1.5])[None, :, None, None]
    torch.testing.assert_close(tok(a + shift), tok(a), rtol=1e-5, atol=1e-5)
    bump = torch.zeros_like(a)
    bump[..., 3, 4] = 1.0
    assert not torch.allclose(tok(a + bump), tok(a), atol=1e-4)


def test_spectral_token_sees_the_same_band_limited_field_on_any_grid():
    tok = SpectralToken(1, 4, 2)
    field = lambda n: torch.cos(2 * math.pi * (2 * torch.arange(n)[:, None] + torch.arange(n)[None, :]) / n)  # noqa: E731
    torch.testing.assert_close(tok(field(16)[None, None]), tok(field(32)[None, None]), rtol=1e-5, atol=1e-6)


def test_the_model_s_spectral_token_ignores_a_constant_shift_of_the_input():
    model = _perturbed(_model())
    x = torch.randn(2, 2, 3, 16, 16)
    a = lambda x: model.adapters_in["two"](x[:, :, 0])  # noqa: E731  adapted first frame
    torch.testing.assert_close(model.spectral(a(x + 2.0)), model.spectral(a(x)), rtol=1e-5, atol=1e-5)


def test_spectral_token_bad_input_is_named():
    tok = SpectralToken(2, 4, 4)
    with pytest.raises(ValueError, match=r"a must be \(n, 2, \*space\)"):
        tok(torch.randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match="modes=4 needs every spatial size >= 9"):
        tok(torch.randn(2, 2, 8, 8))
    with pytest.raises(ValueError, match="modes must be a positive int"):
        SpectralToken(2, 4, 0)


# -- adapters, fields, causality ------------------------------------------------------------------


@pytest.mark.parametrize("system, fields", [("one", 1), ("two", 2), ("three", 3), (None, 1), (None, 3)])
def test_runs_for_one_two_and_three_fields(system, fields):
    model = _model()
    x = torch.randn(2, fields, 4, 16, 16)
    coef = torch.randn(2, 2) if system else None
    y = model(x, system, coef, torch.tensor([0.5, 1.0]))
    assert y.shape == x.shape
    torch.testing.assert_close(y, x)  # untrained: persistence
    y = _perturbed(model)(x, system, coef, 0.5)
    assert y.shape == x.shape and torch.isfinite(y).all() and not torch.allclose(y, x)


@pytest.mark.parametrize("d, shape", [(1, (16,)), (3, (8, 8, 8))])
def test_one_implementation_for_one_two_and_three_spatial_dimensions(d, shape):
    model = _perturbed(_model({"a": 2}, spatial_dims=d, decoder_modes=2, spectral_modes=1))
    x = torch.randn(2, 2, 3, *shape)
    assert model(x, "a", None, 0.5).shape == x.shape and model(x, None, dt=0.5).shape == x.shape


def test_each_adapter_only_touches_its_own_system():
    model = _perturbed(_model())
    x = torch.randn(2, 2, 3, 16, 16)
    model(x, "two", None, 0.5).square().mean().backward()
    for name in model.names:
        grads = [p.grad for p in [*model.adapters_in[name].parameters(), *model.adapters_out[name].parameters()]]
        if name == "two":
            assert all(g is not None and g.abs().sum() > 0 for g in grads)
        else:
            assert all(g is None for g in grads), name
    assert all(p.grad is None for p in [*model.generic_in.parameters(), *model.generic_out.parameters()])
    # and changing another system's adapters leaves this system's prediction unchanged
    before = model(x, "two", None, 0.5).detach()
    with torch.no_grad():
        for name in ("one", "three"):
            for p in [*model.adapters_in[name].parameters(), *model.adapters_out[name].parameters()]:
                p.add_(1.0)
    torch.testing.assert_close(model(x, "two", None, 0.5), before, rtol=0, atol=0)
    assert model.adapters_in["three"].in_channels == 3 and model.adapters_out["three"].out_channels == 3


def test_generic_path_treats_fields_alike():
    """Without an adapter every field is lifted by the same single-field adapter: swapping the
    fields of the input swaps those of the prediction."""
    model = _perturbed(_model())
    x = torch.randn(2, 2, 3, 16, 16)
    y = model(x, None, dt=0.5)
    torch.testing.assert_close(model(x.flip(1), None, dt=0.5), y.flip(1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backbone", ["mamba", "transformer"])
@pytest.mark.parametrize("spectral_token", [True, False])
def test_causal_in_time(backbone, spectral_token):
    model = _perturbed(_model(backbone=backbone, spectral_token=spectral_token, transformer_hidden=8))
    x, coef = torch.randn(2, 2, 6, 16, 16), torch.randn(2, 2)
    y = model(x, "two", coef, 0.5)
    x2 = x.clone()
    x2[:, :, 3:] += torch.randn_like(x2[:, :, 3:])
    y2 = model(x2, "two", coef, 0.5)
    torch.testing.assert_close(y2[:, :, :3], y[:, :, :3], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(y2[:, :, 3:], y[:, :, 3:])


def test_rollout_feeds_predictions_back():
    model = _perturbed(_model())
    ctx = torch.randn(1, 1, 3, 16, 16)
    out = model.rollout(ctx, 2, "one", None, 0.5)
    assert out.shape == (1, 1, 2, 16, 16)
    first = model(ctx, "one", None, 0.5)[:, :, -1:]
    torch.testing.assert_close(out[:, :, :1], first)
    second = model(torch.cat([ctx, first], 2)[:, :, -3:], "one", None, 0.5)[:, :, -1:]
    torch.testing.assert_close(out[:, :, 1:], second)


def test_bad_input_is_named():
    model = _model()
    with pytest.raises(ValueError, match="two has 2 fields"):
        model(torch.randn(1, 1, 3, 16, 16), "two")
    with pytest.raises(ValueError, match="system 'four' has no adapter"):
        model(torch.randn(1, 1, 3, 16, 16), "four")
    with pytest.raises(ValueError, match="multiples of patch=4"):
        model(torch.randn(1, 1, 3, 18, 16), "one")
    with pytest.raises(ValueError, match=r"x must be \(n, fields, time, \*space\)"):
        model(torch.randn(1, 3, 16, 16), "one")
    with pytest.raises(ValueError, match=r"coefficients must be \(n=1, k <= 3\)"):
        model(torch.randn(1, 1, 3, 16, 16), "one", torch.randn(1, 4))
    with pytest.raises(ValueError, match="one entry per sample"):
        model(torch.randn(2, 1, 3, 16, 16), "one", None, torch.tensor([0.5, 0.5, 0.5]))
    with pytest.raises(ValueError, match="dt must be positive"):
        model(torch.randn(1, 1, 3, 16, 16), "one", None, -1.0)
    with pytest.raises(ValueError, match="backbone must be"):
        _model(backbone="lstm")


def test_transformer_backbone_has_the_parameters_of_the_mamba_one():
    mamba = _model(dim=32, layers=2, d_state=8)
    hidden = matched_transformer_hidden(32, 2, count_parameters(mamba.backbone)[0])
    transformer = _model(dim=32, layers=2, backbone="transformer", transformer_hidden=hidden)
    assert abs(count_parameters(transformer.backbone)[0] / count_parameters(mamba.backbone)[0] - 1) < 0.01


def test_loss_is_zero_for_a_perfect_prediction_and_penalises_blur():
    y = torch.randn(2, 1, 3, 16, 16)
    assert float(spectral_l2(y, y).max()) < 1e-6
    blurred = 0.5 * (y + y.roll(1, -1))
    assert float(spectral_l2(blurred, y).mean()) > 0.05
    assert float(pdefm_loss(y, y)) < 1e-3
    with pytest.raises(ValueError, match="pred has shape"):
        spectral_l2(y, y[:1])
