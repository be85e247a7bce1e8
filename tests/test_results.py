"""Tests for dtn_bench.results: schema, run writer, reading back, tables, published numbers."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from cli_helpers import assert_one_line_message

from dtn_bench.errors import DTNBenchError
from dtn_bench.results import (
    IDENTITY_COLUMNS,
    IMAGENET_TOP1,
    PROVENANCE_COLUMNS,
    UNITS,
    Published,
    RunWriter,
    add_published,
    atomic_write_text,
    make_row,
    order_columns,
    pivot,
    read_rows,
    render,
    to_csv,
    to_latex,
    to_markdown,
    validate_rows,
)
from dtn_bench.results import env as env_module
from dtn_bench.results.published import LRA_LISTOPS, published

FAKE_ENV = {
    "timestamp": "2025-01-01T00:00:00+00:00",
    "git_sha": "abc123",
    "dtn_bench_version": "0.1.0",
    "torch_version": "2.4.0",
    "timm_version": "1.0.15",
    "device": "cpu: test",
}
CONFIG = {"suite": "cost", "models": ["vit_s", "vit_t"], "batch_size": 8, "device": "cpu", "resume": False}


def _writer(root: Path, config: dict | None = None, **kwargs) -> RunWriter:
    kwargs.setdefault("run_id", "run1")
    return RunWriter(root, "cost", config if config is not None else CONFIG, env=FAKE_ENV, **kwargs)


def _rows(norm: str, batch_sizes: list[int]) -> list[dict]:
    return [
        make_row("cost", "vit_s", norm, "latency_ms_p50", 1.0 / 3.0 + b, batch_size=b, dtype="float32")
        for b in batch_sizes
    ]


def _temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------------------------------------- schema


def test_make_row_looks_up_unit_and_casts_value():
    row = make_row("cost", "vit_s", "dtn", "throughput_img_s", 12, batch_size=64)
    assert row == {
        "suite": "cost",
        "model": "vit_s",
        "norm": "dtn",
        "metric": "throughput_img_s",
        "value": 12.0,
        "unit": "img/s",
        "batch_size": 64,
    }
    assert isinstance(row["value"], float)
    assert make_row("robustness", "vit_s", "dtn", "mce", 50)["unit"] == "%"
    assert make_row("robustness", "vit_s", "dtn", "top1_err", 0.2)["unit"] == "fraction"
    assert make_row("x", "m", "n", "my_metric", 1, unit="widgets")["unit"] == "widgets"


def test_make_row_rejects_unknown_metric_and_non_numbers():
    with pytest.raises(ValueError, match="unknown metric 'my_metric'"):
        make_row("x", "m", "n", "my_metric", 1.0)
    with pytest.raises(ValueError, match="not a number"):
        make_row("x", "m", "n", "gmacs", "lots")


def test_units_cover_design_metric_names():
    for metric in ("throughput_img_s", "latency_ms_p50", "peak_mem_mib", "gmacs", "params_m", "top1_err"):
        assert metric in UNITS


def test_order_columns_identity_settings_provenance():
    shuffled = "device severity value run_id metric corruption suite unit model norm".split()
    df = pd.DataFrame([dict.fromkeys(shuffled, "x")])
    expected = "suite model norm metric value unit severity corruption run_id device".split()
    assert list(order_columns(df).columns) == expected


def test_validate_rows_names_missing_column_and_bad_value():
    rows = pd.DataFrame([make_row("cost", "vit_s", "dtn", "gmacs", 1.0)])
    validate_rows(rows)
    with pytest.raises(DTNBenchError, match="identity column 'unit'.*") as e:
        validate_rows(rows.drop(columns=["unit", "norm"]).assign(norm="dtn"))
    assert_one_line_message(e.value)
    bad = pd.DataFrame({c: ["x", "y"] for c in IDENTITY_COLUMNS}).assign(value=[1.0, "oops"])
    with pytest.raises(DTNBenchError, match=r"in here\.csv: value 'oops' of metric 'y' \(row 1\)") as e:
        validate_rows(bad, "here.csv")
    assert_one_line_message(e.value)


# ------------------------------------------------------------------------------------------------------ environment


def test_environment_without_torch(monkeypatch):
    monkeypatch.setattr(env_module, "_torch", lambda: None)
    env = env_module.environment()
    for key in ("timestamp", "python", "platform", "cpu_count", "git_sha", "dtn_bench_version", "device"):
        assert key in env
    assert env["cuda_available"] is False
    assert env["device"].startswith("cpu: ")
    assert env_module.device_name("cpu").startswith("cpu: ")
    assert env_module.device_name("cuda:0") == "cuda:0 (not available)"
    json.dumps(env)


def test_environment_records_tf32_flags_with_cuda(monkeypatch):
    import torch

    assert env_module.environment()["tf32_matmul"] is None  # no GPU here
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H100 80GB HBM3")
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:  # (properties of torch's backend modules: monkeypatch cannot restore them)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = True, False
        env = env_module.environment()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
    assert (env["tf32_matmul"], env["tf32_cudnn"], env["device"]) == (True, False, "NVIDIA H100 80GB HBM3")


def test_git_sha_outside_a_repository_is_unknown(tmp_path):
    assert env_module.git_sha(tmp_path) == "unknown"


def _git(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def test_git_sha_is_the_code_s_commit_wherever_the_command_runs(tmp_path, monkeypatch):
    """Run from another repository (a user's project), the rows record this checkout's commit, not that one's."""
    package = Path(env_module.__file__).resolve().parents[1]
    try:
        ours = _git(package, "rev-parse", "HEAD")
        top = Path(_git(package, "rev-parse", "--show-toplevel")).resolve()
    except (OSError, subprocess.CalledProcessError):
        ours, top = None, None
    other = tmp_path / "project"
    other.mkdir()
    _git(other, "init", "-q")
    (other / "f").write_text("x")
    _git(other, "add", "f")
    _git(other, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    monkeypatch.chdir(other)
    theirs = _git(other, "rev-parse", "HEAD")
    sha = env_module.git_sha()
    assert not sha.startswith(theirs)
    if top == package.parent:  # a checkout (CI, editable install): its commit, "-dirty" or not
        assert sha.removesuffix("-dirty") == ours
    else:  # installed in site-packages: no commit to record
        assert sha == "unknown"
    assert env_module.git_sha(other) == theirs  # asked for that repository by name, it is that one's


# ----------------------------------------------------------------------------------------------------------- writer


def test_writer_creates_folder_with_config_and_env(tmp_path, monkeypatch):
    monkeypatch.setattr(env_module, "_torch", lambda: None)
    writer = RunWriter(tmp_path, "cost", CONFIG)  # real environment, default run id
    assert writer.path.parent == tmp_path / "cost"
    assert len(writer.run_id.split("-")) == 3 and len(writer.run_id.split("-")[2]) == 6
    config_text = (writer.path / "config.json").read_text()
    assert json.loads(config_text) == CONFIG
    assert config_text.index('"batch_size"') < config_text.index('"models"')  # sorted keys
    env = json.loads((writer.path / "env.json").read_text())
    assert env["device"].startswith("cpu: ")
    assert writer.rows().empty
    assert not _temp_files(writer.path)


def test_append_twice_reads_back_all_rows(tmp_path):
    writer = _writer(tmp_path)
    first, second = _rows("dtn", [1, 2]), _rows("layernorm", [1])
    writer.append(first)
    writer.append(second)
    expected = pd.DataFrame(first + second)

    for path in (writer.path, writer.path / "rows.parquet", writer.path / "rows.csv"):
        back = read_rows(path)
        assert list(back.columns) == [*IDENTITY_COLUMNS, "batch_size", "dtype", *PROVENANCE_COLUMNS]
        pd.testing.assert_frame_equal(back[expected.columns], expected, check_dtype=False)
        assert (back["run_id"] == "run1").all()
        assert (back["git_sha"] == "abc123").all()
        assert (back["device"] == "cpu: test").all()
    # full precision survives the CSV too
    assert read_rows(writer.path / "rows.csv")["value"].iloc[0] == 1.0 / 3.0 + 1
    pd.testing.assert_frame_equal(writer.rows(), read_rows(writer.path), check_dtype=False)


def test_append_keeps_provenance_given_by_a_row(tmp_path):
    writer = _writer(tmp_path, device="cpu")
    writer.append([{**_rows("dtn", [1])[0], "device": "NVIDIA H100"}, _rows("dtn", [2])[0]])
    devices = writer.rows()["device"].tolist()
    assert devices[0] == "NVIDIA H100"
    assert devices[1].startswith("cpu: ")


def test_mixed_setting_types_are_stored(tmp_path):
    writer = _writer(tmp_path)
    writer.append([make_row("robustness", "vit_s", "dtn", "ce", 50.0, severity=3)])
    writer.append([make_row("robustness", "vit_s", "dtn", "ce", 40.0, severity="all")])
    assert read_rows(writer.path)["severity"].tolist() == ["3", "all"]


def test_failed_replace_keeps_previous_files(tmp_path, monkeypatch):
    writer = _writer(tmp_path)
    writer.append(_rows("dtn", [1]))
    csv_before = (writer.path / "rows.csv").read_bytes()
    parquet_before = (writer.path / "rows.parquet").read_bytes()

    def killed(src, dst):
        raise OSError("killed mid-append")

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(OSError, match="killed"):
        writer.append(_rows("dtn", [2, 4]))
    monkeypatch.undo()

    assert (writer.path / "rows.csv").read_bytes() == csv_before
    assert (writer.path / "rows.parquet").read_bytes() == parquet_before
    assert not _temp_files(writer.path)
    assert len(writer.rows()) == 1
    writer.append(_rows("dtn", [8]))
    assert read_rows(writer.path)["batch_size"].tolist() == [1, 8]


def test_failed_write_never_leaves_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "table.md"
    atomic_write_text(target, "old\n")
    seen = []

    def crash(fd):
        seen.append(sorted(p.name for p in tmp_path.iterdir()))
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "new and longer\n")
    monkeypatch.undo()
    assert seen and any(name.endswith(".tmp") for name in seen[0])  # data went to a temp file first
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.md"]


def test_existing_run_without_resume_is_refused(tmp_path):
    _writer(tmp_path).append(_rows("dtn", [1]))
    with pytest.raises(DTNBenchError, match=r"already holds results.*--resume") as e:
        _writer(tmp_path)
    assert_one_line_message(e.value)


def test_resume_with_same_config_keeps_rows(tmp_path):
    _writer(tmp_path).append(_rows("dtn", [1, 2]))
    resumed = _writer(tmp_path, config={**CONFIG, "resume": True, "models": ("vit_s", "vit_t")}, resume=True)
    assert len(resumed.rows()) == 2
    resumed.append(_rows("dtn", [4]))
    assert read_rows(resumed.path)["batch_size"].tolist() == [1, 2, 4]
    assert json.loads((resumed.path / "config.json").read_text()) == CONFIG


def test_resume_with_different_config_names_key(tmp_path):
    _writer(tmp_path).append(_rows("dtn", [1]))
    with pytest.raises(DTNBenchError, match=r"different config: key batch_size differs \(8 vs 16\)") as info:
        _writer(tmp_path, config={**CONFIG, "batch_size": 16}, resume=True)
    assert_one_line_message(info.value, str(tmp_path / "cost" / "run1"))
    with pytest.raises(DTNBenchError, match=r"key models\[1\] differs \(\"vit_t\" vs \"vit_b\"\)"):
        _writer(tmp_path, config={**CONFIG, "models": ["vit_s", "vit_b"]}, resume=True)
    with pytest.raises(DTNBenchError, match=r"key seed differs \(<missing> vs 0\)"):
        _writer(tmp_path, config={**CONFIG, "seed": 0}, resume=True)


def test_resume_of_new_folder_starts_it(tmp_path):
    writer = _writer(tmp_path, resume=True)
    assert writer.rows().empty
    assert (writer.path / "config.json").is_file()


def test_done_keys(tmp_path):
    writer = _writer(tmp_path)
    assert writer.done_keys(["norm", "batch_size"]) == set()
    again = [dict(r, dtype="float16") for r in _rows("dtn", [1])]  # another row of an already done key
    writer.append(_rows("dtn", [1, 2]) + _rows("layernorm", [1]) + again)
    assert writer.done_keys(["norm", "batch_size"]) == {("dtn", 1), ("dtn", 2), ("layernorm", 1)}
    assert writer.done_keys(["norm", "severity"]) == {("dtn", None), ("layernorm", None)}
    resumed = _writer(tmp_path, resume=True)
    assert resumed.done_keys(["norm", "batch_size"]) == {("dtn", 1), ("dtn", 2), ("layernorm", 1)}


def test_write_text_bytes_and_rejects_escaping_names(tmp_path):
    writer = _writer(tmp_path)
    assert writer.write_text("table.md", "| a |\n").read_text() == "| a |\n"
    assert writer.write_bytes("plots/raw.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    with pytest.raises(DTNBenchError, match="inside the run folder"):
        writer.write_text("../escape.md", "x")
    with pytest.raises(DTNBenchError, match="invalid run id"):
        RunWriter(tmp_path, "cost", CONFIG, run_id="../x", env=FAKE_ENV)


def test_savefig(tmp_path):
    figure_module = pytest.importorskip("matplotlib.figure")
    fig = figure_module.Figure(figsize=(2, 2))
    fig.add_subplot().plot([0, 1], [1, 0])
    path = _writer(tmp_path).savefig(fig, "latency")
    assert path.name == "latency.png"
    assert path.read_bytes().startswith(b"\x89PNG")
    assert not _temp_files(path.parent)


# ------------------------------------------------------------------------------------------------------------- read


def test_read_rows_on_folder_of_two_runs(tmp_path):
    _writer(tmp_path, run_id="a").append(_rows("dtn", [1]))
    _writer(tmp_path, run_id="b").append(_rows("layernorm", [2, 4]))
    csv_only = tmp_path / "other" / "c"
    csv_only.mkdir(parents=True)
    pd.DataFrame(_rows("dtn", [8])).to_csv(csv_only / "rows.csv", index=False)

    both = read_rows(tmp_path / "cost")
    assert both["run_id"].tolist() == ["a", "b", "b"]
    everything = read_rows(tmp_path)
    assert len(everything) == 4
    assert list(everything.columns[:6]) == list(IDENTITY_COLUMNS)
    assert len(read_rows([tmp_path / "cost" / "a", tmp_path / "cost" / "a" / "rows.parquet"])) == 1


def test_read_rows_errors_name_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DTNBenchError, match=f"{missing}.* does not exist") as e:
        read_rows(missing)
    assert_one_line_message(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DTNBenchError, match="no rows.parquet or rows.csv found under") as e:
        read_rows(tmp_path / "empty")
    assert_one_line_message(e.value)
    corrupt = tmp_path / "bad" / "rows.parquet"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"not parquet")
    with pytest.raises(DTNBenchError, match=f"cannot read results file {corrupt}") as e:
        read_rows(corrupt.parent)
    assert_one_line_message(e.value)
    no_unit = tmp_path / "nounit.csv"
    no_unit.write_text("suite,model,norm,metric,value\ncost,vit_s,dtn,gmacs,1.0\n")
    with pytest.raises(DTNBenchError, match=f"in {no_unit} are missing the identity column 'unit'") as e:
        read_rows(no_unit)
    assert_one_line_message(e.value)


