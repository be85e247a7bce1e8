"""``dtn-bench imagenet-c``: layout checks, unreadable images, subsets, resume, torchrun/gloo sharding, demo, table.

Every test builds its own tiny ImageNet-C tree (a few 224 x 224 JPEGs per class, fake wnids) and uses vit_t_ln with
3 classes and a seeded checkpoint, so single- and multi-process runs see the same weights.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from cli_helpers import Killed, assert_one_line_error, kill_at, record, run_cli
from PIL import Image

from dtn_bench.errors import DTNBenchError
from dtn_bench.imagenet_c import data as D
from dtn_bench.imagenet_c import evaluation as icev
from dtn_bench.metrics import CORRUPTIONS, SEVERITIES, ce, mce, relative_mce
from dtn_bench.suites import SUITES

CLASSES = ("n00000001", "n00000002", "n00000003")
CORR = ("gaussian_noise", "fog")
SEVS = (1, 2)
PER_CLASS = 3
BAD = "fog/2/n00000002/ILSVRC2012_val_broken.JPEG"
LABEL = ["ImageNet-C"]  # stderr: the data label comes before any error found once the data is named


def loaded(ckpt: Path) -> list[str]:
    """The stderr lines before an error found once the checkpoint has loaded: the data label, the checkpoint."""
    return [*LABEL, f"checkpoint {ckpt}: loaded its weights (a flat state dict, raw)"]


def make_layout(root: Path, corruptions=CORR, severities=SEVS, classes=CLASSES, per=PER_CLASS, size=224,
                seed=0) -> Path:
    rng = np.random.default_rng(seed)
    for c in corruptions:
        for s in severities:
            for w in classes:
                d = root / c / str(s) / w
                d.mkdir(parents=True, exist_ok=True)
                for i in range(per):
                    img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                    Image.fromarray(img).save(d / f"ILSVRC2012_val_{w[-1]}{i:07d}.JPEG", quality=85)
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A layout with one unreadable file, a seeded 3-class checkpoint, and one finished single-process run."""
    base = tmp_path_factory.mktemp("imagenet_c")
    data = make_layout(base / "data")
    (data / BAD).write_bytes(b"this is not a JPEG")
    from safetensors.torch import save_file

    from dtn_bench.models import create

    torch.manual_seed(0)
    model = create("vit_t_ln", num_classes=3)
    ckpt = base / "vit_t_ln_3.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    args = ["imagenet-c", "--model", "vit_t_ln", "--num-classes", "3", "--checkpoint", str(ckpt), "--data-dir",
            str(data), "--corruptions", ",".join(CORR), "--severities", "1,2", "--batch-size", "4"]
    out = base / "results"
    code = run_cli([*args, "--workers", "1", "--clean-error", "25%", "--out", str(out), "--run-id", "single"])
    return {"base": base, "data": data, "ckpt": ckpt, "args": args, "out": out, "code": code,
            "run": out / "imagenet-c" / "single"}


def _pairs(rows: pd.DataFrame) -> dict:
    """(corruption, severity) -> {metric: value} of the per-pair rows."""
    rows = rows[rows["metric"].isin(["n_images", "n_unreadable", "top1_err", "top5_err"]) & rows["severity"].notna()]
    out: dict = {}
    for r in rows.itertuples():
        out.setdefault((r.corruption, int(r.severity)), {})[r.metric] = r.value
    return out


