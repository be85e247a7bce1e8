"""The settings of one ``robustness`` run (:class:`RobustnessConfig`) and what each training set is tested on.

Presets are ``suites/robustness.yaml``; one precedence: the dataclass defaults < the preset < the settings given. The
training of every ``(norm, seed)`` is the ``recipe`` of ``suites/train.yaml`` with ``train_settings`` (the preset's,
then the ``--set key=value`` given) over it, and the model, normaliser, seed, data folder and device of this config
(:meth:`RobustnessConfig.train_config`).

Each training set is tested on its matching corruption set (:data:`TARGETS`): CIFAR-10 on CIFAR-10-C, CIFAR-100 on
CIFAR-100-C, Tiny-ImageNet-200 on Tiny-ImageNet-C, ImageNet on ImageNet-C, and the built-in ``digits`` (and ``demo``)
sets on a set written in the CIFAR-10-C format by ``dtn-bench corrupt`` from their test split, upscaled to the model's
32 px (no released set exists for them; tables call it generated and not CIFAR).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from dtn_bench.errors import DTNBenchError
from dtn_bench.metrics import CORRUPTIONS, SEVERITIES
from dtn_bench.runner import PresetConfig

SUITE = "robustness"
REFERENCE = "layernorm"
"""The normaliser every other one is compared with."""
PREFERRED_NORMS = ("layernorm", "dtn", "dyt", "derf")
"""The default normalisers, those of them that are registered (``derf`` once it exists)."""
FIXED_TRAIN_KEYS = ("model", "norm", "seed", "data_dir", "device", "world_size")
"""Training settings this suite sets itself (``--model``, ``--norms``, ``--seeds``, ``--data-dir``, ``--device``)."""
HOW_KEYS = ("workers", "device", "eval_batch")
"""Settings that say how to run, not what to measure: free to differ on ``--resume``."""


def default_norms() -> tuple[str, ...]:
    """:data:`PREFERRED_NORMS` that the normaliser registry holds (computed, never a version check)."""
    from dtn_bench.norms import NORMS

    return tuple(n for n in PREFERRED_NORMS if n in NORMS)


@dataclass(frozen=True)
class Target:
    """What a training set is tested on.

    Attributes:
        dataset: the training set (``TrainConfig.dataset``).
        label: the corruption set's name in tables (``CIFAR-10-C``; ``digits-C`` for the generated digits set).
        format: the ``dtn-bench corrupt --format`` that writes it from the test split.
        evaluation: the ``cifar-c`` dataset it is evaluated as (``cifar10``, ``cifar100``, ``tiny-imagenet``), or
            ``imagenet`` (the ``imagenet-c`` evaluation, AlexNet-normalised mCE).
        size: the image size of the set (the model's input must be that size).
        released: whether a released set exists (else only generated: ``--corrupt-dir`` must be a generated one).
    """

    dataset: str
    label: str
    format: str
    evaluation: str
    size: int
    released: bool = True

    @property
    def layout(self) -> str:
        """``arrays`` (``<corruption>.npy`` + ``labels.npy``) or ``folders`` (``<corruption>/<severity>/<wnid>/``)."""
        return "arrays" if self.format in ("cifar10-c", "cifar100-c") else "folders"


DATA_DIRS = {
    "cifar10": "the CIFAR-10 python pickles, cifar-10-batches-py/ with data_batch_1..5 and test_batch",
    "cifar100": "the CIFAR-100 python pickles, cifar-100-python/ with train and test",
    "tiny-imagenet": "tiny-imagenet-200/ with train/<wnid>/images and val/val_annotations.txt",
    "imagenet": "ImageNet with train/<wnid>/ and val/<wnid>/",
}
"""What ``--data-dir`` must hold for each training set that is not built in."""

TARGETS: dict[str, Target] = {
    "digits": Target("digits", "digits-C", "cifar10-c", "cifar10", 32, released=False),
    "demo": Target("demo", "demo-C", "cifar10-c", "cifar10", 32, released=False),
    "cifar10": Target("cifar10", "CIFAR-10-C", "cifar10-c", "cifar10", 32),
    "cifar100": Target("cifar100", "CIFAR-100-C", "cifar100-c", "cifar100", 32),
    "tiny-imagenet": Target("tiny-imagenet", "Tiny-ImageNet-C", "tiny-imagenet-c", "tiny-imagenet", 64),
    "imagenet": Target("imagenet", "ImageNet-C", "imagenet-c", "imagenet", 224),
}


@dataclass(frozen=True)
class RobustnessConfig(PresetConfig):
    """One robustness study: a model family x normalisers x seeds, trained (or given) and evaluated under shift.

    Attributes:
        model: the model family: a model whose blocks' normaliser each of ``norms`` replaces (``vit_cifar_t_ln``,
            ``vit_tiny_t_ln``, ``vit_s_ln``, or a timm model).
        norms: registered normalisers (default: :func:`default_norms`); LayerNorm is the reference.
        seeds: training seeds (the paired unit of the over-seeds intervals).
        recipe: the training recipe of ``suites/train.yaml``.
        train_settings: training settings over the recipe (``key: value``, fields of
            :class:`~dtn_bench.train.config.TrainConfig`; not those of :data:`FIXED_TRAIN_KEYS`).
        data_dir: the training set's folder (not for the built-in sets); its test split is the clean test set.
        corrupt_dir: the released corruption set (or one ``dtn-bench corrupt`` wrote); ``None``: generated from the
            test split into the run folder.
        checkpoints: a manifest of finished runs per normaliser and seed (:mod:`dtn_bench.robustness.manifest`),
            evaluated instead of training.
        corruptions: corruption names (default: the 15).
        severities: severities (default 1..5).
        gen_seed: seed of a generated corruption set.
        ema: evaluate the checkpoints' EMA weights when they have them (else the raw weights).
        eval_batch: images per evaluation batch.
        device: ``auto``, ``cpu`` or ``cuda``.
        workers: on the CPU in one process, how many stages run side by side (each in its own process with
            ``threads // workers`` torch threads); 0: one per torch thread.
        world_size: processes of the job (torchrun's ``WORLD_SIZE``).
        preset: the preset's name.
    """

    SUITE = SUITE

    model: str = "vit_cifar_t_ln"
    norms: tuple[str, ...] = field(default_factory=default_norms)
    seeds: tuple[int, ...] = (0, 1, 2)
    recipe: str = "quick"
    train_settings: dict[str, Any] = field(default_factory=dict)
    data_dir: str | None = None
    corrupt_dir: str | None = None
    checkpoints: str | None = None
    corruptions: tuple[str, ...] = CORRUPTIONS
    severities: tuple[int, ...] = SEVERITIES
    gen_seed: int = 0
    ema: bool = True
    eval_batch: int = 256
    device: str = "auto"
    workers: int = 1
    world_size: int = 1
    preset: str = "quick"

    # --------------------------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """One-line :class:`DTNBenchError` for a bad value (names against the registries, the recipe's fields)."""
        from dtn_bench.imagenet_c.data import resolve_corruptions, resolve_severities
        from dtn_bench.norms import NORMS
        from dtn_bench.stats import check_unique

        for name in ("norms", "seeds"):
            values = getattr(self, name)
            if not values:
                raise DTNBenchError(f"robustness: --{name} is empty")
            try:
                check_unique(values, name[:-1])
            except ValueError as e:
                raise DTNBenchError(f"robustness: --{name} {','.join(map(str, values))}: {e}") from None
        for n in self.norms:
            NORMS.get(n)
        fixed = sorted(set(self.train_settings) & set(FIXED_TRAIN_KEYS))
        if fixed:
            raise DTNBenchError(f"robustness: --set {fixed[0]}=... is not a training setting here; give the model, "
                                "normalisers, seeds, data folder and device with --model, --norms, --seeds, "
                                "--data-dir and --device")
        resolve_corruptions(self.corruptions)
        resolve_severities(self.severities)
        if self.workers < 0:
            raise DTNBenchError(f"robustness: workers must be >= 0 (0: one per torch thread), got {self.workers}")
        if self.eval_batch < 1:
            raise DTNBenchError(f"robustness: eval_batch must be >= 1, got {self.eval_batch}")
        target = self.target
        if self.data_dir is None and target.dataset in DATA_DIRS:
            raise DTNBenchError(f"robustness --preset {self.preset}: dataset {target.dataset} needs --data-dir PATH "
                                f"({DATA_DIRS[target.dataset]})")

    def train_config(self, norm: str, seed: int):
        """The :class:`~dtn_bench.train.config.TrainConfig` of one run (recipe < ``train_settings`` < this config).

        Raises:
            DTNBenchError: an unknown recipe or setting, a value of the wrong type, settings train refuses.
        """
        from dtn_bench.train.config import TrainConfig

        given = {**self.train_settings, "model": self.model, "norm": norm, "seed": seed, "device": self.device,
                 "world_size": self.world_size}
        if self.data_dir is not None:
            given["data_dir"] = self.data_dir
        return TrainConfig.resolve(self.recipe, given)[0]

    @property
    def dataset(self) -> str:
        """The training set the recipe and settings name."""
        from dtn_bench.suites import load_preset

        return str(self.train_settings.get("dataset") or load_preset("train", self.recipe).get("dataset", "digits"))

    @property
    def target(self) -> Target:
        """What the training set is tested on (:data:`TARGETS`)."""
        from dtn_bench.checks import did_you_mean

        if self.dataset not in TARGETS:
            raise DTNBenchError(f"robustness: no corruption set for dataset {self.dataset!r}"
                                f"{did_you_mean(self.dataset, list(TARGETS))}")
        return TARGETS[self.dataset]

    def as_dict(self) -> dict[str, Any]:
        """The settings ``config.json`` records."""
        return asdict(self)

    def measured_settings(self) -> dict[str, Any]:
        """Every setting that can change a number (all but :data:`HOW_KEYS`)."""
        return {k: v for k, v in self.as_dict().items() if k not in HOW_KEYS}
