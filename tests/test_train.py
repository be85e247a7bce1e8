"""dtn-bench train: recipes, typed overrides, data formats, the loop, resume, checkpoints, diagnostics, bad input."""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from cli_helpers import Killed, assert_one_line_error, assert_one_line_message
from PIL import Image

import dtn_bench  # noqa: F401  (registers the models with timm)
from dtn_bench.errors import DTNBenchError
from dtn_bench.train import loop
from dtn_bench.train.config import TrainConfig
from dtn_bench.train.data import load_data
from dtn_bench.train.suite import train

TINY = dict(model="vit_cifar_t_ln", img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2,
            local_up_to_layer=1, epochs=3, batch=8, lr=1e-3, warmup_epochs=1, device="cpu", diag_images=8)
"""A 2-block ViT at 16 px: a few milliseconds a step."""
RANDOM_AUG = dict(aa="rand-m9-mstd0.5-inc1", hflip=0.5, reprob=0.25, mixup=0.8, cutmix=1.0, drop_path=0.1,
                  dropout=0.1, scale=(0.5, 1.0))
"""Every random stream the loop has: RandAugment, crops, flips, erasing, mixup / cutmix, drop path, dropout."""
NO_AUG = dict(aa=None, hflip=0.0, reprob=0.0, mixup=0.0, cutmix=0.0, scale=(1.0, 1.0), ratio=(1.0, 1.0),
              color_jitter=0.0, repeated_aug=False, drop_path=0.0, dropout=0.0)
"""Nothing random in the data (the 1- vs 2-process comparison)."""
OWN_SHAPE = dict(img_size=None, patch_size=None, embed_dim=None, depth=None, num_heads=None, local_up_to_layer=None)
"""The model's own shape (the quick recipe sets a small one), as the evaluation suites build it by name."""


# ------------------------------------------------------------------------------------------------------------------
# data the tests make
def write_cifar(root: Path, dataset: str = "cifar10", n_train: int = 8, n_test: int = 12, skip: str | None = None,
                seed: int = 0) -> Path:
    """CIFAR python pickles as released (protocol 2, bytes keys, CHW rows); each class has its own mean colour."""
    sub, train_files, test_files, key, classes = (
        ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels", 10)
        if dataset == "cifar10" else ("cifar-100-python", ["train"], ["test"], b"fine_labels", 100))
    folder = root / sub
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in (*train_files, *test_files):
        if name == skip:
            continue
        n = n_test if name in test_files else n_train
        labels = rng.integers(0, classes, n)
        colour = (labels[:, None] * 25 % 256).repeat(3072, axis=1)
        data = np.clip(colour + rng.integers(-20, 20, (n, 3072)), 0, 255).astype(np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), key: labels.tolist(), b"data": data,
                         b"filenames": [f"{i}.png".encode() for i in range(n)]}, f, protocol=2)
    return folder


