"""The contract every registered normaliser keeps, parametrised over the registry (``NORMS.names()``).

Shape and dtype, padding mask, prefix tokens, ``torch.compile(fullgraph=True)``, bf16 autocast, state-dict round trip,
and an analytic MAC count (``profile``'s ``norm_gmacs``) that is not zero for every normaliser that computes anything;
plus the facts each normaliser declares (:class:`dtn_bench.norms.NormInfo`) and the one-line errors of bad input.
"""

from __future__ import annotations

import pytest
import torch
from cli_helpers import assert_one_line_message

from dtn_bench.errors import DTNBenchError
from dtn_bench.norms import NORMS, SLOTS, build_norm, info, info_of, norm_options
from dtn_bench.norms.base import MASK_KINDS, norm_context
from dtn_bench.profile.normcost import NormMacCounter
from dtn_bench.results.published import TABLES

NAMES = NORMS.names()
C, H = 16, 4


def _randomise(mod: torch.nn.Module, seed: int = 0) -> None:
    """Every parameter and floating buffer away from its init, so that a round trip is not trivially the init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in list(mod.parameters()) + [b for b in mod.buffers() if b.is_floating_point()]:
            t.copy_(torch.rand(t.shape, generator=gen, dtype=t.dtype) * 0.5 + 0.75)


def _mask(B: int = 3, T: int = 10) -> torch.Tensor:
    m = torch.ones(B, T, dtype=torch.bool)
    m[1, 7:] = False
    m[2, 3:] = False
    return m


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_and_dtype(name, dtype):
    mod = build_norm(name, C, num_heads=H, dtype=dtype)
    assert all(p.dtype == dtype for p in mod.parameters())
    x = torch.randn(3, 10, C, dtype=dtype) * 2 + 0.5
    for mode in (True, False):
        y = mod.train(mode)(x)
        assert y.shape == x.shape and y.dtype == dtype and torch.isfinite(y).all(), (name, mode)


@pytest.mark.parametrize("name", NAMES)
def test_padding_never_changes_a_real_tokens_output(name):
    """Whatever the padded positions hold, the real tokens' outputs are the same (training and inference)."""
    assert info(name).takes_mask(None)  # every normaliser takes a mask on 1-D sequences
    mask = _mask()
    x = torch.randn(3, 10, C, dtype=torch.float64)
    noisy = x.clone()
    noisy[~mask] = 1e3
    for training in (True, False):
        outs = []
        for inp in (x, noisy):
            torch.manual_seed(0)
            mod = build_norm(name, C, num_heads=H, masked=True, dtype=torch.float64).train(training)
            outs.append(mod(inp, mask)[mask])
        torch.testing.assert_close(outs[0], outs[1], msg=f"{name} training={training}")


