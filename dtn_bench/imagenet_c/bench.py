"""Is the data pipeline the bottleneck? End-to-end images/s of the evaluation loop against model-only images/s.

- end-to-end: the real evaluation loop (:func:`dtn_bench.imagenet_c.evaluation._evaluate_groups`: read, decode - on the
  GPU when there is one -, pinned copy, normalise, forward, count) over ``images`` images of the first
  (corruption, severity) pair; timed from the end of the first batch (start-up and the first batch excluded) to the
  end of the last.
- model-only: the same batch size of random ``uint8`` images already on the device, normalise + forward (the same
  autocast), after one warm-up batch, synchronised on CUDA.

The ratio end-to-end / model-only is the pipeline's efficiency (the target on a GPU is >= 0.9). Measurement only.
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from dtn_bench.distributed import init_distributed
from dtn_bench.errors import DTNBenchError
from dtn_bench.imagenet_c.evaluation import SUITE, Plan, _evaluate_groups, _null, rank_device
from dtn_bench.results.schema import make_row
from dtn_bench.timing import sync


def model_only(p: Plan, batches: int) -> float:
    """Images/s of normalise + forward on random uint8 batches already on the device (after one warm-up batch)."""
    cfg = p.config
    device = rank_device(cfg.device)
    model = p.model.to(device)
    mean = torch.tensor(p.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(p.std, device=device).view(1, -1, 1, 1)
    g = torch.Generator().manual_seed(0)
    x8 = torch.randint(0, 256, (cfg.batch_size, 3, *p.input_size), dtype=torch.uint8, generator=g).to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if cfg.amp == "bf16" else _null()

    def step():
        with torch.inference_mode(), autocast:
            model(x8.float().div_(255).sub_(mean).div_(std)).float()

    step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(batches):
        step()
    sync(device)
    return batches * cfg.batch_size / (time.perf_counter() - t0)


def end_to_end(p: Plan) -> tuple[float, int]:
    """Images/s of the evaluation loop over the plan's first group, from the end of batch 1; (img/s, images timed)."""
    times: list[tuple[float, int]] = []

    def emit(kind, **info):
        if kind == "batch":
            times.append((time.perf_counter(), info["images"]))

    dist = init_distributed(p.config.device)
    try:
        _evaluate_groups(p, p.groups[:1], dist, emit, None, {})
    finally:
        dist.close()
    if len(times) < 3:
        raise DTNBenchError(f"pipeline benchmark: {sum(n for _, n in times)} images make fewer than 3 batches; raise "
                            f"--images or lower --batch-size")
    timed = sum(n for _, n in times[1:])
    return timed / (times[-1][0] - times[0][0]), timed


def run(p: Plan) -> list[dict]:
    """Rows: ``throughput_img_s`` for ``pipeline`` = end_to_end and model_only, and their ``ratio``."""
    cfg = p.config
    p = replace(p, groups=p.groups[:1])
    e2e, timed = end_to_end(p)
    batches = max(3, timed // cfg.batch_size)
    mo = model_only(p, batches)
    g = p.groups[0]
    common = dict(corruption=g.corruption, severity=g.severity, data=cfg.data_name, batch_size=cfg.batch_size,
                  workers=cfg.workers, amp=cfg.amp or "fp32", images=timed,
                  decode="gpu (torchvision.io.decode_jpeg, batched)" if rank_device(cfg.device).type == "cuda"
                  else "cpu workers (torchvision.io.decode_image)",
                  threads=torch.get_num_threads())
    row = lambda metric, value, **kw: make_row(SUITE, cfg.model, p.norm_label, metric, value, **common,  # noqa: E731
                                               **kw)
    return [row("throughput_img_s", e2e, pipeline="end_to_end"), row("throughput_img_s", mo, pipeline="model_only"),
            row("ratio", e2e / mo, pipeline="end_to_end / model_only")]
