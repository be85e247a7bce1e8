"""The one sharded evaluation loop and its one accuracy routine (top-1, top-5, per-image top-1 bits).

Sharding (``torchrun``): rank ``r`` of ``W`` takes images ``r, r + W, r + 2W, ...`` of every unit - no padding, so
no image is counted twice or dropped. Each rank counts images, top-1 / top-5 hits and unreadable files per unit as
int64; the counts are summed with ``all_reduce`` in unit order (every rank reduces unit ``u`` once all its local
images of ``u`` are done, so the collectives line up). A rank that hits a fatal problem (an image of the wrong size,
or an unreadable one under ``strict``) raises a flag in the next reduction, so every rank stops with the same message.

Per-image correctness: each rank keeps one top-1 bit per image of its shard; when a unit is summed, the shards' bits
are gathered (``all_gather``, packed one bit per image) and interleaved back into the unit's image order (rank
``r``'s bits are images ``r, r + W, ...``).

Accuracy (:func:`score`): a unit with a mask scores only those logits (``logits[:, mask]``, the label being the
position in the mask); top-1 is the first of the top ``k`` (``torch.topk``), top-5 whether the label is among the
top 5 (counted when 5 or more classes are scored).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from dtn_bench.distributed import DistContext
from dtn_bench.errors import DTNBenchError
from dtn_bench.events import Estimate, Event, Progress
from dtn_bench.shifts import loader as LD
from dtn_bench.shifts.plan import Plan, Unit
from dtn_bench.stats import pack_bits, unpack_bits

Emit = Callable[[Event], None]


def score(logits: torch.Tensor, labels: torch.Tensor, mask: tuple[int, ...] | None = None
          ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-image top-1 and top-5 hits (booleans; top-5 ``None`` with fewer than 5 scored classes).

    Args:
        logits: ``[N, outputs]``.
        labels: ``[N]`` labels within the scored outputs.
        mask: the outputs scored (``logits[:, mask]``); ``None``: all.
    """
    if mask is not None:
        logits = logits[:, list(mask)]
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    hit = top.eq(labels.view(-1, 1))
    return hit[:, 0], (hit.any(dim=1) if k == 5 else None)


@dataclass
class UnitScore:
    """One unit whose counts every rank has summed.

    Attributes:
        unit: the unit.
        counts: images, top-1 hits, top-5 hits, unreadable files (over all ranks).
        names: the unreadable files (``unit name``), sorted when several ranks found some.
        seconds: since the previous unit finished (or the loop started).
        top5: whether top-5 was counted (5 or more scored classes).
        correct: top-1 right, one boolean per image of the unit in its order (unreadable ones ``False``).
    """

    unit: Unit
    counts: tuple[int, int, int, int]
    names: list[str]
    seconds: float
    top5: bool
    correct: np.ndarray | None = None

    @property
    def n(self) -> int:
        """Images evaluated (readable)."""
        return self.counts[0]

    @property
    def unreadable(self) -> int:
        """Files that could not be read (counted, left out of the error)."""
        return self.counts[3]

    @property
    def top1_err(self) -> float:
        """Top-1 error of the readable images (``nan`` when there are none)."""
        return 1.0 - self.counts[1] / self.n if self.n else float("nan")

    @property
    def top5_err(self) -> float:
        """Top-5 error of the readable images (``nan`` when there are none)."""
        return 1.0 - self.counts[2] / self.n if self.n else float("nan")


def scored_classes(unit: Unit, outputs: int) -> int:
    """How many classes a unit scores (its mask's, else the model's outputs)."""
    return len(unit.mask) if unit.mask is not None else outputs