# ----------------------------------------------------------------------------------------------------------- tables


def _paper_rows() -> pd.DataFrame:
    numbers = [
        ("vit_s", "layernorm", 79.9),
        ("vit_s", "dtn", 80.6),
        ("vit_s_star", "layernorm", 80.6),
        ("vit_s_star", "dtn", 81.7),
    ]
    return pd.DataFrame([make_row("accuracy", m, n, "top1_acc", v, unit="%") for m, n, v in numbers])


def test_pivot_keeps_first_seen_order_and_averages():
    rows = pd.concat([_paper_rows(), pd.DataFrame([make_row("accuracy", "vit_s", "dtn", "top1_acc", 80.8, "%")])])
    table = pivot(rows, index="model", columns="norm")
    assert table.index.tolist() == ["vit_s", "vit_s_star"]
    assert table.columns.tolist() == ["layernorm", "dtn"]
    assert table.loc["vit_s", "dtn"] == pytest.approx(80.7)
    wide = pivot(rows, index=["model", "norm"], columns="metric")
    assert wide.index.tolist()[:2] == [("vit_s", "layernorm"), ("vit_s", "dtn")]
    with pytest.raises(DTNBenchError, match="no column 'severity'"):
        pivot(rows, index="severity", columns="norm")


def test_add_published_shows_not_published():
    rows = pd.DataFrame(
        [make_row("accuracy", m, n, "top1_acc", 1.0, unit="%") for m, n in [("vit_s", "dtn"), ("vit_t", "dtn")]]
    )
    table = add_published(pivot(rows, index=["model", "norm"], columns="metric"), IMAGENET_TOP1)
    assert table["published"].tolist() == [80.6, "not published"]
    text = to_markdown(table)
    assert "not published" in text and "80.60" in text
    plain = add_published(pivot(rows, index="model", columns="norm"), {"vit_s": None, "vit_t": 1.5}, column="paper")
    assert plain["paper"].tolist() == ["not published", 1.5]