def write_imagenet(root: Path, classes=("n001", "n002", "n003"), per: int = 4, val_classes=None,
                   size: int = 32) -> Path:
    rng = np.random.default_rng(0)
    for split, names in (("train", classes), ("val", val_classes or classes)):
        for k, w in enumerate(names):
            d = root / split / w
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per):
                img = np.clip(rng.normal(60 * k + 40, 20, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{w}_{i}.JPEG", quality=90)
    return root


def write_tiny_imagenet(root: Path, wnids=("n02", "n01"), per: int = 3, annotations: bool = True) -> Path:
    rng = np.random.default_rng(0)
    for w in wnids:
        d = root / "train" / w / "images"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(d / f"{w}_{i}.JPEG")
    (root / "val" / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i, w in enumerate(reversed(wnids)):
        name = f"val_{i}.JPEG"
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / "val" / "images" / name)
        lines.append(f"{name}\t{w}\t0\t0\t63\t63")
    if annotations:
        (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    return root


@pytest.fixture(scope="module")
def cifar(tmp_path_factory) -> Path:
    return write_cifar(tmp_path_factory.mktemp("cifar"))


def tiny(cifar: Path, **kw) -> dict:
    return {**TINY, "dataset": "cifar10", "data_dir": str(cifar), **kw}


def rows_of(run: Path) -> pd.DataFrame:
    return pd.read_parquet(run / "rows.parquet")


def read_ckpt(path: Path) -> dict:
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, weights_only=True)


# ------------------------------------------------------------------------------------------------------------------
# typed overrides and recipes
def test_assignments_are_typed_by_the_fields():
    from dtn_bench.fields import parse_assignments

    got = parse_assignments(TrainConfig, ["lr=1e-3", "epochs=50", "aa=none", "scale=0.5,1", "model_ema=false",
                                          "opt-betas=0.9,0.95,0.99"])
    assert got == {"lr": 1e-3, "epochs": 50, "aa": None, "scale": (0.5, 1.0), "model_ema": False,
                   "opt_betas": (0.9, 0.95, 0.99)}
    assert isinstance(got["scale"][1], float)


@pytest.mark.parametrize("item, expected", [
    ("lrr=1e-3", "unknown setting 'lrr' (did you mean: lr"),
    ("epochs=1.5", "--set epochs=1.5: expected an int"),
    ("lr=fast", "--set lr=fast: expected a float or none"),
    ("scale=0.5", "--set scale=0.5: expected comma-separated floats (2)"),
    ("model_ema=maybe", "expected a bool"),
    ("lr", "expected key=value"),
    ("epochs=none", "--set epochs=none: expected an int"),
])
def test_bad_assignments_are_one_line_errors(item, expected):
    from dtn_bench.fields import parse_assignments

    with pytest.raises(DTNBenchError) as e:
        parse_assignments(TrainConfig, [item])
    assert_one_line_message(e.value, expected)


def test_precedence_defaults_recipe_then_settings():
    cfg, sources = TrainConfig.resolve("cifar", {"epochs": 7, "aa": None})
    assert (cfg.epochs, cfg.aa, cfg.batch, cfg.opt) == (7, None, 128, "adamw")
    assert sources["epochs"] == "set" and sources["batch"] == "recipe" and sources["compile"] == "default"
    assert cfg.recipe == "cifar" and cfg.scaled_lr == pytest.approx(1e-3)
    assert TrainConfig.resolve("cifar", {"batch": 256})[0].scaled_lr == pytest.approx(2e-3)  # linear scaling


AUTHORS = {  # ../shared/reference/train_recipes.md section 1, written out
    "epochs": 300, "opt": "adamw", "weight_decay": 0.05, "lr_base": 5e-4, "lr_base_size": 512, "sched": "cosine",
    "warmup_epochs": 5, "warmup_lr": 1e-6, "min_lr": 1e-5, "cooldown_epochs": 0, "smoothing": 0.1,
    "aa": "rand-m9-mstd0.5-inc1", "color_jitter": 0.4, "train_interpolation": "bicubic", "scale": (0.08, 1.0),
    "hflip": 0.5, "repeated_aug": True, "drop_path": 0.1, "dropout": 0.0, "mixup": 0.0, "cutmix": 0.0,
    "reprob": 0.0, "model_ema": True, "model_ema_decay": 0.99996, "precision": "fp32", "seed": 42,
    "dataset": "imagenet", "batch": 256, "sched_on_updates": False}
DEIT = {  # section 2
    "batch": 1024, "epochs": 300, "opt": "adamw", "opt_eps": 1e-8, "weight_decay": 0.05, "lr_base": 5e-4,
    "lr_base_size": 512, "sched": "cosine", "warmup_epochs": 5, "warmup_lr": 1e-6, "min_lr": 1e-5,
    "drop_path": 0.1, "aa": "rand-m9-mstd0.5-inc1", "color_jitter": 0.4, "train_interpolation": "bicubic",
    "smoothing": 0.1, "repeated_aug": True, "reprob": 0.25, "remode": "pixel", "recount": 1, "mixup": 0.8,
    "cutmix": 1.0, "mixup_prob": 1.0, "mixup_switch_prob": 0.5, "mixup_mode": "batch", "model_ema": True,
    "model_ema_decay": 0.99996, "clip_grad": None, "seed": 0, "precision": "fp16"}


@pytest.mark.parametrize("recipe, facts", [("authors", AUTHORS), ("deit", DEIT)])
def test_recipes_match_the_facts(recipe, facts):
    cfg = TrainConfig.resolve(recipe, {"data_dir": "/data/imagenet"})[0]
    assert {k: getattr(cfg, k) for k in facts} == facts
    assert cfg.scaled_lr == pytest.approx(facts["lr_base"] * facts["batch"] / 512)


def test_every_recipe_resolves_and_the_quick_one_needs_no_data():
    from dtn_bench.suites import load_presets

    for name in load_presets("train"):
        over = {} if name == "quick" else {"data_dir": "/somewhere"}
        assert TrainConfig.resolve(name, over)[0].recipe == name
    quick = TrainConfig.resolve("quick", {})[0]
    assert quick.dataset == "digits" and quick.device == "cpu" and quick.data_dir is None


def test_recipe_values_are_type_checked(monkeypatch):
    import dtn_bench.suites as suites

    real = suites.load_preset
    monkeypatch.setattr(suites, "load_preset", lambda s, n: {**real(s, n), "epochs": "ten"})
    with pytest.raises(DTNBenchError) as e:
        TrainConfig.resolve("quick", {})
    assert_one_line_message(e.value, "suites/train.yaml recipe quick: epochs='ten': expected an integer")


# ------------------------------------------------------------------------------------------------------------------
# data formats
def test_cifar_pickles_read_as_hwc_images(tmp_path):
    folder = write_cifar(tmp_path, n_train=3, n_test=2)
    with open(folder / "data_batch_2", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    data = load_data("cifar10", str(tmp_path))  # the parent of cifar-10-batches-py
    assert len(data.train) == 15 and len(data.val) == 2 and data.classes == 10
    img = data.train.images[3]  # first image of data_batch_2
    chw = raw[b"data"][0].reshape(3, 32, 32)
    assert img.shape == (32, 32, 3) and np.array_equal(img[5, 7], chw[:, 5, 7])
    assert data.train.labels[3] == raw[b"labels"][0]
    hundred = load_data("cifar100", str(write_cifar(tmp_path / "c100", "cifar100", 4, 2)))
    assert hundred.classes == 100 and len(hundred.train) == 4


def test_cifar_unpickler_refuses_code(tmp_path):
    folder = write_cifar(tmp_path, n_train=2, n_test=2)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo hacked",))

    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil()}, f)
    with pytest.raises(DTNBenchError) as e:
        load_data("cifar10", str(folder))
    assert_one_line_message(e.value, "test_batch as a CIFAR python pickle", "refused global")


def test_tiny_imagenet_labels_by_sorted_wnid(tmp_path):
    data = load_data("tiny-imagenet", str(write_tiny_imagenet(tmp_path)))
    assert data.class_names == ["n01", "n02"] and len(data.train) == 6
    assert [Path(p).name for p in data.val.paths] == ["val_0.JPEG", "val_1.JPEG"]
    assert data.val.labels.tolist() == [0, 1]  # val_0 is n01 (wnids reversed), val_1 is n02


def test_imagenet_folders(tmp_path):
    data = load_data("imagenet", str(write_imagenet(tmp_path)))
    assert data.classes == 3 and len(data.train) == 12 and sorted(set(data.val.labels.tolist())) == [0, 1, 2]


@pytest.mark.parametrize("make, dataset, expected", [
    (lambda p: write_cifar(p, skip="data_batch_3"), "cifar10", ["missing data_batch_3"]),
    (lambda p: write_cifar(p, "cifar100", skip="test"), "cifar100", ["missing test"]),
    (lambda p: write_tiny_imagenet(p, annotations=False), "tiny-imagenet", ["val_annotations.txt"]),
    (lambda p: write_imagenet(p, val_classes=("n001", "n002", "n009")), "imagenet",
     ["train and val classes differ", "only in train/: n003", "only in val/: n009"]),
    (lambda p: p / "nowhere", "imagenet", ["does not exist"]),
])
def test_bad_layouts_are_one_line_errors_before_any_file(make, dataset, expected, tmp_path, invoke):
    root = make(tmp_path / "data")
    code, _, err = invoke("train", "--dataset", dataset, "--data-dir", str(root), "--out", str(tmp_path / "res"),
                          "--set", "epochs=1")
    assert_one_line_error(code, err, *expected)
    assert not (tmp_path / "res").exists()


# ------------------------------------------------------------------------------------------------------------------
# the loop
def test_a_run_writes_rows_curves_and_checkpoints_in_the_saver_layout(cifar, tmp_path):
    res = train("quick", out=tmp_path, run_id="a", **tiny(cifar, norm="dtn", epochs=2))
    df = res.rows
    assert sorted(df["epoch"].unique()) == [0, 1]
    val = df[(df.metric == "top1_acc") & (df.split == "val")]
    assert set(val["weights"]) == {"raw", "ema"} and val["value"].between(0, 1).all()
    for metric in ("loss", "lr", "throughput_img_s", "train_time_s", "epoch_time_s", "top5_acc", "ln_share_var",
                   "ln_share_mean", "params"):
        assert (df.metric == metric).any(), metric
    gates = df[df.metric == "ln_share_var"]
    assert set(gates["layer"]) == {"blocks.0.norm1", "blocks.0.norm2"}  # DTN in block 0, LN after local_up_to_layer
    assert set(df["norm"]) == {"dtn"} and set(df["data"]) == {f"cifar10:{cifar}"}
    for name in ("table.md", "table.tex", "curves.png", "diagnostics.png", "config.json"):
        assert (res.path / name).is_file(), name
    ck = read_ckpt(res.path / "checkpoints" / "last.pth.tar")
    assert {"state_dict", "state_dict_ema", "epoch", "arch", "args", "optimizer", "metric", "version"} <= set(ck)
    assert ck["epoch"] == 1 and ck["arch"] == "vit_cifar_t_ln" and ck["version"] == 2
    assert isinstance(ck["args"], argparse.Namespace) and ck["args"].norm == "dtn"
    ema_top1 = df[(df.metric == "top1_acc") & (df.weights == "ema") & (df.epoch == 1)]["value"].iloc[0]
    assert ck["metric"] == pytest.approx(ema_top1)
    best = read_ckpt(res.path / "checkpoints" / "model_best.pth.tar")
    assert best["metric"] == max(df[(df.metric == "top1_acc") & (df.weights == "ema")]["value"])


def test_evaluation_counts_match_a_plain_loop(cifar, tmp_path):
    cfg = TrainConfig.resolve("quick", tiny(cifar, eval_batch=5))[0]
    data = load_data("cifar10", str(cifar))
    run = loop.build(cfg, data, tmp_path)
    got = loop.evaluate(run, run.model)
    _, val_tf, _ = loop.transforms(cfg, run.model)
    x = torch.stack([val_tf(data.val.image(i)) for i in range(len(data.val))])
    y = torch.from_numpy(data.val.labels)
    with torch.no_grad():
        logits = run.model.eval()(x)
    assert got["top1"] == pytest.approx(float((logits.argmax(1) == y).float().mean()))
    top5 = (logits.topk(5, 1).indices == y[:, None]).any(1).float().mean()
    assert got["top5"] == pytest.approx(float(top5))
    assert got["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, y)), rel=1e-5)


def _weights(path: Path) -> dict:
    ck = read_ckpt(path)
    return {"state_dict": ck["state_dict"], "state_dict_ema": ck["state_dict_ema"],
            "exp_avg": [s["exp_avg"] for s in ck["optimizer"]["state"].values()]}


def _assert_identical(a: dict, b: dict) -> None:
    for key in ("state_dict", "state_dict_ema"):
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    assert all(torch.equal(x, y) for x, y in zip(a["exp_avg"], b["exp_avg"], strict=True))


@pytest.mark.parametrize("kill", ["train_epoch", "train_step"])
def test_resume_after_a_kill_ends_bit_identical(cifar, tmp_path, kill):
    """Killed after a checkpoint but before its rows, or part-way through an epoch: the resumed run ends with the
    weights, EMA and optimizer state of the uninterrupted one, every random stream in use."""
    settings = tiny(cifar, norm="dtn", **RANDOM_AUG)
    full = train("quick", out=tmp_path, run_id="full", **settings)
    calls = {"n": 0}

    def die(e):  # the second epoch's checkpoint is written, or part-way through the second epoch
        calls["n"] += e.kind == kill
        if e.kind == kill and (e.epoch == 1 if kill == "train_epoch" else calls["n"] == 8):  # 5 per epoch
            raise Killed

    with pytest.raises(Killed):
        train("quick", out=tmp_path, run_id="cut", on_event=die, **settings)
    cut = rows_of(tmp_path / "train" / "cut")
    assert sorted(cut["epoch"].unique()) == [0]
    resumed = train(None, out=tmp_path, run_id="cut", resume=True)
    assert sorted(resumed.rows["epoch"].unique()) == [0, 1, 2]
    _assert_identical(_weights(full.path / "checkpoints" / "last.pth.tar"),
                      _weights(resumed.path / "checkpoints" / "last.pth.tar"))
    keys = ["epoch", "metric", "weights", "split", "layer"]
    measured = ["loss", "top1_acc", "top5_acc", "lr", "ln_share_var", "ln_share_mean"]
    a = full.rows[full.rows.metric.isin(measured)].set_index(keys)["value"].sort_index()
    b = resumed.rows[resumed.rows.metric.isin(measured)].set_index(keys)["value"].sort_index()
    pd.testing.assert_series_equal(a, b)


def test_resume_with_other_settings_is_refused(cifar, tmp_path, invoke):
    res = tmp_path / "res"
    args = ["train", "--out", str(res), "--run-id", "r", "--dataset", "cifar10", "--data-dir", str(cifar),
            *(f"{k}={v}" for k, v in {**TINY, "epochs": 1}.items() if k != "model")]
    code, _, err = invoke(*args)
    assert code == 0, err
    code, _, err = invoke("train", "--resume", "r", "--out", str(res), "--set", "lr=0.5")
    assert_one_line_error(code, err, "--resume r: the run was made with lr=0.001, this command gives lr=0.5")
    code, _, err = invoke("train", "--resume", "nope", "--out", str(res))
    assert_one_line_error(code, err, "--resume nope: no run folder")
    code, out, err = invoke("train", "--resume", "r", "--out", str(res))  # its own settings: nothing left to do
    assert code == 0, err


def test_a_checkpoint_of_other_settings_is_refused(cifar, tmp_path):
    cfg = TrainConfig.resolve("quick", tiny(cifar, epochs=1))[0]
    data = load_data("cifar10", str(cifar))
    list(loop.epochs(loop.build(cfg, data, tmp_path)))
    with pytest.raises(DTNBenchError) as e:
        loop.build(TrainConfig.resolve("quick", tiny(cifar, epochs=1, smoothing=0.2))[0], data, tmp_path)
    assert_one_line_message(e.value, "was written with smoothing=0.1, this run has smoothing=0.2")


def test_nan_loss_stops_with_the_last_good_checkpoint(cifar, tmp_path, monkeypatch, invoke):
    real = loop.build_model

    class Poison(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.calls = inner, 0

        def forward(self, x):
            self.calls += self.training
            out = self.inner(x)
            return out * float("nan") if self.training and self.calls > 5 else out  # 5 updates per epoch

    monkeypatch.setattr(loop, "build_model", lambda cfg, n: Poison(real(cfg, n)))
    monkeypatch.setattr(loop, "transforms", lambda cfg, m: _transforms(cfg, m.inner))
    code, _, err = invoke("train", "--out", str(tmp_path), "--run-id", "nan", "--dataset", "cifar10", "--data-dir",
                          str(cifar), *(f"{k}={v}" for k, v in TINY.items()), "model_ema=false")
    last = tmp_path / "train" / "nan" / "checkpoints" / "last.pth.tar"
    assert_one_line_error(code, err, "the training loss is nan at epoch 2, step 1; stopped before that update",
                          f"Last good checkpoint: {last} (epoch 1)")
    assert sorted(rows_of(tmp_path / "train" / "nan")["epoch"].unique()) == [0]
    assert read_ckpt(last)["epoch"] == 0


_transforms = loop.transforms


# ------------------------------------------------------------------------------------------------------------------
# bad input and GPU-only settings
@pytest.mark.parametrize("args, expected", [
    (["--recipe", "qiuck"], ["unknown train preset 'qiuck' (did you mean: quick"]),
    (["--set", "epoch=3"], ["unknown setting 'epoch' (did you mean: epochs"]),
    (["batch=abc"], ["--set batch=abc: expected an int"]),
    (["--set", "batch=5000"], ["batch 5000 is larger than the training set (1438 images of digits"]),
    (["--set", "channels_last=true"], ["channels_last (a GPU memory layout) needs a GPU"]),
    (["--set", "compile=true"], ["compile (torch.compile of the training step, GPU only here) needs a GPU"]),
    (["--set", "precision=fp16"], ["precision fp16 (a loss scaler for CUDA autocast) needs a GPU",
                                   "--set precision=fp32"]),
    (["--set", "mixup=0.8", "batch=63"], ["mixup / cutmix need an even batch"]),
    (["--set", "depth=2"], ["has 2 blocks but its class token joins before block 3"]),
    (["--dataset", "cifar10"], ["dataset cifar10 needs data_dir"]),
    (["--model", "vit_nope"], ["unknown model 'vit_nope'"]),
    (["--norm", "dnt"], ["unknown norm 'dnt'"]),
    (["--seed", "3", "seed=4"], ["--seed 3 and --set seed=4 disagree"]),
])
def test_cli_bad_input(args, expected, tmp_path, invoke):
    code, _, err = invoke("train", "--out", str(tmp_path / "res"), *args)
    assert_one_line_error(code, err, *expected)
    assert not (tmp_path / "res").exists()


def test_show_recipe_lists_settings_with_their_source(invoke):
    code, out, err = invoke("train", "--recipe", "authors", "--data-dir", "/data", "--show-recipe", "lr=1e-3")
    assert code == 0, err
    assert "model_ema_decay" in out and "0.99996" in out and "recipe" in out and "set" in out


# ------------------------------------------------------------------------------------------------------------------
# diagnostics
def test_diagnostics_read_gates_alpha_and_saturation_of_any_normaliser():
    from dtn_bench.norms import DTN, DyT
    from dtn_bench.train.diagnostics import measure

    class Derf(torch.nn.Module):  # a point-wise normaliser this package does not know: w * erf(alpha x + s) + b
        def __init__(self, dim):
            super().__init__()
            self.alpha = torch.nn.Parameter(torch.tensor([1.0]))
            self.shift = torch.nn.Parameter(torch.tensor([0.25]))
            self.weight = torch.nn.Parameter(torch.full((dim,), 3.0))
            self.bias = torch.nn.Parameter(torch.zeros(dim))

        def forward(self, x):
            return self.weight * torch.erf(self.alpha * x + self.shift) + self.bias

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dtn = DTN(8, 2, grid_size=(2, 2))
            self.dyt = DyT(8, alpha_init=2.0)
            self.derf = Derf(8)

        def forward(self, x):
            return self.derf(self.dyt(self.dtn(x)) * 0 + x)

    net = Net()
    with torch.no_grad():
        net.dtn.var_norm_weight.copy_(torch.tensor([0.0, 2.0]))
        net.dtn.mean_norm_weight.copy_(torch.tensor([-1.0, 1.0]))
        net.dyt.weight.fill_(0.01)  # the affine must not change the saturation
    x = torch.linspace(-3, 3, 4 * 8).view(1, 4, 8)
    got = measure(net, x)
    assert got[("dtn", "ln_share_var")] == pytest.approx((0.5 + 1 / (1 + math.exp(-2))) / 2)
    assert got[("dtn", "ln_share_mean")] == pytest.approx(0.5)
    assert got[("dyt", "alpha")] == pytest.approx(2.0) and got[("derf", "shift")] == pytest.approx(0.25)
    dtn_out = net.dtn(x)  # what DyT sees
    assert got[("dyt", "saturated_frac")] == pytest.approx(float((torch.tanh(2 * dtn_out).abs() >= 0.99)
                                                                 .float().mean()))
    assert got[("derf", "saturated_frac")] == pytest.approx(float((torch.erf(x + 0.25).abs() >= 0.99)
                                                                  .float().mean()))
    assert 0 < got[("derf", "saturated_frac")] < 1


# ------------------------------------------------------------------------------------------------------------------
# checkpoints into the evaluation suites
def test_checkpoint_round_trip_into_cifar_c_takes_the_ema_weights(cifar, tmp_path, invoke):
    res = train("quick", out=tmp_path, run_id="full", model="vit_cifar_t_ln", dataset="cifar10",
                data_dir=str(cifar), epochs=1, batch=20, device="cpu", diag_images=4, **OWN_SHAPE)
    ckpt = res.path / "checkpoints" / "last.pth.tar"
    saved = read_ckpt(ckpt)
    assert any(not torch.equal(saved["state_dict"][k], v) for k, v in saved["state_dict_ema"].items())
    corrupted = tmp_path / "c10c"
    corrupted.mkdir()
    rng = np.random.default_rng(0)
    np.save(corrupted / "fog.npy", rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8))
    np.save(corrupted / "labels.npy", np.tile(np.arange(2), 5))
    code, out, err = invoke("cifar-c", "--model", "vit_cifar_t_ln", "--data-dir", str(corrupted), "--checkpoint",
                            str(ckpt), "--corruptions", "fog", "--device", "cpu", "--out", str(tmp_path / "ev"))
    assert code == 0, err
    assert "loaded the EMA weights (state_dict_ema)" in err
    from dtn_bench.cifar_c.evaluation import build_model
    from dtn_bench.train import load_trained

    model, cfg, info = load_trained(ckpt)
    assert info["weights"] == "ema" and cfg.model == "vit_cifar_t_ln"
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved["state_dict_ema"].items())
    from dtn_bench.cifar_c import make_config

    ev, _ = build_model(make_config("vit_cifar_t_ln", corrupted, checkpoint=ckpt, device="cpu"), 10)
    assert all(torch.equal(ev.state_dict()[k], v) for k, v in saved["state_dict_ema"].items())


def test_placement_trains_records_and_guards_the_checkpoint(cifar, tmp_path, invoke):
    """``placement=post`` builds post-norm blocks, is in rows and args; evaluating its checkpoint with pre-norm blocks
    (same parameter names, so the weights would load and mean something else) is a one-line error."""
    from dtn_bench.train import load_trained

    res = train("quick", out=tmp_path, run_id="post", **tiny(cifar, **OWN_SHAPE, epochs=1, batch=20, model_ema=False,
                                                            placement="post"))
    assert set(res.rows["placement"]) == {"post"}
    ckpt = res.path / "checkpoints" / "last.pth.tar"
    assert read_ckpt(ckpt)["args"].placement == "post"
    model, cfg, _ = load_trained(ckpt)
    assert cfg.placement == "post" and model.placement == "post"
    x = torch.randn(2, 3, 32, 32)
    pre = loop.build_model(TrainConfig.resolve("quick", tiny(cifar, **OWN_SHAPE))[0], 10)
    assert set(pre.state_dict()) == set(model.state_dict())
    pre.load_state_dict(model.state_dict())
    assert not torch.allclose(pre.eval()(x), model(x))  # the same weights, another function
    corrupted = tmp_path / "c10c"
    corrupted.mkdir()
    np.save(corrupted / "fog.npy", np.random.default_rng(0).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8))
    np.save(corrupted / "labels.npy", np.tile(np.arange(2), 5))
    args = ["cifar-c", "--model", "vit_cifar_t_ln", "--data-dir", str(corrupted), "--checkpoint", str(ckpt),
            "--corruptions", "fog", "--device", "cpu"]
    code, _, err = invoke(*args, "--out", str(tmp_path / "ev"))
    assert_one_line_error(code, err, "was trained with --placement post, the model was built with --placement pre")
    assert not (tmp_path / "ev").exists()
    code, _, err = invoke(*args, "--placement", "post", "--out", str(tmp_path / "ev"))
    assert code == 0, err
    with pytest.raises(DTNBenchError, match="train: placement 'middle'"):
        TrainConfig.resolve("quick", tiny(cifar, placement="middle"))


