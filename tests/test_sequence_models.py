"""LRA ListOps sequence models: the three attentions against dense references, and the encoder end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from dtn_bench.errors import DTNBenchError
from dtn_bench.norms import DTN
from dtn_bench.sequence import (
    ATTENTIONS,
    BigBirdAttention,
    FullAttention,
    LRAEncoder,
    LSHAttention,
    build_attention,
    count_parameters,
)

DIM = 32


def _mask(B: int, T: int, seed: int = 0) -> torch.Tensor:
    """Example 0: a few interior holes; example 1: trailing padding (the last quarter)."""
    g = torch.Generator().manual_seed(seed)
    m = torch.ones(B, T, dtype=torch.bool)
    m[0, torch.randperm(T, generator=g)[: T // 8]] = False
    m[1, T - T // 4 :] = False
    return m


def _heads(x: torch.Tensor, w: torch.Tensor, H: int) -> torch.Tensor:
    B, T, C = x.shape
    return (x @ w.T).view(B, T, H, C // H).transpose(1, 2)


def _merge(o: torch.Tensor) -> torch.Tensor:
    B, H, T, d = o.shape
    return o.transpose(1, 2).reshape(B, T, H * d)


def _dense(mod, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Textbook softmax attention with the module's q/k/v/o weights; ``allowed`` broadcasts to [B, H, T, T]."""
    H = mod.heads
    q, k, v = (_heads(x, p.weight, H) for p in (mod.q, mod.k, mod.v))
    logits = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    att = logits.masked_fill(~allowed, float("-inf")).softmax(-1)
    return _merge(att @ v) @ mod.o.weight.T


# ------------------------------------------------------------------------------------------------------------------
# full attention
@pytest.mark.parametrize("heads", [1, 2, 4])
def test_full_attention_matches_dense_with_key_padding(heads):
    torch.manual_seed(0)
    mod = FullAttention(DIM, heads).double()
    x = torch.randn(2, 23, DIM, dtype=torch.float64)
    mask = _mask(2, 23)
    ref = _dense(mod, x, mask[:, None, None, :])
    out = mod(x, mask)
    torch.testing.assert_close(out[mask], ref[mask])
    torch.testing.assert_close(mod(x), _dense(mod, x, torch.ones(1, dtype=torch.bool)))


# ------------------------------------------------------------------------------------------------------------------
# BigBird
@pytest.mark.parametrize("random", ["torch", "lra"])
@pytest.mark.parametrize("T", [128, 120])
@pytest.mark.parametrize("heads", [1, 2, 4])
def test_bigbird_equals_dense_attention_restricted_to_its_pattern(T, heads, random):
    torch.manual_seed(1)
    b = 16
    mod = BigBirdAttention(DIM, heads, block=b, layer_index=2, random=random).double()
    x = torch.randn(2, T, DIM, dtype=torch.float64)
    mask = _mask(2, T)
    pat = mod.pattern(T)  # [H, 8, 8]
    assert pat.shape == (heads, 8, 8)
    assert pat[:, [0, -1], :].all() and pat[:, :, [0, -1]].all()  # global rows and columns are full
    tok = pat.repeat_interleave(b, dim=1).repeat_interleave(b, dim=2)[:, :T, :T]
    ref = _dense(mod, x, tok.unsqueeze(0) & mask[:, None, None, :])
    out = mod(x, mask)
    torch.testing.assert_close(out[mask], ref[mask])
    # without a mask every token is real
    torch.testing.assert_close(mod(x), _dense(mod, x, tok.unsqueeze(0)))


def test_bigbird_short_sequences_are_full_attention():
    """Up to 3 blocks the window and the globals cover everything: the result is full attention."""
    torch.manual_seed(2)
    for T in (10, 30, 40):  # 1, 2 and 3 blocks of 16
        big = BigBirdAttention(DIM, 2, block=16).double()
        full = FullAttention(DIM, 2).double()
        full.load_state_dict(big.state_dict())
        x = torch.randn(2, T, DIM, dtype=torch.float64)
        mask = _mask(2, T)
        torch.testing.assert_close(big(x, mask)[mask], full(x, mask)[mask])


