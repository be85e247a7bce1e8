"""`dtn-bench profile`: known answers (params, GMACs, DTN's 6H extra parameters, analytic norm MACs), the profiled
architectures, the protocol runner (one process per configuration, out-of-memory halving), tables, and bad input."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli

from dtn_bench.errors import DTNBenchError
from dtn_bench.norms import DTN, build_norm
from dtn_bench.norms.dtn import inter_token_macs as dtn_inter_token_macs
from dtn_bench.profile import measure, report
from dtn_bench.profile import models as pm
from dtn_bench.profile.normcost import NormMacCounter
from dtn_bench.results.schema import make_row

PROTOCOL = ["warmup", "iters", "latency_iters", "dtype", "autocast", "channels_last", "compile_mode", "dtn_kernel",
            "cudnn_benchmark", "tf32", "torch_version", "timm_version", "cuda_version", "device_name", "isolation",
            "batch_size", "batch_used", "mode", "threads"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine two OpenMP threads stall each other on small tensors."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def cpu_config(**kw) -> measure.ProfileConfig:
    base = dict(models=("vit_t",), norms=("layernorm",), device="cpu", batch_sizes=(1,), amp="none", warmup=0,
                iters=1, latency_iters=2, cudnn_benchmark=False, tf32=False, threads=1, preset="test")
    base.update(kw)
    return measure.ProfileConfig(**base)


# ---------------------------------------------------------------------------------------------------------------------
# known answers
def test_vit_s_ln_params_and_gmacs():
    from dtn_bench.models.info import count_gmacs

    model = pm.get("vit_s").build("layernorm")
    assert n_params(model) == 22_050_280  # timm ViT-S/16 has 22,050,664: our position embedding skips the class token
    gmacs = count_gmacs(model)
    assert abs(gmacs - 4.60) < 0.025  # the paper's 4.60 G
    # exactly: timm ViT-S/16's 4.5989 GMACs less the class token in blocks 0-9 (linear layers 1,769,472 MACs per
    # token, attention 2 * 384 * (197^2 - 196^2) per block)
    assert gmacs == pytest.approx(4.598882304 - 10 * (1_769_472 + 2 * 384 * (197**2 - 196**2)) / 1e9, abs=1e-6)


def test_deit_s_is_timm_vit_s():
    assert n_params(pm.get("deit_s").build("layernorm")) == 22_050_664


# DTN heads per replaced layer, from the architectures' published layouts (not from the code under test)
EXPECTED_DTN_HEADS = {
    "vit_s": [6] * 20,  # 10 blocks x 2 norms
    "vit_t_star": [4] * 20,
    "deit_s": [6] * 24,  # 12 blocks x 2 norms
    "pvt_v2_b0": [4] * 4 + [4] * 4 + [5] * 4,  # depths 2, 2, 2 (stages 1-3) x 2 norms; groups 4, 4, 5
    "swin_t": [3] * 4 + [6] * 4 + [12] * 12 + [24] * 4,  # depths 2, 2, 6, 2 x 2 norms; heads 3, 6, 12, 24
    "lra_transformer": [8] * 9,  # 4 blocks x 2 norms + the final norm, 8 heads
}


@pytest.mark.parametrize("model", list(EXPECTED_DTN_HEADS))
def test_dtn_extra_parameters_are_6h_per_replaced_layer(model):
    ln = pm.get(model).build("layernorm")
    dtn = pm.get(model).build("dtn")
    heads = EXPECTED_DTN_HEADS[model]
    assert n_params(dtn) - n_params(ln) == 6 * sum(heads)
    layers = [m for m in dtn.modules() if isinstance(m, DTN)]
    assert sorted(m.num_heads for m in layers) == sorted(heads)


def test_pvt_v2_dtn_pool_stages_and_forward():
    model = pm.get("pvt_v2_b0").build("dtn")
    for i, (side, pool) in enumerate([(56, 4), (28, 2), (14, 1)]):
        for blk in model.stages[i].blocks:
            for norm in (blk.norm1, blk.norm2):
                assert isinstance(norm, DTN) and norm.grid_size == (side, side) and norm.pool == pool
    assert all(type(b.norm1).__name__ == "LayerNorm" for b in model.stages[3].blocks)
    counts = measure.static_counts(model, pm.get("pvt_v2_b0"), torch.device("cpu"))
    # every norm runs once: 8 blocks x 2 + 4 patch embeddings + 4 stage-final + 6 spatial-reduction (stages 1-3)
    assert counts["norm_layers"] == 16 + 4 + 4 + 6
    assert counts["gmacs"] > 0.5


def test_window_norm_partitions_and_merges_exactly():
    torch.manual_seed(0)
    x = torch.randn(2, 14, 21, 12)
    ln = build_norm("layernorm", 12)
    wn = pm.WindowNorm(ln, (14, 21), 7)
    with torch.no_grad():
        torch.testing.assert_close(wn(x), ln(x.reshape(2, -1, 12)).reshape(x.shape))  # token-wise: no change
        torch.testing.assert_close(wn(x.reshape(2, -1, 12)), wn(x).reshape(2, -1, 12))  # [B, HW, C] input too
        dtn = build_norm("dtn", 12, num_heads=3, grid_size=(7, 7))
        with torch.no_grad():
            dtn.pos_proj.weight.normal_()
        y = pm.WindowNorm(dtn, (14, 21), 7)(x)
        # window (row 1, col 2) by hand
        crop = x[:, 7:14, 14:21].reshape(2, 49, 12)
        torch.testing.assert_close(y[:, 7:14, 14:21].reshape(2, 49, 12), dtn(crop))
    with pytest.raises(DTNBenchError, match="whole number"):
        pm.WindowNorm(ln, (14, 20), 7)


def test_lra_inputs_are_full_length_token_ids():
    entry = pm.get("lra_reformer")
    x = entry.example(3)
    assert x.shape == (3, 2000) and x.dtype == torch.int64 and int(x.min()) >= 1 and int(x.max()) <= 17
    assert entry.input_desc == "2000 tokens" and pm.paper_key("lra_reformer") == "reformer"
    assert torch.equal(x, entry.example(3))  # deterministic


def test_swin_t_window_dtn_layout():
    model = pm.get("swin_t").build("dtn")
    for stage, side in zip(model.layers, (56, 28, 14, 7), strict=True):
        for blk in stage.blocks:
            for norm in (blk.norm1, blk.norm2):
                assert isinstance(norm, pm.WindowNorm) and norm.resolution == (side, side)
                assert norm.norm.grid_size == (7, 7) and norm.norm.num_heads == blk.attn.num_heads


# ---------------------------------------------------------------------------------------------------------------------
# analytic norm MACs
def test_dtn_layer_macs_known_answer():
    dtn = DTN(384, 6, grid_size=(14, 14))
    computed, dense = dtn_inter_token_macs(dtn, (1, 196, 384))
    assert computed == 2 * 384 * 196 * 28 == 4_214_784  # ViT-S layer: 4.2 M separable
    assert dense == 2 * 384 * 196**2 == 29_503_488  # 29.5 M dense


@pytest.mark.parametrize("kind", ["2d", "2d_pooled", "1d_short", "1d_banded", "1d_no_window", "2d_prefix"])
def test_dtn_analytic_products_match_the_flop_counter(kind):
    """The analytic count of DTN's inter-token products equals what torch's flop counter sees in the layer."""
    from torch.utils.flop_counter import FlopCounterMode

    if kind == "2d":
        mod, shape, pool = DTN(48, 4, grid_size=(6, 8)), (3, 48, 48), 0
    elif kind == "2d_pooled":
        mod, shape = DTN(32, 4, grid_size=(28, 28), pool_to=14), (2, 784, 32)
        pool = 2 * 32 * 28 * 28  # the average pooling is not a matrix product
    elif kind == "2d_prefix":
        mod, shape, pool = DTN(24, 3, grid_size=(5, 5), num_prefix_tokens=1), (2, 26, 24), 0
    elif kind == "1d_short":
        mod, shape, pool = DTN(16, 2, grid_size=None, window=4), (2, 10, 16), 0
    elif kind == "1d_banded":
        mod, shape, pool = DTN(16, 2, grid_size=None, window=4), (2, 30, 16), 0
    else:
        mod, shape, pool = DTN(16, 2, grid_size=None, window=None), (1, 12, 16), 0
    x = torch.randn(*shape)
    for grad in (False, True):  # inference (buffers, out=) and autograd paths
        with torch.set_grad_enabled(grad), FlopCounterMode(display=False) as fc:
            mod(x)
        assert fc.get_total_flops() // 2 == dtn_inter_token_macs(mod, shape)[0] - pool


def test_norm_mac_counter_totals():
    torch.manual_seed(0)
    model = torch.nn.Sequential(build_norm("layernorm", 8), build_norm("rmsnorm", 8),
                                build_norm("dtn", 8, num_heads=2, grid_size=(2, 3)))
    with NormMacCounter(model) as nc:
        model(torch.randn(2, 6, 8))
    n = 2 * 6 * 8
    inter, dense = dtn_inter_token_macs(model[2], (2, 6, 8))
    assert nc.totals.layers == 3
    assert nc.totals.computed == 4 * n + 3 * n + 9 * n + inter
    assert nc.totals.dense == 4 * n + 3 * n + 9 * n + dense
    model(torch.randn(1, 6, 8))  # hooks removed on exit
    assert nc.totals.layers == 3


def test_static_counts_vit_t():
    """The flop counter sees DTN's separable products: 20 layers x 2 C T (H + W) more than LayerNorm."""
    entry = pm.get("vit_t")
    ln = measure.static_counts(entry.build("layernorm"), entry, torch.device("cpu"))
    dtn = measure.static_counts(entry.build("dtn"), entry, torch.device("cpu"))
    per_layer = 2 * 192 * 196 * 28
    assert dtn["gmacs"] - ln["gmacs"] == pytest.approx(20 * per_layer / 1e9, rel=1e-9)
    assert ln["norm_layers"] == dtn["norm_layers"] == 25
    # LN: 25 layers x 4 MACs per element (20 of them on 196 tokens, 5 on 197)
    assert ln["norm_gmacs"] == pytest.approx(4 * 192 * (20 * 196 + 5 * 197) / 1e9)
    assert dtn["norm_gmacs"] == pytest.approx((192 * (9 * 20 * 196 + 4 * 5 * 197) + 20 * per_layer) / 1e9)
    assert dtn["norm_gmacs_dense"] > dtn["norm_gmacs"]


