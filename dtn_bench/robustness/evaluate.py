"""The one place the robustness suite evaluates a checkpoint: :func:`evaluate` (clean and corrupted, per-image bits).

Until the evaluation engine (issue 22) lands, this adapter calls today's evaluations from Python:

- ImageNet-C: :func:`dtn_bench.imagenet_c.evaluate` (AlexNet-normalised mCE; it keeps per-image bits in the run
  folder's ``correct/``);
- CIFAR-10-C, CIFAR-100-C, Tiny-ImageNet-C (and the generated digits set, in the CIFAR-10-C format): the ``cifar-c``
  suite's plan (every layout and label check) with the trained model put in (its recorded shape: the cifar-c plan
  builds models from their name only), measured by :func:`_measure_with_bits`, which keeps the per-image bits that
  today's cifar-c loop does not (:mod:`dtn_bench.imagenet_c.correctness`'s files, image names ``0 .. N-1`` for the
  arrays and ``wnid/name`` for the folders).

Either way the evaluation is a run folder ``<run>/<cifar-c | imagenet-c>/<norm>-seed<seed>`` (rows, table, bits) that
resumes per (corruption, severity) pair. Switching to the engine replaces this module's body, nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

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
        on_event: the evaluation's events (``on_event(kind, **info)``).

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
    from dtn_bench.cifar_c import make_config, plan
    from dtn_bench.cifar_c.suite import CIFAR_C_SUITE
    from dtn_bench.imagenet_c.evaluation import model_input
    from dtn_bench.imagenet_c.suite import with_plan
    from dtn_bench.runner import run_suite

    net, info = load_model(checkpoint, model, norm, test.classes, ema)
    images, labels = test.clean_arrays(run_dir)
    cfg = make_config(model, test.corrupt_path(run_dir), dataset=test.target.evaluation, norm=norm,
                      num_classes=test.classes, clean_images=images, clean_labels=labels, corruptions=test.corruptions,
                      severities=test.severities, batch_size=batch_size, device=device, data_label=test.label)
    p = plan(cfg)  # its model is a stand-in of the family's default shape, replaced by the trained one
    _, mean, std = model_input(net)
    p = replace(p, model=net, mean=mean, std=std, warnings=[], notes=[info["message"]],
                config=replace(p.config, checkpoint=str(checkpoint), checkpoint_sha256=info["sha256"],
                               weights=info["weights"]))
    folder = Path(run_dir) / "cifar-c" / run_id
    result = run_suite(with_plan(CIFAR_C_SUITE, p, _measure_with_bits), p.config, out=run_dir, run_id=run_id,
                       resume=folder.is_dir(), on_event=on_event)
    return _unit_rows(result.rows, result.path)


def _names(source) -> list[str]:
    paths = getattr(source, "paths", None)
    return [str(p) for p in paths] if paths is not None else [str(i) for i in range(len(source))]


def _measure_with_bits(p, ctx) -> Iterator[tuple[str, list[dict]]]:
    """The ``cifar-c`` measurement (rows per pair) that also writes each pair's per-image top-1 bits (rank 0).

    Each rank scores images ``r, r + W, ...`` of a pair; the bits are gathered (exact: every image once).
    """
    import torch

    from dtn_bench.cifar_c.evaluation import COUNT_UNIT, SUITE, row_settings
    from dtn_bench.distributed import DistContext
    from dtn_bench.imagenet_c.correctness import write_pair
    from dtn_bench.imagenet_c.evaluation import rank_device
    from dtn_bench.results.schema import make_row

    cfg = p.config
    dist = ctx.dist if ctx.dist is not None else DistContext()
    device = rank_device(cfg.device)
    model = p.model.to(device).eval()
    mean = torch.tensor(p.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(p.std, device=device).view(1, -1, 1, 1)
    pending = [g for g in p.groups if not ctx.is_done(g.corruption, g.severity)]
    ctx.emit("pending", pending=len(pending), skipped=len(p.groups) - len(pending),
             images=sum(len(g.source) for g in pending), world=dist.world)
    for g in pending:
        t0 = time.perf_counter()
        index = np.arange(dist.rank, len(g.source), dist.world)
        correct = np.zeros(len(index), dtype=bool)
        for b in range(0, len(index), cfg.batch_size):
            chunk = index[b:b + cfg.batch_size]
            x = torch.from_numpy(g.source.read(chunk)).to(device).permute(0, 3, 1, 2).float().div_(255)
            x = x.sub_(mean).div_(std)
            with torch.inference_mode():
                pred = model(x).argmax(dim=1).cpu().numpy()
            correct[b:b + len(chunk)] = pred == g.source.labels[chunk]
            ctx.emit("batch", images=len(chunk) * dist.world)
        full = np.zeros(len(g.source), dtype=bool)
        for idx, bits in dist.gather((index, correct)):
            full[idx] = bits
        if ctx.rank == 0 and ctx.run_dir is not None:
            write_pair(ctx.run_dir, g.corruption, g.severity, _names(g.source), full)
        n, seconds = len(full), time.perf_counter() - t0
        err = 1.0 - float(full.sum()) / n if n else float("nan")
        settings = dict(corruption=g.corruption, severity=g.severity, **row_settings(cfg))
        yield f"{g.corruption}/{g.severity}", [
            make_row(SUITE, cfg.model, p.norm_label, "n_images", n, COUNT_UNIT, **settings),
            make_row(SUITE, cfg.model, p.norm_label, "top1_err", err, **settings),
            make_row(SUITE, cfg.model, p.norm_label, "throughput_img_s", n / seconds if seconds > 0 else float("nan"),
                     **settings)]
        ctx.emit("pair", corruption=g.corruption, severity=g.severity, top1_err=err, n_images=n)


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
