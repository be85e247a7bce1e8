"""Suites: the registry of :class:`~dtn_bench.runner.Suite` objects, and their presets.

Each suite is defined in its own module (:data:`SUITE_MODULES`) and registered there with :func:`register`; a suite
outside the package (a test's toy suite) registers the same way. Presets are YAML files in the repository's
``suites/`` folder (installed as ``dtn_bench._suites``), one file per suite, one mapping per preset. A run's config
is the preset with the CLI flags merged over it.
"""

from __future__ import annotations

from importlib import resources

from dtn_bench.errors import DTNBenchError
from dtn_bench.registry import Registry, unknown_name_message

SUITE_MODULES: dict[str, str] = {
    "bench-norms": "dtn_bench.bench.norms",
    "bench-seq-norms": "dtn_bench.bench.seq_norms",
    "bench-lra-scaling": "dtn_bench.bench.scaling",
    "profile": "dtn_bench.profile.suite",
    "lra-listops": "dtn_bench.lra.suite",
    "imagenet-c": "dtn_bench.imagenet_c.suite",
    "bench-imagenet-c-pipeline": "dtn_bench.imagenet_c.suite",
    "bench-corrupt": "dtn_bench.bench.corrupt",
    "cifar-c": "dtn_bench.cifar_c.suite",
    "shifts": "dtn_bench.shifts.suite",
    "train": "dtn_bench.train.suite",
    "robustness": "dtn_bench.robustness.suite",
}
"""Where each built-in suite is defined (imported on first use, so ``--help`` stays instant)."""


class SuiteRegistry(Registry):
    """The registry of :class:`~dtn_bench.runner.Suite` objects; the built-in suites' modules load on first look-up."""

    def __init__(self) -> None:
        super().__init__("suite")
        self._loaded = False

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            from importlib import import_module

            for module in SUITE_MODULES.values():
                import_module(module)

    def __contains__(self, name: str) -> bool:
        self._load()
        return super().__contains__(name)

    def __iter__(self):
        self._load()
        return super().__iter__()

    def __len__(self) -> int:
        self._load()
        return super().__len__()

    def names(self) -> list[str]:
        """The registered suite names, in registration order (built-in suites loaded first)."""
        self._load()
        return super().names()

    def get(self, name: str):
        """The suite entry for ``name`` (built-in suites loaded first); an error with the closest matches if none."""
        self._load()
        return super().get(name)

    def list(self, pattern: str | None = None):
        """Suite entries matching a shell-style ``pattern`` (a substring if no wildcard); built-ins loaded first."""
        self._load()
        return super().list(pattern)

    def registered(self) -> list:
        """The suites registered so far, without loading the built-in ones (a test's toy suite, a loaded built-in)."""
        return [e.meta["suite"] for e in super().__iter__()]


SUITES = SuiteRegistry()


def register(suite):
    """Register a :class:`~dtn_bench.runner.Suite` (its ``name``, ``description``); returns it."""
    SUITES.register(suite.name, suite.description, suite=suite)(lambda: suite)
    return suite


def get_suite(name: str):
    """The registered :class:`~dtn_bench.runner.Suite` ``name`` (one-line error with the closest names)."""
    return SUITES.get(name).meta["suite"]


def all_suites() -> list:
    """Every registered suite, in registration order."""
    return [e.meta["suite"] for e in SUITES]


def _preset_text(suite: str) -> str | None:
    """The text of ``suites/<suite>.yaml`` (``None``: the suite has no preset file)."""
    try:
        return resources.files("dtn_bench._suites").joinpath(f"{suite}.yaml").read_text()
    except (FileNotFoundError, ModuleNotFoundError):
        return None


def load_presets(suite: str) -> dict[str, dict]:
    """All presets of ``suite`` (``{}`` when it has no preset file); broken YAML is a one-line error naming the line."""
    import yaml

    if suite not in SUITE_MODULES:
        SUITES.get(suite)
    text = _preset_text(suite)
    if text is None:
        return {}
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise DTNBenchError(f"suites/{suite}.yaml{where}: not valid YAML ({what})") from None
    if not isinstance(data, dict):
        raise DTNBenchError(f"suites/{suite}.yaml: expected a mapping of presets")
    return data


def load_preset(suite: str, preset: str) -> dict:
    """One preset of ``suite`` as a dict (its ``description`` key removed)."""
    presets = load_presets(suite)
    if preset not in presets:
        raise DTNBenchError(unknown_name_message(f"{suite} preset", preset, list(presets)))
    if not isinstance(presets[preset], dict):
        raise DTNBenchError(f"suites/{suite}.yaml preset {preset!r}: expected a mapping of settings")
    out = dict(presets[preset])
    out.pop("description", None)
    return out
