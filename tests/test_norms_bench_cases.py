"""bench norms' loaded case and training-step case, and the background load they rely on (dtn_bench.timing)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from dtn_bench.bench import norms as nb
from dtn_bench.bench.report import spread_text, throughput_ratios, train_table
from dtn_bench.results.io import read_rows
from dtn_bench.stats import ratio_spread
from dtn_bench.timing import background_load, interleaved_ms


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux ``/proc``)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_background_load_runs_busy_processes_and_stops_them():
    with background_load(2) as procs:
        assert len(procs) == 2
        pids = [p.pid for p in procs]
        deadline = time.monotonic() + 60  # a shared machine may give them little time: wait for it
        while min(cpu_seconds(pid) for pid in pids) < 0.2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all(p.poll() is None for p in procs)
        assert all(cpu_seconds(pid) >= 0.2 for pid in pids)  # they burn CPU
    assert all(p.poll() is not None for p in procs)
    with background_load(0) as none:
        assert none == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_background_load_ends_when_its_parent_is_killed():
    code = ("import time\nfrom dtn_bench.timing import background_load\n"
            "with background_load(2) as procs:\n    print(*[p.pid for p in procs], flush=True)\n    time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    pids = [int(v) for v in parent.stdout.readline().split()]
    assert len(pids) == 2 and all(alive(p) for p in pids)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 20
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in pids)


def test_interleaved_ms_alternates_the_order():
    order = []
    units = [lambda: order.append("a"), lambda: order.append("b")]
    times = interleaved_ms(units, warmup=1, repeats=4, iters=1, device="cpu")
    assert [len(t) for t in times] == [4, 4]
    assert "".join(order) == "ab" + "abbaabba"


@pytest.fixture(scope="module")
def cases_run(tmp_path_factory):
    """The loaded case (1 busy process) and the train case (vit_cifar_t, batch 2), tiny sizes, no layer timings."""
    out = tmp_path_factory.mktemp("results")
    result = nb.benchmark("quick", out=str(out), run_id="cases", norms=("layernorm", "dtn"), authors=False,
                          batch=2, iters=1, warmup=0, models=("vit_t_ln", "vit_t_dtn"), model_batch=1, model_iters=1,
                          load=1, load_repeats=3, train_models=("vit_cifar_t",), train_batches=(2,), train_repeats=3)
    return result.path, read_rows(result.path)


def test_loaded_case_rows(cases_run):
    _, rows = cases_run
    tp = rows[(rows["metric"] == "throughput_img_s")]
    assert set(tp["load"]) == {0, 1}
    loaded = tp[tp["load"] == 1]
    assert set(loaded["case"]) == {"loaded"} and set(loaded["model"]) == {"vit_t_ln", "vit_t_dtn"}
    reps = loaded[loaded["stat"] == "rep"]
    assert sorted(reps["repetition"]) == [0, 0, 1, 1, 2, 2] and (reps["value"] > 0).all()
    assert (loaded["repeats"] == 3).all()
    ratio = throughput_ratios(rows)
    r = ratio[(ratio["load"] == 1) & (ratio["stat"] == "median")].iloc[0]
    by = reps.set_index(["model", "repetition"])["value"]
    want = ratio_spread([by[("vit_t_dtn", k)] for k in range(3)], [by[("vit_t_ln", k)] for k in range(3)])
    assert r["spread"] == want  # repetition k of DTN over repetition k of LN, under the same load
    med = loaded[loaded["stat"] == "median"].set_index("model")["value"]
    assert r["value"] == pytest.approx(med["vit_t_dtn"] / med["vit_t_ln"])


def test_train_case_rows_and_table(cases_run):
    path, rows = cases_run
    train = rows[rows["metric"] == "train_img_s"]
    assert set(train["model"]) == {"vit_cifar_t"} and set(train["norm"]) == {"layernorm", "dtn"}
    assert set(train["case"]) == {"train"} and set(train["img_size"]) == {"32x32"} and set(train["batch"]) == {2}
    assert set(train["stat"]) == {"rep"} and sorted(train["repetition"]) == [0, 0, 1, 1, 2, 2]
    assert (train["value"] > 0).all() and (train["unit"] == "img/s").all()
    table = train_table(rows)
    dtn = table[table["norm"] == "dtn"].iloc[0]
    by = train.set_index(["norm", "repetition"])["value"]
    ratio = ratio_spread([by[("dtn", k)] for k in range(3)], [by[("layernorm", k)] for k in range(3)])
    assert dtn["/ LN"] == spread_text(ratio)
    ln = table[table["norm"] == "layernorm"].iloc[0]
    assert ln["/ LN"] == "1.00 (1.00-1.00)"
    assert dtn["s / step"] == pytest.approx((2 / train[train["norm"] == "dtn"]["value"]).median())
    md = (path / "table.md").read_text()
    assert "Training step" in md and "vit_cifar_t (32x32, batch 2)" in md
    assert "busy process" in md  # the loaded case's figures say so


def test_train_table_without_layernorm_and_without_rows():
    assert train_table(pd.DataFrame({"metric": ["time_ms"], "stat": ["median"], "value": [1.0]})).empty
    rows = pd.DataFrame({"metric": "train_img_s", "stat": "rep", "repetition": [0, 1], "model": "vit_s",
                         "norm": "dtn", "batch": 4, "img_size": "224x224", "value": [2.0, 4.0], "run_id": "r"})
    t = train_table(rows)
    assert list(t["/ LN"]) == ["not measured"] and list(t["images/s"]) == ["3.00 (2.00-4.00)"]
