"""Is the data pipeline the bottleneck? End-to-end images/s of the evaluation loop against model-only images/s.

The ``bench-imagenet-c-pipeline`` suite (``dtn-bench bench imagenet-c-pipeline``):

- end-to-end: the real evaluation loop (:func:`dtn_bench.shifts.loop.evaluate_units`: read, decode - on
  the GPU when there is one -, pinned copy, normalise, forward, count) over ``images`` images of one
  (corruption, severity) pair; timed from the end of the first batch (start-up and the first batch excluded) to the
  end of the last.
- model-only: the same batch size of random ``uint8`` images already on the device, normalise + forward (the same
  autocast), after one warm-up batch, synchronised on CUDA.

The ratio end-to-end / model-only is the pipeline's efficiency (the target on a GPU is >= 0.9). Measurement only:
:func:`run` yields the rows, the report (:func:`table`, :func:`render`) renders them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import pandas as pd
import torch

from dtn_bench.distributed import default_device, process_rank, world_size_from_env
from dtn_bench.errors import DTNBenchError
from dtn_bench.events import Event, Progress
from dtn_bench.imagenet_c.evaluation import ImageNetCConfig, check_count, default_workers, pipeline_units, plan
from dtn_bench.results.schema import make_row
from dtn_bench.runner import PresetConfig
from dtn_bench.shifts.loop import autocast, evaluate_units
from dtn_bench.shifts.plan import Plan
from dtn_bench.timing import sync

SUITE = "bench-imagenet-c-pipeline"
PIPELINES = ("end_to_end", "model_only", "end_to_end / model_only")
TABLE_INDEX = ("model", "data", "corruption", "severity", "batch_size", "workers", "amp", "decode", "threads")
"""Row columns that name one measured configuration (a row of the table)."""


@dataclass(frozen=True)
class PipelineConfig(PresetConfig):
    """Settings of one pipeline benchmark (``PipelineConfig.from_preset(None, **flags)``; no presets).

    Attributes:
        model: zoo model or timm model name.
        data_dir: an ImageNet-C folder (``<corruption>/<severity>/<wnid>/<image>``).
        num_classes: classifier outputs (default: the model's).
        corruption: the pair's corruption.
        severity: the pair's severity.
        images: images of the pair pushed through the loop (a class-stratified sample when the pair has more).
        batch_size: images per batch.
        workers: DataLoader workers (default :func:`~dtn_bench.imagenet_c.evaluation.default_workers`).
        device: ``cpu`` or ``cuda`` (default: ``cuda`` when there is a GPU).
        amp: ``None`` or ``"bf16"``.
        allow_resize: resize images whose size is not the model's input size.
        data_label: what the data is called in the rows (default: found from the folder).
    """

    SUITE = SUITE

    model: str = "vit_t_ln"
    data_dir: str | None = None
    num_classes: int | None = None
    corruption: str = "fog"
    severity: int = 3
    images: int = 256
    batch_size: int = 64
    workers: int = field(default_factory=default_workers)
    device: str = field(default_factory=default_device)
    amp: str | None = None
    allow_resize: bool = False
    data_label: str | None = None

    def validate(self) -> None:
        """One-line errors for settings that cannot work (those of the evaluation loop included)."""
        check_count("images", self.images)
        self.evaluation().validate()

    def evaluation(self) -> ImageNetCConfig:
        """The :class:`~dtn_bench.imagenet_c.evaluation.ImageNetCConfig` of the loop (the one pair, no subset)."""
        from dtn_bench.imagenet_c.data import resolve_corruptions, resolve_severities

        return ImageNetCConfig(
            model=self.model, num_classes=self.num_classes, data_dir=self.data_dir,
            corruptions=resolve_corruptions((self.corruption,)), severities=resolve_severities((self.severity,)),
            batch_size=self.batch_size, workers=self.workers, device=self.device, amp=self.amp,
            allow_resize=self.allow_resize, data_label=self.data_label)

    def default_run_id(self, provenance: dict | None = None) -> str:
        """``pipeline-<model>-<timestamp>``."""
        from dtn_bench.results.writer import new_run_id

        return f"pipeline-{self.model}-{new_run_id()}"


def pipeline_plan(cfg: PipelineConfig, *, debug: bool = False) -> Plan:
    """The evaluation plan of the benchmark: the one pair, cut to ``cfg.images`` images (every check done here)."""
    p = pipeline_units(plan(cfg.evaluation(), debug=debug), cfg.images)
    _check_batches(len(p.units[0]), cfg.batch_size)
    return replace(p, config=cfg)


def _check_batches(images: int, batch_size: int) -> None:
    """The loop is timed from the end of its first batch: this process's shard must make 3 batches at least."""
    world = world_size_from_env()
    local = len(range(process_rank(), images, world))
    if -(-local // batch_size) < 3:
        raise DTNBenchError(f"pipeline benchmark: {local * world} images make fewer than 3 batches; raise --images or "
                            f"lower --batch-size")


def model_only(p: Plan, batches: int) -> float:
    """Images/s of normalise + forward on random uint8 batches already on the device (after one warm-up batch)."""
    cfg = p.config
    device = p.loop.device
    model = p.model.to(device)
    mean = torch.tensor(p.input.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(p.input.std, device=device).view(1, -1, 1, 1)
    g = torch.Generator().manual_seed(0)
    x8 = torch.randint(0, 256, (cfg.batch_size, 3, *p.input.size), dtype=torch.uint8, generator=g).to(device)

    def step():
        with torch.inference_mode(), autocast(device, cfg.amp):
            model(x8.float().div_(255).sub_(mean).div_(std)).float()

    step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(batches):
        step()
    sync(device)
    return batches * cfg.batch_size / (time.perf_counter() - t0)


def end_to_end(p: Plan, dist) -> tuple[float, int]:
    """Images/s of the evaluation loop over the plan's first unit, from the end of batch 1; (img/s, images timed)."""
    times: list[tuple[float, int]] = []

    def emit(event: Event) -> None:
        if isinstance(event, Progress):
            times.append((time.perf_counter(), event.advance))

    for _ in evaluate_units(p, p.units[:1], dist, emit):
        pass
    if len(times) < 3:
        raise DTNBenchError(f"pipeline benchmark: {sum(n for _, n in times)} images make fewer than 3 batches; raise "
                            f"--images or lower --batch-size")
    timed = sum(n for _, n in times[1:])
    return timed / (times[-1][0] - times[0][0]), timed


def measure(p: Plan, dist) -> list[dict]:
    """Rows: ``throughput_img_s`` for ``pipeline`` = end_to_end and model_only, and their ``ratio``.

    Args:
        p: the plan of :func:`pipeline_plan` (its first pair is timed).
        dist: the process context (:class:`~dtn_bench.distributed.DistContext`).
    """
    cfg = p.config
    p = replace(p, units=p.units[:1])
    e2e, timed = end_to_end(p, dist)
    batches = max(3, timed // cfg.batch_size)
    mo = model_only(p, batches)
    u = p.units[0]
    common = dict(corruption=u.corruption, severity=u.severity, data=cfg.evaluation().data_name(p.provenance),
                  batch_size=cfg.batch_size, workers=cfg.workers, amp=cfg.amp or "fp32", images=timed,
                  decode="gpu (torchvision.io.decode_jpeg, batched)" if p.loop.device.type == "cuda"
                  else "cpu workers (torchvision.io.decode_image)",
                  threads=torch.get_num_threads())
    row = lambda metric, value, **kw: make_row(SUITE, cfg.model, p.norm_label, metric, value, **common,  # noqa: E731
                                               **kw)
    return [row("throughput_img_s", e2e, pipeline="end_to_end"), row("throughput_img_s", mo, pipeline="model_only"),
            row("ratio", e2e / mo, pipeline="end_to_end / model_only")]


def run_plan(p: Plan, ctx) -> Iterator[tuple[str, list[dict]]]:
    """The suite's measurement of a planned benchmark: a progress line (task ``timing``), then the rows."""
    ctx.emit(Progress("timing", total=len(p.units[0]), status=f"timing {p.config.model}: end-to-end over "
                      f"{len(p.units[0])} images, then model-only"))
    yield "pipeline", measure(p, ctx.dist)


# ------------------------------------------------------------------------------------------------------------------
def table(df: pd.DataFrame) -> pd.DataFrame:
    """Images/s end-to-end and model-only and their ratio, one row per measured configuration (repeats averaged)."""
    from dtn_bench.results.tables import pivot

    rows = df[(df["suite"] == SUITE) & df["pipeline"].isin(PIPELINES)] if "pipeline" in df.columns else df.iloc[:0]
    if rows.empty:
        return pd.DataFrame()
    index = [c for c in TABLE_INDEX if c in rows.columns]
    out = pivot(rows, index, "pipeline")
    return out[[c for c in PIPELINES if c in out.columns]]


TITLE = "ImageNet-C evaluation pipeline: images/s end to end vs model only"
NOTE = ("end_to_end: the evaluation loop (read, decode, copy, normalise, forward), from the end of the first batch; "
        "model_only: normalise + forward on images already on the device; their ratio is the pipeline's efficiency.")


def render(df: pd.DataFrame, fmt: str) -> str:
    """:func:`table` as Markdown (``md``) or LaTeX (``tex``)."""
    from dtn_bench.results.tables import to_latex, to_markdown

    if fmt == "md":
        return to_markdown(table(df), floatfmt=".2f", title=TITLE, note=NOTE)
    if fmt == "tex":
        return to_latex(table(df), floatfmt=".2f", caption=f"{TITLE}. {NOTE}", label="tab:imagenet-c-pipeline")
    raise DTNBenchError(f"unknown table format {fmt!r}: md or tex")
