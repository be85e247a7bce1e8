"""The command line: listing, model info, the norm benchmark, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import timm
import torch
from cli_helpers import assert_one_line_error, run_cli

import dtn_bench
from dtn_bench.bench.report import speedups, throughput_ratios
from dtn_bench.cli import app as cli
from dtn_bench.errors import DTNBenchError
from dtn_bench.norms import NORMS

RUN_FILES = ["rows.csv", "rows.parquet", "config.json", "env.json", "table.md", "table.tex", "norms.png"]


# ---------------------------------------------------------------------------------------------------------------------
# list
def test_list_norms(invoke):
    code, out, err = invoke("list", "norms")
    assert code == 0, err
    for name in NORMS.names():
        assert name in out


def test_list_models_shows_the_small_input_models(invoke):
    from dtn_bench.models.small import SMALL_MODELS

    code, out, err = invoke("list", "models")
    assert code == 0, err
    names = {line.split()[1] for line in out.splitlines() if line.startswith("│")}
    assert set(SMALL_MODELS.names()) <= names and {"vit_cifar_t_ln", "vit_tiny_t_dtn"} <= names


def test_list_models_pattern(invoke):
    code, out, err = invoke("list", "models", "vit_s*")
    assert code == 0, err
    names = {line.split()[1] for line in out.splitlines() if line.startswith("│")}
    assert names == {f"vit_s{star}_{norm}" for star in ("", "_star")
                     for norm in ("ln", "dtn", "dyt", "powernorm", "derf", "identity")}
    assert "vit_t_ln" not in out


def test_list_models_all(invoke):
    code, out, _ = invoke("list", "models")
    assert code == 0
    for name in dtn_bench.models.MODELS.names():
        assert name in out


def test_list_suites(invoke):
    code, out, err = invoke("list", "suites")
    assert code == 0, err
    assert "bench-norms" in out
    assert "quick" in out and "default" in out


def test_list_unknown_kind(invoke):
    code, out, err = invoke("list", "modls")
    assert_one_line_error(code, err, "did you mean: models")


def test_list_no_match(invoke):
    code, _, err = invoke("list", "norms", "zzz")
    assert_one_line_error(code, err, "zzz")


# ---------------------------------------------------------------------------------------------------------------------
# info
def test_info_layout_and_params(invoke):
    code, out, err = invoke("info", "vit_t_dtn", "--no-macs")
    assert code == 0, err
    n = sum(p.numel() for p in timm.create_model("vit_t_dtn").parameters())
    assert f"{n:,}" in out
    assert "5,717,584" in out
    assert "DTN" in out
    assert "LayerNorm" in out
    assert "blocks 0-9" in out
    assert "blocks 10-11" in out
    assert "final norm" in out
    assert "GMACs" not in out


def test_info_unknown_model(invoke):
    code, _, err = invoke("info", "vit_s_dnt", "--no-macs")
    assert_one_line_error(code, err, "did you mean", "vit_s_dtn")


@pytest.fixture(scope="module")
def ln_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "vit_t_ln.pth"
    torch.save(timm.create_model("vit_t_ln").state_dict(), path)
    return path


def test_info_with_checkpoint(invoke, tmp_path):
    path = tmp_path / "vit_t_dtn.pth"
    torch.save({"model": timm.create_model("vit_t_dtn").state_dict()}, path)
    code, out, err = invoke("info", "vit_t_dtn", "--no-macs", "--checkpoint", str(path))
    assert code == 0, err
    assert "checkpoint" in out
    assert path.name in out


def test_info_checkpoint_that_does_not_fit(invoke, ln_checkpoint):
    code, _, err = invoke("info", "vit_t_dtn", "--no-macs", "--checkpoint", str(ln_checkpoint))
    assert_one_line_error(code, err, "missing", "--debug")


def test_info_checkpoint_debug_raises(ln_checkpoint, wide_console):
    with pytest.raises(DTNBenchError, match="missing 80"):
        cli.main(["--debug", "info", "vit_t_dtn", "--no-macs", "--checkpoint", str(ln_checkpoint)])


# ---------------------------------------------------------------------------------------------------------------------
# bench norms
def run_folders(out: Path) -> list[Path]:
    return sorted(p for p in (out / "bench-norms").glob("*") if p.is_dir())


@pytest.fixture(scope="module")
def layer_run(tmp_path_factory):
    """One quick layer-only run: layernorm, dtn and the authors' algorithm, no models."""
    out = tmp_path_factory.mktemp("results")
    code = run_cli(["bench", "norms", "--preset", "quick", "--norms", "layernorm,dtn", "--models", "", "--out",
                    str(out)])
    return code, out


