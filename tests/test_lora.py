"""physfm.nn.lora: agreement with peft, every convolution setting, exact merge/unmerge, gradients, errors."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from physfm.nn.lora import (
    LoRAConv,
    LoRAConvTranspose,
    LoRALayer,
    LoRALinear,
    count_parameters,
    inject_lora,
    lora_layers,
    lora_state_dict,
    merge_lora,
    print_trainable_parameters,
    unload_lora,
    unmerge_lora,
)

PATHS = ["folded", "factored"]


class Holder(nn.Module):
    """One layer under the name ``layer`` (so peft's and our targets read the same)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x, *args):
        return self.layer(x, *args)


def _randomise(layer: LoRALayer, seed: int = 1) -> None:
    """Give B (and A) non-zero values so the adapter actually changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.lora_A.copy_(torch.randn(layer.lora_A.shape, generator=g, dtype=layer.lora_A.dtype) * 0.3)
        layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g, dtype=layer.lora_B.dtype) * 0.3)


def _reference_delta(layer: LoRALayer) -> torch.Tensor:
    """s ΔW written out independently of the library, from the definition."""
    A, B, s = layer.lora_A, layer.lora_B, layer.scaling
    if isinstance(layer, LoRALinear):
        return s * torch.einsum("or,ri->oi", B, A)
    if isinstance(layer, LoRAConv):
        return s * torch.einsum("or,ri...->oi...", B, A)
    return s * torch.einsum("ri,ro...->io...", A, B)


def _reference_layer(layer: LoRALayer) -> nn.Module:
    """A plain copy of the base layer whose weight is W + s ΔW."""
    ref = copy.deepcopy(layer.base)
    with torch.no_grad():
        ref.weight.add_(_reference_delta(layer))
    return ref


# --------------------------------------------------------------------------------------------
# equals peft given the same weights


PEFT_CASES = {
    "linear": (lambda: nn.Linear(12, 10), (3, 5, 12)),
    "conv1d": (lambda: nn.Conv1d(4, 6, 3, padding=1), (2, 4, 16)),
    "conv2d": (lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1), (2, 4, 10, 12)),
    "conv3d": (lambda: nn.Conv3d(3, 5, (3, 1, 3), padding=(1, 0, 2)), (2, 3, 6, 5, 7)),
    "conv2d-1x1": (lambda: nn.Conv2d(4, 6, 1), (2, 4, 5, 5)),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", list(PEFT_CASES))
def test_equals_peft_given_the_same_factors(case, path):
    make, shape = PEFT_CASES[case]
    torch.manual_seed(0)
    base = Holder(make())
    x = torch.randn(shape)
    peft_model = get_peft_model(copy.deepcopy(base), LoraConfig(r=3, lora_alpha=5, target_modules=["layer"]))
    ours = copy.deepcopy(base)
    inject_lora(ours, "layer", r=3, alpha=5)
    peft_layer = peft_model.base_model.model.layer
    a, b = peft_layer.lora_A["default"].weight, peft_layer.lora_B["default"].weight
    with torch.no_grad():
        b.normal_()  # peft starts at B = 0 too: make the comparison bite
        ours.layer.lora_A.copy_(a.reshape(ours.layer.lora_A.shape))
        ours.layer.lora_B.copy_(b.reshape(ours.layer.lora_B.shape))
    ours.layer.path = path
    torch.testing.assert_close(ours(x), peft_model(x), rtol=1e-5, atol=1e-5)
    # and the gradients of the factors agree
    peft_model(x).square().sum().backward()
    ours(x).square().sum().backward()
    torch.testing.assert_close(ours.layer.lora_A.grad, a.grad.reshape(ours.layer.lora_A.shape), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.layer.lora_B.grad, b.grad.reshape(ours.layer.lora_B.shape), rtol=1e-4, atol=1e-4)


def test_initial_factors_follow_peft_and_the_model_starts_as_the_base():
    torch.manual_seed(0)
    base = Holder(nn.Conv2d(4, 6, 3, padding=1))
    x = torch.randn(2, 4, 8, 8)
    ours = copy.deepcopy(base)
    inject_lora(ours, "layer", r=4, alpha=8, generator=torch.Generator().manual_seed(0))
    layer = ours.layer
    assert torch.count_nonzero(layer.lora_B) == 0
    bound = 1 / (4 * 9) ** 0.5  # Kaiming-uniform with a = sqrt(5): U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert layer.lora_A.abs().max() <= bound and layer.lora_A.abs().max() > 0.8 * bound
    peft_model = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=["layer"]))
    assert layer.lora_A.shape == peft_model.base_model.model.layer.lora_A["default"].weight.shape
    for path in PATHS:
        layer.path = path
        assert torch.equal(ours(x), base(x))


def test_generator_makes_initialisation_repeatable():
    def build(seed):
        m = Holder(nn.Linear(8, 8))
        inject_lora(m, "layer", r=2, generator=torch.Generator().manual_seed(seed))
        return m.layer.lora_A.detach()

    assert torch.equal(build(3), build(3))
    assert not torch.equal(build(3), build(4))


# --------------------------------------------------------------------------------------------
# every convolution setting is kept (checked against a plain layer with weight W + s ΔW)

CONV_CASES = {
    "conv1d-stride-dilation": (lambda: nn.Conv1d(4, 6, 3, stride=2, padding=2, dilation=2), (2, 4, 17)),
    "conv1d-reflect": (lambda: nn.Conv1d(4, 6, 5, padding=2, padding_mode="reflect"), (2, 4, 12)),
    "conv2d-circular": (lambda: nn.Conv2d(4, 6, 3, padding=1, padding_mode="circular"), (2, 4, 8, 8)),
    "conv2d-circular-dilated-groups": (
        lambda: nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2, padding_mode="circular"),
        (2, 4, 9, 8),
    ),
    "conv2d-same-even-replicate": (lambda: nn.Conv2d(4, 6, (4, 3), padding="same", padding_mode="replicate"), (2, 4, 7, 6)),
    "conv2d-same-even-zeros": (lambda: nn.Conv2d(4, 6, (4, 2), padding="same"), (2, 4, 7, 6)),
    "conv2d-depthwise": (lambda: nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False), (2, 4, 6, 6)),
    "conv3d-circular-stride": (lambda: nn.Conv3d(3, 4, 3, stride=(1, 2, 2), padding=1, padding_mode="circular"), (1, 3, 4, 6, 6)),
    "conv3d-valid": (lambda: nn.Conv3d(3, 4, 2, padding="valid"), (1, 3, 4, 5, 5)),
    "convT1d-stride-outpad": (lambda: nn.ConvTranspose1d(4, 6, 3, stride=2, padding=1, output_padding=1), (2, 4, 9)),
    "convT2d-groups-dilation": (
        lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2, output_padding=1),
        (2, 4, 5, 6),
    ),
    "convT3d": (lambda: nn.ConvTranspose3d(3, 4, (2, 2, 2), stride=2, bias=False), (1, 3, 3, 4, 4)),
}


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_every_convolution_setting_is_kept(case, path):
    make, shape = CONV_CASES[case]
    torch.manual_seed(0)
    model = Holder(make())
    x = torch.randn(shape)
    inject_lora(model, "layer", r=2, alpha=3)
    _randomise(model.layer)
    model.layer.path = path
    ref = _reference_layer(model.layer)
    torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path", PATHS)
def test_transposed_convolution_honours_output_size(path):
    torch.manual_seed(0)
    model = Holder(nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1))
    inject_lora(model, "layer", r=2)
    _randomise(model.layer)
    model.layer.path = path
    x = torch.randn(1, 3, 5, 5)
    out = model(x, [10, 10])
    assert out.shape == (1, 4, 10, 10)
    torch.testing.assert_close(out, _reference_layer(model.layer)(x, [10, 10]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_circular_lora_stays_translation_equivariant(d):
    torch.manual_seed(0)
    model = Holder([nn.Conv1d, nn.Conv2d, nn.Conv3d][d - 1](2, 3, 3, padding=1, padding_mode="circular"))
    inject_lora(model, "layer", r=2)
    _randomise(model.layer)
    x = torch.randn(2, 2, *[6] * d)
    dims, shifts = list(range(2, 2 + d)), [2] * d
    for path in PATHS:
        model.layer.path = path
        torch.testing.assert_close(model(torch.roll(x, shifts, dims)), torch.roll(model(x), shifts, dims), rtol=1e-5, atol=1e-5)


def _peft_and_ours(conv: nn.Module, r: int = 2):
    base = Holder(conv)
    peft_model = get_peft_model(copy.deepcopy(base), LoraConfig(r=r, lora_alpha=r, target_modules=["layer"]))
    ours = copy.deepcopy(base)
    inject_lora(ours, "layer", r=r)
    pl = peft_model.base_model.model.layer
    with torch.no_grad():
        pl.lora_B["default"].weight.normal_()
        ours.layer.lora_A.copy_(pl.lora_A["default"].weight)
        ours.layer.lora_B.copy_(pl.lora_B["default"].weight.flatten(1))
    return peft_model, ours


def test_peft_loses_circular_padding():
    """peft 0.21.2 builds lora_A with zero padding whatever the base layer's padding_mode (peft
    issue #3697): its adapter path is wrong at the borders, right in the interior. Ours is right."""
    torch.manual_seed(0)
    peft_model, ours = _peft_and_ours(nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular"))
    x = torch.randn(2, 3, 8, 8)
    exact = _reference_layer(ours.layer)(x)
    torch.testing.assert_close(ours(x), exact, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        err = (peft_model(x) - exact).abs()
    interior = err[..., 1:-1, 1:-1]
    assert interior.max() < 1e-5, "peft agrees away from the border"
    assert err.max() > 1e-2, "peft's adapter path pads with zeros at the periodic border"
    # so its adapted layer is no longer translation-equivariant
    with torch.no_grad():
        shifted = peft_model(torch.roll(x, (3, 3), (2, 3)))
        assert (shifted - torch.roll(peft_model(x), (3, 3), (2, 3))).abs().max() > 1e-2


def test_peft_loses_dilation():
    """peft 0.21.2 also drops ``dilation`` from lora_A: the two paths' shapes differ (issue #3697)."""
    torch.manual_seed(0)
    peft_model, ours = _peft_and_ours(nn.Conv2d(3, 4, 3, padding=2, dilation=2))
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(RuntimeError, match="size of tensor"):
        peft_model(x)
    torch.testing.assert_close(ours(x), _reference_layer(ours.layer)(x), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------
# merge / unmerge / unload


def _stack(dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, padding_mode="circular"),
        nn.GELU(),
        nn.Conv2d(4, 4, 3, stride=2, padding=1),
        nn.GELU(),
        nn.ConvTranspose2d(4, 3, 2, stride=2),
        nn.Flatten(),
        nn.Linear(3 * 8 * 8, 16),
    ).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_merge_then_unmerge_restores_the_base_weights_bit_for_bit(dtype):
    model = _stack(dtype)
    names = inject_lora(model, ["0", "2", "4", "6"], r=2, alpha=4)
    for layer in lora_layers(model).values():
        _randomise(layer)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    merge_lora(model)
    for name in names:
        assert not torch.equal(model.get_submodule(name).base.weight, before[f"{name}.base.weight"])
    merge_lora(model)  # merging twice is a no-op, not a double merge
    unmerge_lora(model)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert all(not layer.merged for layer in lora_layers(model).values())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_merged_model_equals_unmerged(dtype):
    model = _stack(dtype)
    inject_lora(model, ["0", "2", "4", "6"], r=2, alpha=4)
    for layer in lora_layers(model).values():
        _randomise(layer)
    x = torch.randn(3, 2, 8, 8, dtype=dtype)
    for layer in lora_layers(model).values():
        layer.path = "factored"
    unmerged = model(x).detach()
    merge_lora(model)
    merged = model(x)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(merged, unmerged, rtol=tol, atol=tol)
    # unloading gives the plain base layers with the merged weights: same function, no wrappers
    plain = unload_lora(copy.deepcopy(model))
    assert not lora_layers(plain) and isinstance(plain[0], nn.Conv2d)
    assert torch.equal(plain(x), merged)


def test_unmerged_inference_folds_exactly_like_merge():
    """Without gradients an unmerged convolution runs op(x, W + s ΔW): bit-identical to merged."""
    model = _stack()
    inject_lora(model, ["0", "2", "4"], r=2, alpha=4)
    for layer in lora_layers(model).values():
        _randomise(layer)
    x = torch.randn(2, 2, 8, 8)
    with torch.no_grad():
        unmerged = model(x)
        merge_lora(model)
        assert torch.equal(model(x), unmerged)


def test_unload_without_merge_gives_back_the_base_model():
    model = _stack()
    x = torch.randn(2, 2, 8, 8)
    expected = model(x)
    inject_lora(model, ["0", "6"], r=2)
    for layer in lora_layers(model).values():
        _randomise(layer)
    merge_lora(model)
    plain = unload_lora(model, merge=False)
    assert torch.equal(plain(x), expected)


# --------------------------------------------------------------------------------------------
# gradients, dropout, parameter counts, state dicts


@pytest.mark.parametrize("path", ["auto", *PATHS])
def test_only_adapter_parameters_receive_gradients(path):
    model = _stack()
    inject_lora(model, ["0", "2", "4", "6"], r=2)
    for layer in lora_layers(model).values():
        _randomise(layer)
        layer.path = path
    model(torch.randn(2, 2, 8, 8)).square().mean().backward()
    for name, p in model.named_parameters():
        if name.endswith(("lora_A", "lora_B")):
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name


def test_folded_and_factored_paths_give_the_same_gradients():
    model = _stack(torch.float64)
    inject_lora(model, ["0", "2", "4", "6"], r=2)
    for layer in lora_layers(model).values():
        _randomise(layer)
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    grads = {}
    for path in PATHS:
        for layer in lora_layers(model).values():
            layer.path = path
        params = [p for p in model.parameters() if p.requires_grad]
        grads[path] = torch.autograd.grad(model(x).square().sum(), [x, *params])
    for a, b in zip(*grads.values()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_dropout_acts_on_the_adapter_input_in_training_only():
    torch.manual_seed(0)
    model = Holder(nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular"))
    inject_lora(model, "layer", r=2, dropout=0.5)
    _randomise(model.layer)
    x = torch.randn(2, 3, 6, 6)
    base_out = model.layer.base(x)
    train_a, train_b = model(x), model(x)
    assert not torch.allclose(train_a, train_b)  # a fresh mask each call
    with torch.no_grad():
        model.layer.lora_B.zero_()
    assert torch.equal(model(x), base_out)  # dropout never touches the base path
    _randomise(model.layer)
    model.eval()
    torch.testing.assert_close(model(x), _reference_layer(model.layer)(x), rtol=1e-5, atol=1e-5)
    model.train()
    model.layer.path = "folded"
    with pytest.raises(ValueError, match="dropout"):
        model(x)


def test_parameter_counts_match_peft(capsys):
    model = _stack()
    targets = ["0", "2", "6"]  # peft does not adapt ConvTranspose2d
    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=3, lora_alpha=3, target_modules=targets))
    inject_lora(model, targets, r=3)
    trainable, total = count_parameters(model)
    assert (trainable, total) == peft_model.get_nb_trainable_parameters()
    assert trainable == sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    line = print_trainable_parameters(model)
    assert capsys.readouterr().out.strip() == line
    assert re.fullmatch(r"trainable params: [\d,]+ \|\| all params: [\d,]+ \|\| trainable%: [\d.]+", line)
    assert f"{trainable:,d}" in line and f"{total:,d}" in line


def test_freeze_base_false_leaves_the_base_trainable():
    model = _stack()
    inject_lora(model, "0", r=2, freeze_base=False)
    assert all(p.requires_grad for p in model.parameters())


def test_lora_state_dict_holds_only_the_factors_and_loads_back():
    model = _stack()
    inject_lora(model, ["0", "6"], r=2)
    for layer in lora_layers(model).values():
        _randomise(layer)
    sd = lora_state_dict(model)
    assert sorted(sd) == ["0.lora_A", "0.lora_B", "6.lora_A", "6.lora_B"]
    fresh = _stack()
    inject_lora(fresh, ["0", "6"], r=2)
    missing, unexpected = fresh.load_state_dict(sd, strict=False)
    assert not unexpected and all("lora" not in k for k in missing)
    x = torch.randn(2, 2, 8, 8)
    assert torch.equal(fresh(x), model(x))


# --------------------------------------------------------------------------------------------
# matching by name


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.ModuleList([nn.Conv2d(2, 2, 3, padding=1) for _ in range(3)])
        self.head = nn.Linear(4, 4)
        self.act = nn.GELU()

    def forward(self, x):
        for conv in self.encoder:
            x = self.act(conv(x))
        return self.head(x)


def test_glob_and_regex_select_the_same_modules():
    a, b = Net(), Net()
    got = inject_lora(a, ["encoder.*", "head"], r=1)
    assert got == ["encoder.0", "encoder.1", "encoder.2", "head"]
    assert inject_lora(b, r"encoder\.[02]|head", r=1, regex=True) == ["encoder.0", "encoder.2", "head"]
    assert isinstance(b.encoder[0], LoRAConv) and isinstance(b.encoder[1], nn.Conv2d)
    assert isinstance(a.head, LoRALinear) and isinstance(a.encoder[1], LoRAConv)
    assert a(torch.randn(1, 2, 4, 4)).shape == (1, 2, 4, 4)


# --------------------------------------------------------------------------------------------
# errors


def test_pattern_that_matches_nothing_is_an_error():
    with pytest.raises(ValueError, match=r"'decoder\.\*'.*matches no module.*encoder\.0"):
        inject_lora(Net(), ["encoder.0", "decoder.*"], r=2)


def test_bad_rank_alpha_dropout_are_errors():
    with pytest.raises(ValueError, match="r=0"):
        inject_lora(Net(), "head", r=0)
    with pytest.raises(ValueError, match="r=-2"):
        inject_lora(Net(), "head", r=-2)
    with pytest.raises(TypeError, match="r must be an int"):
        inject_lora(Net(), "head", r=2.0)
    with pytest.raises(ValueError, match="alpha"):
        inject_lora(Net(), "head", r=2, alpha=0)
    with pytest.raises(ValueError, match="dropout"):
        inject_lora(Net(), "head", r=2, dropout=1.0)
    with pytest.raises(ValueError, match="targets"):
        inject_lora(Net(), [], r=2)
    with pytest.raises(ValueError, match="regular expression"):
        inject_lora(Net(), "encoder.(", r=2, regex=True)


def test_unsupported_modules_are_errors_and_nothing_is_changed():
    net = Net()
    with pytest.raises(TypeError, match=r"'act' is a GELU; LoRA supports Linear, Conv1d"):
        inject_lora(net, ["head", "act"], r=2)
    with pytest.raises(TypeError, match="'encoder' is a ModuleList"):
        inject_lora(net, "encoder*", r=2)
    assert not lora_layers(net) and all(p.requires_grad for p in net.parameters())

    class Standardised(nn.Conv2d):
        def forward(self, x):
            return super().forward(x) * 2

    with pytest.raises(TypeError, match="its own forward"):
        inject_lora(Holder(Standardised(2, 2, 3)), "layer", r=1)


def test_injecting_twice_and_merging_nothing_are_errors():
    net = Net()
    inject_lora(net, "head", r=2)
    with pytest.raises(ValueError, match="already carries LoRA"):
        inject_lora(net, "head", r=2)
    with pytest.raises(ValueError, match="no LoRA layers"):
        merge_lora(Net())


@pytest.mark.parametrize("path", PATHS)
def test_unbatched_and_vector_inputs_work_like_the_base(path):
    torch.manual_seed(0)
    for layer, x in [
        (nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular"), torch.randn(2, 5, 5)),
        (nn.ConvTranspose1d(2, 3, 3, stride=2), torch.randn(2, 5)),
        (nn.Linear(4, 3), torch.randn(4)),
    ]:
        model = Holder(layer)
        inject_lora(model, "layer", r=2)
        _randomise(model.layer)
        model.layer.path = path
        torch.testing.assert_close(model(x), _reference_layer(model.layer)(x), rtol=1e-5, atol=1e-5)


def test_wrong_input_shapes_are_errors():
    conv, lin = Holder(nn.Conv2d(2, 3, 3)), Holder(nn.Linear(4, 3))
    inject_lora(conv, "layer", r=1)
    inject_lora(lin, "layer", r=1)
    with pytest.raises(ValueError, match=r"input of shape \(1, 3, 5, 5\), expected \(batch, 2, \*space\)"):
        conv(torch.randn(1, 3, 5, 5))
    with pytest.raises(ValueError, match="with 2 spatial axes"):
        conv(torch.randn(1, 2, 5, 5, 5))
    with pytest.raises(ValueError, match=r"expected \(\.\.\., 4\)"):
        lin(torch.randn(2, 5))


def test_wrapper_must_fit_the_layer():
    with pytest.raises(TypeError, match="use LoRALinear"):
        LoRAConv(nn.Linear(3, 3), r=1)
    assert isinstance(LoRAConvTranspose(nn.ConvTranspose3d(2, 2, 2), r=1), LoRALayer)


def test_kept_original_weight_travels_with_the_module():
    model = _stack()
    inject_lora(model, ["0", "6"], r=2)
    for layer in lora_layers(model).values():
        _randomise(layer)
    before = {k: v.double() for k, v in model.state_dict().items()}
    merge_lora(model)
    model.double()  # the kept original is a non-persistent buffer: it follows .to(), is not saved
    assert model[0]._original.dtype == torch.float64 and "0._original" not in model.state_dict()
    unmerge_lora(model)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


# --------------------------------------------------------------------------------------------
# layers with their own forward that name their kernel (the tokeniser's layers)


def _tokeniser_layers():
    from physfm.nn.compression import CausalTimeConv, FlexPatch, FlexUnpatch, SpatialConv

    torch.manual_seed(0)
    return {
        "spatial": (SpatialConv(3, 5, 3, spatial_dims=2), (torch.randn(2, 3, 4, 8, 8),)),
        "time": (CausalTimeConv(3, 4, 3), (torch.randn(2, 3, 5, 6, 6),)),
        "patch": (FlexPatch(3, 6, patch=4, time_patch=2, spatial_dims=2), (torch.randn(2, 3, 5, 8, 8), 2, 2)),
        "unpatch": (FlexUnpatch(6, 3, patch=4, time_patch=2, spatial_dims=2), (torch.randn(2, 6, 3, 2, 2), 4, 2)),
    }


@pytest.mark.parametrize("case", ["spatial", "time", "patch", "unpatch"])
def test_lora_kernel_runs_the_layer_with_the_adapted_kernel(case):
    from physfm.nn.lora import LoRAKernel

    layer, args = _tokeniser_layers()[case]
    model = Holder(copy.deepcopy(layer))
    inject_lora(model, "layer", r=2, alpha=3)
    lora = model.layer
    assert isinstance(lora, LoRAKernel) and lora.weight_name == type(layer).lora_weight
    assert torch.equal(model(*args), layer(*args))  # B = 0: the layer itself, bit for bit
    _randomise(lora)
    ref = copy.deepcopy(layer)
    with torch.no_grad():
        w = getattr(ref, lora.weight_name)
        w.add_(lora.scaling * torch.einsum("or,r...->o...", lora.lora_B, lora.lora_A))
    torch.testing.assert_close(model(*args), ref(*args), rtol=1e-5, atol=1e-5)
    out = model(*args)
    merge_lora(model)
    assert torch.equal(model(*args), out)
    unmerge_lora(model)
    assert torch.equal(getattr(lora.base, lora.weight_name), getattr(layer, lora.weight_name))


def test_lora_kernel_trains_only_the_factors_and_reads_the_layer_through():
    from physfm.nn.compression import FlexPatch

    model = Holder(FlexPatch(2, 4, patch=4, time_patch=1, spatial_dims=2))
    inject_lora(model, "layer", r=2)
    _randomise(model.layer)
    model(torch.randn(1, 2, 3, 8, 8), 4, 1).square().sum().backward()
    for name, p in model.named_parameters():
        if name.endswith(("lora_A", "lora_B")):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name
    assert model.layer.strides == (1, 2, 4)  # the layer's own attributes, through the wrapper
    with pytest.raises(ValueError, match="spatial stride 3"):
        model.layer.check_stride(3, 1)


def test_lora_kernel_refuses_dropout_and_the_factored_path():
    from physfm.nn.compression import SpatialConv

    with pytest.raises(ValueError, match="dropout must be 0"):
        inject_lora(Holder(SpatialConv(2, 2)), "layer", r=1, dropout=0.1)
    model = Holder(SpatialConv(2, 2))
    inject_lora(model, "layer", r=1)
    model.layer.path = "factored"
    with pytest.raises(ValueError, match="no factored form"):
        model(torch.randn(1, 2, 2, 4, 4))


def test_adaptable_names_every_kernel_of_the_tokeniser():
    from physfm.nn.lora import adaptable
    from physfm.nn.tokeniser import Tokeniser

    tok = Tokeniser(spatial_dims=2, channels=(4, 8), latent=2, blocks=1, patch=2, time_patch=1, stride=2)
    names = adaptable(tok)
    assert names == [
        "stem",
        "down",
        "enc_blocks.0.space",
        "enc_blocks.0.time",
        "enc_out.2",
        "dec_in",
        "dec_blocks.0.space",
        "dec_blocks.0.time",
        "up",
        "dec_out.2",
    ]
    inject_lora(tok, names, r=1)
    assert adaptable(tok) == []  # nothing left to adapt, and the wrapped layers are not listed again
    assert adaptable(Net()) == ["encoder.0", "encoder.1", "encoder.2", "head"]
