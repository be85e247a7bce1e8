"""``dtn-bench shifts``: small layouts of every set against an independent plain loop written here (masks included).

Every set is laid out as released, tiny: ImageNet val, -C, -3DCC, -C-bar (its parameter-named severity folders),
-Sketch and -V2 (class-index folders) with three fake classes and a seeded 3-class checkpoint; ImageNet-A and -R
with real wnids of their 200 and a seeded random 1000-class model (scored through their masks); CIFAR-10-C arrays
with a 10-class 32 px model. The plain loop reads each image itself (PIL / torchvision), applies timm's eval
transform or none, normalises, and takes the arg-max over the scored logits; the suite's rows and per-image bits
must agree with it. Bad input gives one-line errors naming the folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from cli_helpers import assert_one_line_error, assert_one_line_message
from PIL import Image

from dtn_bench.errors import DTNBenchError
from dtn_bench.shifts import correctness as C
from dtn_bench.shifts.sets import SETS, c_bar_severity_folders, timm_synsets

CLASSES = ("n00000001", "n00000002", "n00000003")
KW = dict(batch_size=4, workers=0, device="cpu")


def _save(path: Path, size, rng, fmt="JPEG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path, format=fmt, quality=90)


def _split(root: Path, folders, per: int, rng, size=(250, 270), ext="JPEG") -> Path:
    for f in folders:
        for i in range(per):
            _save(root / str(f) / f"img_{f}_{i}.{ext.lower()}", size, rng, "JPEG")
    return root


def _corrupt(root: Path, corruptions, severity_names, classes, per: int, rng) -> Path:
    for c in corruptions:
        for s in severity_names(c):
            for w in classes:
                for i in range(per):
                    _save(root / c / s / w / f"ILSVRC2012_val_{w[-1]}{i:07d}.JPEG", (224, 224), rng)
    return root


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """Every 1k-style set with three fake classes, and a seeded 3-class vit_t_ln checkpoint."""
    from safetensors.torch import save_file

    from dtn_bench.models import create

    base = tmp_path_factory.mktemp("shifts")
    rng = np.random.default_rng(0)
    root = base / "data"
    _split(root / "imagenet-val", CLASSES, 2, rng)
    _corrupt(root / "ImageNet-C", ("gaussian_noise", "fog"), lambda c: ("1",), CLASSES, 1, rng)
    _corrupt(root / "imagenet-3dcc", ("near_focus",), lambda c: ("1",), CLASSES, 1, rng)
    _corrupt(root / "imagenet-c-bar", ("caustic_refraction",), lambda c: (c_bar_severity_folders(c)[0],), CLASSES, 1,
             rng)
    _split(root / "sketch", CLASSES, 2, rng, size=(300, 200))
    for variant in ("matched-frequency", "threshold0.7", "top-images"):
        _split(root / f"imagenetv2-{variant}-format-val", range(3), 1, rng)
    torch.manual_seed(0)
    model = create("vit_t_ln", num_classes=3)
    with torch.no_grad():
        model.head.weight.normal_(0, 1.0)
    ckpt = base / "ln3.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    return {"base": base, "root": root, "ckpt": ckpt}


def _plain(model_name: str, ckpt, num_classes, folder: Path, files, labels, *, transform: bool, mask=None):
    """Top-1 right per image, one image at a time: own decoding, timm's eval transform or none, own arg-max."""
    import timm
    from timm.data import create_transform, resolve_data_config
    from torchvision.io import ImageReadMode, decode_image

    from dtn_bench.checkpoint import load_checkpoint
    from dtn_bench.models import create

    torch.manual_seed(0)
    model = create(model_name, **({} if num_classes is None else {"num_classes": num_classes}))
    if ckpt is not None:
        load_checkpoint(model, ckpt)
    model.eval()
    assert isinstance(model, timm.models.VisionTransformer)
    dc = resolve_data_config({}, model=model)
    tf = create_transform(**dc)  # PIL -> float tensor, normalised (timm's usual path)
    mean, std = torch.tensor(dc["mean"]).view(3, 1, 1), torch.tensor(dc["std"]).view(3, 1, 1)
    right = []
    for f, y in zip(files, labels, strict=True):
        if transform:
            with Image.open(folder / f) as im:
                x = tf(im.convert("RGB"))
        else:
            x = (decode_image(str(folder / f), mode=ImageReadMode.RGB).float() / 255 - mean) / std
        with torch.inference_mode():
            logits = model(x[None])[0]
        if mask is not None:
            logits = logits[list(mask)]
        right.append(int(logits.argmax()) == y)
    return np.array(right)