@pytest.mark.parametrize("name", NAMES)
def test_prefix_tokens(name):
    """A layer built for P prefix tokens + a grid takes P + rows * cols tokens; where the normaliser keeps prefix
    tokens apart (DTN) or works token by token, the patch tokens' outputs do not depend on the prefix tokens."""
    mod = build_norm(name, C, num_heads=H, grid_size=(2, 3), num_prefix_tokens=1, dtype=torch.float64).eval()
    x = torch.randn(2, 7, C, dtype=torch.float64)
    y = mod(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    if info(name).mask == "per-token" or "num_prefix_tokens" in norm_context(name):
        other = x.clone()
        other[:, 0] = torch.randn(2, C, dtype=torch.float64) * 10
        torch.testing.assert_close(mod(other)[:, 1:], y[:, 1:], msg=name)


class _Every(torch.nn.Module):
    """Every registered normaliser on one input, stacked: one graph to compile for all."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList(build_norm(n, C, num_heads=H) for n in NAMES)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.stack([layer(x, mask) for layer in self.layers])


def test_compile_fullgraph_every_normaliser():
    """``torch.compile(fullgraph=True)`` captures every normaliser's inference forward (masked) without a graph
    break, and computes what eager does. One shared graph and the ``aot_eager`` backend keep this to seconds on the
    CPU (graph capture and AOT tracing are what ``fullgraph`` checks; inductor's code generation is not)."""
    torch.manual_seed(0)
    model = _Every().eval()
    for layer in model.layers:
        _randomise(layer)
    x, mask = torch.randn(3, 10, C), _mask()
    with torch.no_grad():
        eager = model(x, mask)
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")(x, mask)
    real = mask.unsqueeze(0).unsqueeze(-1).expand_as(eager)
    torch.testing.assert_close(compiled[real], eager[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast(name):
    """Under CPU bf16 autocast: finite, the input's shape, and within bf16 rounding of the fp32 forward."""
    torch.manual_seed(1)
    mod = build_norm(name, C, num_heads=H).eval()
    x = torch.randn(3, 10, C)
    with torch.no_grad():
        ref = mod(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = mod(x.bfloat16())
    assert low.shape == x.shape and torch.isfinite(low).all()
    torch.testing.assert_close(low.float(), ref, atol=0.1, rtol=0.05)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name):
    torch.manual_seed(2)
    a = build_norm(name, C, num_heads=H, grid_size=None)
    _randomise(a, seed=3)
    b = build_norm(name, C, num_heads=H, grid_size=None)
    b.load_state_dict(a.state_dict())
    for key, value in a.state_dict().items():
        assert torch.equal(b.state_dict()[key], value), (name, key)
    x = torch.randn(2, 9, C)
    a.eval()
    b.eval()
    torch.testing.assert_close(b(x), a(x))


@pytest.mark.parametrize("name", NAMES)
def test_analytic_macs(name):
    """Every normaliser has a count; it is zero only for one that computes nothing (the identity), and the profile's
    counter finds the layer by its class and counts what its facts say."""
    facts = info(name)
    mod = build_norm(name, C, num_heads=H, grid_size=(2, 3)).eval()
    x = torch.randn(2, 6, C)
    computed, dense = facts.macs(mod, tuple(x.shape))
    assert dense >= computed >= facts.macs_per_element * x.numel()
    y = mod(x)
    if y is x:
        assert computed == 0 and facts.macs_per_element == 0
    else:
        assert computed > 0 and facts.macs_per_element > 0 and facts.macs_passes
    assert facts.macs_per_token(C) == facts.macs_per_element * C
    with NormMacCounter(mod) as nc:
        mod(x)
    assert nc.totals.layers == 1 and nc.totals.computed == computed and nc.totals.dense == dense
    assert info_of(mod)[1].macs_per_element == facts.macs_per_element


@pytest.mark.parametrize("name", NAMES)
def test_declared_facts(name):
    """Label, formula, counting passes, mask kind, and the published tables it names hold a number for it."""
    facts = info(name)
    assert facts.label and facts.formula and facts.paper and facts.mask in MASK_KINDS
    assert NORMS.get(name).meta["formula"] == facts.formula
    for table in facts.published:
        entries = TABLES[table][0]
        assert any(norm == name and e.value is not None for (_, norm), e in entries.items()), (name, table)
    for table, (entries, _) in TABLES.items():  # and no table holds a number for it that its facts do not name
        if any(norm == name and e.value is not None for (_, norm), e in entries.items()):
            assert table in facts.published, (name, table)


# ------------------------------------------------------------------------------------------------------------------
# bad input: one-line errors
@pytest.mark.parametrize("name", NAMES)
def test_unknown_keyword_is_a_one_line_error_naming_normaliser_and_keyword(name):
    with pytest.raises(DTNBenchError) as excinfo:
        build_norm(name, C, num_heads=H, alpah_init=0.3)
    assert_one_line_message(excinfo.value, f"norm {name!r}", "'alpah_init'")
    for option in norm_options(name):  # every option it lists is taken
        assert option not in ("num_heads", "grid_size", "num_prefix_tokens", "slot", "device", "dtype")


def test_slots_and_context():
    assert SLOTS == ("attn", "ffn", "final")
    assert norm_options("dyt") == ["alpha_init"] and norm_options("derf") == ["alpha_init", "shift_init"]
    assert norm_options("identity") == []
    assert "window" in norm_options("dtn") and "warmup_iters" in norm_options("powernorm")


def test_a_normaliser_that_cannot_take_a_padding_mask_asked_to():
    """A 2-D DTN layer takes no padding mask: asking for one (an encoder's slot) is an error, not a silent no-op."""
    with pytest.raises(DTNBenchError) as excinfo:
        build_norm("dtn", C, num_heads=H, grid_size=(2, 2), masked=True)
    assert_one_line_message(excinfo.value, "'dtn' cannot take a padding mask", "2-D grid")
    assert build_norm("dtn", C, num_heads=H, grid_size=None, masked=True) is not None
    for name in NAMES:
        if name not in ("dtn", "dtn_var"):
            build_norm(name, C, num_heads=H, grid_size=(2, 2), masked=True)  # the others take one anywhere
