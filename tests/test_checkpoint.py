"""Loading checkpoints: file formats, nesting, the authors' naming, and one-line errors for files that do not fit."""

from __future__ import annotations

import argparse
import hashlib
import re

import pytest
import timm
import torch
from cli_helpers import assert_one_line_message
from safetensors.torch import save_file

import dtn_bench  # noqa: F401  (registers the zoo with timm)
from dtn_bench.checkpoint import load_checkpoint, read_state_dict
from dtn_bench.errors import DTNBenchError

# The checkpoint tests use ViT-T on 64x64 images (a 4x4 patch grid): every layer is there, forwards are cheap.
IMG = 64
IMAGES = torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(123))


def make(name: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = timm.create_model(name, img_size=IMG).eval()
    with torch.no_grad():  # make every parameter seed-dependent (gates, biases and affines start as constants)
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model


def plain(sd: dict) -> dict:
    return {k: v.detach().contiguous().clone() for k, v in sd.items()}


def assert_same_state(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def outputs(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(IMAGES)


@pytest.fixture(scope="module")
def source():
    """A vit_t_dtn with its state dict and outputs."""
    model = make("vit_t_dtn", 1)
    return model, plain(model.state_dict()), outputs(model)


@pytest.fixture
def target():
    """A fresh vit_t_dtn that differs from ``source``."""
    return make("vit_t_dtn", 2)


# ---------------------------------------------------------------------------------------------------------------------
# formats
@pytest.mark.parametrize("suffix", [".pth", ".pt", ".bin", ".safetensors", ".SAFETENSORS"])
def test_round_trip(tmp_path, source, target, suffix):
    model, sd, out = source
    path = tmp_path / f"weights{suffix}"
    if suffix.lower() == ".safetensors":
        save_file(plain(sd), str(path))
    else:
        torch.save(sd, path)
    assert not torch.equal(target.state_dict()["blocks.0.norm1.pos_proj.weight"], sd["blocks.0.norm1.pos_proj.weight"])
    assert not torch.allclose(outputs(target), out)
    info = load_checkpoint(target, path)
    assert_same_state(plain(target.state_dict()), sd)
    assert torch.equal(outputs(target), out)
    assert info["path"] == str(path)
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["tensors"] == len(sd)


# ---------------------------------------------------------------------------------------------------------------------
# nesting
@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda sd: {"model": sd}, id="model"),
        pytest.param(lambda sd: {"state_dict": sd, "epoch": 3}, id="state_dict"),
        pytest.param(lambda sd: {"model_ema": sd}, id="model_ema"),
        pytest.param(lambda sd: {f"module.{k}": v for k, v in sd.items()}, id="module-prefix"),
        pytest.param(lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}}, id="nested-module-prefix"),
    ],
)
def test_nested_checkpoints(tmp_path, source, target, wrap):
    _, sd, out = source
    path = tmp_path / "nested.pth"
    torch.save(wrap(sd), path)
    assert_same_state(read_state_dict(path), sd)
    load_checkpoint(target, path)
    assert_same_state(plain(target.state_dict()), sd)
    assert torch.equal(outputs(target), out)


def saver_checkpoint(raw: dict, ema: dict | None) -> dict:
    """A file in the layout of timm's ``CheckpointSaver`` (the authors' train.py): every key it writes."""
    out = {"epoch": 299, "arch": "vit_t_dtn", "state_dict": raw, "optimizer": {"state": {}, "param_groups": []},
           "version": 2, "args": argparse.Namespace(model="vit_t_dtn", model_ema=ema is not None), "metric": 72.1}
    if ema is not None:
        out["state_dict_ema"] = ema
    return out


@pytest.fixture(scope="module")
def ema_source():
    model = make("vit_t_dtn", 7)
    return plain(model.state_dict()), outputs(model)


