"""physfm.nn.scan: the fast scan against the definition and against mamba.py, causality, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from mambapy.mamba import Mamba as MambapyMamba
from mambapy.mamba import MambaBlock, MambaConfig

from physfm.nn.scan import Mamba, MambaStack, clear_workspace, selective_scan, selective_scan_ref

NAMES = ("x", "delta", "A", "B", "C", "D", "z")


def _inputs(b=2, d=3, L=9, n=4, dtype=torch.float64, seed=0, delta_scale=1.0):
    """x, delta, A, B, C, D, z in physfm's (channels-first) layout, as leaves requiring grad."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    x = r(b, d, L)
    delta = delta_scale * F.softplus(r(b, d, L) - 1.0)
    A = -torch.exp(r(d, n))
    return [t.requires_grad_() for t in (x, delta, A, r(b, n, L), r(b, n, L), r(d), r(b, d, L))]


def _value_and_grads(fn, args, seed=1):
    y = fn(*args)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=y.dtype)
    return y, torch.autograd.grad(y, args, g)


def _close(got, want, tol, what):
    torch.testing.assert_close(got, want, rtol=tol, atol=tol, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("chunk", [1, 2, 4, 8])
@pytest.mark.parametrize("L", [1, 2, 7, 13, 31])
def test_fast_equals_reference_float64(chunk, L):
    # 7, 13, 31: not a multiple of any chunk size, so the chunked scan pads
    args = _inputs(L=L)
    y_ref, g_ref = _value_and_grads(selective_scan_ref, args)
    y, g = _value_and_grads(lambda *a: selective_scan(*a, chunk=chunk), args)
    _close(y, y_ref, 1e-10, "y")
    for name, got, want in zip(NAMES, g, g_ref):
        _close(got, want, 1e-10, f"d{name}")


@pytest.mark.parametrize("chunk", [1, 16])
def test_fast_equals_reference_float32(chunk):
    args = _inputs(b=2, d=8, L=100, n=16, dtype=torch.float32)
    y_ref, g_ref = _value_and_grads(selective_scan_ref, args)
    y, g = _value_and_grads(lambda *a: selective_scan(*a, chunk=chunk), args)
    _close(y, y_ref, 1e-5, "y")
    for name, got, want in zip(NAMES, g, g_ref):
        scale = want.abs().max().clamp(min=1.0)  # gradients summed over time are O(10)
        _close(got / scale, want / scale, 1e-5, f"d{name}")


@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_gradcheck(chunk):
    args = [a.detach().requires_grad_() for a in _inputs(b=2, d=2, L=5, n=3)]
    assert torch.autograd.gradcheck(lambda *a: selective_scan(*a, chunk=chunk), args)


@pytest.mark.parametrize("wanted", [("C",), ("A",), ("x",), ("delta", "B"), ("D", "z")])
def test_gradients_of_a_subset_of_inputs(wanted):
    # the backward pass skips what is not asked for; what is asked for must not change
    full = _inputs(L=11)
    args = [a.detach().requires_grad_(name in wanted) for name, a in zip(NAMES, full)]
    picked = [a for a in args if a.requires_grad]
    y = selective_scan(*args, chunk=1)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, picked, g)
    want = torch.autograd.grad(selective_scan_ref(*args), picked, g)
    for a, b in zip(got, want):
        _close(a, b, 1e-10, "gradient")


def test_without_skip_and_gate():
    x, delta, A, B, C, _, _ = _inputs(L=10)
    y_ref, g_ref = _value_and_grads(selective_scan_ref, [x, delta, A, B, C])
    y, g = _value_and_grads(selective_scan, [x, delta, A, B, C])
    _close(y, y_ref, 1e-10, "y")
    for a, b in zip(g, g_ref):
        _close(a, b, 1e-10, "gradient")


def _mambapy_scan(x, delta, A, B, C, D):
    """mamba.py's selective scan (MambaBlock.selective_scan uses no attribute of self)."""
    tl = lambda t: rearrange(t, "b c l -> b l c")  # noqa: E731
    y = MambaBlock.selective_scan(None, tl(x), tl(delta), A, tl(B), tl(C), D)
    return rearrange(y, "b l d -> b d l")


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("L", [16, 23])
def test_equals_mambapy(dtype, tol, L):
    # mamba.py computes y = scan + D x (no gate); its pscan pads to a power of two
    args = _inputs(b=2, d=6, L=L, n=5, dtype=dtype)[:6]
    y_ref, g_ref = _value_and_grads(_mambapy_scan, args)
    y, g = _value_and_grads(selective_scan, args)
    _close(y, y_ref, tol, "y")
    for name, got, want in zip(NAMES, g, g_ref):
        scale = want.abs().max().clamp(min=1.0)
        _close(got / scale, want / scale, tol, f"d{name}")


