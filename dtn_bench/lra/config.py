"""Settings of a ListOps training run and the learning-rate schedules.

A run trains every ``model x norm x seed`` of a :class:`ListOpsConfig`; presets live in ``suites/lra-listops.yaml``
and CLI flags override their fields.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from dtn_bench.errors import DTNBenchError

SUITE = "lra-listops"
MODELS = ("transformer", "bigbird", "reformer")
SCHEDULES = ("lra", "linear")
PRECISIONS = ("auto", "fp32", "bf16")


def lra_lr(step: int, base: float, warmup: int) -> float:
    """The official LRA schedule, ``base * min(1, t / warmup) / sqrt(max(t, warmup))``, for the ``t``-th update.

    ``t = step + 1`` counts updates from 1 (``step`` is 0-based), so the first update does not have a zero rate.
    With the LRA values (``base`` 0.05, ``warmup`` 1000) the peak is ``0.05 / sqrt(1000) = 1.58e-3`` at ``t = 1000``.
    """
    t = step + 1
    w = max(warmup, 1)
    return base * min(1.0, t / w) / math.sqrt(max(t, w))


def linear_lr(step: int, peak: float, warmup: int, total: int) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` updates, then linear decay to 0 at update ``total``.

    ``lr(t) = peak * min(t / warmup, (total - t) / (total - warmup))`` with ``t = step + 1``, clipped at 0.
    """
    t = step + 1
    up = t / warmup if warmup > 0 else 1.0
    down = (total - t) / (total - warmup) if total > warmup else 1.0
    return peak * max(0.0, min(1.0, up, down))


