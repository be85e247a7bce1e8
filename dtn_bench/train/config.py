"""The settings of one training run (a recipe), declared once as the fields of :class:`TrainConfig`.

Recipes are the presets of ``suites/train.yaml`` (``authors``, ``deit``, ``cifar``, ``tiny-imagenet``, ``quick``);
one precedence: the dataclass defaults < the recipe < the settings given (``--model``, ``--set key=value``, keyword
arguments). Every field is a setting a recipe may set and a user may override; values are checked against the field
types (:mod:`dtn_bench.fields`) and against each other (:meth:`TrainConfig.validate`).

The field names follow timm's ``train.py`` where it has the setting (``lr_base``, ``lr_base_size``, ``aa``,
``reprob``, ``remode``, ``recount``, ``mixup``, ``cutmix``, ``smoothing``, ``model_ema_decay``, ``aug_repeats``,
...), so a recipe reads like a timm command line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from dtn_bench.errors import DTNBenchError
from dtn_bench.runner import PresetConfig

SUITE = "train"
DATASETS = ("imagenet", "cifar10", "cifar100", "tiny-imagenet", "digits", "demo")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULES = ("cosine", "tanh", "step", "multistep", "poly", "plateau")
CROP_MODES = ("rrc", "rkrc", "rkrr")
MIXUP_MODES = ("batch", "pair", "elem")
ERASE_MODES = ("const", "rand", "pixel")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "random")
MODEL_KWARGS = {"img_size": "img_size", "patch_size": "patch_size", "embed_dim": "embed_dim", "depth": "depth",
                "num_heads": "num_heads", "local_up_to_layer": "local_up_to_layer", "drop_path": "drop_path_rate",
                "dropout": "drop_rate"}
"""Config field -> keyword of the model constructor (``None`` fields are not passed: the model's own value)."""
HOW_KEYS = ("device", "workers", "threads", "eval_batch", "diag_images")
"""Settings that say how to run, not what to train: shown and recorded, free to differ on ``--resume``."""


@dataclass(frozen=True)
class TrainConfig(PresetConfig):
    """One training run: model, data, optimisation, augmentation, EMA and where it runs.

    Model: ``model`` (a zoo name such as ``vit_s_dtn``, a 32 / 64 px model ``vit_cifar_t_*`` / ``vit_tiny_t_*``, or
    any timm model; ``norm`` puts a registered normaliser into it, as everywhere in dtn-bench; ``placement`` ``pre`` /
    ``post`` / ``peri`` puts it in that slot of every block, :mod:`dtn_bench.placement`), its shape fields
    (``img_size`` ... ``local_up_to_layer``; ``None``: the model's own) and ``drop_path`` / ``dropout``.
    ``num_classes``: ``None`` takes the dataset's.

    Data: ``dataset`` (``imagenet`` folders, ``cifar10`` / ``cifar100`` python pickles, ``tiny-imagenet``, or the
    built-in ``digits`` / ``demo`` sets, which need no ``data_dir``); see :mod:`dtn_bench.train.data`.

    Optimisation: ``epochs`` (+ ``cooldown_epochs`` at ``min_lr``) of ``batch`` images (global, split over the
    processes); optimiser ``opt`` (timm's ``create_optimizer_v2``: biases and 1-D parameters get no weight decay) at
    ``lr``, or, when ``lr`` is ``None``, ``lr_base * batch / lr_base_size`` (the linear scaling of DeiT and the DTN
    authors); timm scheduler ``sched`` with ``warmup_epochs`` from ``warmup_lr`` down to ``min_lr``, stepped per epoch
    (``sched_on_updates``: per update); ``clip_grad`` (``None``: off).

    Loss and augmentation (timm's ``create_transform``, ``Mixup``, losses): ``smoothing``, RandAugment ``aa``,
    ``color_jitter`` (timm ignores it when ``aa`` is set), ``train_interpolation``, the random crop
    (``train_crop_mode``, ``scale``, ``ratio``), ``hflip``, random erasing (``reprob``, ``remode``, ``recount``),
    mixup / cutmix (``mixup`` and ``cutmix`` alphas, 0: off; ``mixup_prob``, ``mixup_switch_prob``, ``mixup_mode``),
    repeated augmentation (``repeated_aug``, ``aug_repeats``: timm's ``RepeatAugSampler``). Evaluation uses the
    model's own data config (mean, std, crop fraction, interpolation), as the evaluation suites do.

    EMA (timm's ``ModelEmaV3``): ``model_ema``, ``model_ema_decay``, ``model_ema_warmup``.

    Where and how: ``seed``, ``device`` (``auto``, ``cpu``, ``cuda``), ``precision`` (``auto``: bf16 autocast on
    GPUs and fp32 on the CPU; ``fp16`` uses timm's ``NativeScaler``), ``channels_last`` and ``compile`` (GPUs only),
    ``workers`` (data-loading processes), ``threads`` (torch threads of the process; 0: torch's default; a resumed
    run is bit-identical only with the same number), ``eval_batch`` (``None``: ``batch``), ``diag_images``
    (validation images the per-epoch diagnostics see), ``world_size`` (processes of the job; taken from torchrun),
    ``recipe`` (the preset's name).
    """

    SUITE = SUITE

    # model
    model: str = "vit_cifar_t_ln"
    norm: str | None = None
    placement: str = "pre"
    num_classes: int | None = None
    img_size: int | None = None
    patch_size: int | None = None
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    local_up_to_layer: int | None = None
    drop_path: float = 0.0
    dropout: float = 0.0
    # data
    dataset: str = "digits"
    data_dir: str | None = None
    # optimisation
    epochs: int = 300
    cooldown_epochs: int = 0
    batch: int = 1024
    opt: str = "adamw"
    lr: float | None = None
    lr_base: float = 5e-4
    lr_base_size: int = 512
    weight_decay: float = 0.05
    opt_eps: float | None = None
    opt_betas: tuple[float, ...] | None = None
    momentum: float = 0.9
    clip_grad: float | None = None
    sched: str = "cosine"
    sched_on_updates: bool = False
    warmup_epochs: int = 5
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    # loss and augmentation
    smoothing: float = 0.1
    aa: str | None = "rand-m9-mstd0.5-inc1"
    color_jitter: float = 0.4
    train_interpolation: str = "bicubic"
    train_crop_mode: str = "rrc"
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (0.75, 1.3333333333333333)
    hflip: float = 0.5
    reprob: float = 0.25
    remode: str = "pixel"
    recount: int = 1
    mixup: float = 0.8
    cutmix: float = 1.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    mixup_mode: str = "batch"
    repeated_aug: bool = True
    aug_repeats: int = 3
    # EMA
    model_ema: bool = True
    model_ema_decay: float = 0.99996
    model_ema_warmup: bool = False
    # where and how
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = False
    compile: bool = False
    workers: int = 0
    threads: int = 0
    eval_batch: int | None = None
    diag_images: int = 64
    world_size: int = 1
    recipe: str = "quick"

    # --------------------------------------------------------------------------------------------------------------
    @classmethod
    def resolve(cls, recipe: str | None, overrides: Mapping[str, Any] | None = None) -> tuple[TrainConfig, dict]:
        """The config of ``recipe`` with ``overrides`` over it, and where each setting came from.

        One precedence: the dataclass defaults < the recipe (``suites/train.yaml``) < ``overrides`` (every item
        counts, ``None`` included: ``--set aa=none`` turns RandAugment off). Values are checked against the field
        types (an int is accepted where a float is declared; lists become tuples).

        Returns:
            ``(config, sources)``: ``sources[field]`` is ``default``, ``recipe`` or ``set``.

        Raises:
            DTNBenchError: an unknown recipe or key (with the near matches), a value of the wrong type, or settings
                that :meth:`validate` refuses.
        """
        from dtn_bench.fields import check_values
        from dtn_bench.suites import load_preset

        sources = {f.name: "default" for f in fields(cls)}
        values: dict[str, Any] = {}
        if recipe is not None:
            values = check_values(cls, load_preset(SUITE, recipe), f"suites/{SUITE}.yaml recipe {recipe}")
            values["recipe"] = recipe
            sources.update({k: "recipe" for k in values})
        given = check_values(cls, dict(overrides or {}), "train")
        values.update(given)
        sources.update({k: "set" for k in given})
        cfg = cls(**values)
        cfg.validate()
        return cfg, sources

    @classmethod
    def from_preset(cls, name: str | None, **flags: Any) -> TrainConfig:
        """:meth:`resolve` with the flags that are not ``None`` (the runner's convention)."""
        return cls.resolve(name, {k: v for k, v in flags.items() if v is not None})[0]

    @property
    def scaled_lr(self) -> float:
        """The learning rate used: ``lr``, or ``lr_base * batch / lr_base_size`` when ``lr`` is ``None``."""
        return self.lr if self.lr is not None else self.lr_base * self.batch / self.lr_base_size

    @property
    def mixup_active(self) -> bool:
        """Whether mixup or cutmix is applied (then the loss takes soft targets)."""
        return self.mixup > 0 or self.cutmix > 0

    @property
    def local_batch(self) -> int:
        """Images per process and step."""
        return self.batch // max(self.world_size, 1)

    def model_kwargs(self, num_classes: int) -> dict[str, Any]:
        """Keywords for :func:`dtn_bench.models.small.create` (``num_classes`` and every shape field that is set)."""
        out: dict[str, Any] = {"num_classes": num_classes}
        for name, kw in MODEL_KWARGS.items():
            value = getattr(self, name)
            if value is not None and not (name in ("drop_path", "dropout") and value == 0):
                out[kw] = value
        return out

    def training_settings(self) -> dict[str, Any]:
        """Every setting that can change the trained weights (all but :data:`HOW_KEYS`)."""
        return {k: v for k, v in self.as_dict().items() if k not in HOW_KEYS}

    # --------------------------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """One-line :class:`DTNBenchError` for a bad value or settings that cannot work together."""
        from dtn_bench.fields import check_values

        check_values(type(self), {f.name: getattr(self, f.name) for f in fields(self)}, f"train recipe {self.recipe}")
        self._check_names()
        self._check_counts()
        self._check_ranges()
        self._check_choices()
        self._check_batch()

    def _check_names(self) -> None:
        from dtn_bench.norms import NORMS
        from dtn_bench.placement import check_placement

        if self.norm is not None:
            NORMS.get(self.norm)
        check_placement(self.placement, "train: placement")
        if self.dataset not in DATASETS:
            from dtn_bench.checks import did_you_mean

            raise DTNBenchError(f"train: unknown dataset {self.dataset!r}{did_you_mean(self.dataset, DATASETS)}")
        if self.dataset in ("digits", "demo") and self.data_dir is not None:
            raise DTNBenchError(f"train: dataset {self.dataset} is built in; drop data_dir ({self.data_dir})")

    def _check_counts(self) -> None:
        from dtn_bench.checks import check_positive

        check_positive("train", epochs=self.epochs, batch=self.batch, lr_base_size=self.lr_base_size,
                       aug_repeats=self.aug_repeats, recount=self.recount, world_size=self.world_size,
                       diag_images=self.diag_images, num_classes=self.num_classes, img_size=self.img_size,
                       patch_size=self.patch_size, embed_dim=self.embed_dim, depth=self.depth,
                       num_heads=self.num_heads, eval_batch=self.eval_batch, lr=self.lr, lr_base=self.lr_base)
        for name in ("cooldown_epochs", "warmup_epochs", "workers", "threads", "local_up_to_layer"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise DTNBenchError(f"train: {name} must be >= 0, got {value}")

    def _check_ranges(self) -> None:
        bounds = [(name, getattr(self, name), 0, 1, True) for name in ("hflip", "reprob", "mixup_prob",
                                                                       "mixup_switch_prob")]
        bounds += [(name, getattr(self, name), 0, 1, False) for name in ("smoothing", "drop_path", "dropout")]
        bounds += [(name, getattr(self, name), 0, math.inf, True) for name in
                   ("weight_decay", "warmup_lr", "min_lr", "color_jitter", "mixup", "cutmix", "momentum")]
        for name, value, lo, hi, closed in bounds:
            if not (lo <= value <= hi if closed else lo <= value < hi):
                what = f">= {lo}" if hi == math.inf else f"in [{lo}, {hi}{']' if closed else ')'}"
                raise DTNBenchError(f"train: {name} must be {what}, got {value}")
        if not 0 < self.model_ema_decay < 1:
            raise DTNBenchError(f"train: model_ema_decay must be in (0, 1), got {self.model_ema_decay}")
        if self.clip_grad is not None and not self.clip_grad > 0:
            raise DTNBenchError(f"train: clip_grad must be > 0 (none: off), got {self.clip_grad}")
        lo, hi = self.scale
        if not 0 < lo <= hi <= 1:
            raise DTNBenchError(f"train: scale must be 0 < min <= max <= 1, got {lo},{hi}")
        if not 0 < self.ratio[0] <= self.ratio[1] or not math.isfinite(self.ratio[1]):
            raise DTNBenchError(f"train: ratio must be 0 < min <= max, got {self.ratio[0]},{self.ratio[1]}")

    def _check_choices(self) -> None:
        for name, value, allowed in (("precision", self.precision, PRECISIONS), ("sched", self.sched, SCHEDULES),
                                     ("train_crop_mode", self.train_crop_mode, CROP_MODES),
                                     ("mixup_mode", self.mixup_mode, MIXUP_MODES), ("remode", self.remode, ERASE_MODES),
                                     ("train_interpolation", self.train_interpolation, INTERPOLATIONS)):
            if value not in allowed:
                raise DTNBenchError(f"train: {name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise DTNBenchError(f"train: device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        from timm.optim import list_optimizers

        known = list_optimizers()
        if self.opt.lower() not in known:
            from dtn_bench.checks import did_you_mean

            raise DTNBenchError(f"train: unknown optimizer {self.opt!r}{did_you_mean(self.opt, known)}")

    def _check_batch(self) -> None:
        if self.batch % self.world_size:
            raise DTNBenchError(f"train: batch {self.batch} is not divisible by the {self.world_size} processes")
        if self.mixup_active and self.mixup_mode != "elem" and self.local_batch % 2:
            raise DTNBenchError(f"train: mixup / cutmix need an even batch per process, got {self.local_batch} "
                                "(--set mixup=0 cutmix=0 turns them off)")

    def check_device(self, device) -> None:
        """Refuse what only a GPU makes meaningful on the resolved ``device`` (a one-line error each)."""
        if device.type == "cuda":
            return
        asks = [(self.precision == "fp16", "precision fp16 (a loss scaler for CUDA autocast)"),
                (self.channels_last, "channels_last (a GPU memory layout)"),
                (self.compile, "compile (torch.compile of the training step, GPU only here)")]
        for wanted, what in asks:
            if wanted:
                raise DTNBenchError(f"train: {what} needs a GPU; this run is on {device}. Turn it off with --set "
                                    f"{what.split()[0]}={'fp32' if what.startswith('precision') else 'false'}")

    def autocast_dtype(self, device):
        """The autocast dtype on ``device`` (``None``: fp32)."""
        import torch

        if self.precision == "bf16" or (self.precision == "auto" and device.type == "cuda"):
            return torch.bfloat16
        if self.precision == "fp16":
            return torch.float16
        return None
