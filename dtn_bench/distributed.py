"""One process of a (possibly) multi-process job: its rank and device, the process group and exact reductions.

The one place that reads torchrun's environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``: :func:`process_rank`,
:func:`local_rank`, :func:`world_size_from_env`) and resolves a ``--device`` (:func:`resolve_device`), with one
vocabulary for every command: ``auto`` is the GPU of this process when one is visible, else the CPU; ``cuda`` is
this process's GPU (``cuda:LOCAL_RANK`` under torchrun); ``cuda:N`` that GPU; ``cpu`` the CPU.

Shared by the suites that scale out (LRA ListOps training with DDP, image evaluation sharded over ranks). In a
single process every method is a no-op that returns its input, so the same code runs with and without torchrun.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

from dtn_bench.errors import DTNBenchError


@dataclass
class DistContext:
    """Where this process runs: rank, number of processes, the torch device, and whether it made the group."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    created: bool = False

    @property
    def is_main(self) -> bool:
        """Whether this is the main process (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether the job has more than one process."""
        return self.world > 1

    def barrier(self) -> None:
        """Waits until every process gets here (a no-op in a single process)."""
        if self.distributed:
            torch.distributed.barrier()

    def all_sum(self, values: list[float]) -> list[float]:
        """Sums of ``values`` over the processes (float64; exact for counts below 2^53)."""
        if not self.distributed:
            return list(values)
        return self.sum(torch.tensor(values, dtype=torch.float64)).tolist()

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """Element-wise sum of ``t`` over the processes, on the CPU."""
        if not self.distributed:
            return t
        t = t.to(self._comm_device())
        torch.distributed.all_reduce(t)
        return t.cpu()

    def gather(self, obj: Any) -> list[Any]:
        """``[obj of rank 0, obj of rank 1, ...]`` on every process."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """``obj`` of rank 0 on every process."""
        if not self.distributed:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def sync_buffers(self, module: torch.nn.Module) -> None:
        """Rank 0's buffers (e.g. BatchNorm running statistics) on every process.

        DDP broadcasts them only at the start of a training forward, after which each rank updates its own from its
        local batch.
        """
        if not self.distributed:
            return
        for buf in module.buffers():
            torch.distributed.broadcast(buf.data, src=0)

    def close(self) -> None:
        """Destroys the process group if this context created it."""
        if self.created and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    def _comm_device(self) -> torch.device:
        return self.device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")


def process_rank() -> int:
    """This process's rank as torchrun announces it (``RANK``), 0 without torchrun."""
    return _env_int("RANK", 0)


def local_rank() -> int:
    """This process's rank on its node (``LOCAL_RANK``, the GPU it takes), 0 without torchrun."""
    return _env_int("LOCAL_RANK", 0)


def is_main_process() -> bool:
    """Whether this is rank 0 (the process that writes and prints)."""
    return process_rank() == 0


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, str(default)))
    except ValueError:
        raise DTNBenchError(f"{name}={os.environ[name]!r} is not a number") from None


def default_device() -> str:
    """What ``auto`` resolves to by name: ``cuda`` when a GPU is visible, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device_amp(device: str, amp: str | None) -> None:
    """One-line errors for an ``--amp`` other than bf16, a device not auto / cpu / cuda, or cuda without a GPU."""
    if amp not in (None, "bf16"):
        raise DTNBenchError(f"--amp {amp!r}: only bf16 is supported")
    if device.split(":")[0] not in ("auto", "cpu", "cuda"):
        raise DTNBenchError(f"--device {device!r}: use auto, cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DTNBenchError(f"--device {device} but no CUDA GPU is visible")


def world_size_from_env() -> int:
    """Processes of this job as torchrun announces them (``WORLD_SIZE``), 1 without torchrun."""
    return max(1, _env_int("WORLD_SIZE", 1))


def check_device(command: str, device: str | torch.device, hint: str = "") -> torch.device:
    """``device`` as a torch device, or a one-line error naming ``command``.

    The error comes when ``device`` is not a device string, or asks for a CUDA GPU that is not visible (``hint``: what
    to do instead, appended).
    """
    if str(device) == "auto":
        return resolve_device("auto", local_rank())
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DTNBenchError(f"{command}: --device {device!r} is not a device (auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DTNBenchError(f"{command}: --device {device} but no CUDA GPU is visible{hint}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DTNBenchError(f"{command}: --device {device}: only {torch.cuda.device_count()} GPU(s) visible")
    return dev


def resolve_device(name: str, rank: int | None = None) -> torch.device:
    """This process's device for ``--device name``: ``auto`` -> its GPU when there is one, else the CPU.

    ``cuda`` is ``cuda:<rank>`` (``rank``: default :func:`local_rank`, torchrun's ``LOCAL_RANK``); ``cuda`` without a
    GPU is an error.
    """
    name = str(name)
    if name == "auto":
        name = default_device()
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DTNBenchError(f"--device {name}: no CUDA GPU is visible to torch (use --device cpu)")
        return torch.device(name if ":" in name else f"cuda:{local_rank() if rank is None else rank}")
    return torch.device(name)


def init_distributed(device: str = "auto") -> DistContext:
    """The process context: a multi-process one under torchrun (``WORLD_SIZE`` > 1), otherwise a single-process one.

    Under torchrun the process group is initialised (NCCL on GPUs, gloo on CPUs) once.
    """
    world, rank, local = world_size_from_env(), process_rank(), local_rank()
    if world > 1 and device.startswith("cuda:"):
        raise DTNBenchError(f"--device {device}: under torchrun each process takes the GPU of its LOCAL_RANK; "
                            "use --device cuda")
    dev = resolve_device(device, local)
    created = False
    if world > 1 and dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not torch.distributed.is_initialized():
        if dev.type == "cuda":
            torch.distributed.init_process_group("nccl", device_id=dev)
        else:
            torch.distributed.init_process_group("gloo")
        created = True
    return DistContext(rank=rank, world=world, local_rank=local, device=dev, created=created)
