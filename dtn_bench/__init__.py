"""dtn-bench: benchmarking suite for token normalisers in transformers, built around Dynamic Token Normalization.

``import dtn_bench`` is cheap: it imports neither torch nor timm, so ``dtn-bench --help`` starts at once. What it
used to import eagerly is still there:

- ``dtn_bench.DTN``, ``dtn_bench.build_norm`` (and the ``models`` / ``norms`` subpackages) are lazy attributes,
  imported on first use (PEP 562 module ``__getattr__``).
- The DTN paper's ViT zoo is registered with timm as soon as both packages are imported, in either order: at once
  if timm is already imported, otherwise right after ``import timm`` finishes (a one-shot import hook on
  ``sys.meta_path``). So ``import dtn_bench, timm; timm.create_model("vit_s_dtn")`` works as before.
  ``import dtn_bench.models`` registers it explicitly.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

_LAZY = {"DTN": "dtn_bench.norms", "build_norm": "dtn_bench.norms"}
_SUBPACKAGES = ("models", "norms")


def __getattr__(name: str):
    """Imports the heavy attributes (``DTN``, ``build_norm``, ``models``, ``norms``) on first access."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBPACKAGES))


def _register_zoo() -> None:
    """Registers the zoo with timm (importing :mod:`dtn_bench.models` does; a module already importing is left be)."""
    if "dtn_bench.models" not in sys.modules:
        importlib.import_module("dtn_bench.models")


class _ThenRegisterZoo(importlib.abc.Loader):
    """Wraps timm's own loader: runs it, then registers the zoo, then puts the original loader back."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        module.__loader__ = module.__spec__.loader = self._loader
        _register_zoo()


class _ZooHook(importlib.abc.MetaPathFinder):
    """One-shot ``sys.meta_path`` finder: on ``import timm``, hands back timm's spec with the wrapped loader."""

    dtn_bench_zoo_hook = True  # found by this mark, not by class, so that a re-imported dtn_bench sees it too

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "timm":
            return None
        _remove_hook()  # one shot, and the lookup below must not find this finder again
        spec = importlib.util.find_spec("timm")
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenRegisterZoo(spec.loader)
        return spec


def _remove_hook() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "dtn_bench_zoo_hook", False)]


if "timm" in sys.modules:
    _register_zoo()
elif not any(getattr(f, "dtn_bench_zoo_hook", False) for f in sys.meta_path):
    sys.meta_path.insert(0, _ZooHook())