def test_mamba_block_equals_mambapy_with_the_same_weights():
    torch.manual_seed(0)
    theirs = MambaBlock(MambaConfig(d_model=8, n_layers=1, d_state=4, expand_factor=2, d_conv=3)).double()
    with torch.no_grad():  # large steps and no skip, so that the scan dominates the output
        theirs.dt_proj.bias.uniform_(0.0, 1.0)
        theirs.D.zero_()
    ours = Mamba(8, d_state=4, d_conv=3, expand=2).double()
    ours.load_state_dict(theirs.state_dict())
    u = torch.randn(2, 13, 8, dtype=torch.float64)
    y_theirs, y_ours = theirs(u), ours(u)
    assert y_theirs.abs().max() > 1e-3
    # MambaBlock.ssm casts A and D to float32 (`self.A_log.float()`), even in a float64 model:
    # the two agree to float32 precision, not float64's
    torch.testing.assert_close(y_ours, y_theirs, rtol=1e-5, atol=1e-9)
    y_theirs.square().sum().backward()
    y_ours.square().sum().backward()
    theirs_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(
            p.grad, theirs_params[name].grad, rtol=1e-5, atol=1e-9, msg=lambda m, name=name: f"gradient of {name}: {m}"
        )


def test_mamba_stack_equals_mambapy_with_the_same_weights():
    torch.manual_seed(1)
    theirs = MambapyMamba(MambaConfig(d_model=8, n_layers=2, d_state=4, d_conv=4)).double()
    with torch.no_grad():
        for layer in theirs.layers:
            layer.mixer.dt_proj.bias.uniform_(0.0, 1.0)
            layer.norm.weight.uniform_(0.5, 1.5)
    ours = MambaStack(8, 2, d_state=4, d_conv=4).double()
    ours.load_state_dict(theirs.state_dict())
    u = torch.randn(3, 10, 8, dtype=torch.float64)
    torch.testing.assert_close(ours(u), theirs(u), rtol=1e-5, atol=1e-9)  # float32 A inside mamba.py


def test_lti_block_has_input_independent_parameters():
    lti = Mamba(8, d_state=4, selective=False, generator=torch.Generator().manual_seed(0))
    sel = Mamba(8, d_state=4, generator=torch.Generator().manual_seed(0))
    assert "x_proj.weight" not in lti.state_dict() and "lti" in lti.state_dict()
    x1, x2 = torch.randn(7, 2, lti.d_inner), torch.randn(7, 2, lti.d_inner)
    for a, b in zip(lti.ssm_parameters(x1), lti.ssm_parameters(x2)):
        assert torch.equal(a, b) and torch.equal(a, a[:1, :1].expand_as(a))
    assert not torch.equal(sel.ssm_parameters(x1)[1], sel.ssm_parameters(x2)[1])
    u = torch.randn(2, 9, 8)
    assert lti(u).shape == (2, 9, 8)
    lti(u).sum().backward()
    assert lti.lti.grad is not None and lti.lti.grad.abs().sum() > 0


@pytest.mark.parametrize("chunk", [1, 4])
def test_scan_is_causal(chunk):
    args = [a.detach() for a in _inputs(L=12)]
    y = selective_scan(*args, chunk=chunk)
    for t in range(11):
        changed = [a.clone() for a in args]
        for i in (0, 1, 3, 4, 6):  # x, delta, B, C, z carry time
            changed[i][..., t + 1 :] += torch.rand_like(changed[i][..., t + 1 :])
        y2 = selective_scan(*changed, chunk=chunk)
        torch.testing.assert_close(y2[..., : t + 1], y[..., : t + 1], rtol=0, atol=0)
        assert not torch.equal(y2[..., t + 1 :], y[..., t + 1 :])


def test_mamba_block_is_causal():
    block = Mamba(6, d_state=4, generator=torch.Generator().manual_seed(0)).double()
    u = torch.randn(2, 10, 6, dtype=torch.float64)
    with torch.no_grad():
        y = block(u)
        for t in range(9):
            v = u.clone()
            v[:, t + 1 :] += 1.0
            y2 = block(v)
            torch.testing.assert_close(y2[:, : t + 1], y[:, : t + 1], rtol=0, atol=1e-14)
            assert (y2[:, t + 1] - y[:, t + 1]).abs().max() > 1e-6


