"""Where the normalisers sit in a block (``--placement pre|post|peri``): each placement against a hand-written forward,
parameter counts per placement, DTN's prefix-token and padding-mask rules in every slot, and bad input."""

from __future__ import annotations

import pytest
import timm
import torch
from cli_helpers import assert_one_line_error, assert_one_line_message
from timm.models.vision_transformer import Block

import dtn_bench  # noqa: F401  (registers the zoo with timm)
from dtn_bench.errors import DTNBenchError
from dtn_bench.models import create
from dtn_bench.models.blocks import PlacedBlock, place_blocks
from dtn_bench.models.vit import conversion_note
from dtn_bench.norms import DTN, Derf, LayerNorm, build_norm
from dtn_bench.placement import PLACEMENTS, check_placement
from dtn_bench.sequence import EncoderBlock, LRAEncoder

D, HEADS = 16, 2
F64 = torch.float64


def _randomise(mod: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in mod.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.3 + (1.0 if p.dim() == 1 else 0.0))


def _norm(seed: int) -> LayerNorm:
    n = LayerNorm(D).double()
    _randomise(n, seed)
    return n


def test_placements_and_their_errors():
    assert PLACEMENTS == ("pre", "post", "peri")
    for p in PLACEMENTS:
        assert check_placement(p) == p
    with pytest.raises(DTNBenchError) as excinfo:
        check_placement("sandwich")
    assert_one_line_message(excinfo.value, "--placement 'sandwich'", "pre, post, peri")


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_timm_block_at_each_placement_equals_the_hand_written_forward(placement):
    """timm's Block (LayerScale on, so the branch's scaling shows), its sublayers adopted by PlacedBlock."""
    torch.manual_seed(0)
    blk = Block(D, HEADS, qkv_bias=True, init_values=0.5).double().eval()
    _randomise(blk, 1)
    outs = {"norm1_out": _norm(2), "norm2_out": _norm(3)} if placement == "peri" else {}
    placed = PlacedBlock(blk, placement, **outs).eval()
    x = torch.randn(2, 5, D, dtype=F64)
    n1, n2, attn, mlp, ls1, ls2 = blk.norm1, blk.norm2, blk.attn, blk.mlp, blk.ls1, blk.ls2
    with torch.no_grad():
        if placement == "pre":
            h = x + ls1(attn(n1(x)))
            want = h + ls2(mlp(n2(h)))
            torch.testing.assert_close(blk(x), want)  # pre is timm's own block
        elif placement == "post":
            h = n1(x + ls1(attn(x)))
            want = n2(h + ls2(mlp(h)))
        else:
            h = x + ls1(outs["norm1_out"](attn(n1(x))))
            want = h + ls2(outs["norm2_out"](mlp(n2(h))))
        torch.testing.assert_close(placed(x), want)
    keys = set(placed.state_dict())
    assert {k for k in keys if not k.startswith(("norm1_out.", "norm2_out."))} == set(blk.state_dict())


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_lra_block_at_each_placement_equals_the_hand_written_forward(placement):
    """The LRA encoder block with DTN (1-D, masked) in every slot; dropout off."""
    torch.manual_seed(0)
    blk = EncoderBlock(D, HEADS, 32, norm="dtn", dropout=0.0, attn_dropout=0.0, placement=placement).double().eval()
    _randomise(blk, 4)
    x = torch.randn(3, 9, D, dtype=F64)
    m = torch.ones(3, 9, dtype=torch.bool)
    m[1, 6:] = False
    m[2, 2:] = False
    n1, n2 = blk.norm1, blk.norm2
    attn = lambda h: blk.attn(h, m)  # noqa: E731
    with torch.no_grad():
        if placement == "pre":
            h = x + attn(n1(x, m))
            want = h + blk.mlp(n2(h, m))
        elif placement == "post":
            h = n1(x + attn(x), m)
            want = n2(h + blk.mlp(h), m)
        else:
            h = x + blk.norm1_out(attn(n1(x, m)), m)
            want = h + blk.norm2_out(blk.mlp(n2(h, m)), m)
        got = blk(x, m)
    torch.testing.assert_close(got[m], want[m])


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_per_placement_zoo():
    """post moves the norms (same count as pre); peri adds an output norm per sublayer: the chosen normaliser in
    blocks 0-9, LayerNorm in blocks 10-11."""
    dim, heads = 192, 3
    dtn = 2 * dim + 2 * heads + 4 * heads  # weight, bias, two gates per head, pos_proj (3 x H weights + H biases)
    ln = 2 * dim
    for name, layer in (("vit_cifar_t_dtn", dtn), ("vit_cifar_t_derf", 2 * dim + 2), ("vit_cifar_t_identity", 0)):
        counts = {p: _params(create(name, placement=p)) for p in PLACEMENTS}
        assert counts["post"] == counts["pre"], name
        assert counts["peri"] == counts["pre"] + 10 * 2 * layer + 2 * 2 * ln, name