# ------------------------------------------------------------------------------------------------------------------
def test_single_run_rows_counts_and_files(world):
    assert world["code"] == 0
    run = world["run"]
    for name in ("rows.csv", "rows.parquet", "config.json", "env.json", "table.md", "table.tex", "ce_bars.png",
                 "severity.png"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    rows = pd.read_parquet(run / "rows.parquet")
    pairs = _pairs(rows)
    per_pair = len(CLASSES) * PER_CLASS
    assert set(pairs) == {(c, s) for c in CORR for s in SEVS} | {("clean", 0)}
    for key, m in pairs.items():
        if key == ("clean", 0):
            assert m == {"top1_err": 0.25}  # the given --clean-error, stored as a fraction
            continue
        assert m["n_images"] == per_pair
        assert m["n_unreadable"] == (1 if key == ("fog", 2) else 0)
        assert 0.0 <= m["top1_err"] <= 1.0 and "top5_err" not in m  # top-5 only with >= 5 classes
    bad = rows[(rows["corruption"] == "fog") & (rows["severity"] == 2)]["unreadable_files"].unique().tolist()
    assert bad == [BAD]
    ok = rows[(rows["corruption"] == "fog") & (rows["severity"] == 1)]["unreadable_files"].fillna("").unique()
    assert ok.tolist() == [""]
    assert set(rows["data"]) == {"ImageNet-C"} and set(rows["subset"]) == {"full"}
    assert set(rows["checkpoint_sha256"]) == {hashlib.sha256(world["ckpt"].read_bytes()).hexdigest()}


def test_unreadable_named_in_summary(world, capsys):
    code = run_cli([*world["args"], "--workers", "0", "--out", str(world["base"] / "r2"), "--severities", "2",
                    "--corruptions", "fog"])
    captured = capsys.readouterr()
    assert code == 0
    assert BAD in captured.out and "unreadable images" in captured.out
    assert "estimate from warm-up" in captured.err  # 3 batches of 4 images: the estimate comes after batch 3


def test_strict_makes_unreadable_fatal(world, invoke):
    code, _, err = invoke(*world["args"], "--workers", "0", "--strict", "--corruptions", "fog", "--severities", "2",
                          "--out", str(world["base"] / "strict"))
    assert_one_line_error(code, err, "unreadable image", "ILSVRC2012_val_broken.JPEG", "--strict",
                          preceded_by=loaded(world["ckpt"]))


# ------------------------------------------------------------------------------------------------------------------
def _fresh(tmp_path: Path, **kw) -> Path:
    return make_layout(tmp_path / "data", **{"per": 1, **kw})


def _break_missing(root: Path) -> str:
    import shutil

    shutil.rmtree(root / "fog" / "2")
    shutil.rmtree(root / "gaussian_noise" / "1" / "n00000003")
    return "missing 2 folder(s): fog/2, gaussian_noise/1/n00000003"


def _break_nonimage(root: Path) -> str:
    (root / "fog" / "1" / "n00000001" / "README.txt").write_text("hi")
    return "non-image file"


def _break_flat(root: Path) -> str:
    Image.new("RGB", (224, 224)).save(root / "fog" / "1" / "x.JPEG")
    return "wrong layout: images directly in"


def _break_size(root: Path) -> str:
    make_layout(root, corruptions=("fog",), severities=(1, 2), per=1, size=200)
    return "is 200x200 but vit_t_ln takes 224x224"


@pytest.mark.parametrize("breaker", [_break_missing, _break_nonimage, _break_flat, _break_size])
def test_bad_layout_is_one_line_error(tmp_path, invoke, breaker):
    root = _fresh(tmp_path)
    if breaker is _break_size:
        import shutil

        shutil.rmtree(root / "fog")
    expected = breaker(root)
    code, _, err = invoke("imagenet-c", "--model", "vit_t_ln", "--num-classes", "3", "--data-dir", str(root),
                          "--corruptions", "gaussian_noise,fog", "--severities", "1,2", "--workers", "0",
                          "--out", str(tmp_path / "res"))
    assert_one_line_error(code, err, expected, preceded_by=LABEL)
    assert not (tmp_path / "res").exists()  # checked before any work: no run folder


@pytest.mark.parametrize("extra, expected", [
    (["--num-classes", "5"], "class count mismatch: "),
    ([], "are not ImageNet-1k wnids"),  # vit_t_ln has 1000 outputs by default
    (["--num-classes", "3", "--corruptions", "gausian_noise"], "unknown corruption 'gausian_noise' (did you mean "
                                                               "gaussian_noise?)"),
    (["--num-classes", "3", "--clean-error", "23.9"], "--clean-error '23.9'"),
    (["--num-classes", "3", "--subset", "2", "--subset-file", "x.txt"], "either --subset or --subset-file"),
])
def test_bad_settings(tmp_path, invoke, extra, expected):
    root = _fresh(tmp_path)
    args = ["imagenet-c", "--model", "vit_t_ln", "--data-dir", str(root), "--severities", "1,2",
            "--workers", "0", "--out", str(tmp_path / "res")]
    if "--corruptions" not in extra:
        args += ["--corruptions", "gaussian_noise,fog"]
    code, _, err = invoke(*args, *extra)
    assert_one_line_error(code, err, expected, preceded_by=LABEL)


def test_checkpoint_that_does_not_fit(tmp_path, invoke):
    root = _fresh(tmp_path)
    bad = tmp_path / "other.pth"
    torch.save({"model": {"head.weight": torch.zeros(7, 192), "head.bias": torch.zeros(7)}}, bad)
    code, _, err = invoke("imagenet-c", "--model", "vit_t_ln", "--num-classes", "3", "--checkpoint", str(bad),
                          "--data-dir", str(root), "--corruptions", "gaussian_noise,fog", "--severities", "1,2")
    assert_one_line_error(code, err, "does not fit", preceded_by=LABEL)


def test_layout_given_a_corruption_folder_and_no_data_dir(tmp_path, invoke):
    root = _fresh(tmp_path)
    code, _, err = invoke("imagenet-c", "--model", "vit_t_ln", "--num-classes", "3", "--data-dir", str(root / "fog"))
    assert_one_line_error(code, err, "looks like one corruption folder", preceded_by=LABEL)
    code, _, err = invoke("imagenet-c", "--model", "vit_t_ln")
    assert_one_line_error(code, err, "zenodo.org/record/2235448", "--demo")


# ------------------------------------------------------------------------------------------------------------------
def test_stratified_subset_is_deterministic_and_balanced():
    paths = [f"n{c:08d}/img_{i:03d}.JPEG" for c in range(7) for i in range(10 + c)]
    a = D.stratified_subset(paths, 30, seed=0)
    assert a == D.stratified_subset(list(reversed(paths)), 30, seed=0)  # listing order does not matter
    assert a == sorted(a) and len(set(a)) == 30
    per = pd.Series([p.split("/")[0] for p in a]).value_counts()
    assert len(per) == 7 and per.max() - per.min() <= 1
    assert D.stratified_subset(paths, 30, seed=1) != a
    assert set(D.stratified_subset(paths, 3, seed=0)) <= set(paths)
    with pytest.raises(DTNBenchError, match="--subset 200"):
        D.stratified_subset(paths, 200)


def test_subset_file_entries(tmp_path):
    paths = ["n01/a.JPEG", "n01/b.JPEG", "n02/c.JPEG"]
    f = tmp_path / "ids.txt"
    f.write_text("# RobustBench style\nn02/c.JPEG\n\nb.JPEG 1\n")
    entries = D.read_subset_file(f)
    assert D.apply_subset_file(paths, entries, "x") == ["n01/b.JPEG", "n02/c.JPEG"]
    with pytest.raises(DTNBenchError, match="not found in fog/1: n03/z.JPEG"):
        D.apply_subset_file(paths, ["n03/z.JPEG"], "fog/1")


def test_subset_run_is_labelled(world):
    code = run_cli([*world["args"], "--workers", "0", "--subset", "2", "--corruptions", "gaussian_noise",
                    "--severities", "1", "--out", str(world["base"] / "subset"), "--run-id", "s"])
    assert code == 0
    rows = pd.read_parquet(world["base"] / "subset" / "imagenet-c" / "s" / "rows.parquet")
    assert rows.loc[rows["metric"] == "n_images", "value"].tolist() == [2.0]
    assert set(rows["subset"]) == {"subset 2/pair, class-stratified (seed 0)"}
    assert "subset 2/pair" in (world["base"] / "subset" / "imagenet-c" / "s" / "table.md").read_text()


# ------------------------------------------------------------------------------------------------------------------
def test_resume_skips_finished_pairs_and_refuses_other_settings(world, invoke):
    from dtn_bench.imagenet_c import evaluate

    out = world["base"] / "resume"
    kw = dict(num_classes=3, checkpoint=world["ckpt"], corruptions=CORR, severities=SEVS, batch_size=4, workers=0,
              out=out)

    with pytest.raises(Killed):
        evaluate("vit_t_ln", world["data"], on_event=kill_at("pair"), **kw)
    (run,) = (out / "imagenet-c").iterdir()  # default run id: model + hash of the settings
    assert len(_pairs(pd.read_parquet(run / "rows.parquet"))) == 1
    events = []
    result = evaluate("vit_t_ln", world["data"], resume=True, on_event=record(events), **kw)
    assert result.path == run
    start = next(i for k, i in events if k == "start")  # the runner's: the units of the run, those in the folder
    assert start == {"total": 4, "skipped": 1}
    pending = next(i for k, i in events if k == "pending")  # the measurement's: what is left, in images
    assert pending["skipped"] == 1 and pending["pending"] == 3
    assert pending["images"] == 3 * len(CLASSES) * PER_CLASS + 1  # fog/2 also holds the unreadable file
    assert [i["label"] for k, i in events if k == "step"] == ["gaussian_noise/2", "fog/1", "fog/2"]
    assert sum(1 for k, _ in events if k == "pair") == 3
    resumed = _pairs(result.rows)
    single = {k: v for k, v in _pairs(pd.read_parquet(world["run"] / "rows.parquet")).items() if k != ("clean", 0)}
    assert resumed == single  # same numbers as the uninterrupted run, each pair once
    # a different setting (here a subset) in the same run folder is refused
    code, _, err = invoke(*world["args"], "--subset", "1", "--resume", "--out", str(out), "--run-id", run.name)
    assert_one_line_error(code, err, "different config", "subset", preceded_by=loaded(world["ckpt"]))
    code, _, err = invoke(*world["args"], "--out", str(out), "--run-id", run.name)
    assert_one_line_error(code, err, "already holds results", preceded_by=loaded(world["ckpt"]))


@pytest.mark.slow
def test_torchrun_gloo_two_processes_match_single_process(world):
    run_id = "dist"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "dtn_bench",
           *world["args"], "--workers", "0", "--device", "cpu", "--clean-error", "25%", "--out", str(world["out"]),
           "--run-id", run_id]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dist_rows = pd.read_parquet(world["out"] / "imagenet-c" / run_id / "rows.parquet")
    single_rows = pd.read_parquet(world["run"] / "rows.parquet")
    # 9 + 1 images per pair split 5/5 or 5/4 across ranks: exact counts, nothing padded or dropped
    assert _pairs(dist_rows) == _pairs(single_rows)
    names = lambda r: r.loc[r["metric"] == "n_unreadable", "unreadable_files"].fillna("").tolist()  # noqa: E731
    assert names(dist_rows) == names(single_rows)
    assert len(dist_rows) == len(single_rows)  # rank 0 alone wrote rows
    # the number of processes is recorded (config: the session that made the folder; env: the latest one) ...
    for run, world_size in ((world["out"] / "imagenet-c" / run_id, 2), (world["run"], 1)):
        assert json.loads((run / "config.json").read_text())["world_size"] == world_size
        assert json.loads((run / "env.json").read_text())["world_size"] == world_size
    # ... but is no part of the run key: a single process may resume a run made by two
    code = run_cli([*world["args"], "--workers", "0", "--device", "cpu", "--clean-error", "25%", "--out",
                    str(world["out"]), "--run-id", run_id, "--resume"])
    assert code == 0


