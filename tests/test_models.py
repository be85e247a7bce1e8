"""The ViT zoo registered with timm, its layout, the norm converter for stock timm ViTs, and the MAC counter."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import dtn_bench  # noqa: F401  (registers the zoo with timm)
from dtn_bench.errors import DTNBenchError
from dtn_bench.models import MODELS, VIT_SPECS, LocalViT, convert_norms, create
from dtn_bench.models.info import count_gmacs
from dtn_bench.norms import DTN, DyT, PowerNorm, RMSNorm

SUFFIX_NORM = {"ln": "layernorm", "dtn": "dtn", "dyt": "dyt", "powernorm": "powernorm", "derf": "derf",
               "identity": "identity"}
ZOO = [f"{arch}_{suffix}" for arch in VIT_SPECS for suffix in SUFFIX_NORM]
REPLACED_LAYERS = 20  # blocks 0-9, norm1 and norm2


_COUNTS: dict[str, int] = {}  # parameter counts seen so far (the base models take seconds to build)


def n_params(name: str) -> int:
    if name not in _COUNTS:
        _COUNTS[name] = sum(p.numel() for p in timm.create_model(name).parameters())
    return _COUNTS[name]


def expected_params(dim: int, heads: int, suffix: str) -> int:
    """Parameter count of the zoo layout written out by hand (no class-token position embedding)."""
    patch = 3 * 16 * 16 * dim + dim
    cls_and_pos = dim + 196 * dim
    block = 2 * (2 * dim)  # norm1, norm2 (LayerNorm weight and bias)
    block += 3 * dim * dim + 3 * dim  # qkv with bias
    block += dim * dim + dim  # proj
    block += dim * 4 * dim + 4 * dim + 4 * dim * dim + dim  # mlp
    final = 2 * dim
    head = dim * 1000 + 1000
    total = patch + cls_and_pos + 12 * block + final + head
    if suffix == "dtn":
        total += REPLACED_LAYERS * 6 * heads
    if suffix == "dyt":  # the scalar alpha; weight and bias as LayerNorm's
        total += REPLACED_LAYERS
    if suffix == "derf":  # the scalars alpha and shift
        total += 2 * REPLACED_LAYERS
    if suffix == "identity":  # nothing in the 20 slots
        total -= REPLACED_LAYERS * 2 * dim
    return total  # powernorm: weight and bias as LayerNorm's, its statistics are buffers


def test_zoo_names_are_registered():
    assert sorted(MODELS.names()) == sorted(ZOO)
    assert len(ZOO) == 36
    for name in ZOO:
        assert timm.is_model(name), name


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_creatable_through_timm(name):
    torch.manual_seed(0)
    model = timm.create_model(name)
    assert isinstance(model, LocalViT)
    arch, suffix = name.rsplit("_", 1)
    spec = VIT_SPECS[arch]
    assert model.embed_dim == spec.embed_dim
    assert len(model.blocks) == 12
    assert all(blk.attn.num_heads == spec.num_heads for blk in model.blocks)
    assert model.norm_name == SUFFIX_NORM[suffix] == MODELS.get(name).meta["norm"]
    n = sum(p.numel() for p in model.parameters())
    _COUNTS[name] = n
    assert n == expected_params(spec.embed_dim, spec.num_heads, suffix)
    if not arch.startswith("vit_b"):  # forward of the base models is too slow for the suite
        model.eval()
        with torch.no_grad():
            out = model(torch.randn(1, 3, 224, 224))
        assert out.shape == (1, 1000)
        assert torch.isfinite(out).all()


def test_zoo_model_refuses_pretrained():
    with pytest.raises(DTNBenchError, match="no pretrained weights"):
        timm.create_model("vit_t_ln", pretrained=True)


def test_vit_s_ln_parameter_count_against_timm():
    ours = n_params("vit_s_ln")
    assert ours == 22_050_280
    assert abs(ours - 22.05e6) / 22.05e6 < 1e-3
    stock = sum(p.numel() for p in timm.create_model("vit_small_patch16_224", pretrained=False).parameters())
    assert stock - ours == 384  # the class token's position embedding, one embed dim
    assert stock - ours == VIT_SPECS["vit_s"].embed_dim


@pytest.mark.parametrize("arch", list(VIT_SPECS))
def test_dtn_adds_six_params_per_head_per_replaced_layer(arch):
    heads = VIT_SPECS[arch].num_heads
    diff = n_params(f"{arch}_dtn") - n_params(f"{arch}_ln")
    assert diff == 6 * heads * REPLACED_LAYERS


# ---------------------------------------------------------------------------------------------------------------------
# layout
def test_vit_s_dtn_layout():
    model = timm.create_model("vit_s_dtn")
    for i, blk in enumerate(model.blocks):
        for slot in ("norm1", "norm2"):
            mod = getattr(blk, slot)
            if i < 10:
                assert isinstance(mod, DTN), (i, slot)
                assert mod.grid_size == (14, 14)
                assert mod.num_prefix_tokens == 0
                assert mod.num_heads == 6
                assert mod.dim == 384
            else:
                assert isinstance(mod, nn.LayerNorm) and not isinstance(mod, DTN), (i, slot)
                assert mod.eps == 1e-5
    assert isinstance(model.norm, nn.LayerNorm)
    assert model.norm.eps == 1e-5
    assert model.pos_embed.shape == (1, 196, 384)  # patch tokens only


@pytest.mark.parametrize("name, cls", [("vit_s_dyt", DyT), ("vit_s_powernorm", PowerNorm)])
def test_vit_s_comparison_norms_layout(name, cls):
    model = timm.create_model(name)
    for i, blk in enumerate(model.blocks):
        for slot in ("norm1", "norm2"):
            mod = getattr(blk, slot)
            if i < 10:
                assert isinstance(mod, cls), (i, slot)
                assert mod.weight.shape == (384,)
            else:
                assert isinstance(mod, nn.LayerNorm), (i, slot)
    assert isinstance(model.norm, nn.LayerNorm)
    first = model.blocks[0].norm1
    if cls is DyT:
        assert first.alpha.item() == 0.5
    else:
        assert first.num_groups == 6  # group scaling per attention head, as the authors' layers
        assert first.warmup_iters == 10000
        assert "blocks.0.norm1.running_phi" in model.state_dict()


def test_vit_t_powernorm_training_step_counts_in_blocks_0_to_9_only():
    torch.manual_seed(0)
    model = timm.create_model("vit_t_powernorm", img_size=32, patch_size=16).train()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    norms = [m for m in model.modules() if isinstance(m, PowerNorm)]
    assert len(norms) == REPLACED_LAYERS
    assert all(m.iters.item() == 1 for m in norms)
    assert all(torch.count_nonzero(m.ema_gz) > 0 for m in norms)  # the backward updated its gradient statistic
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert torch.isfinite(out).all() and all(m.iters.item() == 1 for m in norms)


def test_vit_s_ln_has_layernorm_everywhere():
    model = timm.create_model("vit_s_ln")
    for blk in model.blocks:
        for slot in ("norm1", "norm2"):
            mod = getattr(blk, slot)
            assert isinstance(mod, nn.LayerNorm)
            assert mod.eps == 1e-5


def test_vit_t_dtn_forward_and_class_token_joins_before_block_10():
    torch.manual_seed(0)
    model = timm.create_model("vit_t_dtn").eval()
    seen = {}

    def hook(i):
        def fn(module, args):
            seen[i] = args[0].detach().clone()

        return fn

    handles = [model.blocks[i].register_forward_pre_hook(hook(i)) for i in (0, 9, 10, 11)]
    try:
        with torch.no_grad():
            out = model(torch.randn(2, 3, 224, 224))
    finally:
        for h in handles:
            h.remove()
    assert out.shape == (2, 1000)
    assert torch.isfinite(out).all()
    assert seen[0].shape == (2, 196, 192)
    assert seen[9].shape == (2, 196, 192)
    assert seen[10].shape == (2, 197, 192)
    assert seen[11].shape == (2, 197, 192)
    # the token put in front before block 10 is the learned class token itself
    torch.testing.assert_close(seen[10][:, 0], model.cls_token[0].expand(2, -1))


# ---------------------------------------------------------------------------------------------------------------------
# converter
def test_convert_deit_small_to_dtn():
    torch.manual_seed(0)
    model = create("deit_small_patch16_224", norm="dtn")
    assert model.num_prefix_tokens == 1
    assert len(model.blocks) == 12
    for blk in model.blocks:
        for slot in ("norm1", "norm2"):
            mod = getattr(blk, slot)
            assert isinstance(mod, DTN)
            assert mod.num_prefix_tokens == model.num_prefix_tokens == 1
            assert mod.grid_size == tuple(model.patch_embed.grid_size) == (14, 14)
            assert mod.num_heads == blk.attn.num_heads == 6
    assert isinstance(model.norm, nn.LayerNorm) and not isinstance(model.norm, DTN)
    assert model.norm_name == "dtn"
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 1000)
    assert torch.isfinite(out).all()


def test_convert_vit_tiny_to_rmsnorm():
    torch.manual_seed(0)
    model = create("vit_tiny_patch16_224", norm="rmsnorm")
    for blk in model.blocks:
        assert isinstance(blk.norm1, RMSNorm)
        assert isinstance(blk.norm2, RMSNorm)
    assert isinstance(model.norm, nn.LayerNorm)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 1000)
    assert torch.isfinite(out).all()


def test_convert_vit_tiny_to_powernorm_groups_by_heads():
    model = create("vit_tiny_patch16_224", norm="powernorm")
    for blk in model.blocks:
        assert isinstance(blk.norm1, PowerNorm) and blk.norm1.num_groups == blk.attn.num_heads == 3
        assert isinstance(blk.norm2, PowerNorm)
    assert isinstance(model.norm, nn.LayerNorm)
    assert model.norm_name == "powernorm"


def test_convert_distilled_model_has_two_prefix_tokens():
    torch.manual_seed(0)
    model = create("deit_tiny_distilled_patch16_224", norm="dtn")
    assert model.num_prefix_tokens == 2
    for blk in model.blocks:
        assert isinstance(blk.norm1, DTN) and blk.norm1.num_prefix_tokens == 2
        assert isinstance(blk.norm2, DTN) and blk.norm2.num_prefix_tokens == 2
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 1000)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("keep_affine", [True, False])
def test_convert_keep_affine_copies_layernorm_weights(keep_affine):
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    old = model.blocks[3].norm1
    with torch.no_grad():
        old.weight.copy_(torch.randn_like(old.weight))
        old.bias.copy_(torch.randn_like(old.bias))
    w, b = old.weight.detach().clone(), old.bias.detach().clone()
    out = convert_norms(model, "dtn", keep_affine=keep_affine)
    assert out is model
    new = model.blocks[3].norm1
    assert isinstance(new, DTN)
    if keep_affine:
        torch.testing.assert_close(new.weight.detach(), w, rtol=0, atol=0)
        torch.testing.assert_close(new.bias.detach(), b, rtol=0, atol=0)
    else:
        assert torch.equal(new.weight.detach(), torch.ones_like(w))
        assert torch.equal(new.bias.detach(), torch.zeros_like(b))


def test_convert_model_without_blocks_is_an_error():
    with pytest.raises(DTNBenchError, match="no .blocks"):
        convert_norms(nn.Sequential(nn.Linear(2, 2)), "dtn")


# ---------------------------------------------------------------------------------------------------------------------
# errors
def test_unknown_model_name_suggests_the_close_one():
    with pytest.raises(DTNBenchError) as ei:
        create("vit_s_dnt")
    msg = str(ei.value)
    assert "did you mean" in msg
    assert "vit_s_dtn" in msg
    assert "\n" not in msg
    suggestions = msg.split("did you mean:")[1].rstrip("?)").split(",")
    assert len(suggestions) == len({s.strip() for s in suggestions})  # each name once


def test_zoo_model_without_class_token():
    model = timm.create_model("vit_t_ln", class_token=False, global_pool="avg", img_size=64)
    assert model.cls_token is None
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)


def test_unknown_model_name_in_registry():
    with pytest.raises(DTNBenchError, match="did you mean"):
        MODELS.get("vit_s_dnt")


@pytest.mark.parametrize("name", ["vit_t_ln", "vit_tiny_patch16_224"])
def test_unknown_norm_in_create(name):
    with pytest.raises(DTNBenchError, match="unknown norm"):
        create(name, norm="nosuchnorm")


def test_create_zoo_with_other_norm():
    model = create("vit_t_ln", norm="rmsnorm")
    assert all(isinstance(blk.norm1, RMSNorm) for blk in list(model.blocks)[:10])
    assert all(isinstance(blk.norm1, nn.LayerNorm) for blk in list(model.blocks)[10:])


# ---------------------------------------------------------------------------------------------------------------------
# MACs
def test_count_gmacs_vit_s_ln_matches_reference():
    model = timm.create_model("vit_s_ln").train()
    gmacs = count_gmacs(model)
    assert abs(gmacs - 4.6) / 4.6 < 0.02, gmacs
    assert model.training  # the counter restores the mode it found


def vit_closed_form_gmacs(dim: int, depth: int, mlp: int, *, patch: int = 16, img: int = 224,
                          classes: int = 1000) -> float:
    """GMACs of a timm ViT with a class token, written out layer by layer (no code under test)."""
    patches = (img // patch) ** 2
    tokens = patches + 1
    embed = patches * dim * 3 * patch * patch
    qkv, proj = tokens * dim * 3 * dim, tokens * dim * dim
    attention = 2 * tokens * tokens * dim  # q @ k^T and attn @ v over all heads
    mlp_macs = 2 * tokens * dim * mlp
    return (embed + depth * (qkv + attention + proj + mlp_macs) + dim * classes) / 1e9


@pytest.mark.parametrize("name, dim, mlp, expect", [
    ("vit_small_patch16_224", 384, 1536, 4.598882304),
    ("deit_small_patch16_224", 384, 1536, 4.598882304),
    ("vit_tiny_patch16_224", 192, 768, 1.2536832),
])
def test_count_gmacs_timm_vits_equal_the_closed_form(name, dim, mlp, expect):
    # torch 2.14 dispatches fused attention on the CPU to _scaled_dot_product_flash_attention_for_cpu, which torch's
    # own counter records as 0 (ViT-S 4.224 GMACs); the closed form counts the attention products
    gmacs = count_gmacs(timm.create_model(name))
    assert gmacs == pytest.approx(vit_closed_form_gmacs(dim, 12, mlp), abs=1e-9)
    assert gmacs == pytest.approx(expect, abs=1e-4)


def test_attention_counts_are_the_same_for_every_sdpa_kernel():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from dtn_bench.models.info import flop_counter

    q, k, v = (torch.randn(2, 3, 50, 8, requires_grad=True) for _ in range(3))
    closed = 2 * 2 * 3 * 50 * 50 * (8 + 8)  # FLOPs: q @ k^T and attn @ v
    with flop_counter() as fused:
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    with sdpa_kernel(SDPBackend.MATH), flop_counter() as math:
        torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert fused.get_total_flops() == math.get_total_flops() == closed
    with flop_counter() as bwd:
        out.sum().backward()
    # torch's SDPA backward formula: the scores recomputed, then dV, dP, dQ, dK (5 products of 2*3*50*50*8 MACs)
    assert bwd.get_total_flops() == 2 * 5 * 2 * 3 * 50 * 50 * 8


def test_conversion_note_names_carried_missing_and_new_parameters():
    from dtn_bench.models.vit import conversion_note

    model = timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=64)
    assert conversion_note(model) is None  # not converted
    convert_norms(model, "rmsnorm")  # RMSNorm has a weight, no bias
    note = conversion_note(model)
    assert "replaced 24 block norms (LayerNorm); their affine (weight) carried" in note
    assert "not carried (the new norm has no such parameter): bias" in note and "new parameters" not in note
    assert model.norm_conversion["carried"] == {"weight": 24}
