"""Settings of a ListOps training run and the learning-rate schedules.

A run trains every ``model x norm x seed`` of a :class:`ListOpsConfig`; presets live in ``suites/lra-listops.yaml``
and :meth:`ListOpsConfig.from_preset` merges the flags given over them (dataclass defaults < preset < flags).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from dtn_bench.data.listops import LRA_SPEC, ListOpsSpec
from dtn_bench.errors import DTNBenchError
from dtn_bench.runner import PresetConfig

SUITE = "lra-listops"
MODELS = ("transformer", "bigbird", "reformer")
SCHEDULES = ("lra", "linear")
PRECISIONS = ("auto", "fp32", "bf16")
SHUFFLES = ("full", "buffer")
GELUS = ("exact", "tanh")
INITS = ("torch", "lra")
BIGBIRD_RANDOM = ("torch", "lra")
MAX_SEED = 2**32 - 1
"""Largest seed of a run: 32 bits, what every generator a run seeds takes (the dropout stream's ``seed * 1000003``
stays inside torch's 64-bit seed)."""


def lra_lr(step: int, base: float, warmup: int, origin: int = 1) -> float:
    """The official LRA schedule, ``base * min(1, t / warmup) / sqrt(max(t, warmup))``, for the ``t``-th update.

    ``t = step + origin`` with ``step`` 0-based. ``origin`` 0 is the official code (the optimiser's step counter
    starts at 0: the first update has rate 0, the last of 5000 has ``t = 4999``); ``origin`` 1 counts updates from 1,
    so the first update does not have a zero rate. With the LRA values (``base`` 0.05, ``warmup`` 1000) the peak is
    ``0.05 / sqrt(1000) = 1.58e-3`` at ``t = 1000``.
    """
    t = step + origin
    w = max(warmup, 1)
    return base * min(1.0, t / w) / math.sqrt(max(t, w))


def linear_lr(step: int, peak: float, warmup: int, total: int, origin: int = 1) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` updates, then linear decay to 0 at update ``total``.

    ``lr(t) = peak * min(t / warmup, (total - t) / (total - warmup))`` with ``t = step + origin``, clipped at 0.
    """
    t = step + origin
    up = t / warmup if warmup > 0 else 1.0
    down = (total - t) / (total - warmup) if total > warmup else 1.0
    return peak * max(0.0, min(1.0, up, down))


@dataclass(frozen=True)
class ListOpsConfig(PresetConfig):
    """One ListOps experiment: data, model, optimisation and evaluation settings.

    Made with ``ListOpsConfig.from_preset(name, **flags)``: the dataclass defaults, the preset ``name`` of
    ``suites/lra-listops.yaml`` over them, the flags given (not ``None``) over that, validated.

    Data: ``data_dir`` (a folder of ``basic_*.tsv``) or, when it is ``None``, data generated from the ``gen_*``
    fields (:meth:`generator_spec`; their defaults are :data:`~dtn_bench.data.listops.LRA_SPEC`) into the cache on
    first use. ``max_len`` counts a sequence's own tokens (no CLS); ``len_policy`` is
    ``error`` or ``truncate`` for longer ones. Batches are padded to ``max_len`` (LRA's fixed shapes: BigBird's random
    blocks and the Reformer's chunks depend on the padded length).

    Optimisation: AdamW (``beta1``, ``beta2``, ``adam_eps``, decoupled ``weight_decay`` on every parameter) with
    schedule ``lra`` (:func:`lra_lr`, ``lr`` is the base factor, 0.05 in LRA) or ``linear`` (:func:`linear_lr`, ``lr``
    is the peak); ``clip_grad`` > 0 clips the global gradient norm. ``batch`` is the global batch (split over
    processes). Every ``eval_every`` steps: validation accuracy and loss (on the first ``val_limit`` validation
    samples when set) and the ``last`` checkpoint; the ``best`` checkpoint keeps the best validation accuracy.

    Choices where the official LRA code (google-research/long-range-arena) differs from what this suite did before;
    each default keeps the earlier behaviour, the ``lra`` and ``lra-paper`` presets set the official value
    (:data:`OFFICIAL`):

    - ``lr_step_origin``: the schedule's ``t`` is ``step + lr_step_origin`` (``step`` 0-based). 1: the first update
      has a non-zero rate; 0 (official): the optimiser's step counter, ``lr(0) = 0``.
    - ``eval_every`` / ``val_limit``: official 50 and ``None`` (the full validation set).
    - ``precision``: ``auto`` (bf16 autocast on GPUs, fp32 on the CPU), ``fp32`` (official) or ``bf16``.
    - ``shuffle``: ``full`` (a fresh seeded permutation per epoch) or ``buffer`` (official: tf.data-style shuffle
      buffers applied one after the other over the file order, reshuffled every epoch); ``shuffle_buffer`` lists
      their sizes, official ``(10000, 1024)``: the CSV reader's default row buffer, then ``shuffle(1024)``.
    - ``gelu``: ``exact`` (erf) or ``tanh`` (official ``jax.nn.gelu``, the tanh approximation).
    - ``ln_eps``: epsilon of the LayerNorm slots (1e-5 torch, official 1e-6); other normalisers keep their own.
    - ``init``: ``torch`` (PyTorch's defaults for the linear layers, a frozen zero padding embedding) or ``lra``
      (official: Q/K/V/O and MLP kernels xavier-uniform, MLP biases N(0, 1e-6), classifier head lecun-normal with zero
      biases, and the padding row an ordinary trained N(0, 1) embedding row).
    - ``bigbird_random``: BigBird's random blocks, ``torch`` (from a torch generator seeded with the layer, drawn from
      the blocks inside the first 1024 tokens outside the row's window) or ``lra`` (official: the candidates of
      ``get_block_rand_mask``, whose query blocks n-3 and n-2 draw from a shorter range, drawn with numpy's legacy
      generator seeded with the layer: the official blocks exactly).
    - ``sparse_attn_dropout``: apply ``attn_dropout`` in BigBird and the Reformer too (True) or only in the
      Transformer's dense attention (False, official: the sparse and LSH paths have no attention dropout).
    - ``placement``: where the normalisers sit in every block, ``pre`` (``x + F(N(x))``, the LRA encoder's),
      ``post`` or ``peri`` (:mod:`dtn_bench.placement`); the official code is pre.
    - ``lra_quirks``: the Reformer layer of the official code (see
      :class:`~dtn_bench.sequence.attention.LSHAttention`); False is the corrected layer.

    Where and how: ``device`` (``auto``, ``cpu``, ``cuda``), ``precision``, ``world_size`` (the job's number of
    processes; :func:`dtn_bench.lra.listops` and the CLI take it from torchrun's ``WORLD_SIZE``), ``tune_malloc``
    (keep freed memory on the CPU, :func:`~dtn_bench.timing.keep_freed_memory`; a process setting, so not part of
    :meth:`as_dict`: the run records whether it took effect as ``malloc_tuned``), ``workers`` (on the CPU in one
    process: how many ``(model, norm, seed)`` runs train side by side, each in its own process with ``threads //
    workers`` torch threads; 0 is one per torch thread there and 1 elsewhere; it changes a run's tokens/s and, through
    its threads, at most the rounding of its sums, so it is recorded but is not one of the :meth:`run_settings`),
    ``flush_denormal`` (denormal floats flushed to zero on the CPU, :func:`~dtn_bench.timing.flush_denormals`: a
    training setting, as it can change results below fp32's normal range).
    """

    SUITE = SUITE

    models: tuple[str, ...] = MODELS
    norms: tuple[str, ...] = ("layernorm", "dtn")
    seeds: tuple[int, ...] = (0,)
    # data
    data_dir: str | None = None
    gen_train: int = LRA_SPEC.train
    gen_val: int = LRA_SPEC.val
    gen_test: int = LRA_SPEC.test
    gen_seed: int = LRA_SPEC.seed
    gen_min_length: int = LRA_SPEC.min_length
    gen_max_length: int = LRA_SPEC.max_length
    gen_max_depth: int = LRA_SPEC.max_depth
    gen_max_args: int = LRA_SPEC.max_args
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
    bigbird_random: str = "torch"
    n_hashes: int = 1
    n_buckets: int = 10
    lra_quirks: bool = False
    sparse_attn_dropout: bool = True
    gelu: str = "exact"
    ln_eps: float = 1e-5
    init: str = "torch"
    placement: str = "pre"
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
    lr_step_origin: int = 1
    shuffle: str = "full"
    shuffle_buffer: tuple[int, ...] = (10_000, 1_024)
    # evaluation
    eval_every: int = 500
    eval_batch: int = 64
    val_limit: int | None = None
    # where and how
    device: str = "auto"
    precision: str = "auto"
    world_size: int = 1
    preset: str = "lra"
    tune_malloc: bool = True
    workers: int = 1
    flush_denormal: bool = True

    def validate(self) -> None:
        """One-line :class:`DTNBenchError` for any bad field (names checked against the registries)."""
        self._check_lists()
        self._check_sizes()
        self._check_modes()
        self._check_optimiser()
        self._check_batches()
        self._check_official_choices()

    def _check_lists(self) -> None:
        from dtn_bench.norms import NORMS
        from dtn_bench.sequence.encoder import ATTENTIONS
        from dtn_bench.stats import check_unique

        for name in ("models", "norms", "seeds"):
            if not getattr(self, name):
                raise DTNBenchError(f"lra listops: --{name} is empty")
            try:
                check_unique(getattr(self, name), name[:-1])
            except ValueError as e:
                raise DTNBenchError(f"lra listops: --{name} {','.join(map(str, getattr(self, name)))}: {e}") from None
        for seed in self.seeds:
            if not 0 <= seed <= MAX_SEED:
                raise DTNBenchError(f"lra listops: --seeds {seed}: a seed must be in 0..{MAX_SEED} (numpy's and "
                                    "torch's generators are seeded with it)")
        for m in self.models:
            ATTENTIONS.get(m)
        for n in self.norms:
            NORMS.get(n)

    def _check_sizes(self) -> None:
        positive = ("gen_val", "gen_test", "max_len", "dim", "heads", "depth", "mlp_dim", "batch", "steps",
                    "eval_every", "eval_batch", "world_size", "n_hashes", "bigbird_block")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise DTNBenchError(f"lra listops: {name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.dim % self.heads:
            raise DTNBenchError(f"lra listops: dim {self.dim} is not divisible by heads {self.heads}")
        if self.workers < 0:
            raise DTNBenchError(f"lra listops: workers must be >= 0 (0: one per torch thread), got {self.workers}")

    def _check_modes(self) -> None:
        if self.schedule not in SCHEDULES:
            raise DTNBenchError(f"lra listops: schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.precision not in PRECISIONS:
            raise DTNBenchError(f"lra listops: precision must be one of {', '.join(PRECISIONS)}, "
                                f"got {self.precision!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise DTNBenchError(f"lra listops: device must be auto, cpu or cuda, got {self.device!r}")
        for flag, value, allowed in (("pooling", self.pooling, ("cls", "mean")),
                                     ("positions", self.positions, ("sinusoidal", "learned")),
                                     ("len-policy", self.len_policy, ("error", "truncate"))):
            if value not in allowed:
                raise DTNBenchError(f"lra listops: {flag} must be {' or '.join(allowed)}, got {value!r}")

    def _check_optimiser(self) -> None:
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise DTNBenchError(f"lra listops: lr must be a positive number, got {self.lr}")
        if self.warmup < 0 or self.weight_decay < 0 or self.clip_grad < 0:
            raise DTNBenchError("lra listops: warmup, weight-decay and clip-grad must be >= 0")
        if not (0 <= self.dropout < 1 and 0 <= self.attn_dropout < 1):
            raise DTNBenchError("lra listops: dropout and attn-dropout must be in [0, 1)")

    def _check_batches(self) -> None:
        if self.batch % self.world_size:
            raise DTNBenchError(f"lra listops: batch {self.batch} is not divisible by the {self.world_size} "
                                "processes")
        if self.val_limit is not None and self.val_limit < 1:
            raise DTNBenchError(f"lra listops: val-limit must be >= 1, got {self.val_limit}")
        if self.data_dir is None and self.gen_train < self.batch:
            raise DTNBenchError(f"lra listops: {self.gen_train} training samples are fewer than a batch "
                                f"({self.batch})")

    def _check_official_choices(self) -> None:
        for flag, value, allowed in (("shuffle", self.shuffle, SHUFFLES), ("gelu", self.gelu, GELUS),
                                     ("init", self.init, INITS), ("bigbird-random", self.bigbird_random,
                                                                  BIGBIRD_RANDOM)):
            if value not in allowed:
                raise DTNBenchError(f"lra listops: --{flag} must be {' or '.join(allowed)}, got {value!r}")
        if self.lr_step_origin not in (0, 1):
            raise DTNBenchError(f"lra listops: lr-step-origin must be 0 (official) or 1, got {self.lr_step_origin}")
        if not (self.ln_eps > 0 and math.isfinite(self.ln_eps)):
            raise DTNBenchError(f"lra listops: ln-eps must be a positive number, got {self.ln_eps}")
        from dtn_bench.placement import check_placement

        check_placement(self.placement, "lra listops: --placement")
        if not self.shuffle_buffer or any(int(b) < 1 for b in self.shuffle_buffer):
            raise DTNBenchError("lra listops: shuffle-buffer must be one or more sizes >= 1, got "
                                f"{','.join(map(str, self.shuffle_buffer)) or 'nothing'}")

    def generator_spec(self) -> ListOpsSpec:
        """The :class:`~dtn_bench.data.listops.ListOpsSpec` of the generated data (the ``gen_*`` fields)."""
        return ListOpsSpec(**{f.name: getattr(self, f"gen_{f.name}") for f in fields(ListOpsSpec)})

    def attention_kwargs(self, model: str) -> dict:
        """Constructor arguments of the attention ``model``."""
        if model == "bigbird":
            return {"block": self.bigbird_block, "random": self.bigbird_random}
        if model == "reformer":
            return {"n_hashes": self.n_hashes, "n_buckets": self.n_buckets, "lra_quirks": self.lra_quirks}
        return {}

    def attention_dropout(self, model: str) -> float:
        """Attention-probability dropout of ``model``.

        ``attn_dropout``, or 0 for BigBird and the Reformer when ``sparse_attn_dropout`` is off (the official code
        has none there).
        """
        return self.attn_dropout if model == "transformer" or self.sparse_attn_dropout else 0.0

    def shuffle_buffers(self) -> tuple[int, ...] | None:
        """The shuffle-buffer sizes of the training order, or ``None`` for a full permutation per epoch."""
        return tuple(int(b) for b in self.shuffle_buffer) if self.shuffle == "buffer" else None

    def lr_at(self, step: int) -> float:
        """Learning rate of the 0-based update ``step``."""
        if self.schedule == "lra":
            return lra_lr(step, self.lr, self.warmup, self.lr_step_origin)
        return linear_lr(step, self.lr, self.warmup, self.steps, self.lr_step_origin)

    def as_dict(self) -> dict:
        """The settings ``config.json`` records.

        Every field but ``tune_malloc`` (how the process runs; its outcome is recorded as ``malloc_tuned``).
        """
        d = asdict(self)
        d.pop("tune_malloc")
        return d

    def run_settings(self) -> dict:
        """The fields that determine one model's training: all but the lists of models, norms and seeds, and workers."""
        d = self.as_dict()
        for k in ("models", "norms", "seeds", "workers"):
            d.pop(k)
        return d


OFFICIAL: dict[str, object] = {
    "lr_step_origin": 0, "eval_every": 50, "val_limit": None, "precision": "fp32", "shuffle": "buffer",
    "shuffle_buffer": (10_000, 1_024), "gelu": "tanh", "ln_eps": 1e-6, "init": "lra", "bigbird_random": "lra",
    "sparse_attn_dropout": False, "lra_quirks": True,
}
"""The official LRA code's value of every choice where it differs from the suite's earlier behaviour (the
dataclass defaults); the ``lra`` presets set them, the settings table shows them beside a run's values."""


LATER_FIELDS: tuple[str, ...] = ("lr_step_origin", "shuffle", "shuffle_buffer", "gelu", "ln_eps", "init",
                                 "bigbird_random", "sparse_attn_dropout", "placement")
"""Fields added after runs had been recorded; their defaults are the behaviour of those runs."""


def with_defaults(settings: dict) -> dict:
    """``settings`` (a run's ``config.json`` or a checkpoint's settings) with the :data:`LATER_FIELDS` it lacks.

    Each missing field is set to its default (JSON form): a run recorded before a field existed computed exactly that
    default.
    """
    import json

    defaults = json.loads(json.dumps({k: getattr(ListOpsConfig, k) for k in LATER_FIELDS}))
    return {**{k: v for k, v in defaults.items() if k not in settings}, **settings}