def test_markdown_exact():
    table = pivot(_paper_rows(), index="model", columns="norm")
    assert to_markdown(table) == (
        "| model      | layernorm |   dtn |\n"
        "| ---------- | --------: | ----: |\n"
        "| vit_s      |     79.90 | 80.60 |\n"
        "| vit_s_star |     80.60 | 81.70 |\n"
    )
    table.iloc[1, 1] = math.nan
    assert to_markdown(table, floatfmt=".1f", title="Top-1", note="Source: x.") == (
        "**Top-1**\n\n"
        "| model      | layernorm |  dtn |\n"
        "| ---------- | --------: | ---: |\n"
        "| vit_s      |      79.9 | 80.6 |\n"
        "| vit_s_star |      80.6 |    — |\n"
        "\nSource: x.\n"
    )


def test_latex_exact():
    table = pivot(_paper_rows(), index="model", columns="norm")
    assert to_latex(table) == (
        "\\begin{tabular}{lrr}\n"
        "\\toprule\n"
        "model & layernorm & dtn \\\\\n"
        "\\midrule\n"
        "vit\\_s & 79.90 & 80.60 \\\\\n"
        "vit\\_s\\_star & 80.60 & 81.70 \\\\\n"
        "\\bottomrule\n"
        "\\end{tabular}\n"
    )
    wrapped = to_latex(table.rename(columns={"dtn": "dtn #1 & 50%"}), caption="Top-1 (%)", label="tab:top1")
    assert wrapped.startswith("\\begin{table}[t]\n\\centering\n\\caption{Top-1 (\\%)}\n\\label{tab:top1}\n")
    assert "dtn \\#1 \\& 50\\%" in wrapped
    assert wrapped.endswith("\\end{tabular}\n\\end{table}\n")


