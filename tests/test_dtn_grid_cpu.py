"""The fused CPU kernels of the 2-D DTN layer (dtn_bench.norms.dtn.cpu2d) against the dense formula and the eager path.

The dense formula (``dense_dtn`` of test_dtn: explicit ``[T, T]`` matrices in float64, written with torch operations)
is the reference for outputs and, through autograd, for gradients; the eager torch path (what GPUs run) must give
the same numbers as the fused one.
"""

from __future__ import annotations

import pytest
import torch
from test_dtn import dense_dtn, rand_x, randomise
from torch.func import functional_call

from dtn_bench.norms import DTN
from dtn_bench.norms.dtn import grid as dtn_grid

PARAMS = ["pos_proj.weight", "mean_norm_weight", "var_norm_weight", "weight", "bias"]


def layer(C: int, H: int, grid, prefix: int, only_var: bool, seed: int, dtype=torch.float32, local: bool = False):
    mod = DTN(C, H, grid_size=grid, num_prefix_tokens=prefix, only_var=only_var)
    if not local:
        randomise(mod, seed=seed)
    return mod.to(dtype)


def params_of(mod: DTN) -> list[str]:
    return [n for n in PARAMS if n in dict(mod.named_parameters())]


def forward_backward(mod: DTN, x: torch.Tensor, g: torch.Tensor, fused: bool, monkeypatch):
    """Output and gradients (input, then every parameter of :data:`PARAMS`) on the fused or the eager path."""
    monkeypatch.setattr(dtn_grid, "_CPU_GRID_KERNELS", fused)
    mod.zero_grad(set_to_none=True)
    xg = x.clone().requires_grad_(True)
    y = mod(xg)
    y.backward(g)
    named = dict(mod.named_parameters())
    return y.detach(), [xg.grad] + [named[n].grad.clone() for n in params_of(mod)]


def dense_grads(mod: DTN, x: torch.Tensor, g: torch.Tensor):
    """``dense_dtn`` (float64) of ``x`` and the gradients of ``<dense_dtn(x), g>`` with respect to the input and every
    parameter of :data:`PARAMS` (the parameters swapped for float64 leaves; ``mod`` is left as it was)."""
    from torch.nn.utils.stateless import _reparametrize_module

    named = dict(mod.named_parameters())
    names = params_of(mod)
    xd = x.double().clone().requires_grad_(True)
    leaves = {n: named[n].detach().double().clone().requires_grad_(True) for n in names}
    with _reparametrize_module(mod, leaves):
        out = dense_dtn(mod, xd)
    grads = torch.autograd.grad(out, [xd, *leaves.values()], g.double())
    return out.detach(), list(grads)


CASES = [((14, 14), 0, False), ((5, 7), 0, False), ((6, 4), 1, False), ((3, 5), 2, True), ((1, 6), 1, False),
         ((7, 1), 0, True)]


@pytest.mark.parametrize("grid,prefix,only_var", CASES)
def test_fused_forward_and_gradients_match_the_dense_formula(grid, prefix, only_var, monkeypatch):
    mod = layer(48, 4, grid, prefix, only_var, seed=7)
    x = rand_x(3, prefix + grid[0] * grid[1], 48)
    g = rand_x(*x.shape, seed=5)
    ref, ref_grads = dense_grads(mod, x, g)
    y, grads = forward_backward(mod, x, g, fused=True, monkeypatch=monkeypatch)
    assert (y.double() - ref).abs().max().item() <= 1e-4
    for got, want in zip(grads, ref_grads, strict=True):
        scale = max(1.0, want.abs().max().item())
        assert (got.double() - want).abs().max().item() <= 2e-4 * scale
    with torch.inference_mode():  # the inference path: the same kernel without autograd
        assert (mod(x).double() - ref).abs().max().item() <= 1e-4


@pytest.mark.parametrize("grid,prefix,only_var", CASES)
def test_fused_and_eager_paths_agree_in_float64(grid, prefix, only_var, monkeypatch):
    """Outputs and every gradient to 1e-10 in float64: the same function, two implementations (and the dense one)."""
    mod = layer(24, 3, grid, prefix, only_var, seed=11, dtype=torch.float64)
    x = rand_x(2, prefix + grid[0] * grid[1], 24).double()
    g = rand_x(*x.shape, seed=3).double()
    y1, g1 = forward_backward(mod, x, g, fused=True, monkeypatch=monkeypatch)
    y0, g0 = forward_backward(mod, x, g, fused=False, monkeypatch=monkeypatch)
    ref, ref_grads = dense_grads(mod, x, g)
    assert (y1 - ref).abs().max().item() <= 1e-10
    assert (y1 - y0).abs().max().item() <= 1e-10
    for a, b, c in zip(g1, g0, ref_grads, strict=True):
        assert (a - c).abs().max().item() <= 1e-9 * max(1.0, c.abs().max().item())
        assert (a - b).abs().max().item() <= 1e-9 * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("prefix,only_var", [(1, False), (0, True)])
