"""The norm registry: every normaliser through one constructor signature, against its formula."""

from __future__ import annotations

import math

import pytest
import torch
from cli_helpers import assert_one_line_message

from dtn_bench.errors import DTNBenchError
from dtn_bench.norms import NORMS, Derf, DyT, Identity, PowerNorm, build_norm, norm_layer
from dtn_bench.norms.powernorm import PowerFunction, group_scaling

F64 = torch.float64

EXPECTED = {"layernorm", "dtn", "dtn_var", "batchnorm", "instancenorm", "groupnorm", "scalenorm", "rmsnorm", "dyt",
            "derf", "powernorm", "identity"}


def test_registry_has_the_papers_normalisers():
    assert set(NORMS.names()) == EXPECTED
    for e in NORMS:
        assert e.meta["formula"], e.name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_timm_compatible_signature_and_shapes(name):
    layer = norm_layer(name, num_heads=4, grid_size=(3, 4))
    mod = layer(32, device="cpu", dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in mod.parameters())
    x = torch.randn(5, 12, 32, dtype=torch.float64, requires_grad=True)
    y = mod(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.sum().backward()  # differentiable
    assert torch.isfinite(x.grad).all()
    mod.eval()
    assert mod(x, mask=None).shape == x.shape


_POINTWISE_REF = {  # per token or per element: no mask effect
    "layernorm": lambda x: (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5),
    "rmsnorm": lambda x: x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-6),
    "scalenorm": lambda x: x * x.shape[-1] ** 0.5 / x.norm(dim=-1, keepdim=True),
    "dyt": lambda x: torch.tanh(0.5 * x),
    "derf": lambda x: x.detach().clone().apply_(lambda v: math.erf(0.5 * v)),  # math.erf: not torch's kernel
    "identity": lambda x: x,
}


