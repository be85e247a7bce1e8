"""ListOps training suite: schedules, data order, training, checkpoints, resume, NaN stop, DDP (gloo), CLI, report."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from cli_helpers import assert_one_line_error, record

from dtn_bench.data.listops import generate
from dtn_bench.errors import DTNBenchError
from dtn_bench.lra import train as lt
from dtn_bench.lra.config import ListOpsConfig, linear_lr, lra_lr
from dtn_bench.lra.report import curves_plot, paper_table, render_report

TINY = dict(
    models=("transformer",),
    norms=("layernorm",),
    seeds=(0,),
    max_len=40,
    dim=16,
    heads=2,
    depth=1,
    mlp_dim=32,
    dropout=0.1,
    attn_dropout=0.1,
    batch=8,
    steps=6,
    lr=3e-3,
    schedule="linear",
    warmup=2,
    weight_decay=0.01,
    beta2=0.999,
    adam_eps=1e-8,
    eval_every=2,
    eval_batch=16,
    preset="test",
    device="cpu",
)
TINY_FLAGS = [
    "--preset",
    "quick",
    "--max-len",
    "40",
    "--dim",
    "16",
    "--heads",
    "2",
    "--depth",
    "1",
    "--mlp-dim",
    "32",
    "--batch",
    "8",
    "--steps",
    "4",
    "--eval-every",
    "2",
    "--device",
    "cpu",
    "--workers",
    "1",
    "--seeds",
    "0",
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("listops")
    generate(out, train=160, val=32, test=48, seed=0, min_length=5, max_length=40, max_depth=4, max_args=5, workers=1)
    return out


@pytest.fixture(scope="module")
def data(data_dir, tmp_path_factory) -> lt.ListOpsData:
    cfg = ListOpsConfig(**TINY, data_dir=str(data_dir))
    return lt.prepare_data(cfg, cache_root=tmp_path_factory.mktemp("cache"))


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DTN_BENCH_CACHE", str(tmp_path / "cache"))


# ------------------------------------------------------------------------------------------------------------------
def test_lra_schedule_known_values():
    assert lra_lr(999, 0.05, 1000) == pytest.approx(0.05 / math.sqrt(1000))  # the peak, ~1.58e-3
    assert lra_lr(999, 0.05, 1000) == pytest.approx(1.5811e-3, rel=1e-4)
    assert lra_lr(0, 0.05, 1000) == pytest.approx(0.05 * 1e-3 / math.sqrt(1000))
    assert lra_lr(3999, 0.05, 1000) == pytest.approx(0.05 / math.sqrt(4000))
    assert max(lra_lr(t, 0.05, 1000) for t in range(5000)) == pytest.approx(lra_lr(999, 0.05, 1000))


def test_lra_schedule_from_the_official_step_counter():
    """Official: t is the optimiser's step counter from 0: lr(0) = 0, the peak 1.5811e-3 at update 1000, the last of
    5000 updates (t = 4999) 7.0718e-4."""
    assert lra_lr(0, 0.05, 1000, origin=0) == 0.0
    assert lra_lr(1000, 0.05, 1000, origin=0) == pytest.approx(1.5811e-3, rel=1e-4)
    assert lra_lr(4999, 0.05, 1000, origin=0) == pytest.approx(7.0718e-4, rel=1e-4)
    assert lra_lr(999, 0.05, 1000, origin=0) == lra_lr(998, 0.05, 1000)  # origin 1 is the same curve one step ahead
    assert linear_lr(0, 1e-3, 10, 110, origin=0) == 0.0 and linear_lr(10, 1e-3, 10, 110, origin=0) == 1e-3
    cfg = ListOpsConfig(lr_step_origin=0)
    assert cfg.lr_at(0) == 0.0 and cfg.lr_at(4999) == pytest.approx(7.0718e-4, rel=1e-4)
    assert ListOpsConfig().lr_at(0) == pytest.approx(0.05e-3 / math.sqrt(1000))  # the default keeps t = step + 1


def test_linear_schedule_known_values():
    assert linear_lr(0, 1e-3, 10, 110) == pytest.approx(1e-4)
    assert linear_lr(9, 1e-3, 10, 110) == pytest.approx(1e-3)
    assert linear_lr(59, 1e-3, 10, 110) == pytest.approx(0.5e-3)
    assert linear_lr(109, 1e-3, 10, 110) == 0.0
    assert linear_lr(0, 1e-3, 0, 10) == pytest.approx(0.9e-3)


def test_batch_order_is_a_seeded_permutation_per_epoch():
    order = lt.BatchOrder(10, 3, seed=5)
    epoch0 = np.concatenate([order(s) for s in range(3)])
    assert len(set(epoch0.tolist())) == 9  # no repeat within an epoch; one sample left over
    again = lt.BatchOrder(10, 3, seed=5)
    assert [again(s).tolist() for s in (4, 0, 7)] == [order(s).tolist() for s in (4, 0, 7)]
    assert lt.BatchOrder(10, 3, seed=6)(0).tolist() != lt.BatchOrder(10, 3, seed=5)(0).tolist()


def test_buffer_shuffle_is_a_bounded_shuffle():
    rng = np.random.default_rng(0)
    order = np.arange(500)
    for size in (1, 7, 64, 500, 10_000):
        out = lt.buffer_shuffle(order, size, rng)
        assert sorted(out.tolist()) == order.tolist()  # a permutation
        where = np.empty(500, dtype=int)
        where[out] = np.arange(500)
        # an element enters the buffer after output p - size and cannot leave before it
        assert (where >= order - (min(size, 500) - 1)).all()
        if size == 1:
            assert out.tolist() == order.tolist()
        else:
            assert out.tolist() != order.tolist()
    # small buffers keep the file order roughly: the mean displacement grows with the buffer
    shift = {size: np.abs(lt.buffer_shuffle(order, size, np.random.default_rng(1)) - order).mean()
             for size in (8, 64, 500)}
    assert shift[8] < shift[64] < shift[500]


def test_batch_order_with_lra_shuffle_buffers():
    buffered = lt.BatchOrder(100, 8, seed=3, buffers=(40, 10))
    epoch0 = buffered.epoch_order(0)
    assert sorted(epoch0.tolist()) == list(range(100))
    assert buffered.epoch_order(1).tolist() != epoch0.tolist()  # reshuffled every epoch
    assert np.array_equal(np.concatenate([buffered(s) for s in range(12)]), epoch0[:96])
    assert [lt.BatchOrder(100, 8, 3, (40, 10))(s).tolist() for s in (13, 0)] == [buffered(s).tolist() for s in (13, 0)]
    assert buffered(0).tolist() != lt.BatchOrder(100, 8, 3)(0).tolist()
    assert ListOpsConfig().shuffle_buffers() is None
    assert ListOpsConfig(shuffle="buffer").shuffle_buffers() == (10_000, 1_024)


def test_lra_presets_set_every_official_choice():
    """``lra`` and ``lra-paper`` are the official code (every field of OFFICIAL); the other presets keep the
    defaults, i.e. the earlier behaviour."""
    from dtn_bench.lra.config import LATER_FIELDS, OFFICIAL
    from dtn_bench.suites import load_preset

    def preset(name: str) -> ListOpsConfig:
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in load_preset("lra-listops", name).items()}
        return ListOpsConfig(**fields, preset=name)

    lra, paper = preset("lra"), preset("lra-paper")
    lra.validate()
    for key, value in OFFICIAL.items():
        assert getattr(lra, key) == value, key
    assert (lra.batch, lra.steps, lra.lr, lra.warmup, lra.weight_decay, lra.beta2, lra.adam_eps) == (
        32, 5000, 0.05, 1000, 0.1, 0.98, 1e-9)
    assert replace(paper, depth=4, mlp_dim=1024, preset="lra") == lra and (paper.depth, paper.mlp_dim) == (6, 2048)
    for name in ("quick", "small"):
        cfg = preset(name)
        assert all(getattr(cfg, k) == getattr(ListOpsConfig, k) for k in LATER_FIELDS), name
        assert cfg.precision == "auto" and not cfg.lra_quirks
    # the models the lra preset builds (shortened)
    small = replace(lra, max_len=100, dim=16, heads=2, depth=2, mlp_dim=32, bigbird_block=8)
    for model, dropout in (("transformer", 0.1), ("bigbird", 0.0), ("reformer", 0.0)):
        net = lt.build_model(small, model, "layernorm")
        blk = net.blocks[1]
        assert blk.attn.dropout == dropout and blk.mlp[1].approximate == "tanh" and blk.norm1.eps == 1e-6
        assert net.init == "lra" and net.embed.padding_idx is None
    assert lt.build_model(small, "bigbird", "dtn").blocks[0].attn.random == "lra"
    assert lt.build_model(small, "reformer", "dtn").blocks[0].attn.lra_quirks
    assert replace(small, sparse_attn_dropout=True).attention_dropout("bigbird") == 0.1


def test_config_validation_errors():
    with pytest.raises(DTNBenchError, match="did you mean: bigbird"):
        ListOpsConfig(**{**TINY, "models": ("bigbrid",)}).validate()
    with pytest.raises(DTNBenchError, match="not divisible"):
        ListOpsConfig(**{**TINY, "batch": 7, "world_size": 2}).validate()
    with pytest.raises(DTNBenchError, match="schedule"):
        ListOpsConfig(**{**TINY, "schedule": "cosine"}).validate()
    for field, value, match in (("shuffle", "random", "--shuffle must be full or buffer, got 'random'"),
                                ("gelu", "fast", "--gelu must be exact or tanh"),
                                ("init", "xavier", "--init must be torch or lra"),
                                ("bigbird_random", "numpy", "--bigbird-random must be torch or lra"),
                                ("lr_step_origin", 2, "lr-step-origin must be 0"),
                                ("ln_eps", 0.0, "ln-eps must be a positive"),
                                ("shuffle_buffer", (1024, 0), "shuffle-buffer must be")):
        with pytest.raises(DTNBenchError, match=match):
            ListOpsConfig(**{**TINY, field: value}).validate()


# ------------------------------------------------------------------------------------------------------------------
def test_train_run_learns_rows_and_checkpoints(data, tmp_path):
    cfg = ListOpsConfig(**{**TINY, "norms": ("dtn",), "steps": 6})
    events = []
    result = lt.train_run(cfg, data, "transformer", "dtn", 0, tmp_path / "ck", on_event=lambda k, i: events.append(k))
    assert result.steps == 6 and [p["step"] for p in result.curve] == [2, 4, 6]
    assert events.count("step") == 6 and events.count("eval") == 3 and events[0] == "start"
    assert (tmp_path / "ck" / "last.pt").is_file() and (tmp_path / "ck" / "best.pt").is_file()
    for kind in ("last", "best"):
        for split in ("val", "test"):
            acc, loss = result.final[kind][split]
            assert 0.0 <= acc <= 1.0 and math.isfinite(loss) and loss > 0
    assert result.tokens == sum(
        int(data.train.lengths[lt.BatchOrder(len(data.train), 8, 0)(s)].sum()) for s in range(6)
    )
    rows = pd.DataFrame(lt.result_rows(result, cfg, data))
    test_last = rows[(rows.metric == "accuracy") & (rows.split == "test") & (rows.checkpoint == "last")]
    assert len(test_last) == 1 and test_last.value.iloc[0] == result.final["last"]["test"][0]
    assert set(rows.metric) >= {"accuracy", "loss", "tokens_s", "params", "train_time_s", "peak_rss_mib"}
    assert len(rows[rows.checkpoint == "curve"]) == 9
    ck = torch.load(tmp_path / "ck" / "best.pt", weights_only=True)
    assert ck["step"] == result.best_step and ck["val_acc"] == max(p["val_acc"] for p in result.curve)


def test_train_run_follows_the_shuffle_buffer_order(data, tmp_path):
    cfg = ListOpsConfig(**{**TINY, "steps": 3, "eval_every": 3, "shuffle": "buffer", "shuffle_buffer": (64, 16)})
    result = lt.train_run(cfg, data, "transformer", "layernorm", 0, tmp_path / "ck")
    buffered = lt.BatchOrder(len(data.train), 8, 0, (64, 16))
    full = lt.BatchOrder(len(data.train), 8, 0)
    assert result.tokens == sum(int(data.train.lengths[buffered(s)].sum()) for s in range(3))
    assert result.tokens != sum(int(data.train.lengths[full(s)].sum()) for s in range(3))


def test_resume_accepts_a_checkpoint_from_before_the_official_choices(data, tmp_path):
    """A checkpoint written before the LATER_FIELDS existed computed their defaults: it resumes under the defaults
    and is refused under another value."""
    from dtn_bench.lra.config import LATER_FIELDS

    cfg = ListOpsConfig(**{**TINY, "steps": 2})
    lt.train_run(cfg, data, "transformer", "layernorm", 0, tmp_path / "ck")
    ck = torch.load(tmp_path / "ck" / "last.pt", weights_only=True)
    ck["settings"] = {k: v for k, v in ck["settings"].items() if k not in LATER_FIELDS}
    torch.save(ck, tmp_path / "ck" / "last.pt")
    with pytest.raises(DTNBenchError, match="different config.*gelu"):
        lt.train_run(replace(cfg, steps=4, gelu="tanh"), data, "transformer", "layernorm", 0, tmp_path / "ck")
    with pytest.raises(DTNBenchError, match="different config.*steps"):
        lt.train_run(replace(cfg, steps=4), data, "transformer", "layernorm", 0, tmp_path / "ck")
    resumed = lt.train_run(cfg, data, "transformer", "layernorm", 0, tmp_path / "ck")
    assert resumed.resumed_from == 2


def test_best_checkpoint_is_evaluated_separately(data, tmp_path, monkeypatch):
    # the best validation accuracy comes from step 2: forced by making later evaluations of val worse
    cfg = ListOpsConfig(**{**TINY, "steps": 4})
    real = lt.evaluate
    calls = []

    def rigged(model, split, cfg_, ctx, limit=None):
        acc, loss, n = real(model, split, cfg_, ctx, limit)
        calls.append(split.split)
        if split.split == "val" and len(calls) <= 2:
            acc = 1.0 - 0.1 * len(calls)  # step 2: 0.9, step 4: 0.8
        return acc, loss, n

    monkeypatch.setattr(lt, "evaluate", rigged)
    result = lt.train_run(cfg, data, "transformer", "layernorm", 0, tmp_path / "ck")
    assert result.best_step == 2
    best = torch.load(tmp_path / "ck" / "best.pt", weights_only=True)
    last = torch.load(tmp_path / "ck" / "last.pt", weights_only=True)
    assert best["step"] == 2 and last["step"] == 4
    assert any(not torch.equal(best["model"][k], last["model"][k]) for k in best["model"])
    assert set(result.final["best"]) == {"val", "test"}


def test_resume_after_a_kill_gives_the_same_result(data, tmp_path):
    cfg = ListOpsConfig(**{**TINY, "models": ("reformer",), "norms": ("dtn",), "steps": 6})
    full = lt.train_run(cfg, data, "reformer", "dtn", 3, tmp_path / "a")

    class Killed(Exception):
        pass

    def kill(kind, info):
        if kind == "step" and info["step"] == 5:
            raise Killed

    with pytest.raises(Killed):
        lt.train_run(cfg, data, "reformer", "dtn", 3, tmp_path / "b", on_event=kill)
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["step"] == 4
    resumed = lt.train_run(cfg, data, "reformer", "dtn", 3, tmp_path / "b")
    assert resumed.resumed_from == 4
    assert resumed.final == full.final and resumed.tokens == full.tokens
    assert [(p["step"], p["val_acc"], p["val_loss"]) for p in resumed.curve] == [
        (p["step"], p["val_acc"], p["val_loss"]) for p in full.curve
    ]
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_checkpoint_of_another_config(data, tmp_path):
    cfg = ListOpsConfig(**{**TINY, "steps": 2})
    lt.train_run(cfg, data, "transformer", "layernorm", 0, tmp_path / "ck")
    with pytest.raises(DTNBenchError, match="different config.*dim"):
        lt.train_run(replace(cfg, dim=32), data, "transformer", "layernorm", 0, tmp_path / "ck")


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data, tmp_path, monkeypatch):
    real_build = lt.build_model

    class PoisonAfter(torch.nn.Module):
        def __init__(self, inner, after):
            super().__init__()
            self.inner, self.after, self.calls = inner, after, 0

        def forward(self, x):
            out = self.inner(x)
            if self.training:
                self.calls += 1
                if self.calls > self.after:
                    out = out * float("nan")
            return out

    monkeypatch.setattr(lt, "build_model", lambda cfg, m, n: PoisonAfter(real_build(cfg, m, n), after=3))
    cfg = ListOpsConfig(**{**TINY, "steps": 6})
    with pytest.raises(
        DTNBenchError,
        match=r"loss is nan at step 4; stopped\. Last good checkpoint: .*last\.pt "
        r"\(step 2\)",
    ):
        lt.train_run(cfg, data, "transformer", "layernorm", 0, tmp_path / "ck")
    ck = torch.load(tmp_path / "ck" / "last.pt", weights_only=True)
    assert ck["step"] == 2 and all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


# ------------------------------------------------------------------------------------------------------------------
def test_paper_table_with_seeds_and_published_numbers():
    rows = []
    for model, ln, dtn in (("transformer", (0.30, 0.32), (0.31, 0.35)), ("bigbird", (0.25, 0.27), (0.26, 0.26))):
        for norm, accs in (("layernorm", ln), ("dtn", dtn)):
            for seed, acc in enumerate(accs):
                rows.append(
                    {
                        "suite": "lra-listops",
                        "model": model,
                        "norm": norm,
                        "metric": "accuracy",
                        "value": acc,
                        "unit": "fraction",
                        "split": "test",
                        "checkpoint": "last",
                        "seed": seed,
                        "step": 10,
                    }
                )
    table = paper_table(pd.DataFrame(rows))
    assert list(table.index) == ["Transformer", "BigBird"]
    assert table.loc["Transformer", "LN"] == f"31.00 ± {np.std([30, 32], ddof=1):.2f}"
    assert table.loc["Transformer", "DTN - LN (95% CI)"].startswith(f"{33.0 - 31.0:.2f} [")
    assert table.loc["BigBird", "LRA paper (LN)"] == 36.05
    assert table.loc["BigBird", "DTN paper (DTN)"] == "not published"
    text = render_report(pd.DataFrame(rows), "md")
    assert "36.05" in text and "not published" in text


# ------------------------------------------------------------------------------------------------------------------
def test_cli_runs_tables_curves_and_resume(data_dir, tmp_path, invoke):
    out = tmp_path / "res"
    flags = [
        *TINY_FLAGS,
        "--data-dir",
        str(data_dir),
        "--models",
        "transformer,bigbird",
        "--norms",
        "layernorm,dtn",
        "--out",
        str(out),
    ]
    code, printed, err = invoke("lra", "listops", *flags, "--run-id", "r1")
    assert code == 0, err
    run = out / "lra-listops" / "r1"
    for name in ("rows.csv", "rows.parquet", "config.json", "table.md", "table.tex", "curves.png"):
        assert (run / name).is_file(), name
    df = pd.read_parquet(run / "rows.parquet")
    finals = df[(df.metric == "accuracy") & (df.split == "test") & (df.checkpoint == "last")]
    assert len(finals) == 4
    # what the command prints: the settings table, a line per finished run, the paper table, the run folder
    lines = [line for line in printed.splitlines() if ": test accuracy " in line]
    assert lines == [f"{m}/{n}/seed 0: test accuracy {a:.2%} (last checkpoint)"
                     for m, n, a in zip(finals.model, finals.norm, finals.value, strict=True)]
    assert printed.index("lra listops, preset quick (1 process(es) on cpu)") < printed.index(lines[0])
    assert printed.index(lines[-1]) < printed.index("ListOps test accuracy (%), last checkpoint")
    assert printed.rstrip().endswith(f"results: {run}")
    assert ((df.model == "majority-class") & (df.split == "test")).sum() == 1
    md = (run / "table.md").read_text()
    assert "Transformer" in md and "BigBird" in md and "DTN - LN" in md and "36.37" in md
    assert len(list((run / "checkpoints").iterdir())) == 4
    assert json.loads((run / "env.json").read_text())["malloc_tuned"] in (True, False)  # False off glibc

    code, _, err = invoke("lra", "listops", *flags, "--resume", "r1")  # everything finished: nothing retrained
    assert code == 0, err
    assert len(pd.read_parquet(run / "rows.parquet")) == len(df)

    code, _, err = invoke("lra", "listops", *[f if f != "4" else "6" for f in flags], "--resume", "r1")
    assert_one_line_error(code, err, "different config", "steps")


def test_cli_generates_data_into_the_cache(tmp_path, invoke):
    code, _, err = invoke("lra", "listops", *TINY_FLAGS, "--max-len", "200", "--steps", "2", "--train-samples", "64",
                          "--models", "transformer", "--norms", "layernorm", "--out", str(tmp_path / "res"),
                          "--run-id", "g")
    assert code == 0, err
    assert list((tmp_path / "cache").glob("listops-*/basic_train.tsv"))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--models", "transfomer"], "did you mean: transformer"),
        (["--norms", "layernrom"], "did you mean: layernorm"),
        (["--preset", "quik"], "did you mean: quick"),
        (["--data-dir", "/nonexistent/listops"], "/nonexistent/listops"),
        (["--procs", "2"], "--procs 2 but this job has 1 process"),
        (["--device", "cuda:0"] if not torch.cuda.is_available() else ["--pooling", "max"],
         "no CUDA GPU" if not torch.cuda.is_available() else "pooling"),
        (["--len-policy", "drop"], "len-policy"),
        (["--resume", "nope"], "no run folder"),
        (["--seeds", "a,b"], "--seeds"),
        (["--steps", "0"], "steps must be >= 1"),
        (["--shuffle", "random"], "--shuffle must be full or buffer, got 'random'"),
        (["--shuffle-buffer", "10k"], "--shuffle-buffer '10k': expected comma-separated sizes"),
        (["--init", "xavier"], "--init must be torch or lra"),
        (["--lr-step-origin", "2"], "lr-step-origin must be 0"),
        (["--workers", "-1"], "workers must be >= 0 (0: one per torch thread), got -1"),
        (["--flush-denormal=no"], "--flush-denormal"),  # a switch takes no value
    ],
)
def test_cli_bad_input(args, message, data_dir, tmp_path, invoke):
    flags = [*TINY_FLAGS, "--data-dir", str(data_dir)]
    code, out, err = invoke("lra", "listops", *flags, *args, "--out", str(tmp_path / "res"))
    assert_one_line_error(code, err, message)
    assert "Traceback" not in out
    assert not list((tmp_path / "res").glob("lra-listops/*/rows.csv"))


def test_cli_lra_preset_runs_the_official_setup_shortened(data_dir, tmp_path, invoke):
    """The lra preset, every official choice on, shortened to 2 steps at length 100: the three models with LN and DTN
    train, config.json records every choice and the settings table shows the official values."""
    from dtn_bench.lra.config import OFFICIAL

    out = tmp_path / "res"
    code, printed, err = invoke("lra", "listops", "--preset", "lra", "--data-dir", str(data_dir), "--max-len", "100",
                                "--dim", "16", "--heads", "2", "--depth", "1", "--mlp-dim", "32", "--bigbird-block",
                                "8", "--batch", "8", "--steps", "2", "--eval-every", "1", "--device", "cpu",
                                "--shuffle-buffer", "64,16", "--out", str(out), "--run-id", "lra")
    assert code == 0, err
    run = out / "lra-listops" / "lra"
    config = json.loads((run / "config.json").read_text())
    overridden = {"shuffle_buffer": [64, 16], "eval_every": 1, "bigbird_block": 8, "max_len": 100}
    for key, value in {**OFFICIAL, **overridden}.items():
        assert config[key] == (list(value) if isinstance(value, tuple) else value), key
    assert "official LRA" in printed and "lra_quirks" in printed and "shuffle_buffer" in printed
    df = pd.read_parquet(run / "rows.parquet")
    assert len(df[(df.metric == "accuracy") & (df.split == "test") & (df.checkpoint == "last")]) == 6
    ck = torch.load(run / "checkpoints" / "reformer-dtn-seed0" / "last.pt", weights_only=True)
    assert [p["step"] for p in ck["curve"]] == [1, 2] and ck["curve"][0]["lr"] == 0.0  # lr(0) = 0
    assert "embed.weight" in ck["model"] and ck["model"]["embed.weight"][0].abs().sum() > 0


def test_cli_help_names_every_reformer_quirk(invoke, monkeypatch):
    import re

    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = invoke("lra", "listops", "--help")
    assert code == 0
    text = re.sub(r"[\s│]+", " ", out)
    start = text.index("--lra-quirks")
    quirks = text[start : text.index("--bigbird-block", start)]
    for quirk in ("keys not length-normalised", "multiplied (not divided) by sqrt(d_head)", "no self-mask",
                  "no padding mask", "one rotation set (seed 0", "shared by every head and layer",
                  "zero filler up to a multiple of n_buckets", "hashed to bucket 0", "attended",
                  "look-back across hash rounds", "no output projection",
                  "reshaping [B, H, T, d] to [B, T, H*d] without a transpose"):
        assert quirk in quirks, quirk


def test_table_listops_compares_the_official_choices(data_dir, tmp_path, invoke):
    """A run recorded before the official choices existed (its config.json lacks them) combines with a run of the
    defaults, not with one that sets another value."""
    from dtn_bench.lra.config import LATER_FIELDS

    res = tmp_path / "res"
    flags = [*TINY_FLAGS, "--data-dir", str(data_dir), "--models", "transformer", "--norms", "layernorm", "--steps",
             "2", "--out", str(res)]
    for run_id, extra in (("old", ["--seeds", "0"]), ("new", ["--seeds", "1"]), ("tanh", ["--gelu", "tanh"])):
        code, _, err = invoke("lra", "listops", *flags, *extra, "--run-id", run_id)
        assert code == 0, err
    old = res / "lra-listops" / "old" / "config.json"
    old.write_text(json.dumps({k: v for k, v in json.loads(old.read_text()).items() if k not in LATER_FIELDS}))
    code, _, err = invoke("table", "listops", str(old.parent), str(res / "lra-listops" / "new"))
    assert code == 0, err
    code, _, err = invoke("table", "listops", str(old.parent), str(res / "lra-listops" / "tanh"))
    assert_one_line_error(code, err, "the runs differ in gelu (exact, tanh)")


def test_cli_resume_with_another_number_of_processes(data_dir, tmp_path, invoke, monkeypatch):
    flags = [*TINY_FLAGS, "--data-dir", str(data_dir), "--models", "transformer", "--norms", "layernorm", "--steps",
             "2", "--out", str(tmp_path / "res")]
    code, _, err = invoke("lra", "listops", *flags, "--run-id", "w1")
    assert code == 0, err
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, _, err = invoke("lra", "listops", *flags, "--resume", "w1")
    assert_one_line_error(code, err, "made with 1 process(es), this job has 2")


def _preset_with(monkeypatch, **values):
    """The ``quick`` preset with ``values`` set over it (as if suites/lra-listops.yaml said so)."""
    from dtn_bench import suites

    real = suites.load_preset
    monkeypatch.setattr(suites, "load_preset",
                        lambda suite, name: {**real(suite, name), **values} if name == "quick" else real(suite, name))


def test_config_precedence_defaults_preset_flags(monkeypatch):
    """One precedence: dataclass defaults < preset < flags given (None: not given); a preset may set the device."""
    assert ListOpsConfig.from_preset(None) == ListOpsConfig()
    quick = ListOpsConfig.from_preset("quick")
    assert (quick.preset, quick.steps, quick.device, quick.gen_train) == ("quick", 500, "auto", 20_000)
    _preset_with(monkeypatch, device="cuda", steps=7)
    cfg = ListOpsConfig.from_preset("quick")
    assert (cfg.device, cfg.steps) == ("cuda", 7)
    cfg = ListOpsConfig.from_preset("quick", device="cpu", steps=None, dim=None)
    assert (cfg.device, cfg.steps, cfg.dim) == ("cpu", 7, 64)
    with pytest.raises(DTNBenchError, match="unknown settings"):
        ListOpsConfig.from_preset("quick", devcie="cpu")
    assert "tune_malloc" not in cfg.as_dict() and "tune_malloc" not in cfg.run_settings()


def test_cli_preset_setting_the_device_and_the_flag_over_it(data_dir, tmp_path, invoke, monkeypatch):
    """A preset that sets ``device`` runs (it used to crash with TypeError), and --device overrides it."""
    _preset_with(monkeypatch, device="cuda")
    flags = [*TINY_FLAGS, "--data-dir", str(data_dir), "--models", "transformer", "--norms", "layernorm", "--steps",
             "2", "--out", str(tmp_path / "res")]
    code, _, err = invoke("lra", "listops", *flags, "--run-id", "flag")  # TINY_FLAGS has --device cpu
    assert code == 0, err
    rows = pd.read_parquet(tmp_path / "res" / "lra-listops" / "flag" / "rows.parquet")
    assert all(d.startswith("cpu") for d in rows.device)
    assert json.loads((tmp_path / "res" / "lra-listops" / "flag" / "config.json").read_text())["device"] == "cpu"
    no_flag = [f for i, f in enumerate(flags) if f != "--device" and (i == 0 or flags[i - 1] != "--device")]
    code, _, err = invoke("lra", "listops", *no_flag, "--run-id", "preset")
    if torch.cuda.is_available():
        assert code == 0, err
        config = json.loads((tmp_path / "res" / "lra-listops" / "preset" / "config.json").read_text())
        assert config["device"] == "cuda"
    else:
        assert_one_line_error(code, err, "--device cuda", "no CUDA GPU")


def test_python_api_resumes_an_interrupted_run_from_its_checkpoint(data_dir, tmp_path):
    """dtn_bench.lra.listops runs the suite through run_suite: an interrupted run keeps its finished (model, norm,
    seed) runs and, resumed, continues the interrupted one from its last checkpoint to the rows of a run that was
    never interrupted."""
    from dtn_bench.lra import listops
    from dtn_bench.results.io import read_rows

    flags = dict(models=("transformer",), norms=("layernorm", "dtn"), max_len=40, dim=16, heads=2, depth=1,
                 mlp_dim=32, batch=8, steps=4, eval_every=2, device="cpu", data_dir=str(data_dir), workers=1,
                 seeds=(0,))
    res = tmp_path / "res"
    full = listops("quick", out=res, run_id="full", **flags)
    assert full.path == res / "lra-listops" / "full" and (full.path / "table.md").is_file()

    class Killed(Exception):
        pass

    events = []

    def kill(e):
        events.append(f"{e.kind} {e.task}" if e.kind == "progress" else e.kind)
        if e.kind == "run_step" and e.norm == "dtn" and e.step == 3:
            raise Killed

    with pytest.raises(Killed):
        listops("quick", out=res, run_id="cut", on_event=kill, **flags)
    cut = res / "lra-listops" / "cut"
    assert events[:4] == ["start", "settings", "progress data", "progress data"]  # the data's start and end
    assert events.index("trained") < events.index("step", events.index("trained"))  # the accuracy, then its rows
    assert set(zip(*[read_rows(cut)[c] for c in ("model", "norm")], strict=True)) == {
        ("majority-class", "none"), ("transformer", "layernorm")}
    assert torch.load(cut / "checkpoints" / "transformer-dtn-seed0" / "last.pt", weights_only=True)["step"] == 2
    seen = []
    resumed = listops("quick", out=res, run_id="cut", resume=True,
                      on_event=record(seen), **flags)
    assert [(i["norm"], i["resumed_from"]) for k, i in seen if k == "run_start"] == [("dtn", 2)]
    assert seen[0] == ("start", {"total": 3, "skipped": 2})  # the baseline and transformer/layernorm are kept
    key = ["model", "norm", "metric", "split", "checkpoint", "step"]
    sel = lambda df: df[df.metric.isin(["accuracy", "loss"])].set_index(key)["value"].sort_index()  # noqa: E731
    pd.testing.assert_series_equal(sel(resumed.rows), sel(full.rows), check_exact=True)  # README: bit-identical


def test_cli_interrupted_run_says_how_to_resume(data_dir, tmp_path, invoke, monkeypatch):
    """Ctrl-C during training: the command names the run to resume (with a generated run id too); --resume finishes
    it, the interrupted (model, norm, seed) continuing from its checkpoint."""
    flags = [*TINY_FLAGS, "--data-dir", str(data_dir), "--models", "transformer", "--norms", "layernorm,dtn",
             "--out", str(tmp_path / "res")]
    real, calls = lt.evaluate, []

    def interrupt_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # transformer/layernorm: after the evaluations of steps 2 and 4 (last.pt at step 4)
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(lt, "evaluate", interrupt_the_third)
    code, _, err = invoke("lra", "listops", *flags)
    assert code == 130
    (run,) = (tmp_path / "res" / "lra-listops").iterdir()
    assert err.strip().splitlines()[-1] == (f"interrupted: rows finished so far are saved; continue with --resume "
                                            f"{run.name} (same options)")
    assert "interrupted" not in "\n".join(err.strip().splitlines()[:-1])  # one line says it
    assert not (pd.read_parquet(run / "rows.parquet").model == "transformer").any()
    assert torch.load(run / "checkpoints" / "transformer-layernorm-seed0" / "last.pt", weights_only=True)["step"] == 4
    monkeypatch.setattr(lt, "evaluate", real)
    code, printed, err = invoke("lra", "listops", *flags, "--resume", run.name)
    assert code == 0, err
    df = pd.read_parquet(run / "rows.parquet")
    assert len(df[(df.metric == "accuracy") & (df.split == "test") & (df.checkpoint == "last")]) == 2
    assert printed.count(": test accuracy ") == 2


def test_resume_checks_the_run_folder_first(tmp_path, data_dir):
    from dtn_bench.lra.suite import check_resumable
    from dtn_bench.runner import run_suite

    folder = tmp_path / "r"
    folder.mkdir()
    for text, match in (("[1]", "--resume r: .*does not hold a JSON object"), ("{", "--resume r: cannot read"),
                        ('{"world_size": 2}', "made with 2 process\\(es\\), this job has 1")):
        (folder / "config.json").write_text(text)
        with pytest.raises(DTNBenchError, match=match):
            check_resumable(folder, 1)
    (folder / "config.json").write_text('{"world_size": 1}')
    check_resumable(folder, 1)
    cfg = ListOpsConfig(**{**TINY, "data_dir": str(data_dir), "world_size": 2})
    with pytest.raises(DTNBenchError, match="config is for 2 process\\(es\\) but this job has 1"):
        run_suite("lra-listops", cfg, out=tmp_path / "res", run_id="w")


def test_cli_malformed_tsv_names_file_and_line(data_dir, tmp_path, invoke):
    bad = tmp_path / "bad"
    bad.mkdir()
    for split in ("train", "val", "test"):
        (bad / f"basic_{split}.tsv").write_text((data_dir / f"basic_{split}.tsv").read_text())
    lines = (bad / "basic_val.tsv").read_text().splitlines()
    lines[3] = lines[3].rsplit("\t", 1)[0] + "\t12"
    (bad / "basic_val.tsv").write_text("\n".join(lines) + "\n")
    code, _, err = invoke("lra", "listops", *TINY_FLAGS, "--data-dir", str(bad), "--out", str(tmp_path / "res"))
    assert_one_line_error(code, err, "basic_val.tsv line 4")
    assert not (tmp_path / "res").exists() or not list((tmp_path / "res").rglob("rows.csv"))


def test_curves_plot_has_one_panel_per_model(data, tmp_path):
    cfg = ListOpsConfig(**{**TINY, "steps": 2})
    res = lt.train_run(cfg, data, "transformer", "layernorm", 0, tmp_path / "ck")
    df = pd.DataFrame(lt.result_rows(res, cfg, data) + lt.baseline_rows(cfg, data))
    fig = curves_plot(df)
    assert len(fig.axes) == 1 and fig.axes[0].get_title() == "Transformer"


# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ddp_gloo_two_processes_match_one_process(data_dir, tmp_path, invoke):
    """torchrun with 2 CPU processes (gloo): each takes half of every batch; gradients are averaged, so the weights
    and test metrics equal the single-process run's up to float rounding."""
    common = [
        *TINY_FLAGS,
        "--data-dir",
        str(data_dir),
        "--models",
        "transformer",
        "--norms",
        "dtn",
        "--dropout",
        "0",
        "--out",
        str(tmp_path / "res"),
    ]
    code, _, err = invoke("lra", "listops", *common, "--run-id", "one")
    assert code == 0, err
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "dtn_bench",
            "lra",
            "listops",
            *common,
            "--run-id",
            "two",
            "--procs",
            "2",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    one = pd.read_parquet(tmp_path / "res" / "lra-listops" / "one" / "rows.parquet")
    two = pd.read_parquet(tmp_path / "res" / "lra-listops" / "two" / "rows.parquet")
    key = ["model", "norm", "metric", "split", "checkpoint", "step"]
    sel = lambda df: df[df.metric.isin(["accuracy", "loss"])].set_index(key)["value"].sort_index()  # noqa: E731
    a, b = sel(one), sel(two)
    assert list(a.index) == list(b.index)
    accuracy = a.index.get_level_values("metric") == "accuracy"
    np.testing.assert_array_equal(b[accuracy].values, a[accuracy].values)  # the README: equal accuracies, ...
    np.testing.assert_allclose(b[~accuracy].values, a[~accuracy].values, rtol=1e-6, atol=0)  # losses within 1e-6
    w1 = torch.load(tmp_path / "res/lra-listops/one/checkpoints/transformer-dtn-seed0/last.pt", weights_only=True)
    w2 = torch.load(tmp_path / "res/lra-listops/two/checkpoints/transformer-dtn-seed0/last.pt", weights_only=True)
    for k, v in w1["model"].items():
        torch.testing.assert_close(w2["model"][k], v, rtol=1e-4, atol=1e-5)


