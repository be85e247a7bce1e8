"""``dtn-bench corrupt --format cifar10-c|cifar100-c|tiny-imagenet-c``: each dataset's parameters, layout, errors."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from cli_helpers import assert_one_line_error

from dtn_bench.cifar_c.generate import CIFAR10_C, TINY_IMAGENET_C
from dtn_bench.cifar_c.params import CIFAR, TINY_IMAGENET
from dtn_bench.data.corruptions import CORRUPTION_FNS, IMAGENET_C, corrupt_batch
from dtn_bench.data.corruptions.blur import zoom_factors

FEW = "gaussian_noise,contrast,fog,elastic_transform,pixelate"


def _gens(n: int, seed: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


def _constant(n: int, size: int, level: int) -> torch.Tensor:
    return torch.full((n, 3, size, size), level, dtype=torch.uint8)


@pytest.mark.parametrize(("recipe", "table"), [(CIFAR10_C, CIFAR), (TINY_IMAGENET_C, TINY_IMAGENET),
                                               (IMAGENET_C, None)])
@pytest.mark.parametrize("severity", [1, 3])
def test_gaussian_noise_has_the_tables_std(recipe, table, severity):
    c = (table or {"gaussian_noise": CORRUPTION_FNS.get("gaussian_noise").meta["params"]})["gaussian_noise"]
    size = recipe.size if recipe is not IMAGENET_C else 64
    out = corrupt_batch(_constant(4, size, 128), "gaussian_noise", severity, _gens(4),
                        None if recipe is IMAGENET_C else recipe).double() / 255
    inside = out[(out > 0) & (out < 1)]  # ImageNet's 0.18 clips a little
    assert abs(inside.std().item() - c[severity - 1]) < 0.1 * c[severity - 1] + 0.003


@pytest.mark.parametrize(("recipe", "table"), [(CIFAR10_C, CIFAR), (TINY_IMAGENET_C, TINY_IMAGENET)])
@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_brightness_and_contrast_follow_the_formulas_with_the_tables_constants(recipe, table, severity):
    grey = corrupt_batch(_constant(1, recipe.size, 102), "brightness", severity, _gens(1), recipe)
    want = np.floor(np.clip(np.float32(102 / 255) + np.float32(table["brightness"][severity - 1]), 0, 1) * 255)
    assert abs(int(grey.unique().item()) - want) <= 1  # grey: V -> V + c
    img = torch.zeros(1, 3, recipe.size, recipe.size, dtype=torch.uint8)
    img[..., : recipe.size // 2] = 200
    img[..., recipe.size // 2 :] = 40
    out = corrupt_batch(img, "contrast", severity, _gens(1), recipe).double()
    c = table["contrast"][severity - 1]
    mu = 120 / 255
    for v, got in ((200, out[0, 0, 0, 0]), (40, out[0, 0, 0, -1])):
        assert abs(got.item() - np.floor(((v / 255 - mu) * c + mu) * 255)) <= 1


def test_size_dependent_choices_of_the_scripts():
    # zoom_blur: np.arange(1, end, 0.01) for both small datasets; ImageNet-C keeps its own steps
    assert np.array_equal(zoom_factors(2, CIFAR10_C), np.arange(1, 1.11, 0.01))
    assert [len(zoom_factors(s)) for s in range(1, 6)] == [12, 16, 11, 13, 11]
    # elastic_transform at CIFAR severity 1 smooths with sigma 0 (an identity, as scipy does): finite output
    img = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for name in ("elastic_transform", "frost", "fog", "pixelate", "glass_blur", "motion_blur", "snow", "zoom_blur"):
        for s in (1, 5):
            out = corrupt_batch(img, name, s, _gens(2), CIFAR10_C)
            assert out.shape == img.shape and out.dtype == torch.uint8
    assert CIFAR10_C.frost_scale == 0.2 and TINY_IMAGENET_C.frost_scale == 0.3
    assert (CIFAR10_C.fog_mapsize, TINY_IMAGENET_C.fog_mapsize, IMAGENET_C.fog_mapsize) == (32, 64, 256)
    with pytest.raises(Exception, match="cifar10-c images are 32x32, got 64x64"):
        corrupt_batch(_constant(1, 64, 0), "contrast", 1, _gens(1), CIFAR10_C)


def _clean(root: Path, n: int = 30) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (n, 4, 4, 3)).astype(np.float64)
    x = np.clip(np.kron(base, np.ones((1, 8, 8, 1))) + rng.normal(0, 8, (n, 32, 32, 3)), 0, 255).astype(np.uint8)
    y = np.arange(n) % 10
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "x.npy", x)
    np.save(root / "y.npy", y)
    return root / "x.npy", root / "y.npy", x, y


def test_cifar10c_round_trip_through_the_evaluator(tmp_path, invoke):
    xs, ys, x, y = _clean(tmp_path / "src")
    out = tmp_path / "CIFAR-10-C"
    code, stdout, err = invoke("corrupt", "--format", "cifar10-c", str(xs), str(out), "--src-labels", str(ys),
                               "--corruptions", FEW, "--seed", "1", "--batch-size", "7")
    assert code == 0, err
    assert "CIFAR-10-C in" in stdout
    for name in FEW.split(","):
        arr = np.load(out / f"{name}.npy")
        assert arr.shape == (150, 32, 32, 3) and arr.dtype == np.uint8
    labels = np.load(out / "labels.npy")
    assert labels.dtype == np.uint8 and np.array_equal(labels, np.tile(y, 5))
    assert not list(out.glob(".*tmp")) and not (out / ".dtn-bench-corrupt.partial.json").exists()
    manifest = json.loads((out / "dtn-bench-corrupt.json").read_text())
    assert manifest["format"] == "cifar10-c" and manifest["images"] == 30
    # severity s is rows (s - 1) N .. s N - 1: the deterministic contrast equals corrupt_batch at that severity
    arr = np.load(out / "contrast.npy")
    for s in (1, 3, 5):
        want = corrupt_batch(torch.from_numpy(x).permute(0, 3, 1, 2), "contrast", s, _gens(30), CIFAR10_C)
        assert np.array_equal(arr[(s - 1) * 30 : s * 30], want.permute(0, 2, 3, 1).numpy())
    code, stdout, err = invoke("cifar-c", "--model", "vit_cifar_t_ln", "--data-dir", str(out), "--clean-images",
                               str(xs), "--clean-labels", str(ys), "--corruptions", FEW, "--device", "cpu",
                               "--batch-size", "64", "--out", str(tmp_path / "results"), "--run-id", "rt")
    assert code == 0, err
    rows = pd.read_parquet(tmp_path / "results" / "cifar-c" / "rt" / "rows.parquet")
    err_rows = rows[(rows["metric"] == "top1_err") & (rows["corruption"] != "clean")]
    assert {(c, int(s)) for c, s in zip(err_rows["corruption"], err_rows["severity"], strict=True)} == \
        {(c, s) for c in FEW.split(",") for s in range(1, 6)}


def test_same_seed_same_arrays_and_pickle_source(tmp_path, invoke):
    _, _, x, y = _clean(tmp_path / "src", n=12)
    pick = tmp_path / "test"
    with open(pick, "wb") as f:
        pickle.dump({b"data": x.transpose(0, 3, 1, 2).reshape(12, -1), b"fine_labels": list(y * 7)}, f)
    for run in ("a", "b"):
        code, _, err = invoke("corrupt", "--format", "cifar100-c", str(pick), str(tmp_path / run), "--corruptions",
                              "gaussian_noise,fog", "--batch-size", "5" if run == "a" else "12")
        assert code == 0, err
    for name in ("gaussian_noise", "fog", "labels"):
        assert (tmp_path / "a" / f"{name}.npy").read_bytes() == (tmp_path / "b" / f"{name}.npy").read_bytes()
    assert np.load(tmp_path / "a" / "labels.npy").max() == 63
    code, _, err = invoke("corrupt", "--format", "cifar10-c", str(pick), str(tmp_path / "c"))
    assert_one_line_error(code, err, "needs 'data' and 'labels'")


def test_tiny_imagenet_c_round_trip(tmp_path, invoke):
    from PIL import Image

    rng = np.random.default_rng(2)
    src = tmp_path / "src"
    for wnid in ("n00000001", "n00000002"):
        (src / wnid).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (80, 70, 3), dtype=np.uint8)).save(src / wnid / f"{i}.JPEG")
    out = tmp_path / "Tiny-ImageNet-C"
    code, stdout, err = invoke("corrupt", "--format", "tiny-imagenet-c", str(src), str(out), "--corruptions",
                               "contrast,gaussian_noise")
    assert code == 0, err
    files = sorted(p.relative_to(out).as_posix() for p in out.glob("*/*/*/*"))
    assert len(files) == 2 * 5 * 4 and "contrast/1/n00000001/0.JPEG" in files
    with Image.open(out / files[0]) as im:
        assert im.size == (64, 64) and im.format == "JPEG"
    assert json.loads((out / "dtn-bench-corrupt.json").read_text())["format"] == "tiny-imagenet-c"
    code, stdout, err = invoke("cifar-c", "--model", "vit_tiny_t_ln", "--dataset", "tiny-imagenet", "--num-classes",
                               "2", "--data-dir", str(out), "--corruptions", "contrast,gaussian_noise", "--device",
                               "cpu", "--out", str(tmp_path / "results"), "--run-id", "t")
    assert code == 0, err
    rows = pd.read_parquet(tmp_path / "results" / "cifar-c" / "t" / "rows.parquet")
    assert len(rows[rows["metric"] == "top1_err"]) == 10


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: np.save(d / "x.npy", np.zeros((4, 32, 32, 3), np.float32)), "dtype float32, expected uint8"),
    (lambda d: np.save(d / "x.npy", np.zeros((4, 28, 28, 3), np.uint8)), "shape [4, 28, 28, 3], expected"),
    (lambda d: np.save(d / "y.npy", np.zeros(3, np.int64)), "3 labels but x.npy has 4 images"),
    (lambda d: (d / "x.npy").unlink(), "does not exist"),
])
def test_bad_sources_are_one_line_errors(tmp_path, invoke, make, message):
    np.save(tmp_path / "x.npy", np.zeros((4, 32, 32, 3), np.uint8))
    np.save(tmp_path / "y.npy", np.zeros(4, np.int64))
    make(tmp_path)
    code, _, err = invoke("corrupt", "--format", "cifar10-c", str(tmp_path / "x.npy"), str(tmp_path / "out"),
                          "--src-labels", str(tmp_path / "y.npy"))
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "out").exists()


def test_bad_options_are_one_line_errors(tmp_path, invoke):
    np.save(tmp_path / "x.npy", np.zeros((4, 32, 32, 3), np.uint8))
    code, _, err = invoke("corrupt", "--format", "cifar10", str(tmp_path / "x.npy"), str(tmp_path / "out"))
    assert_one_line_error(code, err, "unknown --format 'cifar10'", "did you mean cifar10-c?")
    code, _, err = invoke("corrupt", "--format", "cifar10-c", str(tmp_path / "x.npy"), str(tmp_path / "out"))
    assert_one_line_error(code, err, "needs its labels: --src-labels")
    code, _, err = invoke("corrupt", "--format", "cifar10-c", str(tmp_path / "x.npy"), str(tmp_path / "out"),
                          "--severities", "1,2")
    assert_one_line_error(code, err, "writes all 5 severities")
    code, _, err = invoke("corrupt", "--format", "tiny-imagenet-c", str(tmp_path / "nope"), str(tmp_path / "out"))
    assert_one_line_error(code, err, "does not exist")
    assert not (tmp_path / "out").exists()


def test_the_parameter_document_in_docs_is_the_rendered_tables():
    from pathlib import Path

    from dtn_bench.cifar_c.params import CIFAR, TINY_IMAGENET, parameter_document

    text = (Path(__file__).resolve().parents[1] / "docs" / "cifar_c_parameters.md").read_text()
    assert text == parameter_document()
    assert f"| gaussian_noise | {' | '.join(map(str, CIFAR['gaussian_noise']))} |" in text
    assert f"| shot_noise | {' | '.join(map(str, TINY_IMAGENET['shot_noise']))} |" in text


def test_zero_byte_npy_is_a_one_line_error_naming_the_file(tmp_path, invoke):
    # hostile pass, failure 13: numpy's EOFError became click's "aborted", exit 130, naming no file
    xs, ys, _, _ = _clean(tmp_path / "src")
    zero = tmp_path / "zero.npy"
    zero.write_bytes(b"")
    for images, labels in ((zero, ys), (xs, zero)):
        code, _, err = invoke("corrupt", "--format", "cifar10-c", str(images), str(tmp_path / "out"), "--src-labels",
                              str(labels), "--corruptions", "gaussian_noise")
        assert_one_line_error(code, err, f"cannot read {zero} as a .npy array: the file is empty (0 bytes)")
    assert not (tmp_path / "out").exists()