def _units(rows: pd.DataFrame, metric="top1_err") -> dict:
    sel = rows[rows["metric"] == metric]
    return {(s, k, c, int(v)): float(x) for s, k, c, v, x in
            zip(sel["set"], sel["classes"], sel["corruption"], sel["severity"], sel["value"], strict=True)}


def test_every_set_equals_a_plain_loop(own):
    """Val, C, 3DCC, C-bar, Sketch, V2 x 3 (own 3-class model): rows and bits equal the plain loop's; the table."""
    from dtn_bench.shifts import evaluate

    res = evaluate("vit_t_ln", own["root"], checkpoint=own["ckpt"], num_classes=3, severities=[1],
                   out=own["base"] / "out", run_id="all", **KW)
    rows = res.rows
    v2 = ("imagenet-v2-matched-frequency", "imagenet-v2-threshold0.7", "imagenet-v2-top-images")
    assert set(rows["set"]) == {"imagenet-val", "imagenet-c", "imagenet-3dcc", "imagenet-c-bar", "imagenet-sketch",
                                *v2}
    bits = C.read_run(res.path)
    errs = _units(rows)
    root = own["root"]
    folders = {"imagenet-val": root / "imagenet-val", "imagenet-sketch": root / "sketch",
               **{name: root / f"imagenetv2-{name[len('imagenet-v2-'):]}-format-val" for name in v2},
               "imagenet-c": root / "ImageNet-C", "imagenet-3dcc": root / "imagenet-3dcc",
               "imagenet-c-bar": root / "imagenet-c-bar"}
    checked = 0
    for key, err in errs.items():
        s, _, c, sev = key
        folder = folders[s] if c == "none" else folders[s] / c / (
            c_bar_severity_folders(c)[sev - 1] if s == "imagenet-c-bar" else str(sev))
        files = sorted(p.relative_to(folder).as_posix() for p in folder.glob("*/*"))
        # V2: the label is the folder's class index; the others: the sorted wnid folders
        labels = [int(f.split("/")[0]) if s.startswith("imagenet-v2") else CLASSES.index(f.split("/")[0])
                  for f in files]
        right = _plain("vit_t_ln", own["ckpt"], 3, folder, files, labels, transform=c == "none")
        assert err == pytest.approx(1 - right.mean()), key
        assert bits.images(key) == files and bits.correct(key).tolist() == right.tolist(), key
        checked += 1
    assert checked == 9  # val, sketch, the 3 variants of V2, 2 pairs of -C, one of -3DCC and of -C-bar
    assert "top5_err" not in set(rows["metric"])  # 3 classes: no top-5
    transforms = dict(zip(rows["set"], rows["transform"], strict=False))
    assert transforms["imagenet-c"] == "as released" and transforms["imagenet-sketch"].startswith("timm eval")
    table = res.table
    clean = table.loc["vit_t_ln", ("ImageNet val", "clean top-1")]
    assert clean == pytest.approx(100 * (1 - errs[("imagenet-val", "3 classes", "none", 0)]))
    sketch = 100 * (1 - errs[("imagenet-sketch", "3 classes", "none", 0)])
    assert table.loc["vit_t_ln", ("ImageNet-Sketch", "Δtop-1")] == pytest.approx(sketch - clean)
    # 2 of ImageNet-C's 15 corruptions: no mCE; the headline is the unnormalised mean error
    c_err = np.mean([errs[("imagenet-c", "3 classes", c, 1)] for c in ("gaussian_noise", "fog")])
    assert table.loc["vit_t_ln", ("ImageNet-C", "mean err")] == pytest.approx(100 * c_err)
    md = (res.path / "table.md").read_text()
    assert "unnormalised mean error" in md and "top1_diff" in md
    config = json.loads((res.path / "config.json").read_text())
    assert config["sets"] == []  # the config as given: no sets named
    assert config["checkpoint_sha256"] and config["transforms"]["imagenet-c"] == "as released"  # provenance