def test_table_listops_combines_runs_of_several_seeds(data_dir, tmp_path, invoke):
    res = tmp_path / "res"
    flags = [*TINY_FLAGS, "--data-dir", str(data_dir), "--models", "transformer", "--norms", "layernorm,dtn",
             "--steps", "2", "--out", str(res)]
    for seed in (0, 1):
        code, _, err = invoke("lra", "listops", *flags, "--seeds", str(seed), "--run-id", f"s{seed}")
        assert code == 0, err
    code, _, err = invoke("table", "listops", str(res / "lra-listops" / "s0"), str(res / "lra-listops" / "s1"),
                          "--out", str(tmp_path / "combined"))
    assert code == 0, err
    md = (tmp_path / "combined" / "table.md").read_text()
    assert "±" in md and "DTN - LN" in md and "36.37" in md
    assert (tmp_path / "combined" / "curves.png").stat().st_size > 0
    code, _, err = invoke("table", "listops", str(tmp_path / "nothing-here"))
    assert_one_line_error(code, err, "nothing-here")


def test_bf16_autocast_path_trains_with_fp32_statistics(data, tmp_path):
    """``precision bf16`` (the GPU default) runs the model under bf16 autocast; exercised here on the CPU."""
    cfg = ListOpsConfig(**{**TINY, "norms": ("dtn",), "steps": 2, "precision": "bf16"})
    assert lt.autocast_dtype(cfg, torch.device("cpu")) == torch.bfloat16
    assert lt.autocast_dtype(replace(cfg, precision="auto"), torch.device("cpu")) is None
    result = lt.train_run(cfg, data, "transformer", "dtn", 0, tmp_path / "ck")
    for split in ("val", "test"):
        acc, loss = result.final["last"][split]
        assert 0.0 <= acc <= 1.0 and math.isfinite(loss)
    weights = torch.load(tmp_path / "ck" / "last.pt", weights_only=True)["model"]
    assert all(v.dtype == torch.float32 for v in weights.values() if v.is_floating_point())