def test_lti_scan_is_a_convolution():
    # constant Δ, B, C: y = K * x with K_k = Σ_n C_n exp(kΔA_n) ΔB_n (the S4 view)
    b, d, L, n = 1, 2, 16, 3
    x, _, A, *_ = [a.detach() for a in _inputs(b=b, d=d, L=L, n=n)]
    delta = torch.full((b, d, L), 0.3, dtype=torch.float64)
    Bv, Cv = torch.randn(n, dtype=torch.float64), torch.randn(n, dtype=torch.float64)
    B, C = Bv[None, :, None].expand(b, n, L), Cv[None, :, None].expand(b, n, L)
    y = selective_scan(x, delta, A, B, C)
    k = torch.arange(L, dtype=torch.float64)
    kernel = torch.einsum("n,dkn->dk", Cv, torch.exp(0.3 * k[None, :, None] * A[:, None, :]) * 0.3 * Bv)
    conv = F.conv1d(F.pad(x, (L - 1, 0)), kernel.flip(-1)[:, None, :], groups=d)
    _close(y, conv, 1e-12, "LTI scan against its convolution")


@pytest.mark.parametrize("chunk", [1, 8])
def test_large_steps_stay_finite(chunk):
    # Δ A down to about -1000: every exponent the scan takes must be <= 0
    args = _inputs(L=40, delta_scale=300.0, dtype=torch.float32)
    y_ref, g_ref = _value_and_grads(selective_scan_ref, args)
    y, g = _value_and_grads(lambda *a: selective_scan(*a, chunk=chunk), args)
    assert torch.isfinite(y).all() and all(torch.isfinite(t).all() for t in g)
    _close(y, y_ref, 1e-4, "y")


def test_results_do_not_alias_the_workspace():
    big = _inputs(b=3, d=5, L=40)
    small = _inputs(b=2, d=3, L=9, seed=1)
    y_small, g_small = _value_and_grads(selective_scan, small)
    kept = [t.clone() for t in (y_small, *g_small)]
    _value_and_grads(selective_scan, big)  # reuses (and grows) the buffers
    _value_and_grads(selective_scan, [a.float().detach().requires_grad_() for a in small])
    for before, after in zip(kept, (y_small, *g_small)):
        assert torch.equal(before, after)
    clear_workspace()
    torch.testing.assert_close(selective_scan(*small), y_small)


def test_mamba_block_init_and_generator():
    a = Mamba(16, d_state=8, dt_min=0.01, dt_max=0.2, generator=torch.Generator().manual_seed(3))
    b = Mamba(16, d_state=8, dt_min=0.01, dt_max=0.2, generator=torch.Generator().manual_seed(3))
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    assert a.d_inner == 32 and a.dt_rank == 1
    dt = F.softplus(a.dt_proj.bias)
    assert dt.min() >= 0.01 * (1 - 1e-5) and dt.max() <= 0.2 * (1 + 1e-5)
    torch.testing.assert_close(-torch.exp(a.A_log), -torch.arange(1.0, 9.0).expand(32, 8))
    u = torch.randn(3, 7, 16)
    assert a(u).shape == (3, 7, 16)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_fast_equals_reference_on_cuda():
    args = [a.detach().cuda().requires_grad_() for a in _inputs(L=33)]
    y_ref, g_ref = _value_and_grads(selective_scan_ref, args)
    y, g = _value_and_grads(selective_scan, args)
    _close(y, y_ref, 1e-10, "y")
    for a, b in zip(g, g_ref):
        _close(a, b, 1e-10, "gradient")


# ---- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [selective_scan, selective_scan_ref])
@pytest.mark.parametrize(
    "name, shape",
    [
        ("delta", (2, 3, 8)),
        ("A", (4, 4)),
        ("B", (2, 4, 8)),
        ("C", (2, 5, 9)),
        ("D", (4,)),
        ("z", (2, 3, 10)),
    ],
)
def test_shape_mismatch_names_the_argument(fn, name, shape):
    args = dict(zip(NAMES, [a.detach() for a in _inputs()]))
    args[name] = torch.zeros(shape, dtype=torch.float64)
    with pytest.raises(ValueError, match=rf"{name} must be .*got shape \({', '.join(map(str, shape))},?\)"):
        fn(**args)


def test_other_errors():
    x, delta, A, B, C, D, z = [a.detach() for a in _inputs()]
    with pytest.raises(ValueError, match="x must be"):
        selective_scan(x[0], delta, A, B, C)
    with pytest.raises(TypeError, match="B has dtype torch.float32"):
        selective_scan(x, delta, A, B.float(), C)
    with pytest.raises(TypeError, match="C must be a torch.Tensor"):
        selective_scan(x, delta, A, B, C.numpy())
    with pytest.raises(ValueError, match="chunk must be a positive int"):
        selective_scan(x, delta, A, B, C, chunk=0)
    block = Mamba(8, d_state=4)
    with pytest.raises(ValueError, match=r"u must be \(batch, length, d_model=8\), got \(2, 5, 7\)"):
        block(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match="d_state must be a positive int"):
        Mamba(8, d_state=0)
    with pytest.raises(ValueError, match="dt_rank"):
        Mamba(8, dt_rank="big")
    with pytest.raises(ValueError, match="n_layers must be a positive int"):
        MambaStack(8, 0)