@dataclass(frozen=True)
class ListOpsConfig:
    """One ListOps experiment: data, model, optimisation and evaluation settings.

    Data: ``data_dir`` (a folder of ``basic_*.tsv``) or, when it is ``None``, data generated from the ``gen_*``
    fields into the cache on first use. ``max_len`` counts a sequence's own tokens (no CLS); ``len_policy`` is
    ``error`` or ``truncate`` for longer ones. Batches are padded to ``max_len`` (LRA's fixed shapes: BigBird's random
    blocks and the Reformer's chunks depend on the padded length).

    Optimisation: AdamW (``beta1``, ``beta2``, ``adam_eps``, decoupled ``weight_decay`` on every parameter) with
    schedule ``lra`` (:func:`lra_lr`, ``lr`` is the base factor, 0.05 in LRA) or ``linear`` (:func:`linear_lr`, ``lr``
    is the peak); ``clip_grad`` > 0 clips the global gradient norm. ``batch`` is the global batch (split over
    processes). Every ``eval_every`` steps: validation accuracy and loss (on the first ``val_limit`` validation
    samples when set) and the ``last`` checkpoint; the ``best`` checkpoint keeps the best validation accuracy.
    """

    models: tuple[str, ...] = MODELS
    norms: tuple[str, ...] = ("layernorm", "dtn")
    seeds: tuple[int, ...] = (0,)
    # data
    data_dir: str | None = None
    gen_train: int = 96_000
    gen_val: int = 2_000
    gen_test: int = 2_000
    gen_seed: int = 0
    gen_min_length: int = 500
    gen_max_length: int = 2_000
    gen_max_depth: int = 10
    gen_max_args: int = 10
    max_len: int = 2_000
    len_policy: str = "error"
    # model
    dim: int = 512
    heads: int = 8
    depth: int = 4
    mlp_dim: int = 1024
    pooling: str = "cls"
    positions: str = "sinusoidal"
    dropout: float = 0.1
    attn_dropout: float = 0.1
    bigbird_block: int = 64
    n_hashes: int = 1
    n_buckets: int = 10
    lra_quirks: bool = False
    # optimisation
    batch: int = 32
    steps: int = 5_000
    lr: float = 0.05
    schedule: str = "lra"
    warmup: int = 1_000
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.98
    adam_eps: float = 1e-9
    clip_grad: float = 0.0
    # evaluation
    eval_every: int = 500
    eval_batch: int = 64
    val_limit: int | None = None
    # where and how
    device: str = "auto"
    precision: str = "auto"
    world_size: int = 1
    preset: str = "lra"

    def validate(self) -> None:
        """One-line :class:`DTNBenchError` for any bad field (names checked against the registries)."""
        from dtn_bench.norms import NORMS
        from dtn_bench.sequence.encoder import ATTENTIONS

        for name in ("models", "norms", "seeds"):
            if not getattr(self, name):
                raise DTNBenchError(f"lra listops: --{name} is empty")
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise DTNBenchError(f"lra listops: --{name} repeats a value: {', '.join(map(str, values))}")
        for m in self.models:
            ATTENTIONS.get(m)
        for n in self.norms:
            NORMS.get(n)
        positive = ("gen_val", "gen_test", "max_len", "dim", "heads", "depth", "mlp_dim", "batch", "steps",
                    "eval_every", "eval_batch", "world_size", "n_hashes", "bigbird_block")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise DTNBenchError(f"lra listops: {name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.dim % self.heads:
            raise DTNBenchError(f"lra listops: dim {self.dim} is not divisible by heads {self.heads}")
        if self.schedule not in SCHEDULES:
            raise DTNBenchError(f"lra listops: schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.precision not in PRECISIONS:
            raise DTNBenchError(f"lra listops: precision must be one of {', '.join(PRECISIONS)}, "
                                f"got {self.precision!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise DTNBenchError(f"lra listops: device must be auto, cpu or cuda, got {self.device!r}")
        if self.pooling not in ("cls", "mean"):
            raise DTNBenchError(f"lra listops: pooling must be cls or mean, got {self.pooling!r}")
        if self.positions not in ("sinusoidal", "learned"):
            raise DTNBenchError(f"lra listops: positions must be sinusoidal or learned, got {self.positions!r}")
        if self.len_policy not in ("error", "truncate"):
            raise DTNBenchError(f"lra listops: len-policy must be error or truncate, got {self.len_policy!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise DTNBenchError(f"lra listops: lr must be a positive number, got {self.lr}")
        if self.warmup < 0 or self.weight_decay < 0 or self.clip_grad < 0:
            raise DTNBenchError("lra listops: warmup, weight-decay and clip-grad must be >= 0")
        if not (0 <= self.dropout < 1 and 0 <= self.attn_dropout < 1):
            raise DTNBenchError("lra listops: dropout and attn-dropout must be in [0, 1)")
        if self.batch % self.world_size:
            raise DTNBenchError(f"lra listops: batch {self.batch} is not divisible by the {self.world_size} "
                                "processes")
        if self.val_limit is not None and self.val_limit < 1:
            raise DTNBenchError(f"lra listops: val-limit must be >= 1, got {self.val_limit}")
        if self.data_dir is None and self.gen_train < self.batch:
            raise DTNBenchError(f"lra listops: {self.gen_train} training samples are fewer than a batch "
                                f"({self.batch})")

    def generator_args(self) -> dict[str, int]:
        """Arguments of :func:`dtn_bench.data.listops.generate` for the generated data."""
        return {"train": self.gen_train, "val": self.gen_val, "test": self.gen_test, "seed": self.gen_seed,
                "min_length": self.gen_min_length, "max_length": self.gen_max_length,
                "max_depth": self.gen_max_depth, "max_args": self.gen_max_args}

    def attention_kwargs(self, model: str) -> dict:
        """Constructor arguments of the attention ``model``."""
        if model == "bigbird":
            return {"block": self.bigbird_block}
        if model == "reformer":
            return {"n_hashes": self.n_hashes, "n_buckets": self.n_buckets, "lra_quirks": self.lra_quirks}
        return {}

    def lr_at(self, step: int) -> float:
        """Learning rate of the 0-based update ``step``."""
        if self.schedule == "lra":
            return lra_lr(step, self.lr, self.warmup)
        return linear_lr(step, self.lr, self.warmup, self.steps)

    def as_dict(self) -> dict:
        return asdict(self)

    def run_settings(self) -> dict:
        """The fields that determine one model's training (all but the lists of models, norms and seeds)."""
        d = self.as_dict()
        for k in ("models", "norms", "seeds"):
            d.pop(k)
        return d