def test_a_seed_measured_twice_counts_once():
    """Rows holding a seed twice (which `dtn-bench table listops` refuses: test_tables_cli) are one sample of
    accuracy_stats: the mean of the two, no spread; distinct seeds give mean ± std over the seeds."""
    from dtn_bench.lra.report import accuracy_stats

    def row(seed: int, acc: float) -> dict:
        return {"model": "transformer", "norm": "dtn", "metric": "accuracy", "split": "test", "checkpoint": "last",
                "seed": seed, "value": acc}

    same = pd.DataFrame([row(0, 0.30), row(0, 0.32)])
    s = accuracy_stats(same).loc[("transformer", "dtn")]
    assert s["n"] == 1 and s["mean"] == pytest.approx(31.0) and math.isnan(s["std"])
    seeds = pd.DataFrame([row(0, 0.30), row(0, 0.32), row(1, 0.35)])
    s = accuracy_stats(seeds).loc[("transformer", "dtn")]
    assert s["n"] == 2 and s["mean"] == pytest.approx(33.0) and s["std"] == pytest.approx(math.sqrt(8.0))


def test_runs_side_by_side_give_the_rows_of_runs_one_after_another(data_dir, tmp_path):
    """workers=2: two runs train at once in spawned processes (1 torch thread each); their measured rows equal those
    of the same runs trained one after another with 1 thread, both runs' events reach the caller, in order per run.
    Against runs one after another with 2 threads (fp32 sums split otherwise), the README's tolerance: equal
    accuracies, losses within 1e-6 relative."""
    from dtn_bench.lra import listops

    flags = dict(models=("transformer",), norms=("layernorm", "dtn"), max_len=40, dim=16, heads=2, depth=1,
                 mlp_dim=32, batch=8, steps=4, eval_every=2, device="cpu", data_dir=str(data_dir), seeds=(0,))
    before = torch.get_num_threads()
    events = []
    try:
        torch.set_num_threads(1)
        one = listops("quick", out=tmp_path, run_id="one", workers=1, **flags)
        torch.set_num_threads(2)
        one_2_threads = listops("quick", out=tmp_path, run_id="one-2", workers=1, **flags)
        two = listops("quick", out=tmp_path, run_id="two", workers=0, **flags,
                      on_event=record(events))
    finally:
        torch.set_num_threads(before)
    pick = lambda df, m: df[df.metric == m].set_index(  # noqa: E731
        ["model", "norm", "split", "checkpoint", "step"])["value"].sort_index()
    pd.testing.assert_series_equal(pick(two.rows, "accuracy"), pick(one_2_threads.rows, "accuracy"), check_exact=True)
    pd.testing.assert_series_equal(pick(two.rows, "loss"), pick(one_2_threads.rows, "loss"), rtol=1e-6, atol=0)
    assert json.loads((two.path / "config.json").read_text())["workers"] == 0
    assert [i["workers"] for k, i in events if k == "runs"] == [2]
    for norm in ("layernorm", "dtn"):
        steps = [i["step"] for k, i in events if k == "run_step" and i["norm"] == norm]
        assert steps == [1, 2, 3, 4]
    assert [i["label"] for k, i in events if k == "trained"] == ["transformer/layernorm/seed 0",
                                                                  "transformer/dtn/seed 0"]
    key = ["model", "norm", "metric", "split", "checkpoint", "step"]
    sel = lambda df: df[df.metric.isin(["accuracy", "loss"])].set_index(key)["value"].sort_index()  # noqa: E731
    pd.testing.assert_series_equal(sel(two.rows), sel(one.rows), check_exact=True)  # the same bits


