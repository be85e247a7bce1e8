"""Training and evaluation of the ListOps classifiers (one process, or several with DDP through torchrun).

One *run* trains one ``(model, norm, seed)`` for ``steps`` updates and is fully determined by the config:

* parameters are initialised from ``torch.manual_seed(seed)``; dropout draws from torch's global generator seeded
  from ``(seed, rank)``; the global batch of update ``t`` is a fixed function of ``(seed, t)`` (a seeded order per
  epoch: a permutation, or LRA's shuffle buffers; the last partial batch of an epoch dropped), split into equal
  contiguous parts over the processes;
* every ``eval_every`` updates (and after the last) the validation split is evaluated and ``last.pt`` is written
  (model, optimiser, step, RNG states, curve, best-so-far); ``best.pt`` holds the weights with the best validation
  accuracy (the earliest on ties). Both are written atomically.
* a killed run continues from ``last.pt`` and, since the data order and the RNG states are restored, ends with the
  same weights as an uninterrupted run (bit-identical on the CPU);
* a NaN or infinite training loss stops the run before the bad update is applied, with a one-line error naming the
  last good checkpoint, which is left as it was;
* at the end, the ``last`` weights (LRA's rule) and the ``best`` weights are evaluated on the full validation and
  test splits.

Evaluation shards the samples over the processes (rank ``r`` takes samples ``r, r + W, ...``) and all-reduces exact
sums (correct predictions, summed loss, count): no sample is dropped or counted twice.

Measurement only: nothing here prints; progress goes to an ``on_event(kind, info)`` callback.
"""

from __future__ import annotations

import io
import json
import math
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dtn_bench.distributed import DistContext
from dtn_bench.errors import DTNBenchError
from dtn_bench.lra.config import SUITE, ListOpsConfig, with_defaults
from dtn_bench.results.schema import make_row
from dtn_bench.results.writer import atomic_write_bytes

Event = Callable[[str, dict], None]
CHECKPOINT_VERSION = 1


# ------------------------------------------------------------------------------------------------------------------
# data
@dataclass
class ListOpsData:
    """The three tokenised splits and where they came from."""

    train: Any
    val: Any
    test: Any
    folder: Path
    generated: bool

    def majority_accuracy(self, split: str = "test") -> float:
        """Accuracy of always predicting the most frequent training label, on ``split``."""
        labels = getattr(self, split).labels
        top = int(np.bincount(self.train.labels, minlength=10).argmax())
        return float((labels == top).mean())


def prepare_data(cfg: ListOpsConfig, ctx: DistContext | None = None, *, cache_root: str | Path | None = None,
                 progress: Callable[[int, int], None] | None = None) -> ListOpsData:
    """The splits of ``cfg``: read (through the token cache) from ``cfg.data_dir``, or generated into the cache on
    first use. Under DDP rank 0 generates and caches first, then the other processes read the cache."""
    from dtn_bench.data.listops import default_cache_root, ensure_generated, load_or_build

    ctx = ctx or DistContext()
    root = Path(cache_root) if cache_root is not None else default_cache_root()

    def load() -> ListOpsData:
        if cfg.data_dir is not None:
            folder, generated = Path(cfg.data_dir), False
        else:
            folder = ensure_generated(root, cfg.generator_args(), progress=progress if ctx.is_main else None)
            generated = True
        splits = load_or_build(folder, cfg.max_len, cfg.len_policy, cache_dir=root / "listops-tokens")
        return ListOpsData(splits["train"], splits["val"], splits["test"], folder, generated)

    if ctx.is_main:
        data = load()
    ctx.barrier()
    if not ctx.is_main:
        data = load()
    if len(data.train) < cfg.batch:
        raise DTNBenchError(f"{data.train.path}: {len(data.train)} training samples are fewer than one batch "
                            f"({cfg.batch})")
    return data


