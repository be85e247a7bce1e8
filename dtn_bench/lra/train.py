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

Measurement only: nothing here prints; progress goes to an ``on_event(kind, info)`` callback. The suite
(:mod:`dtn_bench.lra.suite`) runs every ``(model, norm, seed)`` of a config through :func:`train_run`.
"""

from __future__ import annotations

import io
import json
import math
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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
    """The splits of ``cfg``.

    Read (through the token cache) from ``cfg.data_dir``, or generated into the cache on first use. Under DDP rank 0
    generates and caches first, then the other processes read the cache.
    """
    from dtn_bench.data.listops import default_cache_root, ensure_generated, load_or_build

    ctx = ctx or DistContext()
    root = Path(cache_root) if cache_root is not None else default_cache_root()

    def load() -> ListOpsData:
        if cfg.data_dir is not None:
            folder, generated = Path(cfg.data_dir), False
        else:
            folder = ensure_generated(root, cfg.generator_spec(), progress=progress if ctx.is_main else None)
            generated = True
        splits = load_or_build(folder, cfg.max_len, cfg.len_policy, cache_dir=root / "listops-tokens")
        return ListOpsData(splits["train"], splits["val"], splits["test"], folder, generated)

    if ctx.is_main:
        data = load()
    ctx.barrier()
    if not ctx.is_main:
        data = load()
    for split in (data.val, data.test):
        if len(split) == 0:
            raise DTNBenchError(f"{split.path}: 0 samples; lra listops needs a {split.split} sample at least")
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
    """The global batch of every update.

    Epoch ``e`` draws from ``default_rng([seed, e])``: a ``permutation(N)`` (``buffers`` None), or the file order
    ``0 .. N - 1`` passed through shuffle buffers of the sizes ``buffers``, one after the other
    (:func:`buffer_shuffle`; LRA's input pipeline). The epoch is cut into ``N // batch`` batches (the remainder of an
    epoch is not used).

    Args:
        n: training samples.
        batch: the global batch.
        seed: the run's seed.
        buffers: shuffle-buffer sizes, or ``None`` for a permutation per epoch.
    """

    def __init__(self, n: int, batch: int, seed: int, buffers: tuple[int, ...] | None = None):
        """An order over ``n`` samples; each epoch's is drawn when first needed."""
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
        """The sample indices of the global batch of the 0-based update ``step``."""
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
                      attention_kwargs=cfg.attention_kwargs(model), gelu=cfg.gelu, ln_eps=cfg.ln_eps, init=cfg.init,
                      placement=cfg.placement)


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
    """Accuracy, mean cross-entropy and sample count on the first ``limit`` samples of ``split`` (all if None).

    The samples are sharded over the processes; the sums are all-reduced exactly.
    """
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
    from dtn_bench.checkpoint import file_kind, load_weights_only, refusal_reason

    hint = " (delete it to train that run from the start)"
    try:
        file_kind(path)
        return load_weights_only(path)
    except DTNBenchError as e:
        raise DTNBenchError(f"{e}{hint}") from None
    except Exception as e:  # truncated or foreign file
        raise DTNBenchError(f"cannot read checkpoint {path}: {refusal_reason(e)}{hint}") from None


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
    truncation: list[tuple[str, float, float]] = field(default_factory=list)  # dtn_truncation of the last weights

    @property
    def tokens_per_s(self) -> float:
        """Training tokens per second of training time."""
        return self.tokens / self.train_seconds if self.train_seconds > 0 else float("nan")


def _peak_rss_mib() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1 << 20) if sys.platform == "darwin" else rss / 1024


@dataclass
class _TrainState:
    """What a run has done so far (what ``last.pt`` restores), and the training window since the last evaluation."""

    step: int = 0
    tokens: int = 0
    train_seconds: float = 0.0
    curve: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"val_acc": -1.0, "step": 0})
    best_state: dict | None = None
    resumed_from: int = 0
    window_loss: float = 0.0
    window_correct: float = 0.0
    window_n: int = 0


@dataclass
class _Run:
    """One ``(model, norm, seed)`` run being trained: its model, optimiser, data order and checkpoint files."""

    cfg: ListOpsConfig
    data: ListOpsData
    ctx: DistContext
    name: str  # model/norm seed, for messages
    model: nn.Module
    net: nn.Module  # the model, wrapped in DDP under torchrun
    opt: torch.optim.Optimizer
    settings: dict
    last_path: Path
    best_path: Path
    order: BatchOrder
    amp: torch.dtype | None
    info: dict
    on_event: Event
    state: _TrainState


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
    run = _start_run(cfg, data, model_name, norm, seed, ckpt_dir, ctx, on_event or (lambda kind, info: None))
    state, dev = run.state, ctx.device
    run.on_event("start", run.info)
    run.model.train()
    while state.step < cfg.steps:
        lr = _train_step(run)
        if state.step % cfg.eval_every == 0 or state.step == cfg.steps:
            _evaluate_and_save(run, lr)
    final = _final_evaluation(run)
    peak = torch.cuda.max_memory_allocated(dev) / (1 << 20) if dev.type == "cuda" else None
    return RunResult(model=model_name, norm=norm, seed=seed, params=run.info["params"], steps=state.step,
                     tokens=state.tokens, train_seconds=state.train_seconds, final=final,
                     best_step=int(state.best["step"]) or state.step, curve=state.curve, peak_mem_mib=peak,
                     peak_rss_mib=_peak_rss_mib(), resumed_from=state.resumed_from,
                     truncation=dtn_truncation(run.model, cfg.max_len + (cfg.pooling == "cls")))