def _ref(name, x, mask=None):
    """The textbook formula of each normaliser (unit affine), per the registry's one-line formulas."""
    eps = 1e-5
    B, T, C = x.shape
    if name in _POINTWISE_REF:
        return _POINTWISE_REF[name](x)
    m = torch.ones(B, T, dtype=torch.bool) if mask is None else mask
    if name == "powernorm":  # first training step (warm-up): the batch's quadratic mean over real tokens
        g = x.view(B, T, 4, C // 4)
        xs = (g / torch.sqrt((g * g).mean(-1, keepdim=True) + eps)).view(B, T, C)
        return xs / torch.sqrt((xs[m] ** 2).mean(0) + eps)
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


@pytest.mark.parametrize("name", ["layernorm", "rmsnorm", "scalenorm", "batchnorm", "instancenorm", "groupnorm", "dyt",
                                  "derf", "identity", "powernorm"])
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
    for name in ("batchnorm", "instancenorm", "groupnorm", "dtn", "powernorm"):
        mod = build_norm(name, 16, num_heads=4, grid_size=None).train()
        x = torch.randn(2, 12, 16)
        mask = torch.ones(2, 12, dtype=torch.bool)
        mask[:, 8:] = False
        x2 = x.clone()
        x2[:, 8:] = 1e3
        assert torch.allclose(mod(x, mask)[:, :8], mod(x2, mask)[:, :8], atol=1e-5), name


def test_unknown_norm_suggests_close_names():
    with pytest.raises(DTNBenchError, match=r"did you mean: (\w+, )*dtn\b"):  # dtn and dyt are equally close
        build_norm("dnt", 16)
    with pytest.raises(DTNBenchError, match="did you mean: layernorm"):
        norm_layer("layrnorm")


def test_groupnorm_needs_divisible_heads():
    with pytest.raises(DTNBenchError, match="not divisible"):
        build_norm("groupnorm", 30, num_heads=4)


# ---------------------------------------------------------------------------------------------------------------------
# DyT
def test_dyt_parameters_formula_and_configurable_alpha():
    mod = build_norm("dyt", 8, alpha_init=0.2, dtype=F64)
    assert isinstance(mod, DyT)
    assert mod.alpha.shape == (1,) and mod.alpha.item() == pytest.approx(0.2)
    assert torch.equal(mod.weight, torch.ones(8, dtype=F64)) and torch.equal(mod.bias, torch.zeros(8, dtype=F64))
    assert sum(p.numel() for p in mod.parameters()) == 2 * 8 + 1
    assert build_norm("dyt", 8).alpha.item() == 0.5  # the paper's value for ViTs
    torch.manual_seed(0)
    with torch.no_grad():
        mod.weight.normal_()
        mod.bias.normal_()
    x = torch.randn(2, 5, 8, dtype=F64) * 3
    ref = mod.weight * torch.tanh(0.2 * x) + mod.bias
    torch.testing.assert_close(mod(x), ref)
    torch.testing.assert_close(mod(x, torch.zeros(2, 5, dtype=torch.bool)), ref)  # no statistics: no mask effect
    mod(x).sum().backward()
    # d/d alpha of sum(w * tanh(alpha * x) + b) = sum(w * x * (1 - tanh(alpha * x)^2))
    expected = (mod.weight * x * (1 - torch.tanh(0.2 * x) ** 2)).sum().reshape(1)
    torch.testing.assert_close(mod.alpha.grad, expected.detach())


class AuthorsDynamicTanh(torch.nn.Module):
    """Transcription of the DyT authors' ``DynamicTanh`` (github jiachenzhu/DyT, ``dynamic_tanh.py``), channels last."""

    def __init__(self, normalized_shape, alpha_init_value=0.5):
        super().__init__()
        self.alpha = torch.nn.Parameter(torch.ones(1) * alpha_init_value)
        self.weight = torch.nn.Parameter(torch.ones(normalized_shape))
        self.bias = torch.nn.Parameter(torch.zeros(normalized_shape))

    def forward(self, x):
        return torch.tanh(self.alpha * x) * self.weight + self.bias


class AuthorsDynamicErf(torch.nn.Module):
    """Transcription of the Derf authors' ``Dynamic_erf`` (github zlab-princeton/Derf, ``ViT/dynamic_erf.py``),
    channels-last case: ``x = alpha * x + shift; x = erf(x); x * weight + bias``; parameters created in their order
    (alpha, weight, bias, shift), inits 0.5 and 0."""

    def __init__(self, normalized_shape, alpha_init_value=0.5, shift_init_value=0.0):
        super().__init__()
        self.alpha = torch.nn.Parameter(torch.ones(1) * alpha_init_value)
        self.weight = torch.nn.Parameter(torch.ones(normalized_shape))
        self.bias = torch.nn.Parameter(torch.zeros(normalized_shape))
        self.shift = torch.nn.Parameter(torch.ones(1) * shift_init_value)

    def forward(self, x):
        x = self.alpha * x + self.shift
        x = torch.erf(x)
        return x * self.weight + self.bias


@pytest.mark.parametrize(("name", "authors"), [("derf", AuthorsDynamicErf), ("dyt", AuthorsDynamicTanh)])
def test_pointwise_norms_match_the_authors_modules(name, authors):
    """Same state dict keys and inits as the authors' module; their state dict loads into ours and back, and on
    random input (and random parameters) both compute the same."""
    torch.manual_seed(7)
    ours, theirs = build_norm(name, 12), authors(12)
    assert dict(ours.named_parameters()).keys() == dict(theirs.named_parameters()).keys()
    for key, value in theirs.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[key], value)  # the same inits
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.randn_like(p))
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(3, 7, 12) * 4
    torch.testing.assert_close(ours(x), theirs(x))
    back = authors(12)
    back.load_state_dict(ours.state_dict())
    torch.testing.assert_close(back(x), theirs(x))


def test_derf_parameters_formula_and_gradients():
    mod = build_norm("derf", 6, alpha_init=0.3, shift_init=-0.2, dtype=F64)
    assert isinstance(mod, Derf)
    assert mod.alpha.shape == mod.shift.shape == (1,) and mod.weight.shape == mod.bias.shape == (6,)
    assert (mod.alpha.item(), mod.shift.item()) == (pytest.approx(0.3), pytest.approx(-0.2))
    assert sum(p.numel() for p in mod.parameters()) == 2 * 6 + 2
    torch.manual_seed(1)
    with torch.no_grad():
        mod.weight.normal_()
        mod.bias.normal_()
    x = torch.randn(2, 4, 6, dtype=F64) * 3
    w, b = mod.weight.detach(), mod.bias.detach()
    erf = x.clone().apply_(lambda v: math.erf(0.3 * v - 0.2))
    torch.testing.assert_close(mod(x), w * erf + b)
    torch.testing.assert_close(mod(x, torch.zeros(2, 4, dtype=torch.bool)), w * erf + b)  # no statistics
    mod(x).sum().backward()
    # d erf(u) / du = 2 / sqrt(pi) exp(-u^2), u = alpha x + s
    d = 2 / math.sqrt(math.pi) * torch.exp(-(0.3 * x - 0.2) ** 2) * w
    torch.testing.assert_close(mod.alpha.grad, (d * x).sum().reshape(1))
    torch.testing.assert_close(mod.shift.grad, d.sum().reshape(1))