@pytest.mark.parametrize("T,block,heads", [(128, 16, 4), (2048, 64, 8)])
def test_bigbird_pattern_window_globals_and_random_blocks(T, block, heads):
    mod = BigBirdAttention(DIM * 2, heads, block=block, num_random=3, layer_index=0, random_within=1024)
    n = T // block
    pat = mod.pattern(T)
    rand = mod._random_for(n)
    assert rand.shape == (heads, n - 2, 3)
    n_cand = min(n, 1024 // block)
    for h in range(heads):
        for i in range(1, n - 1):
            seen = {i - 1, i, i + 1, 0, n - 1}
            r = set(rand[h, i - 1].tolist())
            assert len(r) == 3 and not (r & seen) and max(r) < n_cand  # 3 new blocks, inside the first 1024 tokens
            assert set(pat[h, i].nonzero().flatten().tolist()) == seen | r
    # fixed across calls and modules with the same seed, different for another layer
    mod(torch.randn(1, T, DIM * 2))
    assert torch.equal(mod.pattern(), pat) and torch.equal(mod.pattern(T), pat)
    same = BigBirdAttention(DIM * 2, heads, block=block, layer_index=0)
    other = BigBirdAttention(DIM * 2, heads, block=block, layer_index=1)
    assert torch.equal(same.pattern(T), pat)
    assert not torch.equal(other.pattern(T), pat)
    assert "random_blocks" not in mod.state_dict()


def test_bigbird_pattern_differs_between_heads():
    pat = BigBirdAttention(DIM, 4, block=64).pattern(2048)
    assert any(not torch.equal(pat[0], pat[h]) for h in range(1, 4))


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an op returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_bigbird_memory_grows_linearly():
    torch.manual_seed(3)
    mod = BigBirdAttention(DIM, 2, block=64).eval()
    largest = {}
    for T in (512, 2048, 8192):
        x = torch.randn(1, T, DIM)
        mask = torch.ones(1, T, dtype=torch.bool)
        mod.pattern(T)
        with torch.no_grad(), _LargestTensor() as rec:
            mod(x, mask)
        largest[T] = rec.largest
    # the sparse scores have n - 2 query blocks (n = T / 64): 6, 30, 126 -> ratios 5.0 and 4.2; quadratic would be 16
    assert largest[2048] / largest[512] <= 5.0 + 1e-9
    assert largest[8192] / largest[2048] <= 4.5
    assert largest[2048] < 2048 * 2048 and largest[8192] < 8192 * 8192 / 8


# ------------------------------------------------------------------------------------------------------------------
# Reformer LSH
def test_lsh_rejects_odd_buckets():
    for n in (3, 9, 0):
        with pytest.raises(DTNBenchError, match="n_buckets"):
            LSHAttention(DIM, 2, n_buckets=n)


def _shared_qk(mod, x):
    H = mod.heads
    qk = _heads(x, mod.qk.weight, H)
    return qk, F.normalize(qk, dim=-1), _heads(x, mod.v.weight, H)


def test_lsh_two_buckets_is_full_shared_qk_attention():
    """With 2 chunks every chunk pair is the whole sequence: full attention with keys = normalised queries, the
    Reformer self-mask and the padding mask."""
    torch.manual_seed(4)
    T = 37
    mod = LSHAttention(DIM, 2, n_hashes=1, n_buckets=2).double()
    x = torch.randn(2, T, DIM, dtype=torch.float64)
    mask = _mask(2, T)
    qk, k, v = _shared_qk(mod, x)
    logits = (qk @ k.transpose(-1, -2)) / math.sqrt(qk.shape[-1])
    logits = logits.masked_fill(torch.eye(T, dtype=torch.bool), -1e5)
    logits = logits.masked_fill(~mask[:, None, None, :], float("-inf"))
    ref = _merge(logits.softmax(-1) @ v) @ mod.o.weight.T
    torch.testing.assert_close(mod(x, mask)[mask], ref[mask])


def _lsh_reference(mod, x, mask):
    """Brute force (the corrected layer): per round, sort by (bucket, position) in Python, cut into n_buckets chunks of
    ceil(T / n_buckets), allow the keys of a query's chunk and of the previous chunk (cyclic), dense softmax over those;
    combine rounds with exp(lse_r - logsumexp_r lse)."""
    B, T, C = x.shape
    H, K, R = mod.heads, mod.n_buckets, mod.n_hashes
    qk, k, v = _shared_qk(mod, x)
    d = qk.shape[-1]
    buckets = mod.buckets(x, mask)
    assert buckets.shape == (B, H, R, T)
    L = -(-T // K)
    outs = torch.zeros(B, H, R, T, d, dtype=x.dtype)
    lses = torch.zeros(B, H, R, T, dtype=x.dtype)
    for b in range(B):
        for h in range(H):
            for r in range(R):
                order = sorted(range(T), key=lambda t, b=b, h=h, r=r: (int(buckets[b, h, r, t]), t))
                chunk = torch.empty(T, dtype=torch.long)
                for rank, t in enumerate(order):
                    chunk[t] = rank // L
                allowed = (chunk[None, :] == chunk[:, None]) | (chunk[None, :] == (chunk[:, None] - 1) % K)
                logits = (qk[b, h] @ k[b, h].T) / math.sqrt(d)
                logits = logits.masked_fill(torch.eye(T, dtype=torch.bool), -1e5)
                allowed = allowed & mask[b][None, :]
                logits = logits.masked_fill(~allowed, float("-inf"))
                lses[b, h, r] = torch.logsumexp(logits, -1)
                outs[b, h, r] = logits.softmax(-1) @ v[b, h]
    w = torch.exp(lses - torch.logsumexp(lses, dim=2, keepdim=True))
    return _merge((w.unsqueeze(-1) * outs).sum(2)) @ mod.o.weight.T


@pytest.mark.parametrize("n_hashes,n_buckets", [(1, 4), (3, 4), (2, 6)])
def test_lsh_matches_brute_force_chunk_rule_and_round_combination(n_hashes, n_buckets):
    torch.manual_seed(5)
    T = 41
    mod = LSHAttention(DIM, 2, n_hashes=n_hashes, n_buckets=n_buckets, layer_index=3).double()
    x = torch.randn(2, T, DIM, dtype=torch.float64)
    mask = _mask(2, T)
    ref = _lsh_reference(mod, x, mask)
    out = mod(x, mask)
    torch.testing.assert_close(out[mask], ref[mask])
    # the reference really is local: it differs from full attention over all real keys
    assert mod.buckets(x, mask)[mask[:, None, None, :].expand(-1, 2, n_hashes, -1)].unique().numel() > 1


def test_lsh_quirks_change_the_output_and_drop_the_output_projection():
    torch.manual_seed(6)
    plain = LSHAttention(DIM, 2, n_buckets=4)
    quirky = LSHAttention(DIM, 2, n_buckets=4, lra_quirks=True)
    quirky.load_state_dict({k: v for k, v in plain.state_dict().items() if not k.startswith("o.")})
    assert quirky.o is None and count_parameters(quirky) == count_parameters(plain) - DIM * DIM
    x = torch.randn(2, 40, DIM)
    assert not torch.allclose(plain(x), quirky(x), atol=1e-3)


def test_lsh_hashing_is_fixed():
    torch.manual_seed(7)
    x = torch.randn(2, 50, DIM)
    a = LSHAttention(DIM, 2, n_hashes=2, n_buckets=10, layer_index=0)
    b = LSHAttention(DIM, 2, n_hashes=2, n_buckets=10, layer_index=0)
    c = LSHAttention(DIM, 2, n_hashes=2, n_buckets=10, layer_index=1)
    b.load_state_dict(a.state_dict())
    c.load_state_dict(a.state_dict())
    assert "rotations" not in a.state_dict()
    bk = a.buckets(x)
    assert bk.min() >= 0 and bk.max() < 10
    a.train()
    a(x).sum().backward()  # a training step does not touch the hashing
    assert torch.equal(a.buckets(x), bk) and torch.equal(b.buckets(x), bk)
    assert not torch.equal(c.buckets(x), bk)


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    top = a.max(axis=axis, keepdims=True)
    return top + np.log(np.exp(a - top).sum(axis=axis, keepdims=True))


def _official_reformer(x, w_qk, w_v, rotations, heads, n_buckets, n_hashes):
    """numpy transcription of the official LRA Reformer attention layer (reformer_attention.py, facts file), one
    example and one head at a time.

    Zero rows are appended to make ``T`` a multiple of the chunk length (10 = n_buckets in LRA; a whole chunk when it
    already is one); shared projection ``qk`` and values ``v`` without bias; per head the one rotation tensor
    ``[d, n_hashes, n_buckets / 2]`` gives ``argmax([qk R, -qk R])`` plus ``round * n_buckets``; the
    ``n_hashes * T_pad`` (round, position) items are sorted by ``T_pad * bucket + position`` and cut into
    ``n_hashes * n_buckets`` chunks; each chunk sees itself and the chunk before it in that one sequence (chunk 0 the
    last one); keys are the raw ``qk`` (no length normalisation), logits ``q . k * sqrt(d)``, no mask of any kind;
    softmax, unsort, rounds combined by ``softmax`` over their logsumexps; heads merged by reshaping ``[H, T_pad, d]``
    to ``[T_pad, H * d]``; no output
    projection; the first ``T`` rows kept.
    """
    B, T, C = x.shape
    d = C // heads
    Tp = T + n_buckets - T % n_buckets
    xp = np.concatenate([x, np.zeros((B, Tp - T, C))], axis=1)
    qk_all = (xp @ w_qk.T).reshape(B, Tp, heads, d)
    v_all = (xp @ w_v.T).reshape(B, Tp, heads, d)
    chunks = n_hashes * n_buckets
    out = np.zeros((B, heads, Tp, d))
    for b in range(B):
        for h in range(heads):
            qk, v = qk_all[b, :, h], v_all[b, :, h]
            turned = np.einsum("tf,fri->rti", qk, rotations)
            bucket = np.concatenate([turned, -turned], axis=-1).argmax(-1) + n_buckets * np.arange(n_hashes)[:, None]
            item = np.arange(n_hashes * Tp)
            slots = np.argsort(Tp * bucket.reshape(-1) + item % Tp, kind="stable")  # sorted slot -> item
            back = np.argsort(slots, kind="stable")
            sq = qk[slots % Tp].reshape(chunks, -1, d)
            sv = v[slots % Tp].reshape(chunks, -1, d)
            keys = np.concatenate([sq, np.roll(sq, 1, axis=0)], axis=1)
            vals = np.concatenate([sv, np.roll(sv, 1, axis=0)], axis=1)
            dots = np.einsum("cie,cje->cij", sq, keys) * math.sqrt(d)
            lse = _logsumexp(dots, -1)
            per_item = (np.exp(dots - lse) @ vals).reshape(-1, d)[back].reshape(n_hashes, Tp, d)
            lse = lse.reshape(-1)[back].reshape(n_hashes, Tp, 1)
            out[b, h] = (per_item * np.exp(lse - _logsumexp(lse, 0))).sum(0)
    return out.reshape(B, Tp, heads * d)[:, :T]


@pytest.mark.parametrize("T,heads,n_hashes", [(41, 2, 1), (40, 2, 1), (23, 4, 1), (37, 2, 2)])
def test_lsh_quirks_equal_the_official_layer(T, heads, n_hashes):
    """The official Reformer forward (transcribed above) on all-real tokens: T = 40 gets a whole chunk of filler,
    T = 23 with 4 heads pads to 30 rows, so merged rows straddle two heads; 2 rounds look back across rounds."""
    torch.manual_seed(11)
    mod = LSHAttention(DIM, heads, n_hashes=n_hashes, n_buckets=10, layer_index=2, lra_quirks=True).double()
    x = 0.5 * torch.randn(2, T, DIM, dtype=torch.float64)
    rot = mod.rotations
    assert all(torch.equal(rot[h], rot[0]) for h in range(heads))  # one rotation set for every head
    ref = _official_reformer(x.numpy(), mod.qk.weight.detach().numpy(), mod.v.weight.detach().numpy(),
                             rot[0].numpy(), heads, 10, n_hashes)
    out = mod(x).detach().numpy()
    assert np.linalg.norm(out - ref) <= 1e-6 * np.linalg.norm(ref)
    # the same in float32 (the precision of training) against the float64 transcription
    out32 = mod.float()(x.float()).detach().double().numpy()
    assert np.linalg.norm(out32 - ref) <= 1e-5 * np.linalg.norm(ref)
    # the corrected layer with the same weights computes something else
    plain = LSHAttention(DIM, heads, n_hashes=n_hashes, n_buckets=10, layer_index=2).double()
    plain.load_state_dict({**mod.double().state_dict(), "o.weight": torch.eye(DIM, dtype=torch.float64)})
    assert np.linalg.norm(plain(x).detach().numpy() - ref) > 1e-3 * np.linalg.norm(ref)


def test_lsh_quirks_share_rotations_across_layers_and_ignore_the_mask():
    torch.manual_seed(12)
    a = LSHAttention(DIM, 2, n_buckets=10, layer_index=0, lra_quirks=True).double()
    b = LSHAttention(DIM, 2, n_buckets=10, layer_index=3, lra_quirks=True).double()
    assert torch.equal(a.rotations, b.rotations)
    assert not torch.equal(LSHAttention(DIM, 2, layer_index=0).rotations, LSHAttention(DIM, 2, layer_index=3).rotations)
    assert a.padded_length(2001) == 2010 and a.padded_length(2000) == 2010
    assert LSHAttention(DIM, 2).padded_length(2000) == 2000
    x = torch.randn(2, 37, DIM, dtype=torch.float64)
    mask = _mask(2, 37)
    torch.testing.assert_close(a(x, mask), a(x), rtol=0, atol=0)  # no padding mask: padded tokens are real to it


def _official_random_blocks(seq_len: int, block: int, num_random: int, heads: int, seed: int,
                            within: int = 1024) -> np.ndarray:
    """numpy transcription of the official BigBird random blocks (bigbird_attention.py, get_block_rand_mask, facts
    file): numpy's legacy generator seeded with the layer, then for every head and every non-global query block ``i``
    a permutation of its candidate blocks, the first ``num_random`` kept. Candidates index ``a = [1 .. n - 2]`` with
    ``last = min(seq_len, within) // block - 1`` (``n - 1`` when that span is at most two blocks)."""
    rs = np.random.RandomState(seed)
    n = seq_len // block
    span = min(seq_len, within)
    last = span // block - 1 if span > 2 * block else n - 1
    a = np.arange(1, n - 1)
    heads_out = []
    for _ in range(heads):
        rows = np.zeros((n - 2, num_random), dtype=np.int64)
        for i in range(1, n - 1):
            if i == 1:
                cand = a[2:last]
            elif i == 2:
                cand = a[3:last]
            elif i == n - 3:
                cand = a[: last - 4]
            elif i == n - 2:
                cand = a[: last - 3]
            elif i - 2 > last:
                cand = a[:last]
            elif i + 1 == last:
                cand = a[: i - 2]
            else:
                cand = np.concatenate([a[: i - 2], a[i + 1 : last]])
            rows[i - 1] = rs.permutation(cand)[:num_random]
        heads_out.append(rows)
    return np.stack(heads_out)


@pytest.mark.parametrize("T,block,heads,layer,within", [
    (2001, 64, 8, 0, 1024), (2001, 64, 8, 3, 1024),  # LRA: 2001 tokens (CLS + 2000) in 32 blocks of 64
    (201, 16, 2, 1, 1024),  # the quick preset's shape: 13 blocks, all within the first 1024 tokens
    (300, 8, 4, 2, 64),  # a short candidate range far inside a long sequence (last block 7 of 38)
])
def test_bigbird_lra_random_blocks_equal_the_official_ones(T, block, heads, layer, within):
    mod = BigBirdAttention(DIM * 2, heads, block=block, layer_index=layer, random_within=within, random="lra")
    n = -(-T // block)
    ref = _official_random_blocks(n * block, block, 3, heads, layer, within)
    assert torch.equal(mod._random_for(n), torch.from_numpy(ref))


def test_bigbird_lra_tail_rows_draw_from_the_shorter_range():
    """LRA (32 blocks, candidates up to block 15): query blocks 29 and 30 draw only from 1..11 and 1..12; the torch
    rule lets them reach block 15. Every row still gets 3 distinct blocks outside what it already sees."""
    tails, torch_tails = set(), set()
    for layer in range(4):
        lra = BigBirdAttention(DIM * 4, 8, block=64, layer_index=layer, random="lra")._random_for(32)
        plain = BigBirdAttention(DIM * 4, 8, block=64, layer_index=layer)._random_for(32)
        assert set(lra[:, 28].flatten().tolist()) <= set(range(1, 12))
        assert set(lra[:, 29].flatten().tolist()) <= set(range(1, 13))
        tails |= set(lra[:, 28:30].flatten().tolist())
        torch_tails |= set(plain[:, 28:30].flatten().tolist())
        for h in range(8):
            for i in range(1, 31):
                r = set(lra[h, i - 1].tolist())
                assert len(r) == 3 and not r & {0, 31, i - 1, i, i + 1} and max(r) <= 15
    assert max(tails) == 12 and max(torch_tails) > 12


def test_bigbird_random_option_errors():
    with pytest.raises(DTNBenchError, match="random must be"):
        BigBirdAttention(DIM, 2, random="numpy")
    with pytest.raises(DTNBenchError, match="window of 3"):
        BigBirdAttention(DIM, 2, window=5, random="lra")


# ------------------------------------------------------------------------------------------------------------------
# padding never changes real tokens
@pytest.mark.parametrize("make", [
    lambda: FullAttention(DIM, 4),
    lambda: BigBirdAttention(DIM, 4, block=16, layer_index=1),
    lambda: LSHAttention(DIM, 4, n_hashes=2, n_buckets=4),
], ids=["transformer", "bigbird", "reformer"])
def test_padding_never_changes_real_tokens(make):
    torch.manual_seed(8)
    mod = make().double().eval()
    x = torch.randn(2, 70, DIM, dtype=torch.float64)
    mask = _mask(2, 70)
    y = x.clone()
    y[~mask] = 100 * torch.randn(int((~mask).sum()), DIM, dtype=torch.float64)
    a, b = mod(x, mask), mod(y, mask)
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    torch.testing.assert_close(a[mask], b[mask])


def test_attention_input_errors():
    with pytest.raises(DTNBenchError, match="divisible"):
        FullAttention(30, 4)
    with pytest.raises(DTNBenchError, match="window"):
        BigBirdAttention(DIM, 2, window=2)
    with pytest.raises(DTNBenchError, match="mask shape"):
        FullAttention(DIM, 2)(torch.randn(1, 5, DIM), torch.ones(1, 6, dtype=torch.bool))


# ------------------------------------------------------------------------------------------------------------------
# encoder
def _tokens(B=2, T=300, vocab=18, seed=0):
    g = torch.Generator().manual_seed(seed)
    tok = torch.randint(1, vocab, (B, T), generator=g)
    tok[1, 210:] = 0
    return tok


def _small(attention, norm, **kw):
    return LRAEncoder(18, dim=DIM, heads=2, depth=2, mlp_dim=64, max_len=320, attention=attention, norm=norm, **kw)


@pytest.mark.parametrize("norm", ["layernorm", "dtn", "rmsnorm"])
@pytest.mark.parametrize("attention", ["transformer", "bigbird", "reformer"])
def test_encoder_trains_and_ignores_padding(attention, norm):
    torch.manual_seed(9)
    model = _small(attention, norm)
    tok = _tokens()
    seen = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: seen.append(args[1])) for m in model.modules()
             if isinstance(m, DTN)]
    logits = model(tok)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.tensor([1, 7])).backward()
    for name, p in model.named_parameters():
        if not name.endswith("pos_proj.bias"):  # DTN's position bias cancels in its softmax: no gradient
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.embed.weight.grad.abs().sum() > 0 and model.cls_token.grad.abs().sum() > 0
    if norm == "dtn":  # every DTN slot (norm1, norm2 per block, final norm) receives the padding mask, CLS included
        assert len(hooks) == 2 * 2 + 1 and len(seen) == len(hooks)
        expected = torch.cat([torch.ones(2, 1, dtype=torch.bool), tok != 0], dim=1)
        assert all(m is not None and torch.equal(m, expected) for m in seen)
    # padded positions never reach the logits (DTN included): replace the padding ids, keep the mask
    model.eval()
    mask = tok != 0
    noisy = tok.clone()
    noisy[~mask] = torch.randint(1, 18, (int((~mask).sum()),))
    with torch.no_grad():
        torch.testing.assert_close(model(noisy, mask), model(tok), rtol=1e-4, atol=1e-5)


