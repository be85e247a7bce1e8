"""``cifar-c``: CIFAR-10-C / CIFAR-100-C arrays and Tiny-ImageNet-C folders against an independent plain loop.

Small data made here: 2 corruptions x 5 severities x 8 images (``.npy`` arrays, read back memory-mapped by the
suite), and a 4-class Tiny-ImageNet-C folder tree at 64 px; bad arrays give one-line errors; resume; the CLI;
torchrun (gloo, 2 processes) gives the rows of a single process; the small models build and run at 32 / 64 px.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from cli_helpers import assert_one_line_error, record

import dtn_bench  # noqa: F401  (registers the models with timm)
from dtn_bench.cifar_c import evaluate
from dtn_bench.errors import DTNBenchError

CORR = ("fog", "gaussian_noise")
PER_SEVERITY = 8
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)  # timm's ImageNet default, written out
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def _checkpoint(model: str, path: Path, **kwargs) -> Path:
    """Weights with a random head (timm starts it at zero: every prediction would be class 0)."""
    torch.manual_seed(1)
    m = timm.create_model(model, **kwargs)
    with torch.no_grad():
        m.head.weight.normal_(0, 1.0)
        m.head.bias.normal_(0, 0.1)
    torch.save(m.state_dict(), path)
    return path


def _model(model: str, ckpt: Path, **kwargs) -> torch.nn.Module:
    m = timm.create_model(model, **kwargs)
    m.load_state_dict(torch.load(ckpt, weights_only=True))
    return m.eval()


def _plain_error(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray) -> tuple[int, float]:
    """One image at a time, own normalisation: (images, top-1 error)."""
    wrong = 0
    with torch.no_grad():
        for img, y in zip(images, labels, strict=True):
            x = (torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255 - MEAN) / STD
            wrong += int(model(x[None]).argmax(1).item() != int(y))
    return len(labels), wrong / len(labels)


def _pairs(rows: pd.DataFrame, metric: str = "top1_err") -> dict[tuple[str, int], float]:
    sel = rows[rows["metric"] == metric]
    return {(c, int(s)): float(v) for c, s, v in zip(sel["corruption"], sel["severity"], sel["value"], strict=True)}


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar10c")
    rng = np.random.default_rng(0)
    n = 5 * PER_SEVERITY
    for c in CORR:
        np.save(root / f"{c}.npy", rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8))
    np.save(root / "labels.npy", np.tile(rng.integers(0, 10, PER_SEVERITY), 5))
    np.save(root / "clean.npy", rng.integers(0, 256, (PER_SEVERITY, 32, 32, 3), dtype=np.uint8))
    np.save(root / "clean_labels.npy", rng.integers(0, 10, PER_SEVERITY))
    ckpt = _checkpoint("vit_cifar_t_ln", root.parent / "ln.pth")
    return dict(root=root, ckpt=ckpt, base=tmp_path_factory.mktemp("cifar-out"))


def _settings(cifar, **kw):
    return dict(dataset="cifar10", checkpoint=cifar["ckpt"], corruptions=CORR, batch_size=7, device="cpu", **kw)


@pytest.fixture(scope="module")
def full(cifar):
    """The whole small set (2 corruptions x 5 severities and the clean array) evaluated once."""
    return evaluate("vit_cifar_t_ln", cifar["root"], out=cifar["base"], run_id="full",
                    clean_images=cifar["root"] / "clean.npy", clean_labels=cifar["root"] / "clean_labels.npy",
                    **_settings(cifar))


def test_cifar10c_equals_a_plain_loop_over_the_arrays(cifar, full):
    res = full
    model = _model("vit_cifar_t_ln", cifar["ckpt"])
    labels = np.load(cifar["root"] / "labels.npy")
    want = {}
    for c in CORR:
        images = np.load(cifar["root"] / f"{c}.npy")
        for s in range(1, 6):
            sl = slice((s - 1) * PER_SEVERITY, s * PER_SEVERITY)
            want[(c, s)] = _plain_error(model, images[sl], labels[sl])
    want[("clean", 0)] = _plain_error(model, np.load(cifar["root"] / "clean.npy"),
                                      np.load(cifar["root"] / "clean_labels.npy"))
    assert _pairs(res.rows) == {k: e for k, (_, e) in want.items()}
    assert set(_pairs(res.rows, "n_images").values()) == {PER_SEVERITY}
    assert len({e for _, e in want.values()}) > 1  # the check is not trivial: errors differ between pairs
    s = res.summary
    bench = [e for (c, _), (_, e) in want.items() if c != "clean"]
    assert s.mean_corruption_error == pytest.approx(sum(bench) / len(bench))
    assert s.mean_corruption_accuracy == pytest.approx(1 - sum(bench) / len(bench))
    assert s.clean_error == want[("clean", 0)][1] and s.pairs == 10 and not s.complete
    table = (res.path / "table.md").read_text()
    assert "no AlexNet normalisation exists" in table and "mean corr. err" in table and "10/75" in table
    assert set(res.rows["data"]) == {"CIFAR-10-C"} and set(res.rows["dataset"]) == {"cifar10"}


def test_the_suite_reads_the_arrays_memory_mapped(cifar, monkeypatch):
    seen = []
    real = np.load

    def spy(path, *args, **kwargs):
        seen.append((Path(path).name, kwargs.get("mmap_mode")))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(np, "load", spy)
    from dtn_bench.cifar_c.data import check_arrays

    check_arrays(cifar["root"], CORR, "cifar10", 10)
    assert seen and all(mode == "r" for _, mode in seen)


def test_resume_skips_finished_pairs_and_gives_the_same_rows(cifar, full):
    out, events = cifar["base"] / "resume", []

    def stop_after_three(e):
        events.append((e.kind, e.fields()))
        if e.kind == "pair" and sum(k == "pair" for k, _ in events) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate("vit_cifar_t_ln", cifar["root"], out=out, run_id="r", on_event=stop_after_three, **_settings(cifar))
    events.clear()
    res = evaluate("vit_cifar_t_ln", cifar["root"], out=out, run_id="r", resume=True,
                   on_event=record(events), **_settings(cifar))
    pending = next(info for kind, info in events if kind == "pending")
    assert pending["skipped"] == 3 and pending["pending"] == 7  # a pair's event comes after its rows are written
    want = {k: v for k, v in _pairs(full.rows).items() if k[0] != "clean"}
    assert _pairs(res.rows) == want and len(res.rows) == 4 * 10  # each pair's 4 rows once
    with pytest.raises(DTNBenchError, match="different config"):  # other settings never mix into a run
        evaluate("vit_cifar_t_ln", cifar["root"], out=out, run_id="r", resume=True,
                 **{**_settings(cifar), "corruptions": ["fog"]})


@pytest.mark.parametrize(("name", "make", "message"), [
    # gaussian_noise comes first (canonical order): the other arrays must have its length
    ("gaussian_noise.npy", lambda: np.zeros((40, 32, 32), np.uint8), "shape [40, 32, 32], expected uint8 [N, 32, "
     "32, 3]"),
    ("fog.npy", lambda: np.zeros((40, 32, 32, 3), np.float32), "dtype float32, expected uint8 [40, 32, 32, 3]"),
    ("gaussian_noise.npy", lambda: np.zeros((41, 32, 32, 3), np.uint8), "41 images, expected 5 severities x N"),
    ("fog.npy", lambda: np.zeros((45, 32, 32, 3), np.uint8), "shape [45, 32, 32, 3], expected uint8 [40, 32, 32, 3]"),
    ("labels.npy", lambda: np.zeros(39, np.int64), "39 labels but gaussian_noise.npy has 40 images"),
    ("labels.npy", lambda: np.full(40, 10), "labels span 10..10, expected 0..9"),
    ("labels.npy", lambda: np.zeros(40, np.float32), "expected 1-D integer labels"),
])
def test_bad_arrays_are_one_line_errors(cifar, tmp_path, invoke, name, make, message):
    root = tmp_path / "bad"
    root.mkdir()
    for c in CORR:
        (root / f"{c}.npy").symlink_to(cifar["root"] / f"{c}.npy")
    (root / "labels.npy").symlink_to(cifar["root"] / "labels.npy")
    (root / name).unlink()
    np.save(root / name, make())
    code, _, err = invoke("cifar-c", "--model", "vit_cifar_t_ln", "--data-dir", str(root), "--corruptions",
                          ",".join(CORR), "--device", "cpu", "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, message, str(root / name))
    assert not (tmp_path / "out").exists()  # no run folder: every check comes before any work


def test_missing_labels_and_corruptions_are_named(cifar, tmp_path, invoke):
    root = tmp_path / "partial"
    root.mkdir()
    (root / "fog.npy").symlink_to(cifar["root"] / "fog.npy")
    code, _, err = invoke("cifar-c", "--model", "vit_cifar_t_ln", "--data-dir", str(root), "--corruptions",
                          "fog,gaussian_noise", "--device", "cpu", "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, "CIFAR-10-C layout", "missing labels.npy, gaussian_noise.npy",
                          "zenodo.org/record/2535967")


def test_wrong_input_size_and_dataset_are_one_line_errors(cifar, tmp_path, invoke):
    code, _, err = invoke("cifar-c", "--model", "vit_tiny_t_ln", "--data-dir", str(cifar["root"]), "--device", "cpu",
                          "--out", str(tmp_path))
    assert_one_line_error(code, err, "vit_tiny_t_ln takes 64x64 images but CIFAR-10-C is 32x32")
    code, _, err = invoke("cifar-c", "--model", "vit_cifar_t_ln", "--data-dir", str(cifar["root"]), "--dataset",
                          "cifar1000", "--out", str(tmp_path))
    assert_one_line_error(code, err, "--dataset 'cifar1000': use one of cifar10, cifar100, tiny-imagenet")


def test_cli_command_writes_the_run_and_prints_the_tables(cifar, full, invoke):
    out = cifar["base"] / "cli"
    code, stdout, err = invoke("cifar-c", "--model", "vit_cifar_t_ln", "--data-dir", str(cifar["root"]),
                               "--checkpoint", str(cifar["ckpt"]), "--corruptions", ",".join(CORR), "--severities",
                               "1,5", "--batch-size", "5", "--device", "cpu", "--out", str(out), "--run-id", "c")
    assert code == 0, err
    assert "Top-1 error (%) per corruption and severity" in stdout and "mean corr. err" in stdout
    assert "no AlexNet normalisation" in stdout and f"results: {out / 'cifar-c' / 'c'}" in stdout
    rows = pd.read_parquet(out / "cifar-c" / "c" / "rows.parquet")
    assert _pairs(rows) == {k: v for k, v in _pairs(full.rows).items() if k[1] in (1, 5)}
    code, stdout, err = invoke("table", "cifar-c", str(out / "cifar-c" / "c"))
    assert code == 0, err
    assert "vit_cifar_t_ln" in stdout


def test_cifar100_takes_num_classes_from_the_dataset(cifar, tmp_path):
    root = tmp_path / "c100"
    root.mkdir()
    (root / "fog.npy").symlink_to(cifar["root"] / "fog.npy")
    np.save(root / "labels.npy", np.arange(40) + 50)  # labels above 10: only a 100-class model takes them
    res = evaluate("vit_cifar_t_dtn", root, dataset="cifar100", corruptions=["fog"], severities=[1], device="cpu",
                   out=tmp_path / "out")
    assert res.summary.errors["fog"][1] == 1.0 and set(res.rows["data"]) == {"CIFAR-100-C"}
    with pytest.raises(DTNBenchError, match="labels span 50..89, expected 0..9"):
        evaluate("vit_cifar_t_dtn", root, dataset="cifar10", corruptions=["fog"], device="cpu", out=tmp_path)


def _tiny_tree(root: Path, classes: int = 4, per_class: int = 2) -> None:
    from PIL import Image

    rng = np.random.default_rng(3)
    for c in CORR:
        for s in range(1, 6):
            for k in range(classes):
                folder = root / c / str(s) / f"n{k:08d}"
                folder.mkdir(parents=True)
                for i in range(per_class):
                    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def test_tiny_imagenet_c_folders_equal_a_plain_loop(tmp_path):
    from PIL import Image

    root = tmp_path / "tiny"
    _tiny_tree(root)
    ckpt = _checkpoint("vit_tiny_t_ln", tmp_path / "tiny.pth", num_classes=4)
    res = evaluate("vit_tiny_t_ln", root, dataset="tiny-imagenet", num_classes=4, checkpoint=ckpt,
                   corruptions=CORR, severities=[1, 4], device="cpu", batch_size=3, out=tmp_path / "out")
    model = _model("vit_tiny_t_ln", ckpt, num_classes=4)
    want = {}
    for c in CORR:
        for s in (1, 4):
            files = sorted((root / c / str(s)).glob("*/*.png"))
            images = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
            labels = np.array([int(f.parent.name[1:]) for f in files])
            want[(c, s)] = _plain_error(model, images, labels)[1]
    assert _pairs(res.rows) == want
    assert set(res.rows["data"]) == {"Tiny-ImageNet-C"}


def test_tiny_imagenet_c_layout_and_size_errors(tmp_path):
    from PIL import Image

    root = tmp_path / "tiny"
    _tiny_tree(root, classes=2, per_class=1)
    with pytest.raises(DTNBenchError, match="Tiny-ImageNet-C under .* has 2 class folders but the model predicts 200"):
        evaluate("vit_tiny_t_ln", root, dataset="tiny-imagenet", corruptions=CORR, device="cpu", out=tmp_path)
    (root / "fog" / "3").rename(tmp_path / "gone")
    with pytest.raises(DTNBenchError, match=r"Tiny-ImageNet-C layout .* missing 1 folder\(s\): fog/3"):
        evaluate("vit_tiny_t_ln", root, dataset="tiny-imagenet", num_classes=2, corruptions=CORR, device="cpu",
                 out=tmp_path)
    (tmp_path / "gone").rename(root / "fog" / "3")
    Image.new("RGB", (32, 32)).save(next((root / "fog" / "2").glob("*/*.png")))
    with pytest.raises(DTNBenchError, match="is 32x32, expected 64x64"):
        evaluate("vit_tiny_t_ln", root, dataset="tiny-imagenet", num_classes=2, corruptions=CORR, device="cpu",
                 out=tmp_path / "o")


@pytest.mark.parametrize(("name", "size", "classes"), [("vit_cifar_t_ln", 32, 10), ("vit_cifar_t_dtn", 32, 10),
                                                       ("vit_tiny_t_ln", 64, 200), ("vit_tiny_t_dtn", 64, 200)])
def test_small_models_build_through_timm_and_forward(name, size, classes):
    from dtn_bench.models.small import SMALL_MODELS

    model = timm.create_model(name).eval()
    meta = SMALL_MODELS.get(name).meta
    assert meta["norm"] == ("dtn" if name.endswith("dtn") else "layernorm") == model.norm_name
    assert model.embed_dim == 192 and len(model.blocks) == 12 and model.blocks[0].attn.num_heads == 3
    assert tuple(model.patch_embed.grid_size) == (8, 8) and meta["patch_size"] == size // 8
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, classes) and torch.isfinite(out).all()
    assert timm.create_model(name, num_classes=100).head.out_features == 100


@pytest.mark.slow
def test_torchrun_gloo_two_processes_match_single_process(cifar, full):
    out = cifar["base"] / "dist"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "dtn_bench",
           "cifar-c", "--model", "vit_cifar_t_ln", "--data-dir", str(cifar["root"]), "--checkpoint",
           str(cifar["ckpt"]), "--corruptions", ",".join(CORR), "--batch-size", "3", "--device", "cpu",
           "--clean-images", str(cifar["root"] / "clean.npy"), "--clean-labels",
           str(cifar["root"] / "clean_labels.npy"), "--out", str(out), "--run-id", "d"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = pd.read_parquet(out / "cifar-c" / "d" / "rows.parquet")
    single = full.rows
    assert _pairs(rows) == _pairs(single) and _pairs(rows, "n_images") == _pairs(single, "n_images")
    assert len(rows) == len(single)  # rank 0 alone wrote rows


def test_presets_with_flags_over_them(tmp_path):
    from dtn_bench.cifar_c import make_config
    from dtn_bench.metrics import CORRUPTIONS

    cfg = make_config(data_dir=tmp_path, preset="cifar100", device="cpu")
    assert (cfg.dataset, cfg.model, cfg.num_classes, cfg.corruptions) == ("cifar100", "vit_cifar_t_ln", 100,
                                                                           CORRUPTIONS)
    cfg = make_config("vit_cifar_t_dtn", tmp_path, preset="quick", severities=[2], device="cpu")
    assert (cfg.model, cfg.corruptions, cfg.severities) == ("vit_cifar_t_dtn", ("gaussian_noise", "fog"), (2,))
    assert len(make_config(data_dir=tmp_path, preset="cifar10-extra", device="cpu").corruptions) == 19
    assert make_config(data_dir=tmp_path, extra=True, device="cpu").corruptions[-1] == "saturate"
    with pytest.raises(DTNBenchError, match="unknown cifar-c preset 'nope'"):
        make_config(data_dir=tmp_path, preset="nope")


def test_severity_parameter_tables_cover_the_19_corruptions():
    from dtn_bench.cifar_c.params import CIFAR, TABLES, TINY_IMAGENET, parameter_table
    from dtn_bench.metrics import CORRUPTIONS, EXTRA_CORRUPTIONS

    for table in (CIFAR, TINY_IMAGENET):
        assert set(table) == set(CORRUPTIONS) | set(EXTRA_CORRUPTIONS)
        assert all(len(v) == 5 for v in table.values())
    # spot checks against the scripts (make_cifar_c.py, make_tinyimagenet_c.py)
    assert CIFAR["gaussian_noise"] == (0.04, 0.06, 0.08, 0.09, 0.10) and CIFAR["jpeg_compression"][4] == 40
    assert TINY_IMAGENET["shot_noise"] == (250, 100, 50, 30, 15) and TINY_IMAGENET["saturate"][4] == (30, 0.2)
    assert TABLES["cifar100"] is CIFAR
    text = parameter_table("tiny-imagenet")
    assert "make_tinyimagenet_c.py" in text and "| contrast | 0.4 | 0.3 | 0.2 | 0.1 | 0.05 |" in text


def test_table_label_shows_the_placement():
    """The placement is the last variant column: a post / peri run is labelled, rows without the column are pre."""
    from dtn_bench.cifar_c.report import VARIANT_COLUMNS, _name

    assert VARIANT_COLUMNS[-1] == "placement"
    assert _name("vit_cifar_t_ln", "layernorm", "|none|raw|fp32|peri", 1) == "vit_cifar_t_ln [peri]"
    assert _name("vit_cifar_t_ln", "layernorm", "|none|raw|fp32|pre", 1) == "vit_cifar_t_ln"
    assert _name("vit_cifar_t_ln", "layernorm", "|none|raw|fp32", 1) == "vit_cifar_t_ln"