def test_checkpoint_round_trip_into_imagenet_c(tmp_path, invoke):
    """A zoo model trained on ImageNet folders; imagenet-c --checkpoint loads the file as it is (EMA weights)."""
    classes = ("n01440764", "n01443537", "n01484850")
    data = write_imagenet(tmp_path / "imagenet", classes=classes, per=2)
    res = train("quick", out=tmp_path, run_id="vit-t", model="vit_t_ln", dataset="imagenet", data_dir=str(data),
                epochs=1, batch=6, device="cpu", diag_images=2, **OWN_SHAPE)
    ckpt = res.path / "checkpoints" / "last.pth.tar"
    layout = tmp_path / "imagenet-c"
    rng = np.random.default_rng(1)
    for w in classes:
        (layout / "fog" / "1" / w).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(layout / "fog" / "1" / w /
                                                                                  f"{w}_0.JPEG")
    code, out, err = invoke("imagenet-c", "--model", "vit_t_ln", "--num-classes", "3", "--data-dir", str(layout),
                            "--corruptions", "fog", "--severities", "1", "--workers", "0", "--checkpoint", str(ckpt),
                            "--device", "cpu", "--out", str(tmp_path / "ev"))
    assert code == 0, err
    assert "loaded the EMA weights (state_dict_ema)" in err
    (run,) = (tmp_path / "ev" / "imagenet-c").iterdir()
    assert set(rows_of(run)["weights"]) == {"ema"}