def test_workers_need_one_cpu_process():
    from dtn_bench.distributed import DistContext
    from dtn_bench.lra.suite import _check_workers

    cfg = ListOpsConfig(**{**TINY, "workers": 2})
    assert _check_workers(cfg, DistContext(), runs=5) == 2
    assert _check_workers(cfg, DistContext(), runs=1) == 1
    assert _check_workers(replace(cfg, workers=0), DistContext(world=2), runs=5) == 1
    with pytest.raises(DTNBenchError, match="--workers 2 trains runs side by side in one job on the CPU; this job "
                       "runs on 2 processes"):
        _check_workers(cfg, DistContext(world=2), runs=5)
    with pytest.raises(DTNBenchError, match="device meta"):
        _check_workers(cfg, DistContext(device=torch.device("meta")), runs=5)
    with pytest.raises(DTNBenchError, match="workers must be >= 0"):
        ListOpsConfig(**{**TINY, "workers": -1}).validate()


def test_curves_plot_band_spans_the_seeds(data, tmp_path):
    """Two seeds: the line is their mean at each step and the band spans their minimum to maximum."""
    from matplotlib.collections import PolyCollection

    rows = []
    for seed, values in ((0, (0.2, 0.4)), (1, (0.3, 0.2))):
        for step, value in zip((50, 100), values, strict=True):
            rows.append(dict(model="transformer", norm="layernorm", seed=seed, step=step, checkpoint="curve",
                             metric="accuracy", split="val", value=value))
    fig = curves_plot(pd.DataFrame(rows))
    (ax,) = fig.axes
    line = ax.get_lines()[0]
    np.testing.assert_allclose(line.get_ydata(), [25.0, 30.0])
    assert "mean, min-max of 2 seeds" in line.get_label()
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(20.0) and ys.max() == pytest.approx(40.0)