def test_identity_is_the_control():
    mod = build_norm("identity", 8)
    assert isinstance(mod, Identity) and not list(mod.parameters()) and not mod.state_dict()
    x = torch.randn(2, 3, 8)
    assert mod(x) is x and mod(x, torch.ones(2, 3, dtype=torch.bool)) is x


@pytest.mark.parametrize("name", ["dyt", "derf"])
def test_alpha_init_per_slot(name):
    """The authors' LLaMA / GPT-2 recipes: one alpha for the attention-side norms, another for the FFN and final."""
    from dtn_bench.norms.dyt import LLAMA_ALPHA_INIT

    recipe = LLAMA_ALPHA_INIT["7b"]
    assert recipe == {"attn": 0.8, "ffn": 0.2, "final": 0.2}
    for slot, value in recipe.items():
        assert build_norm(name, 8, slot=slot, alpha_init=recipe).alpha.item() == pytest.approx(value)
    assert build_norm(name, 8, slot="ffn").alpha.item() == 0.5  # the default: the ViT value in every slot
    for kwargs, message in (({"slot": "ffn", "alpha_init": {"attn": 0.8}}, "no value for slot 'ffn'"),
                            ({"alpha_init": recipe}, "needs the layer's slot"),
                            ({"slot": "attn", "alpha_init": {"atn": 0.8}}, "unknown slot 'atn'"),
                            ({"slot": "middle"}, "unknown slot 'middle'")):
        with pytest.raises(DTNBenchError) as excinfo:
            build_norm(name, 8, **kwargs)
        assert_one_line_message(excinfo.value, name, message)


