"""The profiling protocol: what one configuration measures, each configuration in its own process, OOM halving.

A run is a list of jobs (:func:`plan`). A job is one ``(model, norm)`` at one batch size; it measures inference
throughput (training throughput with ``train``) and peak memory at that batch, and the job at batch 1 (an extra
batch-1 job when the batch sizes lack 1) also measures latency p50/p90. Every job counts parameters, GMACs (torch's
flop counter / 2, the vision papers' "FLOPs") and the normalisers' own MACs (:mod:`dtn_bench.profile.normcost`);
the first job of each ``(model, norm)`` writes them as rows.

Protocol (recorded in every row):

* eval() and ``torch.inference_mode()`` for inference; train() with SGD, cross-entropy, ``zero_grad(set_to_none)``
  for training; static shapes; inputs made once, on the device; fp32 weights with optional autocast (bf16 autocast
  runs LayerNorm in fp32; DTN computes its statistics in fp32 outside autocast, but with ``tf32`` on, CUDA runs the
  eager DTN's fp32 matrix products in TF32; the triton kernel's products are IEEE fp32 whatever ``tf32`` says).
* ``warmup`` untimed iterations (``max(warmup, compile_warmup)`` with ``torch.compile``, ``dynamic=False``), then
  throughput = ``batch * iters / seconds`` with one synchronise before and one after the ``iters`` iterations.
* Latency at batch 1: ``latency_iters`` iterations each timed on their own (CUDA events on a GPU, ``perf_counter``
  on the CPU); p50 and p90 (linear interpolation).
* Peak memory: on a GPU ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (model and inputs
  included); on the CPU the process's peak resident set size (``ru_maxrss``), meaningful with one job per process.
* MFU (GPU only): ``throughput * 2 * GMACs`` (``* 3`` for a training step: forward + backward) over the device's
  dense peak for the compute dtype from :data:`PEAK_TFLOPS` (no row when the device is not in the table).
* DTN's inference kernel (``dtn_kernel``): ``eager`` (torch ops) or ``triton`` (the fused kernels of
  :mod:`dtn_bench.norms.dtn.triton`, CUDA inference only, not with ``compile``), recorded in every row.
* Isolation: each job runs in a fresh Python process (``isolate``), as timm's bulk benchmark runner does, so no
  compiled graph, allocator cache or peak-memory state carries over. On out-of-memory the batch is halved and the
  job retried (``oom_halving``); rows record the requested ``batch_size`` and the ``batch_used``.

Measurement only: rows out, nothing printed (``dtn_bench.cli.profile`` renders).
"""

from __future__ import annotations

import contextlib
import gc
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from dtn_bench.errors import DTNBenchError
from dtn_bench.norms.dtn import KERNELS, use_kernel
from dtn_bench.results.schema import make_row
from dtn_bench.runner import PresetConfig
from dtn_bench.timing import keep_freed_memory, peak_mem_mib, reset_peak, sync, time_ms

SUITE = "profile"
AUTOCAST = ("bf16", "fp16", "none")
GPU_PRESETS = ("default", "gpu-all")  # presets of suites/profile.yaml that ask for --device cuda
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
THROUGHPUT_METRIC = {"image": "throughput_img_s", "tokens": "throughput_seq_s"}
THROUGHPUT_UNIT = {"throughput_img_s": "img/s", "throughput_seq_s": "seq/s"}