def test_static_counts_pointwise_and_identity():
    """DyT and Derf count 3 MACs per element in blocks 0-9 (LN's 4 after); the identity counts 0 there, and the flop
    counter sees no matrix product in any of them (the same GMACs as LN)."""
    entry = pm.get("vit_t")
    ln = measure.static_counts(entry.build("layernorm"), entry, torch.device("cpu"))
    after = 4 * 192 * 5 * 197  # blocks 10-11 and the final norm: LayerNorm on 197 tokens
    for norm, per_element in (("dyt", 3), ("derf", 3), ("identity", 0)):
        counts = measure.static_counts(entry.build(norm), entry, torch.device("cpu"))
        assert counts["norm_layers"] == 25 and counts["gmacs"] == pytest.approx(ln["gmacs"])
        assert counts["norm_gmacs"] == pytest.approx((per_element * 192 * 20 * 196 + after) / 1e9), norm
        assert counts["norm_gmacs_dense"] == counts["norm_gmacs"]


def test_placement_is_built_and_recorded():
    """post keeps the parameters, peri adds the output norms; the rows record the placement."""
    entry = pm.get("vit_t")
    pre, peri = (n_params(entry.build("derf", p)) for p in ("pre", "peri"))
    assert n_params(entry.build("derf", "post")) == pre
    assert peri - pre == 10 * 2 * (2 * 192 + 2) + 2 * 2 * (2 * 192)
    rows = measure.run_inline(cpu_config(norms=("derf",), placement="peri"), measure.Job("vit_t", "derf", 1,
                                                                                          static=True), 1)
    assert {r["placement"] for r in rows} == {"peri"}
    with pytest.raises(DTNBenchError, match="pvt_v2_b0 takes pre only"):
        cpu_config(models=("pvt_v2_b0",), placement="peri").validate()