# ---------------------------------------------------------------------------------------------------------------------
# PowerNorm
def _gs(x, groups, eps=1e-5):
    """Group scaling written out: each token's group of channels divided by its root mean square."""
    B, T, C = x.shape
    g = x.reshape(B, T, groups, C // groups)
    return (g / torch.sqrt((g * g).mean(-1, keepdim=True) + eps)).reshape(B, T, C)


def test_powernorm_defaults_follow_the_authors():
    mod = build_norm("powernorm", 32, num_heads=4)
    assert isinstance(mod, PowerNorm)
    assert (mod.num_groups, mod.eps, mod.group_eps, mod.alpha_fwd, mod.alpha_bkw, mod.warmup_iters) == (
        4, 1e-5, 1e-5, 0.9, 0.9, 10000)
    assert build_norm("powernorm", 32, num_heads=4, num_groups=1).num_groups == 1
    assert torch.equal(mod.running_phi, torch.ones(32)) and torch.equal(mod.ema_gz, torch.zeros(32))
    assert mod.iters.item() == 0
    assert set(mod.state_dict()) == {"weight", "bias", "running_phi", "ema_gz", "iters"}
    assert sum(p.numel() for p in mod.parameters()) == 2 * 32
    with pytest.raises(DTNBenchError, match="not divisible"):
        build_norm("powernorm", 30, num_heads=4)
    x = torch.randn(2, 3, 12, dtype=F64) * 3
    torch.testing.assert_close(group_scaling(x, 3), _gs(x, 3))


def test_powernorm_warmup_then_running_quadratic_mean():
    torch.manual_seed(0)
    C, warm = 8, 3
    mod = build_norm("powernorm", C, num_heads=2, warmup_iters=warm, dtype=F64).train()
    with torch.no_grad():
        mod.weight.uniform_(0.5, 1.5)
        mod.bias.normal_()
    phi = torch.ones(C, dtype=F64)
    for t in range(1, 7):
        x = torch.randn(4, 5, C, dtype=F64) * t + 0.5  # a different scale each step: batch and running differ
        xs = _gs(x, 2)
        psi = (xs**2).mean(dim=(0, 1))
        used = psi if t <= warm else phi  # after warm-up: the running value from before this step
        torch.testing.assert_close(mod(x), mod.weight * xs / torch.sqrt(used + 1e-5) + mod.bias)
        if t < warm:
            phi = phi * (t - 1) / t + psi / t
        phi = 0.9 * phi + 0.1 * psi
        torch.testing.assert_close(mod.running_phi, phi)
        assert mod.iters.item() == t
    mod.eval()
    x = torch.randn(4, 5, C, dtype=F64)
    torch.testing.assert_close(mod(x), mod.weight * _gs(x, 2) / torch.sqrt(phi + 1e-5) + mod.bias)
    assert mod.iters.item() == 6
    torch.testing.assert_close(mod.running_phi, phi)


@pytest.mark.parametrize("after_warmup", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_powernorm_approximate_backward_formula(after_warmup, masked):
    torch.manual_seed(1)
    B, T, C = 3, 6, 8
    mod = build_norm("powernorm", C, num_heads=2, warmup_iters=0 if after_warmup else 100, dtype=F64).train()
    with torch.no_grad():
        mod.weight.uniform_(0.5, 1.5)
        mod.bias.normal_()
        mod.running_phi.uniform_(0.5, 2.0)
        mod.ema_gz.normal_()
    phi, nu, w = mod.running_phi.clone(), mod.ema_gz.clone(), mod.weight.detach().clone()
    x = (torch.randn(B, T, C, dtype=F64) * 2).requires_grad_()
    g = torch.randn(B, T, C, dtype=F64)
    mask, real = None, torch.ones(B, T, 1, dtype=F64)
    if masked:
        mask = torch.ones(B, T, dtype=torch.bool)
        mask[1, 4:] = False
        mask[2, 2:] = False
        real = mask.unsqueeze(-1).to(F64)
    mod(x, mask).backward(g)
    # the formulas of the module docstring, written out
    xr = x.detach().requires_grad_()
    xs = _gs(xr, 2)
    n = real.sum()
    psi = ((xs.detach() ** 2) * real).sum((0, 1)) / n
    z = xs.detach() / torch.sqrt((phi if after_warmup else psi) + 1e-5)
    g_hat = w * g - 0.1 * nu * z * real
    (gx,) = torch.autograd.grad(xs, xr, g_hat / torch.sqrt(psi + 1e-5))
    torch.testing.assert_close(x.grad, gx)
    torch.testing.assert_close(mod.ema_gz, nu + (g_hat * z * real).sum((0, 1)) / n)
    torch.testing.assert_close(mod.weight.grad, (g * z).sum((0, 1)))
    torch.testing.assert_close(mod.bias.grad, g.sum((0, 1)))


@pytest.mark.parametrize("masked", [False, True])
def test_powernorm_backward_is_the_batch_gradient_when_nu_is_this_batchs_statistic(masked):
    """alpha_bkw = 0, eps = 0 and nu = E(w g z) of this very batch: the approximate backward of the warm-up step is the
    exact gradient of y = w * x / psi_B + b (padded tokens receive no gradient, as behind masked attention)."""
    torch.manual_seed(2)
    B, T, C = 4, 5, 6
    x = torch.randn(B, T, C, dtype=F64) * 1.5
    w, b = torch.rand(C, dtype=F64) + 0.5, torch.randn(C, dtype=F64)
    real = torch.ones(B, T, 1, dtype=F64)
    if masked:
        real[0, 3:] = 0
        real[3, 1:] = 0
    g = torch.randn(B, T, C, dtype=F64) * real
    n = real.sum()
    xe = x.clone().requires_grad_()
    (w * xe / torch.sqrt(((xe**2) * real).sum((0, 1)) / n) + b).backward(g)
    z = x / torch.sqrt(((x**2) * real).sum((0, 1)) / n)
    nu = (w * g * z * real).sum((0, 1)) / n
    xa = x.clone().requires_grad_()
    PowerFunction.apply(xa, w, b, torch.ones(C, dtype=F64), nu.clone(), real if masked else None, 1, 10, 0.0, 0.9,
                        0.0).backward(g)
    torch.testing.assert_close(xa.grad, xe.grad)


@pytest.mark.parametrize("step", [1, 5])  # in warm-up (batch statistic) and after it (running statistic)
def test_powernorm_gradcheck_affine_parameters(step):
    torch.manual_seed(3)
    x = torch.randn(2, 4, 6, dtype=F64)
    mask = torch.ones(2, 4, 1, dtype=F64)
    mask[1, 2:] = 0
    phi, nu = torch.rand(6, dtype=F64) + 0.5, torch.randn(6, dtype=F64)
    w = (torch.rand(6, dtype=F64) + 0.5).requires_grad_()
    b = torch.randn(6, dtype=F64).requires_grad_()

    def f(w, b):  # fresh copies of the state each call: every evaluation sees the same statistics
        return PowerFunction.apply(x, w, b, phi.clone(), nu.clone(), mask, step, 3, 1e-5, 0.9, 0.9)

    assert torch.autograd.gradcheck(f, (w, b))


def test_powernorm_gradcheck_where_the_approximation_is_exact():
    """After warm-up the forward is linear in x'; with nu's term off (alpha_bkw = 1), psi^2 frozen (alpha_fwd = 1) and
    set to this batch's psi_B^2, the approximate backward is the exact gradient, group scaling included."""
    torch.manual_seed(4)
    x = torch.randn(3, 4, 8, dtype=F64, requires_grad=True)
    mod = build_norm("powernorm", 8, num_heads=2, warmup_iters=0, alpha_fwd=1.0, alpha_bkw=1.0, dtype=F64).train()
    with torch.no_grad():
        mod.weight.uniform_(0.5, 1.5)
        mod.bias.normal_()
        mod.running_phi.copy_((_gs(x, 2) ** 2).mean((0, 1)))
    assert torch.autograd.gradcheck(mod, (x,))
    # a running psi^2 away from the batch's: the backward divides by psi_B, the forward by psi, the check must fail
    with torch.no_grad():
        mod.running_phi.mul_(2.0)
    assert not torch.autograd.gradcheck(mod, (x,), raise_exception=False)


def test_powernorm_padding_changes_no_real_token_gradient_nor_statistic():
    torch.manual_seed(5)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[0, 5:] = False
    mask[1, 3:] = False
    base, g = torch.randn(2, 7, 8, dtype=F64), torch.randn(2, 7, 8, dtype=F64)
    seen = []
    for pad in (0.0, 1e3):
        mod = build_norm("powernorm", 8, num_heads=2, dtype=F64).train()
        with torch.no_grad():
            mod.ema_gz.fill_(0.3)
        x = base.clone()
        x[~mask] = pad
        x.requires_grad_()
        gp = g.clone()
        gp[~mask] = pad  # whatever reaches the padded positions
        y = mod(x, mask)
        y.backward(gp)
        seen.append((y[mask].detach(), x.grad[mask], mod.running_phi.clone(), mod.ema_gz.clone()))
    for a, b in zip(*seen, strict=True):
        torch.testing.assert_close(a, b)


def test_powernorm_loads_the_authors_buffer_shapes():
    C = 6
    mod = build_norm("powernorm", C)
    mod.load_state_dict({"weight": torch.full((C,), 2.0), "bias": torch.full((C,), 0.5),
                         "running_phi": torch.full((1, C, 1, 1), 3.0), "ema_gz": torch.full((1, C, 1, 1), -0.5),
                         "iters": torch.tensor([7])})
    assert mod.running_phi.shape == (C,) and torch.equal(mod.running_phi, torch.full((C,), 3.0))
    assert mod.ema_gz.shape == (C,) and torch.equal(mod.ema_gz, torch.full((C,), -0.5))
    assert mod.iters.shape == () and mod.iters.item() == 7
    with pytest.raises(RuntimeError, match="size mismatch"):
        mod.load_state_dict({**mod.state_dict(), "running_phi": torch.ones(C + 1)})


def test_powernorm_low_precision_input_keeps_float32_statistics():
    mod = build_norm("powernorm", 16, num_heads=4).train()
    x = torch.randn(2, 5, 16).to(torch.bfloat16).requires_grad_()
    y = mod(x)
    y.float().sum().backward()
    assert mod.running_phi.dtype == mod.ema_gz.dtype == torch.float32
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad).all() and torch.isfinite(y).all()
    psi = (group_scaling(x.detach(), 4).float() ** 2).mean((0, 1))
    torch.testing.assert_close(mod.running_phi, psi)  # first step: cumulative mean, then the EMA, both give psi_B
