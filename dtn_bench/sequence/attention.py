"""Self-attention layers of the Long-Range Arena ListOps models: full, BigBird (block-sparse) and Reformer (LSH).

All three share one interface, ``forward(x [B, T, C], mask [B, T] bool or None) -> [B, T, C]`` with ``mask`` True for
real tokens, and LRA's projections: query/key/value/output linear maps without bias. Padded keys never receive
attention from a real query, so the outputs of real tokens do not depend on the values at padded positions (except in
the Reformer with ``lra_quirks``, the official layer, which has no padding mask).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dtn_bench.errors import DTNBenchError

__all__ = ["FullAttention", "BigBirdAttention", "LSHAttention"]

# Reformer's logit for a token attending to itself (used only when nothing else is available) and for masked keys.
_SELF_LOGIT = -1e5
_MASKED_LOGIT = -1e9


def _check_heads(name: str, dim: int, heads: int) -> int:
    if heads <= 0 or dim <= 0 or dim % heads:
        raise DTNBenchError(f"{name}: dim {dim} is not divisible by heads {heads}")
    return dim // heads


def _check_input(name: str, x: torch.Tensor, dim: int, mask: torch.Tensor | None) -> None:
    if x.dim() != 3 or x.shape[-1] != dim:
        raise DTNBenchError(f"{name}: expected input [B, T, {dim}], got {list(x.shape)}")
    if mask is not None and tuple(mask.shape) != tuple(x.shape[:2]):
        raise DTNBenchError(f"{name}: mask shape {list(mask.shape)} does not match tokens {list(x.shape[:2])}")


def _key_mask(mask: torch.Tensor | None, batch: int, length: int, device) -> torch.Tensor:
    """Boolean ``[B, T]`` keys a query may attend to.

    An example with no real token at all attends to every key, so its (unused) outputs stay finite instead of NaN.
    """
    if mask is None:
        return torch.ones(batch, length, dtype=torch.bool, device=device)
    mask = mask.to(device=device, dtype=torch.bool)
    return mask | ~mask.any(dim=1, keepdim=True)


class FullAttention(nn.Module):
    """Multi-head softmax attention over every key (the LRA Transformer's attention).

    ``out = W_o concat_h softmax(q_h k_h^T / sqrt(d) + M) v_h`` with ``q = x W_q``, ``k = x W_k``, ``v = x W_v`` (no
    biases), ``d = dim / heads`` and ``M = -inf`` at padded keys. Computed with
    :func:`torch.nn.functional.scaled_dot_product_attention`; time and memory ``O(T^2)``.

    Args:
        dim: channels ``C``.
        heads: attention heads; ``dim`` must be divisible by it.
        dropout: dropout on the attention probabilities (training only).
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.head_dim = _check_heads("FullAttention", dim, heads)
        self.dim, self.heads, self.dropout = dim, heads, float(dropout)
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.o = nn.Linear(dim, dim, bias=False)

    def extra_repr(self) -> str:
        """The constructor settings, for ``repr``."""
        return f"{self.dim}, heads={self.heads}, dropout={self.dropout}"

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attend ``x [B, T, C]``; ``mask [B, T]`` (True = real token) hides padded keys."""
        _check_input("FullAttention", x, self.dim, mask)
        B, T, C = x.shape
        H, d = self.heads, self.head_dim
        q, k, v = (p(x).view(B, T, H, d).transpose(1, 2) for p in (self.q, self.k, self.v))
        keep = None if mask is None else _key_mask(mask, B, T, x.device)[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=self.dropout if self.training else 0.0)
        return self.o(out.transpose(1, 2).reshape(B, T, C))


class BigBirdAttention(nn.Module):
    """BigBird block-sparse attention as configured in LRA, computed exactly (no approximation inside the pattern).

    The sequence is padded to ``n = ceil(T / block)`` blocks. Block-level pattern (:meth:`pattern`):

    - global blocks ``0`` and ``n - 1``: their queries attend to every key, and every query attends to them;
    - every other query block ``i`` attends to the sliding window ``i - window // 2 .. i + window // 2`` (``i-1, i,
      i+1`` for LRA's 3), the two global blocks and ``num_random`` random blocks per head, drawn from the blocks that
      lie entirely inside the first ``random_within`` tokens, excluding the blocks the row already sees whenever
      enough remain (otherwise the row is filled up with duplicates of its own block, which count once).

    For a non-global query block ``i`` with key blocks ``S_i^h`` (indices ``[H, n - 2, k]``, ``k = window + 2 +
    num_random``): ``out_i = softmax(q_i K_{S_i}^T / sqrt(d) + M) V_{S_i}`` where the keys and values of ``S_i`` are
    gathered blockwise, scores are ``[B, H, n - 2, block, k * block]`` and ``M`` removes padded keys and every repeat of
    a key block already listed earlier in ``S_i`` (so each key block counts once, as in the dense masked reference).
    The two global query blocks use full attention (``[B, H, 2 * block, T]`` scores). Memory therefore grows linearly
    with ``T``; no ``[T, T]`` tensor is formed.

    The random blocks are identical for every example, in training and evaluation, and a deterministic function of
    ``(layer_index, n)``; they are kept as a non-persistent buffer, rebuilt when the number of blocks changes (LRA pads
    every batch to the same length, so it never does). Two ways of drawing them (``random``):

    - ``"torch"``: a ``torch.Generator`` seeded with ``layer_index``; row ``i`` draws from the blocks inside the first
      ``random_within`` tokens that it does not already see (above).
    - ``"lra"``: the official LRA rule, drawn with numpy's legacy generator (``RandomState(layer_index)``, one
      ``permutation`` per head and row in that order, the first ``num_random`` kept), which gives the official blocks
      exactly. With ``last = min(n * block, random_within) // block - 1`` (``n - 1`` when that span is at most two
      blocks) and blocks clipped to ``1 .. n - 2``, row ``i`` draws from: ``3 .. last`` (``i = 1``), ``4 .. last``
      (``i = 2``), ``1 .. last - 4`` (``i = n - 3``), ``1 .. last - 3`` (``i = n - 2``), and otherwise ``1 .. last`` if
      ``i - 2 > last``, ``1 .. i - 2`` if ``i + 1 = last``, else ``1 .. i - 2`` and ``i + 2 .. last``. For LRA's 2048
      padded tokens (32 blocks of 64, ``last`` 15) the rows of query blocks 29 and 30 therefore draw from blocks
      1..11 and 1..12 instead of 1..15. A row with fewer than ``num_random`` candidates (sequences of a few blocks,
      where the official code fails or repeats its one candidate) is filled up with duplicates of its own block,
      masked as in ``"torch"``.

    Args:
        dim: channels ``C``.
        heads: attention heads; ``dim`` must be divisible by it.
        block: block length in tokens (LRA: 64).
        window: sliding-window width in blocks, odd (LRA: 3).
        num_random: random key blocks per non-global query block and head (LRA: 3).
        layer_index: seed of the random pattern (the layer's depth in the encoder).
        random_within: random blocks are drawn from the blocks inside the first ``random_within`` tokens (LRA: 1024).
        dropout: dropout on the attention probabilities (training only).
        random: how the random blocks are drawn, ``"torch"`` or ``"lra"`` (the official rule, see above).
    """

    def __init__(self, dim: int, heads: int, block: int = 64, window: int = 3, num_random: int = 3,
                 layer_index: int = 0, random_within: int = 1024, dropout: float = 0.0, random: str = "torch"):
        super().__init__()
        self.head_dim = _check_heads("BigBirdAttention", dim, heads)
        if block < 1:
            raise DTNBenchError(f"BigBirdAttention: block must be >= 1, got {block}")
        if window < 1 or window % 2 == 0:
            raise DTNBenchError(f"BigBirdAttention: window must be a positive odd number of blocks, got {window}")
        if num_random < 0:
            raise DTNBenchError(f"BigBirdAttention: num_random must be >= 0, got {num_random}")
        if random_within < 0:
            raise DTNBenchError(f"BigBirdAttention: random_within must be >= 0, got {random_within}")
        if random not in ("torch", "lra"):
            raise DTNBenchError(f"BigBirdAttention: random must be 'torch' or 'lra', got {random!r}")
        if random == "lra" and window != 3:
            raise DTNBenchError(f"BigBirdAttention: random='lra' is the official rule for a window of 3 blocks, got "
                                f"window={window}")
        self.dim, self.heads, self.block, self.window = dim, heads, int(block), int(window)
        self.num_random, self.layer_index, self.random_within = int(num_random), int(layer_index), int(random_within)
        self.dropout, self.random = float(dropout), random
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.o = nn.Linear(dim, dim, bias=False)
        self._num_blocks = 0
        self.register_buffer("random_blocks", torch.zeros(heads, 0, num_random, dtype=torch.long), persistent=False)

    def extra_repr(self) -> str:
        """The constructor settings, for ``repr``."""
        return (f"{self.dim}, heads={self.heads}, block={self.block}, window={self.window}, "
                f"num_random={self.num_random}, layer_index={self.layer_index}, random_within={self.random_within}, "
                f"random={self.random}")

    # pattern --------------------------------------------------------------------------------------------------------
    def _window_blocks(self, i: int, n: int) -> list[int]:
        half = self.window // 2
        return [min(max(j, 0), n - 1) for j in range(i - half, i + half + 1)]

    def _lra_candidates(self, i: int, n: int, last: int) -> list[int]:
        """The official candidate blocks of query block ``i`` (see the class docstring)."""

        def span(lo: int, hi: int) -> list[int]:
            return list(range(max(lo, 1), min(hi, n - 2) + 1))

        if i == 1:
            return span(3, last)
        if i == 2:
            return span(4, last)
        if i == n - 3:
            return span(1, last - 4)
        if i == n - 2:
            return span(1, last - 3)
        if i - 2 > last:
            return span(1, last)
        if i + 1 == last:
            return span(1, i - 2)
        return span(1, i - 2) + span(i + 2, last)

    def _draw_random_lra(self, n: int) -> torch.Tensor:
        rng = np.random.RandomState(self.layer_index)
        within = min(n * self.block, self.random_within)
        last = within // self.block - 1 if within > 2 * self.block else n - 1
        out = torch.zeros(self.heads, max(n - 2, 0), self.num_random, dtype=torch.long)
        for h in range(self.heads):
            for r, i in enumerate(range(1, n - 1)):
                cand = np.asarray(self._lra_candidates(i, n, last), dtype=np.int64)
                pick = rng.permutation(cand)[: self.num_random].tolist()
                pick += [i] * (self.num_random - len(pick))  # too few candidates: duplicates, masked in forward
                out[h, r] = torch.tensor(pick, dtype=torch.long)
        return out

    def _draw_random(self, n: int) -> torch.Tensor:
        """Random key blocks ``[H, n - 2, num_random]`` for the non-global rows of an ``n``-block sequence."""
        if self.random == "lra":
            return self._draw_random_lra(n)
        gen = torch.Generator().manual_seed(self.layer_index)
        n_cand = min(n, self.random_within // self.block)
        out = torch.zeros(self.heads, max(n - 2, 0), self.num_random, dtype=torch.long)
        for h in range(self.heads):
            for r, i in enumerate(range(1, n - 1)):
                seen = set(self._window_blocks(i, n)) | {0, n - 1}
                cand = [j for j in range(n_cand) if j not in seen]
                perm = torch.randperm(len(cand), generator=gen).tolist()
                pick = [cand[p] for p in perm[: self.num_random]]
                pick += [i] * (self.num_random - len(pick))  # too few candidates: duplicates, masked in forward
                out[h, r] = torch.tensor(pick, dtype=torch.long)
        return out

    def _random_for(self, n: int) -> torch.Tensor:
        if n != self._num_blocks:
            self.random_blocks = self._draw_random(n).to(self.random_blocks.device)
            self._num_blocks = n
        return self.random_blocks

    def _key_blocks(self, n: int, rand: torch.Tensor) -> torch.Tensor:
        """Key-block indices ``[H, n - 2, window + 2 + num_random]`` of the non-global query blocks."""
        dev = rand.device
        rows = torch.tensor([self._window_blocks(i, n) + [0, n - 1] for i in range(1, n - 1)], dtype=torch.long,
                            device=dev).view(1, n - 2, self.window + 2)
        return torch.cat([rows.expand(self.heads, -1, -1), rand], dim=-1)

    def _num_blocks_for(self, length: int) -> int:
        return max(1, math.ceil(length / self.block))

    def pattern(self, seq_len: int | None = None) -> torch.Tensor:
        """Boolean block mask ``[H, n, n]`` (query block, key block) for a sequence of ``seq_len`` tokens.

        ``seq_len`` defaults to the length of the last forward call.
        """
        if seq_len is None:
            if not self._num_blocks:
                raise DTNBenchError("BigBirdAttention.pattern: give seq_len (no forward call has fixed a length yet)")
            n = self._num_blocks
        else:
            n = self._num_blocks_for(int(seq_len))
        pat = torch.zeros(self.heads, n, n, dtype=torch.bool)
        pat[:, [0, n - 1], :] = True
        pat[:, :, [0, n - 1]] = True
        if n > 2:
            rand = self.random_blocks.cpu() if n == self._num_blocks else self._draw_random(n)
            idx = self._key_blocks(n, rand).cpu()
            pat[:, 1:-1].scatter_(-1, idx, True)
        return pat

    # forward --------------------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attend ``x [B, T, C]``; ``mask [B, T]`` (True = real token) hides padded keys."""
        _check_input("BigBirdAttention", x, self.dim, mask)
        B, T, C = x.shape
        H, d, b = self.heads, self.head_dim, self.block
        n = self._num_blocks_for(T)
        Tp = n * b
        keep = _key_mask(mask, B, T, x.device)
        if Tp > T:
            x = F.pad(x, (0, 0, 0, Tp - T))
            keep = F.pad(keep, (0, Tp - T), value=False)
        q, k, v = (p(x).view(B, Tp, H, d).transpose(1, 2) for p in (self.q, self.k, self.v))  # [B, H, Tp, d]
        p_drop = self.dropout if self.training else 0.0
        if n <= 2:  # every block is global: plain full attention
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :], dropout_p=p_drop)
            return self.o(out.transpose(1, 2).reshape(B, Tp, C)[:, :T])

        # global query blocks: full attention, scores [B, H, 2b, Tp]
        qg = torch.cat([q[:, :, :b], q[:, :, -b:]], dim=2)
        og = F.scaled_dot_product_attention(qg, k, v, attn_mask=keep[:, None, None, :], dropout_p=p_drop)

        # other query blocks: gathered key/value blocks, scores [B, H, n - 2, b, kb * b]
        idx = self._key_blocks(n, self._random_for(n))  # [H, n - 2, kb]
        kb = idx.shape[-1]
        dup = ((idx.unsqueeze(-1) == idx.unsqueeze(-2)).tril(diagonal=-1)).any(dim=-1)  # repeat of an earlier slot
        heads = torch.arange(H, device=x.device).view(H, 1, 1)
        kg = k.reshape(B, H, n, b, d)[:, heads, idx].reshape(B, H, n - 2, kb * b, d)
        vg = v.reshape(B, H, n, b, d)[:, heads, idx].reshape(B, H, n - 2, kb * b, d)
        kmask = keep.view(B, 1, n, b)[:, torch.zeros_like(heads), idx]  # [B, H, n - 2, kb, b]
        kmask = (kmask & ~dup.view(1, H, n - 2, kb, 1)).reshape(B, H, n - 2, 1, kb * b)
        qm = q.reshape(B, H, n, b, d)[:, :, 1:-1]  # [B, H, n - 2, b, d]
        scores = torch.matmul(qm, kg.transpose(-1, -2)) * (d**-0.5)
        # finite fill: a padded query whose keys are all padding gets a uniform (unused, finite) row, never NaN
        scores = scores.masked_fill(~kmask, torch.finfo(scores.dtype).min)
        probs = F.dropout(scores.softmax(dim=-1), p_drop, self.training)
        om = torch.matmul(probs, vg)  # [B, H, n - 2, b, d]

        out = torch.cat([og[:, :, :b], om.reshape(B, H, (n - 2) * b, d), og[:, :, b:]], dim=2)
        return self.o(out.transpose(1, 2).reshape(B, Tp, C)[:, :T])


