"""The normaliser registry and the facts each normaliser declares beside its class (:class:`NormInfo`).

A normaliser is one module: its class (``forward(x, mask=None)`` on ``[B, T, C]`` tokens) and one registration,
``@register_norm(name, INFO, cls=TheClass)`` on a factory with the one constructor signature
``(dim, *, device=None, dtype=None, <context it uses>, <its options>)``. The context :func:`build_norm` hands over is
:data:`CONTEXT` (``num_heads``, ``grid_size``, ``num_prefix_tokens``, ``slot``); a factory names the entries it
uses, and its other keyword-only parameters are its options. A keyword that is neither is a one-line error naming the
normaliser and the keyword (nothing is silently ignored).

Analytic cost (``profile``'s ``norm_gmacs``; :meth:`NormInfo.macs`), one convention for all: one MAC for each
multiply, add, subtract, multiply-add or divide per element, and one for each element-wise transcendental function
(``tanh``, ``erf``), taken over the whole input ``[N, T, C]`` of the layer in an inference pass; per-token or per-head
scalars (square roots, sigmoids, reductions of already-reduced sums) are not counted. ``macs_per_element * C`` is the
count per token; normalisers with inter-token statistics (DTN) add their own term (``inter_token_macs``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial

from dtn_bench.errors import DTNBenchError
from dtn_bench.registry import Registry

NORMS = Registry("norm")

CONTEXT = ("num_heads", "grid_size", "num_prefix_tokens", "slot")
"""What the model building a norm slot knows and hands every factory that names it: attention heads, the patch grid
(``None`` for 1-D sequences), leading class / distillation tokens, and the slot (:data:`SLOTS`)."""
SLOTS = ("attn", "ffn", "final")
"""Norm slots of a transformer: before (pre), after (post) or around (peri) the attention sublayer (``attn``), the
MLP sublayer (``ffn``), and the final norm (``final``). DyT's and Derf's per-slot ``alpha_init`` key on them."""
MASK_KINDS = {
    "per-token": "each token from its own features: a padding mask changes nothing",
    "real-tokens": "statistics across tokens are taken over the real tokens only",
    "sequence": "statistics over real tokens on 1-D sequences (grid_size=None); a 2-D grid layer takes no mask",
}
"""How a normaliser treats a boolean padding mask ``[B, T]`` (True = real token)."""


@dataclass(frozen=True)
class NormInfo:
    """The facts of one normaliser, declared beside its class; ``profile``, ``bench``, the zoo and tables read them.

    Attributes:
        label: the papers' short name (``LN``, ``DTN``, ``DyT``, ``Derf``).
        formula: the formula, one line.
        macs_per_element: MACs per element of the layer's input (the module docstring's convention).
        macs_passes: what that count is made of (the passes over the input).
        paper: where the normaliser comes from.
        mask: how it treats a padding mask, a key of :data:`MASK_KINDS`.
        zoo_suffix: the suffix of its zoo models (``vit_s_<suffix>``); ``None``: not in the zoo.
        small_zoo: whether the 32 / 64 px models (``vit_cifar_t_<suffix>``, ``vit_tiny_t_<suffix>``) have it too.
        published: the tables of :mod:`dtn_bench.results.published` that hold numbers published for it (each table
            is one source document, with its source).
        inter_token_macs: ``(module, input shape) -> (MACs as computed, MACs in the dense T x T form)`` of
            inter-token statistics on top of the element-wise passes; ``None`` for normalisers without any.
    """

    label: str
    formula: str
    macs_per_element: int
    macs_passes: str
    paper: str = ""
    mask: str = "per-token"
    zoo_suffix: str | None = None
    small_zoo: bool = False
    published: tuple[str, ...] = ()
    inter_token_macs: Callable[..., tuple[int, int]] | None = None

    def __post_init__(self):
        if self.mask not in MASK_KINDS:
            raise ValueError(f"NormInfo.mask must be one of {', '.join(MASK_KINDS)}, got {self.mask!r}")

    def macs(self, module, shape: tuple[int, ...]) -> tuple[int, int]:
        """``(as computed, dense form)`` MACs of one forward of ``module`` on an input of ``shape`` ``[N, T, C]``."""
        n = 1
        for v in shape:
            n *= int(v)
        elementwise = self.macs_per_element * n
        if self.inter_token_macs is None:
            return elementwise, elementwise
        inter, dense = self.inter_token_macs(module, tuple(int(v) for v in shape))
        return elementwise + inter, elementwise + dense

    def macs_per_token(self, dim: int) -> int:
        """The element-wise MACs of one token of ``dim`` channels (inter-token statistics not included)."""
        return self.macs_per_element * dim

    def takes_mask(self, grid_size=None) -> bool:
        """Whether a layer built with ``grid_size`` can honour a padding mask."""
        return self.mask != "sequence" or grid_size is None


_BY_CLASS: dict[type, str] = {}


def register_norm(name: str, info: NormInfo, *, cls: type | None = None,
                  also: tuple[type, ...] = ()) -> Callable[[Callable], Callable]:
    """Decorator registering a normaliser's factory under ``name`` with its facts, where its class is defined.

    Args:
        name: the registered name (``--norm NAME``).
        info: its :class:`NormInfo`.
        cls: the class the factory builds: :func:`info_of` finds ``name`` from a built module (the first name
            registered for a class wins: ``dtn`` before ``dtn_var``).
        also: other classes counted as this normaliser (torch's ``nn.LayerNorm`` for ``layernorm``).
    """

    def deco(factory: Callable) -> Callable:
        NORMS.register(name, info.formula, formula=info.formula, info=info)(factory)
        for c in ((cls,) if cls is not None else ()) + tuple(also):
            _BY_CLASS.setdefault(c, name)
        return factory

    return deco


def info(name: str) -> NormInfo:
    """The :class:`NormInfo` of the registered normaliser ``name`` (one-line error with near matches)."""
    return NORMS.get(name).meta["info"]


def label(name: str) -> str:
    """The papers' short name of a normaliser (its ``NormInfo.label``), or ``name`` itself when it is not registered."""
    return info(name).label if name in NORMS else name


def info_of(module) -> tuple[str, NormInfo] | None:
    """``(registered name, facts)`` of a normaliser module, by its class (or a base class); ``None`` for others."""
    for klass in type(module).__mro__:
        name = _BY_CLASS.get(klass)
        if name is not None:
            return name, info(name)
    return None


def zoo_suffixes(small: bool = False) -> dict[str, str]:
    """Zoo name suffix -> registered normaliser, in registration order (``small``: the 32 / 64 px models')."""
    out = {}
    for e in NORMS:
        i = e.meta["info"]
        if i.zoo_suffix is not None and (i.small_zoo or not small):
            out[i.zoo_suffix] = e.name
    return out


def _options(name: str) -> tuple[set[str], set[str]]:
    """``(context names, option names)`` the factory of ``name`` takes."""
    params = inspect.signature(NORMS.get(name).factory).parameters
    kw = {p.name for p in params.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    context = kw & set(CONTEXT)
    return context, kw - context - {"device", "dtype"}


def norm_context(name: str) -> list[str]:
    """The context entries (:data:`CONTEXT`) the factory of ``name`` takes, sorted."""
    return sorted(_options(name)[0])


def norm_options(name: str) -> list[str]:
    """The options (keyword arguments besides the context) the normaliser ``name`` takes, sorted."""
    return sorted(_options(name)[1])


def check_norm_kwargs(name: str, kwargs: Mapping | None) -> None:
    """One-line error when ``kwargs`` holds a keyword that the normaliser ``name`` does not take."""
    options = _options(name)[1]
    for key in kwargs or {}:
        if key not in options:
            raise DTNBenchError(f"norm {name!r}: unknown keyword {key!r} (its options: "
                                f"{', '.join(sorted(options)) or 'none'})")


def build_norm(name: str, dim: int, *, num_heads: int = 1, grid_size=None, num_prefix_tokens: int = 0,
               slot: str | None = None, masked: bool = False, device=None, dtype=None, **kw):
    """Build the normaliser ``name`` for ``dim`` channels.

    Args:
        name: a registered name (``dtn-bench list norms``).
        dim: channels.
        num_heads: attention heads (DTN's groups, GroupNorm's groups, PowerNorm's group-scaling groups).
        grid_size: patch grid for DTN; ``None`` for 1-D sequences.
        num_prefix_tokens: leading class/distillation tokens (DTN normalises them with LN statistics).
        slot: the slot the layer fills, one of :data:`SLOTS` (``None``: not in a model; DyT's and Derf's per-slot
            ``alpha_init`` need it).
        masked: the layer will be called with a padding mask: a normaliser that cannot honour one here is an error.
        device: parameter device.
        dtype: parameter dtype.
        **kw: options of that normaliser (``eps``, DTN's ``window``, ``pool_to``, DyT's and Derf's ``alpha_init``,
            PowerNorm's ``warmup_iters`` ...; :func:`norm_options`); an unknown one is a one-line error.

    Raises:
        DTNBenchError: an unknown name, an unknown keyword, an unknown slot, or a padding mask it cannot take.
    """
    entry = NORMS.get(name)
    check_norm_kwargs(name, kw)
    if slot is not None and slot not in SLOTS:
        raise DTNBenchError(f"norm {name!r}: unknown slot {slot!r}: choose {', '.join(SLOTS)}")
    norm_info = entry.meta["info"]
    if masked and not norm_info.takes_mask(grid_size):
        raise DTNBenchError(f"norm {name!r} cannot take a padding mask on a 2-D grid ({grid_size}): "
                            f"{MASK_KINDS[norm_info.mask]}")
    context, _ = _options(name)
    given = {"num_heads": num_heads, "grid_size": grid_size, "num_prefix_tokens": num_prefix_tokens, "slot": slot}
    return entry.factory(dim, device=device, dtype=dtype, **{k: given[k] for k in context}, **kw)


def norm_layer(name: str, **context):
    """A timm-style ``norm_layer(dim, *, device=None, dtype=None, **kw)`` for ``name`` with fixed context."""
    NORMS.get(name)  # fail early on an unknown name
    extra = {k: v for k, v in context.items() if k not in CONTEXT and k not in ("masked", "device", "dtype")}
    check_norm_kwargs(name, extra)
    return partial(build_norm, name, **context)


def alpha_for_slot(norm: str, alpha_init, slot: str | None) -> float:
    """The initial ``alpha`` of a DyT / Derf layer in ``slot``.

    Args:
        norm: the normaliser's name (for the error message).
        alpha_init: one number for every slot, or a mapping ``{slot: value}`` over :data:`SLOTS` (the authors'
            per-slot recipes: attention-side, FFN, final).
        slot: the layer's slot (``None``: not in a model).

    Raises:
        DTNBenchError: a mapping without a value for ``slot``, or with an unknown slot, or a mapping with no slot.
    """
    if not isinstance(alpha_init, Mapping):
        return float(alpha_init)
    unknown = [k for k in alpha_init if k not in SLOTS]
    if unknown:
        raise DTNBenchError(f"norm {norm!r}: alpha_init names unknown slot {unknown[0]!r}: choose {', '.join(SLOTS)}")
    if slot is None:
        raise DTNBenchError(f"norm {norm!r}: a per-slot alpha_init needs the layer's slot (built outside a model)")
    if slot not in alpha_init:
        raise DTNBenchError(f"norm {norm!r}: alpha_init has no value for slot {slot!r} (it has "
                            f"{', '.join(alpha_init)})")
    return float(alpha_init[slot])
