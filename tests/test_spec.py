"""physfm.data.spec: one specification of a system, and its coefficients on a common scale."""

from __future__ import annotations

import pytest
import torch

from physfm.data import pde
from physfm.data.spec import SystemSpec, specs


def test_a_spec_from_every_form_of_parameters():
    a = SystemSpec("navier_stokes", ranges={"nu": [0.005, 0.02]}, interval=0.5)
    assert a.ranges == {"nu": (0.005, 0.02)} and a.options == {"interval": 0.5}
    assert SystemSpec.of({"name": "navier_stokes", "ranges": {"nu": (0.005, 0.02)}, "interval": 0.5}) == a
    assert SystemSpec.of(a) is a and SystemSpec.of("burgers") == SystemSpec("burgers")
    both = specs({"navier_stokes": {"ranges": {"nu": (0.005, 0.02)}, "interval": 0.5}, "burgers": None})
    assert list(both) == ["navier_stokes", "burgers"] and both["navier_stokes"] == a
    assert list(specs(["diffusion", a])) == ["diffusion", "navier_stokes"]
    assert a.system().ranges["nu"] == (0.005, 0.02)
    assert SystemSpec.of(a.as_dict()) == a  # plain data round trip


def test_generate_applies_the_spec():
    tr = SystemSpec("diffusion", ranges={"nu": 0.01}, interval=0.25).generate(
        3, (16,), 4, generator=torch.Generator().manual_seed(0)
    )
    assert tr.data.shape == (3, 1, 4, 16) and tr.interval == pytest.approx(0.25)
    torch.testing.assert_close(tr.coefficients["nu"], torch.full((3,), 0.01, dtype=torch.float64))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: SystemSpec("plasma"), ValueError, "unknown system 'plasma'"),
        (lambda: SystemSpec("burgers", ranges={"mu": (1, 2)}), ValueError, "unknown coefficient 'mu'"),
        (lambda: SystemSpec("burgers", interval=0), ValueError, "interval must be > 0"),
        (lambda: SystemSpec("burgers", warmup=-1.0), ValueError, "warmup must be >= 0"),
        (lambda: SystemSpec("burgers", length=True), TypeError, "length must be a number"),
        (lambda: SystemSpec.of({"name": "burgers", "viscosity": 1}), ValueError, "unknown options"),
        (lambda: SystemSpec.of(3), TypeError, "want a system name"),
        (lambda: specs([]), ValueError, "at least one system"),
        (lambda: specs(["burgers", "burgers"]), ValueError, "name a system twice"),
    ],
)
def test_bad_specs_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_coefficients_are_scaled_to_minus_one_one():
    for name in pde.SYSTEMS:
        spec = SystemSpec(name)
        d = 2 if 2 in spec.system().dims else max(spec.system().dims)
        c = spec.system().sample(64, torch.Generator().manual_seed(0))
        s = spec.scaled(c, d)
        assert s.shape == (64, len(spec.coefficient_names(d)))
        assert s.shape[1] <= 3 and (s.abs() <= 1 + 1e-6).all()
    assert SystemSpec("advection_diffusion").coefficient_names(2) == ["nu", "c0", "c1"]
    assert SystemSpec("gray_scott").coefficient_names(2) == ["F", "kappa"]
    # the ends of a range map to -1 and 1, on a log scale for log-uniform coefficients
    lo, hi = SystemSpec("diffusion").system().ranges["nu"]
    s = SystemSpec("diffusion").scaled({"nu": torch.tensor([lo, (lo * hi) ** 0.5, hi])}, 2)
    torch.testing.assert_close(s[:, 0], torch.tensor([-1.0, 0.0, 1.0]))
