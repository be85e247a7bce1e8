"""The fused Triton DTN inference kernel (dtn_bench.norms.dtn.triton).

These machines have no GPU. The kernels run in Triton's interpreter (TRITON_INTERPRET=1, in a child process since
the variable is read when the kernels are defined) against the eager layer, and are compiled for sm_90 (H100/H200)
and sm_80 (A100) to check that the GPU compiler accepts them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from dtn_bench.errors import DTNBenchError
from dtn_bench.norms import DTN
from dtn_bench.norms.dtn import use_kernel

# Each case: dim, heads, grid, prefix tokens, only_var, batch, input dtype, channel chunk of the kernel.
CASES = [
    (48, 3, 14, 0, False, 2, "float32", 32),  # ViT-like 14 x 14, d = 16
    (30, 3, (3, 5), 1, False, 2, "float32", 32),  # rectangular grid, d = 10 (padded), a class token
    (40, 2, (20, 17), 2, True, 2, "float32", 32),  # grid larger than 16 (padded to 32), dtn_var, two prefix tokens
    (96, 2, (6, 7), 1, False, 2, "float32", 16),  # d = 48 in three channel chunks of 16
    (192, 3, 14, 0, False, 1, "float32", 32),  # d = 64 in two chunks
    (64, 4, 4, 0, False, 2, "bfloat16", 32),  # bf16 in and out
]

_CHILD = textwrap.dedent("""
    import json, sys
    import torch
    from dtn_bench.norms.dtn import triton as dtn_triton
    from dtn_bench.norms.dtn import DTN, use_kernel

    results = []
    for C, H, grid, P, only_var, B, dtype, chunk in json.loads(sys.argv[1]):
        torch.manual_seed(C + H + P)
        grid = tuple(grid) if isinstance(grid, list) else grid
        m = DTN(C, H, grid_size=grid, num_prefix_tokens=P, only_var=only_var)
        with torch.no_grad():  # away from the init: every gate, affine and position weight matters
            m.pos_proj.weight.add_(torch.randn_like(m.pos_proj.weight) * 0.3)
            m.var_norm_weight.normal_()
            m.weight.normal_()
            m.bias.normal_()
            if not only_var:
                m.mean_norm_weight.normal_()
        gh, gw = (grid, grid) if isinstance(grid, int) else grid
        x = (torch.randn(B, P + gh * gw, C) * 2 + 0.5).to(getattr(torch, dtype))
        dtn_triton._CHANNEL_CHUNK = chunk
        with use_kernel(m, "triton"), torch.no_grad():
            m(x)  # fills the layer's cached constants ...
            m.var_norm_weight.add_(0.7)  # ... which these in-place updates must invalidate
            m.pos_proj.weight.mul_(1.3)
            m.bias.sub_(0.2)
        assert m.kernel == "eager"
        with torch.inference_mode():
            ref = m(x)
        m.kernel = "triton"
        with torch.no_grad():
            out = m(x)
        m.kernel = "eager"
        rel = ((out.float() - ref.float()).abs() / (1 + ref.float().abs())).max().item()
        results.append({"dtype": str(out.dtype), "shape": list(out.shape), "rel": rel})
    print(json.dumps(results))