def test_csv_and_render_dispatch():
    table = pivot(_paper_rows(), index="model", columns="norm")
    assert to_csv(table) == "model,layernorm,dtn\nvit_s,79.9,80.6\nvit_s_star,80.6,81.7\n"
    assert render(table, "md") == render(table, "Markdown") == to_markdown(table)
    assert render(table, "tex") == render(table, "latex") == to_latex(table)
    assert render(table, "csv") == to_csv(table)
    with pytest.raises(DTNBenchError, match="unknown table format 'html'"):
        render(table, "html")


# -------------------------------------------------------------------------------------------------------- published


def test_published_lookup():
    assert published("imagenet_top1", ("vit_s", "dtn")) == Published(
        80.6, "Shao et al., ICLR 2022, official README", "ImageNet-1k top-1 accuracy (%), 224x224"
    )
    assert published("imagenet_top1", "vit_s_star_ln").value == 80.6
    assert published("IMAGENET_TOP1", ("vit_b_star", "ln")).value == 81.7
    assert published("paper_flops_g", ("vit_s", "dtn")).value == 4.88
    assert published("paper_params_m", ("vit_b_star", "dtn")).value == 86.5
    assert published("norm_comparison_top1", ("vit_s_star", "gn")).value == 79.5
    assert published("lra_listops", ("reformer", "layernorm")).value == 37.27
    assert LRA_LISTOPS[("transformer", "dtn")].value is None
    missing = published("imagenet_c_mce", ("vit_s", "dtn"))
    assert missing.value is None and missing.note == "not published" and missing.source
    with pytest.raises(DTNBenchError, match="unknown published table 'nope'"):
        published("nope", ("vit_s", "dtn"))