def buffer_shuffle(order: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``order`` passed through a shuffle buffer of ``size`` elements, as ``tf.data.Dataset.shuffle`` does.

    The buffer starts with the first ``size`` elements; each output is a uniformly chosen element of the buffer,
    whose place is taken by the next input element while there is one (afterwards the buffer shrinks). An element
    thus leaves at most ``size - 1`` places before its input position; ``size >= len(order)`` is a full shuffle.
    """
    n = len(order)
    size = max(1, min(int(size), n))
    buf = order[:size].tolist()
    rest = order[size:].tolist()
    picks = rng.random(n)
    out = np.empty(n, dtype=order.dtype)
    for i in range(n):
        j = int(picks[i] * len(buf))
        out[i] = buf[j]
        if i < len(rest):
            buf[j] = rest[i]
        else:
            buf[j] = buf[-1]
            buf.pop()
    return out


class BatchOrder:
    """The global batch of every update. Epoch ``e`` draws from ``default_rng([seed, e])``: a ``permutation(N)``
    (``buffers`` None), or the file order ``0 .. N - 1`` passed through shuffle buffers of the sizes ``buffers``, one
    after the other (:func:`buffer_shuffle`; LRA's input pipeline). The epoch is cut into ``N // batch`` batches (the
    remainder of an epoch is not used)."""

    def __init__(self, n: int, batch: int, seed: int, buffers: tuple[int, ...] | None = None):
        self.n, self.batch, self.seed = n, batch, seed
        self.buffers = None if buffers is None else tuple(buffers)
        self.per_epoch = n // batch
        self._epoch, self._perm = -1, None

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The order of the ``N`` samples in ``epoch``."""
        rng = np.random.default_rng([self.seed, epoch])
        if self.buffers is None:
            return rng.permutation(self.n)
        order = np.arange(self.n)
        for size in self.buffers:
            order = buffer_shuffle(order, size, rng)
        return order

    def __call__(self, step: int) -> np.ndarray:
        epoch, k = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, self.epoch_order(epoch)
        return self._perm[k * self.batch : (k + 1) * self.batch]


# ------------------------------------------------------------------------------------------------------------------
# model and evaluation
def build_model(cfg: ListOpsConfig, model: str, norm: str) -> nn.Module:
    """The :class:`~dtn_bench.sequence.encoder.LRAEncoder` of ``model`` (attention) with normaliser ``norm``."""
    from dtn_bench.data.listops import VOCAB_SIZE
    from dtn_bench.sequence.encoder import LRAEncoder

    return LRAEncoder(VOCAB_SIZE, 10, dim=cfg.dim, heads=cfg.heads, depth=cfg.depth, mlp_dim=cfg.mlp_dim,
                      max_len=cfg.max_len, attention=model, norm=norm, pooling=cfg.pooling, positions=cfg.positions,
                      dropout=cfg.dropout, attn_dropout=cfg.attention_dropout(model),
                      attention_kwargs=cfg.attention_kwargs(model), gelu=cfg.gelu, ln_eps=cfg.ln_eps, init=cfg.init)


def autocast_dtype(cfg: ListOpsConfig, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on GPUs for ``precision`` auto or bf16; ``None`` (fp32) otherwise."""
    if cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def _batch(split, idx: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(split.ids[idx]).long()
    y = torch.from_numpy(split.labels[idx])
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


@torch.no_grad()
def evaluate(model: nn.Module, split, cfg: ListOpsConfig, ctx: DistContext, limit: int | None = None
             ) -> tuple[float, float, int]:
    """Accuracy, mean cross-entropy and sample count on the first ``limit`` samples of ``split`` (all if None),
    sharded over the processes with exact all-reduced sums."""
    n = len(split) if limit is None else min(limit, len(split))
    idx = np.arange(ctx.rank, n, ctx.world)
    ctx.sync_buffers(model)  # every shard scored with the same (rank 0's, the saved) normaliser statistics
    was_training = model.training
    model.eval()
    amp = autocast_dtype(cfg, ctx.device)
    correct, loss_sum = 0.0, 0.0
    try:
        for i in range(0, len(idx), cfg.eval_batch):
            x, y = _batch(split, idx[i : i + cfg.eval_batch], ctx.device)
            with torch.autocast(ctx.device.type, dtype=amp or torch.float32, enabled=amp is not None):
                logits = model(x)
            logits = logits.float()
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += float((logits.argmax(-1) == y).sum())
    finally:
        model.train(was_training)
    correct, loss_sum, count = ctx.all_sum([correct, loss_sum, float(len(idx))])
    return correct / max(count, 1.0), loss_sum / max(count, 1.0), int(count)


# ------------------------------------------------------------------------------------------------------------------
# checkpoints
def _save(path: Path, obj: dict) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _load(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or foreign file
        raise DTNBenchError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from None


def _settings_difference(old: dict, new: dict) -> str | None:
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            return f"{key} = {old.get(key)!r} there, {new.get(key)!r} here"
    return None


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def run_key(model: str, norm: str, seed: int) -> str:
    """Folder name of one run's checkpoints."""
    return f"{model}-{norm}-seed{seed}"


# ------------------------------------------------------------------------------------------------------------------
# one run
@dataclass
class RunResult:
    """What one ``(model, norm, seed)`` run measured."""

    model: str
    norm: str
    seed: int
    params: int
    steps: int
    tokens: int
    train_seconds: float
    final: dict[str, dict[str, tuple[float, float]]]  # checkpoint kind -> split -> (accuracy, loss)
    best_step: int
    curve: list[dict]
    peak_mem_mib: float | None
    peak_rss_mib: float
    resumed_from: int

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.train_seconds if self.train_seconds > 0 else float("nan")


def _peak_rss_mib() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1 << 20) if sys.platform == "darwin" else rss / 1024


def train_run(cfg: ListOpsConfig, data: ListOpsData, model_name: str, norm: str, seed: int, ckpt_dir: Path,
              ctx: DistContext | None = None, on_event: Event | None = None) -> RunResult:
    """Train and evaluate one ``(model, norm, seed)``, continuing from ``ckpt_dir/last.pt`` when it exists.

    Args:
        cfg: the experiment config.
        data: the splits (:func:`prepare_data`).
        model_name: ``transformer``, ``bigbird`` or ``reformer``.
        norm: a registered normaliser.
        seed: the run's seed.
        ckpt_dir: folder of this run's ``last.pt`` and ``best.pt``.
        ctx: process context (:func:`init_distributed`); single process on the CPU when None.
        on_event: ``on_event(kind, info)`` with kind ``start``, ``step``, ``eval`` (info: step, steps, loss, acc,
            tokens_s, lr, val_acc ...). An exception it raises stops the run (the checkpoints stay).

    Returns:
        A :class:`RunResult`.

    Raises:
        DTNBenchError: a checkpoint written for other settings, or a NaN/inf loss.
    """
    ctx = ctx or DistContext()
    on_event = on_event or (lambda kind, info: None)
    dev = ctx.device
    settings = {**cfg.run_settings(), "model": model_name, "norm": norm, "seed": seed, "world_size": ctx.world}
    settings = json.loads(json.dumps(settings, default=str))
    last_path, best_path = ckpt_dir / "last.pt", ckpt_dir / "best.pt"

    torch.manual_seed(seed)
    model = build_model(cfg, model_name, norm).to(dev)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr_at(0), betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps,
                            weight_decay=cfg.weight_decay)
    torch.manual_seed(seed * 1_000_003 + 7919 * (ctx.rank + 1))  # dropout stream of this process
    step, tokens, train_seconds = 0, 0, 0.0
    curve: list[dict] = []
    best = {"val_acc": -1.0, "step": 0}
    best_state: dict | None = None
    resumed_from = 0
    if last_path.is_file():
        ck = _load(last_path)
        diff = _settings_difference(with_defaults(ck.get("settings", {})), settings)
        if ck.get("version") != CHECKPOINT_VERSION or diff:
            raise DTNBenchError(f"checkpoint {last_path} was written by a different config ({diff or 'version'}); "
                                "start a new run instead of --resume")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        step, tokens, train_seconds = ck["step"], ck["tokens"], ck["train_seconds"]
        curve, best = list(ck["curve"]), dict(ck["best"])
        _set_rng_state(ck["rng"][ctx.rank] if ctx.rank < len(ck["rng"]) else ck["rng"][0], dev)
        if best_path.is_file():
            best_state = _load(best_path)["model"]
        resumed_from = step

    net: nn.Module = model
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel

        # 1-D DTN's pos_proj.bias cancels in the softmax and gets no gradient
        net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None,
                                      find_unused_parameters=True)
    amp = autocast_dtype(cfg, dev)
    order = BatchOrder(len(data.train), cfg.batch, seed, cfg.shuffle_buffers())
    local = cfg.batch // ctx.world
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    info = {"model": model_name, "norm": norm, "seed": seed, "steps": cfg.steps, "params": params,
            "resumed_from": resumed_from, "step": step}
    on_event("start", info)
    window_loss, window_correct, window_n = 0.0, 0.0, 0
    model.train()
    while step < cfg.steps:
        t0 = time.perf_counter()
        lr = cfg.lr_at(step)
        for group in opt.param_groups:
            group["lr"] = lr
        idx = order(step)
        x, y = _batch(data.train, idx[ctx.rank * local : (ctx.rank + 1) * local], dev)
        with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = net(x)
        loss = F.cross_entropy(logits.float(), y)
        loss_value, correct = ctx.all_sum([float(loss.detach()), float((logits.argmax(-1) == y).sum())])
        loss_value /= ctx.world
        if not math.isfinite(loss_value):
            where = f"{last_path} (step {curve[-1]['step']})" if curve else "none (no evaluation reached yet)"
            raise DTNBenchError(f"{model_name}/{norm} seed {seed}: the training loss is {loss_value} at step "
                                f"{step + 1}; stopped. Last good checkpoint: {where}. Try a lower --lr or --clip-grad")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_grad > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        step += 1
        tokens += int(data.train.lengths[idx].sum())
        train_seconds += time.perf_counter() - t0
        window_loss += loss_value * len(idx)
        window_correct += correct
        window_n += len(idx)
        info.update(step=step, loss=loss_value, lr=lr, tokens_s=tokens / max(train_seconds, 1e-9),
                    acc=window_correct / window_n)
        on_event("step", info)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            val_acc, val_loss, _ = evaluate(model, data.val, cfg, ctx, cfg.val_limit)
            curve.append({"step": step, "val_acc": val_acc, "val_loss": val_loss, "train_loss": window_loss / window_n,
                          "train_acc": window_correct / window_n, "lr": lr})
            window_loss, window_correct, window_n = 0.0, 0.0, 0
            if val_acc > best["val_acc"]:
                best = {"val_acc": val_acc, "step": step}
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                if ctx.is_main:
                    _save(best_path, {"version": CHECKPOINT_VERSION, "settings": settings, "model": best_state,
                                      "step": step, "val_acc": val_acc})
            rng = [None] * ctx.world
            state = _rng_state(dev)
            if ctx.distributed:
                torch.distributed.all_gather_object(rng, {k: v.cpu() for k, v in state.items()})
            else:
                rng = [state]
            if ctx.is_main:
                _save(last_path, {"version": CHECKPOINT_VERSION, "settings": settings, "model": model.state_dict(),
                                  "optimizer": opt.state_dict(), "step": step, "tokens": tokens,
                                  "train_seconds": train_seconds, "curve": curve, "best": best, "rng": rng})
            ctx.barrier()
            info.update(val_acc=val_acc, best_val_acc=best["val_acc"])
            on_event("eval", info)

    final: dict[str, dict[str, tuple[float, float]]] = {"last": {}, "best": {}}
    if cfg.val_limit is None and curve and curve[-1]["step"] == step:  # the last evaluation already saw all of val
        final["last"]["val"] = (curve[-1]["val_acc"], curve[-1]["val_loss"])
    for split in ("val", "test"):
        if split not in final["last"]:
            acc, loss_v, _ = evaluate(model, getattr(data, split), cfg, ctx)
            final["last"][split] = (acc, loss_v)
    if best_state is not None and best["step"] != step:
        model.load_state_dict(best_state)
        for split in ("val", "test"):
            acc, loss_v, _ = evaluate(model, getattr(data, split), cfg, ctx)
            final["best"][split] = (acc, loss_v)
    else:
        final["best"] = dict(final["last"])
    peak = torch.cuda.max_memory_allocated(dev) / (1 << 20) if dev.type == "cuda" else None
    return RunResult(model=model_name, norm=norm, seed=seed, params=params, steps=step, tokens=tokens,
                     train_seconds=train_seconds, final=final, best_step=int(best["step"]) or step, curve=curve,
                     peak_mem_mib=peak, peak_rss_mib=_peak_rss_mib(), resumed_from=resumed_from)