def dtn_truncation(model: nn.Module, length: int) -> list[tuple[str, float, float]]:
    """``(name, bound, tolerance)`` of every 1-D DTN layer of ``model`` at sequences of ``length`` tokens.

    ``bound`` is the largest over heads of :meth:`~dtn_bench.norms.dtn.DTN.truncation_bound` (the weight, relative to
    a token's own, of the sources the layer's window drops), ``tolerance`` the fp32
    :meth:`~dtn_bench.norms.dtn.DTN.truncation_tolerance`: past it the window may change the layer's function.
    """
    from dtn_bench.norms.dtn import DTN

    return [(name, float(mod.truncation_bound(length - mod.num_prefix_tokens).max()), mod.truncation_tolerance())
            for name, mod in model.named_modules() if isinstance(mod, DTN) and mod.grid_size is None]


def _start_run(cfg: ListOpsConfig, data: ListOpsData, model_name: str, norm: str, seed: int, ckpt_dir: Path,
               ctx: DistContext, on_event: Event) -> _Run:
    """The model (from ``torch.manual_seed(seed)``), the optimiser and the dropout stream of one run.

    Restored from ``last.pt`` when there is one.
    """
    dev = ctx.device
    settings = {**cfg.run_settings(), "model": model_name, "norm": norm, "seed": seed, "world_size": ctx.world}
    settings = json.loads(json.dumps(settings, default=str))
    torch.manual_seed(seed)
    model = build_model(cfg, model_name, norm).to(dev)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr_at(0), betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps,
                            weight_decay=cfg.weight_decay)
    torch.manual_seed(seed * 1_000_003 + 7919 * (ctx.rank + 1))  # dropout stream of this process
    state = _TrainState()
    last_path, best_path = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
    if last_path.is_file():
        _restore(state, model, opt, settings, last_path, best_path, ctx)
    net = _parallel(model, ctx)
    amp = autocast_dtype(cfg, dev)
    order = BatchOrder(len(data.train), cfg.batch, seed, cfg.shuffle_buffers())
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    info = {"model": model_name, "norm": norm, "seed": seed, "steps": cfg.steps, "params": params,
            "resumed_from": state.resumed_from, "step": state.step}
    return _Run(cfg, data, ctx, f"{model_name}/{norm} seed {seed}", model, net, opt, settings, last_path, best_path,
                order, amp, info, on_event, state)


def _restore(state: _TrainState, model: nn.Module, opt: torch.optim.Optimizer, settings: dict, last_path: Path,
             best_path: Path, ctx: DistContext) -> None:
    """Continue from ``last.pt`` (refused when it was written for other settings)."""
    ck = _load(last_path)
    diff = _settings_difference(with_defaults(ck.get("settings", {})), settings)
    if ck.get("version") != CHECKPOINT_VERSION or diff:
        raise DTNBenchError(f"checkpoint {last_path} was written by a different config ({diff or 'version'}); "
                            "start a new run instead of --resume")
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    state.step, state.tokens, state.train_seconds = ck["step"], ck["tokens"], ck["train_seconds"]
    state.curve, state.best = list(ck["curve"]), dict(ck["best"])
    _set_rng_state(ck["rng"][ctx.rank] if ctx.rank < len(ck["rng"]) else ck["rng"][0], ctx.device)
    if best_path.is_file():
        state.best_state = _load(best_path)["model"]
    state.resumed_from = state.step


def _parallel(model: nn.Module, ctx: DistContext) -> nn.Module:
    """The model wrapped in DDP under torchrun, else the model."""
    if not ctx.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    dev = ctx.device
    # 1-D DTN's pos_proj.bias cancels in the softmax and gets no gradient
    return DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None,
                                   find_unused_parameters=True)