# ---------------------------------------------------------------------------------------------------------------------
# model selection, plan, peak table
def test_select_patterns():
    assert pm.select(["vit_*"]) == ["vit_t", "vit_t_star", "vit_s", "vit_s_star", "vit_b", "vit_b_star"]
    assert pm.select(["vit_s"]) == ["vit_s"]  # an exact name is just that model
    assert pm.select(["swin_t", "pvt"]) == ["pvt_v2_b0", "pvt_v2_b2", "swin_t"]
    assert pm.select(["lra_*"]) == ["lra_transformer", "lra_bigbird", "lra_reformer"]
    with pytest.raises(DTNBenchError, match=r"did you mean: .*swin_t"):
        pm.select(["swim_t"])


def test_zoo_names_bring_their_norm():
    # one model vocabulary: the names of `imagenet-c --model` / `list models` work in --models
    assert pm.expand(["vit_s_dtn", "vit_s_ln", "deit_s"]) == ["vit_s_ln", "vit_s_dtn", "deit_s"]
    assert pm.select(["vit_s_ln", "vit_s_dtn"]) == ["vit_s"]
    assert pm.pairs(["vit_s_ln", "vit_s_dtn"], ("rmsnorm",)) == [("vit_s", "layernorm"), ("vit_s", "dtn")]
    assert pm.pairs(["vit_t_star_dtn", "vit_t"], ("layernorm",)) == [
        ("vit_t", "layernorm"), ("vit_t_star", "dtn")]
    assert pm.pairs(["vit_s", "vit_s_dtn"], ("layernorm", "dtn")) == [("vit_s", "layernorm"), ("vit_s", "dtn")]
    jobs = measure.plan(cpu_config(models=("vit_t_dtn", "vit_t_ln"), norms=("layernorm",), batch_sizes=(1,)))
    assert [(j.model, j.norm) for j in jobs] == [("vit_t", "layernorm"), ("vit_t", "dtn")]