# ------------------------------------------------------------------------------------------------------------------
# several processes
@pytest.mark.slow
def test_ddp_gloo_two_processes_match_one_process(cifar, tmp_path, invoke):
    """torchrun with 2 CPU processes (gloo): each takes half of every global batch and the gradients are averaged, so
    the weights, the EMA and the validation figures equal the single-process run's up to float rounding."""
    args = ["train", "--out", str(tmp_path), "--dataset", "cifar10", "--data-dir", str(cifar),
            *(f"{k}={v}" for k, v in {**TINY, **NO_AUG}.items() if k != "scale" and k != "ratio"),
            "scale=1,1", "ratio=1,1", "aa=none"]
    code, _, err = invoke(*args, "--run-id", "one")
    assert code == 0, err
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "dtn_bench", *args, "--run-id", "two"], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    one, two = rows_of(tmp_path / "train" / "one"), rows_of(tmp_path / "train" / "two")
    keys = ["epoch", "metric", "weights", "split", "layer"]
    sel = lambda df: df[df.metric.isin(["loss", "top1_acc", "top5_acc"])].set_index(keys)["value"].sort_index()  # noqa: E731
    a, b = sel(one), sel(two)
    assert list(a.index) == list(b.index)
    np.testing.assert_allclose(b.values, a.values, rtol=1e-4, atol=1e-5)
    assert json.loads((tmp_path / "train" / "two" / "config.json").read_text())["world_size"] == 2
    w1 = read_ckpt(tmp_path / "train" / "one" / "checkpoints" / "last.pth.tar")
    w2 = read_ckpt(tmp_path / "train" / "two" / "checkpoints" / "last.pth.tar")
    for key in ("state_dict", "state_dict_ema"):
        for k, v in w1[key].items():
            torch.testing.assert_close(w2[key][k], v, rtol=1e-4, atol=1e-5)


def test_pointwise_diagnostics_rows_and_the_table_command(cifar, tmp_path, invoke):
    res = train("quick", out=tmp_path, run_id="dyt", **tiny(cifar, norm="dyt", epochs=1))
    df = res.rows
    alpha = df[df.metric == "alpha"]
    assert set(alpha["layer"]) == {"blocks.0.norm1", "blocks.0.norm2"} and (alpha["value"] != 0.5).all()  # trained
    sat = df[df.metric == "saturated_frac"]
    assert set(sat["layer"]) == set(alpha["layer"]) and sat["value"].between(0, 1).all()
    code, out, err = invoke("table", "train", str(res.path))
    assert code == 0, err
    assert "vit_cifar_t_ln" in out and "dyt" in out