def _train_step(run: _Run) -> float:
    """One update on this process's part of the global batch; returns its learning rate.

    Raises:
        DTNBenchError: the (process-averaged) loss is NaN or infinite; the update is not applied.
    """
    cfg, ctx, state, dev = run.cfg, run.ctx, run.state, run.ctx.device
    t0 = time.perf_counter()
    lr = cfg.lr_at(state.step)
    for group in run.opt.param_groups:
        group["lr"] = lr
    idx = run.order(state.step)
    local = cfg.batch // ctx.world
    x, y = _batch(run.data.train, idx[ctx.rank * local : (ctx.rank + 1) * local], dev)
    with torch.autocast(dev.type, dtype=run.amp or torch.float32, enabled=run.amp is not None):
        logits = run.net(x)
    loss = F.cross_entropy(logits.float(), y)
    loss_value, correct = ctx.all_sum([float(loss.detach()), float((logits.argmax(-1) == y).sum())])
    loss_value /= ctx.world
    if not math.isfinite(loss_value):
        where = (f"{run.last_path} (step {state.curve[-1]['step']})" if state.curve
                 else "none (no evaluation reached yet)")
        raise DTNBenchError(f"{run.name}: the training loss is {loss_value} at step {state.step + 1}; stopped. Last "
                            f"good checkpoint: {where}. Try a lower --lr or --clip-grad")
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.clip_grad > 0:
        nn.utils.clip_grad_norm_(run.model.parameters(), cfg.clip_grad)
    run.opt.step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    state.step += 1
    state.tokens += int(run.data.train.lengths[idx].sum())
    state.train_seconds += time.perf_counter() - t0
    state.window_loss += loss_value * len(idx)
    state.window_correct += correct
    state.window_n += len(idx)
    run.info.update(step=state.step, loss=loss_value, lr=lr, tokens_s=state.tokens / max(state.train_seconds, 1e-9),
                    acc=state.window_correct / state.window_n)
    run.on_event("step", run.info)
    return lr


def _evaluate_and_save(run: _Run, lr: float) -> None:
    """Validate, extend the curve, and write ``best.pt`` (a better validation accuracy) and ``last.pt`` (rank 0)."""
    cfg, ctx, state = run.cfg, run.ctx, run.state
    val_acc, val_loss, _ = evaluate(run.model, run.data.val, cfg, ctx, cfg.val_limit)
    state.curve.append({"step": state.step, "val_acc": val_acc, "val_loss": val_loss,
                        "train_loss": state.window_loss / state.window_n,
                        "train_acc": state.window_correct / state.window_n, "lr": lr})
    state.window_loss, state.window_correct, state.window_n = 0.0, 0.0, 0
    if val_acc > state.best["val_acc"]:
        state.best = {"val_acc": val_acc, "step": state.step}
        state.best_state = {k: v.detach().to("cpu", copy=True) for k, v in run.model.state_dict().items()}
        if ctx.is_main:
            _save(run.best_path, {"version": CHECKPOINT_VERSION, "settings": run.settings, "model": state.best_state,
                                  "step": state.step, "val_acc": val_acc})
    rng = _gathered_rng_states(ctx)
    if ctx.is_main:
        _save(run.last_path, {"version": CHECKPOINT_VERSION, "settings": run.settings,
                              "model": run.model.state_dict(), "optimizer": run.opt.state_dict(), "step": state.step,
                              "tokens": state.tokens, "train_seconds": state.train_seconds, "curve": state.curve,
                              "best": state.best, "rng": rng})
    ctx.barrier()
    run.info.update(val_acc=val_acc, best_val_acc=state.best["val_acc"])
    run.on_event("eval", run.info)


def _gathered_rng_states(ctx: DistContext) -> list[dict]:
    """The RNG states of every process (rank order), for ``last.pt``."""
    state = _rng_state(ctx.device)
    if not ctx.distributed:
        return [state]
    rng: list = [None] * ctx.world
    torch.distributed.all_gather_object(rng, {k: v.cpu() for k, v in state.items()})
    return rng


def _final_evaluation(run: _Run) -> dict[str, dict[str, tuple[float, float]]]:
    """The ``last`` weights, and the ``best`` weights when another step was better, on the full val and test splits."""
    cfg, ctx, state, data = run.cfg, run.ctx, run.state, run.data
    final: dict[str, dict[str, tuple[float, float]]] = {"last": {}, "best": {}}
    curve = state.curve
    if cfg.val_limit is None and curve and curve[-1]["step"] == state.step:  # the last evaluation saw all of val
        final["last"]["val"] = (curve[-1]["val_acc"], curve[-1]["val_loss"])
    for split in ("val", "test"):
        if split not in final["last"]:
            acc, loss_v, _ = evaluate(run.model, getattr(data, split), cfg, ctx)
            final["last"][split] = (acc, loss_v)
    if state.best_state is not None and state.best["step"] != state.step:
        run.model.load_state_dict(state.best_state)
        for split in ("val", "test"):
            acc, loss_v, _ = evaluate(run.model, getattr(data, split), cfg, ctx)
            final["best"][split] = (acc, loss_v)
    else:
        final["best"] = dict(final["last"])
    return final


# ------------------------------------------------------------------------------------------------------------------
# rows
def result_rows(result: RunResult, cfg: ListOpsConfig, data: ListOpsData) -> list[dict]:
    """Tidy rows of one run: accuracy and loss per split and checkpoint kind, the validation curve, cost figures."""
    common = {"seed": result.seed, "preset": cfg.preset, "max_len": cfg.max_len, "data": _data_label(data),
              "placement": cfg.placement}
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
    if result.truncation:  # 1-D DTN layers: the largest window truncation bound of the last weights
        rows.append(make_row(SUITE, result.model, result.norm, "dtn_truncation_bound",
                             max(bound for _, bound, _ in result.truncation), "ratio", **cost))
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