PEAK_TFLOPS: dict[str, dict[str, float]] = {
    # NVIDIA datasheets, dense tensor-core peaks (the sparsity figures halved); "fp32" without TF32 is the CUDA cores.
    "H200": {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "H200 NVL": {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0},
    "H100 SXM": {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "H100 NVL": {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0},
    "H100 PCIe": {"bf16": 756.5, "fp16": 756.5, "tf32": 378.0, "fp32": 51.2},
    "A100": {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5},
}
"""Dense peak TFLOP/s by GPU and compute dtype, for MFU."""


def peak_tflops(device_name: str, autocast: str, tf32: bool) -> tuple[str, str, float] | None:
    """The dense peak of a GPU, by its ``torch.cuda.get_device_name``, for the compute dtype of a run.

    Returns ``(table key, compute dtype, peak TFLOP/s)``, or ``None`` when the GPU is not in :data:`PEAK_TFLOPS`.

    Args:
        device_name: e.g. ``"NVIDIA H100 80GB HBM3"`` (an SXM board), ``"NVIDIA H100 PCIe"``, ``"NVIDIA H200"``.
        autocast: ``bf16``, ``fp16`` or ``none``.
        tf32: whether fp32 matrix products may use TF32 (only matters without autocast).
    """
    name = device_name.upper()
    if re.search(r"\bH200\b", name):
        key = "H200 NVL" if "NVL" in name else "H200"
    elif re.search(r"\bH100\b", name):
        key = "H100 PCIe" if "PCIE" in name else "H100 NVL" if "NVL" in name else "H100 SXM"
    elif re.search(r"\bA100\b", name):  # not "RTX A1000"
        key = "A100"
    else:
        return None
    kind = autocast if autocast in ("bf16", "fp16") else ("tf32" if tf32 else "fp32")
    return key, kind, PEAK_TFLOPS[key][kind]


# ----------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProfileConfig(PresetConfig):
    """Settings of one profile run (presets in ``suites/profile.yaml``; CLI flags override them)."""

    SUITE = SUITE

    models: tuple[str, ...] = ("vit_*",)
    norms: tuple[str, ...] = ("layernorm", "dtn")
    placement: str = "pre"
    device: str = "cuda"
    batch_sizes: tuple[int, ...] = (1, 64, 256)
    amp: str = "bf16"
    channels_last: bool = False
    compile: bool = False
    compile_mode: str = "default"
    dtn_kernel: str = "eager"
    train: bool = False
    warmup: int = 10
    iters: int = 50
    latency_iters: int = 100
    compile_warmup: int = 50
    cudnn_benchmark: bool = True
    tf32: bool = True
    isolate: bool = True
    oom_halving: bool = True
    threads: int = 0
    tune_malloc: bool = True
    seed: int = 0
    preset: str = "default"

    def validate(self) -> None:
        """One-line :class:`DTNBenchError` for a bad value or an incompatible combination."""
        from dtn_bench.distributed import check_device
        from dtn_bench.profile import models as pm

        self._check_counts()
        kind = self._check_choices()
        if not self.norms:
            raise DTNBenchError("profile: --norms is empty")
        for n in self.norms:
            pm.check_norm(n)
        names = pm.select(self.models)
        for name in names:
            pm.check_placement(name, self.placement)
        self._check_device_settings(kind, names)
        self._check_dtn_kernel(kind)
        if self.compile and self.compile_mode == "reduce-overhead" and kind != "cuda":
            raise DTNBenchError("profile: --compile-mode reduce-overhead replays CUDA graphs: it needs --device cuda")
        if not 0 <= self.seed < 2**63:
            raise DTNBenchError(f"profile: --seed must be in 0..2^63-1, got {self.seed}")
        hint = "; on a machine without a GPU use --preset cpu (or --device cpu)" if self.preset in GPU_PRESETS else ""
        check_device("profile", self.device, hint)

    def _check_counts(self) -> None:
        """Check the batch sizes and the iteration, warm-up and thread counts (part of :meth:`validate`)."""
        if not self.batch_sizes:
            raise DTNBenchError("profile: --batch-sizes is empty")
        for b in self.batch_sizes:
            if isinstance(b, bool) or not isinstance(b, int) or b <= 0:
                raise DTNBenchError(f"profile: batch sizes must be positive integers, got {b!r}")
        for name in ("iters", "latency_iters"):
            if getattr(self, name) <= 0:
                raise DTNBenchError(f"profile: --{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        for name in ("warmup", "compile_warmup", "threads"):
            if getattr(self, name) < 0:
                raise DTNBenchError(f"profile: --{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")

    def _check_choices(self) -> str:
        """Check ``amp``, ``compile_mode`` and the device kind; return the kind (``cpu`` or ``cuda``)."""
        if self.amp not in AUTOCAST:
            raise DTNBenchError(f"profile: --amp {self.amp!r}: choose bf16, fp16 or none")
        if self.compile_mode not in COMPILE_MODES:
            raise DTNBenchError(f"profile: compile mode {self.compile_mode!r}: choose {', '.join(COMPILE_MODES)}")
        kind = self.device.split(":", 1)[0]
        if kind not in ("cpu", "cuda"):
            raise DTNBenchError(f"profile: --device {self.device!r}: choose cuda or cpu")
        return kind

    def _check_device_settings(self, kind: str, names: list[str]) -> None:
        """Check that ``amp`` suits the device kind and ``channels_last`` the selected models ``names``."""
        from dtn_bench.profile import models as pm

        if kind == "cpu" and self.amp == "fp16":
            raise DTNBenchError("profile: --amp fp16 is a GPU setting; use --amp bf16 or --amp none with --device cpu")
        if self.channels_last:
            seq = [n for n in names if pm.get(n).input != "image"]
            if seq:
                raise DTNBenchError(f"profile: --channels-last needs image models; {', '.join(seq)} take token ids")

    def _check_dtn_kernel(self, kind: str) -> None:
        """Check ``dtn_kernel``: a known kernel, and ``triton`` only for eager CUDA inference."""
        if self.dtn_kernel not in KERNELS:
            raise DTNBenchError(f"profile: --dtn-kernel {self.dtn_kernel!r}: choose {' or '.join(KERNELS)}")
        if self.dtn_kernel == "triton":
            if kind != "cuda":
                raise DTNBenchError(f"profile: --dtn-kernel triton needs --device cuda (got --device {self.device})")
            clash = [flag for flag, on in (("--train", self.train), ("--compile", self.compile)) if on]
            if clash:
                raise DTNBenchError(f"profile: --dtn-kernel triton is an inference kernel for eager models; drop "
                                    f"{' and '.join(clash)}")

    @property
    def on_cuda(self) -> bool:
        """Whether ``device`` is a CUDA device."""
        return self.device.startswith("cuda")

    @property
    def effective_warmup(self) -> int:
        """Warm-up iterations actually run (at least ``compile_warmup`` with ``torch.compile``)."""
        return max(self.warmup, self.compile_warmup) if self.compile else self.warmup


def config_from_dict(data: dict) -> ProfileConfig:
    """A :class:`ProfileConfig` from :meth:`ProfileConfig.as_dict` output (lists back to tuples)."""
    known = {f.name for f in fields(ProfileConfig)}
    return ProfileConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class Job:
    """One configuration: ``(model, norm)`` at batch ``batch``.

    Attributes:
        model: profiled model name.
        norm: normaliser name.
        batch: requested batch of the throughput measurement (1 for a latency-only job).
        throughput: measure throughput and peak memory at ``batch``.
        latency: measure latency p50/p90 at batch 1 (only in batch-1 jobs).
        static: write the parameter / GMACs / norm-MACs rows (first job of each ``(model, norm)``).
    """

    model: str
    norm: str
    batch: int
    throughput: bool = True
    latency: bool = False
    static: bool = False

    @property
    def label(self) -> str:
        """``model / norm / batch N`` (or ``/ latency`` for a latency-only job), for progress messages."""
        what = f"batch {self.batch}" if self.throughput else "latency"
        return f"{self.model} / {self.norm} / {what}"


def plan(cfg: ProfileConfig) -> list[Job]:
    """The jobs of a run, model by model, norm by norm, batch sizes in the given order (duplicates dropped).

    The ``(model, norm)`` pairs come from :func:`~dtn_bench.profile.models.pairs`.
    """
    from dtn_bench.profile import models as pm

    batches = list(dict.fromkeys(cfg.batch_sizes))
    jobs = []
    for model, norm in pm.pairs(cfg.models, cfg.norms):
        first = True
        if 1 not in batches:
            jobs.append(Job(model, norm, 1, throughput=False, latency=True, static=True))
            first = False
        for b in batches:
            jobs.append(Job(model, norm, b, throughput=True, latency=b == 1, static=first))
            first = False
    return jobs


def steps(cfg: ProfileConfig) -> int:
    """How many ``(label, rows)`` items :func:`run` yields (for a progress bar)."""
    return len(plan(cfg))


# ----------------------------------------------------------------------------------------------------------------------
def _percentiles(times_ms: list[float]) -> tuple[float, float]:
    import numpy as np

    p50, p90 = np.percentile(np.asarray(times_ms, dtype=np.float64), [50, 90])
    return float(p50), float(p90)


def static_counts(model: torch.nn.Module, entry, device: torch.device) -> dict[str, float]:
    """Parameters (M), GMACs per sample (flop counter / 2) and the normalisers' analytic GMACs of ``model``.

    All from one batch-1 forward pass on ``device``.
    """
    from dtn_bench.models.info import count_gmacs, count_input_gmacs
    from dtn_bench.profile.models import IMG_SIZE
    from dtn_bench.profile.normcost import NormMacCounter

    with NormMacCounter(model) as nc:
        if entry.input == "image":
            gmacs = count_gmacs(model, IMG_SIZE)
        else:
            gmacs = count_input_gmacs(model, entry.example(1, device))
    return {
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "params": sum(p.numel() for p in model.parameters()),
        "gmacs": gmacs,
        "norm_gmacs": nc.totals.computed / 1e9,
        "norm_gmacs_dense": nc.totals.dense / 1e9,
        "norm_layers": nc.totals.layers,
    }


def measure_job(cfg: ProfileConfig, job: Job, batch: int, isolation: str) -> list[dict]:
    """Measure one job at ``batch`` in this process and return its rows.

    Args:
        cfg: the run's settings.
        job: what to measure.
        batch: the batch to run (``job.batch``, or less after out-of-memory halving).
        isolation: ``process`` or ``inline`` (recorded in the rows).

    Returns:
        Tidy rows (:func:`~dtn_bench.results.schema.make_row`).

    Raises:
        torch.OutOfMemoryError: when the batch does not fit (the caller halves it).
    """
    import timm

    from dtn_bench.profile import models as pm
    from dtn_bench.results.env import device_name

    device = torch.device(cfg.device)
    cuda = device.type == "cuda"
    tuned = _configure_torch(cfg, cuda)
    torch.manual_seed(cfg.seed)
    entry = pm.get(job.model)
    model = entry.build(job.norm, cfg.placement).to(device)
    counts = static_counts(model, entry, device)  # with a new model's eager DTN: the flop counter misses Triton
    use_kernel(model, cfg.dtn_kernel)  # for the rest of the job (the model is the job's own)

    warm = cfg.effective_warmup
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
    dev_name = device_name(cfg.device)
    common = _common_fields(cfg, entry, cuda, warm, dev_name, tuned, isolation, timm.__version__)

    def row(metric: str, value: float, phase: str, b: int, unit: str | None = None, **extra) -> dict:
        return make_row(SUITE, job.model, job.norm, metric, value, unit, phase=phase, batch_size=job.batch if
                        phase == "throughput" else 1, batch_used=b, **common, **extra)

    rows: list[dict] = _static_rows(row, counts) if job.static else []

    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train(cfg.train)
    fn = torch.compile(model, mode=cfg.compile_mode, dynamic=False) if cfg.compile else model
    opt = torch.optim.SGD(model.parameters(), lr=1e-4) if cfg.train else None
    make_step = _step_factory(cfg, entry, fn, opt, device, autocast_dtype)

    if job.latency:
        rows += _latency_rows(row, make_step(1), cfg, device, warm)
    if job.throughput:
        rows += _throughput_rows(row, make_step(batch), cfg, device, warm, batch, entry.input, counts["gmacs"],
                                 dev_name)
    return rows


def _configure_torch(cfg: ProfileConfig, cuda: bool) -> bool:
    """Apply the run's allocator, thread and CUDA backend settings; return whether the CPU allocator was tuned."""
    tuned = keep_freed_memory() if cfg.tune_malloc and not cuda else False
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cuda:
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
        torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
        torch.backends.cudnn.allow_tf32 = cfg.tf32
    return tuned


def _common_fields(cfg: ProfileConfig, entry, cuda: bool, warm: int, dev_name: str, tuned: bool, isolation: str,
                   timm_version: str) -> dict:
    """The protocol fields recorded in every row of a job (model description, settings, versions)."""
    return dict(
        model_label=entry.label, family=entry.family, heads=entry.heads, dim=entry.dim, input=entry.input_desc,
        placement=cfg.placement,
        mode="train" if cfg.train else "inference", warmup=warm, iters=cfg.iters, latency_iters=cfg.latency_iters,
        dtype="float32", autocast=cfg.amp, channels_last=cfg.channels_last,
        compile_mode=cfg.compile_mode if cfg.compile else "none", dtn_kernel=cfg.dtn_kernel,
        cudnn_benchmark=bool(cuda and torch.backends.cudnn.benchmark),
        tf32=bool(cuda and torch.backends.cuda.matmul.allow_tf32), device_name=dev_name,
        torch_version=torch.__version__, timm_version=timm_version,
        cuda_version=torch.version.cuda if cuda else "none",
        cudnn_version=str(torch.backends.cudnn.version()) if cuda else "none",
        threads=torch.get_num_threads(), malloc_tuned=tuned, isolation=isolation, seed=cfg.seed, preset=cfg.preset,
    )


def _static_rows(row: Callable[..., dict], counts: dict[str, float]) -> list[dict]:
    """The parameter, GMACs and norm-MACs rows of a job's first configuration (``counts``: :func:`static_counts`)."""
    return [
        row("params_m", counts["params_m"], "static", 1, params=counts["params"]),
        row("gmacs", counts["gmacs"], "static", 1, counter="torch.utils.flop_counter / 2"),
        row("norm_gmacs", counts["norm_gmacs"], "static", 1, unit="GMAC",
            counter="analytic, as computed (dtn_bench.profile.normcost)", norm_layers=counts["norm_layers"]),
        row("norm_gmacs_dense", counts["norm_gmacs_dense"], "static", 1, unit="GMAC",
            counter="analytic, DTN statistics in the dense T x T form", norm_layers=counts["norm_layers"]),
    ]


def _step_factory(cfg: ProfileConfig, entry, fn: Callable, opt: torch.optim.Optimizer | None, device: torch.device,
                  autocast_dtype: torch.dtype | None) -> Callable[[int], Callable[[], None]]:
    """A function of the batch ``b`` that makes the inputs once and returns one step (training or inference)."""

    def autocast():
        if autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=autocast_dtype)

    def make_step(b: int) -> Callable[[], None]:
        x = entry.example(b, device, seed=cfg.seed)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if cfg.train:
            target = torch.randint(0, 10, (b,), generator=torch.Generator().manual_seed(cfg.seed)).to(device)

            def step() -> None:
                with autocast():
                    loss = torch.nn.functional.cross_entropy(fn(x).float(), target)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
        else:
            def step() -> None:
                with torch.inference_mode(), autocast():
                    fn(x)
        return step

    return make_step


def _latency_rows(row: Callable[..., dict], step: Callable[[], None], cfg: ProfileConfig, device: torch.device,
                  warm: int) -> list[dict]:
    """Warm up, time ``cfg.latency_iters`` batch-1 steps one by one; the p50, p90 and peak-memory rows."""
    reset_peak(device)
    for _ in range(warm):
        step()
    sync(device)
    if device.type == "cuda":  # one pair of CUDA events per iteration: device time, no host sync inside the loop
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(cfg.latency_iters)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(cfg.latency_iters)]
        for s, e in zip(starts, ends, strict=True):
            s.record()
            step()
            e.record()
        torch.cuda.synchronize(device)
        times = [s.elapsed_time(e) for s, e in zip(starts, ends, strict=True)]
        timer = "cuda_events"
    else:
        times = time_ms(step, 0, cfg.latency_iters, device)
        timer = "perf_counter"
    p50, p90 = _percentiles(times)
    mem, mem_kind = peak_mem_mib(device)
    return [
        row("latency_ms_p50", p50, "latency", 1, timer=timer),
        row("latency_ms_p90", p90, "latency", 1, timer=timer),
        row("peak_mem_mib", mem, "latency", 1, mem_kind=mem_kind),
    ]


def _throughput_rows(row: Callable[..., dict], step: Callable[[], None], cfg: ProfileConfig, device: torch.device,
                     warm: int, batch: int, input_kind: str, gmacs: float, dev_name: str) -> list[dict]:
    """Warm up, time ``cfg.iters`` steps at ``batch``; the throughput, peak-memory and (GPU) MFU rows."""
    reset_peak(device)
    for _ in range(warm):
        step()
    sync(device)  # one synchronise before and one after the timed iterations
    t0 = time.perf_counter()
    for _ in range(cfg.iters):
        step()
    sync(device)
    seconds = time.perf_counter() - t0
    tp = batch * cfg.iters / seconds
    metric = THROUGHPUT_METRIC[input_kind]
    mem, mem_kind = peak_mem_mib(device)
    rows = [
        row(metric, tp, "throughput", batch, unit=THROUGHPUT_UNIT[metric], timer="perf_counter"),
        row("peak_mem_mib", mem, "throughput", batch, mem_kind=mem_kind),
    ]
    peak = peak_tflops(dev_name, cfg.amp, cfg.tf32) if device.type == "cuda" else None
    if peak is not None:
        factor = 3 if cfg.train else 1  # a training step: forward + backward ~ 3 forwards
        achieved = tp * 2 * gmacs * 1e9 * factor
        key, kind, tflops = peak
        rows.append(row("mfu", achieved / (tflops * 1e12), "throughput", batch, unit="fraction",
                        peak_tflops=tflops, peak_source=f"{key} dense {kind}",
                        flops_basis=f"{2 * factor} x gmacs per sample"))
    return rows


# ----------------------------------------------------------------------------------------------------------------------
class ProfileOOM(RuntimeError):
    """A measuring process ran out of memory."""


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` means "out of memory" (CUDA, the CPU allocator, or a measuring process's report)."""
    if isinstance(exc, (ProfileOOM, torch.OutOfMemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


Runner = Callable[[ProfileConfig, Job, int], list[dict]]


def run_inline(cfg: ProfileConfig, job: Job, batch: int) -> list[dict]:
    """Measure ``job`` in this process (``isolate = False``), then free what it left behind."""
    try:
        return measure_job(cfg, job, batch, "inline")
    finally:
        if cfg.compile:
            torch._dynamo.reset()
        gc.collect()
        if cfg.on_cuda and torch.cuda.is_available():
            torch.cuda.empty_cache()


_CHILD = "import sys; from dtn_bench.profile.measure import child_main; sys.exit(child_main(sys.argv[1:]))"


def run_subprocess(cfg: ProfileConfig, job: Job, batch: int) -> list[dict]:
    """Measure ``job`` in a fresh Python process; its rows come back through a JSON file.

    Raises:
        ProfileOOM: the process ran out of memory (or was killed by SIGKILL, as the kernel's OOM killer does).
        DTNBenchError: it failed otherwise (one line: what failed and the last line of its report).
    """
    where = f"profile {job.model} / {job.norm} at batch {batch}"
    with tempfile.TemporaryDirectory(prefix="dtn-bench-profile-") as tmp:
        spec, result = Path(tmp) / "job.json", Path(tmp) / "result.json"
        spec.write_text(json.dumps({"config": cfg.as_dict(), "job": asdict(job), "batch": batch}))
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(spec), str(result)], capture_output=True,
                              text=True, check=False)
        data = json.loads(result.read_text()) if result.exists() else None
    if data is None:
        if proc.returncode == -signal.SIGKILL:
            raise ProfileOOM(f"{where}: the measuring process was killed (SIGKILL), taken as out of memory")
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        tail = lines[-1] if lines else "no output"
        raise DTNBenchError(f"{where}: the measuring process exited with code {proc.returncode}: {tail}")
    if data["status"] == "oom":
        raise ProfileOOM(data["message"])
    if data["status"] != "ok":
        raise DTNBenchError(f"{where}: {data['message']}")
    return data["rows"]


def child_main(argv: list[str]) -> int:
    """Entry point of a measuring process: ``JOB_JSON RESULT_JSON``; always writes a result unless killed."""
    import traceback

    spec, result = argv
    data = json.loads(Path(spec).read_text())
    cfg, job = config_from_dict(data["config"]), Job(**data["job"])
    try:
        out = {"status": "ok", "rows": measure_job(cfg, job, int(data["batch"]), "process")}
    except Exception as e:  # reported to the parent, which decides (halve the batch, or a one-line error)
        message = " ".join(str(e).split())
        if is_oom(e):
            out = {"status": "oom", "message": message[:500]}
        elif isinstance(e, DTNBenchError):
            out = {"status": "error", "message": message}
        else:
            traceback.print_exc()
            out = {"status": "error", "message": f"{type(e).__name__}: {message[:500]} (--no-isolate --debug for the "
                                                 "traceback)"}
    Path(result).write_text(json.dumps(out))
    return 0


@dataclass(frozen=True)
class Outcome:
    """What :func:`run_with_halving` did.

    The rows (``None`` if even the smallest batch ran out of memory), the batch that ran (or the last one tried) and
    the batches that ran out of memory.
    """

    rows: list[dict] | None
    batch: int
    oom_batches: tuple[int, ...]


def run_with_halving(cfg: ProfileConfig, job: Job, runner: Runner) -> Outcome:
    """Run ``job``; on out-of-memory halve the batch and retry (down to 1) when ``cfg.oom_halving`` is on."""
    batch = job.batch
    failed: list[int] = []
    while True:
        try:
            return Outcome(runner(cfg, job, batch), batch, tuple(failed))
        except Exception as e:
            if not is_oom(e):
                raise
            failed.append(batch)
            if not cfg.oom_halving or batch == 1:
                return Outcome(None, batch, tuple(failed))
            batch = max(1, batch // 2)


def job_key(job: Job) -> tuple[str, str, str, int]:
    """``(model, norm, phase, batch_size)`` of the rows that show ``job`` finished (to skip it on resume)."""
    return (job.model, job.norm, "throughput" if job.throughput else "latency", job.batch if job.throughput else 1)


def run(cfg: ProfileConfig, runner: Runner | None = None, done: set | None = None
        ) -> Iterator[tuple[str, list[dict]]]:
    """Run every job of ``cfg``; yields ``(label, rows)`` as each finishes (for append-as-you-go).

    A job that runs out of memory at every batch yields no rows and a label ending in ``skipped``.

    Args:
        cfg: the run's settings.
        runner: measures one job at one batch (default: :func:`run_subprocess` when ``cfg.isolate``, else
            :func:`run_inline`).
        done: :func:`job_key` values of jobs already finished (a resumed run); they yield ``(label, [])``.
    """
    cfg.validate()
    if runner is None:
        runner = run_subprocess if cfg.isolate else run_inline
    for job in plan(cfg):
        if done and job_key(job) in done:
            yield f"{job.label}: done before", []
            continue
        outcome = run_with_halving(cfg, job, runner)
        if outcome.rows is None:
            tried = ", ".join(map(str, outcome.oom_batches))
            yield f"{job.label}: out of memory at batch {tried}; skipped", []
        elif outcome.batch != job.batch:
            yield f"{job.label} (out of memory; ran at batch {outcome.batch})", outcome.rows
        else:
            yield job.label, outcome.rows