# ------------------------------------------------------------------------------------------------------------------
def test_demo_small(tmp_path, capsys):
    code = run_cli(["imagenet-c", "--model", "vit_t_dtn", "--demo", "--demo-classes", "3", "--demo-images", "1",
                    "--demo-train-images", "4", "--corruptions", "gaussian_noise,brightness", "--severities", "1,5",
                    "--workers", "0", "--batch-size", "8", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "demo data - not ImageNet-C" in captured.err and "[demo data - not ImageNet-C]" in captured.out
    (run,) = [p for p in (tmp_path / "imagenet-c").iterdir() if not p.name.startswith(".")]
    rows = pd.read_parquet(run / "rows.parquet")
    assert set(rows["data"]) == {"demo data - not ImageNet-C"}
    pairs = _pairs(rows)
    assert set(pairs) == {("clean", 0)} | {(c, s) for c in ("gaussian_noise", "brightness") for s in (1, 5)}
    assert all(m["n_images"] == 3 for m in pairs.values())
    assert "demo data - not ImageNet-C" in (run / "table.md").read_text()
    assert "demo data - not ImageNet-C" in (run / "table.tex").read_text()
    layout = tmp_path / "imagenet-c" / ".demo-data" / "c3-i1-s0" / "imagenet-c"
    assert sorted(p.name for p in (layout / "brightness" / "5").iterdir()) == [
        "demo00_stripes_0", "demo01_stripes_45", "demo02_stripes_90"]


# ------------------------------------------------------------------------------------------------------------------
def _synthetic_run(root: Path, model: str, norm: str, shift: float, run_id: str | None = None, **columns) -> Path:
    """A finished run whose errors are known (written through the real RunWriter), to test the table.

    ``columns`` go into every row (e.g. ``checkpoint_sha256``); each pair has 10 images and a top-5 error of 0.1.
    """
    from dtn_bench.metrics import ALEXNET_ERRORS
    from dtn_bench.results import RunWriter, make_row

    w = RunWriter(root, "imagenet-c", {"model": model}, run_id=run_id or model)
    rows = [make_row("imagenet-c", model, norm, "top1_err", 0.2 + shift, corruption="clean", severity=0,
                     data="ImageNet-C", **columns)]
    for c in CORRUPTIONS:
        for s in SEVERITIES:
            pair = dict(corruption=c, severity=s, data="ImageNet-C", **columns)
            rows += [make_row("imagenet-c", model, norm, "top1_err", ALEXNET_ERRORS[c][s - 1] * 0.6 + shift, **pair),
                     make_row("imagenet-c", model, norm, "top5_err", 0.1, **pair),
                     make_row("imagenet-c", model, norm, "n_images", 10, "images", **pair)]
    w.append(rows)
    return w.path


def test_table_combines_runs_with_dtn_minus_ln(tmp_path, capsys):
    from dtn_bench.imagenet_c.report import paper_table
    from dtn_bench.metrics import ALEXNET_ERRORS
    from dtn_bench.results import read_rows

    ln = _synthetic_run(tmp_path / "r", "vit_s_ln", "layernorm", 0.0)
    dtn = _synthetic_run(tmp_path / "r", "vit_s_dtn", "dtn", -0.05)
    table, labels = paper_table(read_rows([ln, dtn]))
    errs = {c: [ALEXNET_ERRORS[c][s - 1] * 0.6 for s in SEVERITIES] for c in CORRUPTIONS}
    assert labels == ["ImageNet-C"]
    assert table.loc["vit_s_ln", ("", "mCE")] == pytest.approx(60.0)
    assert table.loc["vit_s_ln", ("", "mCE")] == pytest.approx(mce(errs))
    assert table.loc["vit_s_ln", ("", "rel. mCE")] == pytest.approx(relative_mce(errs, 0.2))
    assert table.loc["vit_s_ln", ("Weather", "Fog")] == pytest.approx(ce("fog", errs["fog"]))
    diff = table.loc["vit_s: DTN - LN"]
    assert diff[("", "clean err")] == pytest.approx(-5.0)
    assert diff[("", "mCE")] == pytest.approx(table.loc["vit_s_dtn", ("", "mCE")] - 60.0) and diff[("", "mCE")] < 0
    assert table.loc["vit_s_ln", ("", "published mCE")] == "not published"
    out = tmp_path / "combined"
    code = run_cli(["table", "imagenet-c", str(ln), str(dtn), "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "vit_s: DTN - LN" in printed and "60.0" in printed
    tex = (out / "table.tex").read_text()
    assert r"\multicolumn{3}{c}{Noise}" in tex and r"\multicolumn{4}{c}{Digital}" in tex
    for name in ("table.md", "ce_bars.png", "severity.png"):
        assert (out / name).stat().st_size > 0


def test_pipeline_benchmark(world, capsys):
    out = world["base"] / "bench"
    code = run_cli(["bench", "imagenet-c-pipeline", "--model", "vit_t_ln", "--num-classes", "3", "--data-dir",
                    str(world["data"]), "--corruptions", "gaussian_noise", "--severities", "1", "--images", "9",
                    "--batch-size", "3", "--workers", "0", "--out", str(out), "--run-id", "b"])
    assert code == 0, capsys.readouterr().err
    run = out / "bench-imagenet-c-pipeline" / "b"
    rows = pd.read_parquet(run / "rows.parquet")
    assert set(rows["suite"]) == {"bench-imagenet-c-pipeline"} and set(rows["images"]) == {6}  # batch 1 not timed
    got = dict(zip(rows["pipeline"], rows["value"], strict=True))
    assert got["end_to_end"] > 0 and got["model_only"] > 0
    assert got["end_to_end / model_only"] == pytest.approx(got["end_to_end"] / got["model_only"])
    assert {icev.SUITE, "bench-imagenet-c-pipeline"} <= set(SUITES.names())
    # the report: the three figures in one row, also through dtn-bench table
    md = (run / "table.md").read_text()
    assert "end_to_end / model_only" in md and f"{got['model_only']:.2f}" in md
    capsys.readouterr()
    code = run_cli(["table", "imagenet-c-pipeline", str(run), "--format", "csv"])
    printed = capsys.readouterr().out
    assert code == 0
    table = pd.read_csv(io.StringIO(printed))
    assert table["end_to_end"].tolist() == [pytest.approx(got["end_to_end"])]


def test_pipeline_benchmark_refuses_bad_settings_before_any_work(world, invoke):
    out = world["base"] / "bench-bad"
    args = ["bench", "imagenet-c-pipeline", "--model", "vit_t_ln", "--num-classes", "3", "--data-dir",
            str(world["data"]), "--workers", "0", "--out", str(out)]
    code, _, err = invoke(*args, "--images", "0")
    assert_one_line_error(code, err, "--images must be > 0, got 0")
    code, _, err = invoke(*args, "--corruptions", "fgo")
    assert_one_line_error(code, err, "unknown corruption 'fgo'")
    code, _, err = invoke(*args, "--corruptions", "fog", "--severities", "3")  # the layout has severities 1, 2
    assert_one_line_error(code, err, "missing 1 folder(s): fog/3")
    code, _, err = invoke(*args, "--severities", "1", "--images", "6", "--batch-size", "3")  # timed after batch 1
    assert_one_line_error(code, err, "pipeline benchmark: 6 images make fewer than 3 batches")
    assert not out.exists()


def test_rows_hold_measurements_only_and_the_report_derives(world):
    """The run writes per-pair measurements; CE, mCE and the means come from the report (nothing derived stored)."""
    from dtn_bench.imagenet_c.report import summarize

    rows = pd.read_parquet(world["run"] / "rows.parquet")
    assert set(rows["metric"]) == {"n_images", "n_unreadable", "top1_err", "throughput_img_s"}
    (s,) = summarize(rows).values()
    pairs = _pairs(rows)
    assert s.errors == {c: {k: pairs[(c, k)]["top1_err"] for k in SEVS} for c in CORR}
    assert s.clean_error == 0.25 and s.images == 4 * len(CLASSES) * PER_CLASS and s.unreadable == 1
    assert s.ce == {} and s.mce is None  # 2 of 5 severities: no CE to compute


def test_run_suite_runs_the_registered_suite_from_a_config(world, tmp_path):
    """``run_suite("imagenet-c", cfg)`` plans from the config itself (its note emitted) and measures the same."""
    from dtn_bench.imagenet_c import make_config
    from dtn_bench.runner import run_suite

    cfg = make_config("vit_t_ln", world["data"], num_classes=3, checkpoint=world["ckpt"], corruptions=["fog"],
                      severities=[2], batch_size=4, workers=0)
    events = []
    result = run_suite("imagenet-c", cfg, out=tmp_path, run_id="r", on_event=record(events))
    assert result.path == tmp_path / "imagenet-c" / "r" and (result.path / "table.md").is_file()
    single = _pairs(pd.read_parquet(world["run"] / "rows.parquet"))
    assert _pairs(result.rows) == {("fog", 2): single[("fog", 2)]}
    assert [k for k, _ in events if k in ("note", "start", "pending", "pair", "done", "rendered")] == [
        "start", "note", "pending", "pair", "done", "rendered"]


# ------------------------------------------------------------------------------------------------------------------
# combining runs: other checkpoints, settings or subset lists never mix; identical runs count once
def _hex(prefix: str) -> str:
    return prefix + "0" * (64 - len(prefix))


def test_table_never_mixes_checkpoints_and_counts_identical_runs_once(tmp_path, capsys):
    from dtn_bench.imagenet_c.report import paper_table, summarize
    from dtn_bench.metrics import ALEXNET_ERRORS
    from dtn_bench.results import read_rows

    r = tmp_path / "r"
    ln_a = _synthetic_run(r, "vit_s_ln", "layernorm", 0.0, "ln-a", checkpoint_sha256=_hex("a1b2c3"), amp="fp32")
    ln_a2 = _synthetic_run(r, "vit_s_ln", "layernorm", 0.0, "ln-a-again", checkpoint_sha256=_hex("a1b2c3"),
                           amp="fp32")
    ln_b = _synthetic_run(r, "vit_s_ln", "layernorm", 0.1, "ln-b", checkpoint_sha256=_hex("d4e5f6"), amp="fp32")
    dtn = _synthetic_run(r, "vit_s_dtn", "dtn", -0.05, "dtn", checkpoint_sha256=_hex("0f0f0f"), amp="fp32")
    table, _ = paper_table(read_rows([ln_a, ln_b, dtn]))
    assert list(table.index) == ["vit_s_ln @a1b2c3", "vit_s_ln @d4e5f6", "vit_s_dtn"]  # no guessed DTN - LN row
    shifted = {c: [ALEXNET_ERRORS[c][s - 1] * 0.6 + 0.1 for s in SEVERITIES] for c in CORRUPTIONS}
    assert table.loc["vit_s_ln @a1b2c3", ("", "mCE")] == pytest.approx(60.0)
    assert table.loc["vit_s_ln @d4e5f6", ("", "mCE")] == pytest.approx(mce(shifted))
    # the same checkpoint and settings: one row, each pair once (a repeated run, and a run read twice)
    sums = summarize(read_rows([ln_a, ln_a2, ln_a / "rows.csv"]))
    (key, s), = sums.items()
    assert key == ("vit_s_ln", "layernorm", "ImageNet-C", "") and s.images == 75 * 10 and s.mce == pytest.approx(60)
    # same checkpoint, other autocast: apart as well
    bf16 = _synthetic_run(r, "vit_s_ln", "layernorm", 0.02, "ln-a-bf16", checkpoint_sha256=_hex("a1b2c3"), amp="bf16")
    table, _ = paper_table(read_rows([ln_a, bf16]))
    assert list(table.index) == ["vit_s_ln [fp32]", "vit_s_ln [bf16]"]
    # another placement: apart, and tagged even alone (rows without the column are pre)
    post = _synthetic_run(r, "vit_s_ln", "layernorm", 0.03, "ln-a-post", checkpoint_sha256=_hex("a1b2c3"), amp="fp32",
                          placement="post")
    table, _ = paper_table(read_rows([ln_a, post]))
    assert list(table.index) == ["vit_s_ln", "vit_s_ln [post]"]
    assert list(paper_table(read_rows([post]))[0].index) == ["vit_s_ln [post]"]
    code = run_cli(["table", "imagenet-c", str(ln_a), str(ln_b), str(dtn)])
    printed = capsys.readouterr().out
    assert code == 0 and "vit_s_ln @a1b2c3" in printed and "vit_s_ln @d4e5f6" in printed
    assert "first hex digits of the checkpoint's SHA-256" in printed


def test_subset_files_with_one_name_stay_apart(world, tmp_path):
    from dtn_bench.imagenet_c.report import paper_table
    from dtn_bench.results import read_rows

    lists, runs = {}, []
    entries = {"a": "n00000001/ILSVRC2012_val_10000000.JPEG", "b": "n00000002/ILSVRC2012_val_20000000.JPEG"}
    for sub, entry in entries.items():
        f = tmp_path / sub / "ids.txt"
        f.parent.mkdir()
        f.write_text(entry + "\n")
        lists[sub] = hashlib.sha256(f.read_bytes()).hexdigest()
        code = run_cli([*world["args"], "--workers", "0", "--subset-file", str(f), "--corruptions", "fog",
                        "--severities", "1", "--out", str(tmp_path / "res"), "--run-id", sub])
        assert code == 0
        runs.append(tmp_path / "res" / "imagenet-c" / sub)
    labels = [set(pd.read_parquet(run / "rows.parquet")["data"]) for run in runs]
    for digest, label in zip(lists.values(), labels, strict=True):
        assert label == {f"ImageNet-C (subset file ids.txt sha256 {digest[:8]})"}
    table, table_labels = paper_table(read_rows(runs))
    assert len(table) == 2 and len(table_labels) == 2


# ------------------------------------------------------------------------------------------------------------------
# no checkpoint: seeded random weights, announced, keyed and labelled
_DIGEST = """
import hashlib, sys, torch
from dtn_bench.imagenet_c.evaluation import ImageNetCConfig, build_model
torch.rand(7)  # the caller's random state must not matter
model, _ = build_model(ImageNetCConfig(model="vit_t_ln", num_classes=3, data_dir="x", seed=int(sys.argv[1])))
h = hashlib.sha256()
for k, v in sorted(model.state_dict().items()):
    h.update(k.encode()); h.update(v.detach().numpy().tobytes())
print(h.hexdigest())
"""


@pytest.mark.slow
def test_random_weights_are_the_same_in_every_process():
    digests = [subprocess.run([sys.executable, "-c", _DIGEST, seed], capture_output=True, text=True, check=True,
                              timeout=300).stdout.strip() for seed in ("0", "0", "1")]
    assert digests[0] == digests[1] and digests[0] != digests[2] and len(digests[0]) == 64


@pytest.fixture(scope="module")
def five(tmp_path_factory):
    """One pair of a 5-class layout (so top-5 is measured), evaluated without a checkpoint."""
    base = tmp_path_factory.mktemp("five")
    data = make_layout(base / "data", corruptions=("fog",), severities=(1,),
                       classes=tuple(f"n0000001{k}" for k in range(5)), per=1)
    return base, data


def test_no_checkpoint_warns_and_labels_random_weights(five, capsys):
    base, data = five
    code = run_cli(["imagenet-c", "--model", "vit_t_ln", "--num-classes", "5", "--data-dir", str(data),
                    "--corruptions", "fog", "--severities", "1", "--workers", "0", "--out", str(base / "out"),
                    "--run-id", "r"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    warning = "warning: no --checkpoint: randomly initialised weights (seed 0); errors will be near chance"
    assert warning in captured.err.splitlines()
    run = base / "out" / "imagenet-c" / "r"
    rows = pd.read_parquet(run / "rows.parquet")
    assert set(rows["checkpoint_sha256"]) == {"random init (seed 0)"}
    assert json.loads((run / "config.json").read_text())["checkpoint_sha256"] == "random init (seed 0)"
    assert "vit_t_ln [random init (seed 0)]" in (run / "table.md").read_text()
    # the summary shows top-5 and the mean accuracy, labelled
    assert "top-5 err" in captured.out
    top1, top5 = (rows.loc[rows["metric"] == m, "value"].item() for m in ("top1_err", "top5_err"))
    assert f"mean accuracy over the 1 evaluated pair(s) of the 15 {100 * (1 - top1):.2f}%" in captured.out
    assert f"mean top-5 error over the 1 evaluated pair(s) of the 15 {100 * top5:.2f}%" in captured.out


def test_summary_of_a_complete_run_prints_top5_and_mean_accuracy(tmp_path, capsys):
    from types import SimpleNamespace

    from dtn_bench.cli.imagenet_c import _summary
    from dtn_bench.imagenet_c import ImageNetCResult
    from dtn_bench.imagenet_c.report import summarize
    from dtn_bench.metrics import ALEXNET_ERRORS, mean_corruption_accuracy
    from dtn_bench.results import read_rows

    run = _synthetic_run(tmp_path, "vit_s_ln", "layernorm", 0.0)
    rows = read_rows(run)
    (s,) = summarize(rows).values()
    errs = {c: [ALEXNET_ERRORS[c][k - 1] * 0.6 for k in SEVERITIES] for c in CORRUPTIONS}
    assert s.mean_corruption_accuracy == pytest.approx(mean_corruption_accuracy(errs))
    assert s.mean_top5_error == pytest.approx(0.1)
    _summary(ImageNetCResult(run, rows, s), "ImageNet-C", SimpleNamespace(done={}))
    out = capsys.readouterr().out
    assert f"mean corruption accuracy (unnormalised, 15 x 5) {100 * mean_corruption_accuracy(errs):.2f}%" in out
    assert "mean top-5 error (unnormalised, 15 x 5) 10.00%" in out and "top-5 err" in out


# ------------------------------------------------------------------------------------------------------------------
def test_extra_adds_to_the_listed_corruptions(world, invoke):
    from dtn_bench.imagenet_c import make_config
    from dtn_bench.metrics import EXTRA_CORRUPTIONS

    cfg = make_config("vit_t_ln", world["data"], corruptions=["fog"], extra=True, device="cpu")
    assert cfg.corruptions == ("fog", *EXTRA_CORRUPTIONS)
    code, _, err = invoke(*world["args"], "--corruptions", "fog", "--extra", "--workers", "0",
                          "--out", str(world["base"] / "extra"))
    assert_one_line_error(code, err, "speckle_noise (all severities)", "spatter (all severities)",
                          preceded_by=LABEL)
    assert not (world["base"] / "extra").exists()


# ------------------------------------------------------------------------------------------------------------------
def test_data_made_by_corrupt_is_labelled_as_generated(tmp_path, invoke):
    from dtn_bench.data.corruptions import MANIFEST_NAME, corrupt_folder
    from dtn_bench.imagenet_c.report import ce_bars, severity_lines

    src = make_layout(tmp_path / "src", corruptions=("x",), severities=(0,), per=1, size=256) / "x" / "0"
    corrupt_folder(src, tmp_path / "gen", ["fog"], [1], seed=4)
    assert (tmp_path / "gen" / MANIFEST_NAME).is_file()
    args = ["imagenet-c", "--model", "vit_t_ln", "--num-classes", "3", "--data-dir", str(tmp_path / "gen"),
            "--corruptions", "fog", "--severities", "1", "--workers", "0", "--out", str(tmp_path / "out")]
    code, out, err = invoke(*args, "--run-id", "g")
    assert code == 0, err
    label = "generated by dtn-bench corrupt (seed 4) - not the released ImageNet-C"
    assert err.splitlines()[0] == label and f"[{label}]" in out
    run = tmp_path / "out" / "imagenet-c" / "g"
    rows = pd.read_parquet(run / "rows.parquet")
    assert set(rows["data"]) == {label}
    assert label in (run / "table.md").read_text() and label in (run / "table.tex").read_text()
    assert label in ce_bars(rows).axes[0].get_title() and label in severity_lines(rows)._suptitle.get_text()
    code, _, err = invoke(*args, "--run-id", "own", "--data-label", "my corruptions")
    assert code == 0, err
    assert set(pd.read_parquet(tmp_path / "out" / "imagenet-c" / "own" / "rows.parquet")["data"]) == {
        "my corruptions"}
    (tmp_path / "gen" / MANIFEST_NAME).write_text("{ not json")
    code, _, err = invoke(*args, "--run-id", "bad")
    assert_one_line_error(code, err, "cannot read the dtn-bench corrupt manifest")


# ------------------------------------------------------------------------------------------------------------------
def test_table_csv(tmp_path, invoke):
    ln = _synthetic_run(tmp_path / "r", "vit_s_ln", "layernorm", 0.0)
    dtn = _synthetic_run(tmp_path / "r", "vit_s_dtn", "dtn", -0.05)
    out = tmp_path / "combined"
    code, printed, err = invoke("table", "imagenet-c", str(ln), str(dtn), "--format", "csv", "--out", str(out))
    assert code == 0, err
    df = pd.read_csv(io.StringIO(printed), index_col=[0, 1])
    assert list(df.index.names) == ["model", "data"]
    assert df.loc[("vit_s_ln", "ImageNet-C"), "mCE"] == pytest.approx(60.0)
    assert df.loc[("vit_s_ln", "ImageNet-C"), "published mCE"] == "not published"
    assert df.loc[("vit_s: DTN - LN", "ImageNet-C"), "clean err"] == pytest.approx(-5.0)
    assert "Weather / Fog" in df.columns and "rel. mCE" in df.columns
    assert (out / "table.csv").read_text() == printed
    assert (out / "table.md").is_file() and (out / "table.tex").is_file()
    code, _, err = invoke("table", "imagenet-c", str(ln), "--format", "html")
    assert_one_line_error(code, err, "choose md, tex or csv")


def test_ema_weights_are_evaluated_recorded_and_keyed(five, capsys):
    """A CheckpointSaver file (state_dict + state_dict_ema): the EMA weights are evaluated by default.

    The rows, config and run key say so; --no-ema evaluates the raw ones in another run folder.
    """
    import argparse

    from dtn_bench.models import create

    base, data = five
    torch.manual_seed(1)
    raw = create("vit_t_ln", num_classes=5).state_dict()
    torch.manual_seed(2)
    ema = create("vit_t_ln", num_classes=5).state_dict()
    ckpt = base / "saver.pth.tar"
    torch.save({"epoch": 3, "arch": "vit_t_ln", "state_dict": raw, "optimizer": {}, "version": 2,
                "args": argparse.Namespace(model_ema=True), "state_dict_ema": ema, "metric": 1.0}, ckpt)
    args = ["imagenet-c", "--model", "vit_t_ln", "--num-classes", "5", "--data-dir", str(data), "--corruptions",
            "fog", "--severities", "1", "--workers", "0", "--checkpoint", str(ckpt), "--out", str(base / "ema")]
    runs = {}
    for flag, weights in (([], "ema"), (["--no-ema"], "raw")):
        code = run_cli([*args, *flag])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        said = "loaded the EMA weights (state_dict_ema)" if weights == "ema" else "loaded the raw weights (state_dict"
        assert said in captured.err
        (run,) = [p for p in (base / "ema" / "imagenet-c").iterdir() if p not in runs.values()]
        rows = pd.read_parquet(run / "rows.parquet")
        assert set(rows["weights"]) == {weights}
        cfg = json.loads((run / "config.json").read_text())
        assert cfg["weights"] == weights and cfg["ema"] == (weights == "ema")
        runs[weights] = run
    assert runs["ema"] != runs["raw"]  # the weight set keys the run

    from dtn_bench.imagenet_c.evaluation import build_model

    for weights, sd in (("ema", ema), ("raw", raw)):
        cfg = icev.ImageNetCConfig(model="vit_t_ln", num_classes=5, checkpoint=str(ckpt), ema=weights == "ema")
        model, info = build_model(cfg)
        assert info["weights"] == weights
        assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())


def test_a_partial_copy_with_a_subset_file_runs_a_1000_class_model(tmp_path, invoke):
    """A partial copy (two real ImageNet classes, only the listed images) runs a 1000-class model.

    As a copy of RobustBench's 5,000 would be: accepted with --subset-file, labels by the ImageNet-1k class index; a
    listed image that is absent is named.
    """
    from dtn_bench.imagenet_c.evaluation import imagenet_wnids

    wnids = ("n01440764", "n01484850")  # class 0 and class 2 of ImageNet-1k
    data = make_layout(tmp_path / "data", corruptions=("fog",), severities=(1, 2), classes=wnids, per=1)
    listed = sorted(f"{w}/{p.name}" for w in wnids for p in (data / "fog" / "1" / w).iterdir())
    subset = tmp_path / "5000.txt"
    subset.write_text("\n".join(listed) + "\n")
    args = ["imagenet-c", "--model", "vit_t_ln", "--data-dir", str(data), "--corruptions", "fog", "--severities",
            "1,2", "--workers", "0", "--out", str(tmp_path / "out"), "--run-id", "p"]
    code, _, err = invoke(*args, "--subset-file", str(subset))
    assert code == 0, err
    rows = pd.read_parquet(tmp_path / "out" / "imagenet-c" / "p" / "rows.parquet")
    assert rows.loc[rows["metric"] == "n_images", "value"].tolist() == [2.0, 2.0]
    layout = D.scan_layout(data, ("fog",), (1, 2), classes=imagenet_wnids())
    assert layout.label(listed[0]) == 0 and layout.label(listed[1]) == 2 and len(layout.classes) == 1000
    # without the subset list a partial copy is refused as before
    code, _, err = invoke(*args, "--run-id", "q")
    assert_one_line_error(code, err, "lacks 998 of the 1000 ImageNet-1k classes", preceded_by=LABEL)
    # an image of the list missing in one pair is named
    (data / "fog" / "2" / listed[1]).unlink()
    code, _, err = invoke(*args, "--run-id", "r", "--subset-file", str(subset))
    assert_one_line_error(code, err, f"not found in fog/2: {listed[1]}", preceded_by=LABEL)
    # a class folder that is no ImageNet class is named
    (data / "fog" / "1" / "n99999999").mkdir()
    code, _, err = invoke(*args, "--run-id", "s", "--subset-file", str(subset))
    assert_one_line_error(code, err, "n99999999 is not one of the model's 1000 classes", preceded_by=LABEL)