def test_cli_profile_takes_zoo_names(invoke, tmp_path):
    code, out, err = invoke("profile", "--preset", "quick", "--models", "vit_t_ln,vit_t_dtn", "--batch-sizes", "1",
                            "--no-isolate", "--warmup", "0", "--iters", "1", "--latency-iters", "1", "--out",
                            str(tmp_path), "--run-id", "zoo")
    assert code == 0, err
    run = tmp_path / "profile" / "zoo"
    df = pd.read_parquet(run / "rows.parquet")
    assert set(zip(df["model"], df["norm"], strict=True)) == {("vit_t", "layernorm"), ("vit_t", "dtn")}
    assert json.loads((run / "config.json").read_text())["models"] == ["vit_t_ln", "vit_t_dtn"]


def test_plan_latency_and_static_jobs():
    jobs = measure.plan(cpu_config(norms=("layernorm", "dtn"), batch_sizes=(64, 1, 64)))
    assert [(j.norm, j.batch, j.throughput, j.latency, j.static) for j in jobs] == [
        ("layernorm", 64, True, False, True), ("layernorm", 1, True, True, False),
        ("dtn", 64, True, False, True), ("dtn", 1, True, True, False)]
    jobs = measure.plan(cpu_config(batch_sizes=(8,)))
    assert [(j.batch, j.throughput, j.latency, j.static) for j in jobs] == [(1, False, True, True),
                                                                            (8, True, False, False)]


@pytest.mark.parametrize("name, amp, tf32, expect", [
    ("NVIDIA H100 80GB HBM3", "bf16", True, ("H100 SXM", "bf16", 989.4)),
    ("NVIDIA H100 PCIe", "none", True, ("H100 PCIe", "tf32", 378.0)),
    ("NVIDIA H200", "fp16", False, ("H200", "fp16", 989.4)),
    ("NVIDIA A100-SXM4-80GB", "none", False, ("A100", "fp32", 19.5)),
    ("NVIDIA GeForce RTX 3090", "bf16", True, None),
    ("NVIDIA RTX A1000", "bf16", True, None),  # not an A100
    ("NVIDIA H200 NVL", "bf16", True, ("H200 NVL", "bf16", 835.5)),
    ("NVIDIA H100 NVL", "none", False, ("H100 NVL", "fp32", 60.0)),
])
def test_peak_tflops_by_device_name(name, amp, tf32, expect):
    assert measure.peak_tflops(name, amp, tf32) == expect


# ---------------------------------------------------------------------------------------------------------------------
# out-of-memory halving
def fake_rows(job: measure.Job, batch: int) -> list[dict]:
    return [make_row("profile", job.model, job.norm, "throughput_img_s", 100.0 * batch, phase="throughput",
                     batch_size=job.batch, batch_used=batch)]


def test_oom_halves_the_batch_and_records_it():
    calls = []

    def runner(cfg, job, batch):
        calls.append(batch)
        if batch > 16:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return fake_rows(job, batch)

    items = list(measure.run(cpu_config(batch_sizes=(64,)), runner=runner))
    assert calls == [1, 64, 32, 16]  # the latency-only job at batch 1, then 64 -> 32 -> 16
    label, rows = items[1]
    assert "ran at batch 16" in label
    assert rows[0]["batch_size"] == 64 and rows[0]["batch_used"] == 16


def test_oom_without_halving_or_at_batch_1_skips():
    def runner(cfg, job, batch):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")

    items = list(measure.run(cpu_config(batch_sizes=(4,), oom_halving=False), runner=runner))
    assert [rows for _, rows in items] == [[], []]
    assert items[1][0].endswith("out of memory at batch 4; skipped")
    outcome = measure.run_with_halving(cpu_config(), measure.Job("vit_t", "dtn", 4), runner)
    assert outcome.rows is None and outcome.oom_batches == (4, 2, 1)