def _imagenet_1k_model(base: Path) -> Path:
    """A seeded random 1000-class vit_t_ln (its head made to spread its predictions)."""
    from safetensors.torch import save_file

    from dtn_bench.models import create

    torch.manual_seed(1)
    model = create("vit_t_ln")
    with torch.no_grad():
        model.head.weight.normal_(0, 1.0)
    ckpt = base / "ln1k.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    return ckpt


@pytest.fixture(scope="module")
def masked(tmp_path_factory):
    """ImageNet-A and -R with 3 of their wnids each, val over all of those, a 1000-class model."""
    base = tmp_path_factory.mktemp("masked")
    rng = np.random.default_rng(5)
    root = base / "data"
    a, r = timm_synsets("imagenet_a")[:3], timm_synsets("imagenet_r")[-3:]
    _split(root / "imagenet-a", a, 1, rng, ext="jpg")
    (root / "imagenet-a" / "README.txt").write_text("ImageNet-A readme")  # a plain file at the root is ignored
    _split(root / "imagenet-r", r, 1, rng, ext="jpg")
    _split(root / "imagenet-val", sorted(set(a) | set(r)), 1, rng)
    return {"base": base, "root": root, "ckpt": _imagenet_1k_model(base), "a": a, "r": r}


def test_masks_are_timms_indices_and_equal_a_plain_masked_loop(masked):
    """ImageNet-A / -R: scored on their 200 logits (timm's indices files); val over the same classes gives Δtop-1."""
    import pkgutil

    from dtn_bench.shifts import evaluate
    from dtn_bench.shifts.plan import label_space

    for name, file in (("imagenet-a", "imagenet_a_indices.txt"), ("imagenet-r", "imagenet_r_indices.txt")):
        space = label_space(SETS[name], [], 1000, "m", Path("x"))
        indices = [int(v) for v in pkgutil.get_data("timm.data", f"_info/{file}").decode().split()]
        assert list(space.mask) == indices and len(indices) == 200
    res = evaluate("vit_t_ln", masked["root"], checkpoint=masked["ckpt"], out=masked["base"] / "out", run_id="m",
                   **KW)
    errs = _units(res.rows)
    assert set(errs) == {("imagenet-val", "ImageNet-1k", "none", 0), ("imagenet-a", "ImageNet-A 200", "none", 0),
                         ("imagenet-r", "ImageNet-R 200", "none", 0), ("imagenet-val", "ImageNet-A 200", "none", 0),
                         ("imagenet-val", "ImageNet-R 200", "none", 0)}
    wnids = {n: w for n, w in (("imagenet-a", timm_synsets("imagenet_a")), ("imagenet-r", timm_synsets("imagenet_r")))}
    from dtn_bench.shifts.sets import imagenet_wnids

    index = {w: i for i, w in enumerate(imagenet_wnids())}
    for s, classes in (("imagenet-a", "ImageNet-A 200"), ("imagenet-r", "ImageNet-R 200"),
                       ("imagenet-val", "ImageNet-A 200"), ("imagenet-val", "ImageNet-1k")):
        folder = masked["root"] / s
        kind = {"ImageNet-A 200": "imagenet-a", "ImageNet-R 200": "imagenet-r"}.get(classes)
        files = sorted(p.relative_to(folder).as_posix() for p in folder.glob("*/*")
                       if kind is None or p.parent.name in wnids[kind])
        if kind is None:
            labels, mask = [index[f.split("/")[0]] for f in files], None
        else:
            labels = [wnids[kind].index(f.split("/")[0]) for f in files]
            mask = [index[w] for w in wnids[kind]]
        right = _plain("vit_t_ln", masked["ckpt"], None, folder, files, labels, transform=True, mask=mask)
        assert errs[(s, classes, "none", 0)] == pytest.approx(1 - right.mean()), (s, classes)
    top5 = _units(res.rows, "top5_err")
    assert ("imagenet-a", "ImageNet-A 200", "none", 0) in top5  # 200 scored classes: top-5 counted
    a = 100 * (1 - errs[("imagenet-a", "ImageNet-A 200", "none", 0)])
    clean_a = 100 * (1 - errs[("imagenet-val", "ImageNet-A 200", "none", 0)])
    assert res.table.loc["vit_t_ln", ("ImageNet-A", "Δtop-1")] == pytest.approx(a - clean_a)