# ----------------------------------------------------------------------------------- issue 21 section 5: file modes
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_get_the_mode_a_plain_open_gives(tmp_path, umask, mode):
    # hostile pass, failure 7: mkstemp made every result, checkpoint and generated file 0600 whatever the umask
    from dtn_bench.results.writer import atomic_write_bytes

    old = os.umask(umask)
    try:
        plain = tmp_path / "plain"
        plain.write_bytes(b"x")
        atomic_write_bytes(tmp_path / "atomic", b"x")
        writer = _writer(tmp_path / "res")
        writer.append(_rows("dtn", [1]))
    finally:
        os.umask(old)
    assert (plain.stat().st_mode & 0o777) == mode
    assert ((tmp_path / "atomic").stat().st_mode & 0o777) == mode
    for name in ("rows.csv", "rows.parquet", "config.json", "env.json"):
        assert ((writer.path / name).stat().st_mode & 0o777) == mode, name
    assert _temp_files(tmp_path) == []


def test_temporary_names_of_the_writer():
    from dtn_bench.results.writer import is_temporary

    assert is_temporary(".rows.csv.0a1b2c3d.tmp") and is_temporary(".x.JPEG.k_x9y2zq.tmp")  # ours and mkstemp's
    assert not is_temporary("rows.csv.0a1b2c3d.tmp") and not is_temporary(".notes.tmp")
    assert not is_temporary(".rows.csv.0a1b2c3d.tmpx")


def test_output_folder_is_checked_before_anything_is_written(tmp_path):
    from dtn_bench.results.writer import check_output_folder

    assert check_output_folder(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    (tmp_path / "file").write_text("x")
    with pytest.raises(DTNBenchError, match=f"--out {tmp_path / 'file'} exists and is not a folder"):
        check_output_folder(tmp_path / "file")
    where = f"run folder {tmp_path / 'file' / 'cost' / 'a'}: {tmp_path / 'file'} is a file"
    with pytest.raises(DTNBenchError, match=where):
        RunWriter(tmp_path / "file", "cost", CONFIG, run_id="a", env=FAKE_ENV)
    assert (tmp_path / "file").read_text() == "x"