def test_other_errors_are_not_taken_for_oom():
    def runner(cfg, job, batch):
        raise ValueError("shape mismatch")

    with pytest.raises(ValueError, match="shape mismatch"):
        list(measure.run(cpu_config(), runner=runner))


def test_subprocess_runner_reports_oom_from_the_child(monkeypatch):
    """A real child process that reports out-of-memory at batch > 2: the parent halves 8 -> 4 -> 2."""
    seen = []
    child = ("import json, sys; spec = json.load(open(sys.argv[1])); b = spec['batch']; "
             "out = {'status': 'oom', 'message': 'CUDA out of memory'} if b > 2 else {'status': 'ok', 'rows': "
             "[{'suite': 'profile', 'model': spec['job']['model'], 'norm': spec['job']['norm'], "
             "'metric': 'throughput_img_s', 'value': 1.0, 'unit': 'img/s', 'batch_used': b}]}; "
             "json.dump(out, open(sys.argv[2], 'w'))")
    monkeypatch.setattr(measure, "_CHILD", child)

    def runner(cfg, job, batch):
        seen.append(batch)
        return measure.run_subprocess(cfg, job, batch)

    outcome = measure.run_with_halving(cpu_config(), measure.Job("vit_t", "dtn", 8), runner)
    assert seen == [8, 4, 2] and outcome.batch == 2 and outcome.rows[0]["batch_used"] == 2
    monkeypatch.setattr(measure, "_CHILD", "import sys; sys.stderr.write('boom: bad things\\n'); sys.exit(3)")
    with pytest.raises(DTNBenchError, match="exited with code 3: boom: bad things"):
        measure.run_subprocess(cpu_config(), measure.Job("vit_t", "dtn", 1), 1)


def test_child_main_reports_oom_and_errors(monkeypatch, tmp_path):
    spec, result = tmp_path / "job.json", tmp_path / "result.json"
    spec.write_text(json.dumps({"config": cpu_config().as_dict(), "job": {"model": "vit_t", "norm": "dtn",
                                                                             "batch": 4}, "batch": 4}))

    def oom(cfg, job, batch, isolation):
        raise torch.OutOfMemoryError("CUDA out of memory.\nTried to allocate")

    monkeypatch.setattr(measure, "measure_job", oom)
    assert measure.child_main([str(spec), str(result)]) == 0
    assert json.loads(result.read_text()) == {"status": "oom", "message": "CUDA out of memory. Tried to allocate"}

    def bad(cfg, job, batch, isolation):
        raise DTNBenchError("DTN: 10 tokens do not match grid")

    monkeypatch.setattr(measure, "measure_job", bad)
    measure.child_main([str(spec), str(result)])
    assert json.loads(result.read_text()) == {"status": "error", "message": "DTN: 10 tokens do not match grid"}


# ---------------------------------------------------------------------------------------------------------------------
# tables from synthetic rows
def synthetic_rows() -> pd.DataFrame:
    rows = []
    configs = [("vit_s", "ViT-S", "layernorm", 4.58, 22.05), ("vit_s", "ViT-S", "dtn", 4.66, 22.05),
               ("deit_s", "DeiT-S", "dtn", 4.7, 22.05)]
    for model, label, norm, g, p in configs:
        common = dict(model_label=label, heads="6", dim="384", mode="inference", device_name="cpu: test")
        rows += [make_row("profile", model, norm, "gmacs", g, phase="static", batch_size=1, batch_used=1, **common),
                 make_row("profile", model, norm, "params_m", p, phase="static", batch_size=1, batch_used=1, **common)]
        runs = [(1, 1, 10.0), (8, 8, 40.0 if norm == "layernorm" else 20.0), (64, 32 if norm == "dtn" else 64, 50.0)]
        for b, used, tp in runs:
            rows.append(make_row("profile", model, norm, "throughput_img_s", tp, phase="throughput", batch_size=b,
                                 batch_used=used, **common))
        rows.append(make_row("profile", model, norm, "latency_ms_p50", 5.0, phase="latency", batch_size=1,
                             batch_used=1, **common))
    return pd.DataFrame(rows)


def test_table1_layout_with_published_numbers():
    t = report.table1(synthetic_rows())
    assert list(t.index.names) == ["Model", "Norm", "H", "C"]
    assert t.loc[("ViT-S", "dtn", "6", "384"), "FLOPs paper (G)"] == 4.88
    assert t.loc[("ViT-S", "dtn", "6", "384"), "FLOPs ours (G)"] == 4.66
    assert t.loc[("ViT-S", "layernorm", "6", "384"), "Top-1 paper (%)"] == 79.9
    assert t.loc[("DeiT-S", "dtn", "6", "384"), "Params paper (M)"] == "not published"


