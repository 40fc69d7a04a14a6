"""physfm.nn.dynamics: next-frame model in the latent space, rollout, and Tadpole's fine-tuning wrapper."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange

from physfm.nn.dynamics import NextFrameModel
from physfm.nn.tokeniser import Tokeniser


def _model(fields=1, seed=0):
    torch.manual_seed(seed)
    tok = Tokeniser(spatial_dims=2, channels=(4, 8), latent=2, blocks=1, patch=2, time_patch=1, stride=2)
    return NextFrameModel(tok, fields, stride=2, width=8, blocks=1)


def test_untrained_model_predicts_persistence_through_the_tokeniser():
    model = _model()
    x = torch.randn(2, 1, 4, 8, 8)
    recon = model.tokeniser(x, 2, 1)
    torch.testing.assert_close(model(x), recon)


@pytest.mark.parametrize("fields", [1, 2, 3])
def test_shapes_and_causality(fields):
    model = _model(fields)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(2, fields, 5, 8, 8)
    y = model(x)
    assert y.shape == x.shape
    x2 = x.clone()
    x2[:, :, 3:] += 1.0
    torch.testing.assert_close(model(x2)[:, :, :3], y[:, :, :3])


def test_rollout_feeds_predictions_back():
    model = _model()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ctx = torch.randn(1, 1, 3, 8, 8)
    out = model.rollout(ctx, 3)
    assert out.shape == (1, 1, 3, 8, 8)
    first = model(ctx)[:, :, -1:]
    torch.testing.assert_close(out[:, :, :1], first)
    second = model(torch.cat([ctx, first], 2)[:, :, -3:])[:, :, -1:]
    torch.testing.assert_close(out[:, :, 1:2], second)


def test_frozen_tokeniser_only_processor_learns():
    model = _model()
    model.freeze_tokeniser()
    before = {k: v.clone() for k, v in model.tokeniser.state_dict().items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x = torch.randn(2, 1, 4, 8, 8)
    for _ in range(3):
        loss = model.loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for k, v in model.tokeniser.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert any(p.grad is not None for p in model.processor.parameters())


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"expected frames \(n, 2 fields, time, \*space\)"):
        _model(2)(torch.randn(1, 1, 3, 8, 8))


# --------------------------------------------------------------------------------------------
# AutoencoderDynamics: LoRA, latent transform and skips around a pre-trained autoencoder (Tadpole)

from physfm.nn.dynamics import ADAPT, AutoencoderDynamics, LatentTransform, SkipScales  # noqa: E402
from physfm.nn.lora import lora_layers  # noqa: E402


def _trained_tokeniser(seed=0):
    """A tokeniser with weights away from their (identity-like) initialisation, as after training."""
    torch.manual_seed(seed)
    tok = Tokeniser(spatial_dims=2, channels=(4, 8), latent=2, blocks=1, patch=2, time_patch=1, stride=2)
    with torch.no_grad():
        for p in tok.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return tok


@pytest.mark.parametrize("adapt", ADAPT)
@pytest.mark.parametrize("transform, skips", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("fields", [1, 2])
def test_at_the_start_the_model_is_the_autoencoder_bit_for_bit(adapt, transform, skips, fields):
    import copy

    tok = _trained_tokeniser()
    x = torch.randn(2, fields, 5, 8, 8)
    with torch.no_grad():
        recon = tok(rearrange(x, "n f t h w -> (n f) 1 t h w"), 2, 1)
        model = AutoencoderDynamics(
            copy.deepcopy(tok), fields, stride=2, adapt=adapt, rank=2, transform=transform, skips=skips, width=8
        )
        assert torch.equal(model(x), rearrange(recon, "(n f) 1 t h w -> n f t h w", f=fields))
        # and so its rollout repeats the autoencoder's reconstruction of the last frame
        ctx = x[:, :, :3]
        roll = model.rollout(ctx, 2)
        first = rearrange(
            tok(rearrange(ctx, "n f t h w -> (n f) 1 t h w"), 2, 1)[:, :, -1:], "(n f) 1 t h w -> n f t h w", f=fields
        )
        assert torch.equal(roll[:, :, :1], first)


def test_lora_only_parameters_get_gradients_and_the_base_stays_fixed():
    tok = _trained_tokeniser()
    before = {k: v.clone() for k, v in tok.state_dict().items()}
    model = AutoencoderDynamics(tok, 1, stride=2, adapt="lora", rank=2, transform=False, skips=False)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith(("lora_A", "lora_B")) for n in trainable)
    assert len(lora_layers(model)) == 10  # every kernel of the encoder and the decoder
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x = torch.randn(2, 1, 5, 8, 8)
    with torch.no_grad():
        start = model(x)
    for step in range(3):
        opt.zero_grad()
        model.loss(x).backward()
        for name, p in model.named_parameters():
            if p.requires_grad:
                assert p.grad is not None, name
                if name.endswith("lora_B") or step > 0:  # A has a zero gradient while B = 0
                    assert p.grad.abs().sum() > 0, name
            else:
                assert p.grad is None, name
        opt.step()
    state = model.tokeniser.state_dict()
    for k, v in before.items():  # the pre-trained weights, now under each LoRA layer's `base`
        key = k if k in state else k.rsplit(".", 1)[0] + ".base." + k.rsplit(".", 1)[1]
        assert torch.equal(state[key], v), k
    with torch.no_grad():
        assert not torch.equal(model(x), start)  # the adapters did change the model


def test_each_part_trains_what_it_should():
    counts = {}
    for adapt in ADAPT:
        for transform, skips in [(True, True), (True, False), (False, True)]:
            model = AutoencoderDynamics(
                _trained_tokeniser(), 1, stride=2, adapt=adapt, rank=2, transform=transform, skips=skips, width=8
            )
            names = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
            assert ("transform" in names) == transform and ("skips" in names) == skips
            assert ("tokeniser" in names) == (adapt != "frozen")
            counts[adapt, transform, skips] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert counts["frozen", False, True] == 2  # one scale per level
    assert counts["frozen", True, True] < counts["lora", True, True] < counts["full", True, True]
    model = AutoencoderDynamics(_trained_tokeniser(), 1, stride=2, transform=True, skips=True, width=8)
    model.loss(torch.randn(1, 1, 4, 8, 8)).backward()
    assert model.transform.scale.grad != 0 and (model.skips.scales.grad != 0).all()


def test_transform_and_skips_start_as_identities():
    t = LatentTransform(4, 8, 1)
    z = torch.randn(2, 4, 3, 4, 4)
    assert torch.equal(t(z), z) and t.scale.item() == 1.0
    s = SkipScales()
    assert all(torch.count_nonzero(h) == 0 for h in s([torch.randn(2, 3), torch.randn(2, 5)]))
    with pytest.raises(ValueError, match="expected 2 feature tensors"):
        s([torch.randn(2)])


def test_autoencoder_dynamics_bad_arguments_are_named():
    with pytest.raises(ValueError, match="adapt must be one of"):
        AutoencoderDynamics(_trained_tokeniser(), 1, stride=2, adapt="half")
    with pytest.raises(ValueError, match="fields must be a positive int"):
        AutoencoderDynamics(_trained_tokeniser(), 0, stride=2)
    with pytest.raises(ValueError, match="spatial stride 3"):
        AutoencoderDynamics(_trained_tokeniser(), 1, stride=3)
    with pytest.raises(ValueError, match=r"AutoencoderDynamics: expected frames \(n, 2 fields"):
        AutoencoderDynamics(_trained_tokeniser(), 2, stride=2)(torch.randn(1, 1, 3, 8, 8))