def test_bench_norms_layer_run_writes_a_run_folder(layer_run):
    code, out = layer_run
    assert code == 0
    folders = run_folders(out)
    assert len(folders) == 1
    run = folders[0]
    for name in RUN_FILES:
        assert (run / name).is_file(), name
        assert (run / name).stat().st_size > 0, name
    assert (run / "norms.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "dtn_authors" in (run / "table.md").read_text()
    assert "tabular" in (run / "table.tex").read_text()
    config = json.loads((run / "config.json").read_text())
    assert config["preset"] == "quick"
    assert config["norms"] == ["layernorm", "dtn"]
    assert config["models"] == []
    assert config["batch"] == 8 and config["dim"] == 192 and config["heads"] == 3
    assert isinstance(json.loads((run / "env.json").read_text()), dict)


def test_bench_norms_layer_run_rows(layer_run):
    _, out = layer_run
    run = run_folders(out)[0]
    rows = pd.read_csv(run / "rows.csv")
    assert len(pd.read_parquet(run / "rows.parquet")) == len(rows)
    assert set(rows["suite"]) == {"bench-norms"}
    assert set(rows["run_id"]) == {run.name}
    times = rows[rows["metric"] == "time_ms"]
    assert set(times["norm"]) == {"layernorm", "dtn", "dtn_authors"}
    for norm in ("layernorm", "dtn", "dtn_authors"):
        for pass_ in ("fwd", "fwd_bwd"):
            sel = times[(times["norm"] == norm) & (times["pass"] == pass_)]
            assert set(sel["stat"]) == {"median", "min", "rep"}, (norm, pass_)
            assert (sel["value"] > 0).all()
            assert (sel["unit"] == "ms").all()
            reps = sel[sel["stat"] == "rep"]  # every timed call: quick preset, 2 (the authors' algorithm: 1)
            assert sorted(reps["repetition"]) == list(range(1 if norm == "dtn_authors" else 2)), (norm, pass_)
            assert reps["value"].min() == pytest.approx(sel.loc[sel["stat"] == "min", "value"].item())
            assert reps["value"].median() == pytest.approx(sel.loc[sel["stat"] == "median", "value"].item())
    assert set(rows["metric"]) == {"time_ms"}  # measurements only: the speed-up is derived when rendered
    speedup = speedups(rows)
    assert sorted(speedup["pass"]) == ["fwd", "fwd_bwd"]
    assert (speedup["value"] > 0).all()
    median = times[times["stat"] == "median"].set_index(["norm", "pass"])["value"]
    for _, r in speedup.iterrows():
        expected = median[("dtn_authors", r["pass"])] / median[("dtn", r["pass"])]
        assert r["value"] == pytest.approx(expected)
        # one pair of repetitions (the authors' algorithm is timed once): the spread of that one ratio
        assert r["spread"].n == 1
    assert "throughput_img_s" not in set(rows["metric"])
    # the layer table shows the spread of the paired per-repetition ratios beside each ratio to LayerNorm
    reps = times[times["stat"] == "rep"].set_index(["norm", "pass", "repetition"])["value"]
    ratios = [reps[("dtn", "fwd", k)] / reps[("layernorm", "fwd", k)] for k in (0, 1)]
    want = f"{sum(ratios) / 2:.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
    md = (run / "table.md").read_text()
    line = next(row for row in md.splitlines() if row.startswith("| dtn "))
    assert [c.strip() for c in line.split("|")][5] == want  # norm, fwd ms, fwd+bwd ms, fwd / LN, its spread
    assert "| no repetitions recorded" not in md  # (the notes below the tables still say what that would mean)


def test_bench_norms_with_models(tmp_path):
    code = run_cli(["bench", "norms", "--preset", "quick", "--norms", "layernorm", "--no-authors", "--out",
                    str(tmp_path), "--run-id", "with-models"])
    assert code == 0
    run = tmp_path / "bench-norms" / "with-models"
    assert run_folders(tmp_path) == [run]
    assert json.loads((run / "config.json").read_text())["models"] == ["vit_t_ln", "vit_t_dtn"]
    rows = pd.read_csv(run / "rows.csv")
    assert "dtn_authors" not in set(rows["norm"])
    tp = rows[rows["metric"] == "throughput_img_s"]
    assert set(tp["model"]) == {"vit_t_ln", "vit_t_dtn"}
    assert (tp["value"] > 0).all()
    assert "ratio" not in set(rows["metric"])  # measurements only: the ratio is derived when rendered
    ratio = throughput_ratios(rows)
    assert len(ratio) >= 1
    assert set(ratio["model"]) == {"vit_t_dtn"}
    assert set(ratio["versus"]) == {"vit_t_ln"}
    assert (ratio["value"] > 0).all()
    tp_median = tp[tp["stat"] == "median"].set_index("model")["value"]
    med_ratio = ratio[ratio["stat"] == "median"]["value"].item()
    assert med_ratio == pytest.approx(tp_median["vit_t_dtn"] / tp_median["vit_t_ln"])
    reps = tp[tp["stat"] == "rep"]  # the quick preset times each model once: one repetition, its spread
    assert sorted(reps["model"]) == ["vit_t_dtn", "vit_t_ln"] and set(reps["repetition"]) == {0}
    assert all(s.n == 1 for s in ratio["spread"])
    assert "(one repetition)" in (run / "table.md").read_text()


@pytest.mark.parametrize(
    "args, expect",
    [
        pytest.param(["--preset", "quik"], "did you mean: quick", id="preset-typo"),
        pytest.param(["--preset", "nope"], "known: default, quick", id="preset-unknown"),
        pytest.param(["--norms", "dtn,foo"], "foo", id="norm"),
        pytest.param(["--batch", "0"], "--batch", id="batch"),
        pytest.param(["--threads", "-1"], "--threads", id="threads"),
        pytest.param(["--dim", "100", "--heads", "3"], "not divisible", id="dim-heads"),
        pytest.param(["--grid", "7x9"], "square", id="grid-authors"),
        pytest.param(["--grid", "7y9"], "--grid", id="grid-syntax"),
        pytest.param(["--device", "cuda"], "CUDA", id="cuda"),
        pytest.param(["--models", "vit_s_dnt"], "did you mean", id="model"),
        pytest.param(["--device", "cpu:x"], "--device 'cpu:x' is not a device", id="device-string"),
    ],
)
def test_bench_norms_bad_input(invoke, monkeypatch, tmp_path, args, expect):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "results"
    preset = [] if "--preset" in args else ["--preset", "quick"]
    code, _, err = invoke("bench", "norms", *preset, *args, "--out", str(out))
    assert_one_line_error(code, err, expect)
    assert list(out.glob("bench-norms/*/rows.csv")) == []
    assert not (out / "bench-norms").exists()


# ---------------------------------------------------------------------------------------------------------------------
# a real process: version, help, and an error's exit code (three interpreters, started together)
def test_subprocess_version_help_and_error():
    env = {**os.environ, "COLUMNS": "200"}
    cmds = {
        "version": ["--version"],
        "help": ["--help"],
        "error": ["info", "vit_s_dnt", "--no-macs"],
    }
    procs = {
        key: subprocess.Popen([sys.executable, "-m", "dtn_bench", *argv], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
        for key, argv in cmds.items()
    }
    res = {key: (p.communicate(timeout=120), p.returncode) for key, p in procs.items()}

    (out, err), rc = res["version"]
    assert rc == 0, err
    assert out.strip() == f"dtn-bench {dtn_bench.__version__}"

    (out, err), rc = res["help"]
    assert rc == 0, err
    for command in ("list", "info", "bench", "--version", "--debug"):
        assert command in out

    (out, err), rc = res["error"]
    assert_one_line_error(rc, err, "did you mean")
    assert out == ""


# ---------------------------------------------------------------------------------------------------------------------
# Ctrl-C and usage errors
def test_typer_turns_ctrl_c_into_130():
    """The assumption main() relies on: with standalone_mode=False typer returns 130 for a KeyboardInterrupt."""
    import typer

    tiny = typer.Typer()

    @tiny.command()
    def stop(n: int = 1) -> None:
        raise KeyboardInterrupt

    @tiny.command()
    def go(n: int = 1) -> None:
        pass

    assert tiny(args=["stop"], standalone_mode=False) == 130


def test_ctrl_c_exits_130_with_a_message(monkeypatch, invoke):
    monkeypatch.setattr(cli, "app", lambda **kwargs: 130)
    code, _, err = invoke("lra", "listops")
    assert code == 130
    assert err == "interrupted\n"  # no rows were written: the message does not talk about them


def test_ctrl_c_in_a_command_that_writes_rows_says_they_are_kept(monkeypatch, invoke):
    from dtn_bench.cli import output

    def app(**kwargs):
        output.say_rows_are_kept()
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "app", app)
    code, _, err = invoke("bench", "norms")
    assert (code, err) == (130, "interrupted; rows finished so far are saved\n")


@pytest.mark.parametrize("argv, expect", [
    (["profile", "--bogus"], "No such option: --bogus"),
    (["profile", "--batch-sizes"], "Option '--batch-sizes' requires an argument"),
    (["imagenet-c", "--batch-size", "x", "--demo"], "Invalid value for '--batch-size'"),
    (["bogus"], "No such command 'bogus'"),
    (["profile", "--preset", "quick", "--debug"], "No such option: --debug"),  # --debug goes before the command
])
def test_usage_errors_are_one_line_with_exit_code_2(invoke, argv, expect):
    code, out, err = invoke(*argv)
    assert_one_line_error(code, err, expect)
    assert "--debug for the traceback" not in err