def test_overhead_pairs_only_equal_batches():
    o = report.overhead_table(synthetic_rows())
    assert o.loc[("vit_s", 8), "dtn / LN"] == 0.5
    assert o.loc[("vit_s", 1), "dtn / LN"] == 1.0
    assert math.isnan(o.loc[("vit_s", 64), "dtn / LN"])  # DTN fell back to batch 32: no pair at 64
    s = report.summary_table(synthetic_rows())
    assert s.loc[("vit_s", "dtn"), "items/s @64"] == "50.00 (at 32)"
    text = report.render_report(synthetic_rows(), "md")
    assert "not published" in text and "dtn / LN" in text


def test_overhead_spread_over_typed_in_repetitions():
    df = synthetic_rows()
    reps = []
    for norm, values in (("layernorm", [40.0, 50.0, 20.0]), ("dtn", [20.0, 40.0, 30.0])):
        reps += [make_row("profile", "vit_s", norm, "throughput_img_s", v, phase="throughput", batch_size=8,
                          batch_used=8, stat="rep", repetition=k) for k, v in enumerate(values)]
    with_reps = pd.concat([df, pd.DataFrame(reps)], ignore_index=True)
    o = report.overhead_table(with_reps)
    # dtn over LN per repetition: 20/40, 40/50, 30/20 = 0.5, 0.8, 1.5
    assert o.loc[("vit_s", 8), "dtn / LN over repetitions"] == "0.800 (0.500-1.500)"
    assert o.loc[("vit_s", 8), "dtn / LN"] == 0.5  # the ratio of the run's throughputs, unchanged by the repetitions
    assert o.loc[("vit_s", 1), "dtn / LN over repetitions"] == "no repetitions recorded"
    assert o.loc[("vit_s", 64), "dtn / LN over repetitions"] == "—"  # no pair at 64
    assert report.throughput_table(with_reps).equals(report.throughput_table(df))  # repetitions are not summaries
    s = report.summary_table(with_reps)
    assert s.loc[("vit_s", "dtn"), "/ LN @8 over repetitions"] == "0.800 (0.500-1.500)"
    assert "0.800 (0.500-1.500)" in report.render_report(with_reps, "md")


# ---------------------------------------------------------------------------------------------------------------------
# the command line: a tiny CPU run, one process per configuration
@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("profile")
    code = run_cli(["profile", "--preset", "quick", "--models", "vit_t", "--norms", "layernorm,dtn",
                    "--batch-sizes", "1", "--warmup", "1", "--iters", "2", "--latency-iters", "2", "--out", str(out),
                    "--run-id", "tiny"])
    return code, out / "profile" / "tiny"


def test_cli_profile_writes_rows_tables_and_plots(cli_run):
    code, run = cli_run
    assert code == 0
    for name in ("rows.csv", "rows.parquet", "config.json", "env.json", "table.md", "table.tex", "throughput.png",
                 "latency.png"):
        assert (run / name).is_file(), name
    df = pd.read_parquet(run / "rows.parquet")
    assert set(df["norm"]) == {"layernorm", "dtn"}
    for norm in ("layernorm", "dtn"):
        sub = df[df["norm"] == norm].set_index("metric")["value"]
        assert {"params_m", "gmacs", "norm_gmacs", "norm_gmacs_dense", "latency_ms_p50", "latency_ms_p90",
                "throughput_img_s", "peak_mem_mib"} <= set(sub.index)
        assert sub["throughput_img_s"] > 0 and sub["latency_ms_p90"] >= sub["latency_ms_p50"] > 0
    assert df[PROTOCOL].notna().all().all()
    assert set(df["isolation"]) == {"process"} and set(df["batch_used"]) == {1}
    assert set(df["warmup"]) == {1} and set(df["iters"]) == {2} and set(df["threads"]) == {1}
    assert json.loads((run / "config.json").read_text())["models"] == ["vit_t"]
    md = (run / "table.md").read_text()
    assert "Table 1 layout" in md and "ViT-T" in md and "dtn / LN" in md and "Protocol" in md
    assert "\\toprule" in (run / "table.tex").read_text()


def test_cli_resume_skips_finished_configurations(cli_run, invoke):
    code, run = cli_run
    before = len(pd.read_parquet(run / "rows.parquet"))
    code, out, err = invoke("profile", "--preset", "quick", "--models", "vit_t", "--norms", "layernorm,dtn",
                            "--batch-sizes", "1", "--warmup", "1", "--iters", "2", "--latency-iters", "2", "--out",
                            str(run.parent.parent), "--run-id", "tiny", "--resume")
    assert code == 0, err
    assert len(pd.read_parquet(run / "rows.parquet")) == before
    assert "Profile summary" in out


