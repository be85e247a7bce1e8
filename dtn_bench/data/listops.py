"""Long-Range Arena ListOps: a seeded generator, the tokeniser, a validating loader and a token cache.

Data format (as in the LRA release, ``lra_release/listops-1000/``): three tab-separated files ``basic_train.tsv``,
``basic_val.tsv`` and ``basic_test.tsv`` with the header ``Source<TAB>Target``, lines ending in CRLF as the official
generator's ``csv.writer`` writes them (the loader accepts LF and CRLF). Source is the fully bracketed binary
rendering of a tree: ``MAX(2, 9)`` is ``( ( ( [MAX 2 ) 9 ) ] )``. Target is the value of the tree, a digit 0-9.

Generator (the official LRA specification, made reproducible):
    - operators ``[MIN``, ``[MAX``, ``[MED`` (``int`` of the median: the mean of the two middle values, truncated,
      for an even count) and ``[SM`` (sum modulo 10), each closed by ``]``; leaves are the digits 0-9;
    - the root is at depth 1; below ``max_depth`` a node is an operator with probability 0.25, else a digit; at
      ``max_depth`` it is always a digit; an operator has ``randint(2, max_args)`` children (inclusive);
    - a tree is kept iff ``min_length < length < max_length``, length being its number of tokens after
      tokenisation (operators, digits and ``]``). A tree is abandoned as soon as it reaches ``max_length`` tokens:
      that changes which random numbers are drawn, not the distribution of the trees kept.
    - Deterministic: the sample stream is cut into shards of :data:`SHARD_SIZE` accepted samples; shard ``i`` draws
      from its own :class:`random.Random` seeded from ``sha256("<seed>/<i>")`` and uses only ``random()`` (whose
      sequence Python guarantees across versions). Shards are concatenated in index order, duplicates (same
      Source) are dropped keeping the first occurrence, and the first ``train`` samples form the training split,
      the next ``val`` the validation split and the next ``test`` the test split. The output therefore depends on
      the arguments only, never on the number of worker processes, and no Source appears twice in or across splits.

Tokeniser: delete ``(`` and ``)``, turn ``]`` into ``X``, split on whitespace. Vocabulary (fixed ids, see
:data:`VOCAB`): ``<pad>`` 0, ``<unk>`` 1, ``<cls>`` 2, ``[MIN`` 3, ``[MAX`` 4, ``[MED`` 5, ``[SM`` 6, ``X`` 7 and the
digits ``0``-``9`` as 8-17 (:data:`VOCAB_SIZE` = 18).

Loader and length policy: :func:`load_split` returns the token ids of a split as a ``[N, max_len]`` array padded with
:data:`PAD_ID`. No CLS token is stored: ``max_len`` counts the sequence's own tokens only, and a model that wants a
CLS position prepends :data:`CLS_ID` (or a learned vector) itself, so its input is ``max_len + 1`` long (2001 for
the LRA setting ``max_len = 2000``, which holds every generated sample since their lengths are below 2000). A
sequence longer than ``max_len`` is, under policy ``"error"`` (the default), a :class:`~dtn_bench.errors.DTNBenchError`
naming the file, line and length; under policy ``"truncate"`` it keeps its first ``max_len`` tokens and is counted
in :attr:`ListOpsSplit.truncated`, which callers must report. Every malformed line (no tab or more than one, a
label that is not an integer in 0-9, an unknown token, ``[`` and ``]`` that do not balance) is a one-line error
naming the file and line number.

Caches: :func:`load_or_build` stores the tokenised arrays as ``.npz`` files keyed by the file's size, modification
time and content hash and by ``max_len``, the policy and :data:`TOKENIZER_VERSION`, so an edited file is tokenised
again. :func:`ensure_generated` generates data for given generator arguments once into
``<cache_root>/listops-<hash of the arguments>/`` and reuses it afterwards. All files are written atomically.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import multiprocessing
import operator
import os
import random
import shutil
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from dtn_bench.errors import DTNBenchError

OPERATORS: tuple[str, ...] = ("[MIN", "[MAX", "[MED", "[SM")
"""Operator tokens as they appear in a Source."""
END = "]"
"""Closes an operator in a Source; the tokeniser turns it into :data:`END_TOKEN`."""
END_TOKEN = "X"
DIGITS: tuple[str, ...] = tuple(str(d) for d in range(10))

PAD_ID, UNK_ID, CLS_ID = 0, 1, 2
VOCAB: dict[str, int] = {"<pad>": PAD_ID, "<unk>": UNK_ID, "<cls>": CLS_ID}
VOCAB.update({tok: i for i, tok in enumerate((*OPERATORS, END_TOKEN, *DIGITS), start=3)})
VOCAB_SIZE = len(VOCAB)
ID_DTYPE = np.uint8
"""dtype of the token id arrays (18 ids fit; convert batches with ``.long()`` before an embedding)."""

TOKENIZER_VERSION = 1
"""Bump when tokenisation or the cached array layout changes (invalidates token caches)."""
GENERATOR_VERSION = 1
"""Bump when the samples generated for given arguments change (invalidates generated-data caches). Not bumped for the
switch from LF to CRLF line endings: samples, tokens and the cache key (so the rows' ``data`` label) are unchanged, and
a cache folder made before (LF files) is read alike."""

HEADER = "Source\tTarget"
EOL = "\r\n"
"""Line ending of generated files: CRLF, as the official generator's ``csv.writer`` writes (the loader reads LF too)."""
SPLITS: tuple[str, ...] = ("train", "val", "test")
POLICIES: tuple[str, ...] = ("error", "truncate")
SHARD_SIZE = 1000
"""Accepted samples per shard; fixed, so that the output does not depend on the number of workers."""
OPERATOR_PROBABILITY = 0.25

_STALL_LIMIT = 20_000  # consecutive duplicate samples after which generation gives up (too few distinct trees)
_OP_INDEX = {op: i for i, op in enumerate(OPERATORS)}
_MIB = 1 << 20

Tree = int | tuple[str, Sequence["Tree"]]
"""A ListOps tree: a digit, or ``(operator, children)`` with an operator such as ``"MAX"`` or ``"[MAX"``."""
Progress = Callable[[int, int], None]
"""Progress callback: called with (samples done, samples requested)."""


# ------------------------------------------------------------------------------------------------------------------
# Trees, values, rendering, tokenisation
def default_cache_root() -> Path:
    """The cache folder of dtn-bench: ``$DTN_BENCH_CACHE`` if set, else ``~/.cache/dtn_bench``."""
    env = os.environ.get("DTN_BENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dtn_bench"


def _operator_token(op: str) -> str:
    token = op if op.startswith("[") else "[" + op
    if token not in _OP_INDEX:
        raise DTNBenchError(f"unknown ListOps operator {op!r}: expected one of MIN, MAX, MED, SM")
    return token


def apply_operator(op: str, values: Sequence[int]) -> int:
    """The value of a ListOps operator applied to digits.

    ``MIN`` and ``MAX`` as usual; ``MED`` is ``int(median)``: for an even count the mean of the two middle values,
    truncated (``MED(1, 2, 3, 6) = int(2.5) = 2``); ``SM`` is the sum modulo 10.

    Args:
        op: ``"MIN"``, ``"MAX"``, ``"MED"`` or ``"SM"``, with or without the leading ``[``.
        values: the children's values, at least one.

    Returns:
        The value, a digit 0-9 when the values are digits.
    """
    index = _OP_INDEX[_operator_token(op)]
    if not values:
        raise DTNBenchError(f"ListOps operator {op!r} needs at least one argument")
    return _apply(index, list(values))


def _apply(index: int, values: list[int]) -> int:
    if index == 0:
        return min(values)
    if index == 1:
        return max(values)
    if index == 2:
        ordered = sorted(values)
        mid = len(ordered) // 2
        # Non-negative values: floor division is the truncation of the mean.
        return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) // 2
    return sum(values) % 10


def _check_digit(tree: Any) -> int:
    if isinstance(tree, bool) or not isinstance(tree, (int, np.integer)) or not 0 <= tree <= 9:
        raise DTNBenchError(f"ListOps leaf {tree!r} is not a digit 0-9")
    return int(tree)


def render(tree: Tree) -> str:
    """The Source string of a tree: the fully bracketed binary rendering used by LRA.

    ``render(("MAX", [2, 9]))`` is ``"( ( ( [MAX 2 ) 9 ) ] )"``: an operator with ``k`` children is ``k + 1``
    opening parentheses, the operator, each child followed by ``)``, then ``] )``.

    Args:
        tree: a digit, or ``(operator, children)``.

    Returns:
        The Source string (tokens separated by single spaces).
    """
    if not isinstance(tree, tuple):
        return str(_check_digit(tree))
    op, children = tree
    token = _operator_token(op)
    if not children:
        raise DTNBenchError(f"ListOps operator {op!r} needs at least one argument")
    inner = "".join(f" {render(child)} )" for child in children)
    return "( " * (len(children) + 1) + token + inner + " ] )"


def evaluate(tree: Tree) -> int:
    """The value (label) of a tree; see :func:`apply_operator`."""
    if not isinstance(tree, tuple):
        return _check_digit(tree)
    op, children = tree
    return apply_operator(op, [evaluate(child) for child in children])


_TOKEN_TABLE = str.maketrans({"(": None, ")": None, END: END_TOKEN})


def tokenize(source: str) -> list[str]:
    """Tokens of a Source: ``(`` and ``)`` deleted, ``]`` becomes ``X``, split on whitespace.

    Example: ``tokenize("( ( ( [MAX 2 ) 9 ) ] )") == ["[MAX", "2", "9", "X"]``.
    """
    return source.translate(_TOKEN_TABLE).split()


def encode(source: str) -> list[int]:
    """Token ids of a Source (:data:`VOCAB`); unknown tokens become :data:`UNK_ID`."""
    return [VOCAB.get(tok, UNK_ID) for tok in tokenize(source)]


# ------------------------------------------------------------------------------------------------------------------
# Generation
def _sample(rand: Callable[[], float], max_depth: int, max_args: int, max_length: int) -> tuple[str, int, int] | None:
    """One random tree as (Source, value, length), or ``None`` once it reaches ``max_length`` tokens.

    Nodes are drawn depth first (preorder); an operator's arity and kind are drawn before its children. Only
    ``rand()`` (uniform on [0, 1)) is used.
    """
    out: list[str] = []
    length = 0
    stack: list[tuple[int, int, list[int]]] = []  # open operators: (operator index, arity, values so far)
    while True:
        if len(stack) + 1 < max_depth and rand() < OPERATOR_PROBABILITY:
            arity = 2 + int(rand() * (max_args - 1))
            index = int(rand() * 4)
            out.extend(("(",) * (arity + 1))
            out.append(OPERATORS[index])
            length += 1
            stack.append((index, arity, []))
        else:
            value = int(rand() * 10)
            out.append(DIGITS[value])
            length += 1
            while stack:
                index, arity, values = stack[-1]
                values.append(value)
                out.append(")")
                if len(values) < arity:
                    break
                stack.pop()
                out.append(END)
                out.append(")")
                length += 1
                value = _apply(index, values)
            else:
                return " ".join(out), value, length
        if length >= max_length:
            return None


def _shard_seed(seed: int, shard: int) -> int:
    digest = hashlib.sha256(f"dtn-bench/listops/v{GENERATOR_VERSION}/{seed}/{shard}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _shard_task(task: tuple[int, ...]) -> list[tuple[str, int, int]]:
    """Accepted samples ``start:stop`` of one shard (the shard's first ``stop`` accepted samples are drawn)."""
    seed, shard, start, stop, min_length, max_length, max_depth, max_args = task
    rand = random.Random(_shard_seed(seed, shard)).random
    accepted: list[tuple[str, int, int]] = []
    while len(accepted) < stop:
        sample = _sample(rand, max_depth, max_args, max_length)
        if sample is not None and min_length < sample[2] < max_length:
            accepted.append(sample)
    return accepted[start:]


def _worker_shard_task(task: tuple[int, ...]) -> list[tuple[str, int, int]]:
    """:func:`_shard_task` in a pool worker, which first ends itself if its parent is gone."""
    from dtn_bench.processes import exit_if_orphaned

    exit_if_orphaned()
    return _shard_task(task)


def _possible_lengths(max_depth: int, max_args: int, cap: int) -> int:
    """Bit set of the lengths (< ``cap``) some tree can have; bit ``n`` set means length ``n`` is possible."""
    mask = (1 << cap) - 1
    below = 1 << 1  # lengths of a subtree at depth max_depth: a digit
    for _ in range(max_depth - 1):
        children = [n for n in range(cap) if below >> n & 1]
        total, partial = 0, below
        for _ in range(2, max_args + 1):
            step = 0
            for n in children:
                step |= partial << n
            partial = step & mask
            if not partial:
                break
            total |= partial
        here = ((total << 2) | (1 << 1)) & mask
        if here == below:
            break
        below = here
    return below


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise DTNBenchError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise DTNBenchError(f"{name} must be an integer, got {value!r}") from None


@dataclass(frozen=True)
class ListOpsSpec:
    """What the generator makes: the split sizes, the seed and the tree shape.

    The defaults are the LRA ListOps setting (``listops-1000``); this class is the one home of those values (the
    generator, ``dtn-bench lra generate``, the ``gen_*`` fields of :class:`~dtn_bench.lra.config.ListOpsConfig` and
    the data cache read it).

    Attributes:
        train: training samples (LRA: 96,000).
        val: validation samples (LRA: 2,000).
        test: test samples (LRA: 2,000).
        seed: random seed.
        min_length: keep trees longer than this many tokens (LRA: 500).
        max_length: keep trees shorter than this many tokens (LRA: 2,000).
        max_depth: depth at which a node is always a digit; the root is at depth 1 (LRA: 10).
        max_args: most children of an operator; the fewest is 2 (LRA: 10).
    """

    train: int = 96_000
    val: int = 2_000
    test: int = 2_000
    seed: int = 0
    min_length: int = 500
    max_length: int = 2_000
    max_depth: int = 10
    max_args: int = 10

    @classmethod
    def from_args(cls, args: Mapping[str, Any] | None = None, base: ListOpsSpec | None = None) -> ListOpsSpec:
        """``base`` (default: the LRA spec) with the generator arguments ``args`` over it, checked.

        Raises:
            DTNBenchError: an unknown argument, or invalid values (see :meth:`checked`).
        """
        given = dict(args or {})
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise DTNBenchError(f"unknown ListOps generator arguments {unknown}: expected some of {', '.join(names)}")
        return replace(base or LRA_SPEC, **given).checked()

    def as_dict(self) -> dict[str, int]:
        """The arguments as a dict, in field order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def total(self) -> int:
        """Samples over all splits."""
        return self.train + self.val + self.test

    def checked(self) -> ListOpsSpec:
        """The spec with every value an ``int``, validated.

        Raises:
            DTNBenchError: a count below 0 or all counts 0, ``min_length`` below 0 or not below ``max_length``,
                ``max_depth`` below 1, ``max_args`` below 2, or no tree can have a length strictly between
                ``min_length`` and ``max_length`` with this depth and arity.
        """
        spec = ListOpsSpec(**{name: _as_int(name, value) for name, value in self.as_dict().items()})
        for name in SPLITS:
            if getattr(spec, name) < 0:
                raise DTNBenchError(f"ListOps {name} count {getattr(spec, name)}: sample counts must be >= 0")
        if spec.total <= 0:
            raise DTNBenchError("ListOps train + val + test is 0: ask for at least one sample")
        spec._check_shape()
        return spec

    def _check_shape(self) -> None:
        if self.min_length < 0 or self.min_length >= self.max_length:
            raise DTNBenchError(f"ListOps lengths min_length {self.min_length}, max_length {self.max_length}: "
                                "need 0 <= min_length < max_length")
        if self.max_depth < 1:
            raise DTNBenchError(f"ListOps max_depth {self.max_depth}: must be >= 1")
        if self.max_args < 2:
            raise DTNBenchError(f"ListOps max_args {self.max_args}: must be >= 2")
        if not _possible_lengths(self.max_depth, self.max_args, self.max_length) >> (self.min_length + 1):
            raise DTNBenchError(f"no ListOps tree with max_depth {self.max_depth} and max_args {self.max_args} "
                                f"has a length strictly between {self.min_length} and {self.max_length} tokens")

    def cache_name(self) -> str:
        """The data cache's folder name for this spec: ``listops-<hash of the arguments and the generator version>``."""
        text = json.dumps({"generator_version": GENERATOR_VERSION, **self.as_dict()}, sort_keys=True)
        return f"listops-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


LRA_SPEC = ListOpsSpec()
"""The LRA ListOps setting (``listops-1000``)."""
DEFAULT_GENERATE_ARGS: dict[str, int] = LRA_SPEC.as_dict()
""":data:`LRA_SPEC` as generator arguments."""


def check_generate_args(**args: Any) -> dict[str, int]:
    """Validates generator arguments and returns all of them as a dict of ints.

    The arguments are fields of :class:`ListOpsSpec`; missing ones come from :data:`LRA_SPEC`.

    Raises:
        DTNBenchError: an unknown argument or invalid values (see :meth:`ListOpsSpec.checked`).
    """
    return ListOpsSpec.from_args(args).as_dict()


@dataclass
class GenerationSummary:
    """What :func:`generate` wrote.

    Attributes:
        out_dir: the output folder.
        files: split name -> TSV path.
        counts: split name -> samples written.
        label_counts: split name (and ``"all"``) -> count of each label 0-9.
        length_stats: split name (and ``"all"``) -> ``min``, ``median``, ``mean``, ``max`` of the token lengths
            (``nan`` for an empty split).
        duplicates: samples dropped because their Source appeared earlier.
        seconds: wall time of the generation.
        args: the generator arguments (without ``workers``, which does not change the output).
    """

    out_dir: Path
    files: dict[str, Path]
    counts: dict[str, int]
    label_counts: dict[str, list[int]]
    length_stats: dict[str, dict[str, float]]
    duplicates: int
    seconds: float
    args: dict[str, int] = field(default_factory=dict)

    @property
    def majority_share(self) -> float:
        """Share of the most frequent label over all splits: the accuracy of always predicting it."""
        counts = self.label_counts["all"]
        return max(counts) / max(sum(counts), 1)


def _default_mode(mode: int) -> int:
    """``mode`` with the process umask applied, as ``open`` would create a file or folder."""
    umask = os.umask(0o022)
    os.umask(umask)
    return mode & ~umask


class _SplitFiles:
    """The three TSVs, written to temporary files in the output folder and renamed into place on commit."""

    def __init__(self, out_dir: Path):
        self.paths = {split: out_dir / f"basic_{split}.tsv" for split in SPLITS}
        self._tmp: dict[str, str] = {}
        self.handles: dict[str, TextIO] = {}
        try:
            for split, path in self.paths.items():
                fd, name = tempfile.mkstemp(dir=out_dir, prefix=f".{path.name}.", suffix=".tmp")
                self._tmp[split] = name
                self.handles[split] = os.fdopen(fd, "w", encoding="utf-8", newline="")
                self.handles[split].write(HEADER + EOL)
        except BaseException:
            self.discard()
            raise

    def commit(self) -> None:
        for handle in self.handles.values():
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        for split, path in self.paths.items():
            os.chmod(self._tmp[split], _default_mode(0o666))  # mkstemp makes 0600 files; data files are shared
            os.replace(self._tmp.pop(split), path)

    def discard(self) -> None:
        for handle in self.handles.values():
            handle.close()
        for name in self._tmp.values():
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass
        self._tmp.clear()


@contextmanager
def _task_runner(workers: int) -> Iterator[Callable[[list[tuple[int, ...]]], Iterable[list[tuple[str, int, int]]]]]:
    """Runs shard tasks in order: in this process for one worker, else in a process pool (results in task order)."""
    if workers == 1:
        yield lambda tasks: map(_shard_task, tasks)
        return
    from dtn_bench.processes import sigint_held, start_worker, stop_pool

    # fork starts workers at once (the parent has imported torch; the workers never touch it); spawn elsewhere.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    pool = None
    try:
        with sigint_held():  # workers ignore Ctrl-C (start_worker); this process stops the pool on it
            pool = multiprocessing.get_context(method).Pool(workers, start_worker)
        yield lambda tasks: pool.imap(_worker_shard_task, tasks, chunksize=1)
    finally:
        if pool is not None:
            stop_pool(pool)


def _tasks(spec: ListOpsSpec, start: int, stop: int, shard_size: int) -> list[tuple[int, ...]]:
    """Tasks covering positions ``start:stop`` of the global sample stream, one per shard touched."""
    tasks = []
    position = start
    while position < stop:
        shard, offset = divmod(position, shard_size)
        end = min(stop - shard * shard_size, shard_size)
        tasks.append((spec.seed, shard, offset, end, spec.min_length, spec.max_length, spec.max_depth, spec.max_args))
        position = shard * shard_size + end
    return tasks


def _length_stats(lengths: list[int]) -> dict[str, float]:
    if not lengths:
        return {"min": float("nan"), "median": float("nan"), "mean": float("nan"), "max": float("nan")}
    arr = np.asarray(lengths)
    return {"min": float(arr.min()), "median": float(np.median(arr)), "mean": float(arr.mean()),
            "max": float(arr.max())}


class _Collector:
    """The accepted samples in stream order: repeats dropped, each written to its split, labels and lengths counted."""

    def __init__(self, spec: ListOpsSpec, files: _SplitFiles):
        self.total = spec.total
        self.bounds = np.cumsum([getattr(spec, split) for split in SPLITS]).tolist()  # sample i: first bound > i
        self.files = files
        self.labels: dict[str, list[int]] = {split: [0] * 10 for split in SPLITS}
        self.lengths: dict[str, list[int]] = {split: [] for split in SPLITS}
        self.seen: set[bytes] = set()
        self.done = self.duplicates = self.stale = 0

    @property
    def full(self) -> bool:
        return self.done >= self.total

    def add(self, batch: Iterable[tuple[str, int, int]]) -> None:
        """Take the samples of one task until the splits are full; give up after too many repeats in a row."""
        for source, target, length in batch:
            if self.full:
                break
            digest = hashlib.blake2b(source.encode(), digest_size=16).digest()
            if digest in self.seen:
                self.duplicates += 1
                self.stale += 1
                continue
            self.seen.add(digest)
            self.stale = 0
            split = SPLITS[next(i for i, bound in enumerate(self.bounds) if self.done < bound)]
            self.files.handles[split].write(f"{source}\t{target}{EOL}")
            self.labels[split][target] += 1
            self.lengths[split].append(length)
            self.done += 1
        if self.stale >= _STALL_LIMIT:
            raise DTNBenchError(
                f"only {self.done} distinct ListOps trees found for the {self.total} requested (the last {self.stale} "
                "drawn were all repeats): widen min_length/max_length, raise max_depth/max_args, or ask for fewer "
                "samples")

    def summary(self, spec: ListOpsSpec, out: Path, seconds: float) -> GenerationSummary:
        all_lengths = [n for split in SPLITS for n in self.lengths[split]]
        label_counts = {**self.labels, "all": [sum(self.labels[s][d] for s in SPLITS) for d in range(10)]}
        stats = {split: _length_stats(self.lengths[split]) for split in SPLITS}
        stats["all"] = _length_stats(all_lengths)
        return GenerationSummary(
            out_dir=out, files=dict(self.files.paths), counts={split: getattr(spec, split) for split in SPLITS},
            label_counts=label_counts, length_stats=stats, duplicates=self.duplicates, seconds=seconds,
            args=spec.as_dict(),
        )


def _draw(spec: ListOpsSpec, collector: _Collector, workers: int, progress: Progress | None) -> None:
    """Run shard tasks over the sample stream until the collector is full.

    Later rounds (needed after repeats) finish the current shard at least.
    """
    shard_size = SHARD_SIZE
    position = 0  # next position in the global stream of accepted samples
    with _task_runner(workers) as run:
        while not collector.full:
            stop = position + collector.total - collector.done
            if position:
                stop = max(stop, (position // shard_size + 1) * shard_size)
            for batch in run(_tasks(spec, position, stop, shard_size)):
                collector.add(batch)
                if progress is not None:
                    progress(collector.done, collector.total)
                if collector.full:
                    break
            position = stop


def _output_folder(out_dir: str | Path) -> Path:
    from dtn_bench.results.writer import check_output_folder  # pandas: imported when needed (CLI start-up)

    return check_output_folder(out_dir, "ListOps output folder")


def generate(
    out_dir: str | Path,
    spec: ListOpsSpec | None = None,
    *,
    workers: int = 2,
    progress: Progress | None = None,
    **args: Any,
) -> GenerationSummary:
    """Generates ListOps ``basic_{train,val,test}.tsv`` into ``out_dir``, reproducibly.

    The same arguments give byte-identical files whatever ``workers`` is (see the module docstring). Files are
    written to temporary files and renamed into place once all three are complete; existing files are replaced.

    Args:
        out_dir: output folder, created if missing.
        spec: what to generate (default: :data:`LRA_SPEC`, the LRA setting).
        workers: processes drawing shards.
        progress: called with (samples done, samples requested) as shards complete.
        **args: fields of :class:`ListOpsSpec` (``train``, ``val``, ``test``, ``seed``, ``min_length``,
            ``max_length``, ``max_depth``, ``max_args``) set over ``spec``.

    Returns:
        A :class:`GenerationSummary` (counts, label distribution, length statistics, wall time).

    Raises:
        DTNBenchError: invalid arguments (see :meth:`ListOpsSpec.checked`), ``out_dir`` is a file, or fewer distinct
            trees exist than requested.
    """
    spec = ListOpsSpec.from_args(args, spec)
    workers = _as_int("workers", workers)
    if workers < 1:
        raise DTNBenchError(f"ListOps workers {workers}: must be >= 1")
    out = _output_folder(out_dir)
    started = time.perf_counter()
    created = [p for p in (out, *out.parents) if not p.exists()]  # what mkdir makes, removed again on failure
    out.mkdir(parents=True, exist_ok=True)
    try:
        files = _SplitFiles(out)
        collector = _Collector(spec, files)
        try:
            _draw(spec, collector, workers, progress)
            files.commit()
        except BaseException:
            files.discard()
            raise
    except BaseException:
        for folder in created:  # innermost first; a folder something else wrote into stays
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    return collector.summary(spec, out, time.perf_counter() - started)


def ensure_generated(
    cache_root: str | Path | None = None,
    spec: ListOpsSpec | Mapping[str, Any] | None = None,
    *,
    workers: int = 2,
    progress: Progress | None = None,
) -> Path:
    """A data folder for a generator spec, generated on first use and reused afterwards.

    The folder is ``<cache_root>/<spec.cache_name()>``, the hash covering the full arguments (defaults filled in) and
    :data:`GENERATOR_VERSION`. Data are generated into a temporary folder beside it, which is renamed into place
    once complete (with ``generate_args.json`` in it), so a killed run never leaves a half-made folder; if another
    process finishes first its folder is used.

    Args:
        cache_root: cache folder; :func:`default_cache_root` when ``None``.
        spec: a :class:`ListOpsSpec`, or generator arguments (its fields) over :data:`LRA_SPEC`; ``None``: the LRA
            spec.
        workers: processes used if data must be generated (does not change the data).
        progress: progress callback passed to :func:`generate`.

    Returns:
        The folder holding ``basic_train.tsv``, ``basic_val.tsv`` and ``basic_test.tsv``.

    Raises:
        DTNBenchError: unknown or invalid arguments, or an incomplete folder in the way.
    """
    from dtn_bench.results.writer import atomic_write_text  # pandas: imported when needed (CLI start-up)

    spec = spec.checked() if isinstance(spec, ListOpsSpec) else ListOpsSpec.from_args(spec)
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    target = root / spec.cache_name()
    marker = "generate_args.json"
    names = [f"basic_{split}.tsv" for split in SPLITS] + [marker]

    def complete() -> bool:
        return all((target / name).is_file() for name in names)

    if complete():
        return target
    if target.exists():
        missing = [name for name in names if not (target / name).is_file()]
        raise DTNBenchError(f"ListOps cache folder {target} is incomplete (missing {', '.join(missing)}): "
                            "delete it to generate again")
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=root))
    try:
        generate(tmp, spec, workers=workers, progress=progress)
        os.chmod(tmp, _default_mode(0o777))  # mkdtemp makes a private folder
        atomic_write_text(tmp / marker, json.dumps({"generator_version": GENERATOR_VERSION, **spec.as_dict()},
                                                   sort_keys=True, indent=2) + "\n")
        try:
            os.rename(tmp, target)
        except OSError:
            if not complete():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process made it first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


# ------------------------------------------------------------------------------------------------------------------
# Loading
@dataclass(eq=False)
class ListOpsSplit:
    """One tokenised split.

    Attributes:
        split: ``"train"``, ``"val"`` or ``"test"``.
        path: the TSV it was read from.
        ids: token ids, ``[N, max_len]`` of :data:`ID_DTYPE`, padded with :data:`PAD_ID`; no CLS position.
        lengths: ``[N]`` int32, tokens kept per sequence (at most ``max_len``).
        labels: ``[N]`` int64, the targets 0-9.
        max_len: the padded length.
        policy: ``"error"`` or ``"truncate"``.
        truncated: sequences cut to ``max_len`` (always 0 under policy ``"error"``); report it.
    """

    split: str
    path: Path
    ids: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray
    max_len: int
    policy: str
    truncated: int

    def __len__(self) -> int:
        """The number of sequences."""
        return int(self.labels.shape[0])


def split_path(data_dir: str | Path, split: str) -> Path:
    """The TSV of a split, ``<data_dir>/basic_<split>.tsv``, checked to exist.

    Raises:
        DTNBenchError: unknown split, missing folder or missing file.
    """
    if split not in SPLITS:
        raise DTNBenchError(f"unknown ListOps split {split!r}: expected one of {', '.join(SPLITS)}")
    folder = Path(data_dir)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise DTNBenchError(f"ListOps data folder {folder} {what} (make one with: dtn-bench lra generate --out DIR)")
    path = folder / f"basic_{split}.tsv"
    if not path.is_file():
        raise DTNBenchError(f"ListOps split file {path} not found (a data folder holds "
                            f"{', '.join(f'basic_{s}.tsv' for s in SPLITS)})")
    return path


def _check_len_policy(max_len: int, policy: str) -> int:
    max_len = _as_int("max_len", max_len)
    if max_len < 1:
        raise DTNBenchError(f"ListOps max_len {max_len}: must be >= 1")
    if policy not in POLICIES:
        raise DTNBenchError(f"unknown ListOps length policy {policy!r}: expected 'error' or 'truncate'")
    return max_len


def _check_layout(path: Path) -> int:
    """Checks the header and that every line is ``Source<TAB>Target``; returns the number of data lines."""
    count = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip(b"\n").rstrip(b"\r")
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                raise DTNBenchError(f"{path} line {number}: not UTF-8 text") from None
            if number == 1:
                if line != HEADER.encode():
                    raise DTNBenchError(f"{path} line 1: header {line.decode()[:60]!r}, expected 'Source<TAB>Target'")
                continue
            if not line:
                raise DTNBenchError(f"{path} line {number}: empty line, expected Source<TAB>Target")
            tabs = line.count(b"\t")
            if tabs != 1:
                raise DTNBenchError(f"{path} line {number}: {tabs} tabs, expected exactly one between Source and "
                                    "Target")
            count += 1
    if count == 0 and not path.stat().st_size:
        raise DTNBenchError(f"{path} line 1: empty file, expected the header 'Source<TAB>Target'")
    return count


def _read_columns(path: Path, rows: int) -> tuple[list[str], list[str]]:
    """Source and Target columns read with ``datasets`` as strings (no NaN conversion, no quoting)."""
    if rows == 0:
        return [], []
    import datasets

    features = datasets.Features({"Source": datasets.Value("string"), "Target": datasets.Value("string")})
    bars_were_off = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        with tempfile.TemporaryDirectory(prefix="dtn-bench-hf-") as tmp:
            ds = datasets.load_dataset("csv", data_files=str(path), delimiter="\t", quoting=csv.QUOTE_NONE,
                                       keep_default_na=False, na_filter=False, features=features, cache_dir=tmp,
                                       keep_in_memory=True, split="train")
            sources = ds.data.column("Source").to_pylist()
            targets = ds.data.column("Target").to_pylist()
    except Exception as exc:
        raise DTNBenchError(f"{path}: cannot be read as Source<TAB>Target: {type(exc).__name__}: {exc}") from exc
    finally:
        if not bars_were_off:
            datasets.enable_progress_bars()
    if len(sources) != rows:
        raise DTNBenchError(f"{path}: datasets read {len(sources)} rows but the file has {rows} data lines")
    return sources, targets


_DEPTH_STEP = np.zeros(VOCAB_SIZE + 1, dtype=np.int32)  # index -1 (unknown) is the extra last entry
for _op in OPERATORS:
    _DEPTH_STEP[VOCAB[_op]] = 1
_DEPTH_STEP[VOCAB[END_TOKEN]] = -1


def _parse_label(text: str, path: Path, line: int) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise DTNBenchError(f"{path} line {line}: label {text[:20]!r} is not an integer in 0..9") from None
    if not 0 <= value <= 9:
        raise DTNBenchError(f"{path} line {line}: label {value} is not in 0..9")
    return value


def _encode_checked(source: str, path: Path, line: int) -> np.ndarray:
    tokens = tokenize(source)
    if not tokens:
        raise DTNBenchError(f"{path} line {line}: empty Source")
    ids = [VOCAB.get(tok, -1) for tok in tokens]
    if -1 in ids or min(ids) < 3:  # unknown, or a special token written out in the file
        bad = next(tok for tok, i in zip(tokens, ids, strict=True) if i < 3)
        raise DTNBenchError(f"{path} line {line}: unknown token {bad[:30]!r} (expected [MIN [MAX [MED [SM ] 0-9)")
    arr = np.array(ids, dtype=ID_DTYPE)
    depth = np.cumsum(_DEPTH_STEP[arr])
    if depth.min() < 0:
        position = int(np.argmax(depth < 0)) + 1
        raise DTNBenchError(f"{path} line {line}: unbalanced brackets: ']' at token {position} closes no open "
                            "operator")
    if depth[-1] != 0:
        raise DTNBenchError(f"{path} line {line}: unbalanced brackets: {int(depth[-1])} operator(s) opened with "
                            "'[' never closed by ']'")
    return arr


def load_split(data_dir: str | Path, split: str, max_len: int, policy: str = "error") -> ListOpsSplit:
    r"""Reads, validates and tokenises one split (no cache; see :func:`load_or_build`).

    The file is first checked line by line (header, one tab per line), then read with
    ``datasets.load_dataset("csv", delimiter="\t")`` as strings, then every row is validated and tokenised.

    Args:
        data_dir: folder holding ``basic_<split>.tsv``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        max_len: padded length; counts the sequence's tokens only (no CLS position).
        policy: ``"error"``: a longer sequence is an error; ``"truncate"``: it is cut and counted.

    Returns:
        A :class:`ListOpsSplit`.

    Raises:
        DTNBenchError: missing folder or file, or a malformed line (one line naming file and line number).
    """
    path = split_path(data_dir, split)
    max_len = _check_len_policy(max_len, policy)
    rows = _check_layout(path)
    sources, targets = _read_columns(path, rows)
    ids = np.zeros((rows, max_len), dtype=ID_DTYPE)
    lengths = np.zeros(rows, dtype=np.int32)
    labels = np.zeros(rows, dtype=np.int64)
    truncated = 0
    for row, (source, target) in enumerate(zip(sources, targets, strict=True)):
        line = row + 2
        labels[row] = _parse_label(target, path, line)
        seq = _encode_checked(source, path, line)
        if seq.shape[0] > max_len:
            if policy == "error":
                raise DTNBenchError(f"{path} line {line}: sequence of {seq.shape[0]} tokens is longer than max_len "
                                    f"{max_len} (raise max_len or use the 'truncate' policy)")
            truncated += 1
            seq = seq[:max_len]
        ids[row, : seq.shape[0]] = seq
        lengths[row] = seq.shape[0]
    return ListOpsSplit(split=split, path=path, ids=ids, lengths=lengths, labels=labels, max_len=max_len,
                        policy=policy, truncated=truncated)


def _fingerprint(path: Path) -> dict[str, Any]:
    """Size, modification time and SHA-256 of the file (of its first and last MiB when larger than 2 MiB)."""
    stat = path.stat()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        if stat.st_size <= 2 * _MIB:
            digest.update(handle.read())
        else:
            digest.update(handle.read(_MIB))
            handle.seek(-_MIB, os.SEEK_END)
            digest.update(handle.read(_MIB))
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest.hexdigest()}


def load_or_build(
    data_dir: str | Path,
    max_len: int,
    policy: str = "error",
    *,
    splits: Sequence[str] = SPLITS,
    cache_dir: str | Path | None = None,
) -> dict[str, ListOpsSplit]:
    """Tokenised splits, read from an ``.npz`` cache when the files are unchanged, else built and cached.

    A cache entry is keyed by the file's size, ``mtime_ns`` and content hash (whole file up to 2 MiB, else its first
    and last MiB), ``max_len``, ``policy`` and :data:`TOKENIZER_VERSION`; an entry for an older version of the same
    file is removed when the new one is written. A cache that cannot be written only warns.

    Args:
        data_dir: folder holding ``basic_<split>.tsv``.
        max_len: padded length (no CLS position).
        policy: ``"error"`` or ``"truncate"`` (see :func:`load_split`).
        splits: which splits to load.
        cache_dir: cache folder; ``<default_cache_root()>/listops-tokens`` when ``None``.

    Returns:
        Split name -> :class:`ListOpsSplit`.

    Raises:
        DTNBenchError: as :func:`load_split`.
    """
    max_len = _check_len_policy(max_len, policy)
    root = Path(cache_dir) if cache_dir is not None else default_cache_root() / "listops-tokens"
    result: dict[str, ListOpsSplit] = {}
    for split in splits:
        path = split_path(data_dir, split)
        where = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
        key = json.dumps({**_fingerprint(path), "max_len": max_len, "policy": policy,
                          "tokenizer_version": TOKENIZER_VERSION, "dtype": np.dtype(ID_DTYPE).str}, sort_keys=True)
        entry = root / f"{split}-{where}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz"
        cached = _read_cache(entry, split, path, max_len, policy)
        if cached is not None:
            result[split] = cached
            continue
        loaded = load_split(data_dir, split, max_len, policy)
        _write_cache(entry, loaded)
        result[split] = loaded
    return result


def _read_cache(entry: Path, split: str, path: Path, max_len: int, policy: str) -> ListOpsSplit | None:
    if not entry.is_file():
        return None
    try:
        with np.load(entry, allow_pickle=False) as data:
            ids, lengths, labels = data["ids"], data["lengths"], data["labels"]
            truncated = int(data["truncated"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # unreadable entry: rebuild it
    if ids.ndim != 2 or ids.shape[1] != max_len or not ids.shape[0] == lengths.shape[0] == labels.shape[0]:
        return None
    return ListOpsSplit(split=split, path=path, ids=ids, lengths=lengths, labels=labels, max_len=max_len,
                        policy=policy, truncated=truncated)


def _write_cache(entry: Path, loaded: ListOpsSplit) -> None:
    from dtn_bench.results.writer import atomic_write_bytes

    buffer = io.BytesIO()
    np.savez(buffer, ids=loaded.ids, lengths=loaded.lengths, labels=loaded.labels,
             truncated=np.int64(loaded.truncated))
    try:
        atomic_write_bytes(entry, buffer.getvalue())
        prefix = entry.name.rsplit("-", 1)[0] + "-"
        for old in entry.parent.glob(f"{prefix}*.npz"):
            if old != entry:
                old.unlink(missing_ok=True)
    except OSError as exc:
        warnings.warn(f"could not write the ListOps token cache {entry}: {exc}; continuing without it", stacklevel=3)
