"""The one place the robustness suite evaluates a checkpoint: :func:`evaluate` (clean and corrupted, per-image bits).

Both go through the one evaluation engine (:mod:`dtn_bench.shifts`: one loader, one accuracy routine, per-image
bits in the run folder's ``correct/``, :mod:`dtn_bench.shifts.correctness`):

- ImageNet-C: :func:`dtn_bench.imagenet_c.evaluate` (AlexNet-normalised mCE);
- CIFAR-10-C, CIFAR-100-C, Tiny-ImageNet-C (and the generated digits set, in the CIFAR-10-C format): the ``cifar-c``
  suite with its plan (every layout and label check) holding the trained model (its recorded shape: the cifar-c
  plan builds models from their name only).

Either way the evaluation is a run folder ``<run>/<cifar-c | imagenet-c>/<norm>-seed<seed>`` (rows, table, bits) that
resumes per (corruption, severity) pair.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from dtn_bench.errors import DTNBenchError
from dtn_bench.robustness.data import TestSet

UNIT_METRICS = ("n_images", "top1_err")
"""What each evaluated (corruption, severity) pair contributes to the robustness rows."""


@dataclass(frozen=True)
class Evaluation:
    """One evaluated checkpoint.

    Attributes:
        folder: the evaluation's run folder (its per-image bits in ``correct/``).
        rows: its rows (``corruption``, ``severity`` with ``clean``/0 for the clean set; metrics of
            :data:`UNIT_METRICS`; ``checkpoint_sha256``, ``weights``).
    """

    folder: Path
    rows: list[dict]


def load_model(checkpoint: str | Path, model: str, norm: str, classes: int, ema: bool = True):
    """The model of ``checkpoint`` and what was loaded (``load_checkpoint``'s info).

    A ``dtn-bench train`` checkpoint is rebuilt from its recorded settings (shape included); another file is loaded
    into ``model`` with ``norm`` and ``classes`` outputs.
    """
    from dtn_bench.checkpoint import load_checkpoint
    from dtn_bench.models.small import create
    from dtn_bench.train.loop import load_trained, read_checkpoint

    ck = read_checkpoint(Path(checkpoint)) if Path(checkpoint).suffix != ".safetensors" else {}
    if isinstance(ck, dict) and isinstance(ck.get("dtn_bench"), dict):
        net, _, info = load_trained(checkpoint, ema=ema)
        return net, info
    net = create(model, norm=norm, num_classes=classes)
    return net.eval(), load_checkpoint(net, checkpoint, ema=ema)


def evaluate(test: TestSet, checkpoint: str | Path, *, run_dir: Path, run_id: str, model: str, norm: str,
             ema: bool = True, batch_size: int = 256, device: str = "cpu", on_event=None) -> Evaluation:
    """Evaluate ``checkpoint`` on the clean test split and on every (corruption, severity) pair of ``test``.

    Args:
        test: the test set (:func:`dtn_bench.robustness.data.plan_test_set`), its files written.
        checkpoint: the weights (a ``dtn-bench train`` checkpoint, or a file that fits ``model`` with ``norm``).
        run_dir: the robustness run folder; the evaluation's run folder goes under it.
        run_id: the evaluation's run folder name (an existing one is resumed).
        model: the model family.
        norm: the normaliser.
        ema: take the EMA weights when the file has them.
        batch_size: images per batch.
        device: ``cpu`` or ``cuda``.
        on_event: the evaluation's typed events (``on_event(event)``, :mod:`dtn_bench.events`).

    Returns:
        An :class:`Evaluation`.
    """
    from dtn_bench.distributed import resolve_device

    device = str(resolve_device(device)).split(":")[0]
    if test.target.evaluation == "imagenet":
        return _imagenet_c(test, checkpoint, run_dir, run_id, model, norm, ema, batch_size, device, on_event)
    return _cifar_c(test, checkpoint, run_dir, run_id, model, norm, ema, batch_size, device, on_event)


def _unit_rows(df, folder: Path | None) -> Evaluation:
    if folder is None:  # ranks other than 0
        return Evaluation(Path("."), [])
    keep = df[df["metric"].isin(UNIT_METRICS)]
    columns = ["model", "norm", "metric", "value", "unit", "corruption", "severity", "checkpoint_sha256", "weights"]
    return Evaluation(folder, keep[[c for c in columns if c in keep.columns]].to_dict("records"))


def _imagenet_c(test, checkpoint, run_dir, run_id, model, norm, ema, batch_size, device, on_event) -> Evaluation:
    from dtn_bench.imagenet_c import evaluate as imagenet_c

    folder = Path(run_dir) / "imagenet-c" / run_id
    result = imagenet_c(model, test.corrupt_path(run_dir), out=run_dir, run_id=run_id, resume=folder.is_dir(),
                        on_event=on_event, norm=norm, checkpoint=str(checkpoint), ema=ema, num_classes=test.classes,
                        clean_dir=test.clean_dir, corruptions=test.corruptions, severities=test.severities,
                        batch_size=batch_size, device=device, data_label=test.label)
    return _unit_rows(result.rows, result.path)


def _cifar_c(test, checkpoint, run_dir, run_id, model, norm, ema, batch_size, device, on_event) -> Evaluation:
    """The ``cifar-c`` suite on the engine, its plan holding the trained model.

    Built by name, the model would have the family's default shape; a ``dtn-bench train`` checkpoint records its own.
    """
    from dtn_bench.cifar_c import make_config
    from dtn_bench.cifar_c.evaluation import plan
    from dtn_bench.cifar_c.suite import CIFAR_C_SUITE
    from dtn_bench.runner import run_suite
    from dtn_bench.shifts import plan as P

    net, info = load_model(checkpoint, model, norm, test.classes, ema)
    images, labels = test.clean_arrays(run_dir)
    cfg = make_config(model, test.corrupt_path(run_dir), dataset=test.target.evaluation, norm=norm,
                      num_classes=test.classes, clean_images=images, clean_labels=labels, corruptions=test.corruptions,
                      severities=test.severities, batch_size=batch_size, device=device, data_label=test.label)
    p = plan(cfg)  # every layout, array and label check; its model is replaced by the trained one
    weights = P.Weights(info["sha256"], info["weights"], f"checkpoint:{checkpoint}", info["sha256"],
                        notes=(info["message"],))
    p = replace(p, model=net, input=P.model_input(net), warnings=[], notes=list(weights.notes),
                provenance={**p.provenance, **weights.provenance()},
                config=replace(p.config, checkpoint=str(checkpoint)))
    folder = Path(run_dir) / "cifar-c" / run_id
    result = run_suite(CIFAR_C_SUITE, p.config, out=run_dir, run_id=run_id, resume=folder.is_dir(),
                       on_event=on_event, plan=p)
    return _unit_rows(result.rows, result.path)


def check_supported(test: TestSet, train_settings: dict) -> None:
    """Settings this adapter cannot evaluate yet: a model shape of its own on ImageNet-C (built from its name there).

    Raises:
        DTNBenchError: shape settings with the ``imagenet`` target.
    """
    shape = sorted(k for k in ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "local_up_to_layer")
                   if train_settings.get(k) is not None)
    if test.target.evaluation == "imagenet" and shape:
        raise DTNBenchError(f"robustness: the ImageNet-C evaluation builds the model from its name, so it cannot take "
                            f"a trained shape of its own ({', '.join(shape)}); train the family's own shape")