# ------------------------------------------------------------------------------------------------------------------
# rows
def result_rows(result: RunResult, cfg: ListOpsConfig, data: ListOpsData) -> list[dict]:
    """Tidy rows of one run: accuracy and loss per split and checkpoint kind, the validation curve, cost figures."""
    common = {"seed": result.seed, "preset": cfg.preset, "max_len": cfg.max_len, "data": _data_label(data)}
    rows = []
    for kind, step in (("last", result.steps), ("best", result.best_step)):
        for split, (acc, loss) in result.final[kind].items():
            for metric, value in (("accuracy", acc), ("loss", loss)):
                rows.append(make_row(SUITE, result.model, result.norm, metric, value, split=split, checkpoint=kind,
                                     step=step, **common))
    for point in result.curve:
        rows.append(make_row(SUITE, result.model, result.norm, "accuracy", point["val_acc"], split="val",
                             checkpoint="curve", step=point["step"], **common))
        rows.append(make_row(SUITE, result.model, result.norm, "loss", point["val_loss"], split="val",
                             checkpoint="curve", step=point["step"], **common))
        rows.append(make_row(SUITE, result.model, result.norm, "loss", point["train_loss"], split="train",
                             checkpoint="curve", step=point["step"], **common))
    cost = {"split": "train", "checkpoint": "last", "step": result.steps, **common}
    rows.append(make_row(SUITE, result.model, result.norm, "tokens_s", result.tokens_per_s, **cost))
    rows.append(make_row(SUITE, result.model, result.norm, "train_time_s", result.train_seconds, "s", **cost))
    rows.append(make_row(SUITE, result.model, result.norm, "params", result.params, "count", **cost))
    if result.peak_mem_mib is not None:
        rows.append(make_row(SUITE, result.model, result.norm, "peak_mem_mib", result.peak_mem_mib, **cost))
    rows.append(make_row(SUITE, result.model, result.norm, "peak_rss_mib", result.peak_rss_mib, "MiB", **cost))
    return rows