def test_cli_inline_latency_only_job(invoke, tmp_path):
    code, out, err = invoke("profile", "--preset", "quick", "--norms", "layernorm", "--batch-sizes", "2",
                            "--no-isolate", "--iters", "1", "--out", str(tmp_path), "--run-id", "inline")
    assert code == 0, err
    df = pd.read_parquet(tmp_path / "profile" / "inline" / "rows.parquet")
    assert set(df["isolation"]) == {"inline"}
    lat = df[df["phase"] == "latency"]
    assert set(lat["metric"]) == {"latency_ms_p50", "latency_ms_p90", "peak_mem_mib"} and set(lat["batch_used"]) == {1}
    tp = df[df["metric"] == "throughput_img_s"]
    assert list(tp["batch_size"]) == [2] and list(tp["batch_used"]) == [2]
    assert "vit_t" in out and "results:" in out


# ---------------------------------------------------------------------------------------------------------------------
# bad input: one line, exit code 2, nothing written
@pytest.mark.parametrize("args, expect", [
    pytest.param(["--models", "vit_x"], "did you mean: vit_t", id="unknown-pattern"),
    pytest.param(["--models", "swin*,pvt_v3*"], "unknown profile model pattern 'pvt_v3*'", id="unknown-glob"),
    pytest.param(["--device", "cuda"], "no CUDA GPU", id="cuda-without-gpu"),
    pytest.param(["--batch-sizes", "0"], "must be > 0", id="batch-0"),
    pytest.param(["--batch-sizes", "8,-2"], "must be > 0", id="batch-negative"),
    pytest.param(["--batch-sizes", "1,x"], "comma-separated positive integers", id="batch-syntax"),
    pytest.param(["--norms", "dnt"], "did you mean: dtn", id="unknown-norm"),
    pytest.param(["--amp", "fp16"], "GPU setting", id="fp16-on-cpu"),
    pytest.param(["--amp", "int8"], "choose bf16, fp16 or none", id="amp"),
    pytest.param(["--models", "lra_*", "--channels-last"], "needs image models", id="channels-last-lra"),
    pytest.param(["--tf32"], "--tf32 needs --device cuda", id="tf32-on-cpu"),
    pytest.param(["--compile-mode", "max-autotune"], "--compile-mode needs --compile", id="compile-mode"),
    pytest.param(["--resume"], "--resume needs the --run-id", id="resume"),
    pytest.param(["--models", "vit_s_lm"], "did you mean: vit_s_ln", id="zoo-name-typo"),
    pytest.param(["--device", "cpu:x"], "--device 'cpu:x' is not a device", id="device-string"),
    pytest.param(["--seed", str(2**64)], "--seed must be in 0..2^63-1", id="seed-range"),
    pytest.param(["--compile", "--compile-mode", "reduce-overhead"], "replays CUDA graphs", id="cudagraphs-on-cpu"),
    pytest.param(["--batch-sizes", "1,,2"], "comma-separated positive integers", id="batch-empty-item"),
    pytest.param(["--dtn-kernel", "fused"], "--dtn-kernel 'fused': choose eager or triton", id="dtn-kernel"),
    pytest.param(["--dtn-kernel", "triton"], "--dtn-kernel triton needs --device cuda", id="dtn-kernel-cpu"),
    pytest.param(["--device", "cuda", "--dtn-kernel", "triton", "--train"], "drop --train", id="dtn-kernel-train"),
    pytest.param(["--iters", "0"], "--iters must be > 0", id="iters"),
    pytest.param(["--device", "tpu"], "choose cuda or cpu", id="device"),
    pytest.param(["--preset", "fast"], "unknown profile preset", id="preset"),
])
def test_bad_input_is_one_line(invoke, monkeypatch, tmp_path, args, expect):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    preset = [] if "--preset" in args else ["--preset", "quick"]
    code, _, err = invoke("profile", *preset, *args, "--out", str(tmp_path / "results"))
    assert_one_line_error(code, err, expect)
    assert not (tmp_path / "results").exists()


def test_default_preset_asks_for_a_gpu(invoke, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = invoke("profile", "--out", str(tmp_path))
    assert_one_line_error(code, err, "--device cuda but no CUDA GPU is visible", "use --preset cpu (or --device cpu)")


def test_suite_and_presets_registered():
    from dtn_bench.suites import SUITES, load_presets

    assert "profile" in SUITES
    presets = load_presets("profile")
    assert {"default", "cpu", "quick"} <= set(presets)
    for name, fields in presets.items():
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items() if k != "description"}
        cfg = measure.ProfileConfig(**fields, preset=name)
        assert pm.select(cfg.models)
        if cfg.device == "cpu":
            cfg.validate()


