"""timm's pretrained weights (``--pretrained``, ``--pretrained-file``) and the norm converter on a pretrained model.

No network: the "pretrained" weights are files the tests write (a seeded DeiT-T on 64 x 64 images, a 4 x 4 patch
grid), loaded through timm's own loader (its pretrained-config overlay); the hub path is exercised with timm's hub
reader replaced by one that returns such a state dict.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import timm
import torch
from cli_helpers import assert_one_line_error, assert_one_line_message
from torch import nn

import dtn_bench  # noqa: F401  (registers the zoo with timm)
from dtn_bench.errors import DTNBenchError
from dtn_bench.models import create
from dtn_bench.models.pretrained import check_request, create_pretrained
from dtn_bench.models.vit import conversion_note
from dtn_bench.norms import DTN

ARCH = "deit_tiny_patch16_224"
SMALL = {"img_size": 64}  # a 4 x 4 patch grid: every layer is there, forwards are cheap


def released(seed: int = 0, **kwargs) -> nn.Module:
    """A stand-in for a pretrained release: DeiT-T with seeded random weights and non-trivial LayerNorm affines."""
    torch.manual_seed(seed)
    model = timm.create_model(ARCH, pretrained=False, **{**SMALL, **kwargs})
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.2 * torch.randn_like(p))
    return model.eval()


def save(model: nn.Module, path, nest: str | None = None):
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(path))
    else:
        torch.save({nest: sd} if nest else sd, path)
    return path


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    model = released()
    return model, save(model, tmp_path_factory.mktemp("pretrained") / "deit_tiny.safetensors")


# ------------------------------------------------------------------------------------------------------------------
# loading through timm's loader
@pytest.mark.parametrize("suffix, nest", [(".safetensors", None), (".pth", "model")])
def test_pretrained_file_loads_through_timms_loader(tmp_path, suffix, nest):
    ref = released(1)
    path = save(ref, tmp_path / f"w{suffix}", nest)  # DeiT's own releases nest the weights under "model"
    model, weights = create_pretrained(ARCH, pretrained_file=path, **SMALL)
    for k, v in ref.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    assert weights.source == f"file:{path}" and weights.sha256 == sha(path)
    assert model.pretrained_cfg["file"] == str(path)  # the overlay: timm's own pretrained path read it
    assert "through timm's loader" in weights.message


def test_create_records_the_weights_and_plain_create_has_none(release):
    _, path = release
    model = create(ARCH, pretrained_file=str(path), **SMALL)
    assert model.pretrained_weights.source == f"file:{path}"
    assert not hasattr(create(ARCH, **SMALL), "pretrained_weights")


def test_hub_weights_are_timms_release_with_their_hash(monkeypatch, release):
    """``--pretrained`` without a file: timm resolves its release (here the hub reader returns the test's weights)."""
    ref, _ = release
    asked = []

    def fake_hub(hub_id, *args, **kwargs):
        asked.append(hub_id)
        return {k: v.clone() for k, v in ref.state_dict().items()}

    monkeypatch.setattr("timm.models._builder.load_state_dict_from_hf", fake_hub)
    monkeypatch.setattr("dtn_bench.models.pretrained._hub_file", lambda cfg: None)  # no cached file to hash
    model, weights = create_pretrained(ARCH, **SMALL)
    assert asked == ["timm/deit_tiny_patch16_224.fb_in1k"]
    assert weights.source == "timm:deit_tiny_patch16_224.fb_in1k"
    assert weights.sha256.startswith("tensors:") and len(weights.sha256) == len("tensors:") + 64
    _, again = create_pretrained(ARCH, **SMALL)
    assert again.sha256 == weights.sha256  # the same tensors, the same hash
    for k, v in ref.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


# ------------------------------------------------------------------------------------------------------------------
# bad input: one line each
def test_a_file_that_does_not_fit_is_one_line(tmp_path):
    other = released(2)
    sd = {k: v for k, v in other.state_dict().items() if not k.startswith("blocks.11.")}
    sd["head.weight"] = torch.zeros(1000, 7)
    path = tmp_path / "partial.pth"
    torch.save(sd, path)
    with pytest.raises(DTNBenchError) as e:
        create(ARCH, pretrained_file=str(path), **SMALL)
    message = assert_one_line_message(e.value, f"--pretrained-file {path} does not fit {ARCH}", "missing 12:",
                                      "blocks.11.", "(+9 more)", "shape mismatch 1: head.weight [1000, 7] vs "
                                      "[1000, 192]", "--debug lists all")
    assert "Error(s)" not in message
    with pytest.raises(DTNBenchError) as e:
        create(ARCH, pretrained_file=str(path), debug=True, **SMALL)
    assert_one_line_message(e.value, "blocks.11.mlp.fc2.bias")


def test_an_unreadable_or_absent_file_is_one_line(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(DTNBenchError) as e:
        create(ARCH, pretrained_file=str(junk), **SMALL)
    assert_one_line_message(e.value, f"cannot read --pretrained-file {junk}: it is a text file, not a checkpoint")
    with pytest.raises(DTNBenchError) as e:
        create(ARCH, pretrained_file=str(tmp_path / "absent.pth"), **SMALL)
    assert_one_line_message(e.value, "absent.pth does not exist or is not a file")


def test_requests_that_cannot_work_are_one_line(tmp_path):
    with pytest.raises(DTNBenchError) as e:
        create("vit_small_patch16_18x2_224", pretrained=True)  # in timm, but untrained
    assert_one_line_message(e.value, "vit_small_patch16_18x2_224 has no pretrained weights in timm",
                            "--pretrained-file")
    with pytest.raises(DTNBenchError) as e:
        create("vit_t_dtn", pretrained=True)
    assert_one_line_message(e.value, "vit_t_dtn is a dtn-bench zoo model", "--checkpoint PATH")
    with pytest.raises(DTNBenchError) as e:
        check_request(ARCH, pretrained=True, pretrained_file=None, checkpoint="w.pth")
    assert_one_line_message(e.value, "--pretrained and --checkpoint both give the weights")
    with pytest.raises(DTNBenchError) as e:
        check_request(ARCH, pretrained=True, pretrained_file=None, ema=False)
    assert_one_line_message(e.value, "--no-ema applies to --checkpoint")


# ------------------------------------------------------------------------------------------------------------------
# the converter on a pretrained model
def test_conversion_carries_every_affine_and_leaves_the_rest_at_init(release):
    ref, path = release
    model = create(ARCH, norm="dtn", pretrained_file=str(path), **SMALL)
    own = ref.state_dict()
    slots = [f"blocks.{i}.{s}" for i in range(12) for s in ("norm1", "norm2")]
    for name in slots:
        new = model.get_submodule(name)
        assert isinstance(new, DTN), name
        assert torch.equal(new.weight.detach(), own[f"{name}.weight"]), name
        assert torch.equal(new.bias.detach(), own[f"{name}.bias"]), name
        assert not new.mean_norm_weight.any() and not new.var_norm_weight.any()  # gates at their init, 0
        assert not new.pos_proj.bias.any()
        assert new.num_prefix_tokens == 1 and new.grid_size == (4, 4)
    for k, v in own.items():  # everything else is the release's
        if not any(k.startswith(s) for s in slots):
            assert torch.equal(model.state_dict()[k], v), k
    note = conversion_note(model)
    assert "replaced 24 block norms (LayerNorm)" in note and "(bias, weight) carried" in note
    assert "mean_norm_weight, pos_proj.bias, pos_proj.weight, var_norm_weight" in note and "untrained" in note


class LNLimit(nn.Module):
    """DTN's documented LN limit (both gates at 1): LN statistics of the RMS-pre-normalised tokens, unbiased."""

    def __init__(self, ln: nn.LayerNorm, heads: int, eps: float = 1e-5):
        super().__init__()
        self.weight, self.bias, self.heads, self.eps = ln.weight, ln.bias, heads, eps

    def forward(self, x):
        B, T, C = x.shape
        xh = x.view(B, T, self.heads, C // self.heads)
        xn = (xh / (xh.pow(2).mean(-1, keepdim=True) + self.eps).sqrt()).view(B, T, C)
        mu, var = xn.mean(-1, keepdim=True), xn.var(-1, keepdim=True, unbiased=True)
        return (xn - mu) / (var + self.eps).sqrt() * self.weight + self.bias


def test_gates_at_their_ln_limit_give_the_originals_logits_with_dtns_ln_limit(release):
    """Gate logits of 40 (sigmoid = 1 in fp32): the converted model computes the original with DTN's LN limit.

    DTN's LN limit is LayerNorm of its RMS-pre-normalised input (per (token, head) chunk) with the unbiased variance
    (module docstring of :mod:`dtn_bench.norms.dtn`); the reference is the original model, its weights untouched,
    with each block LayerNorm computing exactly that. (Plain LayerNorm differs from it unless every head's chunk
    of a token has the same RMS: that is DTN's definition, not the converter's.)
    """
    ref, path = release
    model = create(ARCH, norm="dtn", pretrained_file=str(path), **SMALL).eval()
    gates = {k: torch.full_like(v, 40.0) for k, v in model.state_dict().items() if k.endswith("norm_weight")}
    assert len(gates) == 48
    model.load_state_dict(gates, strict=False)
    reference = released()
    reference.load_state_dict(ref.state_dict())
    for blk in reference.blocks:
        for slot in ("norm1", "norm2"):
            setattr(blk, slot, LNLimit(getattr(blk, slot), blk.attn.num_heads))
    torch.manual_seed(3)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------------------------------
# the commands
def _layout(root):
    from test_imagenet_c import make_layout

    return make_layout(root, corruptions=("fog",), severities=(1,), per=1)


def test_imagenet_c_pretrained_file_is_recorded_and_keyed(tmp_path, invoke):
    torch.manual_seed(0)
    weights = save(timm.create_model(ARCH, pretrained=False, num_classes=3), tmp_path / "deit3.safetensors")
    data = _layout(tmp_path / "data")
    args = ["imagenet-c", "--model", ARCH, "--num-classes", "3", "--data-dir", str(data), "--corruptions", "fog",
            "--severities", "1", "--clean-error", "0.3", "--workers", "0", "--out", str(tmp_path / "out")]
    code, out, err = invoke(*args, "--pretrained-file", str(weights), "--norm", "dtn", "--run-id", "pre")
    assert code == 0, err
    assert "randomly initialised" not in err and f"pretrained weights: {weights} through timm's loader" in err
    assert "untrained" in err and "timm left it at its random init" in err  # 3 outputs, not the release's 1000
    run = tmp_path / "out" / "imagenet-c" / "pre"
    cfg = json.loads((run / "config.json").read_text())
    digest = sha(weights)
    assert (cfg["weights_source"], cfg["weights_sha256"], cfg["checkpoint_sha256"]) == (f"file:{weights}", digest,
                                                                                        digest)
    assert cfg["weights"] == "pretrained" and cfg["pretrained_file"] == str(weights)
    import pandas as pd

    rows = pd.read_csv(run / "rows.csv")
    assert set(rows["weights_source"]) == {f"file:{weights}"} and set(rows["weights_sha256"]) == {digest}
    from dtn_bench.imagenet_c import make_config, plan

    base = dict(num_classes=3, corruptions=["fog"], severities=[1], norm="dtn", workers=0)
    def key(**settings) -> str:  # the engine keys the config as given together with the plan's provenance
        p = plan(make_config(ARCH, data, **base, **settings))
        return p.config.run_key(p.provenance)

    found = plan(make_config(ARCH, data, pretrained_file=weights, **base)).provenance
    assert (found["weights"], found["weights_sha256"]) == ("pretrained", digest)
    assert key(pretrained_file=weights) != key()  # random weights: another key
    moved = tmp_path / "moved.safetensors"
    moved.write_bytes(weights.read_bytes())  # the same file elsewhere: the same key (its path is not keyed)
    assert key(pretrained_file=moved) == key(pretrained_file=weights)


@pytest.mark.parametrize("extra, expected", [
    (["--pretrained", "--checkpoint", "w.pth"], "--pretrained and --checkpoint both give the weights"),
    (["--pretrained", "--no-ema"], "--no-ema applies to --checkpoint"),
    (["--pretrained-file", "absent.pth"], "--pretrained-file absent.pth does not exist"),
])
def test_imagenet_c_bad_pretrained_requests(tmp_path, invoke, extra, expected):
    data = _layout(tmp_path / "data")
    code, _, err = invoke("imagenet-c", "--model", ARCH, "--data-dir", str(data), *extra)
    assert_one_line_error(code, err, expected, preceded_by=["ImageNet-C"])


def test_imagenet_c_zoo_model_and_untrained_timm_model(tmp_path, invoke):
    data = _layout(tmp_path / "data")
    code, _, err = invoke("imagenet-c", "--model", "vit_t_ln", "--data-dir", str(data), "--pretrained")
    assert_one_line_error(code, err, "vit_t_ln is a dtn-bench zoo model", preceded_by=["ImageNet-C"])
    code, _, err = invoke("imagenet-c", "--model", "vit_small_patch16_18x2_224", "--data-dir", str(data),
                          "--pretrained")
    assert_one_line_error(code, err, "has no pretrained weights in timm", preceded_by=["ImageNet-C"])


def test_info_with_a_pretrained_file(release, invoke):
    _, path = release
    code, out, err = invoke("info", ARCH, "--pretrained-file", str(path), "--norm", "dtn", "--no-macs")
    assert code == 0, err
    assert f"file:{path}" in out and sha(path)[:20] in out
    assert "untrained" in err
    code, _, err = invoke("info", "vit_t_ln", "--pretrained")
    assert_one_line_error(code, err, "vit_t_ln is a dtn-bench zoo model")


def test_a_text_file_as_pretrained_file_says_what_it_is(tmp_path):
    # A25 (issue 21 section 5): timm's loader said "IndexError: pop from empty list"
    text = tmp_path / "weights.pth"
    text.write_text("this is not a checkpoint\n")
    with pytest.raises(DTNBenchError) as ei:
        check_request(ARCH, pretrained=False, pretrained_file=text)
    assert str(ei.value) == (f"cannot read --pretrained-file {text}: it is a text file, not a checkpoint (it begins "
                             "'this is not a checkpoint')")