def test_flush_denormal_is_a_recorded_training_setting_and_is_undone_after_the_run(data_dir, tmp_path):
    """``flush_denormal`` flushes fp32 values below 1.2e-38 to zero while the job runs, and is a training setting."""
    from dtn_bench.lra import listops
    from dtn_bench.timing import flush_denormals

    tiny = torch.tensor([1e-39])
    assert (tiny * 1.0).item() != 0.0  # torch's default: denormals kept
    assert ListOpsConfig(**TINY).run_settings()["flush_denormal"] is True
    try:
        assert flush_denormals(True)
        assert (tiny * 1.0).item() == 0.0
    finally:
        flush_denormals(False)
    seen = []
    res = listops("quick", out=tmp_path, run_id="ftz", models=("transformer",), norms=("layernorm",), seeds=(0,),
                  max_len=40, dim=16, heads=2, depth=1, mlp_dim=32, batch=8, steps=2, eval_every=2, device="cpu",
                  data_dir=str(data_dir), workers=1,
                  on_event=lambda e: seen.append((tiny * 1.0).item()) if e.kind == "run_step" else None)
    assert seen and set(seen) == {0.0}  # flushed during training
    assert (tiny * 1.0).item() != 0.0  # and not after it
    assert json.loads((res.path / "config.json").read_text())["flush_denormal"] is True
    off = listops("quick", out=tmp_path, run_id="keep", models=("transformer",), norms=("layernorm",), seeds=(0,),
                  max_len=40, dim=16, heads=2, depth=1, mlp_dim=32, batch=8, steps=2, eval_every=2, device="cpu",
                  data_dir=str(data_dir), workers=1, flush_denormal=False)
    assert json.loads((off.path / "config.json").read_text())["flush_denormal"] is False