def test_gradcheck_float64_fused(prefix, only_var, monkeypatch):
    monkeypatch.setattr(dtn_grid, "_CPU_GRID_KERNELS", True)
    mod = layer(8, 2, (2, 3), prefix, only_var, seed=9, dtype=torch.float64)
    x = rand_x(1, prefix + 6, 8).double().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda inp: mod(inp), (x,), eps=1e-6, atol=1e-5)
    names = params_of(mod)
    tensors = tuple(dict(mod.named_parameters())[n].detach().clone().requires_grad_(True) for n in names)
    assert torch.autograd.gradcheck(lambda *ps: functional_call(mod, dict(zip(names, ps, strict=True)), (x.detach(),)),
                                    tensors, eps=1e-6, atol=1e-5)


def test_local_init_and_peaked_kernels_skip_zero_weights_exactly(monkeypatch):
    """The ConViT local init (weights flushed to 0 in the tails) and a very peaked kernel (most weights 0): the
    products skip the zero bands and still give the dense formula's numbers and the eager path's gradients."""
    for a2 in (None, -30.0):
        mod = layer(64, 4, (14, 14), 0, False, seed=0, local=True)
        if a2 is not None:
            with torch.no_grad():
                mod.pos_proj.weight[:, 2] = a2
        py, px = mod.axis_matrices(14, 14)
        assert (px == 0).any() and (py == 0).any()
        x = rand_x(2, 196, 64)
        g = rand_x(*x.shape, seed=2)
        y1, g1 = forward_backward(mod, x, g, fused=True, monkeypatch=monkeypatch)
        y0, g0 = forward_backward(mod, x, g, fused=False, monkeypatch=monkeypatch)
        assert (y1.double() - dense_dtn(mod, x)).abs().max().item() <= 1e-4
        for a, b in zip(g1, g0, strict=True):
            assert (a - b).abs().max().item() <= 1e-4 * max(1.0, b.abs().max().item())


def test_fused_kernels_are_used_on_cpu_tensors_only_outside_dispatch_modes(monkeypatch):
    from torch.utils.flop_counter import FlopCounterMode

    from dtn_bench.norms.dtn import cpu2d as dtn_cpu2d

    calls = []
    for name in ("forward", "backward"):
        real = getattr(dtn_cpu2d, name)
        monkeypatch.setattr(dtn_cpu2d, name, lambda *a, _real=real, _name=name, **k: (calls.append(_name),
                                                                                       _real(*a, **k))[1])
    mod = layer(32, 4, (4, 4), 1, False, seed=1)
    x = rand_x(2, 17, 32).requires_grad_(True)
    mod(x).sum().backward()
    assert calls == ["forward", "backward"]
    with torch.inference_mode():
        mod(x)
    assert calls == ["forward", "backward", "forward"]
    with FlopCounterMode(display=False):  # a dispatch mode sees torch operations only: the eager path
        mod(x).sum().backward()
    monkeypatch.setattr(dtn_grid, "_CPU_GRID_KERNELS", False)
    mod(x).sum().backward()
    pooled = DTN(32, 4, grid_size=(28, 28), pool_to=14)  # pooled grids keep the eager path
    monkeypatch.setattr(dtn_grid, "_CPU_GRID_KERNELS", True)
    pooled(rand_x(1, 784, 32)).sum().backward()
    assert calls == ["forward", "backward", "forward"]


def test_fused_kernels_give_the_same_numbers_on_one_and_two_threads(monkeypatch):
    """Sums over the batch are taken per sample and added afterwards: the thread count changes no bit."""
    from dtn_bench.norms.dtn import cpu2d as dtn_cpu2d

    monkeypatch.setattr(dtn_cpu2d, "_GRAIN", 1)  # parallel chunks even for this small batch
    mod = layer(48, 4, (5, 6), 1, False, seed=4)
    x = rand_x(7, 31, 48)
    g = rand_x(*x.shape, seed=8)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        y1, g1 = forward_backward(mod, x, g, fused=True, monkeypatch=monkeypatch)
        torch.set_num_threads(2)
        y2, g2 = forward_backward(mod, x, g, fused=True, monkeypatch=monkeypatch)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(y1, y2)
    for a, b in zip(g1, g2, strict=True):
        assert torch.equal(a, b)


def test_fused_path_under_autocast_and_half_inputs(monkeypatch):
    """bf16 autocast and fp16 inputs: statistics in fp32 on the fused path, as on the eager one."""
    mod = layer(64, 4, (6, 6), 1, False, seed=13)
    x = rand_x(2, 37, 64)
    with torch.no_grad():
        ref = mod(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = mod(x.bfloat16())
    assert y.dtype == torch.bfloat16
    assert (y.float() - ref).abs().max().item() <= 0.05 * ref.abs().max().item()
    monkeypatch.setattr(dtn_grid, "_CPU_GRID_KERNELS", False)
    with torch.no_grad():
        assert (mod(x) - ref).abs().max().item() <= 1e-5