def test_cifar10c_arrays_through_shifts(tmp_path):
    """CIFAR-10-C arrays on the engine via shifts: the plain loop's errors; unnormalised mean as its headline."""
    import timm

    import dtn_bench  # noqa: F401
    from dtn_bench.metrics import CORRUPTIONS
    from dtn_bench.shifts import evaluate

    root = tmp_path / "CIFAR-10-C"
    root.mkdir()
    rng = np.random.default_rng(2)
    for c in CORRUPTIONS[:2]:
        np.save(root / f"{c}.npy", rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8))
    np.save(root / "labels.npy", np.tile(rng.integers(0, 10, 2), 5))
    torch.manual_seed(3)
    m = timm.create_model("vit_cifar_t_ln")
    with torch.no_grad():
        m.head.weight.normal_(0, 1.0)
    torch.save(m.state_dict(), tmp_path / "c.pth")
    events = []
    res = evaluate("vit_cifar_t_ln", tmp_path, checkpoint=tmp_path / "c.pth", severities=[1, 5], out=tmp_path / "o",
                   on_event=lambda e: events.append(e), **KW)
    assert any(e.kind == "warning" and "holds 2 of its 15 corruptions" in e.text for e in events)
    errs = _units(res.rows)
    m.eval()
    labels = np.load(root / "labels.npy")
    mean, std = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1), torch.tensor((0.229, 0.224, 0.225)).view(
        1, 3, 1, 1)
    for c in CORRUPTIONS[:2]:
        x = np.load(root / f"{c}.npy")
        for s in (1, 5):
            rows = slice((s - 1) * 2, s * 2)
            with torch.no_grad():
                pred = m((torch.from_numpy(x[rows]).permute(0, 3, 1, 2).float() / 255 - mean) / std).argmax(1)
            assert errs[("cifar10-c", "CIFAR-10", c, s)] == pytest.approx(1 - (pred.numpy() == labels[rows]).mean())
    assert ("CIFAR-10-C", "mean err") in res.table.columns


# ------------------------------------------------------------------------------------------------------------------
def _shifts(invoke, *args):
    return invoke("shifts", "--model", "vit_t_ln", "--workers", "0", "--device", "cpu", *args)