def test_pooling_cls_and_mean():
    torch.manual_seed(10)
    tok = _tokens(T=120)
    cls = _small("transformer", "layernorm", pooling="cls").eval()
    mean = _small("transformer", "layernorm", pooling="mean", positions="learned").eval()
    assert cls.cls_token is not None and mean.cls_token is None
    with torch.no_grad():
        z, m = cls.forward_features(tok)
        assert z.shape == (2, 121, DIM) and m[:, 0].all()
        torch.testing.assert_close(cls(tok), cls.head(z[:, 0]))
        z, m = mean.forward_features(tok)
        assert z.shape == (2, 120, DIM) and torch.equal(m, tok != 0)
        pooled = torch.stack([z[i][m[i]].mean(0) for i in range(2)])
        torch.testing.assert_close(mean(tok), mean.head(pooled))
    assert isinstance(mean.pos_embed, torch.nn.Parameter) and cls.pos_embed is None
    assert "pos_table" not in cls.state_dict()


def test_encoder_registry_and_errors():
    assert set(ATTENTIONS.names()) == {"transformer", "bigbird", "reformer"}
    with pytest.raises(DTNBenchError, match="did you mean: bigbird"):
        _small("bigbrid", "layernorm")
    with pytest.raises(DTNBenchError, match="unknown norm 'dnt'"):
        _small("transformer", "dnt")
    with pytest.raises(DTNBenchError, match="attention 'reformer'"):
        build_attention("reformer", DIM, 2, block=16)
    model = _small("transformer", "layernorm")
    with pytest.raises(DTNBenchError, match="longer than max_len=320"):
        model(torch.ones(1, 321, dtype=torch.long))
    with pytest.raises(DTNBenchError, match="token"):
        model(torch.full((1, 5), 18, dtype=torch.long))
    with pytest.raises(DTNBenchError, match="pooling"):
        _small("transformer", "layernorm", pooling="max")