class _Shard:
    """This rank's images of the units (``r, r + W, ...`` of each), its loader and its per-unit counts.

    :meth:`finished` sums the counts of each unit over the ranks once all of this rank's images of the unit are done,
    in unit order, so every rank takes part in the same collectives in the same order.
    """

    def __init__(self, p: Plan, units: list[Unit], dist: DistContext, outputs: int):
        self.p, self.units, self.dist = p, units, dist
        self.top5 = [scored_classes(u, outputs) >= 5 for u in units]
        items, self.local_total = [], []
        for ui, u in enumerate(units):
            positions = range(dist.rank, len(u), dist.world)  # exact: no padding, nothing counted twice
            self.local_total.append(len(positions))
            items += [LD.Item(ui, pos, int(u.labels[pos])) for pos in positions]
        device = p.loop.device
        self.dataset = LD.ImageItems([u.source for u in units], items, p.input.size, decode=device.type != "cuda",
                                     allow_resize=p.loop.allow_resize, data_config=p.input.data_config)
        self.unit_of = torch.tensor([it.unit for it in items], dtype=torch.int64)
        self.position = torch.tensor([it.position // dist.world for it in items], dtype=torch.int64)
        self.correct = [np.zeros(n, dtype=bool) for n in self.local_total]  # top-1 right, per local image
        self.counts = torch.zeros(len(units), 4, dtype=torch.int64)  # images, top-1 hits, top-5 hits, unreadable
        self.seen = [0] * len(units)
        self.bad: list[list[str]] = [[] for _ in units]
        self.next = 0
        self.t_last = time.perf_counter()

    def loader(self):
        """The DataLoader over this rank's items."""
        loop, cuda = self.p.loop, self.p.loop.device.type == "cuda"
        return torch.utils.data.DataLoader(
            self.dataset, batch_size=loop.batch_size, shuffle=False, num_workers=loop.workers,
            collate_fn=LD.collate, pin_memory=cuda, prefetch_factor=4 if loop.workers else None,
            persistent_workers=False)

    def count(self, logits: torch.Tensor | None, labels, index, ok: torch.Tensor) -> None:
        """Adds a batch: hits of the readable images (``logits`` of those), the unreadable ones by name."""
        uidx = self.unit_of[index]
        if logits is not None:
            y, u_ok, pos_ok = labels[ok], uidx[ok], self.position[index][ok]
            for ui in torch.unique(u_ok).tolist():
                m = u_ok == ui
                top1, top5 = score(logits[m], y[m], self.units[ui].mask)
                self.counts[ui, 0] += int(m.sum())
                self.counts[ui, 1] += int(top1.sum())
                self.counts[ui, 2] += int(top5.sum()) if top5 is not None else 0
                self.correct[ui][pos_ok[m].numpy()] = top1.numpy()
        for i in (~ok).nonzero().flatten().tolist():
            ui = int(uidx[i])
            self.counts[ui, 3] += 1
            self.bad[ui].append(self.units[ui].names[self.dataset.items[int(index[i])].position])
        for ui in uidx.tolist():
            self.seen[ui] += 1

    def _local_done(self, ui: int) -> bool:
        return self.seen[ui] == self.local_total[ui]

    def _gathered_correct(self, ui: int) -> np.ndarray:
        """Unit ``ui``'s per-image bits of every rank, back in the unit's image order (a collective)."""
        local = self.correct[ui]
        if self.dist.world == 1:
            return local.copy()
        full = np.zeros(len(self.units[ui]), dtype=bool)
        for r, (n, data) in enumerate(self.dist.gather((local.size, pack_bits(local)))):
            full[r::self.dist.world] = unpack_bits(data, n)  # rank r evaluated images r, r + W, ...
        return full

    def finished(self, fatal: str | None = None) -> Iterator[UnitScore]:
        """The units this rank has finished, summed over the ranks; with ``fatal``, stop every rank with a message."""
        while self.next < len(self.units) and (fatal is not None or self._local_done(self.next)):
            ui = self.next
            total = self.dist.sum(torch.cat([self.counts[ui], torch.tensor([1 if fatal else 0])]).clone())
            if int(total[4]):
                messages = [m for m in self.dist.gather(fatal) if m]
                raise DTNBenchError(messages[0])
            names = self.bad[ui]
            if int(total[3]) and self.dist.world > 1:
                names = sorted(n for part in self.dist.gather(self.bad[ui]) for n in part)
            correct = self._gathered_correct(ui)
            self.next += 1
            now = time.perf_counter()
            yield UnitScore(self.units[ui], tuple(int(v) for v in total[:4]), names, now - self.t_last,
                            self.top5[ui], correct)
            self.t_last = now


class _WarmUp:
    """The estimate of the whole run from the first batches: batch 0 pays for start-up; the next 2 are timed.

    More are timed, up to 10, while under 2 s.
    """

    def __init__(self, device: torch.device, world: int, images: int, small: bool, emit: Emit):
        self.device, self.world, self.images, self.small, self.emit = device, world, images, small, emit
        self.warm_images, self.t0, self.done = 0, 0.0, False

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def after(self, bi: int, n: int) -> None:
        """After batch ``bi`` of ``n`` images on this rank."""
        if bi == 0:
            self._sync()
            self.t0 = time.perf_counter()
            return
        if self.done:
            return
        self.warm_images += n
        dt = time.perf_counter() - self.t0
        if bi >= 2 and dt >= 2.0 or bi >= 10 or bi == 2 and self.small:
            self._sync()
            rate = self.warm_images * self.world / (time.perf_counter() - self.t0)
            self.emit(Estimate(seconds=self.images / rate, img_s=rate, images=self.images))
            self.done = True


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def autocast(device: torch.device, amp: str | None):
    """``torch.autocast`` to bf16 when ``amp`` is ``"bf16"``, else a context that does nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if amp == "bf16" else _null()


def evaluate_units(p: Plan, units: list[Unit], dist: DistContext, emit: Emit) -> Iterator[UnitScore]:
    """Evaluate this rank's shard of ``units``; yields each unit once its counts are summed over the ranks.

    Args:
        p: the plan.
        units: the units to evaluate (on every rank the same list).
        dist: the process context (``world == 1``: a single process).
        emit: :class:`~dtn_bench.events.Progress` (task ``images``: images over all ranks) after every batch,
            :class:`~dtn_bench.events.Estimate` after the warm-up.

    Raises:
        DTNBenchError: an image of the wrong size, or an unreadable one under ``strict``, on any rank.
    """
    from dtn_bench.shifts.plan import model_classes

    device = p.loop.device
    model = p.model.to(device)
    shard = _Shard(p, units, dist, model_classes(model))
    mean = torch.tensor(p.input.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(p.input.std, device=device).view(1, -1, 1, 1)
    warm = _WarmUp(device, dist.world, sum(len(u) for u in units), len(shard.dataset) <= 3 * p.loop.batch_size, emit)
    yield from shard.finished()  # units with no local images on this rank
    for bi, (images, labels, index, status, hw) in enumerate(shard.loader()):
        if device.type == "cuda":
            images, status, hw = LD.gpu_decode(images, shard.dataset, index, status, device)
        fatal = _fatal(p, shard.dataset, index, status, hw)
        if fatal is not None:
            if dist.world == 1:
                raise DTNBenchError(fatal)
            yield from shard.finished(fatal)
        ok = status == LD.OK
        logits = None
        if ok.any():
            # CPU decoding: pinned batch, asynchronous copy (GPU decoding: already there)
            x = images.to(device, non_blocking=True)
            x = x[ok.to(device)].float().div_(255).sub_(mean).div_(std)
            with torch.inference_mode(), autocast(device, p.loop.amp):
                logits = model(x).float().cpu()
        shard.count(logits, labels, index, ok)
        emit(Progress("images", advance=len(index) * dist.world))
        warm.after(bi, len(index))
        yield from shard.finished()
    yield from shard.finished()
    if shard.next != len(units):  # cannot happen unless the loader lost items
        raise RuntimeError("evaluation ended with unfinished units")


def _fatal(p: Plan, dataset: LD.ImageItems, index, status, hw) -> str | None:
    wrong = (status == LD.WRONG_SIZE).nonzero().flatten().tolist()
    if wrong:
        i = wrong[0]
        h, w = hw[i].tolist()
        return p.size_error(dataset.where(int(index[i])), (h, w))
    if p.loop.strict:
        bad = (status == LD.UNREADABLE).nonzero().flatten().tolist()
        if bad:
            return f"unreadable image {dataset.where(int(index[bad[0]]))} ({p.loop.strict_reason})"
    return None