""")


def test_kernel_matches_the_eager_layer_in_the_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(CASES)], capture_output=True, text=True,
                          env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(results) == len(CASES)
    for case, res in zip(CASES, results, strict=True):
        C, H, grid, P, _, B, dtype, _ = case
        gh, gw = (grid, grid) if isinstance(grid, int) else grid
        assert res["dtype"] == f"torch.{dtype}" and res["shape"] == [B, P + gh * gw, C], (case, res)
        # fp32: the eager layer's arithmetic in another order; bf16: one rounding of the fp32 result (2^-8) either way
        tol = 1e-5 if dtype == "float32" else 2.0**-7
        assert res["rel"] <= tol, (case, res)


def _compile(fn, signature: dict, constexprs: dict, arch: int, num_warps: int = 4):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    src = ASTSource(fn=fn, signature={**signature, **{k: "constexpr" for k in constexprs}}, constexprs=constexprs)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})


@pytest.mark.parametrize("arch, io, grid_pad", [(90, "bf16", 16), (90, "fp32", 16), (80, "bf16", 16), (90, "fp32", 32)])
def test_kernels_compile_for_the_gpu(arch, io, grid_pad):
    """ptxas (shipped with triton) accepts both kernels for Hopper and Ampere at ViT shapes (grids up to 16 x 16) and
    larger grids (up to 32 x 32); no GPU needed."""
    from dtn_bench.norms.dtn import triton as dt

    stats = _compile(dt._ln_stats_kernel, dict(x_ptr=f"*{io}", r_ptr="*fp32", mean_ptr="*fp32", var_ptr="*fp32",
                                               n_tokens="i32", C="i32", D="i32", H="i32", eps="fp32"),
                     {"BT": 32, "DP": 64}, arch)
    sig = dict(x_ptr=f"*{io}", y_ptr=f"*{io}", sc_ptr="*fp32", r_ptr="*fp32", px_ptr="*fp32", py_ptr="*fp32",
               mean_ptr="*fp32", var_ptr="*fp32", w_ptr="*fp32", b_ptr="*fp32", gate_ptr="*fp32", T="i32", C="i32",
               D="i32", H="i32", GH="i32", GW="i32", P="i32", eps="fp32")
    for only_var in (False, True):
        grid = _compile(dt._grid_kernel, sig, {"ONLY_VAR": only_var, "GHP": grid_pad, "GWP": grid_pad,
                                               "DC": dt._CHANNEL_CHUNK},
                        arch, dt._NUM_WARPS)
        assert grid.asm["cubin"] and f"sm_{arch}" in grid.asm["ptx"]
    assert stats.asm["cubin"]


def test_unknown_kernel_names_are_one_line_errors():
    m = DTN(32, 2, grid_size=4)
    for set_it in (lambda: setattr(m, "kernel", "cuda"), lambda: use_kernel(m, "cuda"),
                   lambda: DTN(32, 2, grid_size=4, kernel="cuda")):
        with pytest.raises(DTNBenchError, match="DTN kernel 'cuda': choose eager or triton") as e:
            set_it()
        assert "\n" not in str(e.value)
    assert m.kernel == "eager"


def test_use_kernel_sets_every_layer_of_a_model_and_restores_them():
    """The kernel is each layer's own: use_kernel sets it on every DTN of a model (nested ones, the model itself when
    it is one), leaves other layers and models alone, and gives each layer back its previous kernel when the block
    ends, also on an error; called without a block it keeps the new kernel."""
    a, b, other = DTN(32, 2, grid_size=4), DTN(32, 2, grid_size=4), DTN(32, 2, grid_size=4)
    model = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.Sequential(a), b)
    b.kernel = "triton"  # each layer's previous kernel comes back, not a global default
    with use_kernel(model, "eager") as layers:
        assert layers == [a, b] and a.kernel == b.kernel == "eager"
    assert (a.kernel, b.kernel, other.kernel) == ("eager", "triton", "eager")
    with pytest.raises(RuntimeError, match="inside"), use_kernel(model, "triton"):
        assert a.kernel == b.kernel == "triton" and other.kernel == "eager"
        raise RuntimeError("inside")
    assert (a.kernel, b.kernel) == ("eager", "triton")
    with use_kernel(a, "triton"):  # a single layer is a model of one
        assert a.kernel == "triton"
    assert a.kernel == "eager"
    use_kernel(model, "triton")  # no block: from now on
    assert a.kernel == b.kernel == "triton" and "kernel=triton" in repr(a)
    assert "kernel" not in DTN(32, 2, grid_size=4).state_dict()


def test_triton_kernel_on_a_cpu_tensor_is_a_clear_error():
    m = DTN(32, 2, grid_size=4)
    x = torch.randn(2, 16, 32)
    with use_kernel(m, "triton"):
        with torch.no_grad(), pytest.raises(DTNBenchError, match="needs a CUDA device, got cpu"):
            m(x)
        # autograd keeps the eager path whatever the kernel setting
        y = m(x.requires_grad_())
        y.sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