def test_attention_kwargs_and_layer_seeds_reach_the_layers():
    model = _small("bigbird", "layernorm", attention_kwargs={"block": 16, "num_random": 2})
    a0, a1 = model.blocks[0].attn, model.blocks[1].attn
    assert (a0.block, a0.num_random, a0.layer_index, a1.layer_index) == (16, 2, 0, 1)
    assert not torch.equal(a0.pattern(256), a1.pattern(256))
    quirky = _small("reformer", "layernorm", attention_kwargs={"lra_quirks": True})
    assert quirky.blocks[0].attn.lra_quirks and quirky.blocks[1].attn.layer_index == 1


def test_count_parameters():
    model = _small("transformer", "layernorm")
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())
    model.embed.weight.requires_grad_(False)
    assert count_parameters(model) == sum(p.numel() for p in model.parameters()) - 18 * DIM
    assert count_parameters(model, trainable_only=False) == sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------------------------------
# the official encoder's choices: GELU, LayerNorm epsilon, initialisation
def test_gelu_tanh_is_the_jax_approximation():
    torch.manual_seed(13)
    exact, tanh = _small("transformer", "layernorm"), _small("transformer", "layernorm", gelu="tanh")
    assert exact.blocks[0].mlp[1].approximate == "none" and tanh.blocks[1].mlp[1].approximate == "tanh"
    z = torch.linspace(-4, 4, 81, dtype=torch.float64)
    jax_gelu = 0.5 * z * (1 + torch.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z**3)))
    torch.testing.assert_close(tanh.blocks[0].mlp[1](z), jax_gelu, rtol=1e-12, atol=1e-12)
    assert (exact.blocks[0].mlp[1](z) - jax_gelu).abs().max() > 1e-4
    with pytest.raises(DTNBenchError, match="gelu"):
        _small("transformer", "layernorm", gelu="fast")