def test_bad_input_is_one_line_error_naming_the_folder(own, masked, tmp_path, invoke):
    rng = np.random.default_rng(9)
    # a set asked for and not found; an unknown set
    code, _, err = _shifts(invoke, "--data-root", str(own["root"]), "--sets", "imagenet-r", "--num-classes", "3")
    assert_one_line_error(code, err, "--sets imagenet-r: not found under --data-root", str(own["root"]))
    code, _, err = _shifts(invoke, "--data-root", str(own["root"]), "--sets", "imagenet-x")
    assert_one_line_error(code, err, "unknown set 'imagenet-x'", "did you mean")
    # wrong layout: images directly in a split's folder
    bad = tmp_path / "flat"
    _save(bad / "imagenet-sketch" / "x.JPEG", (10, 10), rng)
    code, _, err = _shifts(invoke, "--data-root", str(bad), "--num-classes", "3", "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "wrong layout: images directly in", str(bad / "imagenet-sketch"))
    # an ImageNet-A folder with a wnid outside its 200
    outside = next(w for w in SETS["imagenet-val"].wnids() if w not in set(timm_synsets("imagenet_a")))
    a = tmp_path / "a"
    _split(a / "imagenet-a", (timm_synsets("imagenet_a")[0], outside), 1, rng)
    code, _, err = _shifts(invoke, "--data-root", str(a), "--checkpoint", str(masked["ckpt"]))
    assert_one_line_error(code, err, f"ImageNet-A folder {a / 'imagenet-a' / outside} is not one of its 200 classes")
    # a model whose classes do not cover a set's label space
    code, _, err = _shifts(invoke, "--data-root", str(masked["root"]), "--sets", "imagenet-a", "--num-classes", "10")
    assert_one_line_error(code, err, "vit_t_ln predicts 10 classes but ImageNet-A", str(masked["root"] / "imagenet-a"),
                          "needs a 1000-class ImageNet model")
    # an ImageNet-V2 class folder named by wnid
    v2 = tmp_path / "v2"
    _split(v2 / "imagenetv2-top-images-format-val", ("n01440764",), 1, rng)
    code, _, err = _shifts(invoke, "--data-root", str(v2), "--checkpoint", str(masked["ckpt"]))
    assert_one_line_error(code, err, "class folder", "n01440764 is named by wnid", "class index 0..999")
    # no set at all under the root
    code, _, err = _shifts(invoke, "--data-root", str(tmp_path / "flat" / "imagenet-sketch"))
    assert_one_line_error(code, err, "no set found under --data-root")
    assert not (tmp_path / "o").exists()


def test_set_dirs_and_severity_folders(own, tmp_path):
    """--<set>-dir points at a folder elsewhere; C-bar's parameter-named severity folders are read as 1..5."""
    from dtn_bench.shifts.suite import find_sets, make_config

    cfg = make_config("vit_t_ln", None, set_dirs={"imagenet-c-bar": own["root"] / "imagenet-c-bar"}, device="cpu")
    assert [(s.name, p) for s, p in find_sets(cfg)] == [("imagenet-c-bar", own["root"] / "imagenet-c-bar")]
    assert SETS["imagenet-c-bar"].severity_folder("caustic_refraction", 3) == ("3", "4.90")
    with pytest.raises(DTNBenchError) as e:
        find_sets(make_config("vit_t_ln", None, set_dirs={"imagenet-a": tmp_path / "none"}, device="cpu"))
    assert_one_line_message(e.value, "--imagenet-a-dir", "does not exist")


# ------------------------------------------------------------------------------------------------------------------
def _synthetic(root: Path, subset: str, errors: dict, run_id: str) -> Path:
    from dtn_bench.results import RunWriter, make_row

    w = RunWriter(root, "shifts", {"model": "m"}, run_id=run_id)
    rows = []
    for (s, classes, c, sev), e in errors.items():
        rows.append(make_row("shifts", "vit_s_ln", "layernorm", "top1_err", e, set=s, classes=classes, corruption=c,
                             severity=sev, subset=subset, transform="as released"))
    w.append(rows)
    return w.path


@pytest.mark.parametrize(("subset", "kind"), [("RobustBench's 5,000-image list", "robustbench"), ("full", "full")])
def test_alexnet_own_errors_give_mce_100_with_its_normalisation(tmp_path, subset, kind):
    """AlexNet's own errors give mCE 100: on RobustBench's subset with its subset errors, else the full-set ones."""
    from dtn_bench.metrics import ALEXNET_ERRORS, CORRUPTIONS, HENDRYCKS, ROBUSTBENCH, robustbench_alexnet_errors
    from dtn_bench.results import read_rows
    from dtn_bench.shifts.report import shifts_table, summarize

    base = robustbench_alexnet_errors("2d") if kind == "robustbench" else ALEXNET_ERRORS
    errors = {("imagenet-c", "ImageNet-1k", c, s): base[c][s - 1] for c in CORRUPTIONS for s in range(1, 6)}
    base3 = robustbench_alexnet_errors("3d")
    errors.update({("imagenet-3dcc", "ImageNet-1k", c, s): base3[c][s - 1] for c in base3 for s in range(1, 6)})
    run = _synthetic(tmp_path, subset, errors, kind)
    (m,) = summarize(read_rows(run)).values()
    c_set = m.sets[("imagenet-c", "ImageNet-1k")]
    assert c_set.headline() == ("mCE", pytest.approx(100.0), ROBUSTBENCH if kind == "robustbench" else HENDRYCKS)
    name, value, norm = m.sets[("imagenet-3dcc", "ImageNet-1k")].headline()
    if kind == "robustbench":  # 3DCC has AlexNet errors only on RobustBench's subset
        assert (name, value, norm) == ("mCE", pytest.approx(100.0), ROBUSTBENCH)
    else:
        assert name == "mean err" and value == pytest.approx(100 * np.mean(list(map(np.mean, base3.values()))))
    assert shifts_table(read_rows(run)).loc["vit_s_ln", ("ImageNet-C", "mCE")] == pytest.approx(100.0)


def test_robustbench_list_is_recognised_by_its_content(tmp_path, monkeypatch):
    """A subset file whose sorted entries hash to RobustBench's list's digest is labelled as that list."""
    from dtn_bench.metrics import ROBUSTBENCH_SUBSET_LABEL, subset_list_sha256
    from dtn_bench.shifts import suite

    entries = ["n01440764/ILSVRC2012_val_00000293.JPEG", "n01443537/ILSVRC2012_val_00000236.JPEG"]
    monkeypatch.setattr(suite, "ROBUSTBENCH_SUBSET_SHA256", subset_list_sha256(list(reversed(entries))))
    cfg = suite.make_config("vit_t_ln", tmp_path, device="cpu", subset_file=tmp_path / "ids.txt")
    assert suite._subset_label(cfg, entries) == ROBUSTBENCH_SUBSET_LABEL
    assert suite._subset_label(cfg, entries[:1]).startswith("subset file ids.txt sha256 ")


def test_table_shifts_combines_models_with_paired_intervals(own, tmp_path, invoke):
    """Two models on the same images: table shifts prints both and the paired interval of each set's difference."""
    from dtn_bench.shifts import evaluate

    runs = []
    for seed in (0, 1):
        res = evaluate("vit_t_ln", own["root"], sets=["imagenet-val", "imagenet-sketch"], num_classes=3, seed=seed,
                       out=tmp_path, run_id=f"s{seed}", **KW)
        runs.append(res.path)
    out = tmp_path / "both"
    code, printed, err = invoke("table", "shifts", *map(str, runs), "--out", str(out), "--n-boot", "200")
    assert code == 0, err
    assert "[random init (seed 0)]" in printed and "[random init (seed 1)]" in printed and "Paired" in printed
    paired = pd.read_csv(out / "paired.csv")
    a, b = (C.read_run(r) for r in runs)
    for set_name, label in (("imagenet-sketch", "ImageNet-Sketch"), ("imagenet-val", "ImageNet val")):
        key = (set_name, "3 classes", "none", 0)
        want = 100 * (b.correct(key).mean() - a.correct(key).mean())
        got = paired.loc[paired["set"] == label, "difference"].item()
        assert got == pytest.approx(want)


# ------------------------------------------------------------------------------------------------------------------
def test_cli_set_names_are_the_engines_sets():
    """``--sets`` help and the ``--<set>-dir`` options (written out for a fast ``--help``) list every set."""
    from dtn_bench.cli.shifts import SET_NAMES

    assert SET_NAMES == tuple(SETS)


def test_generated_c_bar_is_a_set_on_the_engine_and_labelled(own, tmp_path, invoke):
    """corrupt --set imagenet-c-bar writes a folder that shifts evaluates as ImageNet-C-bar (the plain loop's errors),
    labelled as generated; a generated folder evaluated as another set is a one-line error naming it."""
    from dtn_bench.shifts import evaluate

    rng = np.random.default_rng(4)
    src = _split(tmp_path / "val", CLASSES, 1, rng, size=(260, 300))
    gen = tmp_path / "ImageNet-C-bar"
    names = ("plasma_noise", "sparkles")
    code, _, err = invoke("corrupt", str(src), str(gen), "--set", "imagenet-c-bar", "--corruptions", ",".join(names),
                          "--severities", "1", "--seed", "2")
    assert code == 0, err
    events = []
    res = evaluate("vit_t_ln", None, set_dirs={"imagenet-c-bar": gen}, checkpoint=own["ckpt"], num_classes=3,
                   severities=[1], out=tmp_path / "o", on_event=events.append, **KW)
    assert any(e.kind == "warning" and "holds 2 of its 10 corruptions" in e.text for e in events)
    errs = _units(res.rows)
    assert set(errs) == {("imagenet-c-bar", "3 classes", c, 1) for c in names}
    for c in names:
        folder = gen / c / "1"
        files = sorted(p.relative_to(folder).as_posix() for p in folder.glob("*/*"))
        right = _plain("vit_t_ln", own["ckpt"], 3, folder, files, [CLASSES.index(f.split("/")[0]) for f in files],
                       transform=False)
        assert errs[("imagenet-c-bar", "3 classes", c, 1)] == pytest.approx(1 - right.mean())
    assert set(res.rows["data"]) == {"ImageNet-C-bar (generated by dtn-bench corrupt (seed 2) - not the released "
                                     "ImageNet-C-bar)"}
    assert "ImageNet-C-bar generated by dtn-bench corrupt" in (res.path / "table.md").read_text()
    code, _, err = _shifts(invoke, "--imagenet-c-dir", str(gen), "--num-classes", "3", "--severities", "1",
                           "--out", str(tmp_path / "bad"))
    assert_one_line_error(code, err, f"ImageNet-C folder {gen} holds imagenet-c-bar written by dtn-bench corrupt")
    assert not (tmp_path / "bad").exists()


def test_corruption_set_with_the_wrong_layout_is_a_one_line_error(tmp_path, invoke):
    """Images directly in a corruption folder (no severity folders) of ImageNet-3DCC: the folder is named."""
    rng = np.random.default_rng(6)
    root = tmp_path / "data"
    _save(root / "imagenet-3dcc" / "fog_3d" / "x.JPEG", (224, 224), rng)
    code, _, err = _shifts(invoke, "--data-root", str(root), "--num-classes", "3", "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, str(root / "imagenet-3dcc"))
    assert not (tmp_path / "o").exists()


def test_placement_is_in_the_rows_the_run_id_and_the_table_label(own, tmp_path):
    """A post-norm model's run: its rows, run id and table label say so; pre and post runs never mix in the table."""
    from dtn_bench.results import read_rows
    from dtn_bench.shifts import evaluate
    from dtn_bench.shifts.report import shifts_table

    runs = {p: evaluate("vit_t_ln", own["root"], sets=["imagenet-val"], num_classes=3, placement=p, out=tmp_path,
                        **KW) for p in ("pre", "post")}
    assert "-post-" in runs["post"].path.name and "-pre-" not in runs["pre"].path.name
    assert set(runs["post"].rows["placement"]) == {"post"} and set(runs["pre"].rows["placement"]) == {"pre"}
    both = pd.concat([read_rows(r.path) for r in runs.values()])
    table = shifts_table(both)
    names = [n for n in table.index if n.startswith("vit_t_ln")]
    assert len(names) == 2 and any(n.startswith("vit_t_ln [post]") for n in names), names
    from dtn_bench.shifts.suite import make_config, plan

    built = plan(make_config("vit_t_ln", own["root"], sets=["imagenet-val"], num_classes=3, placement="post", **KW))
    assert built.model.placement == "post"  # the model the rows were measured with