def test_parameter_counts_per_placement_lra():
    dim, heads, depth = 16, 2, 3
    counts = {p: _params(LRAEncoder(18, dim=dim, heads=heads, depth=depth, mlp_dim=32, max_len=12, norm="derf",
                                    placement=p)) for p in PLACEMENTS}
    assert counts["post"] == counts["pre"]
    assert counts["peri"] == counts["pre"] + depth * 2 * (2 * dim + 2)


@pytest.mark.parametrize("placement", ["post", "peri"])
def test_zoo_model_at_a_placement(placement):
    torch.manual_seed(0)
    model = timm.create_model("vit_cifar_t_derf", placement=placement).eval()
    assert model.placement == placement
    assert all(isinstance(b, PlacedBlock) and b.placement == placement for b in model.blocks)
    assert isinstance(model.blocks[0].norm1, Derf) and isinstance(model.blocks[11].norm1, LayerNorm)
    if placement == "peri":
        assert isinstance(model.blocks[9].norm2_out, Derf) and isinstance(model.blocks[10].norm1_out, LayerNorm)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert create("vit_cifar_t_derf").placement == "pre"


def test_per_slot_alpha_reaches_the_zoo_slots():
    recipe = {"attn": 0.8, "ffn": 0.2}
    model = create("vit_cifar_t_dyt", placement="peri", norm_kwargs={"alpha_init": recipe})
    for blk in list(model.blocks)[:10]:
        assert blk.norm1.alpha.item() == blk.norm1_out.alpha.item() == pytest.approx(0.8)
        assert blk.norm2.alpha.item() == blk.norm2_out.alpha.item() == pytest.approx(0.2)
    enc = LRAEncoder(18, dim=16, heads=2, depth=1, mlp_dim=32, max_len=8, norm="derf",
                     norm_kwargs={"alpha_init": {**recipe, "final": 0.1}})
    assert enc.norm_f.alpha.item() == pytest.approx(0.1) and enc.blocks[0].norm1.alpha.item() == pytest.approx(0.8)


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_converted_model_keeps_dtns_prefix_rule_in_every_slot(placement):
    """deit_tiny (class token) converted to DTN: every DTN layer, peri's output norms included, knows the prefix
    token and the grid, and the patch tokens' statistics never see the class token."""
    torch.manual_seed(0)
    model = create("deit_tiny_patch16_224", norm="dtn", placement=placement, img_size=64).eval()
    dtns = [m for m in model.modules() if isinstance(m, DTN)]
    assert len(dtns) == 12 * (4 if placement == "peri" else 2)
    assert all(m.num_prefix_tokens == 1 and m.grid_size == (4, 4) for m in dtns)
    assert model.placement == placement and model.norm_conversion["placement"] == placement
    note = conversion_note(model, pretrained=False)
    assert ("placement" in note) == (placement != "pre")
    with torch.no_grad():
        x = torch.randn(2, 17, 192)
        y = dtns[0](x)
        x2 = x.clone()
        x2[:, 0] = 100.0  # the class token
        torch.testing.assert_close(dtns[0](x2)[:, 1:], y[:, 1:])
        assert torch.isfinite(model(torch.randn(1, 3, 64, 64))).all()


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_lra_encoder_padding_never_changes_a_real_token_in_any_placement(placement):
    """1-D DTN in every slot (post and peri included): padded tokens' ids never change a real token's features."""
    torch.manual_seed(0)
    enc = LRAEncoder(18, dim=16, heads=2, depth=2, mlp_dim=32, max_len=12, norm="dtn", pooling="mean",
                     placement=placement, dropout=0.0, attn_dropout=0.0).eval()
    tokens = torch.randint(1, 18, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[0, 8:] = False
    mask[1, 4:] = False
    other = tokens.clone()
    other[~mask] = torch.randint(1, 18, (int((~mask).sum()),))
    with torch.no_grad():
        a, _ = enc.forward_features(tokens, mask)
        b, _ = enc.forward_features(other, mask)
    torch.testing.assert_close(a[mask], b[mask])


def test_placement_bad_input():
    with pytest.raises(DTNBenchError) as excinfo:
        create("vit_cifar_t_ln", placement="middle")
    assert_one_line_message(excinfo.value, "--placement 'middle'")
    with pytest.raises(DTNBenchError) as excinfo:
        create("deit_tiny_patch16_224", placement="post", img_size=64)
    assert_one_line_message(excinfo.value, "--placement post", "needs --norm")
    with pytest.raises(DTNBenchError) as excinfo:
        LRAEncoder(18, dim=16, heads=2, depth=1, mlp_dim=32, max_len=8, placement="around")
    assert_one_line_message(excinfo.value, "LRAEncoder: placement 'around'")
    model = timm.create_model("deit_tiny_patch16_224", img_size=64)
    model.blocks[3] = torch.nn.Identity()
    with pytest.raises(DTNBenchError) as excinfo:
        place_blocks(model, "post", lambda *a: None)
    assert_one_line_message(excinfo.value, "blocks.3 is a Identity", "only pre")


def test_zoo_name_and_norm_that_contradict_each_other():
    with pytest.raises(DTNBenchError) as excinfo:
        create("vit_cifar_t_dtn", norm="dyt")
    assert_one_line_message(excinfo.value, "--norm dyt contradicts --model vit_cifar_t_dtn",
                            "--model vit_cifar_t_dyt, or --model vit_cifar_t_ln --norm dyt")
    assert isinstance(create("vit_cifar_t_dtn", norm="dtn").blocks[0].norm1, DTN)  # its own: no contradiction
    assert isinstance(create("vit_cifar_t_ln", norm="derf").blocks[0].norm1, Derf)  # LN models are the base


def test_cli_placement_and_contradiction_errors(invoke):
    code, _, err = invoke("profile", "--preset", "quick", "--models", "vit_t", "--device", "cpu", "--placement",
                          "sideways")
    assert_one_line_error(code, err, "profile: --placement 'sideways'", "pre, post, peri")
    code, _, err = invoke("profile", "--preset", "quick", "--models", "swin_t", "--device", "cpu", "--placement",
                          "post")
    assert_one_line_error(code, err, "swin_t takes pre only")
    code, _, err = invoke("info", "vit_t_dtn", "--norm", "derf")
    assert_one_line_error(code, err, "--norm derf contradicts --model vit_t_dtn")


def test_build_norm_in_a_masked_slot_of_an_encoder_is_checked():
    assert build_norm("dtn", D, num_heads=HEADS, masked=True).grid_size is None


def test_tables_label_the_placement():
    import pandas as pd

    from dtn_bench.bench.report import summary_table
    from dtn_bench.results.schema import make_row
    from dtn_bench.results.tables import placement_label

    assert [placement_label(p) for p in ("pre", "post", "peri", None, float("nan"))] == ["", " [post]", " [peri]", "",
                                                                                         ""]
    rows = pd.DataFrame([make_row("bench-norms", "vit_s_ln", "layernorm", "throughput_img_s", 10.0, stat="median",
                                  batch=2, placement="peri")])
    assert "vit_s_ln [peri] inference throughput (batch 2, fp32 eager)" in summary_table(rows).index