def test_ln_eps_sets_the_layernorm_slots_only():
    from dtn_bench.norms import LayerNorm

    ln = _small("bigbird", "layernorm", ln_eps=1e-6)
    eps = [m.eps for m in ln.modules() if isinstance(m, LayerNorm)]
    assert eps == [1e-6] * 5  # norm1 and norm2 of both blocks, the final norm
    assert [m.eps for m in _small("bigbird", "layernorm").modules() if isinstance(m, LayerNorm)] == [1e-5] * 5
    default_dtn = DTN(DIM, 2).eps
    dtn = _small("bigbird", "dtn", ln_eps=1e-6)
    assert [m.eps for m in dtn.modules() if isinstance(m, DTN)] == [default_dtn] * 5 and default_dtn != 1e-6


@pytest.mark.parametrize("attention", ["transformer", "bigbird", "reformer"])
@torch.no_grad()
def test_lra_init_is_the_official_one(attention):
    torch.manual_seed(14)
    kw = {"attention_kwargs": {"lra_quirks": True}} if attention == "reformer" else {}
    model = LRAEncoder(18, dim=128, heads=2, depth=2, mlp_dim=256, max_len=64, attention=attention, init="lra", **kw)
    for blk in model.blocks:
        weights = [m.weight for m in blk.attn.modules() if isinstance(m, torch.nn.Linear)]
        weights += [blk.mlp[0].weight, blk.mlp[3].weight]
        assert len(weights) == (4 if attention == "reformer" else 6)
        for w in weights:  # xavier-uniform: U(-b, b), b = sqrt(6 / (fan_in + fan_out))
            bound = math.sqrt(6 / sum(w.shape))
            assert w.abs().max() <= bound and float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=0.05)
        for bias in (blk.mlp[0].bias, blk.mlp[3].bias):  # N(0, 1e-6)
            assert 0 < bias.std() < 2e-6
    for lin in (model.head[0], model.head[2]):  # lecun-normal: truncated at 2 sigma, variance 1 / fan_in
        std = math.sqrt(1 / lin.weight.shape[1]) / 0.87962566103423978
        assert lin.weight.abs().max() <= 2 * std
        assert float(lin.weight.var()) == pytest.approx(1 / lin.weight.shape[1], rel=0.15)
        assert torch.count_nonzero(lin.bias) == 0
    assert model.embed.padding_idx is None and model.embed.weight[0].abs().sum() > 0  # a trained N(0, 1) row
    assert model.blocks[0].norm1.weight.eq(1).all() and model.blocks[0].norm1.bias.eq(0).all()
    torch_init = _small(attention, "layernorm", **kw)
    assert torch_init.embed.padding_idx == 0 and torch_init.embed.weight[0].abs().sum() == 0
    assert torch.count_nonzero(torch_init.head[0].bias) > 0  # PyTorch's default uniform bias
    with pytest.raises(DTNBenchError, match="init"):
        _small(attention, "layernorm", init="xavier")


def test_lra_init_trains_the_padding_row_where_padding_is_attended():
    """The official Reformer has no padding mask: the padding embedding reaches the logits and is trained; the frozen
    row of init="torch" gets no gradient."""
    tok = _tokens()  # example 1 is padded from position 210
    for init, trained in (("lra", True), ("torch", False)):
        torch.manual_seed(15)
        model = _small("reformer", "layernorm", attention_kwargs={"lra_quirks": True}, init=init)
        torch.nn.functional.cross_entropy(model(tok), torch.tensor([1, 7])).backward()
        assert bool(model.embed.weight.grad[0].abs().sum() > 0) == trained