# ------------------------------------------------------------------------------------------------------------------
# issue 21 section 5: values that meant something else, empty splits, leftovers, preset types, unreadable input
@pytest.mark.parametrize("args, message", [
    (["--seeds", "-1"], "--seeds -1: a seed must be in 0..4294967295"),
    (["--seeds", "4611686018427387904"], "--seeds 4611686018427387904: a seed must be in 0..4294967295"),
    (["--seeds", "99999999999999999999"], "--seeds 99999999999999999999: a seed must be in 0..4294967295"),
    (["--clip-grad", "nan"], "lra-listops: --clip-grad nan: expected a finite number"),  # E26: trained unclipped
    (["--weight-decay", "nan"], "lra-listops: --weight-decay nan: expected a finite number"),  # E25: AdamW's error
    (["--lr", "inf"], "--lr inf: expected a finite number"),
    (["--models", ""], "--models '' is empty"),
    (["--norms", " , "], "--norms ' , ' is empty"),
])
def test_cli_values_that_mean_something_else_fail_before_the_run_folder(args, message, data_dir, tmp_path, invoke):
    code, _, err = invoke("lra", "listops", *TINY_FLAGS, "--data-dir", str(data_dir), *args,
                          "--out", str(tmp_path / "res"))
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "res").exists()


