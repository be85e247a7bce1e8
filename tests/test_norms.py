"""The norm registry: every normaliser through one constructor signature, against its formula."""

from __future__ import annotations

import pytest
import torch

from dtn_bench.errors import DTNBenchError
from dtn_bench.norms import NORMS, build_norm, norm_layer

EXPECTED = {"layernorm", "dtn", "dtn_var", "batchnorm", "instancenorm", "groupnorm", "scalenorm", "rmsnorm"}


def test_registry_has_the_papers_normalisers():
    assert set(NORMS.names()) == EXPECTED
    for e in NORMS:
        assert e.meta["formula"], e.name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_timm_compatible_signature_and_shapes(name):
    layer = norm_layer(name, num_heads=4, grid_size=(3, 4))
    mod = layer(32, device="cpu", dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in mod.parameters())
    x = torch.randn(5, 12, 32, dtype=torch.float64)
    y = mod(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.sum().backward()  # differentiable
    mod.eval()
    assert mod(x, mask=None).shape == x.shape


def _ref(name, x, mask=None):
    """The textbook formula of each normaliser (unit affine), per the registry's one-line formulas."""
    eps = 1e-5
    B, T, C = x.shape
    if name == "layernorm":
        return (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + eps)
    if name == "rmsnorm":
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-6)
    if name == "scalenorm":
        return x * C**0.5 / x.norm(dim=-1, keepdim=True)
    m = torch.ones(B, T, dtype=torch.bool) if mask is None else mask
    out = torch.zeros_like(x)
    if name == "batchnorm":
        real = x[m]
        return torch.where(m.unsqueeze(-1), (x - real.mean(0)) / torch.sqrt(real.var(0, unbiased=False) + eps), out)
    for b in range(B):
        xb = x[b][m[b]]
        if name == "instancenorm":
            out[b] = (x[b] - xb.mean(0)) / torch.sqrt(xb.var(0) + eps)
        elif name == "groupnorm":
            g = xb.view(-1, 4, C // 4)
            mean = g.mean(dim=(0, 2))
            var = g.var(dim=(0, 2), unbiased=False)
            out[b] = ((x[b].view(T, 4, C // 4) - mean.view(1, 4, 1)) / torch.sqrt(var.view(1, 4, 1) + eps)).view(T, C)
    return torch.where(m.unsqueeze(-1), out, torch.zeros(()))


@pytest.mark.parametrize("name", ["layernorm", "rmsnorm", "scalenorm", "batchnorm", "instancenorm", "groupnorm"])
@pytest.mark.parametrize("masked", [False, True])
def test_formula(name, masked):
    torch.manual_seed(0)
    x = torch.randn(3, 10, 16, dtype=torch.float64) * 2 + 1
    mask = None
    if masked:
        mask = torch.ones(3, 10, dtype=torch.bool)
        mask[1, 6:] = False
        mask[2, 3:] = False
    mod = build_norm(name, 16, num_heads=4, dtype=torch.float64).train()
    y = mod(x, mask)
    ref = _ref(name, x, mask)
    real = torch.ones(3, 10, 1, dtype=torch.bool) if mask is None else mask.unsqueeze(-1)
    assert torch.allclose(torch.where(real, y, 0.0), torch.where(real, ref, 0.0), atol=1e-8)


def test_padding_does_not_change_real_tokens_for_cross_token_norms():
    for name in ("batchnorm", "instancenorm", "groupnorm", "dtn"):
        mod = build_norm(name, 16, num_heads=4, grid_size=None).train()
        x = torch.randn(2, 12, 16)
        mask = torch.ones(2, 12, dtype=torch.bool)
        mask[:, 8:] = False
        x2 = x.clone()
        x2[:, 8:] = 1e3
        assert torch.allclose(mod(x, mask)[:, :8], mod(x2, mask)[:, :8], atol=1e-5), name


def test_unknown_norm_suggests_close_names():
    with pytest.raises(DTNBenchError, match="did you mean: dtn"):
        build_norm("dnt", 16)
    with pytest.raises(DTNBenchError, match="did you mean: layernorm"):
        norm_layer("layrnorm")


def test_groupnorm_needs_divisible_heads():
    with pytest.raises(DTNBenchError, match="not divisible"):
        build_norm("groupnorm", 30, num_heads=4)
