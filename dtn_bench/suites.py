"""Suites: registered benchmarks with their description, metrics and presets.

Presets are YAML files in the repository's ``suites/`` folder (installed as ``dtn_bench._suites``), one file per
suite, one mapping per preset. A run's config is the preset with the CLI flags merged over it.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from dtn_bench.errors import DTNBenchError
from dtn_bench.registry import Registry, unknown_name_message

SUITES = Registry("suite")


@dataclass(frozen=True)
class SuiteInfo:
    """What a suite measures."""

    name: str
    description: str
    metrics: tuple[str, ...]
    higher_is_better: dict


def _info(name: str, description: str, metrics: dict[str, bool]) -> SuiteInfo:
    info = SuiteInfo(name, description, tuple(metrics), dict(metrics))
    SUITES.register(name, description, info=info)(lambda: info)
    return info


BENCH_NORMS = _info("bench-norms", "time of each normaliser (fwd, fwd+bwd) at one shape, DTN vs the authors' "
                    "algorithm, and vit_s_ln vs vit_s_dtn throughput",
                    {"time_ms": False, "speedup": True, "throughput_img_s": True, "ratio": True})
BENCH_LRA_SCALING = _info("bench-lra-scaling", "time and tensor allocations of one LRA encoder training step vs "
                          "sequence length (transformer, bigbird, reformer x LN, DTN) and their log-log slopes",
                          {"time_ms": False, "alloc_mib": False, "peak_mem_mib": False, "loglog_slope_time": False,
                           "loglog_slope_alloc": False, "loglog_slope_peak_mem": False})
PROFILE = _info("profile", "per model x normaliser: params, GMACs (+ the norms' analytic GMACs), throughput, "
                "latency p50/p90 at batch 1, peak memory, MFU on GPUs; one process per configuration",
                {"params_m": False, "gmacs": False, "norm_gmacs": False, "norm_gmacs_dense": False,
                 "throughput_img_s": True, "throughput_seq_s": True, "latency_ms_p50": False, "latency_ms_p90": False,
                 "peak_mem_mib": False, "mfu": True})
LRA_LISTOPS = _info("lra-listops", "Long-Range Arena ListOps: train and test Transformer, BigBird and Reformer with "
                    "each normaliser (accuracy, loss, learning curves, tokens/s, memory)",
                    {"accuracy": True, "loss": False, "tokens_s": True, "train_time_s": False, "params": False,
                     "peak_mem_mib": False, "peak_rss_mib": False})
IMAGENET_C = _info("imagenet-c", "ImageNet-C robustness: top-1 error per corruption and severity, CE, mCE and "
                   "relative mCE (AlexNet-normalised), and the evaluation pipeline's images/s",
                   {"top1_err": False, "top5_err": False, "ce": False, "relative_ce": False, "mce": False,
                    "relative_mce": False, "mean_corruption_err": False, "throughput_img_s": True, "ratio": True})
BENCH_CORRUPT = _info("bench-corrupt", "ImageNet-C corruption generator speed: ms per 224 image for each corruption "
                      "and one 15-corruption pass, images/s, and imagecorruptions timed beside it when installed",
                      {"time_ms": False, "cpu_time_ms": False, "throughput_img_s": True, "speedup": True})


def load_presets(suite: str) -> dict[str, dict]:
    """All presets of ``suite`` (``{}`` when it has no preset file)."""
    import yaml

    SUITES.get(suite)
    try:
        text = resources.files("dtn_bench._suites").joinpath(f"{suite}.yaml").read_text()
    except (FileNotFoundError, ModuleNotFoundError):
        return {}
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise DTNBenchError(f"suites/{suite}.yaml: expected a mapping of presets")
    return data


def load_preset(suite: str, preset: str) -> dict:
    """One preset of ``suite`` as a dict (its ``description`` key removed)."""
    presets = load_presets(suite)
    if preset not in presets:
        raise DTNBenchError(unknown_name_message(f"{suite} preset", preset, list(presets)))
    out = dict(presets[preset])
    out.pop("description", None)
    return out