def _data_copy(data_dir: Path, dst: Path, **texts: str) -> Path:
    dst.mkdir()
    for split in ("train", "val", "test"):
        (dst / f"basic_{split}.tsv").write_text(texts.get(split, (data_dir / f"basic_{split}.tsv").read_text()))
    return dst


@pytest.mark.parametrize("split", ["test", "val"])
def test_cli_header_only_split_is_an_error_before_the_run_folder(split, data_dir, tmp_path, invoke):
    # hostile pass, failure 3: it trained, exited 0 and reported "test accuracy 0.00%" (baseline nan%)
    bad = _data_copy(data_dir, tmp_path / "empty", **{split: "Source\tTarget\r\n"})
    code, out, err = invoke("lra", "listops", *TINY_FLAGS, "--data-dir", str(bad), "--out", str(tmp_path / "res"))
    assert_one_line_error(code, err, f"basic_{split}.tsv: 0 samples")
    assert not (tmp_path / "res").exists() and "accuracy" not in out
    cfg = ListOpsConfig(**TINY, data_dir=str(bad))  # the loader itself (generated data, the Python API) refuses too
    with pytest.raises(DTNBenchError, match=f"basic_{split}.tsv: 0 samples"):
        lt.prepare_data(cfg, cache_root=tmp_path / "cache")


def test_failed_run_leaves_no_run_folder(data_dir, tmp_path, invoke):
    # hostile pass, failure 16: every run that failed on its data left a folder with config.json and env.json
    bad = tmp_path / "bad"
    lines = (data_dir / "basic_test.tsv").read_text().splitlines()
    lines[5] = lines[5].rsplit("\t", 1)[0] + "\t12"
    _data_copy(data_dir, bad, test="\n".join(lines) + "\n")
    res = tmp_path / "res"
    (res / "lra-listops" / "earlier").mkdir(parents=True)  # a folder that was there before stays
    code, _, err = invoke("lra", "listops", *TINY_FLAGS, "--data-dir", str(bad), "--out", str(res))
    assert_one_line_error(code, err, "basic_test.tsv line 6: label 12")
    assert [p.name for p in (res / "lra-listops").iterdir()] == ["earlier"]
    code, _, err = invoke("lra", "listops", *TINY_FLAGS, "--data-dir", str(bad), "--out", str(tmp_path / "new"))
    assert code == 2 and not (tmp_path / "new").exists()  # nor the results root it made


def _preset(monkeypatch, text: str) -> None:
    from dtn_bench import suites

    real = suites._preset_text
    monkeypatch.setattr(suites, "_preset_text", lambda s: text if s == "lra-listops" else real(s))


@pytest.mark.parametrize("setting, message", [
    ('lra_quirks: "no"', "lra_quirks 'no': expected true or false"),  # Y_ybadbool: bool("no") is True
    ("lra_quirks: 0", "lra_quirks 0: expected true or false"),
    ('steps: "abc"', "steps 'abc': expected an integer"),
    ("steps: null", "steps None: expected an integer, got nothing"),
    ("dim: 64.5", "dim 64.5: expected an integer"),
    ('lr: "fast"', "lr 'fast': expected a finite number"),
    ("lr: .nan", "lr nan: expected a finite number"),
    ("adam_eps: 1e-8", "adam_eps '1e-8': expected a number, got a text (YAML reads 1e-3 without a point as text"),
    ('batch: "8"', "batch '8': expected an integer"),
    ("seeds: 0", "seeds 0: expected a list"),
    ("models: transformer", "models 'transformer': expected a list"),
    ("models: []", "models '' (an empty list): expected one value at least"),
    ("shuffle_buffer: [64, x]", "shuffle_buffer '64,x': item 'x': expected an integer"),
])
def test_preset_values_are_type_checked_against_the_config_fields(setting, message, monkeypatch):
    _preset(monkeypatch, f"quick:\n  description: test\n  {setting}\n")
    with pytest.raises(DTNBenchError) as ei:
        ListOpsConfig.from_preset("quick")
    assert str(ei.value).startswith("suites/lra-listops.yaml preset 'quick': ") and message in str(ei.value)


def test_preset_valid_types_pass_and_broken_yaml_names_file_and_line(monkeypatch, invoke, tmp_path):
    _preset(monkeypatch, "quick:\n  description: test\n  lra_quirks: yes\n  lr: 1\n  seeds: [0, 4294967295]\n")
    cfg = ListOpsConfig.from_preset("quick")
    assert cfg.lra_quirks is True and cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.seeds == (0, 4294967295)
    _preset(monkeypatch, "quick:\n  description: test\n  steps: [1, 2\n  lr: 0.1\n")
    code, _, err = invoke("lra", "listops", "--preset", "quick", "--out", str(tmp_path / "res"))
    assert_one_line_error(code, err, "suites/lra-listops.yaml line 4: not valid YAML")
    _preset(monkeypatch, "quick: [1, 2]\n")
    code, _, err = invoke("lra", "listops", "--preset", "quick", "--out", str(tmp_path / "res"))
    assert_one_line_error(code, err, "suites/lra-listops.yaml preset 'quick': expected a mapping of settings")
    assert not (tmp_path / "res").exists()


def test_python_api_type_checks_flags_over_a_config(data_dir, tmp_path):
    from dtn_bench.lra import listops

    with pytest.raises(DTNBenchError, match="lra-listops: --lra-quirks 'no': expected true or false"):
        listops(ListOpsConfig(**TINY, data_dir=str(data_dir)), lra_quirks="no", out=tmp_path)