def baseline_rows(cfg: ListOpsConfig, data: ListOpsData) -> list[dict]:
    """The majority-class baseline (most frequent training label) on the validation and test splits."""
    common = {"seed": -1, "preset": cfg.preset, "max_len": cfg.max_len, "data": _data_label(data),
              "checkpoint": "majority", "step": 0}
    return [make_row(SUITE, "majority-class", "none", "accuracy", data.majority_accuracy(split), split=split,
                     **common) for split in ("val", "test")]


def _data_label(data: ListOpsData) -> str:
    return f"generated:{data.folder.name}" if data.generated else str(data.folder)


def runs(cfg: ListOpsConfig) -> list[tuple[str, str, int]]:
    """Every ``(model, norm, seed)`` of ``cfg`` in run order (seed-major, then model, then norm)."""
    return [(m, n, s) for s in cfg.seeds for m in cfg.models for n in cfg.norms]


def run(cfg: ListOpsConfig, data: ListOpsData, run_dir: Path, done: set[tuple[str, str, int]],
        ctx: DistContext | None = None, on_event: Event | None = None) -> Iterator[tuple[str, list[dict]]]:
    """Train every run of ``cfg`` not in ``done``; yields ``(label, rows)`` as each run finishes."""
    for model_name, norm, seed in runs(cfg):
        if (model_name, norm, seed) in done:
            continue
        ckpt = run_dir / "checkpoints" / run_key(model_name, norm, seed)
        result = train_run(cfg, data, model_name, norm, seed, ckpt, ctx, on_event)
        yield f"{model_name}/{norm}/seed {seed}", result_rows(result, cfg, data)