# ---------------------------------------------------------------------------------------------------------------------
# GPU path (needs CUDA)
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_measurement_uses_events_and_cuda_memory():
    cfg = cpu_config(device="cuda", amp="bf16", batch_sizes=(2,), warmup=2, iters=3, latency_iters=5,
                     cudnn_benchmark=True, tf32=True)
    rows = measure.measure_job(cfg, measure.Job("vit_t", "dtn", 1, True, True, True), 1, "inline")
    by = {(r["metric"], r["phase"]): r for r in rows}
    assert by[("latency_ms_p50", "latency")]["timer"] == "cuda_events"
    assert by[("peak_mem_mib", "throughput")]["mem_kind"] == "cuda_max_memory_allocated"
    assert by[("throughput_img_s", "throughput")]["value"] > 0
    name = torch.cuda.get_device_name()
    if measure.peak_tflops(name, "bf16", True) is not None:
        assert 0 < by[("mfu", "throughput")]["value"] < 1


# ---------------------------------------------------------------------------------------------------------------------
# report: published ViT-T numbers, what the peak-memory figures are
def test_table1_shows_the_published_vit_t_flops_and_params():
    common = dict(model_label="ViT-T", heads="3", dim="192", phase="static", batch_size=1, batch_used=1)
    rows = pd.DataFrame([make_row("profile", "vit_t", norm, metric, value, **common)
                         for norm in ("layernorm", "dtn") for metric, value in (("gmacs", 1.25), ("params_m", 5.72))])
    t = report.table1(rows)
    assert t.loc[("ViT-T", "layernorm", "3", "192"), "FLOPs paper (G)"] == 1.26
    assert t.loc[("ViT-T", "layernorm", "3", "192"), "Params paper (M)"] == 5.7
    assert t.loc[("ViT-T", "dtn", "3", "192"), "FLOPs paper (G)"] == "not published"  # no DTN ViT-T in the source


@pytest.mark.parametrize("kind, heading, note", [
    ("cpu_process_max_rss", "peak RSS (MiB, whole process)", "not the model's memory"),
    ("cuda_max_memory_allocated", "peak GPU memory (MiB, max_memory_allocated)", "torch.cuda.max_memory_allocated"),
])
def test_memory_tables_say_what_the_peak_memory_is(kind, heading, note):
    common = dict(model_label="ViT-S", heads="6", dim="384", mode="inference", device_name="test")
    rows = pd.DataFrame([
        make_row("profile", "vit_s", "layernorm", "latency_ms_p50", 5.0, phase="latency", batch_size=1, batch_used=1,
                 **common),
        make_row("profile", "vit_s", "layernorm", "peak_mem_mib", 900.0, phase="latency", batch_size=1, batch_used=1,
                 mem_kind=kind, **common),
        make_row("profile", "vit_s", "layernorm", "throughput_img_s", 12.0, phase="throughput", batch_size=8,
                 batch_used=8, **common),
        make_row("profile", "vit_s", "layernorm", "peak_mem_mib", 950.0, phase="throughput", batch_size=8,
                 batch_used=8, mem_kind=kind, **common),
    ])
    lat, mem = report.latency_table(rows), report.memory_mfu_table(rows)
    assert lat.loc[("vit_s", "layernorm"), heading] == 900.0
    assert mem.loc[("vit_s", "layernorm", 8), heading] == 950.0
    assert "peak mem (MiB)" not in list(lat.columns) + list(mem.columns)
    text = report.render_report(rows, "md")
    assert heading in text and note in text
    assert ("peak GPU memory" if kind == "cpu_process_max_rss" else "peak RSS") not in text


@pytest.mark.parametrize("name", pm.PROFILE_MODELS.names())
def test_gmacs_do_not_depend_on_the_attention_kernel(name):
    # the default dispatch (fused kernels) and the math backend (attention as plain matrix products, which every
    # torch version counts) give one figure for every profiled model
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from dtn_bench.models.info import count_input_gmacs

    entry = pm.get(name)
    model = entry.build("layernorm")
    x = entry.example(1)
    fused = count_input_gmacs(model, x)
    with sdpa_kernel(SDPBackend.MATH):
        math = count_input_gmacs(model, x)
    assert fused == pytest.approx(math, rel=1e-12) and fused > 0
