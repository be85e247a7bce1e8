"""``bench-seq-norms``: a small run through the Python API, its rows and report, resume, and one-line input errors."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from cli_helpers import Killed, assert_one_line_error, kill_at

from dtn_bench.bench import seq_norms as sn
from dtn_bench.errors import DTNBenchError
from dtn_bench.results.io import read_rows
from dtn_bench.runner import run_suite
from dtn_bench.suites import SUITES, get_suite, load_preset

RUN_FILES = ["rows.csv", "rows.parquet", "config.json", "env.json", "table.md", "table.tex", "seq_norms.png"]
SMALL = dict(shapes=["quick"], batches=[3], models=["transformer", "reformer"], repeats=2, iters=1, warmup=0)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    return sn.benchmark("quick", out=out, run_id="small", **SMALL)


def test_small_run_writes_every_file(small_run):
    assert small_run.path.name == "small" and small_run.path.parent.name == sn.SUITE
    for name in RUN_FILES:
        assert (small_run.path / name).is_file() and (small_run.path / name).stat().st_size > 0, name


def test_rows_are_measurements_per_repetition(small_run):
    rows = read_rows(small_run.path)
    assert set(rows["suite"]) == {sn.SUITE}
    assert set(rows["metric"]) == {"time_ms", "tokens_s"}  # ratios are derived at render time, never stored
    units = {(r.shape, r.case, r.model) for r in rows.itertuples()}
    assert units == {("quick", "layer", "layer"), ("quick", "step", "transformer"), ("quick", "step", "reformer")}
    for (_, _, _, norm, metric), g in rows.groupby(["shape", "case", "model", "norm", "metric"]):
        assert sorted(g["repetition"]) == [0, 1] and (g["value"] > 0).all(), (norm, metric)
    t = rows[rows["metric"] == "time_ms"].sort_values(["case", "model", "norm", "repetition"])
    k = rows[rows["metric"] == "tokens_s"].sort_values(["case", "model", "norm", "repetition"])
    assert (k["value"].to_numpy() == pytest.approx(t["tokens"].to_numpy() / (t["value"].to_numpy() / 1e3)))
    lcfg = sn.listops_config("quick", 3, "cpu")
    ids, _ = sn.listops_batch(lcfg, 0)
    assert set(rows["tokens"]) == {int((ids != 0).sum())} and set(rows["length"]) == {201}
    assert set(rows["batch"]) == {3} and set(rows["dim"]) == {64} and set(rows["heads"]) == {2}
    assert set(rows["norm"]) == {"layernorm", "dtn"} and set(rows["preset"]) == {"quick"}


def test_report_shows_ratios_with_their_spread(small_run):
    md = (small_run.path / "table.md").read_text()
    assert "tok/s ratio (median)" in md and "quick / one layer" in md and "quick / reformer" in md
    assert "\\begin{tabular}" in (small_run.path / "table.tex").read_text()
    table = sn.ratio_table(read_rows(small_run.path))
    assert list(table.index) == ["quick / one layer", "quick / transformer", "quick / reformer"]
    assert ((table["min"] <= table["tok/s ratio (median)"]) & (table["tok/s ratio (median)"] <= table["max"])).all()
    assert set(table["reps"]) == {2} and set(table["norm"]) == {"dtn"}


def _rows(times: dict[str, list[float]], run_id: str = "r") -> list[dict]:
    from dtn_bench.results.schema import make_row

    return [make_row(sn.SUITE, "transformer", norm, "time_ms", v, stat="rep", repetition=i, shape="quick",
                     case="step", run_id=run_id)
            for norm, vs in times.items() for i, v in enumerate(vs)]


def test_ratio_table_known_answer():
    """Ratios pair repetitions within a run: LN [2, 4, 3] ms against DTN [4, 4, 3] ms gives 0.5, 1, 1."""
    df = pd.DataFrame(_rows({"layernorm": [2.0, 4.0, 3.0], "dtn": [4.0, 4.0, 3.0]}))
    row = sn.ratio_table(df).loc["quick / transformer"]
    assert (row["tok/s ratio (median)"], row["min"], row["max"], row["reps"]) == (1.0, 0.5, 1.0, 3)
    assert (row["LN ms"], row["ms"]) == (3.0, 4.0)
    # two runs: each run's repetitions are paired with its own
    two = pd.DataFrame(_rows({"layernorm": [2.0], "dtn": [4.0]}, "a") + _rows({"layernorm": [8.0], "dtn": [2.0]}, "b"))
    row = sn.ratio_table(two).loc["quick / transformer"]
    assert (row["min"], row["max"], row["reps"]) == (0.5, 4.0, 2)
    assert sn.ratio_table(pd.DataFrame(_rows({"dtn": [1.0]}))).empty  # no LayerNorm: no ratio


def test_interleaved_timing_reverses_the_order_every_other_repetition():
    calls = []
    units = [lambda: calls.append("a"), lambda: calls.append("b")]
    times = sn.interleaved_ms(units, warmup=1, repeats=3, iters=2, device=torch.device("cpu"))
    assert calls == ["a", "b"] + ["a", "a", "b", "b"] + ["b", "b", "a", "a"] + ["a", "a", "b", "b"]
    assert len(times) == 2 and all(len(t) == 3 and min(t) >= 0 for t in times)


def test_resume_measures_only_the_unfinished_units(tmp_path):
    cfg = sn.SeqNormBenchConfig.from_preset("quick", **{**SMALL, "models": ["reformer"]})

    with pytest.raises(Killed):
        run_suite(sn.SUITE, cfg, out=tmp_path, run_id="r", on_event=kill_at("step"))
    assert set(read_rows(tmp_path / sn.SUITE / "r")["case"]) == {"layer"}
    labels = []
    result = run_suite(sn.SUITE, cfg, out=tmp_path, run_id="r", resume=True,
                       on_event=lambda e: labels.append(e.label) if e.kind == "step" else None)
    assert labels == ["quick step reformer"]
    assert set(result.rows["case"]) == {"layer", "step"} and len(result.rows) == 2 * 2 * 2 * 2


def test_generated_batch_has_the_preset_lengths():
    lcfg = sn.listops_config("quick", 16, "cpu")
    ids, labels = sn.listops_batch(lcfg, 0)
    lengths = (ids != 0).sum(1)
    assert ids.shape == (16, 200) and labels.shape == (16,) and labels.min() >= 0 and labels.max() <= 9
    assert lengths.min() > lcfg.gen_min_length and lengths.max() < lcfg.gen_max_length
    for row, n in zip(ids, lengths, strict=True):  # each sequence is left-aligned: padding only at the end
        assert (row[:n] != 0).all() and (row[n:] == 0).all()
    assert torch.equal(ids, sn.listops_batch(lcfg, 0)[0])  # seeded


def test_registered_with_presets():
    assert sn.SUITE in SUITES.names()
    suite = get_suite(sn.SUITE)
    assert suite.command == "seq-norms" and suite.resume_key == ("shape", "case", "model")
    default = load_preset(sn.SUITE, "default")
    assert default["shapes"] == ["quick", "lra"] and default["batches"] == [32, 2]
    cfg = sn.SeqNormBenchConfig.from_preset("default", repeats=3)
    assert cfg.repeats == 3 and cfg.shape_batches() == [("quick", 32), ("lra", 2)] and cfg.preset == "default"
    assert sn.steps(cfg) == 2 * (1 + 3)


@pytest.mark.parametrize("settings,text", [
    ({"cases": ["layer", "epoch"]}, "unknown case 'epoch'"),
    ({"batches": [4, 2]}, "2 batches for 1 shapes"),
    ({"batches": [0]}, "--batches must be positive"),
    ({"shapes": ["tiny"]}, "tiny"),
    ({"norms": ["layernrom"]}, "layernorm"),
    ({"models": ["transformr"]}, "transformer"),
    ({"repeats": 0}, "--repeats must be > 0"),
    ({"warmup": -1}, "--warmup and --threads must be >= 0"),
    ({"norms": []}, "--norms '' (an empty list): expected one value at least"),
    ({"norms": ["dtn", "dtn"]}, "--norms repeats a value"),
    ({"bogus": 1}, "unknown settings ['bogus']"),
])
def test_bad_settings_are_one_line_errors(settings, text):
    with pytest.raises(DTNBenchError) as e:
        sn.SeqNormBenchConfig.from_preset("quick", **settings)
    assert text in str(e.value) and "\n" not in str(e.value)


def test_cli_runs_the_suite_and_prints_the_ratio_table(invoke, tmp_path):
    code, out, err = invoke("bench", "seq-norms", "--preset", "quick", "--batches", "2", "--models", "transformer",
                            "--repeats", "2", "--warmup", "0", "--out", str(tmp_path), "--run-id", "cli")
    assert code == 0, err
    assert "Throughput ratio to LayerNorm" in out and "quick / transformer" in out
    rows = read_rows(tmp_path / sn.SUITE / "cli")
    assert set(rows["norm"]) == {"layernorm", "dtn"} and set(rows["repetition"]) == {0, 1}


@pytest.mark.parametrize("argv,text", [
    (["--batches", "2,x"], "--batches '2,x'"),
    (["--cases", "epoch"], "unknown case 'epoch'"),
    (["--shapes", "quick,lra", "--batches", "2"], "1 batches for 2 shapes"),
])
def test_cli_bad_input_is_one_line_error(invoke, tmp_path, argv, text):
    code, out, err = invoke("bench", "seq-norms", "--preset", "quick", *argv, "--out", str(tmp_path))
    assert_one_line_error(code, err, text)
    assert not (tmp_path / sn.SUITE).exists() or not any((tmp_path / sn.SUITE).rglob("rows.csv"))


def test_derf_and_identity_at_a_placement(tmp_path):
    """Every registered normaliser can be timed, the no-normaliser control included; the step case records the
    models' placement (the layer case has none)."""
    res = sn.benchmark("quick", out=tmp_path, run_id="pw", shapes=["quick"], batches=[2], models=["transformer"],
                       norms=["layernorm", "derf", "identity"], repeats=1, iters=1, warmup=0, placement="post")
    rows = read_rows(res.path)
    assert set(rows["norm"]) == {"layernorm", "derf", "identity"}
    assert set(rows.loc[rows["case"] == "step", "placement"]) == {"post"}
    assert rows.loc[rows["case"] == "layer", "placement"].isna().all()
    ratios = sn.ratio_table(rows)
    assert set(ratios["norm"]) == {"derf", "identity"} and "quick / transformer [post]" in set(ratios.index)
    assert "quick / transformer [post]" in set(sn.tokens_table(rows).index)
    with pytest.raises(DTNBenchError, match="placement 'peri-ln'"):
        sn.SeqNormBenchConfig.from_preset("quick", placement="peri-ln")