@pytest.mark.parametrize("layout", ["saver", "deit"])
def test_ema_weights_by_default_and_raw_with_no_ema(tmp_path, source, ema_source, layout):
    _, sd, out = source
    ema_sd, ema_out = ema_source
    assert not torch.allclose(out, ema_out)
    path = tmp_path / "checkpoint.pth.tar"
    torch.save(saver_checkpoint(sd, ema_sd) if layout == "saver" else {"model": sd, "model_ema": ema_sd}, path)
    key = "state_dict_ema" if layout == "saver" else "model_ema"

    ema_target = make("vit_t_dtn", 3)
    info = load_checkpoint(ema_target, path)  # the EMA weights, as timm's load_checkpoint(use_ema=True) takes them
    assert_same_state(plain(ema_target.state_dict()), ema_sd)
    assert torch.equal(outputs(ema_target), ema_out)
    assert (info["weights"], info["key"], info["has_ema"]) == ("ema", key, True)
    assert "loaded the EMA weights" in info["message"] and key in info["message"]

    raw_target = make("vit_t_dtn", 3)
    info = load_checkpoint(raw_target, path, ema=False)
    assert_same_state(plain(raw_target.state_dict()), sd)
    assert torch.equal(outputs(raw_target), out)
    assert (info["weights"], info["has_ema"]) == ("raw", True)
    assert "raw weights" in info["message"]


def test_no_ema_on_a_file_without_ema_is_a_note(tmp_path, source, target):
    _, sd, out = source
    path = tmp_path / "raw.pth"
    torch.save(saver_checkpoint(sd, None), path)
    info = load_checkpoint(target, path, ema=False)
    assert torch.equal(outputs(target), out)
    assert (info["weights"], info["has_ema"]) == ("raw", False)
    assert "holds no EMA weights, so --no-ema changes nothing" in info["message"]
    assert "\n" not in info["message"]
    assert load_checkpoint(target, path)["weights"] == "raw"


def test_ema_weights_that_do_not_fit_are_one_line(tmp_path, source):
    _, sd, _ = source
    ema_ln = plain(make("vit_t_ln", 0).state_dict())
    path = tmp_path / "mixed.pth"
    torch.save(saver_checkpoint(sd, ema_ln), path)
    with pytest.raises(DTNBenchError) as e:
        load_checkpoint(make("vit_t_dtn", 2), path)
    assert_one_line_message(e.value, "EMA weights, state_dict_ema", "--no-ema loads the raw weights")
    target = make("vit_t_dtn", 2)
    assert load_checkpoint(target, path, ema=False)["weights"] == "raw"  # the raw ones fit


def test_only_ema_weights_and_no_ema_is_one_line(tmp_path, source):
    _, sd, _ = source
    path = tmp_path / "ema-only.pth"
    torch.save({"state_dict_ema": sd, "epoch": 1}, path)
    with pytest.raises(DTNBenchError, match="holds EMA weights .* but no raw state dict") as e:
        load_checkpoint(make("vit_t_dtn", 2), path, ema=False)
    assert_one_line_message(e.value)


# ---------------------------------------------------------------------------------------------------------------------
# the authors' checkpoints
def test_authors_checkpoint_without_qkv_bias(tmp_path, source):
    _, sd, _ = source
    theirs = {k: v for k, v in sd.items() if not k.endswith("attn.qkv.bias")}
    dropped = [k for k in sd if k not in theirs]
    assert len(dropped) == 12
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": theirs, "args": argparse.Namespace(lr=1), "epoch": 299}, path)

    target = make("vit_t_dtn", 4)
    with torch.no_grad():
        for blk in target.blocks:
            blk.attn.qkv.bias.fill_(1.0)  # so that zeros can only come from the loader
    load_checkpoint(target, path)
    loaded = target.state_dict()
    for k in dropped:
        assert torch.equal(loaded[k], torch.zeros_like(loaded[k])), k
    for k, v in theirs.items():
        assert torch.equal(loaded[k], v), k

    # it computes what the source model computes with zero qkv biases
    reference = make("vit_t_dtn", 5)
    reference.load_state_dict({**theirs, **{k: torch.zeros_like(sd[k]) for k in dropped}})
    assert torch.equal(outputs(target), outputs(reference))


# ---------------------------------------------------------------------------------------------------------------------
# errors
@pytest.fixture(scope="module")
def ln_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ln") / "vit_t_ln.pth"
    torch.save(make("vit_t_ln", 1).state_dict(), path)
    return path


def listed_keys(msg: str) -> list[str]:
    return re.findall(r"blocks\.\d+\.norm\d\.\w+(?:\.\w+)?", msg)


