"""The environment a run was made in: versions, hardware, git commit, time.

Heavy packages are never imported at module load. Versions come from package metadata; ``torch`` is imported only
when the CUDA device has to be asked for its name. Nothing here raises: whatever cannot be found is ``"unknown"``.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

UNKNOWN = "unknown"
_GIT_TIMEOUT_S = 5.0


def _package_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
    except Exception:  # a broken install must not break a run
        return UNKNOWN


def dtn_bench_version() -> str:
    """Returns the installed ``dtn-bench`` version, else ``dtn_bench.__version__``, else ``"unknown"``."""
    try:
        return importlib.metadata.version("dtn-bench")
    except Exception:
        pass
    try:
        import dtn_bench

        return str(getattr(dtn_bench, "__version__", UNKNOWN))
    except Exception:
        return UNKNOWN


def _torch():
    """Imports torch if it is installed and importable, else returns ``None``."""
    try:
        import torch
    except Exception:
        return None
    return torch


def _cpu_name() -> str:
    """``cpu: <model name>`` (Linux's /proc/cpuinfo; elsewhere what the platform module knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"cpu: {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return f"cpu: {platform.processor() or platform.machine() or UNKNOWN}"


def device_name(device: str) -> str:
    """Human-readable name of a torch device string.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` ...

    Returns:
        The GPU model for CUDA devices (e.g. ``"NVIDIA H100 80GB HBM3"``), ``"cpu: <processor>"`` for the CPU, and
        ``"<device> (not available)"`` for a CUDA device this machine does not have.
    """
    kind = str(device).split(":", 1)[0].strip().lower()
    if kind == "cpu":
        return _cpu_name()
    if kind == "cuda":
        torch = _torch()
        try:
            if torch is not None and torch.cuda.is_available():
                return str(torch.cuda.get_device_name(torch.device(device)))
        except Exception:
            pass
        return f"{device} (not available)"
    if kind == "mps":
        return f"mps: {platform.machine() or UNKNOWN}"
    return str(device)


def git_sha(cwd: str | Path | None = None) -> str:
    """Commit hash of the dtn-bench source the code runs from (``cwd``: of the repository containing that folder).

    By default the repository is the one whose top level holds this package (an editable install or a checkout on
    ``PYTHONPATH``), never the working directory's: a run started from a user's own project must not record that
    project's commit. An install in site-packages has no commit (``"unknown"``), even in a venv inside a repository.

    Args:
        cwd: a folder inside the repository (the default: this package's checkout).

    Returns:
        The full ``HEAD`` hash, with ``"-dirty"`` appended when tracked files have uncommitted changes, or
        ``"unknown"`` when there is no git, no repository or no commit.
    """
    package = Path(__file__).resolve().parents[1]
    folder = Path(cwd) if cwd is not None else package

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=_GIT_TIMEOUT_S,
                              check=True).stdout.strip()

    try:
        if cwd is None and Path(git("rev-parse", "--show-toplevel")).resolve() != package.parent:
            return UNKNOWN  # this package is not the checkout's own dtn_bench (e.g. a venv inside another repository)
        sha = git("rev-parse", "HEAD")
    except Exception:
        return UNKNOWN
    if not sha:
        return UNKNOWN
    try:
        status = git("status", "--porcelain", "--untracked-files=no")
    except Exception:
        return sha
    return f"{sha}-dirty" if status else sha


def utc_now() -> str:
    """Current UTC time as an ISO 8601 string with seconds, e.g. ``"2025-01-31T12:00:00+00:00"``."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def environment() -> dict[str, Any]:
    """Describes the machine and software a run is made with.

    Returns:
        A JSON-serialisable dict with ``timestamp`` (UTC ISO), ``python``, ``platform``, ``cpu_count``,
        ``processor``, ``torch_version``, ``timm_version``, ``dtn_bench_version``, ``cuda_available``,
        ``cuda_version``, ``device`` (the GPU name when CUDA is available, else ``"cpu: <processor>"``),
        ``tf32_matmul`` and ``tf32_cudnn`` (whether CUDA may run fp32 matrix products / convolutions in TF32 at the
        time of the call; ``None`` without CUDA) and ``git_sha``. The keys ``timestamp``, ``git_sha``, the three
        versions and ``device`` match the provenance columns of the rows.
    """
    torch = _torch()
    cuda_available = False
    cuda_version = None
    tf32 = (None, None)
    if torch is not None:
        try:
            cuda_available = bool(torch.cuda.is_available())
            cuda_version = getattr(torch.version, "cuda", None)
            if cuda_available:
                tf32 = (bool(torch.backends.cuda.matmul.allow_tf32), bool(torch.backends.cudnn.allow_tf32))
        except Exception:
            cuda_available = False
    return {
        "timestamp": utc_now(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine() or UNKNOWN,
        "torch_version": _package_version("torch"),
        "timm_version": _package_version("timm"),
        "dtn_bench_version": dtn_bench_version(),
        "cuda_available": cuda_available,
        "cuda_version": cuda_version,
        "device": device_name("cuda") if cuda_available else _cpu_name(),
        "tf32_matmul": tf32[0],
        "tf32_cudnn": tf32[1],
        "git_sha": git_sha(),
    }
