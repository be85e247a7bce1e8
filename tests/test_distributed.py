"""dtn_bench.distributed: process context, device choice under torchrun, buffer synchronisation (gloo on CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from dtn_bench.distributed import init_distributed
from dtn_bench.errors import DTNBenchError


def test_single_process_context_is_a_no_op(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = init_distributed("cpu")
    assert (ctx.rank, ctx.world, ctx.distributed, ctx.created) == (0, 1, False, False)
    assert ctx.all_sum([1.0, 2.0]) == [1.0, 2.0]


def test_torchrun_with_an_explicit_gpu_index_is_an_error(monkeypatch):
    """Every rank would take the same GPU; the device must come from LOCAL_RANK."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(DTNBenchError, match="--device cuda:1: under torchrun each process takes the GPU of its "
                                            "LOCAL_RANK"):
        init_distributed("cuda:1")


_RANK = textwrap.dedent("""
    import json, sys
    import torch
    from dtn_bench.distributed import DistContext
    rank, store = int(sys.argv[1]), sys.argv[2]
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    bn = torch.nn.BatchNorm1d(3)
    bn.running_mean.fill_(float(rank + 1))  # each rank's own statistics, as after a DDP training step
    bn.num_batches_tracked.fill_(10 + rank)
    DistContext(rank=rank, world=2, created=True).sync_buffers(bn)
    print(json.dumps([bn.running_mean.tolist(), int(bn.num_batches_tracked)]))
    torch.distributed.destroy_process_group()
""")


@pytest.mark.slow
def test_sync_buffers_gives_every_rank_rank_0s_statistics(tmp_path):
    store = tmp_path / "store"
    procs = [subprocess.Popen([sys.executable, "-c", _RANK, str(r), str(store)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert results == [[[1.0, 1.0, 1.0], 10]] * 2