def test_checkpoint_of_garbage_or_text_on_resume_says_what_it_is(tmp_path):
    # E34: a garbage last.pt was reported with torch's weights_only advice and "Unsupported operand"
    garbage = tmp_path / "last.pt"
    garbage.write_bytes(bytes(range(7, 250)) * 10)
    with pytest.raises(DTNBenchError) as ei:
        lt._load(garbage)
    text = str(ei.value)
    assert text.startswith(f"cannot read checkpoint {garbage}: not a checkpoint") and "delete it" in text
    assert "weights_only" not in text and "\n" not in text
    garbage.write_text("resume me\n")
    with pytest.raises(DTNBenchError, match="it is a text file, not a checkpoint \\(it begins 'resume me'\\)"):
        lt._load(garbage)


def _unprivileged(argv: list[str]) -> list[str]:
    """``argv`` run so that file modes apply: as root, without the capabilities that bypass them (setpriv)."""
    import shutil

    if os.geteuid() != 0:
        return argv
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: file permissions cannot be made to apply")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", *argv]


def test_cli_unreadable_tsv_and_read_only_out_fail_before_the_run_folder(data_dir, tmp_path):
    # C03 (an unreadable TSV) and C02 / E19 (a read-only --out, an --out that is a file) exited 1 with a bare
    # PermissionError / NotADirectoryError after the run folder was made
    shut = _data_copy(data_dir, tmp_path / "shut")
    (shut / "basic_val.tsv").chmod(0)
    read_only = tmp_path / "ro"
    read_only.mkdir(mode=0o555)
    read_only.chmod(0o555)
    env = {**os.environ, "DTN_BENCH_CACHE": str(tmp_path / "cache")}
    cli = [sys.executable, "-m", "dtn_bench", "lra", "listops", *TINY_FLAGS]
    for args, expect in (([str(shut), str(tmp_path / "res")], f"{shut / 'basic_val.tsv'}: cannot be read "
                                                                "(Permission denied)"),
                         ([str(data_dir), str(read_only / "res")], f"run folder {read_only / 'res'}")):
        done = subprocess.run(_unprivileged([*cli, "--data-dir", args[0], "--out", args[1]]), env=env,
                              capture_output=True, text=True, timeout=300)
        assert_one_line_error(done.returncode, done.stderr, expect)
        assert done.stdout == ""  # failed before the settings table
    assert "not writable" in done.stderr
    assert not (tmp_path / "res").exists() and not list(read_only.iterdir())
    (tmp_path / "file").write_text("x")
    done = subprocess.run([*cli, "--data-dir", str(data_dir), "--out", str(tmp_path / "file")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert_one_line_error(done.returncode, done.stderr, f"{tmp_path / 'file'} is a file, not a folder")
def _wide_dtn_kernels(monkeypatch):
    """1-D DTN layers built with a window of 8 and kernels as wide as a trained one can drift to (a1 = -0.01)."""
    from dtn_bench.norms.dtn import DTN

    local_init = DTN.local_init

    def wide(self, locality_strength=1.0):
        local_init(self, locality_strength)
        if self.grid_size is None:
            self.window = 8
            with torch.no_grad():
                self.pos_proj.weight[:, 2] = -0.01

    monkeypatch.setattr(DTN, "local_init", wide)


def test_train_run_reports_the_dtn_window_truncation_of_its_last_weights(data, tmp_path):
    """Every 1-D DTN layer's truncation bound at the end of training (max over heads), recomputed here from last.pt;
    the row holds the largest; a LayerNorm run has none."""
    from dtn_bench.norms.dtn import DTN

    cfg = ListOpsConfig(**{**TINY, "steps": 2})
    with pytest.MonkeyPatch.context() as mp:
        _wide_dtn_kernels(mp)
        result = lt.train_run(cfg, data, "transformer", "dtn", 0, tmp_path / "ck")
        model = lt.build_model(cfg, "transformer", "dtn")
    model.load_state_dict(torch.load(tmp_path / "ck" / "last.pt", weights_only=True)["model"])
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, DTN)]
    assert len(layers) == 2 * cfg.depth + 1  # both norms of every block and the final norm
    assert cfg.pooling == "cls"
    length = cfg.max_len + 1  # the CLS token
    tol = torch.finfo(torch.float32).eps / (2 * (cfg.dim // cfg.heads))
    assert [n for n, _, _ in result.truncation] == [n for n, _ in layers]
    for (_, bound, layer_tol), (_, layer) in zip(result.truncation, layers, strict=True):
        assert bound == pytest.approx(layer.truncation_bound(length).max().item(), rel=1e-12)
        assert bound > 1.0 and layer_tol == pytest.approx(tol)
    rows = pd.DataFrame(lt.result_rows(result, cfg, data))
    row = rows[rows.metric == "dtn_truncation_bound"]
    assert len(row) == 1 and row.unit.iloc[0] == "ratio"
    assert row.value.iloc[0] == max(b for _, b, _ in result.truncation)
    ln = lt.train_run(cfg, data, "transformer", "layernorm", 0, tmp_path / "ln")
    assert ln.truncation == [] and "dtn_truncation_bound" not in {r["metric"] for r in lt.result_rows(ln, cfg, data)}


def test_cli_warns_when_the_dtn_window_changes_the_function(data_dir, tmp_path, invoke):
    """A DTN run whose window drops more than the fp32 tolerance gets a warning line and the bound in the report;
    with the local init (bound 0 at this length) there is none."""
    out = tmp_path / "res"
    flags = [*TINY_FLAGS, "--data-dir", str(data_dir), "--models", "transformer", "--norms", "layernorm,dtn",
             "--steps", "2", "--out", str(out)]
    code, _, err = invoke("lra", "listops", *flags, "--run-id", "plain")
    assert code == 0, err
    assert "warning" not in err
    with pytest.MonkeyPatch.context() as mp:
        _wide_dtn_kernels(mp)
        code, _, err = invoke("lra", "listops", *flags, "--run-id", "wide")
    assert code == 0, err
    warning = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warning) == 1 and "transformer/dtn/seed 0: the DTN window may change the trained function" in warning[0]
    assert "in 3 of 3 DTN layers" in warning[0]
    for run, wide in (("plain", False), ("wide", True)):
        df = pd.read_parquet(out / "lra-listops" / run / "rows.parquet")
        bound = df[df.metric == "dtn_truncation_bound"]
        assert list(bound.norm) == ["dtn"] and (bound.value.iloc[0] > 1.0) == wide
        assert (bound.value.iloc[0] == 0.0) == (not wide)
        assert "DTN window bound (max)" in (out / "lra-listops" / run / "table.md").read_text()
def test_cli_trains_derf_and_identity_at_a_placement(data_dir, tmp_path, invoke):
    """``--norms derf,identity --placement peri``: both train; the placement is in config, rows and the table."""
    out = tmp_path / "res"
    flags = [*TINY_FLAGS, "--data-dir", str(data_dir), "--models", "transformer", "--norms", "layernorm,derf,identity",
             "--placement", "peri", "--out", str(out), "--run-id", "p"]
    code, _, err = invoke("lra", "listops", *flags)
    assert code == 0, err
    run = out / "lra-listops" / "p"
    df = pd.read_parquet(run / "rows.parquet")
    finals = df[(df.metric == "accuracy") & (df.split == "test") & (df.checkpoint == "last")]
    assert sorted(finals.norm) == ["derf", "identity", "layernorm"] and set(finals.placement) == {"peri"}
    assert json.loads((run / "config.json").read_text())["placement"] == "peri"
    md = (run / "table.md").read_text()
    assert "placement peri" in md and "Derf - LN" in md and "Identity - LN" in md
    params = df[df.metric == "params"].set_index("norm")["value"]
    # peri: 2 norms more per block (depth 1); Derf's two scalars per layer; the identity has no parameters
    assert params["derf"] - params["identity"] == 5 * (2 * 16 + 2)
    assert params["layernorm"] - params["identity"] == 5 * 32
    code, _, err = invoke("lra", "listops", *flags[:-1], "p2", "--placement", "middle")
    assert_one_line_error(code, err, "--placement 'middle'")