class LSHAttention(nn.Module):
    """Reformer LSH self-attention as configured in LRA (no reversible layers, no chunked feed-forward).

    Shared query/key projection ``qk = x W_qk`` (keys are queries), values ``v = x W_v``, output ``W_o`` (no biases).

    1. Hashing (per head, per round ``r``): fixed random rotations ``R [H, d, n_hashes, n_buckets / 2]`` (standard
       normal from a generator seeded with ``layer_index``; a non-persistent buffer, so every step hashes the same way)
       give ``bucket = argmax([qk R_r, -qk R_r])``. Padded tokens (``mask`` False) get bucket ``n_buckets`` so they
       sort after every real token and their values never influence which real tokens share a chunk.
    2. Per round, tokens are sorted stably by ``(bucket, position)``; the sorted sequence is padded at its end to a
       multiple of ``n_buckets`` and cut into ``n_buckets`` equal chunks of ``L = ceil(T / n_buckets)``.
    3. Each chunk attends to itself and the previous chunk (chunk 0 to the last chunk of the same round):
       ``logits = q . k_hat / sqrt(d)`` with L2-normalised keys ``k_hat = qk / ||qk||``; a token's own key gets
       ``-1e5`` (it attends to itself only when nothing else is available), padded keys ``-1e9``. Per sorted query:
       ``out_r = softmax(logits) v`` and ``lse_r = logsumexp(logits)``; the sort is then undone.
    4. Rounds are combined with logsumexp weights: ``out = sum_r exp(lse_r - logsumexp_r(lse)) out_r``.

    With ``n_buckets >= 2`` a chunk and its predecessor are different chunks, so a key appears at most once per round.
    Across rounds no duplicate correction is made (as in LRA): a key that shares a chunk pair with a query in several
    rounds is counted once per round in the combined softmax. Memory is ``O(n_hashes * T * 2L)``: linear in ``T`` for a
    fixed chunk length (buckets growing with ``T``, the Reformer setting), ``T^2 / 5`` scores with LRA's 10 buckets.

    ``lra_quirks=True`` is the layer of the official LRA code (``reformer_attention.py``), reproduced exactly except
    for the values of the random rotations (torch's generator, not JAX's):

    (a) keys are not length-normalised (``k = qk``) and the logits are multiplied by ``sqrt(d)`` instead of divided;
    (b) no self-mask: a token attends to itself like to any other key;
    (c) no padding mask: padded tokens are hashed, sorted and attended like real ones;
    (d) one rotation tensor ``[d, n_hashes, n_buckets / 2]`` (seed 0) shared by every head and every layer;
    (e) the sequence always gets ``n_buckets - T % n_buckets`` zero vectors appended (a whole chunk when ``T`` is a
        multiple; LRA's ``chunk_len`` is 10 = ``n_buckets``): a zero vector hashes to bucket 0, so this filler sorts
        after the real tokens of bucket 0, before bucket 1, and is attended (logit 0, value 0);
    (f) the sorted rounds form one sequence of ``n_hashes * n_buckets`` chunks: the first chunk of a round looks back
        to the last chunk of the previous round (of the last round for round 0);
    (g) no output projection (``W_o`` is absent), and the heads are merged by reshaping ``[B, H, T_pad, d]`` to
        ``[B, T_pad, H * d]`` without a transpose, then keeping the first ``T`` rows: an output row holds one head's
        outputs at ``H`` consecutive positions (filler included), the CLS row head 0's at positions ``0 .. H - 1``.

    Args:
        dim: channels ``C``.
        heads: attention heads; ``dim`` must be divisible by it.
        n_hashes: hash rounds (LRA: 1).
        n_buckets: buckets per round, even (LRA: 10).
        layer_index: seed of the random rotations (unused with ``lra_quirks``: one set for all layers).
        lra_quirks: reproduce the official layer, quirks (a)-(g) above.
        dropout: dropout on the attention probabilities (training only; the official layer has none).
    """

    def __init__(self, dim: int, heads: int, n_hashes: int = 1, n_buckets: int = 10, layer_index: int = 0,
                 lra_quirks: bool = False, dropout: float = 0.0):
        super().__init__()
        self.head_dim = _check_heads("LSHAttention", dim, heads)
        if n_buckets < 2 or n_buckets % 2:
            raise DTNBenchError(f"LSHAttention: n_buckets must be even and >= 2, got {n_buckets}")
        if n_hashes < 1:
            raise DTNBenchError(f"LSHAttention: n_hashes must be >= 1, got {n_hashes}")
        self.dim, self.heads, self.n_hashes, self.n_buckets = dim, heads, int(n_hashes), int(n_buckets)
        self.layer_index, self.lra_quirks, self.dropout = int(layer_index), bool(lra_quirks), float(dropout)
        self.qk = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.o = None if self.lra_quirks else nn.Linear(dim, dim, bias=False)
        gen = torch.Generator().manual_seed(0 if self.lra_quirks else self.layer_index)
        sets = 1 if self.lra_quirks else heads
        rot = torch.randn(sets, self.head_dim, self.n_hashes, self.n_buckets // 2, generator=gen)
        self.register_buffer("rotations", rot.expand(heads, -1, -1, -1).contiguous(), persistent=False)

    def extra_repr(self) -> str:
        """The constructor settings, for ``repr``."""
        return (f"{self.dim}, heads={self.heads}, n_hashes={self.n_hashes}, n_buckets={self.n_buckets}, "
                f"layer_index={self.layer_index}, lra_quirks={self.lra_quirks}")

    def _hash(self, qk: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Buckets ``[B, H, n_hashes, T]`` of head vectors ``qk [B, H, T, d]``."""
        rot = torch.einsum("bhtd,hdrk->bhrtk", qk, self.rotations.to(qk.dtype))
        buckets = torch.cat([rot, -rot], dim=-1).argmax(dim=-1)
        if mask is not None and not self.lra_quirks:
            buckets = buckets.masked_fill(~mask.to(torch.bool).view(mask.shape[0], 1, 1, -1), self.n_buckets)
        return buckets

    def buckets(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The buckets ``[B, H, n_hashes, T]`` that :meth:`forward` sorts by for ``x [B, T, C]``.

        Padded tokens get ``n_buckets`` unless ``lra_quirks``.
        """
        _check_input("LSHAttention", x, self.dim, mask)
        B, T, _ = x.shape
        return self._hash(self.qk(x).view(B, T, self.heads, self.head_dim).transpose(1, 2), mask)

    def padded_length(self, length: int) -> int:
        """Tokens after the filler: a multiple of ``n_buckets``.

        With ``lra_quirks`` there is always at least one filler token.
        """
        K = self.n_buckets
        return length + K - length % K if self.lra_quirks else math.ceil(length / K) * K

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attend ``x [B, T, C]``; ``mask [B, T]`` (True = real token) hides padded keys (unless ``lra_quirks``)."""
        _check_input("LSHAttention", x, self.dim, mask)
        B, T, C = x.shape
        H, d, R, K = self.heads, self.head_dim, self.n_hashes, self.n_buckets
        quirks = self.lra_quirks
        qk = self.qk(x).view(B, T, H, d).transpose(1, 2)  # [B, H, T, d]
        v = self.v(x).view(B, T, H, d).transpose(1, 2)
        buckets = self._hash(qk, mask)  # [B, H, R, T]
        if quirks or mask is None:
            keep = torch.ones(B, T, dtype=torch.bool, device=x.device)
        else:
            keep = _key_mask(mask, B, T, x.device)
        Tp = self.padded_length(T)
        L = Tp // K
        if Tp > T:  # filler after the last token: sorts last (bucket K), never attended; quirks: bucket 0, attended
            qk = F.pad(qk, (0, 0, 0, Tp - T))
            v = F.pad(v, (0, 0, 0, Tp - T))
            buckets = F.pad(buckets, (0, Tp - T), value=0 if quirks else K)
            keep = F.pad(keep, (0, Tp - T), value=quirks)
        pos = torch.arange(Tp, device=x.device)
        order = torch.argsort(buckets * Tp + pos, dim=-1, stable=True)  # [B, H, R, Tp]: sorted slot -> position
        undo = torch.argsort(order, dim=-1)

        def sort(t: torch.Tensor) -> torch.Tensor:  # [B, H, Tp, d] -> sorted [B, H, R, Tp, d]
            return t.unsqueeze(2).expand(B, H, R, Tp, d).gather(3, order.unsqueeze(-1).expand(B, H, R, Tp, d))

        def look_back(t: torch.Tensor) -> torch.Tensor:  # chunks [B, H, R, K, L, ...] -> [B, H, R, K, 2L, ...]
            if quirks:  # one sequence of R * K chunks: round r's first chunk sees round r - 1's last
                prev = t.flatten(2, 3).roll(1, dims=2).reshape(t.shape)
            else:
                prev = t.roll(1, dims=3)
            return torch.cat([t, prev], dim=4)

        sq = sort(qk)
        sk = sq if quirks else F.normalize(sq, dim=-1)
        sv = sort(v)
        s_keep = keep.view(B, 1, 1, Tp).expand(B, H, R, Tp).gather(3, order)
        q_c = sq.view(B, H, R, K, L, d)
        k_c = look_back(sk.view(B, H, R, K, L, d))
        v_c = look_back(sv.view(B, H, R, K, L, d))
        qpos = order.view(B, H, R, K, L)
        kpos = look_back(qpos)
        kkeep = look_back(s_keep.view(B, H, R, K, L))

        logits = torch.matmul(q_c, k_c.transpose(-1, -2))  # [B, H, R, K, L, 2L]
        if logits.dtype == torch.float16:  # Reformer's -1e5 / -1e9 logits lie outside float16's range
            logits = logits.float()
        logits = logits * math.sqrt(d) if quirks else logits * (d**-0.5)
        if not quirks:
            logits = logits.masked_fill(qpos.unsqueeze(-1) == kpos.unsqueeze(-2), _SELF_LOGIT)
            logits = logits.masked_fill(~kkeep.unsqueeze(-2), _MASKED_LOGIT)
        lse = torch.logsumexp(logits, dim=-1, keepdim=True)
        probs = F.dropout(torch.exp(logits - lse), self.dropout if self.training else 0.0, self.training)
        out = torch.matmul(probs.to(v_c.dtype), v_c).view(B, H, R, Tp, d)
        out = out.gather(3, undo.unsqueeze(-1).expand(B, H, R, Tp, d))
        if R > 1:
            lse = lse.view(B, H, R, Tp).gather(3, undo)
            weights = torch.softmax(lse, dim=2)  # exp(lse_r - logsumexp_r lse)
            out = (out * weights.unsqueeze(-1).to(out.dtype)).sum(dim=2)
        else:
            out = out.squeeze(2)
        if quirks:  # the official head merge: a plain reshape of [B, H, Tp, d], no transpose
            return out.reshape(B, Tp, C)[:, :T]
        out = out[:, :, :T].transpose(1, 2).reshape(B, T, C)
        return self.o(out)