def test_ln_checkpoint_into_dtn_model(ln_checkpoint, target):
    before = plain(target.state_dict())
    with pytest.raises(DTNBenchError) as ei:
        load_checkpoint(target, ln_checkpoint)
    msg = assert_one_line_message(ei.value, "missing", "pos_proj", str(ln_checkpoint), "--debug")
    assert_same_state(plain(target.state_dict()), before)  # nothing was loaded

    with pytest.raises(DTNBenchError) as ei_debug:
        load_checkpoint(target, ln_checkpoint, debug=True)
    full = assert_one_line_message(ei_debug.value)
    assert len(listed_keys(full)) > len(listed_keys(msg))
    assert len(listed_keys(full)) == 80  # 20 DTN layers x (mean/var gates, pos_proj weight and bias)


def test_vit_s_checkpoint_into_vit_t(tmp_path):
    path = tmp_path / "vit_s_ln.pth"
    torch.save(timm.create_model("vit_s_ln").state_dict(), path)
    with pytest.raises(DTNBenchError) as ei:
        load_checkpoint(make("vit_t_ln", 0), path)
    assert_one_line_message(ei.value, "shape mismatch")


def test_unreadable_checkpoint(tmp_path, target):
    path = tmp_path / "garbage.pth"
    path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                   dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(DTNBenchError, match="cannot read checkpoint") as ei:
        load_checkpoint(target, path)
    assert_one_line_message(ei.value)


def test_unreadable_safetensors(tmp_path, target):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(b"\x00\x01not a safetensors file" * 10)
    with pytest.raises(DTNBenchError, match="cannot read checkpoint") as ei:
        load_checkpoint(target, path)
    assert_one_line_message(ei.value)


def test_missing_checkpoint(tmp_path, target):
    with pytest.raises(DTNBenchError, match="does not exist") as ei:
        load_checkpoint(target, tmp_path / "nope.pth")
    assert_one_line_message(ei.value)


def test_checkpoint_without_state_dict(tmp_path, target):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(3), torch.ones(2)], path)
    with pytest.raises(DTNBenchError, match="no state dict") as ei:
        load_checkpoint(target, path)
    assert_one_line_message(ei.value)


# issue 21 section 5: say what the file is and why it was refused; never pass on torch's weights_only=False advice
class _Evil:
    def __reduce__(self):  # must never run: it would create a file named PWNED
        import os

        return os.system, ("touch PWNED",)


def test_unsafe_pickle_is_refused_naming_the_blocked_global(tmp_path, target, monkeypatch):
    import pickle

    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pth"
    torch.save({"model": _Evil()}, evil)
    with pytest.raises(DTNBenchError) as ei:
        load_checkpoint(target, evil)
    line = assert_one_line_message(ei.value, f"cannot read checkpoint {evil}: refused: it would import ",
                                   "system, which a weights file never needs", "nothing in it ran")
    assert "weights_only` set to `False`" not in line and "Re-running" not in line
    raw = tmp_path / "evil_legacy.pth"  # a plain pickle, not torch.save
    raw.write_bytes(pickle.dumps(_Evil(), protocol=4))
    with pytest.raises(DTNBenchError) as ei:
        load_checkpoint(target, raw)
    assert_one_line_message(ei.value, "refused: a pickle with opcode", "not a torch weights file")
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("content, message", [
    (b"this is not a checkpoint\n", "it is a text file, not a checkpoint (it begins 'this is not a checkpoint')"),
    (b"", "the file is empty (0 bytes)"),
    (bytes(range(1, 200)), "not a checkpoint (neither a torch.save file nor safetensors; it begins with the bytes "
                           "01 02"),
])
def test_files_that_are_no_checkpoint_say_what_they_are(content, message, tmp_path, target):
    # A10 / A25 / G33: a text file said "pop from empty list"
    for name in ("x.pth", "x.safetensors"):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(DTNBenchError) as ei:
            load_checkpoint(target, path)
        assert_one_line_message(ei.value, f"cannot read checkpoint {path}: {message}")


def test_a_truncated_checkpoint_gives_torchs_first_sentence(tmp_path, target, source):
    path = tmp_path / "cut.pth"
    torch.save(source[1], path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DTNBenchError) as ei:
        load_checkpoint(target, path)
    line = assert_one_line_message(ei.value, f"cannot read checkpoint {path}: ")
    assert "weights_only" not in line and len(line) < 200
